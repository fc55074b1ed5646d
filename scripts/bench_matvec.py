"""Benchmark the quantized mat-vec kernels (decode MUL_MAT) against the GPU's copy bandwidth.

Prints the GPU's name, the device-to-device copy bandwidth (bytes read + written, 1 GiB buffers, median
of device-event timings), then for each weight type and LLaMA-7B / Qwen2-0.5B layer shape the kernel
time (median after warm-up), the achieved weight bandwidth (weight bytes / time) and its share of the
copy bandwidth, a plain 16-byte read of the same bytes (--read-floor: also the fastest of 18 plain reads,
1-8 loads in flight per thread, 2-8 blocks per SM), and the error against the numpy reference over
every output row (nmse; the output is NaN-poisoned first, so a skipped row shows as nan).

Timing: several copies of each weight rotate so that L2 cannot serve them (weights too small for that,
16 copies under 2x L2, are instead evicted before each launch by reading a large buffer).
`graph us`: a device graph of 4 x copies launches is captured and replayed, the median per launch over
replays (as decode replays its steps). `us`: launches queued behind a spin kernel, the median over
batches of 10 back-to-back stream launches of the batch's mean per launch (adds the launch gaps: the
empty-kernel line gives their size). Evicted weights are timed one launch at a time with events around
each (no graph figure). Where the GPU has programmatic dependent launch (CUDA sm_90+, HipBackend's default
there), each of the graph's mat-vecs starts while the one before it ends, as in decode; sweeps name it
RF_PDL (0: plain launches). The int8 kinds also time quantize_x8 alone and each (quantize_x8, mat-vec) pair
in a graph, as decode runs them.

Kernel kinds (--kind, or chosen by --sweep): f32 (the default mat-vec), x8 (int8 activations,
mul_mat_vec_x, for Q4_0/Q8_0 of >= 8192 rows), xq (the same with x quantized once by quantize_x8 and
shared, as in a decode graph: the mat-vec is timed alone and the quantize kernel's time printed beside
it), xb (a GGUF block per lane, on the shared x), xr (row groups through plain loads, on the shared x;
here for Q4_0 and Q8_0), int8 and staged (older variants). x8, xb, int8, staged and xr's measurement builds
(RF_MMVR_ABLATE, RF_MMVR_TRACE) are dev/'s kernels (dev/matvec_variants.py), chosen by no HipBackend
option.

This is a benchmark, not a test: it asserts nothing. Usage:
    python scripts/bench_matvec.py [--types Q4_0,Q8_0] [--shapes llama,qwen,goal] [--kind x8|xq|xb|xr]
                                   [--sweep [f32|x8|xq|xb|xr|pdl]] [--tunables K=V,...] [--read-floor]
                                   [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dev import matvec_variants as V  # noqa: E402
from rocmforge import quant  # noqa: E402
from rocmforge.backends.hip import kernel_choice as C  # noqa: E402
from rocmforge.backends.hip.backend import HipBackend  # noqa: E402
from rocmforge.backends.hip.launch_mul_mat import (  # noqa: E402
    mul_mat_choice,
    prepare_mul_mat,
    prepare_quantize_x8,
)
from rocmforge.backends.hip.tensor import DevTensor  # noqa: E402
from rocmforge.ir.ops import x8_words  # noqa: E402

Q = quant.QType
TYPES = [Q.Q4_0, Q.Q8_0, Q.Q4_K, Q.Q6_K, Q.Q5_0, Q.Q4_1, Q.F16]
SHAPES = {  # numpy (N, K): y[N] = w[N, K] @ x[K]
    "llama": [(4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096)],
    "qwen": [(896, 896), (128, 896), (4864, 896), (896, 4864), (151936, 896)],
    "goal": [(11008, 4096), (4096, 11008)],
}
# offsets of the f16 scale fields in each block (set to valid values after random fill)
SCALE_FIELDS = {Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q8_0: [0], Q.Q4_K: [0, 2], Q.Q6_K: [208]}
GOAL_SHAPES = [(11008, 4096), (4096, 11008)]  # ggml [4096, 11008] both ways: the 75% goal
EVICT_BYTES = 256 << 20  # read between launches of weights too small to rotate
# mat-vec variants for --sweep: the plain f32 kernel (RF_MMV_FAST 0: the original dots; 1: the four-shift
# Q4_0 dot, the default; 2: also the one-permute Q8_0 dot) with 4 or 8 warps, and the int8 kernel
SWEEP = [
    dict(kind="f32", RF_MMV_FAST=f, RF_MMV_ROWS=2, RF_MMV_WARPS=w, RF_MMV_UNROLL=1)
    for f, w in [(0, 4), (1, 4), (1, 8), (2, 4), (2, 8)]
]
# --sweep x8: the int8-x streaming kernel (mul_mat_vec_x) against the default f32 kernel
SWEEP_X8 = [dict(kind="f32")] + [
    dict(
        kind="x8",
        RF_MMVX_LEVELS=lv,
        RF_MMVX_ROWS=r,
        RF_MMVX_UNROLL=u,
        RF_MMVX_WARPS=w,
        RF_MMVX_BPS=b,
        RF_MMVX_ASYNC=a,
        RF_MMVX_MINB=mb,
    )
    for lv, r, u, w, b, a, mb in [
        (1, 2, 4, 8, 4, 0, 1),
        (1, 2, 4, 8, 6, 3, 6),
        (1, 2, 2, 8, 6, 3, 6),
        (1, 2, 2, 8, 6, 4, 6),
        (1, 2, 4, 8, 5, 3, 5),
        (1, 1, 4, 8, 6, 3, 6),
        (1, 2, 4, 4, 12, 3, 12),
        (1, 2, 4, 8, 6, 2, 6),
        (2, 2, 4, 8, 6, 3, 6),
        (1, 2, 2, 8, 8, 4, 8),
        (1, 4, 2, 8, 4, 3, 4),
    ]
]
# --sweep xq: x quantized once and shared (mul_mat_vec_xq) against the per-block quantizing x8 kernel
SWEEP_XQ = (
    [dict(kind="x8")]
    + [
        dict(kind="xq", RF_MMVX_ROWS=r, RF_MMVX_UNROLL=u, RF_MMVX_ASYNC=a, RF_MMVX_MINB=b, RF_MMVX_BPS=b)
        # (ROWS, UNROLL, ASYNC ring depth, blocks per SM): shallow rings (48 KB a block, H100 sweep), then
        # deep ones (opt-in shared memory) that put a warp's whole share of a 25 MB weight in flight at once
        for r, u, a, b in [
            (4, 2, 3, 4),
            (2, 4, 3, 4),
            (4, 2, 9, 2),
            (2, 4, 10, 2),
            (2, 2, 12, 3),
            (1, 4, 12, 3),
            (4, 2, 6, 3),
            (2, 4, 6, 3),
            (2, 2, 8, 4),
            (1, 2, 16, 4),
            (1, 4, 8, 4),
            (4, 1, 16, 3),
        ]
    ]
    + [
        dict(kind="x8", RF_MMVX_ROWS=r, RF_MMVX_UNROLL=u, RF_MMVX_ASYNC=a, RF_MMVX_MINB=b, RF_MMVX_BPS=b)
        for r, u, a, b in [(4, 2, 9, 2), (2, 2, 12, 3)]
    ]
)
# --sweep xb: mul_mat_vec_xb against x8, xq; (ROWS, ring depth, blocks per SM, warps, dp4a chains)
SWEEP_XB = [dict(kind="x8"), dict(kind="xq")] + [
    dict(
        kind="xb",
        RF_MMVB_ROWS=r,
        RF_MMVB_ASYNC=a,
        RF_MMVB_MINB=b,
        RF_MMVB_BPS=b,
        RF_MMVB_WARPS=w,
        RF_MMVB_CHAINS=c,
    )
    # matvec_h200_xb_sweep2.json: CHAINS 2-4 and ring shapes; here every warp <= 1 row group for N = 11008
    # (ROWS 4 x 11 warps x 2 blocks x 132 SMs >= 11008; ROWS 6 x 8 warps) and deeper rings for K = 11008
    for r, a, b, w, c in [
        (4, 4, 2, 8, 2),
        (8, 2, 2, 8, 2),
        (4, 4, 2, 11, 2),
        (6, 3, 2, 8, 2),
        (2, 8, 2, 8, 2),
        (2, 8, 2, 11, 2),
    ]
]
# --sweep xr: mul_mat_vec_xr against xb: row groups of 8 rows with one warp (the default before whole
# rows, x prefetched with the weights) and whole rows a row group (RF_MMVR_Q, the default where K allows),
# each twice for the run's noise; x's scales not tied to the staged weights (XDEP 0, twice); ablations of the
# whole-row kernel: WRONG results, diagnostics (1 drops the dot products, 2 also the staging)
_XR_ONE = dict(kind="xr", RF_MMVR_QMAX=0, RF_MMVR_WARPS=1, RF_MMVR_MINB=12, RF_MMVR_BPS=12, RF_MMVR_XPF=1)
SWEEP_XR = [
    dict(kind="xb"),
    _XR_ONE,
    dict(kind="xr"),
    _XR_ONE,
    dict(kind="xr"),
    dict(kind="xr", RF_MMVR_XDEP=0),
    dict(kind="xr", RF_MMVR_XDEP=0),
    dict(kind="xr", RF_MMVR_ABLATE=1),
    dict(kind="xr", RF_MMVR_ABLATE=2),
]
# programmatic dependent launch (RF_PDL, host side, the default where available: quantize_x8 and xr start
# while the kernel before them ends; in the device graph, each mat-vec while the one before it ends) against
# none (RF_PDL 0), twice each. Earlier runs (matvec_h200_xr_sweep_pdl{1,...,5}.json) timed the next launch let
# go after the wait (PDLT 0), the later items prefetched into L2, xr's first weights before x without the
# early start, row groups reading x in the loop (XPF 0) to start early, quantize_x8 launched plainly (the
# host-side RF_QX8_PDL 0 of the time), and the ablations.
SWEEP_PDL = [
    dict(kind="xr", RF_PDL=0),
    dict(kind="xr"),
    dict(kind="xr", RF_PDL=0),
    dict(kind="xr"),
]

def _opts(*kernels: C.MatMulKernel, **min_n: int) -> C.MatMulOptions:
    """The first of kernels that applies (min_n: kernel name -> fewest rows), else the f32 mat-vec."""
    return C.MatMulOptions(True, (*kernels, C.MUL_MAT_VEC, C.MUL_MAT), min_n)


KINDS = {
    "staged": _opts(V.MUL_MAT_VEC_S),
    "f32": C.MatMulOptions(),
    "int8": _opts(V.MUL_MAT_VEC_Q),
    "x8": _opts(V.MUL_MAT_VEC_X),
    "xq": _opts(C.MUL_MAT_VEC_XQ),
    # ... for every N it applies to, to see where it beats the f32 kernel
    "xb": _opts(V.MUL_MAT_VEC_XB, C.MUL_MAT_VEC_XQ, mul_mat_vec_xb=0),
    # ... mul_mat_vec_xr (row groups) for Q4_0 and Q8_0 where K is a multiple of 256, else as xb
    "xr": _opts(C.MUL_MAT_VEC_XR, V.MUL_MAT_VEC_XB, C.MUL_MAT_VEC_XQ, mul_mat_vec_xr=0, mul_mat_vec_xb=0),
}
# xr's measurement builds: dev/mul_mat_vec_xr_trace.hip
_MEASURE = ("RF_MMVR_ABLATE", "RF_MMVR_TRACE")


def use(be: HipBackend, tun: dict) -> None:
    """Select a sweep entry's kernel kind and tunables on the backend."""
    opts = KINDS[tun.get("kind", "staged")]
    if any(tun.get(k) for k in _MEASURE):
        swap = {C.MUL_MAT_VEC_XR: V.MUL_MAT_VEC_XR_TRACE}
        opts = C.MatMulOptions(True, tuple(swap.get(k, k) for k in opts.kernels), opts.min_n)
    be.ctx.mat_mul = opts
    # programmatic dependent launch (host side; default: where available, as HipBackend)
    be.ctx.pdl = bool(tun.get("RF_PDL", be.pdl_unavailable is None))
    be.ctx.tunables = {k: v for k, v in tun.items() if k not in ("kind", "RF_PDL")}


