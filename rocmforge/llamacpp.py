"""llama.cpp side by side: recorded reference logits (package data, rocmforge/data/refs), and runs of
llama.cpp's own tools (llama-bench, llama-perplexity) with the settings of a rocmforge run, read into
rocmforge's result types.

The tools are looked for in an explicit directory (`--llama-dir`, `llama_dir=`), else in the directory
named by $ROCMFORGE_LLAMA_DIR, else on PATH; the first of these that is given is the only place looked,
so a named build is never silently swapped for another one.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .perplexity import Perplexity

if TYPE_CHECKING:
    import pandas as pd

REFS_DIR = Path(str(files("rocmforge") / "data" / "refs"))  # scripts/record_llamacpp_refs.py writes here


@dataclass
class Refs:
    """Summaries of llama.cpp runs of one model (scripts/record_llamacpp_refs.py made them)."""

    name: str
    arrays: dict[str, np.ndarray]
    meta: dict

    @property
    def texts(self) -> list[str]:
        return [str(t) for t in self.arrays["text_names"]]

    @property
    def greedy(self) -> list[str]:
        return [str(t) for t in self.arrays["greedy_names"]]

    def tokens(self, text: str) -> np.ndarray:
        return self.arrays[f"tokens_{text}"]

    def run(self, run: str, text: str) -> dict[str, np.ndarray]:
        """run is 'f32' (the exact yardstick: F32 weights, F32 KV) or 'quant' (llama.cpp's normal CPU run)."""
        p = f"{run}_{text}_"
        return {k[len(p):]: v for k, v in self.arrays.items() if k.startswith(p)}


def load_refs(name: str, refs_dir: Path = REFS_DIR) -> Refs:
    """The recorded references of model `name` (refs_dir/<name>.npz and .json)."""
    d = np.load(refs_dir / f"{name}.npz")
    meta = json.loads((refs_dir / f"{name}.json").read_text())
    return Refs(name, {k: d[k] for k in d.files}, meta)


def _lse(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))[..., 0]


def dlogp(logits: np.ndarray, tokens: np.ndarray, ref: dict[str, np.ndarray]) -> np.ndarray:
    """|d log p(next token)| in nats at positions 0..n-2, our logits [n, n_vocab] against a recorded run."""
    nxt = tokens[1:]
    ours = logits[np.arange(len(nxt)), nxt].astype(np.float64) - _lse(logits)[:-1]
    return np.abs(ours - _logp_next(ref))


def _logp_next(run: dict[str, np.ndarray]) -> np.ndarray:
    return run["next_logit"].astype(np.float64) - run["lse"][:-1].astype(np.float64)


