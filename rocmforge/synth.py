"""Random GGUF models (llama or qwen2 architecture) for tests, demos and benchmarks: real files, real layout.

The tokenizer is a byte-level BPE over the 256 GPT-2 byte symbols plus a few merges and special tokens,
so text round-trips. `write_tiny_model`: small random weights, quantized with the `gguf` package where a
type asks for it. `write_random_model`: the shapes of a real model (PRESETS) with random block bytes and
valid scales, written without quantizing, so that a 7B file takes seconds (for timing, not for text).
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


# the shapes of real models, as llama.cpp's anchors name them (../shared/anchors)
PRESETS = {
    "qwen2-0.5b": dict(arch="qwen2", n_layer=24, n_embd=896, n_head=14, n_head_kv=2, n_ff=4864,
                       n_vocab=151936, tied=True, n_ctx_train=32768),
    "llama-7b": dict(arch="llama", n_layer=32, n_embd=4096, n_head=32, n_head_kv=32, n_ff=11008,
                     n_vocab=32000, tied=False, n_ctx_train=4096),
    "smollm2-135m": dict(arch="llama", n_layer=30, n_embd=576, n_head=9, n_head_kv=3, n_ff=1536,
                         n_vocab=49152, tied=True, n_ctx_train=8192),
}
# byte offsets of the f16 scale fields in a block: given valid values, random bytes elsewhere are valid
_SCALE_FIELDS = {Q.Q4_0: (0,), Q.Q4_1: (0, 2), Q.Q5_0: (0,), Q.Q5_1: (0, 2), Q.Q8_0: (0,),
                 Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,)}
# K-quants multiply the block scale by random sub-block scales (6-bit, or int8 for Q6_K)
_SCALE_DIV = {Q.Q4_K: 16, Q.Q5_K: 16, Q.Q6_K: 64}


def _random_blocks(rng: np.random.Generator, wtype: Q, rows: int, cols: int) -> np.ndarray:
    """[rows, row bytes] random blocks of wtype (or random f32/f16 values), scales small and valid."""
    from gguf.constants import GGML_QUANT_SIZES

    if wtype in (Q.F32, Q.F16):
        dt = np.float32 if wtype == Q.F32 else np.float16
        return (rng.standard_normal((rows, cols), dtype=np.float32) / np.sqrt(cols)).astype(dt)
    if wtype not in _SCALE_FIELDS:
        raise ValueError(f"no random blocks for {wtype.name}: choose one of "
                         f"{', '.join(t.name for t in (Q.F32, Q.F16, *_SCALE_FIELDS))}")
    bs, ts = GGML_QUANT_SIZES[wtype]
    if cols % bs:
        raise ValueError(f"{wtype.name} blocks hold {bs} values; rows of {cols} do not divide into them")
    b = rng.integers(0, 256, (rows * cols // bs, ts), dtype=np.uint8)
    for off in _SCALE_FIELDS[wtype]:
        d = rng.uniform(0.5, 1.0, len(b)) * 0.02 / np.sqrt(cols / 4096) / _SCALE_DIV.get(wtype, 1)
        d = d.astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(-1, 2)
    return b.reshape(rows, cols // bs * ts)


def write_random_model(path: str | Path, preset: str, wtype: Q = Q.Q4_0, seed: int = 0) -> Path:
    """Write a model with the shapes of PRESETS[preset], every matrix (token embeddings included) of wtype,
    norms and biases F32: random block bytes, each block's f16 scales set to small valid values."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {sorted(PRESETS)}")
    rng = np.random.default_rng(seed)
    _random_blocks(rng, wtype, 1, 256)  # an unsupported type fails before anything is written
    return _write(path, **PRESETS[preset], raw=lambda r, c, scale: _random_blocks(rng, wtype, r, c),
                  wtype=wtype, rng=rng, name=f"random-{preset}")


