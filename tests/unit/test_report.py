"""`rocmforge report`: end to end on a tiny model with the numpy backend (no llama.cpp: the page says
so), rebuilt from its data/ alone; with a fake llama-bench the speed table sits side by side with ratios;
bad arguments and failed runs leave one line and no half-written files."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pandas as pd
import pytest

from rocmforge.cli import main
from rocmforge.llamacpp import LLAMA_DIR_ENV
from rocmforge.profile import IDLE
from rocmforge.report import DATA, ENV_FILE, PAGE, load_bench, side_by_side
from rocmforge.synth import write_tiny_model

RUN = ["--backend", "numpy", "-p", "8", "-n", "4", "-r", "1"]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return write_tiny_model(tmp_path / "tiny.gguf")


@pytest.fixture(autouse=True)
def _no_llama(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an empty directory named: llama.cpp is never found by accident on this machine's PATH
    (tmp_path / "no-llama").mkdir()
    monkeypatch.setenv(LLAMA_DIR_ENV, str(tmp_path / "no-llama"))


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse's own exit, through _Parser.error
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def _strip_images(page: str) -> str:
    return re.sub(r"base64,[A-Za-z0-9+/=]+", "base64,", page)


def test_report_end_to_end_then_rebuilt_from_data(tmp_path, model, capsys):
    out = tmp_path / "rep"
    rc, stdout, err = _run(capsys, "report", "--model", str(model), "--out", str(out), *RUN)
    assert rc == 0, err
    assert stdout.strip() == str(out / PAGE)
    assert "llama-bench not found" in err and "[1/1] tiny: rocmforge bench pp8 tg4" in err  # progress
    assert sorted(p.name for p in out.iterdir()) == [DATA, PAGE]  # no temp dir left
    data = out / DATA
    assert sorted(p.name for p in data.iterdir()) == [ENV_FILE, "ops_tiny.csv", "rocmforge_bench.jsonl"]
    rec = json.loads((data / ENV_FILE).read_text())
    assert rec["environment"]["python"] and rec["environment"]["numpy"] and rec["environment"]["cpu"]
    assert rec["llama_cpp"]["found"] is False and LLAMA_DIR_ENV in rec["llama_cpp"]["note"]
    assert [c["command"] for c in rec["commands"]][1] == \
        f"rocmforge bench --model {model} --backend numpy -p 8 -n 4 -r 1"
    bench = load_bench(data)
    assert bench["test"].tolist() == ["pp8", "tg4"] and set(bench["tool"]) == {"rocmforge"}
    ops = pd.read_csv(data / "ops_tiny.csv")
    assert "MUL_MAT" in set(ops["op"]) and ops["op"].iloc[-1] == IDLE
    assert ops["us"].sum() == pytest.approx(rec["models"][0]["wall_us"])

    page = (out / PAGE).read_text()
    assert "llama.cpp was not found" in page
    assert page.count('src="data:image/png;base64,') == 2  # the speed figure and one op-share figure
    for text in ("pp8", "tg4", "MUL_MAT", f"<th>{IDLE}</th>", "Timing mode <b>host</b>",
                 f"rocmforge report --from {out}", rec["environment"]["numpy"]):
        assert text in page, text

    (out / PAGE).unlink()
    rc, stdout, err = _run(capsys, "report", "--from", str(out))
    assert rc == 0, err
    rebuilt = (out / PAGE).read_text()
    assert _strip_images(rebuilt) == _strip_images(page)
    assert rebuilt == page  # the figures too: the page depends on data/ alone


# llama-bench's JSONL for the tiny model: 4x rocmforge's pp speed is unknowable, so give fixed speeds
FAKE_LLAMA_BENCH = """#!{python}
import json, sys
args = sys.argv[1:]
want = ["-p", "8", "-n", "4", "-r", "1", "-fa", "1", "-ngl", "99", "-o", "jsonl"]
if args[0] != "-m" or args[2:] != want:
    print("unexpected arguments", args, file=sys.stderr); sys.exit(2)
for p, g, ts in ((8, 0, 1000.0), (0, 4, 50.0)):
    print(json.dumps({{"build_commit": "abc1234", "build_number": 7000, "gpu_info": "NVIDIA H100",
                      "backends": "CUDA", "model_filename": args[1], "n_prompt": p, "n_gen": g,
                      "avg_ts": str(ts), "stddev_ts": 1.5, "samples_ns": [1], "samples_ts": [ts]}}))
