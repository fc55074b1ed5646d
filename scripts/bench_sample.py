"""SAMPLE's kernel time beside ARGMAX's over one row of logits, and (with a model) decode tokens/s greedy,
sampled on the device and sampled on the host.

Kernel rows: a replayed graph of one SAMPLE (or ARGMAX) node over logits f32 [1, V], timed per op
(HipBackend's timing mode), medians over --reps runs; logits ~ N(0, 3^2) (an LLM's spread) and an
increasing row (every element beats the bar: the most buffer cuts), at temperature 0.7 with top_k 1, 40
and 256 and top_p 0.95. Tunables (HipBackend(tunables=...)) as KEY=VALUE, e.g. RF_SAMPLE_BLOCK=1024
RF_SAMPLE_UNROLL=2. With --model: generate's decode tokens/s, greedy (ARGMAX, logits downloaded), sampled
on the device (SAMPLE, one token id back) and on the host (the logits downloaded, sampling.sample_logits).
This is a measurement, not a test: it asserts nothing. Usage:
    python scripts/bench_sample.py [--vocab 151936] [--reps 50] [--model MODEL.gguf] [KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.backends.hip import HipBackend  # noqa: E402
from rocmforge.backends.sampling import sample_params  # noqa: E402
from rocmforge.engine import Engine  # noqa: E402
from rocmforge.ir.graph import Graph  # noqa: E402
from rocmforge.ir.ops import SAMPLE_PARAMS  # noqa: E402


def kernel_us(be: HipBackend, V: int, op: str, x: np.ndarray, params: np.ndarray, reps: int) -> float:
    g = Graph(f"{op.lower()}{V}")
    a = g.input("a", (1, V))
    if op == "SAMPLE":
        g.output(g.sample(a, g.input("p", (SAMPLE_PARAMS,), "i32"), "out"))
    else:
        g.output(g.argmax(a, "out"))
    inputs = {"a": x[None], "p": params} if op == "SAMPLE" else {"a": x[None]}
    be.prepare(g)
    for _ in range(3):
        be.run(g, inputs)
    times = []
    for _ in range(reps):
        _, tm = be.run(g, inputs, timed=True)
        times.append(sum(t.us for t in tm if t.op == op))
    return statistics.median(times)


def decode_tps(path: str, n: int, **kw) -> tuple[float, str]:
    eng = Engine.from_gguf(path, backend="hip", max_ctx=n + 64)
    for _ in range(2):  # the second run: graphs captured
        eng.reset()
        for _ in eng.generate("Once upon a time", max_new_tokens=n, **kw):
            pass
    return eng.last_stats.decode_tps, eng.last_stats.sampling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--model", default=None)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("tunables", nargs="*", metavar="KEY=VALUE")
    args = ap.parse_args()
    tunables = {k: int(v) for k, v in (t.split("=") for t in args.tunables)}
    be = HipBackend(tunables=tunables)
    print(f"{be.device_name}, timing {be.timing}, tunables {tunables or 'none'}")
    rng = np.random.default_rng(0)
    rows = {"normal": (rng.standard_normal(args.vocab) * 3).astype(np.float32)}
    rows["increasing"] = np.sort(rows["normal"])
    for name, x in rows.items():
        us = kernel_us(be, args.vocab, "ARGMAX", x, None, args.reps)
        print(f"V={args.vocab} {name}: ARGMAX {us:.1f} us")
        for top_k in (1, 40, 256):
            p = sample_params(1, 2, 0.7, top_k, 0.95)
            us = kernel_us(be, args.vocab, "SAMPLE", x, p, args.reps)
            print(f"  SAMPLE T=0.7 top_k={top_k} top_p=0.95: {us:.1f} us")
    if args.model:
        drawn = dict(temperature=0.7, top_k=40, top_p=0.95, seed=1)
        for label, kw in [("greedy", {}), ("device", drawn), ("host", {**drawn, "device_sampling": False})]:
            tps, how = decode_tps(args.model, args.tokens, **kw)
            print(f"{Path(args.model).name} decode {label:6s}: {tps:8.1f} t/s ({how})")


if __name__ == "__main__":
    main()
