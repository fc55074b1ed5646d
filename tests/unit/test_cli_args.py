"""Every bad value of every option, walked through the CLI: exit status 2 and one line saying what is wrong,
before any work is done; interrupted generation still prints its statistics."""

from __future__ import annotations

import re

import pytest

from rocmforge.cli import main
from rocmforge.synth import write_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    path = write_tiny_model(tmp_path_factory.mktemp("m") / "tiny.gguf")
    (path.parent / "tiny.gguf.txt").write_text("the cat " * 5)
    return str(path)


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    monkeypatch.setenv("ROCMFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("ROCMFORGE_OFFLINE", "1")


GEN = ["generate", "--backend", "numpy"]
BENCH = ["bench", "--backend", "numpy", "-p", "4", "-n", "2", "-r", "1"]
BAD = [  # (argv, with {m} for the model, a regex the one-line message must match)
    (GEN + ["--model", "{m}", "--max-tokens", "0", "hi"], r"--max-tokens: 0 is not a positive integer"),
    (GEN + ["--model", "{m}", "--max-tokens", "-3", "hi"], r"--max-tokens: -3 is not a positive integer"),
    (GEN + ["--model", "{m}", "--max-tokens", "x", "hi"], r"--max-tokens: 'x' is not a positive integer"),
    (GEN + ["--model", "{m}", "--max-ctx", "0", "hi"], r"--max-ctx: 0 is not a positive integer"),
    (GEN + ["--model", "{m}", "--temp", "-1", "hi"], r"--temp: -1 is not a temperature >= 0"),
    (GEN + ["--model", "{m}", "--temp", "nan", "hi"], r"--temp: nan is not a temperature >= 0"),
    (GEN + ["--model", "{m}", "--temp", "inf", "hi"], r"--temp: inf is not a temperature >= 0"),
    (GEN + ["--model", "{m}", "--top-k", "-1", "hi"], r"--top-k: -1 is not a non-negative integer"),
    (GEN + ["--model", "{m}", "--top-p", "5", "hi"], r"--top-p: 5 is not a probability in \(0, 1\]"),
    (GEN + ["--model", "{m}", "--top-p", "0", "hi"], r"--top-p: 0 is not a probability"),
    (GEN + ["--model", "{m}", "--seed", "-1", "hi"], r"--seed: -1 is not a non-negative integer"),
    (["generate", "--model", "{m}", "--backend", "cuda", "hi"], r"--backend: invalid choice: 'cuda'"),
    (GEN + ["--model", "{m}/nope.gguf", "hi"], r"no such file or known model"),
    (GEN + ["--model", "{m}"], r"the following arguments are required: PROMPT"),
    (GEN + ["--model", "{m}", "--max-ctx", "2", "the cat sat on the mat"], r"exceed max_ctx=2"),
    (BENCH + ["--model", "{m}", "-n", "-2"], r"-n: -2 is not a non-negative integer"),
    (BENCH + ["--model", "{m}", "-p", "-4"], r"-p: -4 is not a non-negative integer"),
    (BENCH + ["--model", "{m}", "-r", "0"], r"-r: 0 is not a positive integer"),
    (BENCH + ["--model", "{m}", "-d", "-1"], r"-d: -1 is not a non-negative integer"),
    (BENCH + ["--model", "{m}", "-p", "0", "-n", "0"], r"-p 0 and -n 0: nothing to run"),
    (BENCH + ["--model", "{m}", "-o", "/nonexistent-dir/b.jsonl"], r"No such file or directory"),
    (BENCH + ["--model", "{m}/nope.gguf"], r"no such file or known model"),
    (BENCH + ["--model", "{m}", "-ctk", "q8_0"], r"--kv-type: invalid choice: 'q8_0'"),
    (["info", "{m}/nope.gguf"], r"no such file or known model"),
    (["info", "--jsn"], r"unrecognized arguments: --jsn"),
    (["models", "fetch", "gpt-5"], r"unknown model 'gpt-5'"),
    (["models", "fetch"], r"the following arguments are required: NAME"),
    (["models", "drop"], r"invalid choice: 'drop'"),
    (["synth", "llama-7b", "Q9_9", "{m}.out"], r"unknown type 'Q9_9'"),
    (["synth", "llama-7b", "q4_0", "{m}"], r"exists; --force to overwrite"),
    (["synth", "llama-7b", "q4_0", "{m}.out", "--seed", "-2"], r"--seed: -2 is not a non-negative"),
    (["perplexity", "--model", "{m}"], r"the following arguments are required: -f/--file"),
    (["perplexity", "--model", "{m}", "-f", "{m}.none"], r"No such file or directory"),
    (["perplexity", "--model", "{m}", "-f", "{m}"], r"tiny.gguf is not UTF-8 text"),
    (["perplexity", "--backend", "numpy", "--model", "{m}", "-f", "{m}.txt", "-c", "64"],
     r"needs at least 128 \(two chunks\)"),
    (["perplexity", "--model", "{m}", "-f", "{m}", "-c", "7"], r"-c/--ctx-size: 7 is not an even number"),
    (["perplexity", "--model", "{m}", "-f", "{m}", "-c", "2"], r"-c/--ctx-size: 2 is not an even number"),
    (["perplexity", "--model", "{m}", "-f", "{m}", "--chunks", "0"], r"--chunks: 0 is not a positive"),
    (["perplexity", "--model", "{m}", "-f", "{m}", "--backend", "x"], r"--backend: invalid choice: 'x'"),
    (["perplexity", "--model", "{m}/x.gguf", "-f", "{m}.txt"], r"no such file or known model"),
    (["perplexity", "--model", "{m}", "-f", "{m}.txt", "--llama-dir", "{m}.nodir"],
     r"llama-perplexity not found: looked in --llama-dir .*nodir"),
    (BENCH + ["--model", "{m}", "--prefill", "fast"], r"--prefill: invalid choice: 'fast'"),
    (BENCH + ["--model", "{m}", "--tunables", "RF_FOO=1"], r"--tunables: RF_FOO: not a tunable"),
    (BENCH + ["--model", "{m}", "--tunables", "RF_DEC_WARPS=x"], r"--tunables: 'RF_DEC_WARPS=x': 'x' is not"),
    (BENCH + ["--model", "{m}", "--tunables", "RF_DEC_WARPS"], r"--tunables: 'RF_DEC_WARPS': write NAME=INT"),
    (BENCH + ["--model", "{m}", "--tunables", "RF_DEC_WARPS=8"], r"--tunables is a HIP-backend setting"),
    (["bench", "--model", "{m}", "--backend", "cuda"], r"--backend: invalid choice: 'cuda'"),
    (["report", "--out", "{m}.r", "--llama-timeout", "-1"], r"--llama-timeout: -1 is not a positive number"),
    (["report", "--out", "{m}.r", "-p", "-1"], r"-p: -1 is not a non-negative integer"),
    (["report", "--out", "{m}.r", "-n", "x"], r"-n: 'x' is not a non-negative integer"),
    (["report", "--out", "{m}.r", "-r", "0"], r"-r: 0 is not a positive integer"),
    (["report", "--out", "{m}.r", "--backend", "x"], r"--backend: invalid choice: 'x'"),
    (["report", "--out", "{m}.r", "--model", "{m}", "--backend", "numpy", "--llama-dir", "{m}.nodir"],
     r"llama-bench not found: looked in --llama-dir"),
    (["report", "--out", "{m}.r", "--model", "{m}/x.gguf"], r"no such file or known model"),
    (["report", "--from", "{m}.nodir"], r"environment.json not found"),
    (["report", "--from", "{m}.nodir", "-p", "4"], r"--from DIR rebuilds the page from DIR/data alone"),
    (["report"], r"one of the arguments --out --from is required"),
]


@pytest.mark.parametrize("argv, message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_line_and_exit_2(model, capsys, argv, message):
    argv = [a.replace("{m}", model) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own exit, through _Parser.error
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2, (rc, out, err)
    assert err.count("\n") == 1 and err.startswith("rocmforge: error: ") and "Traceback" not in err, err
    assert re.search(message, err), err


# options whose every value is valid (flags) or that the rows above cannot reach with a bad value alone
NO_BAD_VALUE = {"--int8-activations", "--no-int8-activations", "--chat", "--force", "-q", "--quiet", "--json",
                "--no-fuse", "--llama-cpp", "--version", "-h", "--help"}


def test_every_option_of_every_command_has_a_bad_input_row():
    import argparse

    from rocmforge.cli import build_parser

    def commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction):
                for name, sp in a.choices.items():
                    yield from commands(sp, prefix + (name,))
        yield prefix, parser

    missing = []
    for path, parser in commands(build_parser()):
        if not path:
            continue
        rows = [argv for argv, _ in BAD if tuple(argv[:len(path)]) == path]
        for a in parser._actions:
            if isinstance(a, argparse._SubParsersAction) or not a.option_strings:
                continue
            if set(a.option_strings) & NO_BAD_VALUE:
                continue
            if not any(set(a.option_strings) & set(argv) for argv in rows):
                missing.append(f"{' '.join(path)} {a.option_strings[0]}")
    assert not missing, f"options without a bad-input row: {missing}"


def test_bench_output_fails_before_the_run_and_is_written_whole(model, tmp_path, capsys, monkeypatch):
    import rocmforge.bench as bench

    ran = []
    monkeypatch.setattr(bench, "bench", lambda *a, **k: ran.append(1) or [])
    assert main(BENCH + ["--model", model, "-o", str(tmp_path / "no" / "b.jsonl")]) == 2
    assert not ran  # the unwritable output stopped it before any work
    capsys.readouterr()

    def boom(*a, **k):
        raise RuntimeError("out of device memory (test)")

    monkeypatch.setattr(bench, "bench", boom)
    assert main(BENCH + ["--model", model, "-o", str(tmp_path / "b.jsonl")]) == 2
    assert not (tmp_path / "b.jsonl").exists()
    assert not (tmp_path / "b.jsonl.part").exists()


def test_interrupted_generation_prints_its_statistics(model, capsys, monkeypatch):
    from rocmforge.engine import Engine

    real_step, n = Engine.step, []

    def step(self, *a, **k):
        n.append(1)
        if len(n) == 3:
            raise KeyboardInterrupt
        return real_step(self, *a, **k)

    monkeypatch.setattr(Engine, "step", step)
    rc = main(GEN + ["--model", model, "--max-tokens", "20", "the cat"])
    _, err = capsys.readouterr()
    assert rc == 130
    assert re.search(r"decode: 3 tokens, [\d.]+ t/s \(interrupted\)", err), err


def test_engine_checks_sampling_arguments_where_they_enter(model):
    from rocmforge.engine import Engine

    eng = Engine.from_gguf(model, backend="numpy", max_ctx=32)
    for kw, word in [({"temperature": -1}, "temperature"), ({"top_p": 1.5}, "top_p"),
                     ({"top_k": -2}, "top_k"), ({"max_new_tokens": -1}, "max_new_tokens")]:
        with pytest.raises(ValueError, match=word):
            eng.generate("hi", **kw)  # raised at the call, not at the first token
    with pytest.warns(UserWarning, match="training context"):
        Engine.from_gguf(model, backend="numpy", max_ctx=8192)
