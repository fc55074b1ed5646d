"""Record llama.cpp reference logits and greedy outputs for the rocmforge test models.

Run with the llama-cpp-python venv (this script must not import rocmforge):

    /work/llvenv/bin/python scripts/record_llamacpp_refs.py [--models smollm2-135m qwen2.5-0.5b]

For each model it
  1. dequantizes the GGUF to an all-F32 file with llama_model_quantize (the exact-F32 yardstick),
  2. runs teacher-forced logits over two texts (prose, code) on the F32 file (``f32_``) and on the
     original quantized file (``quant_``), both with F32 KV cache, no flash attention, CPU only,
  3. prints the distance between the two (mean |d log p(next)|, top-1 agreement, mean KL),
  4. runs 32-token greedy (argmax) generation on the F32 file for three prompts,
  5. saves rocmforge/data/refs/<name>.npz (compressed arrays) and <name>.json (metadata): package data.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np
from llama_cpp import Llama

REPO = Path(__file__).resolve().parents[1]
MODEL_DIR = Path("/root/.cache/rocmforge/models")
F32_DIR = Path("/root/.cache/rocmforge/f32")
OUT_DIR = REPO / "rocmforge" / "data" / "refs"  # package data, read by rocmforge.llamacpp.load_refs
MODELS = ["smollm2-135m", "qwen2.5-0.5b"]

TOP_K = 10
N_GEN = 32
GGML_TYPE_F32 = 0

# Context settings shared by every run (F32 KV cache, no flash attention, CPU only).
LLAMA_KWARGS: dict[str, Any] = {
    "n_ctx": 1024,
    "n_batch": 1024,
    "n_ubatch": 1024,
    "logits_all": True,
    "type_k": GGML_TYPE_F32,
    "type_v": GGML_TYPE_F32,
    "flash_attn": False,  # maps to LLAMA_FLASH_ATTN_TYPE_DISABLED in this llama-cpp-python
    "n_threads": 2,
    "n_threads_batch": 2,
    "n_gpu_layers": 0,
    "seed": 0,
    "verbose": False,
}

PROSE = (
    "The lighthouse keeper on the northern island kept a notebook in which he wrote down, every evening, "
    "the colour of the sea, the direction of the wind and the names of the ships that passed. He had "
    "started the habit as a young man, when the lamp still burned paraffin and had to be trimmed by hand "
    "every few hours, and he never saw a reason to stop. Over forty years the notebooks filled two shelves "
    "in the small kitchen. Visitors sometimes asked what he hoped to learn from them. He would answer that "
    "he did not expect to learn anything in particular; he simply liked to know that a day had been "
    "noticed before it was gone. In winter the storms came from the west and lasted for days, and the "
    "ferry stopped running, so he baked his own bread and mended nets for the fishermen in the village. "
    "In summer the island filled with walkers who climbed the tower, looked at the view for a few minutes "
    "and hurried back to catch the evening boat. When the lamp was finally automated, the authorities "
    "offered him a house on the mainland. He thanked them politely, packed the notebooks into three "
    "wooden crates, and moved into the old signal station at the other end of the island, where he could "
    "still see the light turning every night."
)

CODE = '''import heapq
from collections import defaultdict


class Graph:
    """A small weighted directed graph with Dijkstra shortest paths."""

    def __init__(self) -> None:
        self.edges: dict[str, list[tuple[str, float]]] = defaultdict(list)

    def add_edge(self, src: str, dst: str, weight: float) -> None:
        if weight < 0:
            raise ValueError("negative weights are not supported")
        self.edges[src].append((dst, weight))

    def shortest_paths(self, start: str) -> dict[str, float]:
        dist = {start: 0.0}
        queue = [(0.0, start)]
        while queue:
            d, node = heapq.heappop(queue)
            if d > dist.get(node, float("inf")):
                continue
            for nxt, w in self.edges[node]:
                nd = d + w
                if nd < dist.get(nxt, float("inf")):
                    dist[nxt] = nd
                    heapq.heappush(queue, (nd, nxt))
        return dist


def parse_edges(lines):
    graph = Graph()
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        src, dst, weight = line.split()
        graph.add_edge(src, dst, float(weight))
    return graph


if __name__ == "__main__":
    data = ["a b 1.5", "b c 2", "a c 4", "c d 1"]
    print(parse_edges(data).shortest_paths("a"))
'''

TEXTS: dict[str, str] = {"prose": PROSE, "code": CODE}

# name -> (prompt, parse special tokens)
PROMPTS: dict[str, tuple[str, bool]] = {
    "capital": ("The capital of France is", False),
    "fibonacci": ("def fibonacci(n):", False),
    "chat": ("<|im_start|>user\nWhat is a GPU?<|im_end|>\n<|im_start|>assistant\n", True),
}

# --- llama.cpp log capture (to prove which KV type / flash-attn mode was really used) ---
_LOG: list[str] = []


@llama_cpp.llama_log_callback
def _log_cb(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    s = text.decode("utf-8", errors="replace")
    _LOG.append(s)
    if level == 3:  # GGML_LOG_LEVEL_ERROR
        print(s, end="", file=sys.stderr)


llama_cpp.llama_log_set(_log_cb, ctypes.c_void_p(0))


def log_lines(keys: tuple[str, ...]) -> list[str]:
    text = "".join(_LOG)
    lines = [ln.strip() for ln in text.splitlines() if any(k in ln for k in keys)]
    return [ln for ln in lines if ": layer " not in ln]  # drop per-layer device lines


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 24):
            h.update(chunk)
    return h.hexdigest()


def make_f32(src: Path, dst: Path) -> None:
    """Dequantize every tensor of src to F32 with llama.cpp's own quantizer."""
    if dst.exists():
        print(f"  F32 file present: {dst}")
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_ALL_F32
    params.allow_requantize = True
    tmp = dst.with_suffix(".tmp")
    t0 = time.time()
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
    if rc != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"llama_model_quantize failed ({rc}) for {src}")
    tmp.rename(dst)
    print(f"  wrote {dst} ({dst.stat().st_size / 2**20:.0f} MiB, {time.time() - t0:.1f}s)")


