"""Per-op timings and memory counters as records, and as pandas DataFrames for analysis."""

from __future__ import annotations

import html
import json
import re
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

# What a run's per-op times measure, by the mode they were taken in.
TIMING_MODES = {
    "trace": "the untimed replayed device graph itself, its kernels timestamped by CUPTI: a kernel's time "
             "plus the gap the replayed step pays before it (kernel_us: the kernels alone); the ops add up "
             "to the traced replay's span",
    "graph": "kernels back to back in a replayed device graph, an event node after each: a kernel's time "
             "plus the node gap the replayed step also pays, plus the event node's own cost",
    "eager": "device events around each Python launch: a kernel's time plus any wait for its launch",
    "host": "host clock around each op (numpy backend)",
}
IDLE = "IDLE"  # the op of the row for the time the per-op sum does not explain
IDLE_NAME = "(launch/idle)"


@dataclass(frozen=True)
class OpTiming:
    """One executed node: its name, op, result shape and time in microseconds; kernel_us (trace mode
    only, else None): the time its kernels themselves ran, without the gaps before them."""

    name: str
    op: str
    shape: tuple[int, ...]
    us: float
    kernel_us: float | None = None


class StepTimings(list):
    """The OpTiming records of one run (a list), the mode they were taken in (TIMING_MODES) and the run's
    wall time: the replayed step's device time (HIP backend), or the whole run on the host clock (numpy).
    `idle_us` is the part of the wall time the per-op sum does not explain (negative where timing itself
    costs more than the replayed step's launch gaps)."""

    def __init__(self, records: Iterable[OpTiming] = (), mode: str = "", wall_us: float | None = None
                 ) -> None:
        super().__init__(records)
        if mode and mode not in TIMING_MODES:
            raise ValueError(f"timing mode {mode!r}: choose one of {sorted(TIMING_MODES)}")
        self.mode = mode
        self.wall_us = wall_us
        self.costs: dict[str, Any] = {}  # node name -> ir.cost.Cost (the engine fills it for timed runs)
        self.tokens: int | None = None  # tokens the run made (the engine's; a padded prompt runs more rows)

    @property
    def sum_us(self) -> float:
        return float(sum(t.us for t in self))

    @property
    def idle_us(self) -> float | None:
        return None if self.wall_us is None else self.wall_us - self.sum_us

    def extend_run(self, other: StepTimings) -> None:
        """Append another run's records (a prompt in several chunks); wall times add up."""
        if self.mode and other.mode and other.mode != self.mode:
            raise ValueError(f"cannot join {other.mode} timings to {self.mode} timings")
        self.mode = self.mode or other.mode
        self.extend(other)
        self.costs.update(other.costs)  # chunks of one prompt: one graph, the names repeat
        if other.tokens is not None:
            self.tokens = (self.tokens or 0) + other.tokens
        if other.wall_us is not None:
            self.wall_us = (self.wall_us or 0.0) + other.wall_us

    def __repr__(self) -> str:
        wall = "" if self.wall_us is None else f", wall {self.wall_us:.1f} us"
        return f"StepTimings({len(self)} ops, {self.mode or 'no'} mode, sum {self.sum_us:.1f} us{wall})"

    def _repr_html_(self) -> str:
        """In a notebook: the time per op type as a table, under the mode and the wall time."""
        head = html.escape(repr(self))
        if self.mode:
            head += f"<br><small>{html.escape(self.mode)}: {html.escape(TIMING_MODES[self.mode])}</small>"
        if not self:
            return f"<p>{head}</p>"
        return f"<p>{head}</p>" + summary(self, by="op").to_html(float_format=_fmt)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


_LAYER = re.compile(r"^blk\.(\d+)\.")


