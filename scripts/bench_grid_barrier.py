"""Measure the latency floor per stage of the two designs of a decode step (issue 19, item 8): N stages as
N kernels of their own replayed in one captured device graph (dev/grid_barrier.hip's stage_kernel: plain
launches, and with programmatic dependent launch where the device has it), against one persistent kernel
whose N stages are separated by device-wide barriers (persistent_stages; at most one block an SM, so that
every block is resident). Stages do no work but a store a block: what is measured is what the design adds
per stage, the floor under a step of ~200 stages.

Prints the GPU, then per block count and design the time per stage in us: the median over --reps of
device-event timings around one replay of the graph (one launch of the persistent kernel), divided by N.
A benchmark, not a test: it asserts nothing. Usage:
    python scripts/bench_grid_barrier.py [--stages 200] [--blocks 1,16,SM] [--reps 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rocmforge.backends.hip.backend import HipBackend  # noqa: E402
from rocmforge.backends.hip.launch_geometry import KernelLaunch  # noqa: E402

DEV_FILE = str(ROOT / "dev" / "grid_barrier.hip")


def event_us(be: HipBackend, fn, reps: int) -> float:
    """Median over reps of the device time of fn() (after one warm-up), in us."""
    cp = be.cp
    with be.stream:
        fn()
        times = []
        for _ in range(reps):
            e0, e1 = cp.cuda.Event(), cp.cuda.Event()
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            times.append(cp.cuda.get_elapsed_time(e0, e1) * 1e3)
    return statistics.median(times)


def kernels_us(be: HipBackend, out, blocks: int, stages: int, pdl: bool, reps: int) -> float:
    """A stage a kernel: `stages` launches of stage_kernel captured as one device graph, replayed."""
    ctx = be.ctx
    launch = KernelLaunch(DEV_FILE, "stage_kernel", {}, (blocks,), (128,), pdl=pdl)
    f = ctx.function(launch)
    with be.stream:
        ctx.launch(f, launch, (out.data.ptr, np.uint32(0)))  # compiled and loaded before the capture
        be.stream.begin_capture()
        try:
            for s in range(stages):
                ctx.launch(f, launch, (out.data.ptr, np.uint32(s)))
        finally:
            graph = be.stream.end_capture()
    return event_us(be, lambda: graph.launch(be.stream), reps) / stages


def persistent_us(be: HipBackend, out, sync, blocks: int, stages: int, reps: int) -> float:
    """The stages inside one kernel, a device-wide barrier after each."""
    launch = KernelLaunch(DEV_FILE, "persistent_stages", {}, (blocks,), (128,))
    f = be.ctx.function(launch)
    sync.fill(0)
    return event_us(be, lambda: be.ctx.launch(f, launch, (out.data.ptr, sync.data.ptr, np.uint32(stages))),
                    reps) / stages


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stages", type=int, default=200, help="stages a step (kernels, or barriers)")
    ap.add_argument("--blocks", default="1,16,SM", help="block counts, comma-separated (SM: one an SM)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--json", metavar="OUT", help="write the rows as JSON")
    a = ap.parse_args()
    if a.stages < 1 or a.reps < 1:
        ap.error("--stages and --reps must be at least 1")
    try:
        wanted = [None if b.strip().upper() == "SM" else int(b) for b in a.blocks.split(",")]
    except ValueError:
        ap.error(f"--blocks {a.blocks!r}: block counts (integers or SM), comma-separated")

    be = HipBackend()
    cp, n_sm = be.cp, be.ctx.device.n_sm
    print(f"{be.device_name} ({be.arch}), {n_sm} SMs; programmatic launch: "
          f"{'yes' if be.ctx.pdl else 'no (' + str(be.pdl_unavailable) + ')'}")
    out = cp.zeros(max(n_sm, 1024), dtype=np.uint32)
    sync = cp.zeros(2, dtype=np.uint32)
    rows = []
    print(f"{'blocks':>6s} | {'kernels us':>10s} {'kernels+pdl us':>14s} | {'persistent us':>13s}  (a stage)")
    for b in wanted:
        blocks = n_sm if b is None else b
        if not 1 <= blocks <= n_sm:
            print(f"{blocks:6d} | skipped: the persistent kernel wants 1 to {n_sm} blocks (one an SM)")
            continue
        row = {"blocks": blocks, "stages": a.stages,
               "kernels_us": kernels_us(be, out, blocks, a.stages, False, a.reps),
               "kernels_pdl_us": kernels_us(be, out, blocks, a.stages, True, a.reps) if be.ctx.pdl else None,
               "persistent_us": persistent_us(be, out, sync, blocks, a.stages, a.reps)}
        rows.append(row)
        pdl = f"{row['kernels_pdl_us']:14.2f}" if row["kernels_pdl_us"] is not None else f"{'-':>14s}"
        print(f"{blocks:6d} | {row['kernels_us']:10.2f} {pdl} | {row['persistent_us']:13.2f}", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"gpu": be.device_name, "arch": be.arch, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
