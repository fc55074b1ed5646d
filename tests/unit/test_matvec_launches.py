"""The regression guard of the kernel layer: MUL_MAT launches exactly what it launched before the refactor
(matvec_launches.json) for every weight type, shape, token count, device shape and public option, but for
the changes `_as_now` spells out; MUL_MAT_ADD launches what MUL_MAT launches, with its b and b_stride as
the last two arguments instead of (null, 0). The prefill cases (M = 5, 64) are driven with prefill="tiled"
since the vendor BLAS became their default: the tiled kernel's launches stay guarded unchanged, and
nothing in the fixture's decode cases changed with that default."""

from __future__ import annotations

import json

import matvec_launches as R
import pytest

from rocmforge.backends.hip.context import Ctx
from rocmforge.backends.hip.kernel_choice import (
    HOST_TUNABLES,
    MMV_MAX_TOKENS,
    MUL_MAT_BLAS,
    MatMulOptions,
    choose_mul_mat,
)
from rocmforge.backends.hip.launch import prepare_launch
from rocmforge.backends.hip.launch_geometry import Device, Weight
from rocmforge.backends.hip.launch_mul_mat import early_quantize_x8, kernel_type, reads_int8_x
from rocmforge.backends.hip.tensor import DevTensor
from rocmforge.ir import passes
from rocmforge.ir.graph import Graph


def drive(rec: R.Recorder, case: dict, addend: str | None = None) -> None:
    """The current mat-vec choice, as HipBackend uses it: a Ctx as its constructor builds it on a GPU with
    cuBLAS, the graph y = MUL_MAT(w, x) through HipBackend's passes (QUANTIZE_X8 inserted where the kernel
    reads int8 x), every node prepared (chosen and compiled) as _plan does, then run in order. addend
    ("bias", "residual"): y = MUL_MAT_ADD(w, x, b) instead, its QUANTIZE_X8 source given where reads_int8_x
    says the kernel reads int8 x (the insertion pass is not this layer's). Cases of more than 4 tokens run
    with prefill="tiled": their default is now the vendor BLAS (mul_mat_blas, tests/unit/test_blas_path.py;
    test_prefill_defaults_to_the_blas_here below), and this guard keeps the tiled kernel's launches as they
    were; decode cases run with the default options."""
    dev = Device(case["warp"], case["n_sm"], case["smem_block"], case["smem_sm"], "sm_90", blas="cublas")
    prefill = "tiled" if case["M"] > MMV_MAX_TOKENS else "auto"
    opts = MatMulOptions(int8_activations=case["int8"], prefill=prefill)
    ctx = Ctx(rec, dev, dict(case.get("tunables", {})), opts, pdl=case["pdl"])
    out, w, x = R.tensors(case)
    named = {"w": w, "x": x, "y": out}
    weights = {"w": w}
    g = Graph()
    wt, xt = g.weight("w", w.shape, w.dtype), g.input("x", x.shape)
    if addend is None:
        g.output(g.mul_mat(wt, xt, "y"))
    else:
        named["b"] = b = R.addend(case, addend)
        bt = g.input("b", b.shape)
        probe = g.mul_mat_add(wt, xt, bt, "probe")  # dropped by DCE
        xq = g.quantize_x8(xt, "x.x8") if reads_int8_x(ctx, weights)(probe) else None
        g.output(g.mul_mat_add(wt, xt, bt, "y", xq))
    insert = ("insert_quantize_x8", lambda g: passes.insert_quantize_x8(g, reads_int8_x(ctx, weights)))
    g = passes.optimize(g, (insert, *passes.PIPELINE))[0]
    early = early_quantize_x8(ctx, g, weights)
    dev_of = {t.id: named[t.name] for t in g.nodes if t.name in named}
    steps = []
    for t in g.ops():
        if t.id not in dev_of:  # QUANTIZE_X8's output: a buffer of the arena
            dev_of[t.id] = DevTensor(R.FakeBuf(1 << 36, 4 * t.n_elements), 0, t.shape, t.dtype)
        srcs = [dev_of[s.id] for s in t.src]
        steps.append((prepare_launch(ctx, t.op, dev_of[t.id], srcs, t.params, t.id in early), t, srcs))
    rec.launches.clear()  # prepare compiles; the run launches
    for launch, t, srcs in steps:
        ctx.begin_node(("plan", t.id))
        launch(ctx, dev_of[t.id], *srcs)
    ctx.begin_node(None)


# kernel families that left mul_mat_vec.hip for a file of their own (entry prefix -> file)
MOVED = {"mul_mat_vec_xr_": "mul_mat_vec_xr.hip", "mul_mat_vec_xq_": "mul_mat_vec_xq.hip"}
MOVED["quantize_x8"] = "quantize_x8.hip"


# MUL_MAT_ADD's (b, b_stride), the last two arguments of every MUL_MAT kernel since MUL_MAT_ADD: a null b and
# stride 0 for MUL_MAT (the kernels then write y exactly as before)
NO_ADDEND = ["null", ["int64", 0]]


def _is_mul_mat(launch: dict) -> bool:
    return launch["entry"].startswith("mul_mat")  # every launch but quantize_x8's