def timings_frame(timings: Iterable[OpTiming], idle_row: bool = True):
    """Timings as a tidy DataFrame: name, op, layer (-1 outside the blocks), shape, us, kernel_us where
    the records carry it (trace mode: the kernels' own time, NaN on the IDLE row) and, where the timings
    carry costs (StepTimings from the engine), bytes_read, bytes_written, flops, GB/s and GFLOP/s. With a
    wall time known, one more row (op IDLE) for what the per-op sum does not explain, so that the us
    column adds up to the wall time."""
    import pandas as pd

    costs = getattr(timings, "costs", {}) or {}
    rows = []
    kernel_us = False
    for t in timings:
        kernel_us = kernel_us or getattr(t, "kernel_us", None) is not None
        r = asdict(t)
        m = _LAYER.match(t.name)
        r["layer"] = int(m.group(1)) if m else -1
        c = costs.get(t.name)
        if c is not None:
            r.update(bytes_read=c.read, bytes_written=c.written, flops=c.flops)
        rows.append(r)
    idle = getattr(timings, "idle_us", None)
    if idle_row and idle is not None:
        rows.append({"name": IDLE_NAME, "op": IDLE, "layer": -1, "shape": (), "us": idle})
    cols = ["name", "op", "layer", "shape", "us"] + (["kernel_us"] if kernel_us else [])
    if costs:
        cols += ["bytes_read", "bytes_written", "flops"]
    df = pd.DataFrame(rows, columns=cols)
    if costs:
        moved = df["bytes_read"] + df["bytes_written"]
        us = df["us"].where(df["us"] > 0)
        df["GB/s"] = moved / us / 1e3
        df["GFLOP/s"] = df["flops"] / us / 1e3
    return df


def summary(timings: Iterable[OpTiming], by: str = "op"):
    """Time, count, share and (with costs) bytes and achieved GB/s summed per op type or per layer."""
    df = timings_frame(timings)
    agg = {"us": "sum", "name": "count"}
    if "bytes_read" in df:
        df["bytes"] = df["bytes_read"] + df["bytes_written"]
        agg.update(bytes="sum", flops="sum")
    g = df.groupby(by).agg(agg).rename(columns={"name": "count"}).sort_values("us", ascending=False)
    g["share"] = g["us"] / max(g["us"].sum(), 1e-12)
    if "bytes" in g:
        g["GB/s"] = g["bytes"] / g["us"].where(g["us"] > 0) / 1e3
    return g


def top_ops(timings: Iterable[OpTiming], n: int = 5):
    """The n costliest ops by total time, with share of the step (of its wall time where known, the
    IDLE row holding the rest), as a DataFrame."""
    g = summary(timings, by="op")[["us", "count", "share"]].rename(columns={"us": "sum"})
    g.loc[g.index == IDLE, "count"] = 0
    return g.head(n)


# ---- roofline, trace, memory over a run -----------------------------------------------------------------
def _costed_frame(timings: Iterable[OpTiming]):
    """timings_frame without the IDLE row; refuses records that carry no costs (bytes and FLOPs)."""
    df = timings_frame(timings, idle_row=False)
    if "flops" not in df:
        raise ValueError("these timings carry no costs (bytes, FLOPs): take them with "
                         "Engine.step(timed=True) or prefill(timed=True)")
    df["bytes"] = df["bytes_read"] + df["bytes_written"]
    return df


