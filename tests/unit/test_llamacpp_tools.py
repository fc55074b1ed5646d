"""llama.cpp's tools found in the named place only, run with a rocmforge run's settings, and their output
read into rocmforge's types: fake llama-bench / llama-perplexity scripts print recorded-looking output
and refuse arguments that a rocmforge run would not pass."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pandas as pd
import pytest

from rocmforge.llamacpp import (
    LLAMA_DIR_ENV,
    LlamaCppError,
    LlamaCppNotFound,
    compare_ops,
    find_tool,
    kernel_base,
    kernel_op,
    last_repeat,
    parse_bench_jsonl,
    parse_ncu_csv,
    parse_perplexity,
    read_bench_jsonl,
    run_bench,
    run_kernel_profile,
    run_perplexity,
    run_tool,
)
from rocmforge.perplexity import Perplexity

# one line of a real llama-bench -o jsonl run (CUDA build), numbers as that build prints them
BENCH_LINE = {
    "build_commit": "a1b2c3d", "build_number": 6512, "cpu_info": "AMD EPYC", "gpu_info": "NVIDIA H100",
    "backends": "CUDA", "model_filename": "/m/tiny.gguf", "model_type": "llama 135M Q8_0",
    "model_size": 145833984, "model_n_params": 134515008, "n_batch": 2048, "n_ubatch": 512,
    "n_threads": 16, "type_k": "f16", "type_v": "f16", "n_gpu_layers": 99, "flash_attn": 1,
    "n_prompt": 8, "n_gen": 0, "n_depth": 0, "test_time": "2026-12-07T03:00:00Z", "avg_ns": 1000000,
    "stddev_ns": 1000, "avg_ts": 8000.0, "stddev_ts": 8.0, "samples_ns": [1000000], "samples_ts": [8000.0],
}


def fake_tool(d: Path, name: str, body: str) -> Path:
    """An executable Python script `d/name` whose body sees `args` (its argv[1:])."""
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_text(f"#!{sys.executable}\nimport json, sys\nargs = sys.argv[1:]\n{body}\n")
    p.chmod(0o755)
    return p


FAKE_BENCH = f"""
want = ["-m", "/m/tiny.gguf", "-p", "8", "-n", "4", "-r", "2", "-fa", "1", "-ngl", "99", "-o", "jsonl"]
if args != want:
    print("bad args", args, file=sys.stderr); sys.exit(3)
rec = {BENCH_LINE!r}
print("log line a build printed on stdout")
print(json.dumps(rec))
rec.update(n_prompt="0", n_gen="4", avg_ts="400.5", samples_ns=["10000000"], extra_field=True)
del rec["n_depth"]
print(json.dumps(rec))
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv(LLAMA_DIR_ENV, raising=False)


def test_explicit_dir_then_env_then_path(tmp_path, monkeypatch):
    a = fake_tool(tmp_path / "a", "llama-bench", "")
    b = fake_tool(tmp_path / "b" / "bin", "llama-bench", "")
    c = fake_tool(tmp_path / "c", "llama-bench", "")
    monkeypatch.setenv("PATH", f"{tmp_path / 'c'}{os.pathsep}{os.environ['PATH']}")
    assert find_tool("llama-bench") == c
    monkeypatch.setenv(LLAMA_DIR_ENV, str(tmp_path / "b"))
    assert find_tool("llama-bench") == b  # a build tree's bin/
    assert find_tool("llama-bench", tmp_path / "a") == a


def test_not_found_names_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    with pytest.raises(LlamaCppNotFound, match="looked on PATH"):
        find_tool("llama-bench")
    fake_tool(tmp_path / "c", "llama-bench", "")
    monkeypatch.setenv("PATH", str(tmp_path / "c"))
    # a named build that lacks the tool is an error, not a fall-back to another build on PATH
    with pytest.raises(LlamaCppNotFound, match=f"looked in --llama-dir {tmp_path / 'x'}"):
        find_tool("llama-bench", tmp_path / "x")
    monkeypatch.setenv(LLAMA_DIR_ENV, str(tmp_path / "y"))
    with pytest.raises(LlamaCppNotFound, match=rf"\${LLAMA_DIR_ENV}="):
        find_tool("llama-bench")


