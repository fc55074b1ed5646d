"""Real models on the GPU backend against llama.cpp's recorded runs, plus decode speed (a benchmark + check).

    python scripts/gpu_model_check.py --model smollm2-135m=/tmp/m/smol.gguf --out $OUT/gpu_models.json

For each model: teacher-forced distance of the HIP backend's logits from llama.cpp's exact F32 run and
from llama.cpp's quantized CPU run (rocmforge/data/refs), through prefill (the mat-mat kernels) and through
decode (one token a step: the mat-vec kernels, and with --int8-activations the int8 ones), greedy 32-token
generations against the F32 run, and eager decode tokens/s (median over steps after warm-up) with the
per-op time split. Prints a table. --backend numpy runs the same checks on the reference engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from rocmforge.engine import Engine
from rocmforge.llamacpp import distance, distance_between, load_refs
from rocmforge.profile import top_ops


def first(run: dict[str, np.ndarray], n_tokens: int, n: int) -> dict[str, np.ndarray]:
    """A recorded run cut to its first n positions (per-token arrays, and per-next-token ones)."""
    return {
        k: v[:n] if len(v) == n_tokens else v[: n - 1] if len(v) == n_tokens - 1 else v
        for k, v in run.items()
    }


def decode_logits(eng: Engine, toks: np.ndarray) -> np.ndarray:
    """Teacher-forced logits [n, n_vocab] through the decode graph: one token a step from position 0."""
    eng.reset()
    return np.stack([eng.step(int(t), timed=False).logits for t in toks])


# --int8-kernel: the int8 mat-vecs tried, in order, before the f32 one (names in kernel_choice.py and
# dev/matvec_variants.py): x8 (dev/'s mul_mat_vec_x), xq (HipBackend's table: mul_mat_vec_xr, then
# mul_mat_vec_xq), xb (the same with dev/'s mul_mat_vec_xb between them; the script's default)
INT8_KERNELS = {
    "x8": ("mul_mat_vec_x",),
    "xq": ("mul_mat_vec_xr", "mul_mat_vec_xq"),
    "xb": ("mul_mat_vec_xr", "mul_mat_vec_xb", "mul_mat_vec_xq"),
}


def make_engine(path: str, backend: str, kv_dtype: str, int8: bool, kernel: str = "xb") -> Engine:
    if backend == "numpy":
        return Engine.from_gguf(path, backend="numpy", max_ctx=1024, kv_dtype=kv_dtype)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # dev/, beside the package
    from dev import matvec_variants as V
    from rocmforge.backends.hip import HipBackend
    from rocmforge.backends.hip import kernel_choice as C

    be = HipBackend(int8_activations=int8)
    rows = {k.name: k for k in (C.MUL_MAT_VEC_XR, C.MUL_MAT_VEC_XQ, V.MUL_MAT_VEC_X, V.MUL_MAT_VEC_XB)}
    table = tuple(rows[n] for n in INT8_KERNELS[kernel]) + (C.MUL_MAT_VEC, C.MUL_MAT)
    be.ctx.mat_mul = C.MatMulOptions(int8, table)
    return Engine.from_gguf(path, backend=be, max_ctx=1024, kv_dtype=kv_dtype)


def check(
    name: str,
    path: str,
    kv_dtype: str,
    n_decode: int,
    backend: str = "hip",
    int8: bool = False,
    kernel: str = "xb",
    decode_tokens: int = 0,
) -> dict:
    eng = make_engine(path, backend, kv_dtype, int8, kernel)
    refs = load_refs(name)
    device = getattr(eng.backend, "device_name", eng.backend.name)
    out: dict = {
        "model": name,
        "device": device,
        "kv_dtype": kv_dtype,
        "int8_activations": int8,
        "int8_kernel": kernel if int8 else None,
        "texts": {},
    }
    for text in refs.texts:
        toks = refs.tokens(text)
        eng.reset()
        logits = eng.prefill(toks, all_logits=True)
        f32, quant = refs.run("f32", text), refs.run("quant", text)
        n = min(decode_tokens, len(toks)) if decode_tokens else len(toks)
        dec = decode_logits(eng, toks[:n])
        f32_n, quant_n = first(f32, len(toks), n), first(quant, len(toks), n)
        out["texts"][text] = {
            "vs_f32": distance(logits, toks, f32),
            "vs_llamacpp_quant": distance(logits, toks, quant),
            "llamacpp_quant_vs_f32": distance_between(quant, f32),
            "decode_vs_f32": distance(dec, toks[:n], f32_n),
            "decode_llamacpp_quant_vs_f32": distance_between(quant_n, f32_n),
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
    ap.add_argument("--model", action="append", required=True,
                    help="NAME=PATH (NAME as in rocmforge/data/refs)")
    ap.add_argument("--kv", default="f32")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--out", default="gpu_models.json")
    ap.add_argument("--backend", default="hip", choices=["hip", "numpy"])
    ap.add_argument("--int8-activations", action="store_true", help="HipBackend(int8_activations=True)")
    ap.add_argument(
        "--int8-kernel",
        choices=list(INT8_KERNELS),
        default="xb",
        help="... x8: x quantized by every block; xq: once per activation; xb: xq + a block per lane",
    )
    ap.add_argument("--decode-tokens", type=int, default=0, help="teacher-forced decode: first N (0: all)")
    a = ap.parse_args()
    if a.decode_tokens < 0:
        ap.error("--decode-tokens must be >= 0")
    results = []
    for spec in a.model:
        name, path = spec.split("=", 1)
        results.append(
            check(name, path, a.kv, a.steps, a.backend, a.int8_activations, a.int8_kernel, a.decode_tokens)
        )
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1, default=str)
    for r in results:
        acts = f"int8 ({r['int8_kernel']})" if r["int8_activations"] else "f32"
        print(f"== {r['model']} on {r['device']} (KV {r['kv_dtype']}, {acts} activations in decode)")
        for text, d in r["texts"].items():
            f, q, lq = d["vs_f32"], d["vs_llamacpp_quant"], d["llamacpp_quant_vs_f32"]
            print(
                f"  {text:6s} vs F32: {f['mean_abs_dlogp']:.4f} nats, top-1 {f['top1_agree_pct']:.1f}% | "
                f"llama.cpp quant vs F32: {lq['mean_abs_dlogp']:.4f} nats, {lq['top1_agree_pct']:.1f}% | "
                f"vs llama.cpp quant: {q['mean_abs_dlogp']:.4f}"
            )
            f, lq = d["decode_vs_f32"], d["decode_llamacpp_quant_vs_f32"]
            print(
                f"  {'':6s} decode, {f['n']} tokens, vs F32: {f['mean_abs_dlogp']:.4f} nats, "
                f"top-1 {f['top1_agree_pct']:.1f}% | llama.cpp quant vs F32 there: "
                f"{lq['mean_abs_dlogp']:.4f} nats, {lq['top1_agree_pct']:.1f}%"
            )
        for g, d in r["greedy"].items():
            print(f"  greedy {g}: equal={d['equal']} first_diff={d['first_diff']}")
        print(f"  decode (replayed graph): {r['decode_ms_median']:.2f} ms/token = {r['decode_tps']:.1f} t/s")
        for row in r["top_ops"]:
            print(f"    {row['op']:16s} {row['sum']:9.1f} us  x{row['count']}  {100 * row['share']:.1f}%")


if __name__ == "__main__":
    main()