def roofline(timings: Iterable[OpTiming], bandwidth_gbs: float, peak_tflops: float, ax: Any = None) -> Any:
    """A log-log roofline of one run: each op's arithmetic intensity (FLOP/byte) against its achieved
    GFLOP/s, under the memory roof (bandwidth_gbs x intensity) and the compute roof (peak_tflops).
    Points are colored by op type and sized by their time. Ops that do no arithmetic or move nothing
    (copies, aliases, GET_ROWS) have no place on a log axis and are left out, as is the IDLE row.
    Pass the device's measured copy bandwidth and matrix peak to see how far each op is from its ceiling.
    Returns the matplotlib Axes."""
    import matplotlib.pyplot as plt
    import numpy as np

    if bandwidth_gbs <= 0 or peak_tflops <= 0:
        raise ValueError(f"ceilings must be positive, got {bandwidth_gbs} GB/s and {peak_tflops} TFLOP/s")
    df = _costed_frame(timings)
    df = df[(df["us"] > 0) & (df["bytes"] > 0) & (df["flops"] > 0)]
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4.5))
    peak = peak_tflops * 1e3  # GFLOP/s
    ridge = peak / bandwidth_gbs  # FLOP/byte where the roofs meet
    ai = df["flops"] / df["bytes"]
    lo = min(ai.min(), ridge) / 4 if len(df) else ridge / 1e3
    hi = max(ai.max(), ridge) * 4 if len(df) else ridge * 10
    x = np.geomspace(lo, hi, 200)
    ax.plot(x, np.minimum(bandwidth_gbs * x, peak), color="black", lw=1.5)
    ax.axvline(ridge, color="grey", lw=0.8, ls=":")
    ax.annotate(f"{bandwidth_gbs:g} GB/s", (lo * 1.5, bandwidth_gbs * lo * 1.5), fontsize=8, va="bottom")
    ax.annotate(f"{peak_tflops:g} TFLOP/s", (ridge * 1.2, peak * 1.1), fontsize=8, va="bottom")
    size_max = float(df["us"].max()) if len(df) else 1.0
    cmap = plt.get_cmap("tab10")
    for i, (op, g) in enumerate(df.groupby("op", sort=True)):
        ax.scatter(g["flops"] / g["bytes"], g["GFLOP/s"], s=15 + 285 * g["us"] / size_max,
                   color=cmap(i % 10), alpha=0.7, edgecolors="none", label=op)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP/byte)")
    ax.set_ylabel("achieved GFLOP/s")
    mode = getattr(timings, "mode", "")
    ax.set_title(f"roofline ({mode} timings; point area ~ time)" if mode else "roofline (point area ~ time)")
    if len(df):
        for h in ax.legend(fontsize=7, loc="lower right").legend_handles:
            h.set_sizes([20])  # one marker size in the legend, whatever the first point's time
    return ax


def chrome_trace(timings: Iterable[OpTiming], path: str | Path | None = None) -> dict:
    """One run as a Chrome / Perfetto trace (the Trace Event Format's JSON object form), written to path
    when given and returned as a dict. Each op is a complete ('X') event laid back to back in node order
    (ts and dur in microseconds), named by its node and categorized by its op, with its shape, bytes and
    FLOPs in args; what the per-op sum does not explain (the IDLE row) is one more event at the end, so
    the events span the wall time. A negative remainder (timing costing more than the launch gaps) cannot
    be an event: it is left out and recorded in otherData. Open the file in ui.perfetto.dev or
    chrome://tracing."""
    costs = getattr(timings, "costs", {}) or {}
    mode = getattr(timings, "mode", "") or "unknown"
    events: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": "rocmforge"}},
        {"name": "thread_name", "ph": "M", "pid": 0, "tid": 0, "args": {"name": f"step ({mode} timings)"}},
    ]
    ts = 0.0
    for t in timings:
        args: dict[str, Any] = {"shape": list(t.shape)}
        if getattr(t, "kernel_us", None) is not None:
            args["kernel_us"] = float(t.kernel_us)
        c = costs.get(t.name)
        if c is not None:
            args.update(bytes_read=c.read, bytes_written=c.written, flops=c.flops)
        events.append({"name": t.name, "cat": t.op, "ph": "X", "ts": ts, "dur": float(t.us), "pid": 0,
                       "tid": 0, "args": args})
        ts += float(t.us)
    idle = getattr(timings, "idle_us", None)
    if idle is not None and idle > 0:
        events.append({"name": IDLE_NAME, "cat": IDLE, "ph": "X", "ts": ts, "dur": float(idle), "pid": 0,
                       "tid": 0, "args": {"what": "the wall time the per-op sum does not explain"}})
    wall = getattr(timings, "wall_us", None)
    trace = {"traceEvents": events, "displayTimeUnit": "ns",
             "otherData": {"mode": mode, "mode_means": TIMING_MODES.get(mode, ""), "wall_us": wall,
                           "idle_us": idle}}
    if path is not None:
        Path(path).write_text(json.dumps(trace))
    return trace