def dlogp_between(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    """|d log p(next token)| per position between two recorded runs (e.g. llama.cpp quantized vs F32)."""
    return np.abs(_logp_next(a) - _logp_next(b))


def distance(logits: np.ndarray, tokens: np.ndarray, ref: dict[str, np.ndarray]) -> dict[str, float]:
    """Teacher-forced distance of our logits [n, n_vocab] from a recorded run: mean |d log p(next)| in
    nats over positions 0..n-2, and top-1 agreement (%) over all positions."""
    d = dlogp(logits, tokens, ref)
    top1 = np.argmax(logits, axis=-1) == ref["top_ids"][:, 0]
    return {"mean_abs_dlogp": float(d.mean()), "max_abs_dlogp": float(d.max()),
            "top1_agree_pct": float(100.0 * top1.mean()), "n": int(len(tokens))}


def distance_between(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """The same figures between two recorded runs (e.g. llama.cpp quantized vs F32)."""
    d = dlogp_between(a, b)
    top1 = a["top_ids"][:, 0] == b["top_ids"][:, 0]
    return {"mean_abs_dlogp": float(d.mean()), "max_abs_dlogp": float(d.max()),
            "top1_agree_pct": float(100.0 * top1.mean()), "n": int(len(top1))}


# ---- llama-bench JSONL ------------------------------------------------------------------------------

# The fields a comparison needs; builds differ in the rest (added, renamed or dropped over time).
BENCH_INT = ("build_number", "model_size", "model_n_params", "n_prompt", "n_gen", "n_depth", "avg_ns",
             "stddev_ns", "n_gpu_layers", "flash_attn")
BENCH_FLOAT = ("avg_ts", "stddev_ts")
BENCH_TEXT = ("build_commit", "gpu_info", "backends", "model_filename", "model_type", "test_time")
TOOLS = ("rocmforge", "llama.cpp")


def _number(v):
    """A JSON value as a number (older builds and hand edits put numbers in strings); NaN if it is none."""
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int | float):
        return v
    try:
        return float(str(v).strip())
    except ValueError:
        return math.nan


def _samples(v) -> list[float]:
    if isinstance(v, str):  # "1, 2, 3" where a list belongs
        v = [x for x in re.split(r"[\s,\[\]]+", v) if x]
    return [_number(x) for x in v] if isinstance(v, list) else []


def _test_name(n_prompt: int, n_gen: int, n_depth: int) -> str:
    # as llama-bench's markdown table names its tests
    name = f"pp{n_prompt}" if not n_gen else f"tg{n_gen}" if not n_prompt else f"pp{n_prompt}+tg{n_gen}"
    return f"{name} @ d{n_depth}" if n_depth else name


def parse_bench_jsonl(text: str, tool: str | None = None) -> pd.DataFrame:
    """llama-bench `-o jsonl` lines (or rocmforge bench records) as a DataFrame, one row per test.

    Tolerant of build differences: lines that are not JSON objects are skipped (log lines on stdout),
    missing fields are NaN (counts 0), extra fields are kept, numbers given as strings are converted.
    Adds `test` (pp512, tg128, pp512 @ d1024, as llama-bench names them), `model` (the model file's name,
    to join runs of one model) and `tool`: rocmforge or llama.cpp (from build_commit, unless given)."""
    import pandas as pd

    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"bench JSONL line {i} is not JSON: {e}") from None
        for k in BENCH_INT + BENCH_FLOAT:
            if k in r:
                r[k] = _number(r[k])
        for k in ("samples_ns", "samples_ts"):
            if k in r:
                r[k] = _samples(r[k])
        if "avg_ts" not in r and r.get("samples_ts"):
            r["avg_ts"] = float(np.mean(r["samples_ts"]))
        rows.append(r)
    cols = list(dict.fromkeys([*BENCH_TEXT, *BENCH_INT, *BENCH_FLOAT, *(k for r in rows for k in r)]))
    df = pd.DataFrame(rows, columns=cols)
    for k in ("n_prompt", "n_gen", "n_depth"):
        df[k] = pd.to_numeric(df[k], errors="coerce").fillna(0).astype(int)
    for k in BENCH_FLOAT:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype(float)
    df["test"] = [_test_name(p, g, d) for p, g, d in zip(df["n_prompt"], df["n_gen"], df["n_depth"],
                                                          strict=True)]
    df["model"] = [Path(str(f)).name if isinstance(f, str) else "" for f in df["model_filename"]]
    if tool is not None:
        if tool not in TOOLS:
            raise ValueError(f"tool {tool!r}: one of {TOOLS}")
        df["tool"] = tool
    else:
        df["tool"] = ["rocmforge" if str(c).startswith("rocmforge") else "llama.cpp"
                      for c in df["build_commit"]]
    return df


def read_bench_jsonl(path: str | Path, tool: str | None = None) -> pd.DataFrame:
    """A llama-bench `-o jsonl` file (or `rocmforge bench -o`) as a DataFrame: parse_bench_jsonl."""
    return parse_bench_jsonl(Path(path).read_text(), tool)


# ---- finding and running llama.cpp's tools -------------------------------------------------------------

LLAMA_DIR_ENV = "ROCMFORGE_LLAMA_DIR"


class LlamaCppError(RuntimeError):
    """A llama.cpp tool failed: not found, timed out, exited non-zero, or printed nothing we can read."""


