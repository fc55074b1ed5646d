"""rocmforge.config.ModelConfig from GGUF metadata: values, llama.cpp defaults and errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from gguf import GGUFValueType as VT
from gguf_factory import N_EMBD, N_LAYER, fails_fast, real_model, write_model

from rocmforge.config import SUPPORTED_ARCHS, ModelConfig
from rocmforge.gguf import GGUFError, GGUFFile


def _cfg(path: Path) -> ModelConfig:
    with GGUFFile.open(path) as f:
        return ModelConfig.from_gguf(f)


def test_llama_values(tmp_path: Path) -> None:
    cfg = _cfg(write_model(tmp_path / "l.gguf"))
    assert cfg == ModelConfig(
        arch="llama", name="tiny test model", n_layer=2, n_embd=64, n_ff=128, n_head=4, n_head_kv=2,
        head_dim=16, rope_dim=16, rope_base=50000.0, rope_scale=1.0, rope_neox=False,
        norm_eps=pytest.approx(1e-6), n_ctx_train=256, n_vocab=300, tied_output=True,
        has_qkv_bias=False, file_type=7,
    )
    assert (cfg.n_gqa, cfg.q_dim, cfg.kv_dim) == (2, 64, 32)
    assert SUPPORTED_ARCHS == ("llama", "qwen2")


def test_qwen2_values(tmp_path: Path) -> None:
    cfg = _cfg(write_model(tmp_path / "q.gguf", "qwen2", tied=False, qkv_bias=True))
    assert cfg.arch == "qwen2" and cfg.rope_neox is True
    assert cfg.tied_output is False and cfg.has_qkv_bias is True


def test_llama_cpp_defaults(tmp_path: Path) -> None:
    # no freq_base / rms eps / head_count_kv: 10000, 1e-5, n_head (attn_k/v then need n_embd rows)
    kv_full = {f"blk.{i}.attn_{x}.weight": np.zeros((N_EMBD, N_EMBD), np.float32)
               for i in range(N_LAYER) for x in "kv"}
    drop = ["llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.attention.head_count_kv",
            "general.name"]
    p = write_model(tmp_path / "d.gguf", drop_kv=drop, tensor_update=kv_full)
    cfg = _cfg(p)
    assert cfg.rope_base == 10000.0 and cfg.norm_eps == 1e-5
    assert cfg.n_head_kv == cfg.n_head == 4
    assert cfg.name == "d"  # file stem without general.name
    assert cfg.file_type == 7


def test_explicit_head_and_rope_dims_and_vocab_size(tmp_path: Path) -> None:
    p = write_model(tmp_path / "k.gguf", kv_update={
        "llama.attention.key_length": (16, VT.UINT32, None),
        "llama.rope.dimension_count": (8, VT.UINT32, None),
        "llama.vocab_size": (300, VT.UINT32, None),
        "llama.attention.head_count": ([4, 4], VT.ARRAY, VT.UINT32),  # per-layer, all equal
    })
    cfg = _cfg(p)
    assert (cfg.head_dim, cfg.rope_dim, cfg.n_vocab, cfg.n_head) == (16, 8, 300, 4)


@pytest.mark.parametrize("kv, scale", [
    ({"llama.rope.scaling.type": ("linear", VT.STRING, None),
      "llama.rope.scaling.factor": (4.0, VT.FLOAT32, None)}, 0.25),
    ({"llama.rope.scaling.factor": (4.0, VT.FLOAT32, None)}, 0.25),  # type defaults to linear
    ({"llama.rope.scale_linear": (2.0, VT.FLOAT32, None)}, 0.5),  # the old key
    ({"llama.rope.scaling.type": ("none", VT.STRING, None),
      "llama.rope.scaling.factor": (4.0, VT.FLOAT32, None)}, 1.0),
    ({"llama.rope.scaling.type": ("yarn", VT.STRING, None)}, 1.0),  # no factor: no scaling
])
def test_rope_scale(tmp_path: Path, kv: dict, scale: float) -> None:
    assert _cfg(write_model(tmp_path / "r.gguf", kv_update=kv)).rope_scale == scale


def _raises(p: Path, problem: str) -> None:
    with GGUFFile.open(p) as f, pytest.raises(GGUFError, match=re.escape(str(p)) + ": .*" + problem):
        ModelConfig.from_gguf(f)


def test_unsupported_arch(tmp_path: Path) -> None:
    _raises(write_model(tmp_path / "g.gguf", "gpt2"),
            re.escape("unsupported architecture 'gpt2' (supported: llama, qwen2)"))


def test_unsupported_rope_scaling(tmp_path: Path) -> None:
    p = write_model(tmp_path / "y.gguf", kv_update={"llama.rope.scaling.type": ("yarn", VT.STRING, None),
                                                     "llama.rope.scaling.factor": (4.0, VT.FLOAT32, None)})
    _raises(p, "rope scaling type 'yarn'.* not supported")


@pytest.mark.parametrize("key", ["llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                                 "llama.attention.head_count", "llama.context_length"])
def test_missing_required_key(tmp_path: Path, key: str) -> None:
    p = write_model(tmp_path / "m.gguf", drop_kv=[key])
    _raises(p, f"missing required metadata key '{re.escape(key)}'")


def test_missing_vocab(tmp_path: Path) -> None:
    _raises(write_model(tmp_path / "v.gguf", tokenizer=False),
            r"missing required metadata key 'llama.vocab_size' \(no tokenizer.ggml.tokens\)")


@pytest.mark.parametrize("kv, problem", [
    ({"llama.block_count": ("two", VT.STRING, None)}, r"'llama.block_count' must be an integer, got str"),
    ({"llama.embedding_length": (0, VT.UINT32, None)}, r"'llama.embedding_length' must be positive"),
    ({"llama.attention.head_count_kv": (3, VT.UINT32, None)}, r"head_count 4 is not a multiple of .* 3"),
    ({"llama.rope.freq_base": ("big", VT.STRING, None)}, r"'llama.rope.freq_base' must be a number"),
    ({"llama.rope.dimension_count": (32, VT.UINT32, None)}, r"rope.dimension_count 32 must be even and <="),
    ({"llama.attention.head_count": ([4, 2], VT.ARRAY, VT.UINT32)}, r"varies per layer"),
])
def test_bad_values(tmp_path: Path, kv: dict, problem: str) -> None:
    _raises(write_model(tmp_path / "b.gguf", kv_update=kv), problem)


@pytest.mark.parametrize("name", ["token_embd.weight", "output_norm.weight", "blk.1.ffn_down.weight",
                                  "blk.0.attn_k.weight", "blk.1.attn_norm.weight"])
def test_missing_tensor(tmp_path: Path, name: str) -> None:
    p = write_model(tmp_path / "t.gguf", drop_tensors=[name])
    _raises(p, f"missing required tensor '{re.escape(name)}'")


def test_huge_block_count_fails_fast(tmp_path: Path) -> None:
    p = write_model(tmp_path / "h.gguf", kv_update={"llama.block_count": (2**31, VT.UINT32, None)})
    with fails_fast():
        _raises(p, "missing required tensor 'blk.2.attn_norm.weight'")


def test_missing_bias_in_later_layer(tmp_path: Path) -> None:
    p = write_model(tmp_path / "b.gguf", "qwen2", tied=False, qkv_bias=True,
                    drop_tensors=["blk.1.attn_v.bias"])
    _raises(p, "missing required tensor 'blk.1.attn_v.bias'")


@pytest.mark.parametrize("name, shape, want", [
    ("blk.0.attn_q.weight", (32, 64), "[64, 64]"),
    ("blk.1.ffn_up.weight", (64, 64), "[128, 64]"),
    ("token_embd.weight", (301, 64), "[300, 64]"),
    ("output_norm.weight", (32,), "[64]"),
])
def test_wrong_tensor_shape(tmp_path: Path, name: str, shape: tuple[int, ...], want: str) -> None:
    p = write_model(tmp_path / "s.gguf", tensor_update={name: np.zeros(shape, np.float32)})
    _raises(p, re.escape(f"tensor '{name}' has shape {list(shape)}, expected {want}"))


def test_vocab_size_disagrees_with_embedding(tmp_path: Path) -> None:
    p = write_model(tmp_path / "v.gguf", kv_update={"llama.vocab_size": (320, VT.UINT32, None)})
    _raises(p, re.escape("tensor 'token_embd.weight' has shape [300, 64], expected [320, 64]"))


@pytest.mark.models
def test_real_models() -> None:
    with GGUFFile.open(real_model("smollm2-135m")) as f:
        c = ModelConfig.from_gguf(f)
    assert (c.arch, c.n_layer, c.n_embd, c.n_ff) == ("llama", 30, 576, 1536)
    assert (c.n_head, c.n_head_kv, c.head_dim) == (9, 3, 64)
    assert (c.n_vocab, c.tied_output, c.has_qkv_bias, c.rope_neox) == (49152, True, False, False)
    assert (c.rope_base, c.rope_dim, c.n_ctx_train) == (100000.0, 64, 8192)
    with GGUFFile.open(real_model("qwen2.5-0.5b")) as f:
        c = ModelConfig.from_gguf(f)
    assert (c.arch, c.n_layer, c.n_embd, c.n_ff) == ("qwen2", 24, 896, 4864)
    assert (c.n_head, c.n_head_kv, c.head_dim) == (14, 2, 64)
    assert (c.n_vocab, c.tied_output, c.has_qkv_bias, c.rope_neox) == (151936, False, True, True)
    assert (c.rope_base, c.n_ctx_train) == (1000000.0, 32768)
    assert c.norm_eps == pytest.approx(1e-6)