def _as_now(launch: dict, pdl: bool = False) -> dict:
    """A recorded launch as the current code makes it: host-side tunables (blocks per SM, QMAX, EVEN), once
    passed as -D's that no kernel reads, are geometry arguments; the int8 kernels have files of their own;
    the MUL_MAT kernels take NO_ADDEND after their old arguments (those unchanged, quantize_x8's too). pdl
    (a case with programmatic launch): every MUL_MAT kernel but mul_mat_vec_xr (which decides for itself)
    now begins with RF_PDL_BEGIN and is launched programmatically."""
    d = {k: v for k, v in launch["defines"].items() if k not in HOST_TUNABLES}
    file = next((f for prefix, f in MOVED.items() if launch["entry"].startswith(prefix)), launch["file"])
    args = launch["args"] + (NO_ADDEND if _is_mul_mat(launch) else [])
    now = pdl and _is_mul_mat(launch) and not launch["entry"].startswith("mul_mat_vec_xr_")
    return {**launch, "defines": d, "file": file, "args": args, "pdl": launch["pdl"] or now}


# mul_mat_vec_xr serves from 8192 rows (was 4096): an int8 case of fewer rows that the fixture recorded on
# it (and its quantize_x8) launches what the same case without int8 activations launches
XR_MIN_N = 8192


def _case_as_now(key: str, launches: list[dict], fixture: dict[str, list[dict]]) -> list[dict]:
    """A case's launches as now (_as_now): quantize_x8 is launched as the mat-vec that reads it is; xr's
    cases under XR_MIN_N rows as their f32-x twins."""
    parts = key.split("-")
    if "int8" in parts and int(parts[3].split("x")[0]) < XR_MIN_N \
            and any(r["entry"].startswith("mul_mat_vec_xr_") for r in launches):
        launches = fixture["-".join(p for p in parts if p not in ("int8", "pdl"))]
    now = [_as_now(r, "pdl" in parts) for r in launches]
    kernel_pdl = any(r["pdl"] for r in now if _is_mul_mat(r))
    return [{**r, "pdl": kernel_pdl} if not _is_mul_mat(r) else r for r in now]


@pytest.fixture(scope="module")
def expected() -> dict:
    fixture = R.expand(json.loads(R.FIXTURE.read_text()))
    return {k: _case_as_now(k, rs, fixture) for k, rs in fixture.items()}


@pytest.fixture(scope="module")
def actual() -> dict:
    return R.record(drive)


def test_same_launches_as_before_the_refactor(expected, actual):
    assert actual.keys() == expected.keys()
    wrong = [k for k in expected if actual[k] != expected[k]]
    if wrong:
        k = wrong[0]
        pytest.fail(f"{len(wrong)} cases launch otherwise, e.g. {k}:\nwas {expected[k]}\nnow {actual[k]}")


def test_only_the_addend_was_added(expected, actual):
    """Said the other way round: with the last two arguments of its MUL_MAT launches cut off, every case
    launches what the fixture recorded (files, entries, defines, geometry, old arguments), and those two
    are NO_ADDEND."""
    for k, launches in actual.items():
        assert all(r["args"][-2:] == NO_ADDEND for r in launches if _is_mul_mat(r)), k
        cut = [{**r, "args": r["args"][:-2]} if _is_mul_mat(r) else r for r in launches]
        was = [{**r, "args": r["args"][:-2]} if _is_mul_mat(r) else r for r in expected[k]]
        assert cut == was, k


def _with_b(launch: dict, b_stride: int) -> dict:
    """A MUL_MAT launch as MUL_MAT_ADD makes it: b's address and b_stride instead of NO_ADDEND."""
    if not _is_mul_mat(launch):
        return launch
    return {**launch, "args": [*launch["args"][:-2], "b", ["int64", b_stride]]}


@pytest.mark.parametrize("addend", ["bias", "residual"])
def test_mul_mat_add_launches_mul_mat_with_b(addend, actual):
    """MUL_MAT_ADD of every case: MUL_MAT's kernels, geometry, defines, QUANTIZE_X8 (started early where
    MUL_MAT's is) and arguments, b and its stride last (0 for a bias or one token, N for a residual)."""
    keys = [k for k, _ in R.cases()]
    launched = R.record(lambda rec, case: drive(rec, case, addend))
    for k, case in zip(keys, (c for _, c in R.cases()), strict=True):
        stride = case["N"] if addend == "residual" and case["M"] > 1 else 0
        assert launched[k] == [_with_b(r, stride) for r in actual[k]], k


def test_prefill_defaults_to_the_blas_here():
    """What drive's prefill="tiled" sets aside: with the default options every case of more than 4 tokens
    chooses mul_mat_blas on these devices (all of them cuBLAS-backed sm_90 here), every other case a
    mat-vec, as recorded."""
    for _, case in R.cases():
        dev = Device(case["warp"], case["n_sm"], case["smem_block"], case["smem_sm"], "sm_90", blas="cublas")
        out, w, x = R.tensors(case)
        weight = Weight(kernel_type(w.dtype, w.shape[1], w.ptr), *w.shape, w.row_bytes, w.ptr)
        opts = MatMulOptions(int8_activations=case["int8"])
        chosen = choose_mul_mat(dev, opts, case.get("tunables", {}), weight, case["M"], case["pdl"]).kernel
        assert (chosen is MUL_MAT_BLAS) == (case["M"] > MMV_MAX_TOKENS), case


def test_the_fixture_covers_every_kernel_kind(expected):
    entries = {r["entry"].rsplit("_", 1)[0] for rs in expected.values() for r in rs}
    entries |= {r["entry"] for rs in expected.values() for r in rs}
    for e in ("mul_mat_vec_xr_q4", "mul_mat_vec_xq_q8", "quantize_x8", "mul_mat_q4", "mul_mat_vec_q6"):
        assert e in entries
    assert any(r["pdl"] for rs in expected.values() for r in rs)
