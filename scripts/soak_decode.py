"""Soak: decode many tokens on one engine and check that device memory stays flat and the state stays sound.

After a warm-up, every `--every` steps it reads the CuPy pool's used/total bytes and the device's free
memory (they must not move), and compares the step's logits with a fresh engine that prefills the same
history (same next token; normalized squared error printed). Exits non-zero on a moved counter or a
different token. A measurement, not a test. Usage:
    python scripts/soak_decode.py MODEL.gguf [--steps 10000] [--every 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.engine import Engine  # noqa: E402


def counters() -> dict[str, int]:
    """The pool's and the device's counters, cached blocks released first (a fresh engine's included)."""
    import gc

    import cupy

    gc.collect()
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    return {"pool_used": int(pool.used_bytes()), "pool_total": int(pool.total_bytes()),
            "device_free": int(cupy.cuda.runtime.memGetInfo()[0])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--steps", type=int, default=10000)
    ap.add_argument("--every", type=int, default=2000)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    eng = Engine.from_gguf(a.model, backend="hip", max_ctx=a.steps + 16)
    history = [1, 2, 3, 4]
    eng.prefill(history)
    tok = eng.next_token
    for _ in range(8):  # warm-up: kernels compiled, graphs captured, pool settled
        history.append(tok)
        tok = eng.step(tok, timed=False).token
    base, rows, bad = counters(), [], 0
    t0 = time.perf_counter()
    for i in range(1, a.steps - 8 + 1):
        history.append(tok)
        res = eng.step(tok, timed=False)
        tok = res.token
        if i % a.every == 0 or i == a.steps - 8:
            logits = res.logits  # read now: valid until an engine runs again
            now = counters()
            fresh = Engine.from_gguf(a.model, backend="hip", max_ctx=len(history) + 1)
            ref = fresh.prefill(history)
            nmse = float(np.mean((logits - ref) ** 2) / np.mean(ref ** 2))
            same = int(np.argmax(ref)) == tok
            del fresh
            row = {"step": i + 8, "tokens": len(history), **now, "same_token": same, "nmse": nmse,
                   "s": round(time.perf_counter() - t0, 1)}
            rows.append(row)
            moved = {k: now[k] - base[k] for k in ("pool_used", "pool_total") if now[k] != base[k]}
            bad += bool(moved) or not same
            print(json.dumps({**row, "moved": moved}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"model": a.model, "device": eng.backend.device_name,
                                            "rows": rows}, indent=1))
    print(f"{eng.backend.device_name}: {a.steps} steps, {'FAILED' if bad else 'flat and sound'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
