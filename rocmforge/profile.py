"""Per-op timings and memory counters as records, and as pandas DataFrames for analysis."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

# What a run's per-op times measure, by the mode they were taken in.
TIMING_MODES = {
    "graph": "kernels back to back in a replayed device graph, an event node after each: a kernel's time "
             "plus the node gap the replayed step also pays",
    "eager": "device events around each Python launch: a kernel's time plus any wait for its launch",
    "host": "host clock around each op (numpy backend)",
}
IDLE = "IDLE"  # the op of the row for the time the per-op sum does not explain
IDLE_NAME = "(launch/idle)"


@dataclass(frozen=True)
class OpTiming:
    """One executed node: its name, op, result shape and time in microseconds."""

    name: str
    op: str
    shape: tuple[int, ...]
    us: float


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
        if other.wall_us is not None:
            self.wall_us = (self.wall_us or 0.0) + other.wall_us

    def __repr__(self) -> str:
        wall = "" if self.wall_us is None else f", wall {self.wall_us:.1f} us"
        return f"StepTimings({len(self)} ops, {self.mode or 'no'} mode, sum {self.sum_us:.1f} us{wall})"


_LAYER = re.compile(r"^blk\.(\d+)\.")


def timings_frame(timings: Iterable[OpTiming], idle_row: bool = True):
    """Timings as a tidy DataFrame: name, op, layer (-1 outside the blocks), shape, us and, where the
    timings carry costs (StepTimings from the engine), bytes_read, bytes_written, flops, GB/s and
    GFLOP/s. With a wall time known, one more row (op IDLE) for what the per-op sum does not explain,
    so that the us column adds up to the wall time."""
    import pandas as pd

    costs = getattr(timings, "costs", {}) or {}
    rows = []
    for t in timings:
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
    cols = ["name", "op", "layer", "shape", "us"]
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
    df = timings_frame(timings)
    g = df.groupby("op")["us"].agg(["sum", "count"]).sort_values("sum", ascending=False)
    g.loc[g.index == IDLE, "count"] = 0
    g["share"] = g["sum"] / max(g["sum"].sum(), 1e-12)
    return g.head(n)
