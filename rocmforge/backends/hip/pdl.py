"""Programmatic dependent launch (CUDA, sm_90+) for kernels that wait for their predecessor themselves.

A kernel launched with the attribute may start while the kernel before it in the stream still runs; it
must call `rf_grid_wait()` (kernels/rf_compat.h) before it reads what that kernel wrote. Decode is a chain
of small launches, each of which otherwise begins with an idle GPU (the launch gap, the first loads'
latency): a mat-vec launched this way asks for its first weights, which no kernel writes, while the kernel
before it ends. CuPy's launch takes no attributes, so these launches go through the driver API
(cuda-bindings' cuLaunchKernelEx); in a captured device graph they become programmatic edges.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def unavailable_reason(cc: int, is_hip: bool) -> str | None:
    """Why programmatic dependent launch cannot be used here (None: it can)."""
    if is_hip:
        return "HIP has no programmatic dependent launch"
    if cc < 90:
        return f"compute capability {cc / 10:.1f} < 9.0"
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        return "cuda-bindings is not installed (pip install cuda-bindings)"
    return None


class PdlLauncher:
    """Launches CuPy kernel functions with the programmatic-stream-serialization attribute."""

    def __init__(self) -> None:
        from cuda.bindings import driver as cu

        self._cu = cu
        attr = cu.CUlaunchAttribute()
        attr.id = cu.CUlaunchAttributeID.CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION
        attr.value.programmaticStreamSerializationAllowed = 1
        self._attrs = [attr]

    def __call__(
        self, f: Any, grid: Sequence[int], block: Sequence[int], args: Sequence[Any], shared_mem: int = 0
    ) -> None:
        """f(grid, block, args, shared_mem=...) as CuPy would launch it, on CuPy's current stream. args:
        device pointers as Python ints, numpy scalars for the rest (their dtype is the parameter's type)."""
        import cupy

        cu = self._cu
        cfg = cu.CUlaunchConfig()
        g = (*grid, 1, 1)
        b = (*block, 1, 1)
        cfg.gridDimX, cfg.gridDimY, cfg.gridDimZ = (int(n) for n in g[:3])
        cfg.blockDimX, cfg.blockDimY, cfg.blockDimZ = (int(n) for n in b[:3])
        cfg.sharedMemBytes = int(shared_mem)
        cfg.hStream = cu.CUstream(cupy.cuda.get_current_stream().ptr)
        cfg.attrs = self._attrs
        cfg.numAttrs = 1
        # each parameter's bytes in an array of its own; kernelParams points at their addresses
        vals = [np.array([a], dtype=np.uint64 if isinstance(a, int) else np.asarray(a).dtype) for a in args]
        ptrs = np.array([v.ctypes.data for v in vals], dtype=np.uint64)
        fn = getattr(f, "kernel", f)  # a RawKernel's cupy.cuda.function.Function (its CUfunction: ptr)
        (err,) = cu.cuLaunchKernelEx(cfg, cu.CUfunction(fn.ptr), ptrs.ctypes.data, 0)
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuLaunchKernelEx (programmatic dependent launch) failed: {err}")
