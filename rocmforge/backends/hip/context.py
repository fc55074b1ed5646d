"""The launch context: the device's shape, the compiled modules, the options MUL_MAT chooses with, and the
scratch buffers launchers take."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.ops import ITEMSIZE
from .kernel_choice import SMEM_DEFAULT, Device, KernelLaunch, MatMulOptions, x8_row_bytes
from .modules import ModuleCache
from .tensor import DevTensor, i32, i64


@dataclass
class Ctx:
    """What launchers need. Public fields: mods (compiled modules), device (Device), tunables (compile
    defines and host-side parameters of the kernels, HipBackend(tunables=...)), mat_mul (MatMulOptions: what
    MUL_MAT chooses from, at prepare), pdl (programmatic dependent launch, pdl.py: launches marked for it
    start while the kernel before them ends)."""

    mods: ModuleCache
    device: Device
    tunables: dict[str, int] = field(default_factory=dict)
    mat_mul: MatMulOptions = field(default_factory=MatMulOptions)
    pdl: bool = False
    _pdl_launcher: Any = None
    _scratch: dict[Any, Any] = field(default_factory=dict)  # (node key, k) -> persistent scratch
    _node: Any = None
    _n_scratch: int = 0
    _x_key: Any = None  # the node's activation source, for sharing its quantized copy (begin_node)
    _x8_done: set[Any] = field(default_factory=set)  # sources quantized so far in this run
    _smem_set: dict[int, int] = field(default_factory=dict)  # id(function) -> opted-in shared memory

    @property
    def warp(self) -> int:
        return self.device.warp

    @property
    def n_sm(self) -> int:
        return self.device.n_sm

    def k(self, file: str, name: str, **defines: Any) -> Any:
        return self.mods.get(file, **defines).fn(name)

    def function(self, launch: KernelLaunch) -> Any:
        """The compiled function of a decided launch (compiled now, at prepare): above the default 48 KB of
        dynamic shared memory it opts in, once per function and size."""
        f = self.k(launch.file, launch.entry, **launch.defines)
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

    def empty(self, shape: Sequence[int], dtype: str) -> DevTensor:
        """Scratch for a launcher. Inside a node (begin_node) it is the node's own buffer, kept across
        runs: no allocation per step, and fixed pointers, so a captured device graph can replay it."""
        import cupy

        shape = tuple(int(n) for n in shape)
        nbytes = max(1, math.prod(shape)) * ITEMSIZE[dtype]
        if self._node is None:
            return DevTensor(cupy.empty(nbytes, dtype=np.uint8), 0, shape, dtype)
        key = (self._node, self._n_scratch)
        self._n_scratch += 1
        buf = self._scratch.get(key)
        if buf is None or buf.nbytes < nbytes:
            buf = self._scratch[key] = cupy.empty(nbytes, dtype=np.uint8)
        return DevTensor(buf, 0, shape, dtype)

    def begin_node(self, key: Any, x_key: Any = None) -> None:
        """Scratch taken until the next begin_node belongs to the node `key` (None: temporary). x_key names
        the value the node reads as its activation (None: not shared), so that nodes reading the same
        value share one quantized copy of it (quantized_x)."""
        self._node, self._n_scratch, self._x_key = key, 0, x_key

    def begin_run(self) -> None:
        """A run (or a capture) starts: no activation has been quantized in it yet."""
        self._x8_done.clear()

    def quantized_x(self, x: DevTensor, K: int, M: int, quantize: tuple[Any, KernelLaunch]) -> DevTensor:
        """x [M, K] f32 as quantize_x8's int8 rows: quantized (quantize: its function and launch) by the
        first node of the run that reads x's value (begin_node's x_key), reused by the others; quantized
        every time without a key."""
        import cupy

        shape = (M, x8_row_bytes(K) // 4)  # i32 words: K % 64 == 0 keeps rows 16-byte multiples
        if self._x_key is None:
            xq = self.empty(shape, "i32")
            self.launch(*quantize, quantize_x8_args(xq, x, K))
            return xq
        key = ("x8", self._x_key)
        buf = self._scratch.get(key)
        if buf is None or buf.nbytes < 4 * M * shape[1]:
            buf = self._scratch[key] = cupy.empty(4 * M * shape[1], dtype=np.uint8)
        xq = DevTensor(buf, 0, shape, "i32")
        if key not in self._x8_done:
            self._x8_done.add(key)
            self.launch(*quantize, quantize_x8_args(xq, x, K))
        return xq

    @property
    def scratch_bytes(self) -> int:
        return sum(b.nbytes for b in self._scratch.values())


def quantize_x8_args(xq: DevTensor, x: DevTensor, K: int) -> tuple:
    """quantize_x8's arguments: x [M, K] f32 (contiguous) -> xq [M, x8_row_bytes(K)] bytes."""
    return (x.ptr, i64(K), xq.ptr, i64(x8_row_bytes(K)), i32(K))
