"""The launch context: the device's shape, the compiled modules, the options MUL_MAT chooses with, the vendor
BLAS, and the scratch buffers launchers take."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.ops import ITEMSIZE
from .kernel_choice import MatMulOptions
from .launch_geometry import SMEM_DEFAULT, Device, KernelLaunch
from .modules import ModuleCache
from .tensor import DevTensor


class _Programmatic:
    """A kernel function launched with programmatic dependent launch (pdl.py), called as CuPy's are."""

    __slots__ = ("f", "launcher")

    def __init__(self, f: Any, launcher: Any) -> None:
        self.f, self.launcher = f, launcher

    def __call__(self, grid: Sequence[int], block: Sequence[int], args: tuple, shared_mem: int = 0) -> None:
        self.launcher(self.f, grid, block, args, shared_mem=shared_mem)


@dataclass
class Ctx:
    """What launchers need. Public fields: mods (compiled modules), device (Device), tunables (compile
    defines and host-side parameters of the kernels, HipBackend(tunables=...)), mat_mul (MatMulOptions: what
    MUL_MAT chooses from, at prepare), pdl (programmatic dependent launch, pdl.py: launches marked for it
    start while the kernel before them ends), blas (the vendor BLAS, blas.py: None where there is none;
    device.blas names it)."""

    mods: ModuleCache
    device: Device
    tunables: dict[str, int] = field(default_factory=dict)
    mat_mul: MatMulOptions = field(default_factory=MatMulOptions)
    pdl: bool = False
    blas: Any = None
    _pdl_launcher: Any = None
    _blas_scratch: Any = None  # the f16 scratch every mul_mat_blas node shares (blas_scratch)
    _scratch: dict[Any, Any] = field(default_factory=dict)  # (node key, k) -> persistent scratch
    _node: Any = None
    _n_scratch: int = 0
    _n_transient: int = 0
    _smem_set: dict[int, int] = field(default_factory=dict)  # id(function) -> opted-in shared memory

    @property
    def warp(self) -> int:
        return self.device.warp

    @property
    def n_sm(self) -> int:
        return self.device.n_sm

    def k(self, file: str, name: str, **defines: Any) -> Any:
        """The kernel `name` of a module, called as f(grid, block, args[, shared_mem]): launched
        programmatically where Ctx.pdl (every kernel of these files begins with RF_PDL_BEGIN)."""
        f = self.mods.get(file, **defines).fn(name)
        return _Programmatic(f, self._programmatic_launcher()) if self.pdl else f

    def function(self, launch: KernelLaunch) -> Any:
        """The compiled function of a decided launch (compiled now, at prepare): above the default 48 KB of
        dynamic shared memory it opts in, once per function and size."""
        f = self.mods.get(launch.file, **launch.defines).fn(launch.entry)
        if launch.smem > SMEM_DEFAULT and self._smem_set.get(id(f), 0) < launch.smem:
            f.max_dynamic_shared_size_bytes = launch.smem
            self._smem_set[id(f)] = launch.smem
        if launch.pdl and self.pdl:
            self._programmatic_launcher()
        return f

    def _programmatic_launcher(self) -> Any:
        if self._pdl_launcher is None:
            from . import pdl

            self._pdl_launcher = pdl.PdlLauncher()
        return self._pdl_launcher

    def launch(self, f: Any, launch: KernelLaunch, args: tuple) -> None:
        """f (function(launch)) with launch's geometry and args; programmatically where launch.pdl and
        Ctx.pdl (the kernel must wait for its predecessor itself: rf_grid_wait)."""
        if launch.pdl and self.pdl:
            self._programmatic_launcher()(f, launch.grid, launch.block, args, shared_mem=launch.smem)
        else:
            f(launch.grid, launch.block, args, shared_mem=launch.smem)

    def empty(self, shape: Sequence[int], dtype: str, transient: bool = False) -> DevTensor:
        """Scratch for a launcher. Inside a node (begin_node) it is the node's own buffer, kept across
        runs: no allocation per step, and fixed pointers, so a captured device graph can replay it.
        transient: nothing reads it once the node's own kernels have run (a product into scratch before its
        epilogue kernel, a contiguous copy, split partials merged in the same kernel): the nodes of a plan
        share it (its k-th transient buffer, as large as the largest any node takes; a node's kernels
        touch it after waiting for the kernel before them), instead of one a node (a 7B prompt's
        MUL_MAT_SWIGLU products alone were 32 x M x 88 KB). It grows in a plan's first (eager) run only:
        later runs take the same sizes."""
        import cupy

        shape = tuple(int(n) for n in shape)
        nbytes = max(1, math.prod(shape)) * ITEMSIZE[dtype]
        if self._node is None:
            return DevTensor(cupy.empty(nbytes, dtype=np.uint8), 0, shape, dtype)
        if transient:
            plan = self._node[0] if isinstance(self._node, tuple) else self._node
            key = (plan, "transient", self._n_transient)
            self._n_transient += 1
        else:
            key = (self._node, self._n_scratch)
            self._n_scratch += 1
        buf = self._scratch.get(key)
        if buf is None or buf.nbytes < nbytes:
            buf = self._scratch[key] = cupy.empty(nbytes, dtype=np.uint8)
        return DevTensor(buf, 0, shape, dtype)

    def zeros(self, shape: Sequence[int], dtype: str) -> DevTensor:
        """Scratch as `empty`, zero when first taken (not on later runs): counters a kernel leaves zero."""

        shape = tuple(int(n) for n in shape)
        nbytes = max(1, math.prod(shape)) * ITEMSIZE[dtype]
        key = None if self._node is None else (self._node, self._n_scratch)
        fresh = key is None or key not in self._scratch or self._scratch[key].nbytes < nbytes
        t = self.empty(shape, dtype)
        if fresh:
            t.buf[:nbytes].fill(0)
        return t

    def begin_node(self, key: Any) -> None:
        """Scratch taken until the next begin_node belongs to the node `key` (None: temporary); a tuple
        key's first item names its plan (transient scratch is the plan's)."""
        self._node, self._n_scratch, self._n_transient = key, 0, 0

    def blas_scratch(self, nbytes: int) -> Any:
        """The scratch every mul_mat_blas node shares (x's and weight tiles' f16 rows: one node's at a time,
        in stream order), at least nbytes; and the BLAS's workspace. Taken at prepare, never during a run: a
        node that needs more than the buffer so far gets a new one, and launchers prepared before keep the
        one they were given (their captured graphs never point at freed memory)."""
        import cupy

        if self._blas_scratch is None or self._blas_scratch.nbytes < nbytes:
            self._blas_scratch = cupy.empty(max(1, nbytes), dtype=np.uint8)
        if self.blas is not None:
            self.blas.prepare()
        return self._blas_scratch

    @property
    def scratch_bytes(self) -> int:
        shared = 0 if self._blas_scratch is None else self._blas_scratch.nbytes
        ws = getattr(self.blas, "workspace", None)
        return sum(b.nbytes for b in self._scratch.values()) + shared + (0 if ws is None else ws.nbytes)
