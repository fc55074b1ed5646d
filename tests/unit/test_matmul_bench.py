"""rocmforge.matmul_bench: bench_matmul.py's table in long form, against the card's peaks, speedups, the plot,
and whole prompts as effective TFLOP/s (the prefill study's helpers, notebook 07)."""

from __future__ import annotations

import json

import matplotlib
import numpy as np
import pytest

from rocmforge import matmul_bench as MB

matplotlib.use("Agg")

TABLE = [
    {"type": "Q4_0", "N": 4096, "K": 4096, "M": 512, "auto": "blas", "dq_us": 7.0, "best": "mmq",
     "blas_us": 80.0, "blas_tflops": 214.7, "blas_nmse": 2e-6, "blas_tiles": [512, 4096],
     "mmq_us": 40.0, "mmq_tflops": 429.5, "mmq_nmse": 3e-5, "mmq:4x2_us": 50.0, "mmq:4x2_tflops": 343.6,
     "mmq:4x2_nmse": 3e-5},
    {"type": "Q6_K", "N": 896, "K": 4864, "M": 512, "auto": "blas", "dq_us": 3.0, "best": "blas",
     "blas_us": 30.0, "blas_tflops": 74.4, "blas_nmse": 2e-6},
]


def test_load_gives_one_row_per_path_and_checks_the_file(tmp_path):
    f = tmp_path / "m.json"
    head = {"gpu": "NVIDIA H100 80GB HBM3", "arch": "sm_90", "blas": "cublas"}
    f.write_text(json.dumps({**head, "table": TABLE}))
    meta, df = MB.load(f)
    assert meta == {"gpu": "NVIDIA H100 80GB HBM3", "arch": "sm_90", "blas": "cublas"}
    assert sorted(df["path"]) == ["blas", "blas", "mmq", "mmq:4x2"]  # dq_us is not a path
    row = df[(df["type"] == "Q4_0") & (df["path"] == "mmq:4x2")].iloc[0]
    assert row["us"] == 50.0 and row["shape"] == "4096x4096" and row["best"] == "mmq"
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a bench_matmul"):
        MB.load(bad)


def test_peaks_by_path_and_speedups_over_the_blas():
    df = MB.against_peak(MB.frame(TABLE), "H100 SXM")
    mmq = df[df["path"] == "mmq"].iloc[0]
    blas = df[(df["path"] == "blas") & (df["type"] == "Q4_0")].iloc[0]
    assert mmq["peak"] == 1979.0 and blas["peak"] == 989.0  # int8 TOPS for mmq, f16 for the rest
    assert mmq["of_peak"] == pytest.approx(429.5 / 1979.0)
    sp = MB.speedups(MB.frame(TABLE))
    assert sp.loc[("Q4_0", "4096x4096", 512), "mmq"] == pytest.approx(0.5)
    assert np.isnan(sp.loc[("Q6_K", "896x4864", 512), "mmq"])
    with pytest.raises(KeyError, match="tiled"):
        MB.speedups(MB.frame(TABLE), base="tiled")


def test_plot_draws_a_bar_per_path_and_the_peaks():
    ax = MB.plot(MB.frame(TABLE), "H100 SXM")
    assert len(ax.patches) == 2 * 3  # (type, shape) groups x paths, NaN bars included
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "f16 peak 989" in labels and "int8 peak 1979" in labels and "mmq:4x2" in labels


def test_prompt_tflops_of_both_tools():
    from rocmforge.llamacpp import parse_bench_jsonl

    recs = [
        {"build_commit": "rocmforge-0.1.0", "model_filename": "/tmp/a.gguf", "n_prompt": 512, "n_gen": 0,
         "model_n_params": 1_000_000_000, "avg_ts": 10.0, "samples_ts": [9.0, 100.0, 11.0]},
        {"build_commit": "b1234", "model_filename": "/tmp/a.gguf", "n_prompt": 512, "n_gen": 0,
         "model_n_params": 1_000_000_000, "avg_ts": 5000.0},
        {"build_commit": "b1234", "model_filename": "/tmp/a.gguf", "n_prompt": 0, "n_gen": 128,
         "model_n_params": 1_000_000_000, "avg_ts": 300.0},
    ]
    df = MB.prompt_tflops(parse_bench_jsonl("\n".join(json.dumps(r) for r in recs)))
    assert list(df["tool"]) == ["rocmforge", "llama.cpp"]  # the tg record is not a prompt
    assert df["ts"].tolist() == [11.0, 5000.0]  # the median of the runs where given
    assert df["tflops"].tolist() == pytest.approx([2 * 1e9 * 11 / 1e12, 2 * 1e9 * 5000 / 1e12])
    assert df["model"].tolist() == ["a.gguf", "a.gguf"]
