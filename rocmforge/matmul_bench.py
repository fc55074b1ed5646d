"""Prompt mat-mul measurements as frames and plots (the prefill study): scripts/bench_matmul.py's table per
weight type, shape and path (tiled, blas, mmq and its tilings mmq:WMxWN) against the card's matrix peak,
and whole prompts of both tools (llama-bench / rocmforge bench records) as effective TFLOP/s."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .profile import find_gpu

if TYPE_CHECKING:
    import pandas as pd

_COLUMNS = ["type", "N", "K", "M", "shape", "path", "us", "tflops", "nmse", "auto", "best"]


def load(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """bench_matmul.py's --json file: (its header: gpu, arch, blas; the table in long form: `frame`)."""
    doc = json.loads(Path(path).read_text())
    if not isinstance(doc, dict) or not isinstance(doc.get("table"), list):
        raise ValueError(f"{path}: not a bench_matmul.py table (no 'table' list)")
    return {k: v for k, v in doc.items() if k != "table"}, frame(doc["table"])


def frame(table: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per (weight type, N x K, tokens M, path) of bench_matmul's records: us, TFLOP/s (2 M N K /
    time), nmse against numpy; auto: the path the default chooses, best: the fastest measured."""
    import pandas as pd

    rows = []
    for r in table:
        paths = sorted({k[: -len("_us")] for k in r if k.endswith("_us") and k != "dq_us"})
        for p in paths:
            rows.append({"type": r["type"], "N": r["N"], "K": r["K"], "M": r["M"],
                         "shape": f"{r['N']}x{r['K']}", "path": p, "us": r[f"{p}_us"],
                         "tflops": r.get(f"{p}_tflops"), "nmse": r.get(f"{p}_nmse"),
                         "auto": r.get("auto", ""), "best": r.get("best", "")})
    return pd.DataFrame(rows, columns=_COLUMNS)


def against_peak(df: pd.DataFrame, gpu: str | Mapping[str, Any]) -> pd.DataFrame:
    """df with `peak` (the card's dense matrix peak the path runs on: int8 TOPS for mmq, f16 TFLOP/s
    otherwise; profile.gpus()) and `of_peak` (tflops / peak)."""
    g = find_gpu(gpu) if isinstance(gpu, str) else dict(gpu)
    out = df.copy()
    int8 = out["path"].str.startswith("mmq")
    out["peak"] = [float(g["int8_tops"]) if i else float(g["f16_tflops"]) for i in int8]
    out["of_peak"] = out["tflops"] / out["peak"]
    return out


def speedups(df: pd.DataFrame, base: str = "blas") -> pd.DataFrame:
    """Per (type, shape, M): each path's time over `base`'s (> 1: base is faster), paths as columns."""
    wide = df.pivot_table(index=["type", "shape", "M"], columns="path", values="us", aggfunc="first")
    if base not in wide:
        raise KeyError(f"no {base!r} path among {list(wide.columns)}")
    return wide.div(wide[base], axis=0).drop(columns=base)


def plot(df: pd.DataFrame, gpu: str | Mapping[str, Any] | None = None, ax: Any = None) -> Any:
    """TFLOP/s per (type, shape), a bar per path; with gpu, its dense f16 and int8 peaks as lines."""
    import matplotlib.pyplot as plt
    import numpy as np
    import pandas as pd

    if ax is None:
        _, ax = plt.subplots(figsize=(11, 4))
    wide = df.pivot_table(index=["type", "shape"], columns="path", values="tflops", aggfunc="first")
    x = np.arange(len(wide))
    w = 0.8 / max(1, len(wide.columns))
    for i, p in enumerate(wide.columns):
        ax.bar(x + (i - (len(wide.columns) - 1) / 2) * w, wide[p].to_numpy(), w, label=p)
    if gpu is not None:
        g = find_gpu(gpu) if isinstance(gpu, str) else dict(gpu)
        ax.axhline(g["f16_tflops"], color="k", ls="--", lw=1, label=f"f16 peak {g['f16_tflops']:g}")
        if pd.notna(g.get("int8_tops")):
            ax.axhline(g["int8_tops"], color="k", ls=":", lw=1, label=f"int8 peak {g['int8_tops']:g}")
    ax.set_xticks(x, [f"{t} {s}" for t, s in wide.index], fontsize=7, rotation=60, ha="right")
    ax.set_ylabel("TFLOP/s (int8: TOPS)")
    ax.legend(fontsize=8, ncol=2)
    return ax


def prompt_tflops(runs: pd.DataFrame) -> pd.DataFrame:
    """Whole prompts (the pp rows of llama-bench or rocmforge bench runs, as llamacpp.read_bench_jsonl reads
    them) as effective TFLOP/s of the weights alone: 2 * model_n_params * tokens a second (attention's and
    the rest's arithmetic left out, the same for both tools). One row per pp record: tool, model, n_prompt,
    t/s (report.median_ts: the median of its runs where given), TFLOP/s."""
    from .report import median_ts

    pp = runs[(runs["n_prompt"] > 0) & (runs["n_gen"] == 0)]
    out = pp[["tool", "model", "n_prompt"]].reset_index(drop=True)
    out["ts"] = median_ts(pp).to_numpy()
    out["tflops"] = 2.0 * pp["model_n_params"].to_numpy(dtype=float) * out["ts"] / 1e12
    return out