def load(path: Path) -> Llama:
    _LOG.clear()
    llm = Llama(str(path), **LLAMA_KWARGS)
    # The context params actually handed to llama.cpp.
    cp = llm.context_params
    assert cp.type_k == GGML_TYPE_F32 and cp.type_v == GGML_TYPE_F32, "KV cache type not F32"
    assert cp.flash_attn_type == llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED, "flash attention not off"
    kv = log_lines(("llama_kv_cache: size",))
    if not kv or any("K (f32)" not in ln or "V (f32)" not in ln for ln in kv):
        raise RuntimeError(f"llama.cpp did not report an F32 KV cache: {kv}")
    return llm


def effective_settings(llm: Llama) -> dict[str, Any]:
    cp = llm.context_params
    return {
        "n_ctx_effective": llm.n_ctx(),
        "n_batch": cp.n_batch,
        "n_ubatch": cp.n_ubatch,
        "n_threads": cp.n_threads,
        "n_threads_batch": cp.n_threads_batch,
        "type_k": cp.type_k,
        "type_v": cp.type_v,
        "flash_attn_type": cp.flash_attn_type,
        "offload_kqv": bool(cp.offload_kqv),
        "log_excerpt": log_lines(
            (
                "llama_kv_cache",
                "flash_attn",
                "n_ctx",
                "n_batch",
                "n_ubatch",
                "causal_attn",
                "CPU_REPACK",
                "repack",
                "file type",
                "n_seq_max",
            )
        ),
    }


def add_bos_for(llm: Llama) -> tuple[bool, dict[str, Any]]:
    """BOS policy: GGUF metadata key when present, else llama.cpp's own vocab default."""
    meta = llm.metadata.get("tokenizer.ggml.add_bos_token")
    vocab_flag = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    add_bos = meta.lower() == "true" if meta is not None else vocab_flag
    info = {"metadata_add_bos_token": meta, "llama_vocab_get_add_bos": vocab_flag, "add_bos_used": add_bos}
    return add_bos, info