"""


def _fake_llama(d: Path, body: str = FAKE_LLAMA_BENCH) -> Path:
    d.mkdir()
    tool = d / "llama-bench"
    tool.write_text(body.format(python=sys.executable))
    tool.chmod(0o755)
    return d


def test_report_side_by_side_with_llama_bench(tmp_path, model, capsys):
    llama = _fake_llama(tmp_path / "llama")
    out = tmp_path / "rep"
    rc, _, err = _run(capsys, "report", "--model", str(model), "--out", str(out), "--llama-dir", str(llama),
                      *RUN)
    assert rc == 0, err
    bench = load_bench(out / DATA)
    assert bench.groupby("tool")["test"].apply(list).to_dict() == {"llama.cpp": ["pp8", "tg4"],
                                                                     "rocmforge": ["pp8", "tg4"]}
    t = side_by_side(bench)
    assert list(t.index) == [("tiny.gguf", "pp8"), ("tiny.gguf", "tg4")]
    assert t["llama.cpp t/s"].tolist() == [1000.0, 50.0]
    ours = bench[bench.tool == "rocmforge"].set_index("test")["avg_ts"]
    assert t["rocmforge / llama.cpp"].tolist() == pytest.approx([ours["pp8"] / 1000.0, ours["tg4"] / 50.0])
    rec = json.loads((out / DATA / ENV_FILE).read_text())
    assert rec["llama_cpp"]["build"]["build_commit"] == "abc1234"
    cmd = [c["command"] for c in rec["commands"] if c["what"].endswith("llama-bench")]
    assert cmd == [f"{llama / 'llama-bench'} -m {model} -p 8 -n 4 -r 1 -fa 1 -ngl 99 -o jsonl"]
    page = (out / PAGE).read_text()
    assert "llama.cpp was not found" not in page and "abc1234" in page
    assert f"{ours['tg4'] / 50.0:.3f}" in page  # the ratio column


FAKE_NCU = """#!{python}
import sys
args = sys.argv[1:]
assert "--no-warmup" in args and args[args.index("-d") + 1] == "2", args
kernels = ["void rms_norm_f32<256, true, false>(const float *)", "void mul_mat_vec_q<(ggml_type)8>(int)",
           "void flash_attn_ext_vec<64, 1>(int)", "void k_bin_bcast<&op_add, float>(int)"] * 2
kernels[4] = "void rope_neox<true>(int)"  # a token is 8 kernels (last_repeat's shortest)
print('"ID","Kernel Name","gpu__time_duration.sum"')
print('"","","usecond"')
for i, k in enumerate(["void load()"] + kernels * 3):
    print(f'"{{i}}","{{k}}","{{1.0 + (i - 1) % 8}}"')