class LlamaCppNotFound(LlamaCppError):
    pass


def find_tool(name: str, llama_dir: str | Path | None = None) -> Path:
    """The executable `name` (llama-bench, llama-perplexity): in llama_dir (or its bin/) if given, else in
    $ROCMFORGE_LLAMA_DIR (or its bin/) if set, else on PATH. LlamaCppNotFound says where it looked."""
    env = os.environ.get(LLAMA_DIR_ENV)
    if llama_dir is not None or env:
        d = Path(llama_dir if llama_dir is not None else env)
        where = f"--llama-dir {d}" if llama_dir is not None else f"${LLAMA_DIR_ENV}={d}"
        for cand in (d / name, d / "bin" / name):  # a build tree keeps them in bin/
            if cand.is_file() and os.access(cand, os.X_OK):
                return cand
        raise LlamaCppNotFound(f"{name} not found: looked in {where} (and its bin/)")
    found = shutil.which(name)
    if found is None:
        raise LlamaCppNotFound(f"{name} not found: looked on PATH (name a build with --llama-dir or "
                               f"${LLAMA_DIR_ENV})")
    return Path(found)


@dataclass
class ToolRun:
    """One finished run of a tool: the exact command, its output and how long it took."""

    command: list[str]
    stdout: str
    stderr: str
    seconds: float

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output on stderr)"


def run_tool(command: Sequence[str], timeout: float | None = 3600.0) -> ToolRun:
    """Run a tool to its end; a timeout, a failure to start or a non-zero exit is a LlamaCppError (with
    the tool's last stderr line)."""
    cmd = [str(c) for c in command]
    name = Path(cmd[0]).name
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise LlamaCppError(f"{name} timed out after {timeout:g} s: {shlex.join(cmd)}") from None
    except OSError as e:
        raise LlamaCppError(f"{name} could not start: {e}") from None
    if p.returncode != 0:
        raise LlamaCppError(f"{name} exited with status {p.returncode}: {_last_line(p.stderr)}")
    return ToolRun(cmd, p.stdout, p.stderr, time.perf_counter() - t0)


def bench_command(tool: str | Path, model: str | Path, n_prompt: int = 512, n_gen: int = 128, reps: int = 3,
                  depth: int | None = None) -> list[str]:
    """llama-bench with a rocmforge bench's settings: all layers on the GPU, flash attention (as our
    attention is fused), JSONL out; -p 0 / -n 0 skip a test in both."""
    cmd = [str(tool), "-m", str(model), "-p", str(n_prompt), "-n", str(n_gen), "-r", str(reps),
           "-fa", "1", "-ngl", "99"]
    if depth:
        cmd += ["-d", str(depth)]
    return cmd + ["-o", "jsonl"]


@dataclass
class BenchRun:
    """llama-bench's records as a frame (parse_bench_jsonl, tool llama.cpp) and the run that made them."""

    frame: pd.DataFrame
    run: ToolRun

    @property
    def jsonl(self) -> str:
        return "".join(ln + "\n" for ln in self.run.stdout.splitlines() if ln.strip().startswith("{"))


def run_bench(model: str | Path, n_prompt: int = 512, n_gen: int = 128, reps: int = 3,
              depth: int | None = None, llama_dir: str | Path | None = None,
              timeout: float | None = 3600.0) -> BenchRun:
    """Run llama-bench on a GGUF file as `rocmforge bench` runs it (bench_command) and read its records."""
    run = run_tool(bench_command(find_tool("llama-bench", llama_dir), model, n_prompt, n_gen, reps, depth),
                   timeout)
    df = parse_bench_jsonl(run.stdout, tool="llama.cpp")
    if df.empty:
        raise LlamaCppError(f"llama-bench printed no JSONL records: {_last_line(run.stderr)}")
    return BenchRun(df, run)


# ---- llama-perplexity -------------------------------------------------------------------------------

_RUNNING = re.compile(r"\[(\d+)\]([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)),", re.IGNORECASE)
_FINAL = re.compile(r"Final estimate: PPL = ([-+.\w]+) \+/- ([-+.\w]+)")


