"""How fast can a mat-vec's weight be read in the access pattern of a row-group kernel? (a study, not a test)

The int8 decode mat-vecs (mul_mat_vec_xb, _xr) stay near 50% of the copy bandwidth for the Q4_0 11008x4096
weight (25.4 MB) even with their arithmetic removed (RF_MMVB_ABLATE, RF_MMVR_ABLATE), while a plain
grid-stride read of the same bytes reaches ~79% on an H200. This script reads that weight's bytes (xor-
reduced, nothing else) in the patterns those kernels use, to find what costs the bandwidth:

- `floor U`: the plain read: thread i of the grid reads 16-byte chunks i, i + stride, ... (U in flight).
- `rowseg D`: mul_mat_vec_xr's pattern: each warp owns groups of 8 rows (row groups dealt round all warps
  of the grid) and reads a group in 4 steps, each step 576 contiguous bytes of every row (9 16-byte loads
  a lane); D = 1: one step in flight (load, then use), D = 2: the next step's loads issued before this
  step's use.
- `lanegrp D`: the same steps and warps, but lane 4 r + h reads group h (144 contiguous bytes, 9 loads) of
  row r: a lane holds whole Q4_0 blocks and needs no staging, but a load instruction reads 16 of every 32
  bytes of 32 sectors.
- `contig D`: the same steps and warps, but each step reads 4,608 contiguous bytes of the group.

Each kernel runs with 4 warps a block and 2-16 blocks per SM, in a captured device graph of launches over
rotating copies (as bench_matvec.py times kernels). Usage: python scripts/bench_read_patterns.py [--json F]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_matvec import EVICT_BYTES, Timer, copy_bandwidth  # noqa: E402

SRC = r"""
// LOADS 16-byte loads per lane and step; a step covers RS rows x SEGC chunks, a load instruction reading
// 32 consecutive chunks (PAT 0), LOADS * 32 contiguous chunks (PAT 1), or RS rows x SEGC chunks with each
// lane reading 9 consecutive chunks (a group of 8 Q4_0 blocks) of its own, 144 bytes apart in one
// instruction (PAT 2); D steps in flight (1 or 2)
template <int PAT, int D>
__device__ void steps_read(const uint4* __restrict__ w, int row_chunks, int groups, float* sink) {
    constexpr int LOADS = 9, RS = 8, SEGC = 36;
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32;
    const int steps = row_chunks / SEGC;
    const long long group_chunks = (long long)RS * row_chunks;
    int off[LOADS];
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
        const int c = j * 32 + lane;
        off[j] = PAT == 0 ? (c / SEGC) * row_chunks + c % SEGC
                 : PAT == 2 ? (lane / 4) * row_chunks + (lane % 4) * LOADS + j
                            : c;
    }
    auto base = [&](int g, int t) {
        return g * group_chunks + (long long)t * (PAT != 1 ? SEGC : LOADS * 32);
    };
    unsigned s = 0;
    const int gstride = gridDim.x * warps;
    int g = warp * gridDim.x + blockIdx.x, t = 0;
    uint4 v[LOADS];
    if (g < groups) {
#pragma unroll
        for (int j = 0; j < LOADS; ++j) v[j] = w[base(g, 0) + off[j]];
    }
    while (g < groups) {
        const int gn = t + 1 < steps ? g : g + gstride, tn = t + 1 < steps ? t + 1 : 0;
        if (D == 2) {
            uint4 u[LOADS];
            if (gn < groups) {
#pragma unroll
                for (int j = 0; j < LOADS; ++j) u[j] = w[base(gn, tn) + off[j]];
            }
#pragma unroll
            for (int j = 0; j < LOADS; ++j) s ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
#pragma unroll
            for (int j = 0; j < LOADS; ++j) v[j] = u[j];
        } else {
#pragma unroll
            for (int j = 0; j < LOADS; ++j) s ^= v[j].x ^ v[j].y ^ v[j].z ^ v[j].w;
            if (gn < groups) {
#pragma unroll
                for (int j = 0; j < LOADS; ++j) v[j] = w[base(gn, tn) + off[j]];
            }
        }
        g = gn, t = tn;
    }
    if (s == 0x9E3779B9u) sink[0] = 1.0f;
}
#define READ_ENTRY(name, PAT, D)                                                     \
    extern "C" __global__ void name(const uint4* w, int rc, int groups, float* sink) { \
        steps_read<PAT, D>(w, rc, groups, sink);                                        \
    }
READ_ENTRY(rowseg_1, 0, 1)
READ_ENTRY(rowseg_2, 0, 2)
READ_ENTRY(lanegrp_1, 2, 1)
READ_ENTRY(lanegrp_2, 2, 2)
READ_ENTRY(contig_1, 1, 1)
READ_ENTRY(contig_2, 1, 2)
"""
N, ROW_BYTES = 11008, 4096 // 32 * 18  # the Q4_0 goal weight: 11008 rows of 2304 bytes
BPS = (2, 4, 8, 16)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", default="")
    ap.add_argument("--only", default="", help="only the patterns whose name starts so (and the floors)")
    args = ap.parse_args()
    import cupy as cp

    dev = cp.cuda.Device()
    name = cp.cuda.runtime.getDeviceProperties(dev.id)["name"].decode()
    n_sm = dev.attributes["MultiProcessorCount"]
    l2 = dev.attributes["L2CacheSize"]
    timer = Timer(cp, EVICT_BYTES)
    bw = max(copy_bandwidth(cp, timer, 1 << 30))
    nbytes = N * ROW_BYTES
    copies = -(-2 * l2 // nbytes)
    bufs = [cp.random.randint(0, 256, nbytes).astype(np.uint8) for _ in range(copies)]
    mod = cp.RawModule(code=SRC, options=("-std=c++17",))
    rc, groups = ROW_BYTES // 16, N // 8
    print(f"GPU: {name}, {n_sm} SMs; copy {bw / 1e9:.0f} GB/s; {nbytes / 1e6:.2f} MB x {copies} copies")
    rows = []

    def run(label: str, launch) -> None:
        launch(0)
        us = statistics.median(timer.time_graph(launch, 4 * copies))
        pct = 100 * nbytes / (us * 1e-6) / bw
        rows.append({"pattern": label, "us": us, "pct_copy": pct})
        print(f"  {label:28} {us:7.2f} us  {pct:5.1f}% of copy", flush=True)

    for u in (1, 4, 8):
        k = timer.read_k[u]
        for bps, th in ((8, 256), (4, 256), (2, 256)):
            run(
                f"floor U={u} {bps}x{th}",
                lambda i, k=k, bps=bps, th=th: k(
                    (n_sm * bps,), (th,), (bufs[i % copies], np.int64(nbytes // 16), timer.sink)
                ),
            )
    kernels = ("rowseg_1", "rowseg_2", "lanegrp_1", "lanegrp_2", "contig_1", "contig_2")
    for kname in [k for k in kernels if not args.only or k.startswith(args.only)]:
        k = mod.get_function(kname)
        for bps in BPS:
            blocks = min(n_sm * bps, -(-groups // 4))
            run(
                f"{kname} 4 warps x {bps}/SM",
                lambda i, k=k, blocks=blocks: k(
                    (blocks,), (128,), (bufs[i % copies], np.int32(rc), np.int32(groups), timer.sink)
                ),
            )
    if args.json:
        Path(args.json).write_text(json.dumps({"gpu": name, "copy_gbps": bw / 1e9, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
