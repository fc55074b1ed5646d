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
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import quant
from ...ir import alloc, passes
from ...ir.graph import Graph, Tensor
from ...ir.ops import ITEMSIZE, NP_DTYPES, Op
from ...profile import OpTiming
from . import pdl
from .context import Ctx
from .kernel_choice import SMEM_DEFAULT, Device, MatMulOptions, device_family
from .launch import LAUNCH, prepare_launch
from .launch_mul_mat import early_quantize_x8, reads_int8_x
from .modules import ModuleCache
from .tensor import NATIVE_WEIGHTS, DevTensor

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
    ir_plan: Any  # the ir.alloc.Plan the offsets come from
    runs: int = 0
    device_graph: Any = None  # captured launches of every step, replayed when not timed
    capture_failed: str = ""

    @property
    def arena_bytes(self) -> int:
        return self.ir_plan.arena_bytes


class HipBackend:
    """Executes graphs on the GPU with the kernels in `kernels/`; same interface as NumpyBackend."""

    name = "hip"

    def __init__(
        self,
        device: int = 0,
        tunables: Mapping[str, int] | None = None,
        int8_activations: bool = False,
        programmatic_launch: bool | None = None,
    ) -> None:
        """int8_activations: decode mat-vecs of Q4_0/Q8_0 weights on x quantized to int8. programmatic_launch
        (CUDA sm_90+ with cuda-bindings; None: where available): those kernels start while the kernel before
        them ends (pdl.py)."""
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
        sm_keys = ("sharedMemPerMultiprocessor", "maxSharedMemoryPerMultiProcessor")  # CUDA, HIP
        device_shape = Device(
            warp=self.warp,
            n_sm=int(props["multiProcessorCount"]),
            smem_block=int(props.get("sharedMemPerBlockOptin", 0)) or SMEM_DEFAULT,
            smem_sm=next((int(props[k]) for k in sm_keys if props.get(k)), 0),
            family=device_family(arch),
        )
        cc = 0 if self.is_hip else 10 * int(props["major"]) + int(props["minor"])
        self.pdl_unavailable = pdl.unavailable_reason(cc, self.is_hip)  # None: programmatic launch works
        if programmatic_launch and self.pdl_unavailable:
            raise RuntimeError(f"programmatic_launch: {self.pdl_unavailable}")
        # int8_activations: decode mat-vecs of Q4_0/Q8_0 weights with x quantized to int8 (as llama.cpp's
        # q8_1) once per activation, shared by the mat-vecs that read it: faster where the weights are large
        # (bench_matvec.py), normalized MSE ~3e-5 instead of ~1e-11
        self.ctx = Ctx(
            ModuleCache(arch, {"RF_WARP": self.warp}),
            device_shape,
            dict(tunables or {}),
            MatMulOptions(int8_activations=int8_activations),
            pdl=self.pdl_unavailable is None if programmatic_launch is None else bool(programmatic_launch),
        )
        self.weights: dict[str, DevTensor] = {}
        self.state: dict[str, DevTensor] = {}
        self.weight_bytes = 0
        self.debug_poison = False  # NaN-fill every op result before its launch (tests)
        self.replay = True  # untimed runs replay a captured device graph after one eager run
        # every launch, copy and capture goes to this stream (blocking: ordered with the default stream)
        self.stream = cupy.cuda.Stream(non_blocking=False)
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
        uses = graph.weight_uses()
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
        """Allocate state, optimize the graph, plan its arena (ir.alloc) and resolve every node to a
        device tensor; returns the graph to run. One arena allocation per graph, none per run."""
        self.alloc_state(graph)
        entry = self._plans.get(id(graph))
        if entry is not None and entry[0] is graph:
            return graph
        g = passes.optimize(graph, self.graph_passes())[0]
        p = self._plan(g)
        self._plans[id(graph)] = (graph, p)
        self._plans[id(g)] = (g, p)
        return g

    def graph_passes(self) -> tuple[tuple[str, passes.Pass], ...]:
        """The graph passes prepare runs: the IR's pipeline, after QUANTIZE_X8 insertion for the mat-vecs
        whose kernel reads int8 x (int8_activations; weights bound before prepare)."""
        if not self.ctx.mat_mul.int8_activations:
            return passes.PIPELINE
        reads = reads_int8_x(self.ctx, self.weights)
        return (("insert_quantize_x8", lambda g: passes.insert_quantize_x8(g, reads)), *passes.PIPELINE)

    def plan_of(self, graph: Graph) -> alloc.Plan | None:
        """The ir.alloc plan the graph runs with (None before prepare)."""
        entry = self._plans.get(id(graph))
        return entry[1].ir_plan if entry is not None and entry[0] is graph else None

    def _plan(self, graph: Graph) -> _Plan:
        ir_plan = alloc.plan(graph, alignment=ALIGN)
        offsets, arena_bytes = ir_plan.offsets, ir_plan.arena_bytes
        arena = self.cp.empty(max(1, arena_bytes), dtype=np.uint8)

        dev: dict[int, DevTensor] = {}
        inputs: dict[str, DevTensor] = {}
        steps: list[_Step] = []
        early = early_quantize_x8(self.ctx, graph, self.weights)
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
                # kernels chosen and compiled now
                launch = prepare_launch(self.ctx, t.op, out, srcs, t.params, t.id in early)
                steps.append(_Step(t, out, srcs, launch))
        outputs = {name: dev[t.id] for name, t in graph.outputs.items()}
        return _Plan(steps, inputs, outputs, arena, ir_plan)

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
        host = self.cp.asnumpy(t.buf[t.offset : t.offset + span * item]).view(NP_DTYPES[t.dtype])
        view = np.lib.stride_tricks.as_strided(host, shape=t.shape, strides=[s * item for s in t.strides])
        return np.array(view)

    def _launch_all(self, plan: _Plan, timed: bool) -> list:
        events: list = []
        for st in plan.steps:
            if st.launch is None:
                events.append(None)
                continue
            if self.debug_poison and st.node.op is not Op.SET_ROWS and st.node.id not in plan.ir_plan.inplace:
                self._poison(st.out)
            if timed:
                e0, e1 = self.cp.cuda.Event(), self.cp.cuda.Event()
                e0.record()
            self.ctx.begin_node((id(plan), st.node.id))  # scratch the launcher takes is the node's own
            st.launch(self.ctx, st.out, *st.srcs, **st.node.params)
            if timed:
                e1.record()
                events.append((e0, e1))
        self.ctx.begin_node(None)
        return events

    def _capture(self, plan: _Plan) -> Any:
        """Record every launch of the plan as one device graph (CUDA/HIP graph) to replay."""
        try:
            with self.stream:
                self.stream.begin_capture()
                try:
                    self._launch_all(plan, timed=False)
                finally:
                    g = self.stream.end_capture()
            return g
        except Exception as e:  # a launcher that cannot be captured: stay eager for this graph
            plan.capture_failed = f"{type(e).__name__}: {e}"
            log.warning("graph capture failed (%s); running eagerly", plan.capture_failed)
            return None

    def run(
        self, graph: Graph, inputs: Mapping[str, np.ndarray], timed: bool = False
    ) -> tuple[dict[str, np.ndarray], list[OpTiming]]:
        plan = self._get_plan(graph)
        for name, buf in plan.inputs.items():
            if name not in inputs:
                raise KeyError(f"graph {graph.name!r} needs input {name!r}")
            a = np.ascontiguousarray(inputs[name], dtype=NP_DTYPES[buf.dtype])
            if a.shape != buf.shape:
                raise ValueError(f"input {name!r}: shape {a.shape}, graph wants {buf.shape}")
            if a.size:
                buf.buf[: a.nbytes].set(a.reshape(-1).view(np.uint8))
        eager = timed or self.debug_poison or not self.replay or bool(plan.capture_failed)
        if not eager and plan.device_graph is None and plan.runs > 0:
            plan.device_graph = self._capture(plan)
        with self.stream:
            if not eager and plan.device_graph is not None:
                plan.device_graph.launch(self.stream)
                events = []
            else:
                events = self._launch_all(plan, timed)
        plan.runs += 1
        self.stream.synchronize()
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
        plans = {id(p): p for _, p in self._plans.values()}.values()  # a plan is keyed by both graphs
        acts = self.ctx.scratch_bytes
        for plan in plans:
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
