"""Per-op timings of a decode step (and a prompt) against the replayed step's wall time, per model.

For each GGUF file: prefill a prompt, run untimed (replayed) steps to warm up, then timed steps in each
mode asked for (profile.TIMING_MODES): trace (the untimed replayed graph, its kernels timestamped by
CUPTI; needs cupti-python), graph (a replayed device graph with an event node after each kernel) and eager
(events around each Python launch). Prints, per model and mode, the median per-op sum, the median replayed
step and their ratio, the largest mat-vecs' median times by shape (in trace mode with their kernels' own
time beside: compare with scripts/bench_matvec.py), the step's time by op type (what to work on), and the
timed prompt's sum against its wall, with its time by op type. A mode
that cannot be used here is skipped with the reason; one that fell back (trace to graph) says so. This is
a measurement, not a test: it asserts nothing. Usage:
    python scripts/profile_step.py MODEL.gguf [...] [--steps 9] [--prompt 64] [--int8] [--modes trace,graph]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rocmforge.backends.hip import HipBackend  # noqa: E402
from rocmforge.engine import Engine  # noqa: E402

MAT_OPS = ("MUL_MAT", "MUL_MAT_ADD", "MUL_MAT_SWIGLU")  # the mat-vecs (with an addend; with SwiGLU)


def profile(path: str, steps: int, prompt: int, mode: str, int8: str) -> dict:
    be = HipBackend(int8_activations={"on": True, "off": False}.get(int8, "auto"), timing=mode)
    eng = Engine.from_gguf(path, backend=be, max_ctx=prompt + 3 * steps + 16)
    ids = [(7 * i + 3) % eng.config.n_vocab for i in range(prompt)]
    eng.prefill(ids)
    for _ in range(steps):
        eng.step(timed=False)
    sums, walls, mm, mk, got = [], [], defaultdict(list), defaultdict(list), set()
    by_op: dict[str, list[float]] = defaultdict(list)  # op -> its nodes' time summed, per step
    by_op_kernel: dict[str, list[float]] = defaultdict(list)  # the same of their kernels' own time (trace)
    for _ in range(steps):
        tm = eng.step(timed=True).timings
        got.add(tm.mode)
        sums.append(tm.sum_us)
        walls.append(tm.wall_us)
        step_ops: dict[str, float] = defaultdict(float)
        step_kern: dict[str, float] = defaultdict(float)
        for t in tm:
            step_ops[t.op] += t.us
            if t.kernel_us is not None:
                step_kern[t.op] += t.kernel_us
        for op, us in step_ops.items():
            by_op[op].append(us)
        for op, us in step_kern.items():
            by_op_kernel[op].append(us)
        for t in tm:
            if t.op in MAT_OPS:
                mm[t.name].append(t.us)
                if t.kernel_us is not None:
                    mk[t.name].append(t.kernel_us)
    eng.reset()
    eng.prefill(ids, timed=False)
    eng.reset()
    eng.prefill(ids, timed=True)
    pt = eng.prefill_timings
    prompt_ops: dict[str, float] = defaultdict(float)
    for t in pt:
        prompt_ops[t.op] += t.us
    shapes = {}
    g = eng.graph(1)
    for n in g.nodes:
        if n.name in mm and n.op.value in MAT_OPS:
            w = n.src[0]
            shapes[n.name] = (tuple(w.shape), w.dtype.upper() if w.kind == "weight"
                              else "act")
    by_shape, kern_by_shape = defaultdict(list), defaultdict(list)
    for name, us in mm.items():
        if name in shapes:
            by_shape[shapes[name]].append(statistics.median(us))
            if mk.get(name):
                kern_by_shape[shapes[name]].append(statistics.median(mk[name]))
    key = "{1} {0[0]}x{0[1]}".format  # a mat-vec's weight type and shape
    return {
        "model": Path(path).name, "mode": mode, "measured_in": sorted(got | {pt.mode}),
        "timing_failures": be.timing_failures(), "int8": int8, "device": be.device_name,
        "steps": steps, "sum_us": statistics.median(sums), "wall_us": statistics.median(walls),
        "sum_over_wall": statistics.median(s / w for s, w in zip(sums, walls, strict=True)),
        "by_op_us": {op: statistics.median(v) for op, v in by_op.items()},
        "by_op_kernel_us": {op: statistics.median(v) for op, v in by_op_kernel.items()},
        "matvec_us": {key(*k): statistics.median(v) for k, v in by_shape.items()},
        "matvec_kernel_us": {key(*k): statistics.median(v) for k, v in kern_by_shape.items()},
        "prefill_tokens": prompt, "prefill_sum_us": pt.sum_us, "prefill_wall_us": pt.wall_us,
        "prefill_by_op_us": dict(prompt_ops),
    }


def llama_side_by_side(model: str, r: dict, depth: int, llama_dir: str | None) -> dict:
    """llama.cpp's kernels of one decode token at this depth (ncu) beside ours, by part and by op; our
    kernels' own time where trace mode gave it (as ncu's are), else the per-op time."""
    import pandas as pd

    from rocmforge import llamacpp

    try:
        kp = llamacpp.run_kernel_profile(model, depth=depth, llama_dir=llama_dir)
    except llamacpp.LlamaCppError as e:
        print(f"    llama.cpp under ncu: skipped ({e})", flush=True)
        return {}
    col = "by_op_kernel_us" if r.get("by_op_kernel_us") else "by_op_us"
    ours = pd.DataFrame({"op": list(r[col]), "us": list(r[col].values())})
    print(f"    llama.cpp, one decode token at depth {depth} under ncu: {len(kp.frame)} kernels, "
          f"{kp.total_us:.1f} us of kernels (ours: {col})", flush=True)
    out = {"kernels": len(kp.frame), "total_us": kp.total_us, "by_op": kp.by_op()["us"].to_dict()}
    for by in ("part", "op"):
        t = llamacpp.compare_ops(ours, kp.frame, by=by)
        print(t.round(1).to_string(), flush=True)
        out[f"compare_by_{by}"] = t.round(2).to_dict(orient="index")
    other = kp.frame[kp.frame["op"] == "other"]["kernel"].map(llamacpp.kernel_base).unique()
    if len(other):
        print(f"    llama.cpp kernels of no known op: {', '.join(other[:12])}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--steps", type=int, default=9)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--int8", default="auto", choices=("auto", "on", "off"),
                    help="HipBackend(int8_activations=...): True (on), False (off) or auto (the default)")
    ap.add_argument("--modes", default="trace,graph,eager", help="comma-separated: trace, graph, eager")
    ap.add_argument("--llama-ncu", action="store_true",
                    help="also time llama.cpp's kernels of a decode token at the same depth under ncu "
                         "(llama-bench from --llama-dir or $ROCMFORGE_LLAMA_DIR or PATH) and compare by op")
    ap.add_argument("--llama-dir", default=None)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    recs = []
    for m in a.models:
        for mode in a.modes.split(","):
            try:
                r = profile(m, a.steps, a.prompt, mode, a.int8)
            except RuntimeError as e:  # HipBackend(timing=mode) where the mode cannot be used
                print(f"{Path(m).name} | {mode}: skipped ({e})", flush=True)
                continue
            recs.append(r)
            if r["measured_in"] != [mode]:
                print(f"    {mode} timing fell back: {r['measured_in']}, {r['timing_failures']}", flush=True)
            int8 = "" if a.int8 == "auto" else f" int8 {a.int8}"
            print(f"{r['device']} | {r['model']} | {mode}{int8} | per-op sum "
                  f"{r['sum_us']:.1f} us | replayed step {r['wall_us']:.1f} us | "
                  f"ratio {r['sum_over_wall']:.3f}"
                  f" | prompt {a.prompt}: sum {r['prefill_sum_us']:.1f} wall {r['prefill_wall_us']:.1f}",
                  flush=True)
            ops = sorted(r["by_op_us"].items(), key=lambda kv: -kv[1])
            print("    by op (us): " + ", ".join(f"{op} {us:.0f}" for op, us in ops if us >= 0.5), flush=True)
            ops = sorted(r["prefill_by_op_us"].items(), key=lambda kv: -kv[1])
            text = ", ".join(f"{op} {us:.0f}" for op, us in ops if us >= 0.5)
            print(f"    prompt {a.prompt} by op (us): {text}", flush=True)
            for k, v in sorted(r["matvec_us"].items(), key=lambda kv: -kv[1])[:6]:
                kern = r["matvec_kernel_us"].get(k)
                print(f"    MUL_MAT {k}: {v:.2f} us" + (f" (its kernel {kern:.2f} us)" if kern else ""),
                      flush=True)
            if a.llama_ncu and mode == a.modes.split(",")[0]:
                r["llama_cpp"] = llama_side_by_side(m, r, a.prompt, a.llama_dir)
    if a.json:
        Path(a.json).write_text(json.dumps(recs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
