"""Where does a launch of mul_mat_vec_xr spend its time? Per-warp time stamps (a study, not a test).

Builds mul_mat_vec_xr_q4_0 (dev/mul_mat_vec_xr_trace.hip) with RF_MMVR_TRACE (lane 0 of each warp writes its
SM clock at entry, once each step's bytes are in registers, after its last arithmetic and at exit, and the
global timer at entry and exit), runs the Q4_0 11008x4096 mat-vec with the launcher's configuration after an
L2-evicting pass, and prints, over the warps (medians over launches): the first step's arrival after entry,
the spacing of later arrivals, the time from the last arrival to the end of the arithmetic (the tail), and the
spread of entries and exits across the grid (rocmforge.bench.xr_trace_frame converts the stamps). Variants:
the default kernel, the diagnostic builds without dot products (ABLATE=1) and with the loads alone (ABLATE=2),
and row groups of 8 rows where the default takes whole rows (RF_MMVR_QMAX=0), and RF_MMVR_XDEP=0.
Usage: python scripts/trace_matvec_xr.py [--json F] [--shape NxK] [--reps R]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_matvec import EVICT_BYTES, Timer, make_weights  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dev import matvec_variants as V  # noqa: E402
from rocmforge import quant  # noqa: E402
from rocmforge.backends.hip import kernel_choice as C  # noqa: E402
from rocmforge.backends.hip.backend import HipBackend  # noqa: E402
from rocmforge.backends.hip.launch_mul_mat import QUANTIZE_X8, mul_mat_choice, prepare_mul_mat  # noqa: E402
from rocmforge.backends.hip.tensor import DevTensor  # noqa: E402
from rocmforge.bench import xr_trace_frame  # noqa: E402
from rocmforge.ir.ops import x8_words  # noqa: E402

CAP = 4096  # warps traced


def trace(be: HipBackend, timer: Timer, w, x, y, N: int, K: int, extra: dict, reps: int) -> dict:
    cp = be.cp
    be.ctx.tunables = {"RF_MMVR_TRACE": CAP, **extra}
    launch = mul_mat_choice(be.ctx, w, 1).launch
    assert launch.file == V.MUL_MAT_VEC_XR_TRACE.file, launch
    warps, blocks = launch.block[0] // be.warp, launch.grid[0]
    xq = DevTensor(cp.empty(4 * x8_words(K), dtype=np.uint8), 0, (1, x8_words(K)), "i32")
    QUANTIZE_X8(be.ctx, xq, x)  # once, read by the launches below
    mat_vec = prepare_mul_mat(be.ctx, y, w, x, xq, b=None)  # chosen and compiled; plain MUL_MAT (null b)
    mat_vec(be.ctx, y, w, x, xq)
    buf = be.ctx.mods.get(launch.file, **launch.defines).raw.get_global("rf_mmvr_trace")
    stamps = cp.ndarray((CAP, 16), dtype=np.uint64, memptr=buf)
    runs = []
    for _ in range(reps):
        ev = timer.evict_buf
        timer.evict_k((be.ctx.n_sm * 8,), (256,), (ev, np.int64(ev.nbytes // 16), timer.sink))
        stamps.fill(0)
        mat_vec(be.ctx, y, w, x, xq)
        cp.cuda.Device().synchronize()
        runs.append(cp.asnumpy(stamps[: min(CAP, blocks * warps)]).astype(np.int64))
    be.ctx.tunables = {}
    return {"warps": warps, "blocks": blocks, "runs": runs}


def summarize(runs: list[np.ndarray]) -> dict:
    """Over the runs, the median of each run's median (or extreme), in us."""
    keys: dict[str, list[float]] = {}
    for s in runs:
        df = xr_trace_frame(s)
        n = sum(c.startswith("arrive_") for c in df.columns)
        arr = df[[f"arrive_{i}" for i in range(n)]].to_numpy()
        for k, v in (
            ("first arrival after entry (median)", np.median(arr[:, 0] - df.entry)),
            ("arrival spacing (median)", np.median(np.diff(arr, axis=1)) if n > 1 else np.nan),
            ("last arrival -> arithmetic done (median)", df["tail"].median()),
            ("last arrival -> arithmetic done (max)", df["tail"].max()),
            ("entry spread", df.entry.max()),
            ("median exit", df.exit.median()),
            ("last exit", df.exit.max()),
            ("SM clock (GHz, measured)", df.attrs["sm_ghz"]),
        ):
            keys.setdefault(k, []).append(float(v))
    return {k: statistics.median(v) for k, v in keys.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="")
    ap.add_argument("--shape", default="11008x4096")
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    N, K = (int(v) for v in args.shape.split("x"))
    be = HipBackend(int8_activations=True)
    kernels = (V.MUL_MAT_VEC_XR_TRACE, C.MUL_MAT_VEC_XQ, C.MUL_MAT_VEC, C.MUL_MAT)
    be.ctx.mat_mul = C.MatMulOptions(True, kernels)
    cp = be.cp
    timer = Timer(cp, EVICT_BYTES)
    rng = np.random.default_rng(0)
    qt = quant.QType.Q4_0
    wbuf = make_weights(cp, qt, N, K, 1, rng)[0]
    w = DevTensor(wbuf, 0, (N, K), "q4_0")
    x = DevTensor(cp.asarray(rng.standard_normal(K).astype(np.float32)).view(np.uint8), 0, (1, K), "f32")
    y = DevTensor(cp.empty(N * 4, dtype=np.uint8), 0, (1, N), "f32")
    out = {"gpu": be.device_name, "shape": [N, K], "variants": {}}
    print(f"GPU: {be.device_name}; Q4_0 {N}x{K}; us from the first warp's entry")
    variants = (
        ("full", {}),
        ("no dot products (ABLATE=1)", {"RF_MMVR_ABLATE": 1}),
        ("loads alone (ABLATE=2)", {"RF_MMVR_ABLATE": 2}),
        ("row groups of 8 rows (QMAX=0)", {"RF_MMVR_QMAX": 0}),
        ("x's scales not tied to the weights (XDEP=0)", {"RF_MMVR_XDEP": 0}),
    )
    for name, extra in variants:
        t = trace(be, timer, w, x, y, N, K, extra, args.reps)
        summ = summarize(t["runs"])
        out["variants"][name] = {
            "warps_a_block": t["warps"],
            "blocks": t["blocks"],
            "summary_us": summ,
            "stamps_last_run": t["runs"][-1].tolist(),
        }
        print(f"\n{name}: {t['blocks']} blocks of {t['warps']} warps")
        for k, v in summ.items():
            print(f"  {k:42} {v:8.3f}" + ("" if "GHz" in k else " us"))
    if args.json:
        Path(args.json).write_text(json.dumps(out))


if __name__ == "__main__":
    main()