BATCH = 10

HELPER_SRC = r"""
extern "C" __global__ void spin(long long cycles) {
    long long t0 = clock64();
    while (clock64() - t0 < cycles) { }
}
// read a large buffer (clean lines replace whatever L2 holds); writes only if the sum is NaN
extern "C" __global__ void l2_evict(const float4* p, long long n, float* sink) {
    float s = 0.0f;
    const long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n; i += stride) {
        float4 v = p[i];
        s += v.x + v.y + v.z + v.w;
    }
    if (s != s) sink[0] = s;
}
// a plain read with U 16-byte loads in flight per thread (read floor candidates, with l2_evict for U = 1)
template <int U>
__device__ void read_u(const uint4* __restrict__ p, long long n, float* sink) {
    unsigned s = 0;
    const long long stride = (long long)gridDim.x * blockDim.x;
    long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    for (; i + (U - 1) * stride < n; i += U * stride) {
        uint4 v[U];
#pragma unroll
        for (int k = 0; k < U; ++k) v[k] = p[i + k * stride];
#pragma unroll
        for (int k = 0; k < U; ++k) s ^= v[k].x ^ v[k].y ^ v[k].z ^ v[k].w;
    }
    for (; i < n; i += stride) s ^= p[i].x;
    if (s == 0x9E3779B9u) sink[0] = 1.0f;  // keeps the loads; practically never taken
}
extern "C" __global__ void read_4(const uint4* p, long long n, float* sink) { read_u<4>(p, n, sink); }
extern "C" __global__ void read_8(const uint4* p, long long n, float* sink) { read_u<8>(p, n, sink); }
"""
# --read-floor: the best of these plain reads (loads in flight, blocks per SM, threads) in a device graph
READ_FLOOR = [(u, b, t) for u in (1, 4, 8) for b in (2, 4, 8) for t in (256, 512)]
READ_BLOCKS_PER_SM = 8  # read floor: l2_evict over the weight bytes, n_SM * 8 blocks of 256 threads