@dataclass(repr=False)
class ToolPerplexity(Perplexity):
    """A Perplexity read from llama-perplexity's output, with the command that produced it."""

    command: list[str] = field(default_factory=list)

    @property
    def command_line(self) -> str:
        return shlex.join(self.command)


def perplexity_command(tool: str | Path, model: str | Path, text_file: str | Path, n_ctx: int = 512,
                       n_chunks: int | None = None) -> list[str]:
    """llama-perplexity with `rocmforge perplexity`'s chunking: -c n_ctx, one chunk per batch (-b = -c)."""
    cmd = [str(tool), "-m", str(model), "-f", str(text_file), "-c", str(n_ctx), "-b", str(n_ctx),
           "-ngl", "99"]
    return cmd + (["--chunks", str(n_chunks)] if n_chunks is not None else [])


def parse_perplexity(output: str, n_ctx: int, command: Sequence[str] = ()) -> ToolPerplexity:
    """llama-perplexity's running "[1]x,[2]y," values and its "Final estimate: PPL = a +/- b" line (from
    stdout and stderr together: builds differ in which stream gets which) as a Perplexity."""
    m = _FINAL.search(output)
    if m is None:
        raise LlamaCppError(f"no 'Final estimate: PPL = ...' line in llama-perplexity's output: "
                            f"{_last_line(output)}")
    running: dict[int, float] = {}
    for i, v in _RUNNING.findall(output):
        running[int(i)] = float(v)
    ppl, err = float(m.group(1)), float(m.group(2))
    per_chunk = n_ctx - n_ctx // 2 - 1  # llama-perplexity scores the second half of a chunk, less one
    vals = [running[k] for k in sorted(running)]
    return ToolPerplexity(ppl, err, math.log(ppl) if ppl > 0 else math.nan, per_chunk * len(vals), n_ctx,
                          vals, list(command))


def run_perplexity(model: str | Path, text_file: str | Path, n_ctx: int = 512, n_chunks: int | None = None,
                   llama_dir: str | Path | None = None, timeout: float | None = 3600.0) -> ToolPerplexity:
    """Run llama-perplexity on the text `rocmforge perplexity -f` reads, chunked the same way."""
    cmd = perplexity_command(find_tool("llama-perplexity", llama_dir), model, text_file, n_ctx, n_chunks)
    run = run_tool(cmd, timeout)
    return parse_perplexity(run.stdout + "\n" + run.stderr, n_ctx, run.command)


# ---- llama.cpp's kernels, op by op (Nsight Compute) -------------------------------------------------------