"""


def test_report_puts_llama_cpps_kernels_beside_our_ops_where_ncu_is_found(tmp_path, model, capsys,
                                                                          monkeypatch):
    llama = _fake_llama(tmp_path / "llama")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ncu").write_text(FAKE_NCU.format(python=sys.executable))
    (bin_dir / "ncu").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    out = tmp_path / "rep"
    rc, _, err = _run(capsys, "report", "--model", str(model), "--out", str(out), "--llama-dir", str(llama),
                      *RUN)
    assert rc == 0, err
    kern = pd.read_csv(out / DATA / "llama_kernels_tiny.csv")
    assert list(kern["op"]) == ["RMS_NORM", "MUL_MAT", "FLASH_ATTN_EXT", "ADD", "ROPE", "MUL_MAT",
                                "FLASH_ATTN_EXT", "ADD"]  # the last token's
    assert list(kern["us"]) == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    page = (out / PAGE).read_text()
    assert "op by op against llama.cpp" in page and "8 kernels of one decode token" in page
    assert re.search(r"<th>attention</th>\s*<td>[\d.]+</td>\s*<td>15.0</td>", page)  # 3 + 5 + 7
    (out / PAGE).unlink()
    assert main(["report", "--from", str(out)]) == 0
    assert "op by op against llama.cpp" in (out / PAGE).read_text()


def test_a_failed_run_leaves_nothing(tmp_path, model, capsys):
    llama = _fake_llama(tmp_path / "llama", "#!/bin/sh\necho 'error: out of memory' >&2\nexit 1\n")
    out = tmp_path / "rep"
    rc, _, err = _run(capsys, "report", "--model", str(model), "--out", str(out), "--llama-dir", str(llama),
                      *RUN)
    assert rc == 2 and err.strip().splitlines()[-1] == \
        "rocmforge: error: llama-bench exited with status 1: error: out of memory"
    assert not out.exists()  # it made DIR, so it takes it away again
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    rc, _, _ = _run(capsys, "report", "--model", str(model), "--out", str(kept), "--llama-dir", str(llama),
                    *RUN)
    assert rc == 2 and [p.name for p in kept.iterdir()] == ["notes.txt"]
    assert _run(capsys, "report", "--model", str(model), "--out", str(kept), *RUN)[0] == 0
    before = {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()}
    rc, _, _ = _run(capsys, "report", "--model", str(model), "--out", str(kept), "--llama-dir", str(llama),
                    *RUN)
    assert rc == 2  # the previous report stays whole
    assert {p.relative_to(kept): p.read_bytes() for p in kept.rglob("*") if p.is_file()} == before
    assert _run(capsys, "report", "--model", str(model), "--out", str(kept), *RUN)[0] == 0
    assert sorted(p.name for p in kept.iterdir()) == [DATA, "notes.txt", PAGE]  # replaced, nothing aside


@pytest.mark.parametrize("argv, says", [
    (["-p", "-1"], "-1 is not a non-negative integer"),
    (["-r", "0"], "0 is not a positive integer"),
    (["-p", "0", "-n", "0"], "nothing to run"),
    (["--llama-timeout", "0"], "0 is not a positive number of seconds"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, model, capsys, argv, says):
    out = tmp_path / "rep"
    rc, _, err = _run(capsys, "report", "--model", str(model), "--out", str(out), "--backend", "numpy", *argv)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and says in err, err
    assert not out.exists()


def test_from_takes_a_report_dir_and_nothing_else(tmp_path, model, capsys):
    rc, _, err = _run(capsys, "report", "--from", str(tmp_path), "--model", str(model))
    assert rc == 2 and "it takes no --model" in err
    rc, _, err = _run(capsys, "report", "--from", str(tmp_path))
    assert rc == 2 and f"{tmp_path / DATA / ENV_FILE} not found" in err
    rc, _, err = _run(capsys, "report", "--model", str(model))
    assert rc == 2 and "one of the arguments --out --from is required" in err
    rc, _, err = _run(capsys, "report", "--out", str(tmp_path / "a"), "--from", str(tmp_path))
    assert rc == 2 and "not allowed with argument" in err


def test_step_timings_come_back_from_their_csv(tmp_path):
    from rocmforge.ir.cost import Cost
    from rocmforge.profile import OpTiming, StepTimings, summary, timings_frame
    from rocmforge.report import step_timings

    t = StepTimings([OpTiming("blk.0.attn_q", "MUL_MAT", (1, 64), 30.5),
                     OpTiming("norm", "RMS_NORM", (64,), 4.25),
                     OpTiming("blk.1.attn_q", "MUL_MAT", (1, 64), 31.0)], "graph", wall_us=80.0)
    t.costs = {"blk.0.attn_q": Cost(8192, 256, 8192), "norm": Cost(256, 256, 192),
               "blk.1.attn_q": Cost(8192, 256, 8192)}
    timings_frame(t).to_csv(tmp_path / "ops.csv", index=False)
    back = step_timings(pd.read_csv(tmp_path / "ops.csv"), "graph", 80.0)
    assert list(back) == list(t) and back.costs == t.costs and back.idle_us == pytest.approx(14.25)
    pd.testing.assert_frame_equal(summary(back), summary(t))


def test_side_by_side_takes_each_tools_median_run():
    """llama-bench's first prompt run is often a slow outlier: the table compares medians, not means."""
    import pandas as pd

    rows = [{"tool": "llama.cpp", "model": "m.gguf", "test": "pp512", "avg_ts": 43768.3, "stddev_ts": 18587.3,
             "samples_ts": [22308.0, 54213.0, 54784.0]},
            {"tool": "rocmforge", "model": "m.gguf", "test": "pp512", "avg_ts": 105718.7, "stddev_ts": 1050.0,
             "samples_ts": [104537.0, 106064.0, 106555.0]},
            {"tool": "llama.cpp", "model": "m.gguf", "test": "tg128", "avg_ts": 934.3, "stddev_ts": 15.6,
             "samples_ts": None},
            {"tool": "rocmforge", "model": "m.gguf", "test": "tg128", "avg_ts": 1144.9, "stddev_ts": 3.0,
             "samples_ts": []}]
    t = side_by_side(pd.DataFrame(rows))
    assert t["llama.cpp t/s"].tolist() == [54213.0, 934.3]  # no samples: the mean it has
    assert t["rocmforge t/s"].tolist() == [106064.0, 1144.9]
    ratio = t["rocmforge / llama.cpp"].tolist()
    assert ratio == pytest.approx([106064 / 54213, 1144.9 / 934.3])
