"""Small GGUF files for tests, written with gguf.GGUFWriter, and helpers to corrupt them byte by byte."""

from __future__ import annotations

import signal
import struct
import time
import tracemalloc
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType, GGUFWriter
from gguf.quants import quantize

VT = GGUFValueType
Q = GGMLQuantizationType

# tiny decoder: Q8_0 rows need a multiple of 32 elements
N_VOCAB, N_EMBD, N_LAYER, N_HEAD, N_HEAD_KV, N_FF, N_CTX = 300, 64, 2, 4, 2, 128, 256
HEAD_DIM = N_EMBD // N_HEAD

# >= 256 entries so the reader's fast path for big string arrays runs; non-ASCII, an empty string,
# an embedded NUL-free long token (length prefix byte >= 0x80) and 4-byte UTF-8 included
TOKENS = ["<unk>", "<s>", "</s>", ""] + [f"t{i}" for i in range(N_VOCAB - 9)] + [
    "Ġhello", "é", "世界", "🎉x", "a" * 200,
]
MERGES = [f"t{i} t{i + 1}" for i in range(260)] + ["Ġ h", "é 世"]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def model_kv(arch: str = "llama", *, tokenizer: bool = True) -> dict[str, tuple[Any, VT, VT | None]]:
    """Metadata of the tiny model: key -> (value, type, array element type)."""
    kv: dict[str, tuple[Any, VT, VT | None]] = {
        "general.name": ("tiny test model", VT.STRING, None),
        "general.file_type": (7, VT.UINT32, None),  # MOSTLY_Q8_0
        f"{arch}.block_count": (N_LAYER, VT.UINT32, None),
        f"{arch}.context_length": (N_CTX, VT.UINT32, None),
        f"{arch}.embedding_length": (N_EMBD, VT.UINT32, None),
        f"{arch}.feed_forward_length": (N_FF, VT.UINT32, None),
        f"{arch}.attention.head_count": (N_HEAD, VT.UINT32, None),
        f"{arch}.attention.head_count_kv": (N_HEAD_KV, VT.UINT32, None),
        f"{arch}.rope.freq_base": (50000.0, VT.FLOAT32, None),
        f"{arch}.attention.layer_norm_rms_epsilon": (1e-6, VT.FLOAT32, None),
    }
    if tokenizer:
        kv |= {
            "tokenizer.ggml.model": ("gpt2", VT.STRING, None),
            "tokenizer.ggml.pre": ("default", VT.STRING, None),
            "tokenizer.ggml.tokens": (TOKENS, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.token_type": ([3, 3, 3] + [1] * (N_VOCAB - 3), VT.ARRAY, VT.INT32),
            "tokenizer.ggml.merges": (MERGES, VT.ARRAY, VT.STRING),
            "tokenizer.ggml.bos_token_id": (1, VT.UINT32, None),
            "tokenizer.ggml.eos_token_id": (2, VT.UINT32, None),
            "tokenizer.chat_template": ("{% for m in messages %}{{ m.content }}{% endfor %}", VT.STRING,
                                        None),
        }
    return kv


def model_tensors(*, tied: bool = True, qkv_bias: bool = False, n_layer: int = N_LAYER,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """numpy-order float32 tensors of the tiny model (quantized at write time, see write_gguf)."""
    r = _rng(seed)
    q, kv = N_HEAD * HEAD_DIM, N_HEAD_KV * HEAD_DIM

    def w(*shape: int) -> np.ndarray:
        return (r.standard_normal(shape) * 0.05).astype(np.float32)

    t = {"token_embd.weight": w(N_VOCAB, N_EMBD), "output_norm.weight": np.ones(N_EMBD, np.float32)}
    if not tied:
        t["output.weight"] = w(N_VOCAB, N_EMBD)
    for i in range(n_layer):
        b = f"blk.{i}."
        t |= {
            b + "attn_norm.weight": np.ones(N_EMBD, np.float32),
            b + "attn_q.weight": w(q, N_EMBD),
            b + "attn_k.weight": w(kv, N_EMBD),
            b + "attn_v.weight": w(kv, N_EMBD),
            b + "attn_output.weight": w(N_EMBD, q),
            b + "ffn_norm.weight": np.ones(N_EMBD, np.float32),
            b + "ffn_gate.weight": w(N_FF, N_EMBD),
            b + "ffn_up.weight": w(N_FF, N_EMBD),
            b + "ffn_down.weight": w(N_EMBD, N_FF),
        }
        if qkv_bias:
            t |= {b + "attn_q.bias": w(q), b + "attn_k.bias": w(kv), b + "attn_v.bias": w(kv)}
    return t


def _default_type(name: str, a: np.ndarray) -> Q:
    if a.ndim == 1:
        return Q.F32
    if name == "token_embd.weight" or name.endswith("ffn_down.weight"):
        return Q.Q8_0
    if name.endswith("attn_v.weight"):
        return Q.F16
    return Q.Q4_0


def write_gguf(path: str | Path, arch: str = "llama", *,
               kv: Mapping[str, tuple[Any, VT, VT | None]] | None = None,
               tensors: Mapping[str, np.ndarray] | None = None,
               types: Mapping[str, Q] | None = None,
               alignment: int | None = None) -> Path:
    """Write a GGUF v3 file with GGUFWriter. `tensors` are float32 arrays in numpy order; each is
    stored as `types[name]` (default: F32 vectors, Q8_0/Q4_0/F16 matrices), quantized with gguf."""
    path = Path(path)
    w = GGUFWriter(path, arch)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, (val, vtype, sub) in (kv or {}).items():
        w.add_key_value(key, val, vtype, sub)
    for name, a in (tensors or {}).items():
        qt = (types or {}).get(name, _default_type(name, a))  # Q.F32 == 0: no `or` here
        if qt == Q.F32:
            w.add_tensor(name, a.astype(np.float32))
        elif qt == Q.F16:
            w.add_tensor(name, a.astype(np.float16))
        else:
            w.add_tensor(name, quantize(a, qt), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_model(path: str | Path, arch: str = "llama", *, tied: bool = True, qkv_bias: bool = False,
                kv_update: Mapping[str, tuple[Any, VT, VT | None]] | None = None,
                drop_kv: Sequence[str] = (), drop_tensors: Sequence[str] = (),
                tensor_update: Mapping[str, np.ndarray] | None = None,
                tokenizer: bool = True, alignment: int | None = None) -> Path:
    """The tiny decoder (llama: tied output, no bias; qwen2 style with tied=False, qkv_bias=True)."""
    kv = model_kv(arch, tokenizer=tokenizer) | dict(kv_update or {})
    for k in drop_kv:
        kv.pop(k)
    t = model_tensors(tied=tied, qkv_bias=qkv_bias) | dict(tensor_update or {})
    for n in drop_tensors:
        t.pop(n)
    return write_gguf(path, arch, kv=kv, tensors=t, alignment=alignment)


def write_small(path: str | Path) -> Path:
    """Two tensors and a few scalar/array keys: the base for the corrupt-file cases."""
    r = _rng(1)
    kv = {
        "general.name": ("small", VT.STRING, None),
        "test.u8": (7, VT.UINT8, None),
        "test.i64": (-5, VT.INT64, None),
        "test.f64": (0.25, VT.FLOAT64, None),
        "test.flag": (True, VT.BOOL, None),
        "test.ints": ([1, -2, 3], VT.ARRAY, VT.INT32),
        "test.words": (["alpha", "beta", "gamma"], VT.ARRAY, VT.STRING),
    }
    tensors = {"a.weight": r.standard_normal((4, 64)).astype(np.float32),
               "b.weight": r.standard_normal((2, 64)).astype(np.float32)}
    return write_gguf(path, "llama", kv=kv, tensors=tensors, types={"a.weight": Q.F32, "b.weight": Q.Q8_0})


# -- byte surgery -------------------------------------------------------------------------------------


def find_once(data: bytes, needle: bytes) -> int:
    i = data.find(needle)
    assert i >= 0 and data.find(needle, i + 1) < 0, f"{needle!r} not found exactly once"
    return i


def _gguf_str(s: str) -> bytes:
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv_type_offset(data: bytes, key: str) -> int:
    """Offset of the u32 value type that follows metadata key `key`."""
    return find_once(data, _gguf_str(key)) + 8 + len(key.encode())


def tensor_info_offset(data: bytes, name: str) -> int:
    """Offset of the u32 n_dims field of tensor `name` in the index."""
    return find_once(data, _gguf_str(name)) + 8 + len(name.encode())


def patch(path: Path, offset: int, fmt: str, *values: Any) -> None:
    """Overwrite bytes at `offset` with struct.pack(fmt, *values)."""
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack(fmt, *values))


def patch_bytes(path: Path, offset: int, b: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b)


def truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


# -- no hang, no huge allocation ------------------------------------------------------------------------


@contextmanager
def fails_fast(seconds: float = 2.0, max_alloc: int = 32 << 20) -> Iterator[None]:
    """Fail the test if the body runs longer than `seconds` (SIGALRM) or allocates more than
    `max_alloc` bytes at peak (tracemalloc sees Python and numpy allocations)."""

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    elapsed = time.perf_counter() - t0
    assert elapsed < seconds, f"took {elapsed:.2f} s"
    assert peak < max_alloc, f"peak allocation {peak} bytes"


# -- the real models ---------------------------------------------------------------------------------


def real_model(name: str) -> Path:
    """Path of a real model from the cache (fetched if missing), or skip when it is missing and
    ROCMFORGE_OFFLINE=1."""
    import os

    import pytest

    from rocmforge import hub

    if not hub.is_cached(name) and os.environ.get("ROCMFORGE_OFFLINE", "") == "1":
        pytest.skip(f"model {name} not in the cache ({hub.model_path(name)}) and ROCMFORGE_OFFLINE=1")
    return hub.resolve(name)