def read_layout(source: str | Path) -> dict:
    """A GGUF file's layout: architecture, every metadata field (value and types) and every tensor (name,
    type, ggml shape; the data of 1-D tensors, norms and biases). Small: what write_layout needs."""
    from gguf import GGUFReader, GGUFValueType

    r = GGUFReader(str(source))
    fields = []
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue  # written by GGUFWriter itself
        vtype = f.types[0]
        fields.append((key, f.contents(), vtype, f.types[-1] if vtype == GGUFValueType.ARRAY else None))
    tensors = []
    for t in r.tensors:
        shape = [int(n) for n in t.shape]  # ggml order: [cols, rows, ...]
        vector = len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)
        tensors.append((t.name, Q(t.tensor_type), shape, np.array(t.data) if vector else None))
    return {"arch": r.fields["general.architecture"].contents(), "fields": fields, "tensors": tensors}


def write_layout(layout: dict, path: str | Path, wtype: Q | None = None, seed: int = 0) -> Path:
    """Write a model of this layout (read_layout) whose matrices are random blocks of their own type (or
    of wtype); 1-D tensors keep their data."""
    rng = np.random.default_rng(seed)
    w = GGUFWriter(str(path), layout["arch"])
    for key, value, vtype, sub in layout["fields"]:
        w.add_key_value(key, value, vtype, sub_type=sub)
    for name, qtype, shape, data in layout["tensors"]:
        if data is not None:
            w.add_tensor(name, data, raw_dtype=qtype)
            continue
        qt = wtype or qtype
        blocks = _random_blocks(rng, qt, int(np.prod(shape[1:])), shape[0])
        w.add_tensor(name, blocks, raw_dtype=None if qt in (Q.F32, Q.F16) else qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def write_like(source: str | Path, path: str | Path, wtype: Q | None = None, seed: int = 0) -> Path:
    """Write a copy of the GGUF file `source` (every metadata key, tensor name, shape and order) whose
    matrices are random blocks of their own type (or of wtype): the model's exact layout for timing,
    without its weights. 1-D tensors (norms, biases) are copied."""
    return write_layout(read_layout(source), path, wtype, seed)


def write_tiny_model(path: str | Path, arch: str = "llama", *, n_layer: int = 2, n_embd: int = 64,
                     n_head: int = 4, n_head_kv: int = 2, n_ff: int = 96, wtype: Q = Q.F32,
                     tied: bool = True, n_ctx_train: int = 4096, seed: int = 0) -> Path:
    """Write a random model; returns its path. wtype applies to the 2-D matrices (norms stay F32)."""
    rng = np.random.default_rng(seed)

    def raw(rows: int, cols: int, scale: float = 0.3) -> np.ndarray:
        a = (rng.standard_normal((rows, cols)) * scale / np.sqrt(cols)).astype(np.float32)
        if wtype == Q.F32:
            return a
        if wtype == Q.F16:
            return a.astype(np.float16)
        return quantize(a, wtype)

    return _write(path, arch, n_layer, n_embd, n_head, n_head_kv, n_ff, 0, tied, n_ctx_train, raw=raw,
                  wtype=wtype, rng=rng, name=f"tiny-{arch}")


def _write(path: str | Path, arch: str, n_layer: int, n_embd: int, n_head: int, n_head_kv: int, n_ff: int,
           n_vocab: int, tied: bool, n_ctx_train: int, *, raw, wtype: Q, rng: np.random.Generator,
           name: str) -> Path:
    """The GGUF writer behind both: raw(rows, cols, scale) gives a matrix's data in wtype (scale: its
    spread, which random blocks ignore); n_vocab pads the byte-level vocabulary with unused tokens (0:
    no padding)."""
    path = Path(path)
    w = GGUFWriter(str(path), arch)
    w.add_name(name)
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
    filler = [f"<unused{i}>" for i in range(max(0, n_vocab - len(syms) - len(pieces) - len(specials)))]
    tokens = syms + pieces + filler + specials
    types = [TokenType.NORMAL] * (len(syms) + len(pieces)) + [TokenType.UNUSED] * len(filler) + \
        [TokenType.CONTROL] * len(specials)
    n_vocab = len(tokens)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2" if arch == "llama" else "qwen2")
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
        a = raw(rows, cols, scale)
        w.add_tensor(name, a, raw_dtype=None if wtype in (Q.F32, Q.F16) else wtype)

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