def test_run_bench_reads_jsonl_that_differs_between_builds(tmp_path):
    fake_tool(tmp_path, "llama-bench", FAKE_BENCH)
    res = run_bench("/m/tiny.gguf", 8, 4, 2, llama_dir=tmp_path)
    df = res.frame
    assert df["test"].tolist() == ["pp8", "tg4"]
    assert df["tool"].tolist() == ["llama.cpp"] * 2 and df["model"].tolist() == ["tiny.gguf"] * 2
    assert df["avg_ts"].tolist() == [8000.0, 400.5] and df["n_depth"].tolist() == [0, 0]
    assert df.loc[1, "samples_ns"] == [10000000.0] and bool(df.loc[1, "extra_field"])
    assert res.run.command_line.endswith("llama-bench -m /m/tiny.gguf -p 8 -n 4 -r 2 -fa 1 -ngl 99 -o jsonl")
    assert len(res.jsonl.splitlines()) == 2  # the log line left out


def test_bench_frame_joins_rocmforge_records(tmp_path):
    ours = dict(BENCH_LINE, build_commit="rocmforge-0.1.0", backends="numpy")
    f = tmp_path / "b.jsonl"
    f.write_text(json.dumps(ours) + "\n" + json.dumps(dict(BENCH_LINE, n_depth=512)) + "\n")
    df = read_bench_jsonl(f)
    assert df["tool"].tolist() == ["rocmforge", "llama.cpp"]
    assert df["test"].tolist() == ["pp8", "pp8 @ d512"]
    assert parse_bench_jsonl("").empty
    with pytest.raises(ValueError, match="line 2"):
        parse_bench_jsonl("\n{broken")


def test_depth_is_passed(tmp_path):
    fake_tool(tmp_path, "llama-bench", f"""
assert args[args.index("-d") + 1] == "256", args
print(json.dumps(dict({BENCH_LINE!r}, n_depth=256)))
""")
    assert run_bench("/m/tiny.gguf", 8, 0, 1, depth=256, llama_dir=tmp_path).frame["test"][0] == "pp8 @ d256"


def test_failures_are_one_line_errors(tmp_path):
    fake_tool(tmp_path, "llama-bench", 'print("loading", file=sys.stderr)\n'
                                       'print("error: failed to load model x", file=sys.stderr); sys.exit(1)')
    with pytest.raises(LlamaCppError, match="status 1: error: failed to load model x$"):
        run_bench("/m/tiny.gguf", llama_dir=tmp_path)
    slow = fake_tool(tmp_path / "s", "llama-bench", "import time; time.sleep(10)")
    with pytest.raises(LlamaCppError, match="timed out after 0.5 s"):
        run_tool([slow], timeout=0.5)
    fake_tool(tmp_path / "e", "llama-bench", "print('no records')")
    with pytest.raises(LlamaCppError, match="no JSONL records"):
        run_bench("/m/tiny.gguf", llama_dir=tmp_path / "e")


# what llama-perplexity prints (stderr: logs and the final estimate; stdout: the running values)
PPL_OUT = "[1]15.2391,[2]14.0012,[3]13.5000,\n"
PPL_ERR = ("perplexity: calculating perplexity over 3 chunks, n_ctx=128, batch_size=128, n_seq=1\n"
           "perplexity: 0.05 seconds per pass - ETA 0.00 minutes\n"
           "Final estimate: PPL = 13.5000 +/- 0.41234\n\nllama_perf_context_print: load time = 1 ms\n")


def test_run_perplexity_matches_rocmforge_chunking(tmp_path):
    fake_tool(tmp_path, "llama-perplexity", f"""
want = ["-m", "m.gguf", "-f", "t.txt", "-c", "128", "-b", "128", "-ngl", "99", "--chunks", "3"]
if args != want:
    print("bad args", args, file=sys.stderr); sys.exit(3)
sys.stdout.write({PPL_OUT!r}); sys.stderr.write({PPL_ERR!r})
""")
    res = run_perplexity("m.gguf", "t.txt", n_ctx=128, n_chunks=3, llama_dir=tmp_path)
    assert isinstance(res, Perplexity)
    assert (res.ppl, res.ppl_err, res.running) == (13.5, 0.41234, [15.2391, 14.0012, 13.5])
    assert res.nll == pytest.approx(math.log(13.5)) and res.n_scored == 3 * 63 and res.n_ctx == 128
    assert res.command[0] == str(tmp_path / "llama-perplexity") and "--chunks 3" in res.command_line
    assert str(res).startswith("PPL = 13.5000 +/- 0.41234 (3 chunks of 128")
    assert repr(res) == f"ToolPerplexity({res})"  # short in a notebook: no per-chunk list


