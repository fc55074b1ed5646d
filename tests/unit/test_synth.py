"""rocmforge.synth and `rocmforge synth`: random-weight files with a real model's exact layout."""

from __future__ import annotations

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge import quant, synth
from rocmforge.cli import main
from rocmforge.config import ModelConfig
from rocmforge.engine import Engine
from rocmforge.gguf import GGUFFile


def _layout(f: GGUFFile) -> list:
    return [(n, t.shape, t.ggml_type) for n, t in f.tensors.items()]


@pytest.mark.parametrize("wtype", [Q.Q4_0, Q.Q8_0, Q.Q5_0, Q.Q4_1])
def test_a_random_model_has_the_presets_shapes_and_finite_weights(tmp_path, wtype):
    p = synth.write_random_model(tmp_path / "m.gguf", "smollm2-135m", wtype, seed=1)
    f = GGUFFile(p)
    cfg = ModelConfig.from_gguf(f)
    want = synth.PRESETS["smollm2-135m"]
    assert (cfg.n_layer, cfg.n_embd, cfg.n_ff, cfg.n_vocab) == (
        want["n_layer"], want["n_embd"], want["n_ff"], want["n_vocab"])
    emb = f.tensors["token_embd.weight"]
    assert emb.ggml_type == wtype and "output.weight" not in f.tensors
    rows = quant.dequantize(f.raw("blk.0.ffn_up.weight"), quant.QType(wtype), (1536, 576))
    assert np.isfinite(rows).all() and 0 < np.abs(rows).max() < 100


def test_an_unknown_preset_or_type_fails_before_writing(tmp_path):
    with pytest.raises(ValueError, match="preset"):
        synth.write_random_model(tmp_path / "a.gguf", "gpt-5", Q.Q4_0)
    with pytest.raises(ValueError, match="no random blocks"):
        synth.write_random_model(tmp_path / "b.gguf", "smollm2-135m", Q.IQ2_XXS)
    with pytest.raises(ValueError, match="do not divide"):  # 576 is no multiple of 256
        synth.write_random_model(tmp_path / "c.gguf", "smollm2-135m", Q.Q4_K)
    assert not list(tmp_path.iterdir())


def test_a_copy_has_the_sources_layout_and_metadata(tmp_path):
    src = synth.write_tiny_model(tmp_path / "src.gguf", "qwen2", wtype=Q.Q8_0, n_embd=64, n_ff=128)
    out = synth.write_like(src, tmp_path / "like.gguf", seed=2)
    a, b = GGUFFile(src), GGUFFile(out)
    assert _layout(a) == _layout(b) and a.file_size == b.file_size
    assert {k: str(v) for k, v in a.metadata.items()} == {k: str(v) for k, v in b.metadata.items()}
    assert not np.array_equal(a.raw("blk.0.attn_q.weight"), b.raw("blk.0.attn_q.weight"))
    np.testing.assert_array_equal(a.raw("blk.0.attn_norm.weight"), b.raw("blk.0.attn_norm.weight"))
    eng = Engine.from_gguf(out, backend="numpy", max_ctx=16)
    assert np.isfinite(eng.prefill([1, 2, 3])).all()
    retyped = GGUFFile(synth.write_like(src, tmp_path / "q4.gguf", Q.Q4_0))
    assert retyped.tensors["blk.0.ffn_up.weight"].ggml_type == Q.Q4_0


@pytest.mark.parametrize("wtype", [Q.Q4_K, Q.Q6_K])
def test_k_quant_copies_dequantize_to_finite_values(tmp_path, wtype):
    src = synth.write_tiny_model(tmp_path / "src.gguf", "llama", n_embd=256, n_ff=512)
    f = GGUFFile(synth.write_like(src, tmp_path / "k.gguf", wtype))
    rows = quant.dequantize(f.raw("blk.1.ffn_down.weight"), quant.QType(wtype), (256, 512))
    assert np.isfinite(rows).all() and 0 < np.abs(rows).max() < 100


def test_cli_synth_writes_whole_files_only(tmp_path, capsys):
    out = tmp_path / "s.gguf"
    assert main(["synth", "smollm2-135m", "q4_0", str(out)]) == 0
    assert out.is_file() and not (tmp_path / "s.gguf.part").exists()
    assert main(["synth", "smollm2-135m", "q4_0", str(out)]) == 2  # exists
    assert "--force" in capsys.readouterr().err
    assert main(["synth", "smollm2-135m", "keep", str(tmp_path / "k.gguf")]) == 2
    assert main(["synth", "smollm2-135m", "Q9_9", str(tmp_path / "z.gguf")]) == 2
    assert main(["synth", str(tmp_path / "missing.gguf"), "keep", str(tmp_path / "c.gguf")]) == 2
    assert main(["synth", str(out), "keep", str(tmp_path / "c.gguf")]) == 0
    assert _layout(GGUFFile(out)) == _layout(GGUFFile(tmp_path / "c.gguf"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.gguf", "s.gguf"]


@pytest.mark.parametrize("arch, pre", [("llama", "gpt-2"), ("qwen2", "qwen2")])
def test_synthetic_files_name_a_pre_tokenizer_llama_cpp_loads(tmp_path, arch, pre):
    # llama.cpp refuses an unknown tokenizer.ggml.pre ("gpt2" is one: its name is "gpt-2"), and then
    # llama-bench cannot run the file beside ours
    f = GGUFFile(synth.write_tiny_model(tmp_path / "m.gguf", arch))
    assert str(f.metadata["tokenizer.ggml.pre"]) == pre
