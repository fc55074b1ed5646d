"""llama-bench-compatible runs of the engine: pp<N> (prompt processing) and tg<N> (token generation).

Records use llama-bench's JSONL field names (n_prompt, n_gen, avg_ns, avg_ts, samples_ts, ...), so a
rocmforge run and a llama-bench run of the same model load into one DataFrame and plot side by side.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import __version__
from .engine import Engine

if TYPE_CHECKING:
    import pandas as pd


Progress = Callable[[str], None]


def stderr_progress(msg: str) -> None:
    """A progress line on standard error (the default of the CLI)."""
    print(msg, file=sys.stderr, flush=True)


def decode_bytes(eng: Engine, n_kv: int) -> int:
    """Bytes one decode step moves at n_kv cache rows (ir.cost over the decode graph: weights in their
    blocks, the KV rows attention reads, activations)."""
    from .ir.cost import graph_costs

    return int(sum(c.bytes for c in graph_costs(eng.graph(1), n_kv=n_kv).values()))


def _record(eng: Engine, n_prompt: int, n_gen: int, samples_ns: list[int], n_depth: int = 0) -> dict:
    n_tok = n_prompt + n_gen
    ts = [n_tok / (ns * 1e-9) for ns in samples_ns]
    cfg = eng.config
    return {
        "build_commit": f"rocmforge-{__version__}", "build_number": 0,
        "gpu_info": eng.backend.device_name, "backends": eng.backend.name,
        "model_filename": str(eng.model.path), "model_type": f"{cfg.arch} {cfg.name}",
        "model_size": int(sum(t.n_bytes for t in eng.model.tensors.values())),
        "model_n_params": int(sum(t.n_elements for t in eng.model.tensors.values())),
        "type_k": eng.kv_dtype, "type_v": eng.kv_dtype, "n_prompt": n_prompt, "n_gen": n_gen,
        "n_depth": n_depth, "test_time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "avg_ns": int(np.mean(samples_ns)), "stddev_ns": int(np.std(samples_ns)),
        "avg_ts": float(np.mean(ts)), "stddev_ts": float(np.std(ts)),
        "samples_ns": samples_ns, "samples_ts": ts,
    } | _settings(eng)


def _settings(eng: Engine) -> dict:
    """The backend's settings a record must carry to be read again (not llama-bench's fields): the HIP
    backend's int8 activations (True, False or "auto") and kernel tunables, where set."""
    ctx = getattr(eng.backend, "ctx", None)
    out: dict = {}
    if ctx is not None and getattr(ctx, "tunables", None):
        out["tunables"] = dict(ctx.tunables)
    mat_mul = getattr(ctx, "mat_mul", None) if ctx is not None else None
    if mat_mul is not None:
        out["int8_activations"] = mat_mul.int8_activations
    return out


# a prompt is one graph run: the first compiles kernels and runs eagerly, the second captures the device graph
# that later runs replay (a decode warm-up of n_gen steps gets there by itself)
PP_WARMUP = 2


def _fill(eng: Engine, n_depth: int, seed: int) -> None:
    """An empty cache, then n_depth random tokens in it (llama-bench's n_depth: the context before a test)."""
    eng.reset()
    if n_depth:
        eng.prefill(np.random.default_rng(seed + 1).integers(0, eng.config.n_vocab, n_depth).tolist())


def _check(n: int, reps: int, n_depth: int) -> None:
    if n < 1 or reps < 1 or n_depth < 0:
        raise ValueError(f"want tokens >= 1, reps >= 1, depth >= 0; got {n}, {reps}, {n_depth}")


def run_pp(eng: Engine, n_prompt: int, reps: int = 3, seed: int = 0, n_depth: int = 0,
           progress: Progress | None = None) -> dict:
    """Prefill n_prompt random tokens after n_depth tokens of context; PP_WARMUP warm-up runs, then reps timed
    runs (the context is filled before each, untimed)."""
    _check(n_prompt, reps, n_depth)
    toks = np.random.default_rng(seed).integers(0, eng.config.n_vocab, n_prompt).tolist()
    samples = []
    for i in range(reps + PP_WARMUP):
        _fill(eng, n_depth, seed)
        if progress:
            run = f"warm-up {i + 1}/{PP_WARMUP}" if i < PP_WARMUP else f"run {i - PP_WARMUP + 1}/{reps}"
            progress(f"pp{n_prompt} @ d{n_depth}: {run}")
        t0 = time.perf_counter_ns()
        eng.prefill(toks)
        if i >= PP_WARMUP:
            samples.append(time.perf_counter_ns() - t0)
    return _record(eng, n_prompt, 0, samples, n_depth)


