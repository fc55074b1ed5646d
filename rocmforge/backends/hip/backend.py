"""HipBackend: runs graphs with the HIP kernels through CuPy (hipRTC on ROCm, NVRTC on CUDA).

Weights are uploaded once in their GGUF block layout (raw bytes on the device); the KV cache and other
state are device buffers outside any arena. `prepare` plans each graph once: every op result gets a
slice of one arena (first-fit by liveness, so buffers are reused), views and reshapes are resolved to
offsets, inputs get fixed device buffers. `run` writes the inputs, launches one kernel family per node
(device events around each node when timed) and copies the outputs back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ... import quant
from ...ir.graph import Graph, Tensor
from ...ir.ops import ALIASING, Op
from ...profile import OpTiming
from .launch import ITEMSIZE, LAUNCH, NATIVE_WEIGHTS, NP_DTYPE, Ctx, DevTensor
from .modules import ModuleCache

log = logging.getLogger("rocmforge.hip")

ALIGN = 256
# weights read by the weight kernels in their blocks; any other use wants plain f32
_WEIGHT_OPS = {Op.MUL_MAT, Op.GET_ROWS}
# bit patterns that poison a buffer (NaN for floats, INT_MIN for i32)
_POISON = {"f32": (np.uint32, 0x7FC00000), "f16": (np.uint16, 0x7E00), "i32": (np.uint32, 0x80000000)}


def gpu_available() -> tuple[bool, str]:
    """(True, device name) when CuPy sees a GPU, else (False, the reason)."""
    try:
        import cupy
    except ImportError as e:
        return False, f"cupy is not installed ({e})"
    except Exception as e:  # a broken install raises other errors at import
        return False, f"cupy failed to import: {e}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"GPU driver/runtime error: {e}"
    if n < 1:
        return False, "no GPU device visible to CuPy"
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    except Exception as e:
        return False, f"GPU driver/runtime error: {e}"
    return True, name.decode() if isinstance(name, bytes) else str(name)


def _raw_bytes(raw: Any) -> np.ndarray:
    a = np.ascontiguousarray(np.asarray(raw))
    return a.reshape(-1).view(np.uint8)


@dataclass
class _Step:
    node: Tensor
    out: DevTensor
    srcs: list[DevTensor]
    launch: Callable[..., Any] | None  # None: an alias with nothing to launch (VIEW, RESHAPE)


@dataclass
class _Plan:
    steps: list[_Step]
    inputs: dict[str, DevTensor]
    outputs: dict[str, DevTensor]
    arena: Any
    arena_bytes: int
    poison: list[tuple[Any, int]] = field(default_factory=list)


class HipBackend:
    """Executes graphs on the GPU with the kernels in `kernels/`; same interface as NumpyBackend."""

    name = "hip"

    def __init__(self, device: int = 0, tunables: Mapping[str, int] | None = None) -> None:
        ok, why = gpu_available()
        if not ok:
            raise RuntimeError(f"HipBackend needs a GPU through CuPy: {why}")
        import cupy

        self.cp = cupy
        self.device = cupy.cuda.Device(device)
        self.device.use()
        props = cupy.cuda.runtime.getDeviceProperties(device)
        name = props["name"]
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self.is_hip = bool(cupy.cuda.runtime.is_hip)
        self.warp = int(props["warpSize"])
        if self.is_hip:
            arch = props.get("gcnArchName", b"")
            arch = (arch.decode() if isinstance(arch, bytes) else str(arch)).split(":")[0]
        else:
            arch = f"sm_{props['major']}{props['minor']}"
        self.arch = arch
        self.ctx = Ctx(
            ModuleCache(arch, {"RF_WARP": self.warp}),
            self.warp,
            int(props["multiProcessorCount"]),
            dict(tunables or {}),
        )
        self.weights: dict[str, DevTensor] = {}
        self.state: dict[str, DevTensor] = {}
        self.weight_bytes = 0
        self.debug_poison = False  # NaN-fill every op result before its launch (tests)
        self._plans: dict[int, tuple[Graph, _Plan]] = {}

    # ---- weights and state ------------------------------------------------------------------------------
    def _upload(self, a: np.ndarray) -> Any:
        b = _raw_bytes(a)
        d = self.cp.empty(max(1, b.size), dtype=np.uint8)
        if b.size:
            d[: b.size].set(b)
        return d

    def bind_weights(self, graph: Graph, source: Callable[[str], tuple[np.ndarray, quant.QType]]) -> None:
        """Upload every weight leaf not yet bound; source(name) gives (raw bytes, ggml type)."""
        uses: dict[str, set[Op]] = {}
        for t in graph.ops():
            for s in t.src:
                if s.kind == "weight":
                    uses.setdefault(s.name, set()).add(t.op)
        for w in graph.leaves("weight"):
            if w.name in self.weights:
                continue
            raw, qtype = source(w.name)
            qt = quant.QType(qtype)
            tname = qt.name.lower()
            shape = tuple(w.shape)
            blocks_only = uses.get(w.name, set()) <= _WEIGHT_OPS and len(shape) == 2
            if tname in ("f32", "f16") or (tname in NATIVE_WEIGHTS and blocks_only):
                dev = DevTensor(self._upload(raw), 0, shape, tname)
            elif blocks_only:
                log.warning(
                    "weight %s: GGML type %s has no kernel; converted to f16 at upload", w.name, qt.name
                )
                f = quant.dequantize(raw, qt, shape).astype(np.float16)
                dev = DevTensor(self._upload(f), 0, shape, "f16")
            else:
                dev = DevTensor(self._upload(quant.dequantize(raw, qt, shape)), 0, shape, "f32")
            self.weights[w.name] = dev
            self.weight_bytes += int(dev.buf.nbytes)

    def alloc_state(self, graph: Graph) -> None:
        for s in graph.leaves("state"):
            if s.name not in self.state:
                if s.dtype not in ITEMSIZE:
                    raise NotImplementedError(f"state {s.name}: dtype {s.dtype}")
                nbytes = max(1, math.prod(s.shape) * ITEMSIZE[s.dtype])
                self.state[s.name] = DevTensor(
                    self.cp.zeros(nbytes, dtype=np.uint8), 0, tuple(s.shape), s.dtype
                )

    def reset_state(self) -> None:
        for t in self.state.values():
            t.buf.fill(0)

    # ---- planning -----------------------------------------------------------------------------------------
    def prepare(self, graph: Graph) -> Graph:
        """Allocate state and plan the graph (arena offsets, views); returns the graph itself."""
        self.alloc_state(graph)
        self._plans[id(graph)] = (graph, self._plan(graph))
        return graph

    def _plan(self, graph: Graph) -> _Plan:
        # storage root of every node, and the last node index that touches each root
        root: dict[int, int] = {}
        for t in graph.nodes:
            root[t.id] = root[t.src[0].id] if t.op in ALIASING else t.id
        last: dict[int, int] = {}
        for i, t in enumerate(graph.nodes):
            for s in t.src:
                last[root[s.id]] = i
        for t in graph.outputs.values():
            last[root[t.id]] = len(graph.nodes)

        # first-fit arena offsets for op results (not aliases), freed after their last use
        offsets: dict[int, int] = {}
        live: list[tuple[int, int, int]] = []  # (offset, size, root id)
        arena_bytes = 0
        for i, t in enumerate(graph.nodes):
            live = [x for x in live if last.get(x[2], i) >= i]
            if t.kind != "op" or t.op in ALIASING:
                continue
            size = -(-max(1, t.n_elements * ITEMSIZE[t.dtype]) // ALIGN) * ALIGN
            off = 0
            for o, s, _ in sorted(live):
                if off + size <= o:
                    break
                off = max(off, o + s)
            offsets[t.id] = off
            live.append((off, size, t.id))
            arena_bytes = max(arena_bytes, off + size)
        arena = self.cp.empty(max(1, arena_bytes), dtype=np.uint8)

        dev: dict[int, DevTensor] = {}
        inputs: dict[str, DevTensor] = {}
        steps: list[_Step] = []
        for t in graph.nodes:
            if t.kind == "input":
                nbytes = max(1, t.n_elements * ITEMSIZE[t.dtype])
                dev[t.id] = inputs[t.name] = DevTensor(
                    self.cp.empty(nbytes, dtype=np.uint8), 0, t.shape, t.dtype
                )
            elif t.kind == "weight":
                dev[t.id] = self.weights[t.name]
            elif t.kind == "state":
                dev[t.id] = self.state[t.name]
            else:
                srcs = [dev[s.id] for s in t.src]
                if t.op in (Op.VIEW, Op.RESHAPE):
                    dev[t.id] = LAUNCH[t.op.value](self.ctx, srcs[0], **t.params)
                    steps.append(_Step(t, dev[t.id], srcs, None))
                    continue
                if t.op is Op.SET_ROWS:
                    out = srcs[0]
                else:
                    out = DevTensor(arena, offsets[t.id], t.shape, t.dtype)
                dev[t.id] = out
                steps.append(_Step(t, out, srcs, LAUNCH[t.op.value]))
        outputs = {name: dev[t.id] for name, t in graph.outputs.items()}
        return _Plan(steps, inputs, outputs, arena, arena_bytes)

    def _get_plan(self, graph: Graph) -> _Plan:
        entry = self._plans.get(id(graph))
        if entry is None or entry[0] is not graph:
            self.prepare(graph)
            entry = self._plans[id(graph)]
        return entry[1]

    # ---- execution --------------------------------------------------------------------------------------
    def _poison(self, t: DevTensor) -> None:
        dt, bits = _POISON[t.dtype]
        n = t.n_elements * ITEMSIZE[t.dtype] // np.dtype(dt).itemsize
        t.buf[t.offset : t.offset + n * np.dtype(dt).itemsize].view(dt).fill(bits)

    def _download(self, t: DevTensor) -> np.ndarray:
        if t.dtype not in ITEMSIZE:
            raise NotImplementedError(f"download of a {t.dtype} tensor")
        item = ITEMSIZE[t.dtype]
        span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.strides, strict=True)) if t.n_elements else 0
        host = self.cp.asnumpy(t.buf[t.offset : t.offset + span * item]).view(NP_DTYPE[t.dtype])
        view = np.lib.stride_tricks.as_strided(host, shape=t.shape, strides=[s * item for s in t.strides])
        return np.array(view)

    def run(
        self, graph: Graph, inputs: Mapping[str, np.ndarray], timed: bool = False
    ) -> tuple[dict[str, np.ndarray], list[OpTiming]]:
        plan = self._get_plan(graph)
        for name, buf in plan.inputs.items():
            if name not in inputs:
                raise KeyError(f"graph {graph.name!r} needs input {name!r}")
            a = np.ascontiguousarray(inputs[name], dtype=NP_DTYPE[buf.dtype])
            if a.shape != buf.shape:
                raise ValueError(f"input {name!r}: shape {a.shape}, graph wants {buf.shape}")
            if a.size:
                buf.buf[: a.nbytes].set(a.reshape(-1).view(np.uint8))
        events = []
        for st in plan.steps:
            if st.launch is None:
                events.append(None)
                continue
            if self.debug_poison and st.node.op is not Op.SET_ROWS:
                self._poison(st.out)
            if timed:
                e0, e1 = self.cp.cuda.Event(), self.cp.cuda.Event()
                e0.record()
            st.launch(self.ctx, st.out, *st.srcs, **st.node.params)
            if timed:
                e1.record()
                events.append((e0, e1))
        self.device.synchronize()
        timings: list[OpTiming] = []
        if timed:
            for st, ev in zip(plan.steps, events, strict=True):
                us = 0.0 if ev is None else self.cp.cuda.get_elapsed_time(ev[0], ev[1]) * 1e3
                timings.append(OpTiming(st.node.name, st.node.op.value, st.node.shape, us))
        outs = {name: self._download(t) for name, t in plan.outputs.items()}
        return outs, timings

    def memory(self) -> dict[str, int]:
        pool = self.cp.get_default_memory_pool()
        free, total = self.cp.cuda.runtime.memGetInfo()
        acts = 0
        for _, plan in self._plans.values():
            acts += plan.arena_bytes + sum(t.buf.nbytes for t in plan.inputs.values())
        return {
            "weights": self.weight_bytes,
            "kv_cache": sum(int(t.buf.nbytes) for t in self.state.values()),
            "activations": int(acts),
            "pool_used": int(pool.used_bytes()),
            "pool_total": int(pool.total_bytes()),
            "device_free": int(free),
            "device_total": int(total),
        }
