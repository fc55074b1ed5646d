"""A graph prepared for the HIP backend: its steps (node, device tensors, prepared launcher), its arena and
captured device graphs, and the staging of its inputs and outputs through pinned host memory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...ir.graph import Tensor
from ...ir.ops import ITEMSIZE, NP_DTYPES
from .tensor import DevTensor


@dataclass
class Step:
    node: Tensor
    out: DevTensor
    srcs: list[DevTensor]
    launch: Callable[..., Any] | None  # None: an alias with nothing to launch (VIEW, RESHAPE)


@dataclass
class Plan:
    steps: list[Step]
    inputs: dict[str, DevTensor]
    outputs: dict[str, DevTensor]
    arena: Any
    ir_plan: Any  # the ir.alloc.Plan the offsets come from
    runs: int = 0
    device_graph: Any = None  # captured launches of every step, replayed when not timed
    capture_failed: str = ""
    # nodes each step added to device_graph's capture (timing="trace": how its traced records map to steps)
    node_counts: list[int] | None = None
    trace_failed: str = ""  # why this plan's traced replay did not work (event-node timing instead)
    # the same launches with an event-record node after each launching step (timing="graph"), and those
    # events: the one before the first step, then per step the event after it (None: an alias)
    timed_graph: Any = None
    timed_events: list = field(default_factory=list)
    timed_failed: str = ""
    index_bounds: dict = field(default_factory=dict)  # the graph's index_bounds(), checked on every run
    # every input in one device buffer, written from one pinned host mirror by one async copy a run
    staging: Staging | None = None
    chain: Any = None  # chain_advance (chain.hip) where the graph is a one-token greedy decode step

    @property
    def arena_bytes(self) -> int:
        return self.ir_plan.arena_bytes


class Staging:
    """Host-device copies of a run without a driver call per tensor: the graph's inputs laid out in one
    device buffer with a pinned host mirror (one async copy in), and its small outputs (token ids, up to
    SMALL_OUTPUT bytes) copied into one pinned buffer (one async copy each, one synchronize)."""

    SMALL_OUTPUT = 1 << 16

    def __init__(self, cp: Any, inputs: Mapping[str, Tensor]) -> None:
        self.cp = cp
        self.inputs: dict[str, tuple[int, int]] = {}  # name -> (offset, bytes)
        n = 0
        for name, t in inputs.items():
            nbytes = t.n_elements * ITEMSIZE[t.dtype]
            self.inputs[name] = (n, nbytes)
            n += -(-max(1, nbytes) // 16) * 16
        self.in_bytes = max(16, n)
        self.in_dev = cp.empty(self.in_bytes, dtype=np.uint8)
        self.in_host = pinned(cp, self.in_bytes)
        self.outputs: dict[str, tuple[int, int]] = {}  # small contiguous outputs -> (offset, bytes)
        self.out_host: np.ndarray | None = None  # their pinned buffer (plan_outputs)

    def plan_outputs(self, outputs: Mapping[str, DevTensor]) -> None:
        """Lay out the small contiguous outputs in one pinned buffer (once the outputs are planned)."""
        n = 0
        for name, t in outputs.items():
            nbytes = t.n_elements * ITEMSIZE.get(t.dtype, 0)
            if 0 < nbytes <= self.SMALL_OUTPUT and t.is_contiguous:
                self.outputs[name] = (n, nbytes)
                n += -(-nbytes // 16) * 16
        self.out_host = pinned(self.cp, max(16, n))

    def device_input(self, name: str, t: Tensor) -> DevTensor:
        return DevTensor(self.in_dev, self.inputs[name][0], t.shape, t.dtype)

    def write(self, inputs: Mapping[str, np.ndarray], stream: Any) -> None:
        """Inputs (checked by the caller) into the pinned mirror, then one async copy to the device. The
        caller synchronized the stream after the last run, so no copy still reads the mirror."""
        for name, (off, nbytes) in self.inputs.items():
            if nbytes:
                self.in_host[off:off + nbytes] = inputs[name].reshape(-1).view(np.uint8)
        self.cp.cuda.runtime.memcpyAsync(self.in_dev.data.ptr, self.in_host.ctypes.data, self.in_bytes,
                                         self.cp.cuda.runtime.memcpyHostToDevice, stream.ptr)

    def read_async(self, name: str, t: DevTensor, stream: Any) -> None:
        off, nbytes = self.outputs[name]
        self.cp.cuda.runtime.memcpyAsync(self.out_host.ctypes.data + off, t.ptr, nbytes,
                                         self.cp.cuda.runtime.memcpyDeviceToHost, stream.ptr)

    def result(self, name: str, t: DevTensor) -> np.ndarray:
        """An output read by read_async, after the stream was synchronized: a copy the next run keeps."""
        off, nbytes = self.outputs[name]
        return self.out_host[off:off + nbytes].view(NP_DTYPES[t.dtype]).reshape(t.shape).copy()


def pinned(cp: Any, nbytes: int) -> np.ndarray:
    """A page-locked host buffer as a uint8 array (it keeps the allocation alive)."""
    mem = cp.cuda.alloc_pinned_memory(nbytes)
    return np.frombuffer(mem, np.uint8, nbytes)
