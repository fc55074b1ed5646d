"""HipBackend: runs graphs with the HIP kernels through CuPy (hipRTC on ROCm, NVRTC on CUDA).

Weights are uploaded once in their GGUF block layout (raw bytes on the device); the KV cache and other
state are device buffers outside any arena. `prepare` plans each graph once: every op result gets a
slice of one arena (first-fit by liveness, so buffers are reused), views and reshapes are resolved to
offsets, inputs get fixed device buffers. `run` writes the inputs, launches one kernel family per node
(a captured device graph replayed after the first run) and copies the outputs back; a timed run measures
each op as `timing` says (timing.py).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import replace

import numpy as np

from ... import quant
from ...ir import alloc, passes
from ...ir.graph import Graph, check_indices
from ...ir.ops import ITEMSIZE, MUL_MAT_OPS, NP_DTYPES, WRITES_ROWS, Op
from ...profile import StepTimings
from . import blas as blas_mod
from . import cupti_trace, pdl
from . import timing as timing_mod
from .context import Ctx
from .device import available_bytes, copy_bandwidth, gpu_available, probe
from .kernel_choice import PREFILL, MatMulOptions
from .launch import LAUNCH, prepare_launch
from .launch_mul_mat import early_quantize_x8, folds_norm, reads_int8_x, shape_choice
from .modules import ModuleCache
from .plan import Plan, Staging, Step
from .plan_launches import PlanLaunches
from .tensor import BLOCK, DevTensor, download
from .timed_runs import TimedRuns
from .weights import device_bytes, device_form, upload_weight

# the kernels' own scratch beside the arena (split partials, tickets, contiguous copies: KBs to a few MB)
SCRATCH_ALLOWANCE = 8 << 20
log = logging.getLogger("rocmforge.hip")

ALIGN = 256
# a one-token decode step run_chain can chain: its token and position inputs, its greedy token output
CHAIN_INPUTS, CHAIN_OUTPUT, CHAIN_LOGITS = ("inp_tokens", "inp_pos"), "argmax", "logits"


class HipBackend(PlanLaunches, TimedRuns):
    """Executes graphs on the GPU with the kernels in `kernels/`; same interface as NumpyBackend."""

    name = "hip"

    def __init__(
        self,
        device: int = 0,
        tunables: Mapping[str, int] | None = None,
        int8_activations: bool | str = "auto",
        programmatic_launch: bool | None = None,
        timing: str | None = None,
        prefill: str = "auto",
    ) -> None:
        """int8_activations: decode mat-vecs of Q4_0/Q8_0 weights on x quantized to int8: True, False, or
        "auto" (where the weight's rows are long enough for it to pay, kernel_choice.INT8_AUTO_MIN_K:
        LLaMA-7B's on an H100, not the small models'). programmatic_launch
        (CUDA sm_90+ with cuda-bindings; None: where available): those kernels start while the kernel before
        them ends (pdl.py). timing: how timed runs measure each op (profile.TIMING_MODES, timing.py):
        "trace" (the untimed replayed graph, its kernels timestamped by CUPTI: what untimed steps run),
        "graph" (a second capture with an event node after each kernel: each node adds its own cost) or
        "eager" (events around each Python launch); None: the first of these that works here: trace on
        CUDA with cupti-python (cupti_trace.py), graph with cuda-bindings, else eager (ROCm). A traced run
        that fails (CUPTI not working, records that do not match the graph) falls back to graph timing,
        with the reason in `trace_failed` (or the plan's) and a warning. prefill (MatMulOptions.prefill),
        MUL_MAT of more than 4 tokens: "auto" (the vendor BLAS's GEMM on f16 tiles where the kernel table's
        defaults say so: cuBLAS on CUDA; mul_mat_q on RDNA3), "tiled" (the tiled kernel, mul_mat), "blas"
        (the vendor BLAS: cuBLAS, or hipBLAS through CuPy on ROCm), "mmq" (mul_mat_q: int8 matrix
        instructions on x quantized to int8, quantized weights; others as "auto"); without a usable vendor
        BLAS "auto" runs the tiled kernel (`blas_unavailable` says why) and "blas" raises, as "mmq" does
        without int8 matrix instructions."""
        if prefill not in PREFILL:
            raise ValueError(f"prefill {prefill!r}: choose one of {', '.join(PREFILL)}")
        ok, why = gpu_available()
        if not ok:
            raise RuntimeError(f"HipBackend needs a GPU through CuPy: {why}")
        import cupy

        self.cp = cupy
        self.device = cupy.cuda.Device(device)
        self.device.use()
        p = probe(cupy, device)
        self.device_name, self.is_hip, self.warp, self.arch = p.name, p.is_hip, p.shape.warp, p.arch
        device_shape, cc = p.shape, p.cc
        self.pdl_unavailable = pdl.unavailable_reason(cc, self.is_hip)  # None: programmatic launch works
        if programmatic_launch and self.pdl_unavailable:
            raise RuntimeError(f"programmatic_launch: {self.pdl_unavailable}")
        # the vendor BLAS of the prefill GEMMs (blas.py): its handle now, its workspace and scratch at the
        # first prepare that needs them
        blas, self.blas_unavailable = (None, "prefill='tiled'") if prefill == "tiled" else blas_mod.open_blas(
            cupy, self.is_hip
        )
        if prefill == "blas" and blas is None:
            raise RuntimeError(f"prefill='blas': {self.blas_unavailable}")
        if prefill == "mmq" and not (device_shape.mma and self.warp == 32):
            raise RuntimeError(f"prefill='mmq': {self.device_name} ({self.arch}) has no int8 matrix "
                               "instructions on 32-lane warps (CUDA sm_80+, RDNA3)")
        if blas is None and prefill == "auto" and not self.is_hip:  # on ROCm the default is the tiled kernel
            log.warning("no vendor BLAS (%s): prefill runs the tiled kernel", self.blas_unavailable)
        # int8_activations: decode mat-vecs of Q4_0/Q8_0 weights with x quantized to int8 (as llama.cpp's
        # q8_1) once per activation, shared by the mat-vecs that read it (with the norm before it, one
        # launch): faster where the weights are large (bench_matvec.py), normalized MSE ~3e-5, not ~1e-11
        self.ctx = Ctx(
            ModuleCache(self.arch, {"RF_WARP": self.warp}),
            replace(device_shape, blas=blas.name if blas is not None else ""),
            dict(tunables or {}),
            MatMulOptions(int8_activations=int8_activations, prefill=prefill),
            pdl=self.pdl_unavailable is None if programmatic_launch is None else bool(programmatic_launch),
            blas=blas,
        )
        self.event_nodes_unavailable = timing_mod.event_nodes_unavailable(self.is_hip)
        self.trace_unavailable = cupti_trace.trace_unavailable(self.is_hip)
        self.timing = timing_mod.choose_mode(
            timing, {"graph": self.event_nodes_unavailable, "trace": self.trace_unavailable}
        )
        self.trace_failed = ""  # why CUPTI tracing failed at its first use (graph timing instead)
        self.last_trace: list[tuple[str, list]] = []  # the last traced run: (node name, its records) per step
        self.weights: dict[str, DevTensor] = {}
        self.state: dict[str, DevTensor] = {}
        self.weight_bytes = 0
        self.debug_poison = False  # NaN-fill every op result before its launch (tests)
        self.replay = True  # untimed runs replay a captured device graph after one eager run
        # every launch, copy and capture goes to this stream (blocking: ordered with the default stream)
        self.stream = cupy.cuda.Stream(non_blocking=False)
        self._plans: dict[int, tuple[Graph, Plan]] = {}
        self._copy_gbs: float | None = None

    def supports(self, op: Op) -> bool:
        """Whether graphs may hold op: it has a launcher (launch.LAUNCH)."""
        return op.value in LAUNCH

    # ---- weights and state ------------------------------------------------------------------------------
    device_form = staticmethod(device_form)

    def weight_bytes_needed(self, graph: Graph, sizes: Mapping[str, tuple[quant.QType, int]]) -> int:
        """Device bytes the graph's weights take as uploaded; sizes: name -> (type, GGUF bytes)."""
        uses = graph.weight_uses()
        return sum(
            device_bytes(device_form(sizes[w.name][0], tuple(w.shape), uses.get(w.name, set())),
                         tuple(w.shape), sizes[w.name][1])
            for w in graph.leaves("weight")
        )

    def scratch_bytes_needed(self, graph: Graph) -> int:
        """Device bytes prepare takes for the graph beside its arena, state and weights: where its mat-muls
        run on the vendor BLAS, the f16 tile scratch they share (the largest tiling) and the BLAS's
        workspace; and SCRATCH_ALLOWANCE for the kernels' own (split partials, tickets, copies)."""
        tiles = 0
        for t in graph.ops():
            if t.op in MUL_MAT_OPS and t.src[0].kind == "weight":
                N, K = t.src[0].shape
                dtype = t.src[0].dtype if t.src[0].dtype in BLOCK else "f16"  # types uploaded as f16 rows
                blas = shape_choice(self.ctx, dtype, N, K, t.src[1].n_elements // K).blas
                tiles = max(tiles, 0 if blas is None else blas.scratch_bytes)
        workspace = blas_mod.WORKSPACE_BYTES if tiles and self.ctx.blas is not None else 0
        return tiles + workspace + SCRATCH_ALLOWANCE

    def available_bytes(self) -> int:
        """Device memory a new allocation can still get (device.available_bytes)."""
        return available_bytes(self.cp)

    def bind_weights(self, graph: Graph, source: Callable[[str], tuple[np.ndarray, quant.QType]]) -> None:
        """Upload every weight leaf not yet bound; source(name) gives (raw bytes, ggml type)."""
        uses = graph.weight_uses()
        for w in graph.leaves("weight"):
            if w.name not in self.weights:
                raw, qtype = source(w.name)
                dev = upload_weight(self.cp, w.name, raw, qtype, tuple(w.shape), uses.get(w.name, set()))
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
        """The graph passes prepare runs: the IR's pipeline, after QUANTIZE_X8 insertion for the MUL_MAT nodes
        whose kernel reads int8 x (the int8 mat-vecs with int8_activations, mul_mat_q for prompts; weights
        bound before prepare) and the RMS norms folded into the mat-vecs that compute them (mul_mat_vec at up
        to 4 tokens; RF_FOLD_NORMS=0 keeps them apart)."""
        reads = reads_int8_x(self.ctx, self.weights)
        folds = folds_norm(self.ctx, self.weights)
        return (("insert_quantize_x8", lambda g: passes.insert_quantize_x8(g, reads)),
                ("fold_norms", lambda g: passes.fold_norms(g, folds)), *passes.PIPELINE)

    def plan_of(self, graph: Graph) -> alloc.Plan | None:
        """The ir.alloc plan the graph runs with (None before prepare)."""
        entry = self._plans.get(id(graph))
        return entry[1].ir_plan if entry is not None and entry[0] is graph else None

    def _plan(self, graph: Graph) -> Plan:
        ir_plan = alloc.plan(graph, alignment=ALIGN)
        offsets, arena_bytes = ir_plan.offsets, ir_plan.arena_bytes
        arena = self.cp.empty(max(1, arena_bytes), dtype=np.uint8)

        dev: dict[int, DevTensor] = {}
        inputs: dict[str, DevTensor] = {}
        steps: list[Step] = []
        early = early_quantize_x8(self.ctx, graph, self.weights)
        staging = Staging(self.cp, graph.inputs)
        for t in graph.nodes:
            if t.kind == "input":
                dev[t.id] = inputs[t.name] = staging.device_input(t.name, t)
            elif t.kind == "weight":
                dev[t.id] = self.weights[t.name]
            elif t.kind == "state":
                dev[t.id] = self.state[t.name]
            else:
                srcs = [dev[s.id] for s in t.src]
                if t.op in (Op.VIEW, Op.RESHAPE):
                    dev[t.id] = LAUNCH[t.op.value](self.ctx, srcs[0], **t.params)
                    steps.append(Step(t, dev[t.id], srcs, None))
                    continue
                if t.op in WRITES_ROWS:
                    out = srcs[0]
                else:
                    out = DevTensor(arena, offsets[t.id], t.shape, t.dtype)
                dev[t.id] = out
                # kernels chosen and compiled now
                weights = [s.kind == "weight" for s in t.src]
                launch = prepare_launch(self.ctx, t.op, out, srcs, t.params, t.id in early, weights)
                steps.append(Step(t, out, srcs, launch))
        outputs = {name: dev[t.id] for name, t in graph.outputs.items()}
        staging.plan_outputs(outputs)
        chain = None
        if (all(n in inputs and inputs[n].n_elements == 1 for n in CHAIN_INPUTS) and CHAIN_OUTPUT in outputs
                and CHAIN_LOGITS in outputs and outputs[CHAIN_LOGITS].dtype == "f32"
                and outputs[CHAIN_LOGITS].is_contiguous):
            chain = self.ctx.mods.get("chain.hip").fn("chain_advance")  # compiled now, not in run_chain
        return Plan(steps, inputs, outputs, arena, ir_plan, index_bounds=graph.index_bounds(),
                     staging=staging, chain=chain)

    def _get_plan(self, graph: Graph) -> Plan:
        entry = self._plans.get(id(graph))
        if entry is None or entry[0] is not graph:
            self.prepare(graph)
            entry = self._plans[id(graph)]
        return entry[1]

    # ---- execution --------------------------------------------------------------------------------------
    def _write_inputs(self, graph: Graph, plan: Plan, inputs: Mapping[str, np.ndarray]) -> None:
        """Check every input, then copy them all to the device in one async copy on the stream."""
        checked = {}
        for name, buf in plan.inputs.items():
            if name not in inputs:
                raise KeyError(f"graph {graph.name!r} needs input {name!r}")
            a = np.ascontiguousarray(inputs[name], dtype=NP_DTYPES[buf.dtype])
            if a.shape != buf.shape:
                raise ValueError(f"input {name!r}: shape {a.shape}, graph wants {buf.shape}")
            checked[name] = a
        plan.staging.write(checked, self.stream)

    def run(
        self, graph: Graph, inputs: Mapping[str, np.ndarray], timed: bool = False,
        fetch: Collection[str] | None = None,
    ) -> tuple[dict[str, np.ndarray], StepTimings]:
        """Write the inputs, run the graph and download the outputs named in fetch (None: all; the others
        stay on the device for `fetch_output` until the next run). Untimed runs replay a captured device
        graph (after one eager run); timed runs measure each op as `self.timing` says (TIMING_MODES). A
        timed run may run the step more than once: a step's only writes besides its outputs are its own
        KV-cache rows, which it writes with the same values each time. Host work of a replayed run: one
        async copy in, the graph launch, one async copy out per small output, one synchronize."""
        plan = self._get_plan(graph)
        check_indices(plan.index_bounds, inputs)
        self._write_inputs(graph, plan, inputs)
        can_replay = self.replay and not self.debug_poison and not plan.capture_failed
        if can_replay and (plan.runs > 0 or timed) and plan.device_graph is None:
            if plan.runs == 0:  # compile kernels and take scratch outside the capture
                with self.stream:
                    self._launch_all(plan, timed=False)
            try:
                plan.device_graph = self._capture(plan, count=self._traces())
            except Exception as e:  # a launcher that cannot be captured: stay eager for this graph
                plan.capture_failed = f"{type(e).__name__}: {e}"
                log.warning("graph capture failed (%s); running eagerly", plan.capture_failed)
        replays = can_replay and plan.device_graph is not None
        timings = self._replay_timed(plan) if timed and replays else None
        if timings is None and replays and not timed:
            with self.stream:
                plan.device_graph.launch(self.stream)
        elif timings is None:
            with self.stream:
                events = self._launch_all(plan, timed)
            if timed:
                self.stream.synchronize()
                timings = self._eager_timings(plan, events)
        plan.runs += 1
        names = list(plan.outputs) if fetch is None else list(fetch)
        small = [n for n in names if n in plan.staging.outputs]
        for name in small:
            plan.staging.read_async(name, plan.outputs[name], self.stream)
        self.stream.synchronize()
        outs = {name: plan.staging.result(name, plan.outputs[name]) for name in small}
        outs.update({name: download(self.cp, plan.outputs[name]) for name in names if name not in outs})
        return outs, timings or StepTimings()

    def run_chain(self, graph: Graph, inputs: Mapping[str, np.ndarray], n: int
                  ) -> tuple[np.ndarray, np.ndarray] | None:
        """n one-token greedy steps back to back, the host out of the loop: each replay of the captured
        step is followed by chain_advance (chain.hip), which makes the step's ARGMAX the next step's token
        and advances its position on the device; the n tokens (int32) and their logits (f32: NaN or +Inf
        where a step's logits were not finite) come back in one copy at the end.
        inputs: the first step's. None, having run nothing, where the step does not replay (not captured
        yet: run it once first; capture failed; replay off) or is not a one-token greedy step."""
        plan = self._get_plan(graph)
        can_replay = self.replay and not self.debug_poison and not plan.capture_failed
        if plan.chain is None or not can_replay or plan.device_graph is None:
            return None
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        check_indices(plan.index_bounds, inputs)
        self._write_inputs(graph, plan, inputs)
        tok, pos = (plan.inputs[name] for name in CHAIN_INPUTS)
        out, logits = plan.outputs[CHAIN_OUTPUT], plan.outputs[CHAIN_LOGITS]
        ring = self.cp.empty(2 * n, dtype=np.int32)  # the tokens, then their logits (f32 bits)
        with self.stream:
            for i in range(n):
                plan.device_graph.launch(self.stream)
                plan.chain((1,), (1,), (out.ptr, logits.ptr, tok.ptr, pos.ptr, ring.data.ptr,
                                        ring.data.ptr + 4 * n, np.int32(i)))
            host = ring.get(stream=self.stream)
        self.stream.synchronize()
        plan.runs += n
        return host[:n], host[n:].view(np.float32)

    def copy_gbs(self) -> float:
        """The device's copy bandwidth in GB/s (read + written; device.copy_bandwidth), measured once."""
        if self._copy_gbs is None:
            self._copy_gbs = copy_bandwidth(self.cp, self.stream) / 1e9
        return self._copy_gbs

    def replayed_us(self, graph: Graph, reps: int = 5) -> float | None:
        """Median device time of one replay of the graph's captured device graph, with the inputs of its
        last run (None before it was captured): the step without the host's work around it."""
        plan = self._get_plan(graph)
        if plan.device_graph is None:
            return None
        return float(np.median([timing_mod.replay_us(self.cp, self.stream, plan.device_graph)
                                for _ in range(reps)]))

    def fetch_output(self, graph: Graph, name: str, index: int | None = None) -> np.ndarray:
        """Output `name` of the graph's last run (valid until the next run of any graph sharing its
        arena); index: only that flat element, as a 1-element array (a 4-byte copy)."""
        plan = self._get_plan(graph)
        t = plan.outputs[name]
        if index is None:
            return download(self.cp, t)
        if not 0 <= index < t.n_elements or not t.is_contiguous:
            raise IndexError(f"output {name!r}: element {index} of a {t.shape} tensor")
        item = ITEMSIZE[t.dtype]
        start = t.offset + index * item
        return self.cp.asnumpy(t.buf[start:start + item]).view(NP_DTYPES[t.dtype])

    def memory(self, query_device: bool = True) -> dict[str, int]:
        """Bytes the backend holds by its own bookkeeping (weights, KV cache, activations: arenas, inputs and
        scratch; CuPy's pool), and with query_device the driver's free and total bytes (a driver call)."""
        pool = self.cp.get_default_memory_pool()
        plans = {id(p): p for _, p in self._plans.values()}.values()  # a plan is keyed by both graphs
        acts = self.ctx.scratch_bytes
        for plan in plans:
            acts += plan.arena_bytes + plan.staging.in_bytes
        out = {
            "weights": self.weight_bytes,
            "kv_cache": sum(int(t.buf.nbytes) for t in self.state.values()),
            "activations": int(acts),
            "pool_used": int(pool.used_bytes()),
            "pool_total": int(pool.total_bytes()),
        }
        if query_device:
            free, total = self.cp.cuda.runtime.memGetInfo()
            out.update(device_free=int(free), device_total=int(total))
        return out
