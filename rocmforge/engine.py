"""Engine: load a GGUF once, build fixed-shape graphs, bind weights once, prefill, step and generate."""

from __future__ import annotations

import math
import secrets
import sys
import time
import warnings
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import quant
from .backends.sampling import sample_logits, sample_params
from .config import ModelConfig
from .gguf import GGUFFile, open_model
from .ir.cost import graph_costs
from .ir.graph import Graph
from .ir.ops import ITEMSIZE, SAMPLE_MAX_K, Op
from .models import GraphSpec, build_graph
from .profile import StepTimings
from .quant import QType
from .tokenizer import Tokenizer

MAX_UBATCH = 512  # prompt tokens per prefill graph run
CHAIN_CHUNK = 16  # greedy generate(): tokens decoded per chain (Engine.decode) where the backend chains


def prompt_bucket(n: int) -> int:
    """Tokens of the graph a prompt chunk of n tokens runs in: powers of two up to 64, then multiples of 64
    (at most 63 padding tokens past 64), so a few graphs serve every prompt length."""
    if n <= 1:
        return n
    b = 1 << (n - 1).bit_length()
    return b if b <= 64 else -(-n // 64) * 64


KV_DTYPES = ("auto", "f16", "f32")


def default_kv_dtype(backend: Any) -> str:
    """The KV cache's type where the engine is not told: f16 on a GPU, as llama.cpp keeps it (half the bytes
    decode attention reads at depth), f32 on the numpy backend, the oracle that matches llama.cpp's exact
    F32 run."""
    return "f32" if getattr(backend, "name", "") == "numpy" else "f16"


class ContextOverflowError(ValueError):
    """More tokens than the engine's max_ctx (the KV cache size)."""


class DeviceMemoryError(RuntimeError):
    """The model does not fit in the device's memory at this max_ctx (raised before anything is uploaded)."""


class StepResult:
    """One decode step: the greedy next token, its logits, per-op timings (empty when untimed; their mode
    and the replayed step's wall time ride along, profile.StepTimings) and memory counters (the backend's
    own bookkeeping: no driver query).

    `logits` (f32 [n_vocab]) is downloaded on first use unless the step was asked for it
    (`step(logits=True)`); it can be downloaded until the engine runs again."""

    def __init__(self, token: int, logits: np.ndarray | Callable[[int | None], np.ndarray],
                 timings: StepTimings, memory: dict[str, int], position: int) -> None:
        self.token = token
        self.timings = timings
        self.memory = memory
        self.position = position  # position of the token that was fed
        self._logits = logits if isinstance(logits, np.ndarray) else None
        self._load = None if self._logits is not None else logits
        self._finite: bool | None = None

    @property
    def logits(self) -> np.ndarray:
        if self._logits is None:
            self._logits = self._load(None)
        return self._logits

    @property
    def finite(self) -> bool:
        """False when the logits hold NaN or +Inf (the token then means nothing). ARGMAX picks the first NaN,
        else a +Inf, so the token's own logit tells without downloading the row."""
        if self._finite is None:
            if self._logits is None:
                v = float(self._load(self.token)[0])
                self._finite = not (math.isnan(v) or v == math.inf)
            else:
                self._finite = not (np.isnan(self._logits).any() or np.isposinf(self._logits).any())
        return self._finite

    def timings_frame(self):
        """The step's per-op timings as a DataFrame (profile.timings_frame: with the IDLE row)."""
        from .profile import timings_frame

        return timings_frame(self.timings)

    def __repr__(self) -> str:
        logits = f"f32[{self._logits.size}]" if self._logits is not None else "on the device"
        return (f"StepResult(token={self.token}, position={self.position}, logits={logits}, "
                f"timings={self.timings!r})")

    def _repr_html_(self) -> str:
        """In a notebook: the token and position, the step's costliest ops and its memory counters."""
        import html

        from .profile import top_ops

        t = self.timings
        try:
            bad = "" if self.finite else " (logits hold NaN or Inf)"
        except RuntimeError:  # lazy logits gone since: nothing to tell
            bad = ""
        parts = [f"<p><b>StepResult</b>: token {self.token} at position {self.position}{bad}; "
                 f"{html.escape(repr(t))}</p>"]
        if t:
            parts.append(top_ops(t, 5).to_html(float_format=lambda v: f"{v:.4g}"))
        if self.memory:
            mib = ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in self.memory.items())
            parts.append(f"<p>memory: {html.escape(mib)}</p>")
        return "".join(parts)