def test_perplexity_without_final_estimate_is_an_error():
    with pytest.raises(LlamaCppError, match="Final estimate"):
        parse_perplexity("[1]15.2391,\nUnexpected negative standard deviation of log(prob)\n", 128)


def test_cli_perplexity_next_to_llama_perplexity(tmp_path, capsys):
    from rocmforge.cli import main
    from rocmforge.synth import write_tiny_model

    model = write_tiny_model(tmp_path / "m.gguf")
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat " * 20)
    want = ["-m", str(model), "-f", str(text), "-c", "16", "-b", "16", "-ngl", "99", "--chunks", "3"]
    tool = fake_tool(tmp_path / "ll", "llama-perplexity", f"""
if args != {want!r}:
    print("bad args", args, file=sys.stderr); sys.exit(3)
sys.stdout.write({PPL_OUT!r}); sys.stderr.write({PPL_ERR!r})
""")
    argv = ["perplexity", "--model", str(model), "--backend", "numpy", "-f", str(text), "-c", "16",
            "--chunks", "3"]
    assert main([*argv, "--llama-dir", str(tmp_path / "ll")]) == 0
    out = capsys.readouterr().out.splitlines()
    ours = float(out[1].split("PPL = ")[1].split()[0])
    assert out[2] == "llama.cpp: [1]15.2391,[2]14.0012,[3]13.5000,"
    assert out[3].startswith("llama.cpp: Final estimate: PPL = 13.5000 +/- 0.41234 (3 chunks of 16")
    assert out[4] == f"rocmforge / llama.cpp PPL: {ours / 13.5:.5f}"
    assert out[5] == f"llama.cpp command: {tool} {' '.join(want)}"
    # not found: one line naming where it looked, before our own run prints anything
    assert main([*argv, "--llama-dir", str(tmp_path / "none")]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    where = f"--llama-dir {tmp_path / 'none'} (and its bin/)"
    assert err.strip() == f"rocmforge: error: llama-perplexity not found: looked in {where}"


def test_recorded_runs_of_both_tools_sit_in_one_frame():
    """The repository's recorded llama-bench (CUDA build) and rocmforge runs of a model join by file name."""
    import pandas as pd

    from rocmforge.report import side_by_side

    bench = Path(__file__).resolve().parents[2] / "data" / "bench"
    df = pd.concat([read_bench_jsonl(bench / f) for f in ("llamabench_smol.jsonl", "rf_smol.jsonl")])
    assert sorted(set(df["tool"])) == ["llama.cpp", "rocmforge"]
    t = side_by_side(df)
    assert list(t.index) == [("smollm2-135m.gguf", t) for t in ("pp2048", "pp512", "tg128")]
    assert t.notna().all().all() and (t["rocmforge / llama.cpp"] > 0).all()


# ---- llama.cpp's kernels under ncu ------------------------------------------------------------------------

# llama.cpp's CUDA kernels of one decode layer as ncu demangles them (names cut down), then the head's
TOKEN = [
    "void rms_norm_f32<256, true, false>(const float *, float *, int, long, long, long, float)",
    "void quantize_q8_1(const float *, void *, long, long, long, long, long, long)",
    "void mul_mat_vec_q<(ggml_type)2, 1, false, false>(const void *, const void *, const int *, float *)",
    "void rope_neox<true, false, float>(const float *, float *, int, int, int, int, int, int, const int *)",
    "void k_set_rows<float, half, long>(const float *, const long *, half *, long, long)",
    "void flash_attn_ext_vec<64, 1, (ggml_type)1, (ggml_type)1, false>(const char *, const char *, float *)",
    "void k_bin_bcast<&op_add, float, float, float>(const float *, const float *, float *, int, int)",
    "void k_bin_bcast<&op_mul, float, float, float>(const float *, const float *, float *, int, int)",
    "void swiglu_f32(const float *, const float *, float *, long, long)",
    "void mystery_kernel(int)",
]


def ncu_csv(names: list[str], us: list[float], unit: str = "usecond") -> str:
    head = ('"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream",'
            '"gpu__time_duration.sum"')
    lines = ["==PROF== Connected to process 7 (llama-bench)", "| model | size | test | t/s |", head,
             f'"","","","","","","","{unit}"']
    for i, (n, t) in enumerate(zip(names, us, strict=True)):
        lines.append(f'"{i}","7","llama-bench","h","{n}","1","7","{t:,.3f}"')
    return "\n".join(lines) + "\n==PROF== Disconnected from process 7\n"


def test_kernel_names_map_to_ggml_ops():
    ops = [kernel_op(n) for n in TOKEN]
    assert ops == ["RMS_NORM", "QUANTIZE_X8", "MUL_MAT", "ROPE", "SET_ROWS", "FLASH_ATTN_EXT", "ADD", "MUL",
                   "SWIGLU", "other"]
    assert kernel_base(TOKEN[0]) == "rms_norm_f32"
    assert kernel_base("sm90_xmma_gemm_f16f16(int)") == "sm90_xmma_gemm_f16f16"
    assert kernel_op("sm90_xmma_gemm_f16f16_f32(int)") == "MUL_MAT"
    assert kernel_op("void unary_gated_op_kernel<&op_silu, float>(const float *)") == "SWIGLU"  # seen, H100


def test_ncu_csv_is_read_in_launch_order_in_microseconds():
    df = parse_ncu_csv(ncu_csv(TOKEN[:3], [1.5, 2.25, 1234.5]))
    assert list(df["op"]) == ["RMS_NORM", "QUANTIZE_X8", "MUL_MAT"]
    assert list(df["us"]) == [1.5, 2.25, 1234.5]  # "1,234.500" read as a number
    assert list(parse_ncu_csv(ncu_csv(TOKEN[:2], [1500, 80], unit="nsecond"))["us"]) == [1.5, 0.08]
    with pytest.raises(LlamaCppError, match="no CSV header"):
        parse_ncu_csv("==PROF== nothing profiled\n")
    with pytest.raises(LlamaCppError, match="Kernel Name"):
        parse_ncu_csv('"ID","Name"\n"1","x"\n')


def test_the_last_token_is_the_repeating_tail():
    names = ["load_a", "load_b", *TOKEN, *TOKEN, *TOKEN]
    assert last_repeat(names) == len(TOKEN)
    assert last_repeat(["a", "b", "c"]) == 3  # nothing repeats: all of it
    assert last_repeat(["x"] * 20, min_len=8) == 8


def test_run_kernel_profile_keeps_the_last_token_and_compares_by_part(tmp_path):
    bench = fake_tool(tmp_path, "llama-bench", "")
    times = [float(i + 1) for i in range(len(TOKEN))]
    fake_tool(tmp_path / "ncu", "ncu", f"""
assert args[args.index("-n") + 1] == "4" and args[args.index("-d") + 1] == "64", args
assert "--no-warmup" in args and args[args.index("-fa") + 1] == "1" and {str(bench)!r} in args, args
assert args[:2] == ["--csv", "--page"] and "gpu__time_duration.sum" in args, args
print({ncu_csv(["void warmup_kernel()"] + TOKEN * 4, [9.0] + times * 4)!r})
""")
    kp = run_kernel_profile("/m/tiny.gguf", depth=64, llama_dir=tmp_path, ncu=tmp_path / "ncu" / "ncu")
    assert len(kp.frame) == len(TOKEN) and kp.total_us == sum(times)
    assert kp.by_op().loc["MUL_MAT", "us"] == 3.0 and "10 kernels" in repr(kp)
    ours = pd.DataFrame({"op": ["MUL_MAT_SWIGLU", "MUL_MAT", "FLASH_ATTN_EXT", "RMS_NORM_MUL", "IDLE"],
                         "us": [4.0, 6.0, 2.0, 1.0, 0.5]})
    part = compare_ops(ours, kp.frame, by="part")
    assert part.loc["mat-vec / mat-mul", "rocmforge_us"] == 10.0
    assert part.loc["mat-vec / mat-mul", "llama_cpp_us"] == 2.0 + 3.0  # quantize_q8_1 + mul_mat_vec_q
    assert part.loc["mat-vec / mat-mul", "ratio"] == 2.0
    assert part.loc["attention", "llama_cpp_us"] == 4.0 + 5.0 + 6.0 and part.loc["idle", "llama_cpp_us"] == 0
    assert math.isnan(part.loc["idle", "ratio"])
    by_op = compare_ops(ours, kp.frame)
    assert by_op.loc["SWIGLU", "rocmforge_us"] == 0 and by_op.loc["MUL_MAT_SWIGLU", "llama_cpp_us"] == 0
    with pytest.raises(ValueError, match="by must be"):
        compare_ops(ours, kp.frame, by="layer")
    with pytest.raises(ValueError, match="no column 'kernel_us'"):
        compare_ops(ours, kp.frame, column="kernel_us")


def test_no_ncu_is_a_not_found_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LlamaCppNotFound, match="ncu"):
        run_kernel_profile("/m/tiny.gguf", llama_dir=tmp_path)