def top_k(rows: np.ndarray, k: int = TOP_K) -> tuple[np.ndarray, np.ndarray]:
    """Top-k ids/logits per row, sorted by logit desc then id asc."""
    idx = np.argpartition(-rows, k, axis=1)[:, :k]
    vals = np.take_along_axis(rows, idx, axis=1)
    order = np.lexsort((idx, -vals), axis=1)
    idx = np.take_along_axis(idx, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    return idx.astype(np.int32), vals.astype(np.float32)


def logsumexp(rows: np.ndarray) -> np.ndarray:
    out = np.empty(rows.shape[0], dtype=np.float64)
    for i, r in enumerate(rows):
        r64 = r.astype(np.float64)
        m = r64.max()
        out[i] = m + np.log(np.exp(r64 - m).sum())
    return out


def teacher_forced(llm: Llama, tokens: list[int]) -> np.ndarray:
    """Evaluate tokens in one batch from an empty cache; return logits (n, n_vocab) float32."""
    llm.reset()
    llm.eval(tokens)
    return np.array(llm.scores[: len(tokens)], dtype=np.float32, copy=True)


def summarize(logits: np.ndarray, tokens: list[int]) -> dict[str, np.ndarray]:
    ids, vals = top_k(logits)
    nxt = np.asarray(tokens[1:], dtype=np.int64)
    return {
        "top_ids": ids,
        "top_logits": vals,
        "lse": logsumexp(logits).astype(np.float32),
        "next_logit": logits[np.arange(len(nxt)), nxt].astype(np.float32),
    }


def distance(q: np.ndarray, f: np.ndarray, tokens: list[int]) -> dict[str, float]:
    """Distance of the quantized run q from the F32 yardstick f (full logit rows)."""
    lq = q.astype(np.float64)
    lf = f.astype(np.float64)
    lq -= logsumexp(q)[:, None]
    lf -= logsumexp(f)[:, None]
    nxt = np.asarray(tokens[1:], dtype=np.int64)
    pos = np.arange(len(nxt))
    dlogp = np.abs(lq[pos, nxt] - lf[pos, nxt])
    kl = (np.exp(lf) * (lf - lq)).sum(axis=1)  # KL(f32 || quant) per position
    return {
        "mean_abs_dlogp_nats": float(dlogp.mean()),
        "max_abs_dlogp_nats": float(dlogp.max()),
        "top1_agree_pct": float((q.argmax(1) == f.argmax(1)).mean() * 100.0),
        "mean_kl_f32_quant_nats": float(kl.mean()),
        "max_abs_logit_diff": float(np.abs(q - f).max()),
        "n_positions_dlogp": int(len(nxt)),
        "n_positions_top1": int(q.shape[0]),
    }


def greedy(llm: Llama, prompt_ids: list[int]) -> dict[str, Any]:
    """Argmax decoding token by token; runs the full N_GEN tokens even past EOS."""
    llm.reset()
    llm.eval(prompt_ids)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    gen: list[int] = []
    rows = []
    for step in range(N_GEN):
        row = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32, copy=True)
        rows.append(row)
        tok = int(np.argmax(row))  # first max, same tie rule as llama.cpp's greedy sampler
        gen.append(tok)
        if step < N_GEN - 1:
            llm.eval([tok])
    ids, vals = top_k(np.stack(rows))
    eog = [i for i, t in enumerate(gen) if llama_cpp.llama_vocab_is_eog(vocab, t)]
    return {
        "gen_ids": gen,
        "top_ids": ids,
        "top_logits": vals,
        "first_eog_index": eog[0] if eog else None,
        "eog_positions": eog,
    }