@dataclass
class Generated:
    """One generated token and the text it completes (may be empty until UTF-8 is whole)."""

    token: int
    text: str


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    prefill_s: float = 0.0
    new_tokens: int = 0
    decode_steps: int = 0  # step() calls: the first new token comes from the prefill's logits
    decode_s: float = 0.0
    timings: StepTimings = field(default_factory=StepTimings)  # of the first decode step
    stop_reason: str = ""
    sampling: str = ""  # "greedy", "device" (SAMPLE in the decode graph) or "host (why)"
    seed: int | None = None  # the seed the draws used (generate draws one when given none; None: greedy)

    @property
    def prefill_tps(self) -> float:
        return self.prompt_tokens / self.prefill_s if self.prefill_s else 0.0

    @property
    def decode_tps(self) -> float:
        return self.decode_steps / self.decode_s if self.decode_s else 0.0


def _non_finite(position: int) -> FloatingPointError:
    return FloatingPointError(f"step at position {position}: the logits hold NaN or Inf")


def _make_backend(backend):
    from .backends.numpy_backend import NumpyBackend

    if not isinstance(backend, str):
        return backend  # a backend object, e.g. NumpyBackend(plan=False)
    if backend == "numpy":
        return NumpyBackend()
    if backend not in ("hip", "auto"):
        raise ValueError(f"unknown backend {backend!r}: choose 'auto', 'numpy' or 'hip'")
    try:
        from .backends.hip import HipBackend, gpu_available
    except ImportError as e:  # the hip package itself failed to import
        if backend == "hip":
            raise RuntimeError(f"the HIP backend is unavailable: {e}") from e
        ok, why = False, str(e)
    else:
        ok, why = gpu_available()
        if ok:
            return HipBackend()
    if backend == "hip":
        raise RuntimeError(f"backend='hip' needs a GPU through CuPy: {why}")
    print(f"rocmforge: no usable GPU ({why}); using the numpy backend", file=sys.stderr)
    return NumpyBackend()


