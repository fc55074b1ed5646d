"""The recorded mat-vec benchmark files load into one frame, with shares of the copy bandwidth that follow
from their own fields (and the goal shapes present for both kernels): the final tables in data/bench, and the
sweeps, read patterns and traces of data/archive/bench_history.tar.xz (extracted once per module)."""

import json
import tarfile
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
import pytest

from rocmforge.bench import load_matvec, load_matvec_sweep, load_read_patterns, load_xr_trace

DATA = Path(__file__).resolve().parents[2] / "data"
BENCH = DATA / "bench"
ARCHIVE = DATA / "archive" / "bench_history.tar.xz"
with tarfile.open(ARCHIVE) as _tar:
    ARCHIVED = sorted(_tar.getnames())

FILES = sorted(BENCH.glob("matvec_h*.json"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench_history")
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(out, filter="data")
    return out


def archived(pattern: str) -> list[str]:
    return [n for n in ARCHIVED if fnmatch(n, pattern)]


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_load_matvec(path):
    rec = json.loads(path.read_text())
    df = load_matvec(path, "k")
    assert len(df) == len(rec["table"]) > 0
    assert set(df.kernel) == {"k"} and set(df.gpu) == {rec["gpu"]}
    np.testing.assert_allclose(df.pct_copy, 100 * df.bytes / (df.us * 1e-6) / 1e9 / rec["copy_gbps"])
    rot = df[~df.flush]
    np.testing.assert_allclose(
        rot.pct_copy_graph, 100 * rot.bytes / (rot.graph_us * 1e-6) / 1e9 / rec["copy_gbps"]
    )
    assert (df[df.flush].graph_us.isna()).all()  # evicted (small) weights are timed one launch at a time
    assert (df.nmse < 1e-4).all()  # every recorded kernel was checked on every row


def test_goal_shapes_recorded_for_both_kernels():
    f32 = load_matvec(BENCH / "matvec_h100_f32.json")
    x8 = load_matvec(BENCH / "matvec_h100_x8.json")
    for df in (f32, x8):
        got = set(zip(df.type, df["shape"], strict=True))
        assert {("Q4_0", "11008x4096"), ("Q8_0", "11008x4096"), ("Q4_0", "4096x11008")} <= got


SWEEPS = archived("matvec_h200_x*_sweep*.json")


@pytest.mark.parametrize("name", SWEEPS)
def test_load_matvec_sweep(archive, name):
    """Every sweep row loads with its variant label; every variant that is not an ablation was correct on
    every row (nmse < 1e-4), every ablation (wrong results by design) was not."""
    path = archive / name
    rec = json.loads(path.read_text())
    df = load_matvec_sweep(path)
    assert len(df) == len(rec["sweep"]) > 0 and set(df.gpu) == {rec["gpu"]}
    np.testing.assert_allclose(
        df.pct_copy_graph, 100 * df.bytes / (df.graph_us * 1e-6) / 1e9 / rec["copy_gbps"]
    )
    assert (df[~df.ablation].nmse < 1e-4).all() and (df[df.ablation].nmse > 1).all()
    assert df.variant.str.match(r"^(f32|x8|xq|xb|xr)\b").all()


READS = archived("read_patterns_h200*.json")


@pytest.mark.parametrize("name", READS)
def test_load_read_patterns(archive, name):
    df = load_read_patterns(archive / name)
    assert {"floor U=4 8x256", "rowseg_1 4 warps x 4/SM"} <= set(df.pattern)
    np.testing.assert_allclose(df.pct_copy, 100 * 11008 * 2304 / (df.us * 1e-6) / df.attrs["copy_gbps"] / 1e9)


TRACES = archived("trace_xr*_h200.json")


@pytest.mark.parametrize("name", TRACES)
def test_load_xr_trace(archive, name):
    """Per-warp stamps of trace_matvec_xr.py: every warp's steps arrive in order, its arithmetic ends after
    its last arrival and before its exit; the loads-alone build ends its warps sooner after the last arrival
    than the full kernel (the tail the log describes)."""
    df = load_xr_trace(archive / name)
    assert set(df.variant) >= {"full", "no dot products (ABLATE=1)", "loads alone (ABLATE=2)"}
    assert (df.groupby("variant").size() == 11008 // 8).all()  # one warp a row group
    cols = ["entry", "arrive_0", "arrive_1", "arrive_2", "arrive_3", "done"]  # one SM clock from entry on
    assert (np.diff(df[cols].to_numpy(), axis=1) > 0).all()
    # exit is on the global timer, which steps by 32 ns (entry too): within two steps of done, or after it
    assert (df["exit"] > df["done"] - 0.064).all()
    tail = df.groupby("variant")["tail"].median()
    assert tail["loads alone (ABLATE=2)"] < tail["no dot products (ABLATE=1)"] < tail["full"]
