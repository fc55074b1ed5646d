"""Where a decode step's host time goes: the step's wall time against the replayed graph's device time, and
the host functions under cProfile, per model. bench's step_host_us (per-token time beyond the replayed
step) is the number this explains. A measurement, not a test. Usage:
    python scripts/profile_host.py MODEL.gguf [...] [--steps 200] [--top 15]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.engine import Engine  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--top", type=int, default=15)
    a = ap.parse_args()
    for m in a.models:
        eng = Engine.from_gguf(m, max_ctx=2 * a.steps + 64)
        eng.prefill(list(range(1, 33)))
        for _ in range(8):  # graphs captured, kernels compiled
            eng.step(timed=False)
        walls = []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            eng.step(timed=False)
            walls.append(1e6 * (time.perf_counter() - t0))
        device = eng.backend.replayed_us(eng.graph(1)) if hasattr(eng.backend, "replayed_us") else None
        wall = statistics.median(walls)
        print(f"{eng.backend.device_name} | {Path(m).name} | step wall {wall:.1f} us (median of {a.steps}) | "
              f"replayed step {device or float('nan'):.1f} us | beyond it {wall - (device or 0):.1f} us",
              flush=True)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(a.steps):
            eng.step(timed=False)
        prof.disable()
        out = io.StringIO()
        pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(a.top)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
        print("\n".join(lines[-(a.top + 1):]), flush=True)
        print(f"    (cProfile: per step, divide by {a.steps}; its own overhead inflates the Python share)")
        del eng
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
