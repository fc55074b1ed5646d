"""Benchmark FLASH_ATTN_EXT (kernels/attention.hip) at the models' decode and prompt shapes.

For each head layout (H query heads, Hkv KV heads, head dim D), cache size C (the engine's max_ctx) and
position (decode: one token at that depth; prompt: T tokens from 0) it prints the time per launch in a
captured device graph of back-to-back launches (each starts as the one before it ends, programmatically
where the GPU can: as in a decode step), the median over replays (timing.replay_us); the KV bytes it must
read (rows up to the position, f16 cache) as GB/s, or for prompts the causal FLOPs as TFLOP/s; and the
error of one launch's output against numpy_ref.FLASH_ATTN_EXT (nmse; the output is NaN-poisoned first).
q is ROPE'd inside the kernel (NEOX over all of D), as the fused decode graph runs it.

This is a benchmark, not a test: it asserts nothing. Usage:
    python scripts/bench_attention.py [--layouts qwen2.5,smollm2,llama-7b] [--ctx 543,4096]
                                      [--depth 128,512,2048] [--prompt 512,2048] [--json out.json]
                                      [--tunables RF_DEC_WARPS=8,RF_DEC_SPAN=64]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.backends import numpy_ref as R  # noqa: E402
from rocmforge.backends.hip.backend import HipBackend  # noqa: E402
from rocmforge.backends.hip.launch_attention import FLASH_ATTN_EXT  # noqa: E402
from rocmforge.backends.hip.tensor import DevTensor  # noqa: E402
from rocmforge.backends.hip.timing import replay_us  # noqa: E402
from rocmforge.cli import tunables  # noqa: E402

LAYOUTS = {"qwen2.5": (14, 2, 64), "smollm2": (9, 3, 64), "llama-7b": (32, 32, 128)}  # H, Hkv, D
ROPE = 1e6, 1.0  # base, freq_scale


def time_graph(cp, launch, n: int, reps: int = 10) -> float:
    """Median time per launch (us) of a captured graph of n launches, over reps replays."""
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        stream.begin_capture()
        for _ in range(n):
            launch()
        graph = stream.end_capture()
    return statistics.median(replay_us(cp, stream, graph) for _ in range(reps)) / n


def bench(be: HipBackend, layout: str, C: int, T: int, p0: int, rng: np.random.Generator) -> dict:
    import cupy as cp

    H, Hkv, D = LAYOUTS[layout]
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((C, Hkv, D)).astype(np.float16)
    v = rng.standard_normal((C, Hkv, D)).astype(np.float16)
    pos = np.arange(p0, p0 + T, dtype=np.int32)
    dq, dk, dv, dp = (cp.asarray(a) for a in (q, k, v, pos))
    dout = cp.full((T, H, D), np.nan, dtype=np.float32)
    t = {n: DevTensor(a, 0, a.shape, dt) for n, a, dt in
         (("q", dq, "f32"), ("k", dk, "f16"), ("v", dv, "f16"), ("pos", dp, "i32"), ("out", dout, "f32"))}
    rope = (D, True, *ROPE)
    be.ctx.begin_node(("bench_attention", layout, C, T, p0))  # fixed scratch, as a prepared node's

    def launch() -> None:
        FLASH_ATTN_EXT(be.ctx, t["out"], t["q"], t["k"], t["v"], t["pos"], scale=D**-0.5, rope_q=rope)

    launch()
    cp.cuda.Device().synchronize()
    ref = R.FLASH_ATTN_EXT(q, k.astype(np.float32), v.astype(np.float32), pos, scale=D**-0.5, rope_q=rope)
    got = cp.asnumpy(dout)
    nmse = float(np.sum((got - ref) ** 2) / max(float(np.sum(ref**2)), 1e-30))
    us = time_graph(cp, launch, 20 if T > 64 else 100)
    rows = p0 + T
    kv_bytes = 2 * rows * Hkv * D * 2
    flops = 4 * H * D * sum(p + 1 for p in range(p0, p0 + T))  # QK^T and PV over the visible rows
    return {"layout": layout, "H": H, "Hkv": Hkv, "D": D, "C": C, "T": T, "pos": p0 + T - 1, "us": us,
            "gbps": kv_bytes / (us * 1e-6) / 1e9, "tflops": flops / (us * 1e-6) / 1e12, "nmse": nmse}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layouts", default="qwen2.5,smollm2,llama-7b")
    ap.add_argument("--ctx", default="543,4096", help="cache sizes (max_ctx) for decode")
    ap.add_argument("--depth", default="128,512,2048", help="decode positions (those below each --ctx)")
    ap.add_argument("--prompt", default="512,2048", help="prompt lengths (cache = the prompt)")
    ap.add_argument("--json", default="")
    ap.add_argument("--tunables", type=tunables, default=None, metavar="NAME=INT,...",
                    help="e.g. RF_DEC_WARPS=8,RF_DEC_SPAN=64 (the decode kernel's block, rows a split takes)")
    a = ap.parse_args()
    import cupy as cp

    be = HipBackend(tunables=a.tunables)
    name = cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
    rng = np.random.default_rng(0)
    rows = []
    for layout in a.layouts.split(","):
        for C in (int(c) for c in a.ctx.split(",") if c):
            for d in (int(x) for x in a.depth.split(",") if x):
                if d < C:
                    rows.append(bench(be, layout, C, 1, d, rng))
        for T in (int(x) for x in a.prompt.split(",") if x):
            rows.append(bench(be, layout, T, T, 0, rng))
    print(f"{name}: FLASH_ATTN_EXT, f16 KV cache, per launch in a device graph"
          + (f" (tunables {a.tunables})" if a.tunables else ""))
    print(f"{'layout':9} {'H/Hkv/D':>10} {'C':>6} {'T':>5} {'pos':>5} {'us':>9} "
          f"{'KV GB/s':>8} {'TFLOP/s':>8} {'nmse':>8}")
    for r in rows:
        print(f"{r['layout']:9} {r['H']:>3}/{r['Hkv']:>2}/{r['D']:<3} {r['C']:>6} {r['T']:>5} {r['pos']:>5} "
              f"{r['us']:9.2f} {r['gbps']:8.0f} {r['tflops']:8.2f} {r['nmse']:8.1e}")
    if a.json:
        Path(a.json).write_text(json.dumps({"device": name, "tunables": a.tunables or {}, "rows": rows},
                                           indent=1))


if __name__ == "__main__":
    main()