# llama.cpp's CUDA kernel (name prefix, first match wins) -> the ggml op it runs. quantize_q8_1 and
# quantize_mmq_q8_1 quantize MUL_MAT's activations (ours: QUANTIZE_X8); k_bin_bcast is ADD or MUL by its
# template argument; cuBLAS's GEMMs (prefill) are MUL_MAT.
KERNEL_OPS: tuple[tuple[str, str], ...] = (
    ("mul_mat_vec", "MUL_MAT"), ("mul_mat_q", "MUL_MAT"), ("mul_mat_f", "MUL_MAT"),
    ("quantize_q8_1", "QUANTIZE_X8"), ("quantize_mmq", "QUANTIZE_X8"),
    ("flash_attn", "FLASH_ATTN_EXT"), ("rms_norm", "RMS_NORM"), ("rope", "ROPE"),
    ("k_set_rows", "SET_ROWS"), ("k_get_rows", "GET_ROWS"), ("swiglu", "SWIGLU"), ("k_swiglu", "SWIGLU"),
    ("unary_gated_op", "SWIGLU"),
    ("soft_max", "SOFT_MAX"), ("argmax", "ARGMAX"), ("cpy", "CPY"), ("convert", "CPY"), ("scale", "SCALE"),
    ("dequantize", "MUL_MAT"), ("gemm", "MUL_MAT"), ("gemv", "MUL_MAT"), ("cutlass", "MUL_MAT"),
    ("sm90_xmma", "MUL_MAT"), ("nvjet", "MUL_MAT"), ("cublas", "MUL_MAT"),
)
# the coarse part of a step each op is (fusion differs between the tools, so compare by part)
OP_PART = {
    "MUL_MAT": "mat-vec / mat-mul", "MUL_MAT_ADD": "mat-vec / mat-mul", "MUL_MAT_SWIGLU": "mat-vec / mat-mul",
    "QUANTIZE_X8": "mat-vec / mat-mul", "FLASH_ATTN_EXT": "attention", "SOFT_MAX": "attention",
    "ROPE": "attention", "SET_ROWS": "attention", "SET_ROWS_ROPE": "attention", "RMS_NORM": "norm",
    "RMS_NORM_MUL": "norm", "GET_ROWS": "embedding", "ARGMAX": "sampling", "SAMPLE": "sampling",
    # the norm folded into the mat-vec that reads it (its time is the mat-vec's)
    "RMS_NORM_MUL_MAT": "mat-vec / mat-mul", "RMS_NORM_MUL_MAT_ADD": "mat-vec / mat-mul",
    "RMS_NORM_MUL_MAT_SWIGLU": "mat-vec / mat-mul",
    # the norm and the int8 copy of its result (llama.cpp: rms_norm, then quantize_q8_1)
    "RMS_NORM_MUL_QUANTIZE_X8": "norm",
    "IDLE": "idle",
}


def kernel_base(name: str) -> str:
    """A demangled kernel name's function: 'void k_bin_bcast<...>(...)' -> 'k_bin_bcast'."""
    s = name.strip()
    s = s[5:] if s.startswith("void ") else s
    return re.split(r"[<(\s]", s, maxsplit=1)[0].split("::")[-1]


def kernel_op(name: str) -> str:
    """The ggml op a llama.cpp kernel runs (KERNEL_OPS), "other" where none matches."""
    base = kernel_base(name).lower()
    if base.startswith("k_bin_bcast"):
        for op in ("add", "mul", "sub", "div"):
            if f"op_{op}" in name:
                return op.upper()
        return "ADD"
    for prefix, op in KERNEL_OPS:
        if base.startswith(prefix):
            return op
    return "other"


def ncu_command(ncu: str | Path, bench: str | Path, model: str | Path, n_gen: int = 4, depth: int = 0,
                n_prompt: int = 0) -> list[str]:
    """Nsight Compute timing every kernel of a llama-bench run (no warm-up, one repetition; its CUDA graphs'
    kernels one by one), clocks left alone, as CSV."""
    cmd = [str(ncu), "--csv", "--page", "raw", "--metrics", "gpu__time_duration.sum", "--clock-control",
           "none", "--graph-profiling", "node", str(bench), "-m", str(model), "-p", str(n_prompt), "-n",
           str(n_gen), "-r", "1", "--no-warmup", "-fa", "1", "-ngl", "99"]
    return cmd + (["-d", str(depth)] if depth else [])


_TIME_UNITS = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1.0, "us": 1.0, "msecond": 1e3, "ms": 1e3,
               "second": 1e6, "s": 1e6}


def parse_ncu_csv(text: str) -> pd.DataFrame:
    """ncu --csv --page raw output (program output before it ignored) as a frame: kernel (demangled name),
    op (kernel_op), us (gpu__time_duration), in launch order."""
    import csv

    import pandas as pd

    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith('"ID"')), None)
    if start is None:
        raise LlamaCppError(f"no CSV header in ncu's output: {_last_line(text)}")
    rows = list(csv.reader(ln for ln in lines[start:] if ln.startswith('"')))
    head = rows[0]
    try:
        k_col, t_col = head.index("Kernel Name"), head.index("gpu__time_duration.sum")
    except ValueError:
        raise LlamaCppError(f"ncu's CSV lacks 'Kernel Name' or 'gpu__time_duration.sum': {head}") from None
    scale, out = 1e-3, []  # nanoseconds unless a units row says otherwise
    for r in rows[1:]:
        if len(r) <= max(k_col, t_col):
            continue
        if not r[0]:  # the units row
            scale = _TIME_UNITS.get(r[t_col].strip(), scale)
            continue
        try:
            t = float(r[t_col].replace(",", ""))
        except ValueError:
            continue
        out.append({"kernel": r[k_col], "op": kernel_op(r[k_col]), "us": t * scale})
    if not out:
        raise LlamaCppError("ncu's CSV has no kernel rows")
    return pd.DataFrame(out, columns=["kernel", "op", "us"])