def run_tg(eng: Engine, n_gen: int, reps: int = 3, seed: int = 0, n_depth: int = 0,
           progress: Progress | None = None) -> dict:
    """Decode n_gen tokens one at a time after n_depth tokens of context (as llama-bench's tg test does),
    greedily through Engine.decode (chained on the device where the backend can: the host enqueues steps
    and reads the tokens back at the end).
    Adds `bytes_per_token` (decode_bytes at the run's middle depth) and `avg_gbs`, the bytes a second the
    average rate moves; where the backend replays a captured graph, `step_device_us` (one replayed step's
    device time) and `step_host_us` (the average step's time beyond it: the host's work per token, or with
    chained steps the gap between replays); on a
    GPU, `copy_gbs` (its copy bandwidth, device.copy_bandwidth) and `pct_copy` (avg_gbs's share of it)."""
    _check(n_gen, reps, n_depth)
    tok = int(np.random.default_rng(seed).integers(0, eng.config.n_vocab))
    samples = []
    for i in range(reps + 1):
        _fill(eng, n_depth, seed)
        if progress:
            progress(f"tg{n_gen} @ d{n_depth}: {'warm-up' if i == 0 else f'run {i}/{reps}'}")
        t0 = time.perf_counter_ns()
        eng.decode(n_gen, tok)
        if i:
            samples.append(time.perf_counter_ns() - t0)
    rec = _record(eng, 0, n_gen, samples, n_depth)
    rec["bytes_per_token"] = decode_bytes(eng, n_depth + (n_gen + 1) // 2)
    rec["avg_gbs"] = rec["bytes_per_token"] * rec["avg_ts"] / 1e9
    replayed = getattr(eng.backend, "replayed_us", None)
    device_us = replayed(eng.graph(1)) if replayed else None
    if device_us is not None:  # the step's device time at the run's last position, and what the host adds
        rec["step_device_us"] = device_us
        rec["step_host_us"] = 1e6 / rec["avg_ts"] - device_us
    copy = getattr(eng.backend, "copy_gbs", None)
    if copy is not None:  # decode's bytes a second against the device's copy bandwidth
        rec["copy_gbs"] = copy()
        rec["pct_copy"] = 100 * rec["avg_gbs"] / rec["copy_gbs"]
    return rec


def bench(eng: Engine, pp: Iterable[int] = (512,), tg: Iterable[int] = (128,), reps: int = 3,
          depths: Iterable[int] = (0,), progress: Progress | None = None) -> list[dict]:
    """llama-bench's tests on this engine: each pp and tg at each depth (default pp512 and tg128 at 0)."""
    depths = list(depths)
    return ([run_pp(eng, n, reps, n_depth=d, progress=progress) for d in depths for n in pp]
            + [run_tg(eng, n, reps, n_depth=d, progress=progress) for d in depths for n in tg])


def records_frame(records: Iterable[dict]) -> pd.DataFrame:
    """bench()'s records as the frame llama-bench's JSONL reads into (llamacpp.parse_bench_jsonl: a `test`
    column such as pp512 / tg128, tool rocmforge), to sit beside llama.cpp's."""
    from .llamacpp import parse_bench_jsonl

    return parse_bench_jsonl("".join(json.dumps(r) + "\n" for r in records), tool="rocmforge")


def write_jsonl(records: Iterable[dict], path: str | Path) -> None:
    with open(path, "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


# ---- mat-vec micro-benchmark records (scripts/bench_matvec.py --json; the repository's: data/bench) ------


def load_matvec(path: str | Path, kernel: str | None = None) -> pd.DataFrame:
    """One row per (type, shape) of a bench_matvec.py JSON file, with the card, the kernel label and the
    achieved share of the copy bandwidth measured in the same run: `pct_copy` from back-to-back stream
    launches, `pct_copy_graph` inside a captured device graph (as decode replays its steps)."""
    import pandas as pd

    rec = json.loads(Path(path).read_text())
    df = pd.DataFrame(rec["table"])
    df["gpu"] = rec["gpu"]
    df["kernel"] = kernel or Path(path).stem
    df["shape"] = df["N"].astype(str) + "x" + df["K"].astype(str)
    df["MB"] = df["bytes"] / 1e6
    df["pct_copy"] = 100 * df["gbps"] / rec["copy_gbps"]
    df["pct_copy_graph"] = 100 * df["graph_gbps"] / rec["copy_gbps"]
    df.attrs["copy_gbps"] = rec["copy_gbps"]
    return df


def load_matvec_sweep(path: str | Path) -> pd.DataFrame:
    """One row per (variant, type, shape) of a bench_matvec.py --sweep JSON file: `variant` (the kernel kind
    and its tunables), `pct_copy_graph` (share of the copy bandwidth measured in the same run, in a device
    graph) and `ablation` (a diagnostic build that drops part of the work: wrong results by design)."""
    import pandas as pd

    rec = json.loads(Path(path).read_text())
    df = pd.DataFrame(rec["sweep"])
    tun = [c for c in df.columns if c.startswith("RF_")]

    def label(r) -> str:
        return " ".join(
            [r["kind"], ",".join(f"{c.split('_')[-1]}={int(r[c])}" for c in tun if pd.notna(r[c]))]
        )

    df["variant"] = df.apply(label, axis=1).str.strip()
    abl = [c for c in tun if c.endswith("_ABLATE")]
    df["ablation"] = df[abl].fillna(0).gt(0).any(axis=1) if abl else False
    df["gpu"] = rec["gpu"]
    df["shape"] = df["N"].astype(str) + "x" + df["K"].astype(str)
    df["pct_copy_graph"] = 100 * df["graph_gbps"] / rec["copy_gbps"]
    df.attrs["copy_gbps"] = rec["copy_gbps"]
    return df


def load_read_patterns(path: str | Path) -> pd.DataFrame:
    """scripts/bench_read_patterns.py --json: one row per read pattern and launch shape (time per launch in
    a device graph, share of the copy bandwidth), with the card."""
    import pandas as pd

    rec = json.loads(Path(path).read_text())
    df = pd.DataFrame(rec["rows"])
    df["gpu"] = rec["gpu"]
    df.attrs["copy_gbps"] = rec["copy_gbps"]
    return df


def xr_trace_frame(stamps: np.ndarray) -> pd.DataFrame:
    """Per-warp times of one traced launch of mul_mat_vec_xr (RF_MMVR_TRACE stamps, [warps, 16]), in us from
    the first warp's entry on the global timer: `entry`, `arrive_<i>` (step i's bytes in registers), `done`
    (its last arithmetic), `exit`, `tail` = done - last arrival. SM clocks are converted with the rate
    measured between the entry and exit stamps (clock64 over globaltimer, median over the warps)."""
    import pandas as pd

    s = np.asarray(stamps, dtype=np.int64)
    s = s[s[:, 1] > 0]  # warps that ran
    g0 = s[:, 0].min()
    ghz = float(np.median((s[:, 11] - s[:, 1]) / (s[:, 13] - s[:, 0])))  # clocks per ns
    entry = (s[:, 0] - g0) / 1e3
    n_items = int((s[:, 2:10] > 0).sum(axis=1).max())
    df = pd.DataFrame({"sm": s[:, 12], "entry": entry})
    for i in range(n_items):
        df[f"arrive_{i}"] = entry + (s[:, 2 + i] - s[:, 1]) / ghz / 1e3
    df["done"] = entry + (s[:, 10] - s[:, 1]) / ghz / 1e3
    df["exit"] = (s[:, 13] - g0) / 1e3
    df["tail"] = df["done"] - df[f"arrive_{n_items - 1}"]
    df.attrs["sm_ghz"] = ghz
    return df


def load_xr_trace(path: str | Path) -> pd.DataFrame:
    """scripts/trace_matvec_xr.py --json: xr_trace_frame of the last launch of each variant (`variant`),
    with the card."""
    import pandas as pd

    rec = json.loads(Path(path).read_text())
    runs = rec["variants"].items()
    frames = [xr_trace_frame(np.array(v["stamps_last_run"])).assign(variant=k) for k, v in runs]
    out = pd.concat(frames, ignore_index=True)
    out["gpu"] = rec["gpu"]
    return out