def run_model(name: str, args: argparse.Namespace) -> None:
    src = args.model_dir / f"{name}.gguf"
    f32 = args.f32_dir / f"{name}-f32.gguf"
    print(f"== {name}")
    make_f32(src, f32)

    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {
        "model": name,
        "source_gguf": str(src),
        "source_sha256": sha256(src),
        "f32_gguf": str(f32),
        "f32_sha256": sha256(f32),
        "f32_made_with": "llama_model_quantize(ftype=LLAMA_FTYPE_ALL_F32, allow_requantize=True)",
        "llama_cpp_python_version": llama_cpp.__version__,
        "system_info": llama_cpp.llama_print_system_info().decode(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "llama_kwargs": {k: v for k, v in LLAMA_KWARGS.items()},
        "top_k": TOP_K,
        "notes": [
            "Teacher-forced: all tokens of a text evaluated in one batch/ubatch from an empty KV cache.",
            "next_logit[i] is the logit at position i of token i+1 (positions 0..n-2).",
            "lse is logsumexp of the full row computed in float64, stored as float32.",
            "top ids sorted by logit desc, ties by id asc.",
            "greedy: argmax of the F32-file logits, 32 tokens, not stopped at EOS/EOG.",
            "top1_agree_pct counts all n positions; dlogp uses positions 0..n-2.",
        ],
    }

    # (a) F32 yardstick: tokenize, teacher-force, greedy.
    t0 = time.time()
    llm = load(f32)
    meta["settings_f32"] = effective_settings(llm)
    add_bos, meta["bos"] = add_bos_for(llm)
    token_ids = {t: llm.tokenize(s.encode(), add_bos=add_bos, special=False) for t, s in TEXTS.items()}
    f32_logits: dict[str, np.ndarray] = {}
    arrays["text_names"] = np.array(list(TEXTS))
    for t, toks in token_ids.items():
        if len(toks) < 200:
            raise RuntimeError(f"{name}/{t}: only {len(toks)} tokens")
        arrays[f"tokens_{t}"] = np.asarray(toks, dtype=np.int32)
        f32_logits[t] = teacher_forced(llm, toks)
        for k, v in summarize(f32_logits[t], toks).items():
            arrays[f"f32_{t}_{k}"] = v
    meta["texts"] = {t: {"text": s, "n_tokens": len(token_ids[t])} for t, s in TEXTS.items()}

    greedy_out: dict[str, Any] = {}
    arrays["greedy_names"] = np.array(list(PROMPTS))
    for p, (prompt, special) in PROMPTS.items():
        pids = llm.tokenize(prompt.encode(), add_bos=add_bos, special=special)
        g = greedy(llm, pids)
        arrays[f"greedy_{p}_prompt_ids"] = np.asarray(pids, dtype=np.int32)
        arrays[f"greedy_{p}_gen_ids"] = np.asarray(g["gen_ids"], dtype=np.int32)
        arrays[f"greedy_{p}_top_ids"] = g["top_ids"]
        arrays[f"greedy_{p}_top_logits"] = g["top_logits"]
        text = llm.detokenize(g["gen_ids"], special=True).decode("utf-8", errors="replace")
        greedy_out[p] = {
            "prompt": prompt,
            "special": special,
            "prompt_ids": pids,
            "gen_ids": g["gen_ids"],
            "gen_text": text,
            "first_eog_index": g["first_eog_index"],
            "eog_positions": g["eog_positions"],
        }
        print(f"  greedy[{p}] eog@{g['first_eog_index']}: {prompt!r} -> {text!r}")
    meta["greedy"] = greedy_out
    meta["eos_id"] = int(llm.token_eos())
    del llm
    print(f"  f32 runs done in {time.time() - t0:.1f}s")

    # (b) original quantized file, same settings.
    t0 = time.time()
    llm = load(src)
    meta["settings_quant"] = effective_settings(llm)
    dist: dict[str, dict[str, float]] = {}
    for t, toks in token_ids.items():
        if llm.tokenize(TEXTS[t].encode(), add_bos=add_bos, special=False) != toks:
            raise RuntimeError(f"{name}/{t}: tokenization differs between F32 and quantized file")
        q = teacher_forced(llm, toks)
        for k, v in summarize(q, toks).items():
            arrays[f"quant_{t}_{k}"] = v
        dist[t] = distance(q, f32_logits[t], toks)
        for k, v in dist[t].items():
            arrays[f"dist_{t}_{k}"] = np.asarray(v)
        d = dist[t]
        print(
            f"  quant vs f32 [{t}, n={len(toks)}]: mean|dlogp|={d['mean_abs_dlogp_nats']:.4f} nats, "
            f"top1={d['top1_agree_pct']:.2f}%, KL={d['mean_kl_f32_quant_nats']:.4f}, "
            f"max|dlogit|={d['max_abs_logit_diff']:.3f}"
        )
    meta["quant_vs_f32"] = dist
    del llm
    print(f"  quant runs done in {time.time() - t0:.1f}s")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    npz = args.out_dir / f"{name}.npz"
    np.savez_compressed(npz, **arrays)
    js = args.out_dir / f"{name}.json"
    js.write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    print(f"  saved {npz} ({npz.stat().st_size / 1024:.0f} KiB), {js} ({js.stat().st_size / 1024:.0f} KiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--model-dir", type=Path, default=MODEL_DIR)
    ap.add_argument("--f32-dir", type=Path, default=F32_DIR)
    ap.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = ap.parse_args()
    for name in args.models:
        run_model(name, args)


if __name__ == "__main__":
    main()