def last_repeat(names: Sequence[str], min_len: int = 8) -> int:
    """The length P of the repeating unit at the end of a launch sequence (one decode token's kernels: the
    last P names equal the P before them), the shortest from min_len; len(names) where nothing repeats."""
    n = len(names)
    for p in range(min_len, n // 2 + 1):
        if list(names[n - p:]) == list(names[n - 2 * p:n - p]):
            return p
    return n


@dataclass
class KernelProfile:
    """One llama.cpp decode token's kernels (the last of the run: last_repeat) with their ops and times,
    and the run that made them."""

    frame: pd.DataFrame
    run: ToolRun

    @property
    def total_us(self) -> float:
        return float(self.frame["us"].sum())

    def by_op(self) -> pd.DataFrame:
        """Kernels and time per op, largest first."""
        g = self.frame.groupby("op")["us"].agg(kernels="count", us="sum")
        return g.sort_values("us", ascending=False)

    def __repr__(self) -> str:
        return f"KernelProfile({len(self.frame)} kernels, {self.total_us:.1f} us a token)"


def run_kernel_profile(model: str | Path, depth: int = 0, n_gen: int = 4, llama_dir: str | Path | None = None,
                       ncu: str | Path | None = None, timeout: float | None = 600.0) -> KernelProfile:
    """Time each kernel of llama-bench's decode under Nsight Compute (ncu on PATH unless named) and keep the
    last token's. Kernels run one at a time under ncu: their sum is not the step's wall time (no overlap
    between kernels), but each is its own duration."""
    ncu_path = Path(ncu) if ncu is not None else shutil.which("ncu")
    if ncu_path is None:
        raise LlamaCppNotFound("ncu (Nsight Compute) not found on PATH")
    run = run_tool(ncu_command(ncu_path, find_tool("llama-bench", llama_dir), model, n_gen, depth), timeout)
    df = parse_ncu_csv(run.stdout)
    p = last_repeat(list(df["kernel"]))
    return KernelProfile(df.iloc[len(df) - p:].reset_index(drop=True), run)


def compare_ops(ours: pd.DataFrame, theirs: pd.DataFrame, by: str = "op", column: str = "us") -> pd.DataFrame:
    """Our step's time beside llama.cpp's: ours (rows of op and `column`: profile.timings_frame, whose
    kernel_us, in trace mode, is each kernel's own time as ncu's is) and theirs (KernelProfile.frame),
    summed per op (by="op") or per part of the step (by="part": OP_PART, as the two fuse differently),
    with ratio ours / llama.cpp."""
    import pandas as pd

    def total(df: pd.DataFrame, col: str) -> pd.Series:
        keys = df["op"].map(lambda o: OP_PART.get(o, "elementwise / other")) if by == "part" else df["op"]
        return df.groupby(keys)[col].sum()

    if by not in ("op", "part"):
        raise ValueError(f"by must be 'op' or 'part', got {by!r}")
    if column not in ours.columns:
        raise ValueError(f"our frame has no column {column!r} (columns: {', '.join(ours.columns)})")
    out = pd.DataFrame({"rocmforge_us": total(ours, column), "llama_cpp_us": total(theirs, "us")}).fillna(0.0)
    out["ratio"] = out["rocmforge_us"] / out["llama_cpp_us"].where(out["llama_cpp_us"] > 0)
    out.index.name = by
    return out.sort_values("llama_cpp_us", ascending=False)
