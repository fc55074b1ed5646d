"""Does CUPTI tracing of a replayed device graph work here? The pieces of timing="trace" on their own.

Prints where libcupti came from (or why trace mode is unavailable), then captures a CUDA graph of a few
kernels of different lengths on a CuPy stream, counting the capture's nodes per launch, instantiates it
BEFORE tracing is turned on (as HipBackend does), and traces one replay with cupti_trace.ActivityTracer:
the records delivered, those of the replay (timing.replay_records) and their names and durations. Then
times the untimed replay with events beside the traced span. Exit status 0 when the records match the
graph's nodes. Usage: python scripts/cupti_smoke.py [--kernels 6]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.backends.hip import cupti_trace, timing  # noqa: E402

SRC = r"""
extern "C" __global__ void spin(float* x, int n) {
    float v = x[threadIdx.x];
    for (int i = 0; i < n; i++) v = v * 0.999f + 1e-3f;
    x[threadIdx.x] = v;
}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kernels", type=int, default=6)
    a = ap.parse_args()
    why = cupti_trace.trace_unavailable(is_hip=False)
    print(f"trace mode: {'available' if why is None else 'unavailable: ' + why}", flush=True)
    if why is not None:
        return 1
    print(f"libcupti: {cupti_trace._preload_libcupti()}", flush=True)
    import cupy

    f = cupy.RawKernel(SRC, "spin")
    x = cupy.zeros(128, dtype=cupy.float32)
    stream = cupy.cuda.Stream(non_blocking=False)
    lengths = [1000 * (i % 3 + 1) for i in range(a.kernels)]
    with stream:
        for n in lengths:  # compile and load outside the capture
            f((1,), (128,), (x, cupy.int32(n)))
        stream.synchronize()
        counter = cupti_trace.NodeCounter(stream)
        stream.begin_capture()
        for n in lengths:
            f((1,), (128,), (x, cupy.int32(n)))
            counter.step()
        graph = stream.end_capture()
        graph.launch(stream)
    stream.synchronize()
    print(f"nodes per launch: {counter.counts} {counter.failed}", flush=True)
    wall = timing.replay_us(cupy, stream, graph)

    def replay() -> None:
        with stream:
            graph.launch(stream)
        stream.synchronize()

    tracer = cupti_trace.activity_tracer()
    got, t0, t1 = tracer.trace(replay, a.kernels, warmup=replay)
    print(f"records delivered: {len(got)} (window {t0}..{t1}, {(t1 - t0) / 1e3:.1f} us)", flush=True)
    try:
        recs = timing.replay_records(got, t0, t1, a.kernels)
    except timing.TraceError as e:
        print(f"NO MATCH: {e}")
        for r in got:
            print(f"    {r}")
        return 1
    for r, n in zip(recs, lengths, strict=True):
        print(f"    {r.name:<8} spin {n:>5}: {(r.end - r.start) / 1e3:8.2f} us  corr {r.correlation_id} "
              f"graph {r.graph_id}", flush=True)
    print(f"traced span {timing.span_us(recs):.2f} us, untimed replay (events) {wall:.2f} us", flush=True)
    again = tracer.trace(replay, a.kernels)  # a second trace: callbacks registered once
    print(f"second trace: {len(timing.replay_records(*again, a.kernels))} records", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
