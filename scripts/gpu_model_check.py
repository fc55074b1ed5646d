"""Real models on the GPU backend against llama.cpp's recorded runs, plus decode speed (a benchmark + check).

    python scripts/gpu_model_check.py --model smollm2-135m=/tmp/m/smol.gguf --out $OUT/gpu_models.json

For each model: teacher-forced distance of the HIP backend's logits from llama.cpp's exact F32 run and
from llama.cpp's quantized CPU run (data/refs), greedy 32-token generations against the F32 run, and
eager decode tokens/s (median over steps after warm-up) with the per-op time split. Prints a table.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from rocmforge.engine import Engine
from rocmforge.llamacpp import distance, distance_between, load_refs
from rocmforge.profile import top_ops


def check(name: str, path: str, kv_dtype: str, n_decode: int) -> dict:
    eng = Engine.from_gguf(path, backend="hip", max_ctx=1024, kv_dtype=kv_dtype)
    refs = load_refs(name)
    out: dict = {"model": name, "device": eng.backend.device_name, "kv_dtype": kv_dtype, "texts": {}}
    for text in refs.texts:
        toks = refs.tokens(text)
        eng.reset()
        logits = eng.prefill(toks, all_logits=True)
        out["texts"][text] = {
            "vs_f32": distance(logits, toks, refs.run("f32", text)),
            "vs_llamacpp_quant": distance(logits, toks, refs.run("quant", text)),
            "llamacpp_quant_vs_f32": distance_between(refs.run("quant", text), refs.run("f32", text)),
        }
    greedy = {}
    for g in refs.greedy:
        want = refs.arrays[f"greedy_{g}_gen_ids"].tolist()
        eng.reset()
        got = [int(np.argmax(eng.prefill(refs.arrays[f"greedy_{g}_prompt_ids"])))]
        for _ in range(len(want) - 1):
            got.append(eng.step(got[-1], timed=False).token)
        first_diff = next((i for i, (a, b) in enumerate(zip(got, want, strict=True)) if a != b), None)
        greedy[g] = {"equal": got == want, "first_diff": first_diff, "text": eng.tokenizer.decode(got)}
    out["greedy"] = greedy
    # decode speed: untimed steps (a replayed device graph on the HIP backend), then one timed eager step
    eng.reset()
    eng.prefill(refs.tokens(refs.texts[0])[:64])
    for _ in range(5):
        eng.step(timed=False)
    ts = []
    for _ in range(n_decode):
        t0 = time.perf_counter()
        eng.step(timed=False)
        ts.append(time.perf_counter() - t0)
    res = eng.step(timed=True)
    out["decode_ms_median"] = 1e3 * float(np.median(ts))
    out["decode_tps"] = 1.0 / float(np.median(ts))
    out["top_ops"] = top_ops(res.timings, 8).reset_index().to_dict(orient="records")
    out["memory"] = res.memory
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", action="append", required=True, help="NAME=PATH (NAME as in data/refs)")
    ap.add_argument("--kv", default="f32")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default="gpu_models.json")
    a = ap.parse_args()
    results = []
    for spec in a.model:
        name, path = spec.split("=", 1)
        results.append(check(name, path, a.kv, a.steps))
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    for r in results:
        print(f"== {r['model']} on {r['device']} (KV {r['kv_dtype']})")
        for text, d in r["texts"].items():
            f, q, lq = d["vs_f32"], d["vs_llamacpp_quant"], d["llamacpp_quant_vs_f32"]
            print(f"  {text:6s} vs F32: {f['mean_abs_dlogp']:.4f} nats, top-1 {f['top1_agree_pct']:.1f}% | "
                  f"llama.cpp quant vs F32: {lq['mean_abs_dlogp']:.4f} nats, {lq['top1_agree_pct']:.1f}% | "
                  f"vs llama.cpp quant: {q['mean_abs_dlogp']:.4f}")
        for g, d in r["greedy"].items():
            print(f"  greedy {g}: equal={d['equal']} first_diff={d['first_diff']}")
        print(f"  decode (replayed graph): {r['decode_ms_median']:.2f} ms/token = {r['decode_tps']:.1f} t/s")
        for row in r["top_ops"]:
            print(f"    {row['op']:16s} {row['sum']:9.1f} us  x{row['count']}  {100 * row['share']:.1f}%")


if __name__ == "__main__":
    main()
