"""Per-op timings and memory counters as records, and as pandas DataFrames for analysis."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class OpTiming:
    """One executed node: its name, op, result shape and time in microseconds."""

    name: str
    op: str
    shape: tuple[int, ...]
    us: float


def timings_frame(timings: Iterable[OpTiming]):
    """Timings as a DataFrame (name, op, shape, us)."""
    import pandas as pd

    return pd.DataFrame([asdict(t) for t in timings], columns=["name", "op", "shape", "us"])


def top_ops(timings: Iterable[OpTiming], n: int = 5):
    """The n costliest ops by total time, with share of the step, as a DataFrame."""
    df = timings_frame(timings)
    g = df.groupby("op")["us"].agg(["sum", "count"]).sort_values("sum", ascending=False)
    g["share"] = g["sum"] / max(g["sum"].sum(), 1e-12)
    return g.head(n)