class Timer:
    """Queue launches behind a spin kernel; time each launch alone with its own pair of events."""

    def __init__(self, cp, evict_bytes: int) -> None:
        self.cp = cp
        mod = cp.RawModule(code=HELPER_SRC)
        self.spin, self.evict_k = mod.get_function("spin"), mod.get_function("l2_evict")
        self.read_k = {1: self.evict_k, **{u: mod.get_function(f"read_{u}") for u in (4, 8)}}
        self.evict_buf = cp.zeros(evict_bytes // 4, dtype=np.float32)
        self.sink = cp.zeros(1, dtype=np.float32)
        self.spin((1,), (1,), (np.int64(1000),))
        self.evict()
        cp.cuda.Device().synchronize()

    def evict(self) -> None:
        n = self.evict_buf.size // 4
        self.evict_k((1024,), (256,), (self.evict_buf, np.int64(n), self.sink))

    def time(self, launch, n: int, flush: bool = False, spin_cycles: int = 4_000_000) -> list[float]:
        """Per-launch times in microseconds of launch(i), i < n: chained events between back-to-back
        launches, or (flush) a pair of events around each launch after an L2 eviction pass."""
        cp = self.cp
        self.spin((1,), (1,), (np.int64(spin_cycles),))
        if not flush:
            evs = [cp.cuda.Event() for _ in range(n + 1)]
            evs[0].record()
            for i in range(n):
                launch(i)
                evs[i + 1].record()
            evs[-1].synchronize()
            return [cp.cuda.get_elapsed_time(evs[i], evs[i + 1]) * 1e3 for i in range(n)]
        return self._pairs(launch, n)

    def _pairs(self, launch, n: int) -> list[float]:
        cp = self.cp
        pairs = [(cp.cuda.Event(), cp.cuda.Event()) for _ in range(n)]
        for i in range(n):
            self.evict()
            pairs[i][0].record()
            launch(i)
            pairs[i][1].record()
        pairs[-1][1].synchronize()
        return [cp.cuda.get_elapsed_time(a, b) * 1e3 for a, b in pairs]

    def time_graph(self, launch, n: int, reps: int = 10) -> list[float]:
        """Mean time per launch (us) of a captured device graph of n back-to-back launch(i), as decode
        replays its steps: events around each replay, after one warm-up replay."""
        cp = self.cp
        stream = cp.cuda.Stream(non_blocking=True)
        with stream:
            stream.begin_capture()
            for i in range(n):
                launch(i)
            graph = stream.end_capture()
            graph.launch(stream)
            out = []
            for _ in range(reps):
                a, b = cp.cuda.Event(), cp.cuda.Event()
                a.record(stream)
                graph.launch(stream)
                b.record(stream)
                b.synchronize()
                out.append(cp.cuda.get_elapsed_time(a, b) * 1e3 / n)
        return out

    def time_batched(
        self, launch, n_batches: int, batch: int = BATCH, spin_cycles: int = 4_000_000
    ) -> list[float]:
        """Mean time per launch (us) of each batch of back-to-back launch(i), events around batches."""
        cp = self.cp
        self.spin((1,), (1,), (np.int64(spin_cycles),))
        evs = [cp.cuda.Event() for _ in range(n_batches + 1)]
        evs[0].record()
        for b in range(n_batches):
            for i in range(batch):
                launch(b * batch + i)
            evs[b + 1].record()
        evs[-1].synchronize()
        return [cp.cuda.get_elapsed_time(evs[b], evs[b + 1]) * 1e3 / batch for b in range(n_batches)]


def copy_bandwidth(cp, timer: Timer, nbytes: int) -> tuple[float, float]:
    """Device-to-device copy as (kernel, memcpy): bytes read + written per second (median of events)."""
    a = cp.ones(nbytes // 16, dtype=np.complex128)  # 16-byte elements: one vector load/store per thread
    b = cp.empty_like(a)
    for _ in range(3):
        b[...] = a
    ts = timer.time(lambda i: b.__setitem__(Ellipsis, a), 20)
    stream = cp.cuda.get_current_stream().ptr
    kind = cp.cuda.runtime.memcpyDeviceToDevice

    def memcpy(i: int) -> None:
        cp.cuda.runtime.memcpyAsync(b.data.ptr, a.data.ptr, a.nbytes, kind, stream)

    tm = timer.time(memcpy, 20)
    return 2 * a.nbytes / (statistics.median(ts) * 1e-6), 2 * a.nbytes / (statistics.median(tm) * 1e-6)


def make_weights(cp, qt: quant.QType, N: int, K: int, copies: int, rng: np.random.Generator):
    """`copies` device buffers of valid random GGUF blocks (random bits, valid f16 scales)."""
    nbytes = quant.row_bytes(qt, K) * N
    bufs = []
    for _ in range(copies):
        if qt == Q.F16:
            buf = cp.random.standard_normal(N * K, dtype=np.float32).astype(np.float16).view(np.uint8)
        else:
            buf = cp.random.randint(0, 256, nbytes).astype(np.uint8)
            ts = quant.type_size(qt)
            blocks = buf.reshape(-1, ts)
            for off in SCALE_FIELDS[qt]:
                sc = (cp.random.uniform(0.001, 0.05, blocks.shape[0], dtype=np.float32)).astype(np.float16)
                blocks[:, off : off + 2] = sc.view(np.uint8).reshape(-1, 2)
        bufs.append(buf)
    return bufs


def bench_one(
    be: HipBackend,
    timer: Timer,
    qt: quant.QType,
    N: int,
    K: int,
    rng,
    reps: int,
    rot_bytes: int,
    read_floor: bool = False,
) -> dict:
    cp = be.cp
    nbytes = quant.row_bytes(qt, K) * N
    copies = max(2, min(16, -(-rot_bytes // nbytes)))
    flush = copies * nbytes < rot_bytes
    bufs = make_weights(cp, qt, N, K, copies, rng)
    xh = rng.standard_normal(K).astype(np.float32)
    x = DevTensor(cp.asarray(xh).view(np.uint8), 0, (1, K), "f32")
    y = DevTensor(cp.empty(N * 4, dtype=np.uint8), 0, (1, N), "f32")
    ws = [DevTensor(b, 0, (N, K), qt.name.lower()) for b in bufs]
    y.buf.view(np.float32)[...] = np.nan  # poisoned: rows the kernel skips show
    choice = mul_mat_choice(be.ctx, ws[0], 1)
    xq = quantize = None
    if choice.quantize:  # int8 x: quantized once (QUANTIZE_X8) and shared, as the mat-vecs of one value
        # share it in a decode graph: the launches below time the mat-vec alone, quantize_us QUANTIZE_X8
        # alone (started early before an early mat-vec, as a graph's is)
        xq = DevTensor(cp.empty(4 * x8_words(K), dtype=np.uint8), 0, (1, x8_words(K)), "i32")
        quantize = prepare_quantize_x8(be.ctx, xq, x, choice.quantize.pdl)
        quantize(be.ctx, xq, x)
    # chosen and compiled, as at prepare; plain MUL_MAT (b None: the kernels get a null b and add nothing)
    prepared = [prepare_mul_mat(be.ctx, y, w, x, xq, b=None) for w in ws]
    prepared[0](be.ctx, y, ws[0], x, xq)  # check, every row
    cp.cuda.Device().synchronize()
    ref = quant.dequantize(cp.asnumpy(bufs[0]), qt, (N, K)).astype(np.float64) @ xh.astype(np.float64)
    got = cp.asnumpy(y.buf).view(np.float32)
    err = float(np.sum((got - ref) ** 2) / max(np.sum(ref**2), 1e-30))  # NaN if any row is unwritten

    def launch(i: int) -> None:
        prepared[i % copies](be.ctx, y, ws[i % copies], x, xq)

    for i in range(3):  # warm-up
        launch(i)
    t_ev = statistics.median(timer.time(launch, reps, flush))
    t = t_ev if flush else statistics.median(timer.time_batched(launch, max(3, reps // BATCH)))
    t_graph = float("nan") if flush else statistics.median(timer.time_graph(launch, 4 * copies))
    err_graph = float("nan")
    if not flush:  # the graph's last launch (weight copy `copies - 1`), as left by its replays
        ref = quant.dequantize(cp.asnumpy(bufs[-1]), qt, (N, K)).astype(np.float64) @ xh.astype(np.float64)
        got = cp.asnumpy(y.buf).view(np.float32)
        err_graph = float(np.sum((got - ref) ** 2) / max(np.sum(ref**2), 1e-30))

    t_quant = t_pair = float("nan")
    if quantize is not None and not flush:
        t_quant = statistics.median(timer.time_graph(lambda i: quantize(be.ctx, xq, x), 16))

        def pair(i: int) -> None:  # as in decode: x quantized, then the mat-vec that reads it
            quantize(be.ctx, xq, x)
            launch(i)

        t_pair = statistics.median(timer.time_graph(pair, 4 * copies))

    def read(i: int) -> None:  # the floor: a plain 16-byte-load read of the same bytes
        b = bufs[i % copies]
        timer.evict_k((be.ctx.n_sm * READ_BLOCKS_PER_SM,), (256,), (b, np.int64(nbytes // 16), timer.sink))

    if nbytes % 16 == 0:
        for i in range(3):
            read(i)
        rd = timer.time(read, reps, flush) if flush else timer.time_batched(read, max(3, reps // BATCH))
        t_read = statistics.median(rd)
        t_read_graph = float("nan") if flush else statistics.median(timer.time_graph(read, 4 * copies))
    else:
        t_read = t_read_graph = float("nan")
    floor_us, floor_cfg = float("nan"), ""
    if read_floor and nbytes % 16 == 0 and not flush:  # the fastest plain read of these bytes in a graph
        for u, bps, th in READ_FLOOR:
            k = timer.read_k[u]

            def rd(i: int, k=k, bps=bps, th=th) -> None:
                k((be.ctx.n_sm * bps,), (th,), (bufs[i % copies], np.int64(nbytes // 16), timer.sink))

            rd(0)
            tg = statistics.median(timer.time_graph(rd, 4 * copies))
            if not tg >= floor_us:
                floor_us, floor_cfg = tg, f"{u} loads x {bps} blocks/SM x {th} threads"
    bufs.clear()
    ws.clear()
    cp.get_default_memory_pool().free_all_blocks()
    return {
        "type": qt.name,
        "N": N,
        "K": K,
        "bytes": nbytes,
        "us": t,
        "us_ev": t_ev,
        "read_us": t_read,
        "graph_us": t_graph,
        "read_graph_us": t_read_graph,
        "quantize_us": t_quant,
        "pair_graph_us": t_pair,  # quantize_x8 then the mat-vec, per pair in a device graph
        "read_floor_graph_us": floor_us,
        "read_floor_config": floor_cfg,
        "graph_gbps": nbytes / (t_graph * 1e-6) / 1e9,
        "gbps": nbytes / (t * 1e-6) / 1e9,
        "nmse": err,
        "nmse_graph": err_graph,
        "copies": copies,
        "flush": flush,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--types", default=",".join(t.name for t in TYPES))
    ap.add_argument("--shapes", default="llama,qwen")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument(
        "--sweep",
        nargs="?",
        const="f32",
        default="",
        choices=["f32", "x8", "xq", "xb", "xr", "pdl"],
        help="try the tunable variants first (f32; x8 against f32; xq, xb against x8; xr against xb; pdl: xr "
        "with programmatic dependent launch) on the goal shapes",
    )
    ap.add_argument("--tunables", default="", help="e.g. RF_MMV_ROWS=4,RF_MMV_WARPS=4")
    ap.add_argument("--kind", default="", choices=["", *KINDS], help="kernel kind for the table")
    ap.add_argument(
        "--read-floor",
        action="store_true",
        help="also time the fastest of several plain reads of each weight's bytes (in a device graph)",
    )
    ap.add_argument(
        "--plain-launches", action="store_true", help="the table without programmatic dependent launch"
    )
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    be = HipBackend()
    cp = be.cp
    timer = Timer(cp, EVICT_BYTES)
    try:
        l2 = int(cp.cuda.Device().attributes["L2CacheSize"])
    except Exception:
        l2 = 50 << 20
    rot_bytes = 2 * l2
    rng = np.random.default_rng(0)
    free, total = cp.cuda.runtime.memGetInfo()
    copy_bytes = min(1 << 30, free // 8)
    bw_kernel, bw_memcpy = copy_bandwidth(cp, timer, copy_bytes)
    bw = max(bw_kernel, bw_memcpy)
    dev = be.ctx.device
    print(
        f"GPU: {be.device_name} ({be.arch}, warp {be.warp}, {dev.n_sm} CUs/SMs, L2 {l2 >> 20} MiB, "
        f"shared memory {dev.smem_block >> 10} KiB a block, {dev.smem_sm >> 10} KiB an SM)"
    )
    print(
        f"copy bandwidth (read + write, {copy_bytes >> 20} MiB): kernel {bw_kernel / 1e9:.0f} GB/s, "
        f"memcpy {bw_memcpy / 1e9:.0f} GB/s; using {bw / 1e9:.0f} GB/s"
    )

    def empty_launch(i: int) -> None:
        timer.spin((1,), (32,), (np.int64(0),))

    empty = [
        statistics.median(timer.time_batched(empty_launch, 5)),
        statistics.median(timer.time(empty_launch, 30)),
        statistics.median(timer.time(empty_launch, 30, True)),
    ]
    print(
        f"empty kernel: {empty[0]:.2f} us in batches, {empty[1]:.2f} us with events between launches, "
        f"{empty[2]:.2f} us alone after an eviction pass"
    )
    results: dict = {
        "gpu": be.device_name,
        "arch": be.arch,
        "copy_gbps": bw / 1e9,
        "copy_kernel_gbps": bw_kernel / 1e9,
        "copy_memcpy_gbps": bw_memcpy / 1e9,
        "empty_us": empty,
        "sweep": [],
        "table": [],
    }

    if args.sweep:
        print(
            "\nsweep of mat-vec variants, % of copy bandwidth (in a device graph, and in a stream) for "
            "Q4_0 then Q8_0 at " + ", ".join(f"{n}x{k}" for n, k in GOAL_SHAPES) + ":"
        )
        best = None
        per_type: dict = {}
        sweeps = {"x8": SWEEP_X8, "xq": SWEEP_XQ, "xb": SWEEP_XB, "xr": SWEEP_XR, "pdl": SWEEP_PDL}
        for tun in sweeps.get(args.sweep, SWEEP):
            use(be, tun)
            ablation = any(k.endswith("_ABLATE") and v for k, v in tun.items())  # wrong results: never "best"
            row, srow, errs = [], [], []
            for qt in (Q.Q4_0, Q.Q8_0):
                for N, K in GOAL_SHAPES:
                    r = bench_one(be, timer, qt, N, K, rng, args.reps, rot_bytes)
                    row.append(r["graph_gbps"] * 1e9 / bw)
                    srow.append(r["gbps"] * 1e9 / bw)
                    errs += [r["nmse"], r["nmse_graph"]]
                    results["sweep"].append({**tun, **r})
                sc = min(row[-2:])
                if not ablation and (qt not in per_type or sc > per_type[qt][0]):
                    per_type[qt] = (sc, tun)
            score = min(row)
            name = f"{tun['kind']:5}" + ",".join(
                f"{k.split('_')[-1]}={v}" for k, v in tun.items() if k != "kind"
            )
            print(
                f"  {name:36} graph "
                + " ".join(f"{100 * p:5.1f}%" for p in row)
                + "  stream "
                + " ".join(f"{100 * p:5.1f}%" for p in srow)
                + f"  min {100 * score:.1f}%  nmse<={np.nan if np.isnan(errs).any() else max(errs):.0e}",
                flush=True,
            )
            if not ablation and (best is None or score > best[0]):
                best = (score, tun)
        for qt, (sc, tun) in per_type.items():
            print(f"best for {qt.name}: {100 * sc:.1f}% {tun}")
        print(f"best: {best[1]}")
        use(be, best[1])
        results["best_tunables"] = best[1]
    if args.kind:
        use(be, {"kind": args.kind})
    if args.tunables:
        be.ctx.tunables = {k: int(v) for k, v in (kv.split("=") for kv in args.tunables.split(","))}

    types = [Q[t] for t in args.types.split(",")]
    kind = ", ".join(k.name for k in be.ctx.mat_mul.kernels[:-2]) + ", f32 otherwise"
    if args.plain_launches:
        be.ctx.pdl = False
    pdl = "programmatic launch" if be.ctx.pdl else "plain launches"
    results["table_pdl"] = be.ctx.pdl
    print(f"\nmat-vec: {kind}; tunables {be.ctx.tunables or 'default'}; {pdl}; GPU {be.device_name}")
    print(
        f"{'type':6} {'N x K':>13} {'MB':>8} {'us':>8} {'% copy':>7} {'graph us':>9} {'GB/s':>6} "
        f"{'% copy':>7} {'read us':>8} {'nmse':>8} {'L2':>6}"
    )
    t0 = time.time()
    for set_name in filter(None, args.shapes.split(",")):
        for N, K in SHAPES[set_name]:
            for qt in types:
                if K % quant.block_size(qt):
                    print(f"{qt.name:6} {N:>6}x{K:<6} {'n/a: K is not a multiple of the block size':>40}")
                    continue
                r = bench_one(be, timer, qt, N, K, rng, args.reps, rot_bytes, args.read_floor)
                results["table"].append(r)
                print(
                    f"{qt.name:6} {N:>6}x{K:<6} {r['bytes'] / 1e6:8.2f} {r['us']:8.2f} "
                    f"{100 * r['gbps'] * 1e9 / bw:6.1f}% {r['graph_us']:9.2f} {r['graph_gbps']:6.0f} "
                    f"{100 * r['graph_gbps'] * 1e9 / bw:6.1f}% {r['read_graph_us']:8.2f} "
                    f"{r['nmse']:8.1e} {'evict' if r['flush'] else 'rot'}"
                    + (
                        f"  (+ quantize_x8 {r['quantize_us']:.2f} us; the two {r['pair_graph_us']:.2f} us)"
                        if not math.isnan(r["quantize_us"])
                        else ""
                    )
                    + (
                        f"  best read {r['read_floor_graph_us']:.2f} us = "
                        f"{100 * r['bytes'] / r['read_floor_graph_us'] * 1e6 / bw:.1f}% "
                        f"({r['read_floor_config']})"
                        if args.read_floor and r["read_floor_config"]
                        else ""
                    ),
                    flush=True,
                )
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
