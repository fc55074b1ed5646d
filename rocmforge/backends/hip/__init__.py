"""The HIP backend: hand-written kernels (kernels/*.hip) compiled at run time through CuPy."""

from .backend import HipBackend, gpu_available
from .modules import KernelCompileError

__all__ = ["HipBackend", "KernelCompileError", "gpu_available"]
