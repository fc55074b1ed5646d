"""The regression guard of the kernel layer: MUL_MAT launches exactly what it launched before the refactor
(matvec_launches.json) for every weight type, shape, token count, device shape and public option."""

from __future__ import annotations

import json

import matvec_launches as R
import pytest


def drive(rec: R.Recorder, case: dict) -> None:
    """The current mat-vec choice, as HipBackend uses it."""
    R.drive_before_refactor(rec, case)


@pytest.fixture(scope="module")
def expected() -> dict:
    return R.expand(json.loads(R.FIXTURE.read_text()))


@pytest.fixture(scope="module")
def actual() -> dict:
    return R.record(drive)


def test_same_launches_as_before_the_refactor(expected, actual):
    assert actual.keys() == expected.keys()
    wrong = [k for k in expected if actual[k] != expected[k]]
    if wrong:
        k = wrong[0]
        pytest.fail(f"{len(wrong)} cases launch otherwise, e.g. {k}:\nwas {expected[k]}\nnow {actual[k]}")


def test_the_fixture_covers_every_kernel_kind(expected):
    entries = {r["entry"].rsplit("_", 1)[0] for rs in expected.values() for r in rs}
    entries |= {r["entry"] for rs in expected.values() for r in rs}
    for e in ("mul_mat_vec_xr_q4", "mul_mat_vec_xq_q8", "quantize_x8", "mul_mat_q4", "mul_mat_vec_q6"):
        assert e in entries
    assert any(r["pdl"] for rs in expected.values() for r in rs)
