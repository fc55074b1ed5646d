"""Benchmark MUL_MAT's prefill paths (more than 4 tokens): the tiled f32 kernel (mul_mat.hip), the vendor
BLAS (mul_mat_blas: x to f16, the weight dequantized to f16 by dequantize.hip in row tiles, cuBLAS's or
hipBLAS's GEMM) and the int8 matrix-instruction kernel on GGUF blocks (mmq: quantize_x8 of x, then
mul_mat_q.hip), for LLaMA-7B and Qwen2-0.5B layer shapes.

Prints the GPU's name and the BLAS in use, then per weight type, shape (N x K: y [M, N] = x [M, K] @ w^T)
and token count M: each path's time per node (the median over --reps of device-event timings around
--batch back-to-back runs of the prepared node replayed as one captured device graph, after two eager
warm-ups; --eager launches them from Python instead, where small nodes then time the host: the tiled kernel
is one launch, the BLAS path its copies, dequantizations and GEMMs, mmq its quantize_x8 and its kernel),
its TFLOP/s (2 M N K / time) and nmse against numpy on the same (dequantized) weights (the BLAS path on
f16 operands, mmq on x in int8: the conformance table's bound for both is 1e-4), dequantize.hip alone over
the whole weight (dq us: what the BLAS path spends before its GEMMs), the fastest path and which one
HipBackend's default (prefill "auto") chooses.

This is a benchmark, not a test: it asserts nothing. Usage:
    python scripts/bench_matmul.py [--types Q4_0,Q8_0,Q4_K,Q6_K,F16] [--shapes llama,qwen] [--tokens 512]
                                   [--paths tiled,blas,mmq] [--reps 10] [--batch 5] [--scratch-mib 64]
                                   [--eager] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge import quant  # noqa: E402
from rocmforge.backends.hip import kernel_choice as C  # noqa: E402
from rocmforge.backends.hip import launch_geometry as G  # noqa: E402
from rocmforge.backends.hip.backend import HipBackend  # noqa: E402
from rocmforge.backends.hip.launch_mul_mat import (  # noqa: E402
    mul_mat_choice,
    prepare_mul_mat,
    prepare_quantize_x8,
)
from rocmforge.backends.hip.tensor import DevTensor, i32, i64  # noqa: E402
from rocmforge.backends.hip.weights import upload  # noqa: E402
from rocmforge.ir.ops import x8_words  # noqa: E402

Q = quant.QType
PATH_KERNELS = {"tiled": "mul_mat", "blas": "mul_mat_blas", "mmq": "mul_mat_q"}  # --paths -> the table's row
SHAPES = {  # numpy (N, K) of the prefill mat-muls (logits take the last token only: a mat-vec)
    "llama": [(4096, 4096), (11008, 4096), (4096, 11008)],
    "qwen": [(896, 896), (128, 896), (4864, 896), (896, 4864)],
}


# time `batch` back-to-back runs captured as one device graph (no host time inside), or launched eagerly
# (--eager: the host's launch time counts where it exceeds the GPU's)
GRAPH = True


def timed_us(be: HipBackend, fn, reps: int, batch: int) -> float:
    """Median over reps of (device time of `batch` back-to-back fn() calls) / batch, after two eager
    warm-ups (kernels compiled, the BLAS's workspace set): the calls replayed as one captured device graph
    (GRAPH), else launched eagerly."""
    cp = be.cp
    with be.stream:
        fn()
        fn()
        graph = None
        if GRAPH:
            be.stream.begin_capture()
            try:
                for _ in range(batch):
                    fn()
            finally:
                graph = be.stream.end_capture()
        times = []
        for _ in range(reps):
            e0, e1 = cp.cuda.Event(), cp.cuda.Event()
            e0.record()
            if graph is not None:
                graph.launch()
            else:
                for _ in range(batch):
                    fn()
            e1.record()
            e1.synchronize()
            times.append(cp.cuda.get_elapsed_time(e0, e1) * 1e3 / batch)
    return statistics.median(times)


def nmse(out: np.ndarray, ref: np.ndarray) -> float:
    return float(np.sum((out.astype(np.float64) - ref) ** 2) / np.sum(ref**2))


def dequantize_us(be: HipBackend, w: DevTensor, reps: int, batch: int) -> float:
    """dequantize.hip alone over the whole weight (the BLAS path's tiles add up to this); nan where the GEMM
    reads the weight as it is."""
    wtype = w.dtype
    if wtype in G.BLAS_AS_IS:
        return float("nan")
    (N, K), ctx = w.shape, be.ctx
    dq = G.dequantize_launch(wtype, N, K)
    f = ctx.function(dq)
    w16 = be.cp.empty(N * K * 2, dtype=np.uint8)
    args = (w.ptr, i64(w.row_bytes), int(w16.data.ptr), i32(N), i32(K))
    return timed_us(be, lambda: ctx.launch(f, dq, args), reps, batch)


def measure(
    be: HipBackend, path: str, w: DevTensor, x: DevTensor, ref: np.ndarray, reps: int, batch: int
) -> dict:
    """One prefill path on this node: us, TFLOP/s, nmse against ref (and the BLAS path's tiles); {} where
    the path does not apply (no vendor BLAS, a scratch too small)."""
    ctx, M = be.ctx, x.shape[0]
    prefill, _, tiles = path.partition(":")  # mmq:WMxWN: mul_mat_q with that tiling (RF_MMQ_WM, RF_MMQ_WN)
    tuned = dict(ctx.tunables)
    if tiles:
        wm, wn = (int(v) for v in tiles.split("x"))
        ctx.tunables = {**tuned, "RF_MMQ_WM": wm, "RF_MMQ_WN": wn}
    ctx.mat_mul = C.MatMulOptions(prefill=prefill)
    try:
        choice = mul_mat_choice(ctx, w, M)
        if prefill != "tiled" and choice.kernel.name != PATH_KERNELS[prefill]:  # the path does not apply
            return {}
        return _measure(be, path, choice, w, x, ref, reps, batch)
    finally:
        ctx.tunables = tuned


def _measure(
    be: HipBackend, path: str, choice: C.MulMatChoice, w: DevTensor, x: DevTensor, ref: np.ndarray, reps: int,
    batch: int,
) -> dict:
    cp, ctx = be.cp, be.ctx
    (M, K), N = x.shape, w.shape[0]
    out = DevTensor(cp.empty(4 * M * N, dtype=np.uint8), 0, (M, N), "f32")
    out.buf.fill(0xFF)  # NaN: an element the path forgets shows
    xq = None
    if choice.quantize is not None:  # x quantized to int8 first, as a graph's QUANTIZE_X8 node does
        xq = DevTensor(cp.empty(4 * M * x8_words(K), dtype=np.uint8), 0, (M, x8_words(K)), "i32")
    with be.stream:
        quantize = prepare_quantize_x8(ctx, xq, x) if xq is not None else None
        run = prepare_mul_mat(ctx, out, w, x, xq)

    def node() -> None:
        if quantize is not None:
            quantize(ctx, xq, x)
        run(ctx, out, w, x, xq)

    us = timed_us(be, node, reps, batch)
    got = cp.asnumpy(out.buf).view(np.float32).reshape(M, N)
    rec = {f"{path}_us": us, f"{path}_tflops": 2 * M * N * K / us / 1e6, f"{path}_nmse": nmse(got, ref)}
    if choice.blas is not None:
        rec["blas_tiles"] = [choice.blas.m_tile, choice.blas.n_tile]
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--types", default="Q4_0,Q8_0,Q4_K,Q6_K,F16", help="weight types, comma-separated")
    ap.add_argument("--shapes", default="llama,qwen", help=f"shape sets among {', '.join(SHAPES)}")
    ap.add_argument("--tokens", default="512", help="token counts M, comma-separated (e.g. 8,32,128,512)")
    ap.add_argument("--paths", default="tiled,blas,mmq",
                    help="prefill paths among tiled, blas, mmq (mmq:WMxWN: mul_mat_q's tiling, e.g. mmq:4x2)")
    ap.add_argument("--eager", action="store_true",
                    help="launch each run from Python instead of replaying a captured graph of --batch runs")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=5)
    ap.add_argument("--scratch-mib", type=int, default=None, help="RF_BLAS_SCRATCH in MiB (default: table's)")
    ap.add_argument("--json", metavar="OUT", help="write the table as JSON")
    a = ap.parse_args()
    global GRAPH
    GRAPH = not a.eager

    tunables = {} if a.scratch_mib is None else {"RF_BLAS_SCRATCH": a.scratch_mib << 20}
    be = HipBackend(tunables=tunables)
    cp, ctx = be.cp, be.ctx
    print(f"{be.device_name} ({be.arch}); vendor BLAS: {ctx.device.blas or 'none'} {be.blas_unavailable}")
    rng = np.random.default_rng(0)
    nan = float("nan")
    rows = []
    paths = [p.strip() for p in a.paths.split(",")]
    heads = " | ".join(f"{p + ' us':>9s} {'TF/s':>6s} {'nmse':>8s}" for p in paths)
    print(f"{'type':6s} {'N x K':>12s} {'M':>5s} | {heads} | {'dq us':>8s} {'best':>6s} {'auto':>6s}")
    for tname in a.types.split(","):
        qt = Q[tname.strip().upper()]
        for shape_set in a.shapes.split(","):
            for N, K in SHAPES[shape_set.strip()]:
                if K % quant.block_size(qt):  # (Qwen's 896 is not whole K-quant blocks of 256)
                    bs = quant.block_size(qt)
                    print(f"{qt.name:6s} {N:>5d}x{K:<6d} skipped: K is not whole blocks of {bs}")
                    continue
                raw = quant.random_blocks(qt, (N, K), rng)
                w = DevTensor(upload(cp, raw), 0, (N, K), qt.name.lower())
                w_host = quant.dequantize(raw, qt, (N, K)).astype(np.float64)
                dq_us = dequantize_us(be, w, a.reps, a.batch)
                for M in (int(t) for t in a.tokens.split(",")):
                    x_host = rng.standard_normal((M, K)).astype(np.float32)
                    x = DevTensor(upload(cp, x_host), 0, (M, K), "f32")
                    ref = x_host.astype(np.float64) @ w_host.T
                    ctx.mat_mul = C.MatMulOptions()
                    kern = mul_mat_choice(ctx, w, M).kernel.name
                    auto = next((p for p, k in PATH_KERNELS.items() if k == kern), kern)
                    rec = {"type": qt.name, "N": N, "K": K, "M": M, "auto": auto, "dq_us": dq_us}
                    for p in paths:
                        rec.update(measure(be, p, w, x, ref, a.reps, a.batch))
                    timed = {p: rec[f"{p}_us"] for p in paths if f"{p}_us" in rec}
                    rec["best"] = min(timed, key=timed.get) if timed else ""
                    rows.append(rec)
                    cols = " | ".join(f"{rec.get(p + '_us', nan):9.1f} {rec.get(p + '_tflops', nan):6.1f} "
                                      f"{rec.get(p + '_nmse', nan):8.1e}" for p in paths)
                    print(f"{qt.name:6s} {f'{N}x{K}':>12s} {M:5d} | {cols} | {dq_us:8.1f} {rec['best']:>6s} "
                          f"{auto:>6s}", flush=True)
    if a.json:
        head = {"gpu": be.device_name, "arch": be.arch, "blas": ctx.device.blas,
                "timing": "graph" if GRAPH else "eager"}
        Path(a.json).write_text(json.dumps({**head, "table": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
