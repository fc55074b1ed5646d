"""ModelConfig: hyper-parameters read from a GGUF file's `<arch>.*` metadata keys.

Defaults follow llama.cpp (src/llama-model.cpp, llama_model_base::load_hparams); nothing is keyed by
model name. `from_gguf` also checks that the tensors the decoder needs exist with the shapes the
hyper-parameters imply, so a bad file fails here with the tensor's name rather than deep in a kernel.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rocmforge.gguf import GGUFError, GGUFFile, StringArray

__all__ = ["SUPPORTED_ARCHS", "ModelConfig"]

SUPPORTED_ARCHS = ("llama", "qwen2")

# llama.cpp llama_model_rope_type: LLAMA_ROPE_TYPE_NORM (adjacent pairs) vs NEOX (split halves)
_ROPE_NEOX = {"llama": False, "qwen2": True}

DEFAULT_ROPE_BASE = 10000.0
DEFAULT_NORM_EPS = 1e-5


@dataclass(frozen=True)
class ModelConfig:
    arch: str
    name: str
    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope_dim: int  # rotated dims per head (<= head_dim)
    rope_base: float
    rope_scale: float  # position multiplier: 1 / linear scaling factor
    rope_neox: bool  # True: rotate (i, i + rope_dim/2) pairs (NEOX); False: (2i, 2i+1) pairs (NORM)
    norm_eps: float
    n_ctx_train: int
    n_vocab: int
    tied_output: bool  # no output.weight: the LM head reuses token_embd.weight
    has_qkv_bias: bool
    file_type: int | None  # general.file_type (gguf.LlamaFileType), if present

    @property
    def n_gqa(self) -> int:
        """Query heads per KV head."""
        return self.n_head // self.n_head_kv

    @property
    def q_dim(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_head_kv * self.head_dim

    @classmethod
    def from_gguf(cls, f: GGUFFile) -> ModelConfig:
        """Read the config from an opened GGUF file and check the decoder's tensors; GGUFError on failure."""
        arch = f.arch
        if arch not in SUPPORTED_ARCHS:
            raise GGUFError(
                f"unsupported architecture '{arch}' (supported: {', '.join(SUPPORTED_ARCHS)})", f.path
            )
        r = _Reader(f, arch)
        n_layer = r.get_int("block_count")
        n_embd = r.get_int("embedding_length")
        n_ff = r.get_int("feed_forward_length")
        n_head = r.get_int("attention.head_count")
        n_head_kv = r.get_int("attention.head_count_kv", n_head)
        if n_head % n_head_kv:
            raise r.error(f"attention.head_count {n_head} is not a multiple of head_count_kv {n_head_kv}")
        if n_embd % n_head and r.key("attention.key_length") not in f.metadata:
            raise r.error(f"embedding_length {n_embd} is not a multiple of attention.head_count {n_head}")
        head_dim = r.get_int("attention.key_length", n_embd // n_head)
        head_dim_v = r.get_int("attention.value_length", head_dim)
        if head_dim_v != head_dim:
            raise r.error(f"attention.value_length {head_dim_v} != key_length {head_dim} is not supported")
        rope_dim = r.get_int("rope.dimension_count", head_dim)
        if rope_dim > head_dim or rope_dim % 2:
            raise r.error(f"rope.dimension_count {rope_dim} must be even and <= the head size {head_dim}")

        n_vocab = r.get_int("vocab_size", 0, required=False)
        if not n_vocab:
            tokens = f.get("tokenizer.ggml.tokens")
            if not isinstance(tokens, list | np.ndarray | StringArray):
                raise r.error(f"missing required metadata key '{arch}.vocab_size' (no tokenizer.ggml.tokens)")
            n_vocab = len(tokens)

        cfg = cls(
            arch=arch,
            name=_name(f),
            n_layer=n_layer,
            n_embd=n_embd,
            n_ff=n_ff,
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            rope_dim=rope_dim,
            rope_base=r.get_float("rope.freq_base", DEFAULT_ROPE_BASE),
            rope_scale=_rope_scale(r),
            rope_neox=_ROPE_NEOX[arch],
            norm_eps=r.get_float("attention.layer_norm_rms_epsilon", DEFAULT_NORM_EPS),
            n_ctx_train=r.get_int("context_length"),
            n_vocab=n_vocab,
            tied_output="output.weight" not in f.tensors,
            has_qkv_bias="blk.0.attn_q.bias" in f.tensors,
            file_type=_opt_int(f, "general.file_type"),
        )
        _check_tensors(f, cfg)
        return cfg


class _Reader:
    """Typed access to `<arch>.<suffix>` keys with errors naming the key."""

    def __init__(self, f: GGUFFile, arch: str) -> None:
        self.f = f
        self.arch = arch

    def key(self, suffix: str) -> str:
        return f"{self.arch}.{suffix}"

    def error(self, problem: str) -> GGUFError:
        return GGUFError(problem, self.f.path)

    def _get(self, suffix: str, default: Any, required: bool) -> Any:
        key = self.key(suffix)
        if key in self.f.metadata:
            return key, self.f.metadata[key]
        if required and default is None:
            raise self.error(f"missing required metadata key '{key}'")
        return key, default

    def get_int(self, suffix: str, default: int | None = None, required: bool = True) -> int:
        key, v = self._get(suffix, default, required)
        if isinstance(v, np.ndarray) and v.ndim == 1 and v.size and np.issubdtype(v.dtype, np.integer):
            # per-layer arrays (llama.cpp get_key_or_arr): fine while every layer agrees
            if (v != v[0]).any():
                raise self.error(f"metadata key '{key}' varies per layer ({v.tolist()}); not supported")
            v = int(v[0])
        if isinstance(v, bool) or not isinstance(v, int):
            raise self.error(f"metadata key '{key}' must be an integer, got {type(v).__name__} {v!r}")
        if v < 0 or (v == 0 and default != 0):
            raise self.error(f"metadata key '{key}' must be positive, got {v}")
        return v

    def get_float(self, suffix: str, default: float) -> float:
        key, v = self._get(suffix, default, False)
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise self.error(f"metadata key '{key}' must be a number, got {type(v).__name__} {v!r}")
        return float(v)

    def get_str(self, suffix: str, default: str) -> str:
        key, v = self._get(suffix, default, False)
        if not isinstance(v, str):
            raise self.error(f"metadata key '{key}' must be a string, got {type(v).__name__} {v!r}")
        return v


def _name(f: GGUFFile) -> str:
    name = f.get("general.name")
    return name if isinstance(name, str) and name else f.path.stem


def _opt_int(f: GGUFFile, key: str) -> int | None:
    v = f.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _rope_scale(r: _Reader) -> float:
    # llama.cpp: scaling type defaults to "linear"; factor from rope.scaling.factor, else the old
    # rope.scale_linear; 0 (or absent) means no scaling; freq_scale = 1 / factor
    kind = r.get_str("rope.scaling.type", "linear")
    factor = r.get_float("rope.scaling.factor", 0.0)
    if factor == 0.0:
        factor = r.get_float("rope.scale_linear", 0.0)
    if kind == "none" or factor in (0.0, 1.0):
        return 1.0
    if kind != "linear":
        raise r.error(
            f"rope scaling type '{kind}' (factor {factor}) is not supported; only linear scaling is"
        )
    if factor < 0:
        raise r.error(f"metadata key '{r.key('rope.scaling.factor')}' must be positive, got {factor}")
    return 1.0 / factor


def _check_tensors(f: GGUFFile, cfg: ModelConfig) -> None:
    """The tensors every llama/qwen2 decoder reads, with numpy-order shapes."""
    for name, shape in _expected_tensors(cfg):  # lazily: a corrupt block_count stops at layer n
        t = f.tensors.get(name)
        if t is None:
            raise GGUFError(f"missing required tensor '{name}' (expected shape {list(shape)})", f.path)
        if t.shape != shape:
            raise GGUFError(
                f"tensor '{name}' has shape {list(t.shape)}, expected {list(shape)} from the "
                f"{cfg.arch}.* hyper-parameters", f.path
            )


def _expected_tensors(cfg: ModelConfig) -> Iterator[tuple[str, tuple[int, ...]]]:
    e, v, ff = cfg.n_embd, cfg.n_vocab, cfg.n_ff
    yield "token_embd.weight", (v, e)
    yield "output_norm.weight", (e,)
    if not cfg.tied_output:
        yield "output.weight", (v, e)
    for i in range(cfg.n_layer):
        b = f"blk.{i}."
        yield b + "attn_norm.weight", (e,)
        yield b + "attn_q.weight", (cfg.q_dim, e)
        yield b + "attn_k.weight", (cfg.kv_dim, e)
        yield b + "attn_v.weight", (cfg.kv_dim, e)
        yield b + "attn_output.weight", (e, cfg.q_dim)
        yield b + "ffn_norm.weight", (e,)
        yield b + "ffn_gate.weight", (ff, e)
        yield b + "ffn_up.weight", (ff, e)
        yield b + "ffn_down.weight", (e, ff)
        if cfg.has_qkv_bias:
            yield b + "attn_q.bias", (cfg.q_dim,)
            yield b + "attn_k.bias", (cfg.kv_dim,)
            yield b + "attn_v.bias", (cfg.kv_dim,)
