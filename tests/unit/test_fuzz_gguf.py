"""scripts/fuzz_gguf.py on synthetic files: a few hundred mutants, none may crash, hang, blow memory or
raise anything but GGUFError; and the harness itself reports each kind of failure."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import signal
import sys
import time
from pathlib import Path

import pytest

import rocmforge.gguf as rg

_PATH = Path(__file__).resolve().parents[2] / "scripts" / "fuzz_gguf.py"


def _load_fuzz():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("fuzz_gguf", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fuzz_gguf"] = mod  # dataclasses look their module up by name
    spec.loader.exec_module(mod)
    return mod


fuzz = _load_fuzz()


def test_synthetic_mutants_fail_only_with_gguf_error(tmp_path: Path) -> None:
    s = fuzz.run(300, seed=22, workdir=tmp_path)
    assert s.failures == [], s.report()
    assert s.n == 300 and sum(s.counts.values()) == 300
    # both ends of the reader are exercised: refusals and files that open (views and config checked)
    assert s.counts["error"] > 100 and s.counts["opened"] + s.counts["opened-cfg"] > 5, s.report()


def test_every_structural_cut_is_refused(tmp_path: Path) -> None:
    """Each synthetic base cut after the magic, version, counts, each key, value, tensor info field, the
    padding and at each tensor's data: every one a GGUFError (all bases have tensors up to their end)."""
    s = fuzz.run(0, cuts=True, workdir=tmp_path)
    n_cuts = sum(len(fuzz.layout(p.read_bytes()).boundaries) - 1 for p in (tmp_path / "bases").iterdir())
    assert s.n == n_cuts > 500 and s.counts["error"] == s.n, s.report()


def test_mutants_are_reproducible(tmp_path: Path) -> None:
    bases = [fuzz._load(p, False) for p in fuzz.write_synthetic(tmp_path)]
    for i in range(20):
        a = fuzz.mutate(bases[i % len(bases)], fuzz.np.random.default_rng([5, i]))
        b = fuzz.mutate(bases[i % len(bases)], fuzz.np.random.default_rng([5, i]))
        assert a[1] == b[1] and a[0].materialize(bases[0].data) == b[0].materialize(bases[0].data)


def test_layout_finds_every_boundary(tmp_path: Path) -> None:
    p = fuzz.write_synthetic(tmp_path)[2]  # kinds.gguf: every value type, custom alignment
    lay = fuzz.layout(p.read_bytes())
    with rg.GGUFFile.open(p) as f:
        assert lay.data_offset == f.data_offset
        assert lay.tensor_offsets == [t.offset for t in f.tensors.values()]
        assert [k for _, _, k in lay.kvs] == list(f.metadata)
    assert {0, 4, 8, 16, 24, lay.index_end, lay.data_offset} <= set(lay.boundaries)
    kinds = {"alignment", "arr_len", "etype", "ti_dim", "ti_ndims", "ti_offset", "ti_type", "vtype",
             "str_len"}
    assert {f.kind for f in lay.fields} >= kinds


def test_workfile_restores_the_base(tmp_path: Path) -> None:
    """The patched working copy of a real file equals the mutant's bytes, whatever came before it."""
    base = fuzz._load(fuzz.write_synthetic(tmp_path / "b")[0], True)
    wf = fuzz.WorkFile(base, tmp_path / "work.gguf", tmp_path / "pristine.gguf")
    try:
        for i in range(60):
            rope, desc = fuzz.mutate(base, fuzz.np.random.default_rng([9, i]))
            wf.write(rope)
            assert (tmp_path / "work.gguf").read_bytes() == rope.materialize(base.data), desc
    finally:
        wf.close()


# -- the harness reports each failure kind (so the tests above can fail) ---------------------------------


def _bad_open(kind: str):  # noqa: ANN202
    real_open = rg.GGUFFile.open

    def bad(path: str) -> rg.GGUFFile:
        if kind == "exception":
            raise ValueError("not a GGUFError")
        if kind == "hang":
            time.sleep(30)
        if kind == "crash":
            os.kill(os.getpid(), signal.SIGKILL)  # (SIGSEGV would do, with a faulthandler dump)
        if kind == "memory":
            bad.keep = bytearray(3 * os.path.getsize(path) + (1 << 20))
        f = real_open(path)
        if kind == "bad-view":
            f.tensors = {n: dataclasses.replace(t, n_bytes=f.file_size) for n, t in f.tensors.items()}
        return f

    return bad


@pytest.mark.parametrize("kind", ["exception", "hang", "crash", "memory", "bad-view"])
def test_harness_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    monkeypatch.setattr(rg.GGUFFile, "open", staticmethod(_bad_open(kind)))  # the forked workers see it
    n = {"hang": 2, "bad-view": 40}.get(kind, 4)  # only mutants that still open can show a bad view
    s = fuzz.run(n, seed=1, workdir=tmp_path, timeout=1.0, save=tmp_path / "saved")
    assert s.counts[kind] >= 1 and len(s.failures) == sum(s.counts[k] for k in fuzz.FAILURES), s.report()
    assert len(list((tmp_path / "saved").iterdir())) == len(s.failures)
    if kind == "exception":
        assert fuzz.main(["--n", "2", "--seed", "1", "--save", str(tmp_path / "saved2")]) == 1