class Engine:
    """A model bound to a backend with a KV cache of max_ctx rows.

    backend: "auto" (the GPU when CuPy finds one, else numpy), "numpy", "hip", or a backend object.
    """

    def __init__(self, model: GGUFFile, backend: Any = "auto", max_ctx: int = 2048,
                 kv_dtype: str = "auto", fuse: bool = True, pad_prompts: bool = True) -> None:
        self.model = model
        self.config = ModelConfig.from_gguf(model)
        self.tokenizer = Tokenizer.from_gguf(model)
        if max_ctx < 1:
            raise ValueError(f"max_ctx must be positive, got {max_ctx}")
        self.max_ctx = int(max_ctx)
        if self.config.n_ctx_train and self.max_ctx > self.config.n_ctx_train:
            warnings.warn(f"max_ctx={self.max_ctx} is above the model's training context "
                          f"({self.config.n_ctx_train}): positions past it were never trained", stacklevel=2)
        if kv_dtype not in KV_DTYPES:
            raise ValueError(f"kv_dtype {kv_dtype!r}: choose one of {', '.join(KV_DTYPES)}")
        self.fuse = bool(fuse)  # graphs through passes.fuse before binding (False: as the model builds them)
        # prompt chunks padded to prompt_bucket tokens (False: a graph for every length)
        self.pad_prompts = bool(pad_prompts)
        self.backend = _make_backend(backend)
        self.kv_dtype = default_kv_dtype(self.backend) if kv_dtype == "auto" else kv_dtype
        self.weight_spec = {n: (t.shape, t.ggml_type.name.lower()) for n, t in model.tensors.items()}
        # stacked weight (passes.fuse) -> its GGUF tensors, and whether their rows are interleaved
        # stacked weight -> (its parts, interleaved, its type: the parts' or Q8_0 for mixed ones)
        self._stacked: dict[str, tuple[tuple[str, ...], bool, str]] = {}
        self._graphs: dict[tuple[int, bool], Graph] = {}
        self._sample_graph: Graph | None = None  # the decode graph that draws the token (sample_graph)
        self.n_past = 0
        self.runs = 0  # graph runs so far: a step's logits can be fetched until the next
        self.next_token: int | None = None
        self._last_given: int | None = None  # generate(): the last token given out of a chain
        self.last_stats = GenerationStats()
        self.prefill_timings = StepTimings()  # of the last prefill(timed=True)
        self._check_device_memory()
        self.graph(1)  # decode graph: binds every weight and allocates the KV cache once

    @classmethod
    def from_gguf(cls, path_or_name: str | Path, backend: Any = "auto", max_ctx: int = 2048,
                  kv_dtype: str = "auto", fuse: bool = True, pad_prompts: bool = True) -> Engine:
        """Open a GGUF file (or a known model name, fetched on first use) and bind it to a backend.
        kv_dtype: the KV cache's type, "f16", "f32" or "auto" (default_kv_dtype)."""
        return cls(open_model(path_or_name), backend=backend, max_ctx=max_ctx, kv_dtype=kv_dtype, fuse=fuse,
                   pad_prompts=pad_prompts)

    def __repr__(self) -> str:
        c = self.config
        return (f"Engine({c.name or c.arch}: {c.arch}, {c.n_layer} layers, {c.n_embd} wide; backend "
                f"{self.backend.name} on {getattr(self.backend, 'device_name', 'host')}; position "
                f"{self.n_past}/{self.max_ctx}, KV {self.kv_dtype})")

    # ---- graphs -------------------------------------------------------------------------------------
    def graph(self, n_tokens: int, all_logits: bool = False) -> Graph:
        """The (cached) graph for n_tokens per run; binding is incremental, so weights load once."""
        key = (n_tokens, all_logits and n_tokens > 1)
        if key not in self._graphs:
            g = self._model_graph(GraphSpec(n_tokens, self.max_ctx, self.kv_dtype, key[1]))
            self.backend.bind_weights(g, self._weight_source)
            self._graphs[key] = self.backend.prepare(g)
        return self._graphs[key]

    def sample_graph(self) -> Graph:
        """The (cached) decode graph that draws the next token on the device: SAMPLE after the logits, whose
        one output "sample" is all a run downloads. Its weights and KV cache are the decode graph's."""
        if self._sample_graph is None:
            g = self._model_graph(GraphSpec(1, self.max_ctx, self.kv_dtype, sample=True))
            self.backend.bind_weights(g, self._weight_source)
            self._sample_graph = self.backend.prepare(g)
        return self._sample_graph

    def _model_graph(self, spec: GraphSpec) -> Graph:
        """The model's graph for spec, fused unless the engine was made with fuse=False; stacked weights are
        noted for _weight_source."""
        from .ir import passes

        g = build_graph(self.config, self.weight_spec, spec)
        if not self.fuse:
            return g
        g = passes.fuse(g)
        for w in g.leaves("weight"):
            if "rows_of" in w.params:
                self._stacked[w.name] = (w.params["rows_of"], bool(w.params.get("interleaved")), w.dtype)
        return g

    def device_plan(self, max_ctx: int | None = None, backend: Any = None) -> dict[str, int]:
        """Bytes this model needs on the backend's device at max_ctx (default: the engine's): weights as
        they are uploaded, the KV cache, the arenas of the decode graph and of the largest prefill graph,
        the backend's scratch beside them (its scratch_bytes_needed: the largest graph's), and their total.
        Builds and plans graphs; allocates nothing. backend: plan for another backend than the engine's (the
        weights' device form and scratch are its)."""
        from .ir import alloc, passes

        max_ctx = self.max_ctx if max_ctx is None else int(max_ctx)
        sizes = {n: (t.ggml_type, t.n_bytes) for n, t in self.model.tensors.items()}
        plan = {"weights": 0, "kv_cache": 0, "activations": 0, "scratch": 0}
        backend = self.backend if backend is None else backend
        scratch = getattr(backend, "scratch_bytes_needed", None)
        for n_tokens in sorted({1, min(MAX_UBATCH, max_ctx)}):
            g = self._model_graph(GraphSpec(n_tokens, max_ctx, self.kv_dtype, False))
            for name, (parts, _, dtype) in self._stacked.items():
                qt = QType[dtype.upper()]  # (Q8_0 for mixed parts: their blocks converted)
                sizes[name] = (qt, sum(quant.row_bytes(qt, math.prod(self.model.tensors[p].shape))
                                       for p in parts))
            if n_tokens == 1:
                need = getattr(backend, "weight_bytes_needed", None)
                plan["weights"] = (need(g, sizes) if need
                                   else sum(sizes[w.name][1] for w in g.leaves("weight")))
                plan["kv_cache"] = sum(math.prod(s.shape) * ITEMSIZE[s.dtype] for s in g.leaves("state"))
            opt = passes.optimize(g)[0]
            plan["activations"] += alloc.plan(opt, alignment=256).arena_bytes
            if scratch is not None:
                plan["scratch"] = max(plan["scratch"], scratch(opt))
        plan["total"] = sum(plan.values())
        return plan

    def _check_device_memory(self) -> None:
        """Fail before uploading anything when the device cannot hold the model at max_ctx, saying how
        much it needs, how much there is and the largest max_ctx that would fit."""
        available = getattr(self.backend, "available_bytes", None)
        have = available() if available is not None else None
        if have is None:
            return  # nothing to check against
        plan = self.device_plan()
        if plan["total"] <= have:
            return
        per_token = plan["kv_cache"] / self.max_ctx
        fits = int((have - plan["total"] + plan["kv_cache"]) // per_token) if per_token else 0
        fits = min(fits, self.max_ctx - 1)
        while fits > 0 and self.device_plan(fits)["total"] > have:  # arenas may shrink with max_ctx too
            fits = fits * 15 // 16
        gib = 1 << 30
        hint = f"max_ctx={fits} would fit" if fits > 0 else "no max_ctx fits: the weights alone do not"
        name = self.config.name or self.config.arch
        dev = getattr(self.backend, "device_name", "the device")
        raise DeviceMemoryError(
            f"{name} at max_ctx={self.max_ctx} needs {plan['total'] / gib:.2f} GiB on {dev} (weights "
            f"{plan['weights'] / gib:.2f}, KV cache {plan['kv_cache'] / gib:.2f}, activations "
            f"{plan['activations'] / gib:.2f}, scratch {plan['scratch'] / gib:.2f}); {have / gib:.2f} GiB is "
            f"available; {hint}")

    @property
    def graph_keys(self) -> list[tuple[int, bool]]:
        """(n_tokens, all_logits) of every graph built so far: one decode graph serves every position."""
        return list(self._graphs)

    def _weight_source(self, name: str):
        """(raw bytes, GGML type) of a GGUF tensor, or of a stacked weight: its parts' rows concatenated, or
        taken in turn where interleaved (a row of each part, then the next row of each); parts of another
        type than the stack's converted to it first (Q4_0 or Q5_0 to Q8_0, without loss)."""
        stacked = self._stacked.get(name)
        if stacked is None:
            return self.model.raw(name), self.model.tensors[name].ggml_type
        parts, interleaved, dtype = stacked
        target = QType[dtype.upper()]
        raws = []
        for p in parts:
            qt = self.model.tensors[p].ggml_type
            if qt != target and not (target == QType.Q8_0 and qt in quant.TO_Q8_0):
                raise ValueError(f"stacked weight {name} ({target.name}): part {p} is {qt.name}")
            raws.append(self.model.raw(p) if qt == target else quant.to_q8_0(self.model.raw(p), qt))
        if not interleaved:
            return np.concatenate(raws), target
        rows = {self.model.tensors[p].shape[0] for p in parts}
        if len(rows) != 1:
            raise ValueError(f"interleaved weight {name}: parts of {sorted(rows)} rows")
        n = rows.pop()
        return np.stack([r.reshape(n, -1) for r in raws], axis=1).reshape(-1), target

    def _check_room(self, n: int) -> None:
        if self.n_past + n > self.max_ctx:
            raise ContextOverflowError(
                f"{self.n_past} tokens in the cache + {n} new exceed max_ctx={self.max_ctx}; "
                f"reset() or make the engine with a larger max_ctx")

    def _run(self, tokens: Sequence[int], all_logits: bool, timed: bool, sample: np.ndarray | None = None,
             fetch: Collection[str] | None = None):
        """Run the graph for these tokens at the next positions; sample: SAMPLE's params (one token: the
        sampling decode graph, sample_graph); fetch: the outputs downloaded (None: all)."""
        n = len(tokens)
        toks = np.asarray(tokens, dtype=np.int64)
        if toks.size and (toks.min() < 0 or toks.max() >= self.config.n_vocab):
            raise ValueError(f"token id out of range [0, {self.config.n_vocab})")
        # padding tokens (id 0) sit at the positions after the prompt: no real token attends to them (causal
        # by position), and the KV rows they write are overwritten by the tokens that later take those
        # positions before anything reads them
        b = prompt_bucket(n) if self.pad_prompts and sample is None else n
        if self.n_past + b > self.max_ctx:
            b = n
        g = self.graph(b, all_logits) if sample is None else self.sample_graph()
        toks = np.concatenate([toks, np.zeros(b - n, np.int64)]).astype(np.int32)
        inputs = self._inputs(g, toks, n)
        if sample is not None:
            inputs["inp_sample"] = sample
        outs, timings = self.backend.run(g, inputs, timed, fetch=fetch)
        self.runs += 1
        if all_logits and b > n:
            outs = {k: v[:n] for k, v in outs.items()}
        if timed:
            timings.costs = graph_costs(g, n_kv=self.n_past + b)
            timings.tokens = n
        self.n_past += n
        return outs, timings

    def _inputs(self, g: Graph, toks: np.ndarray, n: int) -> dict[str, np.ndarray]:
        """A run's inputs: tokens (int32, n real ones then padding) at the next positions."""
        pos = np.arange(self.n_past, self.n_past + len(toks), dtype=np.int32)
        inputs = {"inp_tokens": toks, "inp_pos": pos}
        if "inp_out_ids" in g.inputs:
            inputs["inp_out_ids"] = np.array([n - 1], np.int32)
        return inputs

    # ---- public API ---------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget the context: position 0, KV cache cleared."""
        self.n_past = 0
        self.next_token = None
        self.backend.reset_state()

    def prefill(self, token_ids: Sequence[int], all_logits: bool = False, timed: bool = False
                ) -> np.ndarray:
        """Feed tokens at the next positions; f32 logits [n, n_vocab] with all_logits, else [n_vocab].
        timed: per-op timings of every chunk's run in `prefill_timings` (as step's timings)."""
        ids = [int(t) for t in token_ids]
        if not ids:
            raise ValueError("prefill needs at least one token")
        self._check_room(len(ids))
        rows = []
        self.prefill_timings = StepTimings()
        for i in range(0, len(ids), MAX_UBATCH):
            chunk = ids[i:i + MAX_UBATCH]
            outs, timings = self._run(chunk, all_logits, timed=timed)
            if timed:
                self.prefill_timings.extend_run(timings)
            rows.append(outs["logits"])
        logits = np.concatenate(rows) if all_logits else rows[-1][-1]
        self.next_token = int(np.argmax(logits[-1] if all_logits else logits))
        return logits

    def step(self, token: int | None = None, timed: bool = False, logits: bool = False) -> StepResult:
        """Decode one token (default: the greedy choice after the last call) at the next position.

        Untimed, the step replays the decode graph and downloads the greedy token id only; timed=True runs it
        with per-op timings (the backend's timing mode). logits=True downloads the logits with the step,
        else StepResult.logits downloads them on first use, until the engine runs again."""
        if token is None:
            if self.next_token is None:  # none yet, or the last call drew its token on the device
                raise RuntimeError("step() without a token needs the greedy choice of a prefill() or step()")
            token = self.next_token
        self._check_room(1)
        position = self.n_past
        fetch = ("argmax", "logits") if logits else ("argmax",)
        outs, timings = self._run([token], False, timed, fetch=fetch)
        self.next_token = int(outs["argmax"][0])
        memory = self.backend.memory(query_device=False)
        if logits:
            return StepResult(self.next_token, outs["logits"][0], timings, memory, position)
        return StepResult(self.next_token, self._logits_loader(position), timings, memory, position)

    def decode(self, n: int, token: int | None = None) -> list[int]:
        """Greedy: n more tokens from `token` (default: the last greedy choice of a prefill() or step()), as
        n step() calls would give them. Where the backend chains steps on the device (HipBackend.run_chain:
        each step's token fed to the next without the host) the tokens come back together at the end; else
        step by step. Nothing but token ids (and each token's logit) is downloaded. Logits with NaN or +Inf
        raise FloatingPointError, as in generate()."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if token is None and self.next_token is None:
            raise RuntimeError("decode() needs a token, or the greedy choice of a prefill() or step()")
        self._check_room(n)
        if token is not None:
            if not 0 <= token < self.config.n_vocab:
                raise ValueError(f"token id out of range [0, {self.config.n_vocab})")
            self.next_token = int(token)
        chain = getattr(self.backend, "run_chain", None)
        out: list[int] = []
        while len(out) < n:
            if out and chain is not None:  # after a step: the graph is prepared (captured after two runs)
                g = self.graph(1)
                p0 = self.n_past
                got = chain(g, self._inputs(g, np.array([self.next_token], np.int32), 1), n - len(out))
                if got is not None:
                    toks, vals = got
                    self.runs += len(toks)
                    self.n_past += len(toks)
                    out += [int(t) for t in toks]
                    self.next_token = out[-1]
                    bad = np.flatnonzero(np.isnan(vals) | np.isposinf(vals))
                    if bad.size:
                        where = p0 + int(bad[0])
                        raise _non_finite(where)
                    break
            res = self.step()
            if not res.finite:
                raise _non_finite(res.position)
            out.append(res.token)
        return out

    def _logits_loader(self, position: int) -> Callable[[int | None], np.ndarray]:
        """Downloads the logits of the decode step at position (index: one element) while they are still
        the decode graph's last output."""
        run, g = self.runs, self.graph(1)

        def load(index: int | None) -> np.ndarray:
            if self.runs != run:
                raise RuntimeError(f"the logits of the step at position {position} are gone: the engine has "
                                   f"run since; ask for them with step(..., logits=True)")
            if index is None:
                return self.backend.fetch_output(g, "logits")[0]
            return self.backend.fetch_output(g, "logits", index)

        return load

    def sample_step(self, token: int, temperature: float, top_k: int, top_p: float, seed: int,
                    timed: bool = False) -> tuple[int, StepTimings]:
        """Decode one token and draw the next on the device (sample_graph): (the token drawn, as
        sample_seeded would draw it from this step's logits, and the step's timings). Only the token comes
        back. top_k must be in [1, SAMPLE_MAX_K]."""
        if not 1 <= top_k <= SAMPLE_MAX_K:
            raise ValueError(f"sample_step keeps 1..{SAMPLE_MAX_K} candidates, got top_k={top_k}")
        self._check_room(1)
        params = sample_params(seed, self.n_past + 1, temperature, top_k, top_p)  # counter: its position
        outs, timings = self._run([token], False, timed, sample=params, fetch=("sample",))
        self.next_token = None  # no greedy choice: the step's logits stayed on the device
        return int(outs["sample"][0]), timings

    def device_samples(self, temperature: float, top_k: int) -> str:
        """Why generate with these settings samples on the host ("": it samples on the device)."""
        if temperature == 0:
            return "greedy"
        supports = getattr(self.backend, "supports", None)
        if supports is None or not supports(Op.SAMPLE):
            return f"the {self.backend.name} backend has no SAMPLE"
        if not 1 <= top_k <= SAMPLE_MAX_K:
            return f"top_k={top_k}: the device keeps 1..{SAMPLE_MAX_K} candidates"
        return ""

    def memory(self) -> dict[str, int]:
        """The backend's memory counters, with the device's free and total bytes (a driver query)."""
        return self.backend.memory()

    def generate(self, prompt: str | Sequence[int], max_new_tokens: int = 64, temperature: float = 0.0,
                 top_k: int = 0, top_p: float = 1.0, seed: int | None = None,
                 stop: Sequence[str] = (), device_sampling: bool | None = None) -> Iterator[Generated]:
        """Yield tokens and their text as they come; continues the current context (reset() first).

        Greedy at temperature 0, else drawn as sample_seeded defines it (temperature, top-k, top-p; the
        counter of the token at position p is p), so a seed gives the same text on every backend; seed None
        draws one (last_stats.seed). The draw runs on the device where the backend has SAMPLE and top_k is
        in [1, SAMPLE_MAX_K] (a step then downloads one token id, no logits), else on the host from the
        step's logits (device_sampling: None, as available; False, the host; True, the device or a
        ValueError saying why not). last_stats.sampling says which.
        A prompt that does not fit in max_ctx raises ContextOverflowError; generation stops when the KV
        cache is full (stop_reason says so), at a stop token or string, or after max_new_tokens.
        """
        check_sampling(temperature, top_k, top_p)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if seed is not None and not 0 <= seed < 1 << 64:
            raise ValueError(f"seed must be in [0, 2^64), got {seed}")
        why = self.device_samples(temperature, top_k)
        if device_sampling and why:
            raise ValueError(f"device_sampling=True: {why}")
        on_device = not why and device_sampling is not False
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        self._check_room(len(ids))  # the prompt must fit; generation stops when the cache is full
        if seed is None and temperature > 0:
            seed = secrets.randbits(64)
        sampling = "device" if on_device else why if why == "greedy" else f"host ({why or 'asked for'})"
        return self._generate(ids, max_new_tokens, temperature, top_k, top_p, seed, stop, on_device, sampling)

    def _generate(self, ids: list[int], max_new_tokens: int, temperature: float, top_k: int, top_p: float,
                  seed: int | None, stop: Sequence[str], on_device: bool, sampling: str
                  ) -> Iterator[Generated]:
        stats = self.last_stats = GenerationStats(prompt_tokens=len(ids), sampling=sampling, seed=seed)
        t0 = time.perf_counter()
        logits = self.prefill(ids)
        stats.prefill_s = time.perf_counter() - t0
        if not np.isfinite(logits).all():
            raise FloatingPointError("the prompt's last logits hold NaN or Inf")
        decoder = self.tokenizer.stream()
        t0 = time.perf_counter()
        try:
            yield from self._decode(logits, stats, decoder, max_new_tokens, temperature, top_k, top_p, seed,
                                    stop, on_device)
        except GeneratorExit:  # the caller stopped early (or closed us after an interrupt)
            stats.stop_reason = stats.stop_reason or "stopped by the caller"
            raise
        except BaseException:
            stats.stop_reason = stats.stop_reason or "interrupted"
            raise
        finally:  # the statistics so far, however it ends
            stats.decode_s = time.perf_counter() - t0

    def _decode(self, logits: np.ndarray, stats: GenerationStats, decoder: Any, max_new_tokens: int,
                temperature: float, top_k: int, top_p: float, seed: int | None, stop: Sequence[str],
                on_device: bool) -> Iterator[Generated]:
        # greedy on a backend that chains steps: after the first (timed) step, CHAIN_CHUNK tokens a chain
        # (decode); those decoded past where generation stops are taken back (the cache's later rows are
        # rewritten before anything reads them)
        chained = temperature <= 0 and not on_device and hasattr(self.backend, "run_chain")
        pending: list[int] = []  # tokens a chain decoded that were not given out yet
        try:
            yield from self._decode_loop(logits, stats, decoder, max_new_tokens, temperature, top_k, top_p,
                                         seed, stop, on_device, chained, pending)
        finally:
            if pending:  # as if stepped one at a time: the last token given out is the one not yet fed
                self.n_past -= len(pending)
                self.next_token = self._last_given

    def _decode_loop(self, logits: np.ndarray, stats: GenerationStats, decoder: Any, max_new_tokens: int,
                     temperature: float, top_k: int, top_p: float, seed: int | None, stop: Sequence[str],
                     on_device: bool, chained: bool, pending: list[int]) -> Iterator[Generated]:
        text = ""
        stop_ids = set(self.tokenizer.stop_ids)
        if max_new_tokens == 0:
            stats.stop_reason = "max tokens"
        # the first token from the prompt's logits, on the host (they came back anyway); the counter of a
        # token is its position: the cache's length when it is drawn
        tok = sample_seeded(logits, temperature, top_k, top_p, seed, self.n_past)
        for i in range(max_new_tokens):
            stats.new_tokens += 1
            if tok in stop_ids:
                stats.stop_reason = "eos"
                break
            last = i == max_new_tokens - 1
            piece = decoder.push(tok) + (decoder.flush() if last else "")
            text += piece
            yield Generated(tok, piece)
            if any(s in text for s in stop):
                stats.stop_reason = "stop string"
                break
            if last:
                stats.stop_reason = "max tokens"
                break
            if self.n_past >= self.max_ctx:
                stats.stop_reason = f"max_ctx={self.max_ctx} reached"
                break
            # per-op timings from the first step only: a timed step runs the step more than once
            timed = stats.decode_steps == 0
            if chained and not timed:
                if not pending:
                    k = min(CHAIN_CHUNK, max_new_tokens - 1 - i, self.max_ctx - self.n_past)
                    pending += self.decode(k, tok)
                tok = self._last_given = pending.pop(0)
                stats.decode_steps += 1
                continue
            if on_device:  # no logits come back to check: a NaN row draws its first NaN (SAMPLE)
                tok, timings = self.sample_step(tok, temperature, top_k, top_p, seed, timed)
            else:
                res = self.step(tok, timed=timed, logits=temperature > 0)  # greedy: the token id only
                timings = res.timings
                if not res.finite:
                    raise _non_finite(res.position)
                tok = (res.token if temperature <= 0
                       else sample_seeded(res.logits, temperature, top_k, top_p, seed, self.n_past))
            stats.decode_steps += 1
            if timings:
                stats.timings = timings


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    """Refuse sampling settings outside their ranges (a ValueError saying which)."""
    if not temperature >= 0 or temperature == float("inf"):
        raise ValueError(f"temperature must be >= 0 and finite, got {temperature}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0: no cut), got {top_k}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_seeded(logits: np.ndarray, temperature: float, top_k: int, top_p: float, seed: int | None,
                  counter: int) -> int:
    """The token generate draws from logits f32 [n_vocab] on the host: greedy (numpy's argmax) at
    temperature 0, else sampling.sample_logits with no bound on top_k (0: no cut), the definition SAMPLE
    computes on the device for top_k in [1, SAMPLE_MAX_K]; counter: the position the token will take."""
    if temperature <= 0:
        return int(np.argmax(logits))
    if seed is None:
        raise ValueError("sampling at a temperature above 0 needs a seed")
    return int(sample_logits(logits, sample_params(seed, counter, temperature, top_k, top_p)))


def sample(logits: np.ndarray, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
           rng: np.random.Generator | None = None) -> int:
    """Greedy at temperature 0, else top-k / top-p (nucleus) sampling from softmax(logits / T) with numpy's
    Generator (not what generate draws: sample_seeded)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    rng = rng or np.random.default_rng()
    z = logits.astype(np.float64) / temperature
    order = np.argsort(-z, kind="stable")
    if top_k > 0:
        order = order[:top_k]
    p = np.exp(z[order] - z[order[0]])
    p /= p.sum()
    if top_p < 1.0:
        keep = int(np.searchsorted(np.cumsum(p), top_p) + 1)
        order, p = order[:keep], p[:keep] / p[:keep].sum()
    return int(order[rng.choice(len(order), p=p)])
