"""Tiny random GGUF models (llama or qwen2 architecture) for tests and demos: real files, real layout.

The tokenizer is a byte-level BPE over the 256 GPT-2 byte symbols plus a few merges and special tokens,
so text round-trips; weights are random, quantized with the `gguf` package where a type asks for it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType
from gguf.quants import quantize


def byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs, strict=True))
    return [chr(table[b]) for b in range(256)]


def write_tiny_model(path: str | Path, arch: str = "llama", *, n_layer: int = 2, n_embd: int = 64,
                     n_head: int = 4, n_head_kv: int = 2, n_ff: int = 96, wtype: Q = Q.F32,
                     tied: bool = True, n_ctx_train: int = 4096, seed: int = 0) -> Path:
    """Write a random model; returns its path. wtype applies to the 2-D matrices (norms stay F32)."""
    rng = np.random.default_rng(seed)
    path = Path(path)
    w = GGUFWriter(str(path), arch)
    w.add_name(f"tiny-{arch}")
    w.add_block_count(n_layer)
    w.add_context_length(n_ctx_train)
    w.add_embedding_length(n_embd)
    w.add_feed_forward_length(n_ff)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_head_kv)
    w.add_rope_freq_base(10000.0 if arch == "llama" else 1000000.0)
    w.add_layer_norm_rms_eps(1e-5 if arch == "llama" else 1e-6)

    syms = byte_symbols()
    merges = ["Ġ t", "Ġ a", "h e", "i n", "Ġt he"]
    pieces = [m.replace(" ", "") for m in merges]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = syms + pieces + specials
    types = [TokenType.NORMAL] * (len(syms) + len(pieces)) + [TokenType.CONTROL] * len(specials)
    n_vocab = len(tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2" if arch == "llama" else "qwen2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(n_vocab - 3)
    w.add_eos_token_id(n_vocab - 1)
    w.add_add_bos_token(False)
    w.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

    hd = n_embd // n_head

    def mat(name: str, rows: int, cols: int, scale: float = 0.3) -> None:
        a = (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)
        if wtype in (Q.F32,):
            w.add_tensor(name, a)
        elif wtype == Q.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, quantize(a, wtype), raw_dtype=wtype)

    def vec(name: str, n: int, center: float = 1.0) -> None:
        w.add_tensor(name, (center + 0.1 * rng.standard_normal(n)).astype(np.float32))

    mat("token_embd.weight", n_vocab, n_embd, scale=1.0 * np.sqrt(n_embd))
    for il in range(n_layer):
        b = f"blk.{il}"
        vec(f"{b}.attn_norm.weight", n_embd)
        mat(f"{b}.attn_q.weight", n_head * hd, n_embd)
        mat(f"{b}.attn_k.weight", n_head_kv * hd, n_embd)
        mat(f"{b}.attn_v.weight", n_head_kv * hd, n_embd)
        if arch == "qwen2":
            vec(f"{b}.attn_q.bias", n_head * hd, 0.0)
            vec(f"{b}.attn_k.bias", n_head_kv * hd, 0.0)
            vec(f"{b}.attn_v.bias", n_head_kv * hd, 0.0)
        mat(f"{b}.attn_output.weight", n_embd, n_head * hd)
        vec(f"{b}.ffn_norm.weight", n_embd)
        mat(f"{b}.ffn_gate.weight", n_ff, n_embd)
        mat(f"{b}.ffn_up.weight", n_ff, n_embd)
        mat(f"{b}.ffn_down.weight", n_embd, n_ff)
    vec("output_norm.weight", n_embd)
    if not tied:
        mat("output.weight", n_vocab, n_embd, scale=3.0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