def memory_series(results: Iterable[Any]) -> pd.DataFrame:
    """Memory counters over a run as a DataFrame indexed by step (0, 1, ...), one column per counter:
    from StepResults (their .memory) or from the counter dicts themselves. A counter missing at a step
    is NaN there."""
    import pandas as pd

    rows = [dict(getattr(r, "memory", r)) for r in results]
    df = pd.DataFrame(rows)
    df.index.name = "step"
    return df


# ---- projection onto another GPU ------------------------------------------------------------------------
def gpus() -> pd.DataFrame:
    """The table of GPUs shipped with the package (rocmforge/data/gpus.json) as a DataFrame indexed by
    name: vendor, memory bandwidth (GB/s), dense f16 matrix TFLOP/s, dense int8 TOPS where known, compute
    units (CUs or SMs), memory (GB) and the datasheet each value comes from."""
    import pandas as pd

    return pd.DataFrame(_gpu_rows()).set_index("name")


def _gpu_rows() -> list[dict]:
    from importlib.resources import files

    return json.loads(files("rocmforge.data").joinpath("gpus.json").read_text())["gpus"]


def _squash(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def find_gpu(name: str) -> dict:
    """A row of the GPU table by name, ignoring case, spaces and punctuation ("RX 7900 XT", "rx7900xt"); a
    name that ends one row's name ("7900 XT") or is a unique part of it ("h100") picks it too."""
    rows = _gpu_rows()
    key = _squash(name)
    exact = [r for r in rows if _squash(r["name"]) == key]
    tail = [r for r in rows if key and _squash(r["name"]).endswith(key)]  # "7900xt" is not the XTX
    part = [r for r in rows if key and key in _squash(r["name"])]
    hits = exact or tail or part
    if len(hits) != 1:
        names = [r["name"] for r in (hits or rows)]
        raise KeyError(f"GPU {name!r}: {'ambiguous among' if hits else 'not among'} {names}")
    return dict(hits[0])


IDLE_POLICIES = ("kept", "scaled", "dropped")


@dataclass
class Projection:
    """A run's time projected onto another GPU (profile.project): per op, the floor from its bytes and
    FLOPs at the card's ceilings (each scaled by its efficiency); the idle share as the policy says."""

    gpu: dict
    frame: pd.DataFrame  # one row per op record (and the IDLE row): us (measured), projected_us, bound
    total_us: float
    idle_us: float
    tokens: int
    efficiency: tuple[float, float]  # (bandwidth, compute)
    idle: str

    @property
    def tokens_per_s(self) -> float:
        """Tokens the projected run makes per second: 1e6 / total_us for a decode step, tokens / total for
        a prefill."""
        return self.tokens * 1e6 / self.total_us if self.total_us > 0 else float("inf")

    def by_op(self) -> pd.DataFrame:
        """Projected time, measured time and bound (the ops bound by memory or compute) summed per op."""
        df = self.frame
        df = df.assign(memory_bound=df["bound"] == "memory")
        g = df.groupby("op").agg(us=("us", "sum"), projected_us=("projected_us", "sum"),
                                 count=("name", "count"), memory_bound=("memory_bound", "sum"))
        g["share"] = g["projected_us"] / max(self.total_us, 1e-12)
        return g.sort_values("projected_us", ascending=False)

    def __repr__(self) -> str:
        e = self.efficiency
        eff = f"{e[0]:g}" if e[0] == e[1] else f"{e[0]:g} bw / {e[1]:g} compute"
        return (f"Projection({self.gpu['name']}: {self.total_us:.1f} us for {self.tokens} token(s), "
                f"{self.tokens_per_s:.1f} tok/s; efficiency {eff}, idle {self.idle} {self.idle_us:.1f} us)")

    def _repr_html_(self) -> str:
        head = f"<p><b>{html.escape(repr(self))}</b></p>"
        return head + self.by_op().to_html(float_format=lambda v: f"{v:.3g}")


def project(timings: Iterable[OpTiming], gpu: str | dict,
            efficiency: float | tuple[float, float] | None = None, idle: str = "kept",
            tokens: int | None = None) -> Projection:
    """The time this run would take on another GPU, op by op, from what each op must move and compute:
    max(bytes / (bandwidth x eff_bw), flops / (peak x eff_compute)), with the card's memory bandwidth and
    dense f16 matrix peak (gpu: a name in the GPU table, profile.gpus(), or a dict with bandwidth_gbs and
    f16_tflops).

    efficiency: one number for both, or (eff_bw, eff_compute); default 1.0, the floor no kernel beats.
    Pass another engine's measured efficiency (its achieved time's share of the floor: floor_us /
    achieved_us, e.g. llama.cpp's decode time on a card against project(timings, that card).total_us) to
    ask what that efficiency would give on this card.
    idle: what the time outside the ops (the IDLE row: launch gaps, host overhead) becomes: "kept" as
    measured, "scaled" by the projected / measured ratio of the op time, or "dropped". A negative
    remainder counts as 0.
    tokens: tokens the run made (1 for a decode step; a prefill's prompt length); default: the timings'
    `tokens` (the engine sets it: a padded prompt runs more rows than it has tokens), else the rows of the
    token embedding (inp_embd) over the run's chunks, else 1.

    Uses the f16 matrix peak for every op's FLOPs: for a quantized decode step the memory term dominates
    and the choice hardly matters; for a prefill read it as the floor of f16 matrix cores."""
    if idle not in IDLE_POLICIES:
        raise ValueError(f"idle={idle!r}: choose one of {IDLE_POLICIES}")
    card = find_gpu(gpu) if isinstance(gpu, str) else dict(gpu)
    bw, peak = float(card["bandwidth_gbs"]), float(card["f16_tflops"])
    if efficiency is None:
        efficiency = 1.0
    eff_bw, eff_c = (efficiency, efficiency) if isinstance(efficiency, int | float) else efficiency
    if not (0 < eff_bw and 0 < eff_c and bw > 0 and peak > 0):
        raise ValueError(f"bandwidth, peak and efficiencies must be positive: {bw}, {peak}, {efficiency}")
    df = _costed_frame(timings)
    if df["name"].duplicated().any():
        # StepTimings.costs is keyed by node name: a prefill run in chunks has one cost per name
        warnings.warn("these timings repeat node names (a prefill run in chunks): every chunk is costed as "
                      "the last one, so the projection is approximate", stacklevel=2)
    mem_us = df["bytes"] / (bw * 1e3 * eff_bw)  # GB/s x 1e3 = bytes per us
    comp_us = df["flops"] / (peak * 1e6 * eff_c)  # TFLOP/s x 1e6 = FLOP per us
    df["memory_us"], df["compute_us"] = mem_us, comp_us
    df["projected_us"] = mem_us.where(mem_us >= comp_us, comp_us)
    df["bound"] = (mem_us >= comp_us).map({True: "memory", False: "compute"})
    df.loc[df["bytes"] + df["flops"] == 0, "bound"] = "none"  # aliases: no time on any card
    measured_idle = max(getattr(timings, "idle_us", None) or 0.0, 0.0)
    ops_us = float(df["projected_us"].sum())
    measured_ops = float(df["us"].sum())
    idle_us = {"kept": measured_idle, "dropped": 0.0,
               "scaled": measured_idle * ops_us / measured_ops if measured_ops > 0 else 0.0}[idle]
    import pandas as pd

    idle_row = {"name": IDLE_NAME, "op": IDLE, "layer": -1, "shape": (), "us": measured_idle,
                "projected_us": idle_us, "bound": "idle"}
    df = pd.concat([df, pd.DataFrame([idle_row])], ignore_index=True)
    if tokens is None:
        tokens = getattr(timings, "tokens", None)
    if tokens is None:
        rows = [t.shape[0] for t in timings if t.name == "inp_embd" and t.shape]
        tokens = int(sum(rows)) if rows else 1
    return Projection(card, df, ops_us + idle_us, idle_us, int(tokens), (float(eff_bw), float(eff_c)), idle)
