"""SAMPLE's definition (sampling.sample_logits): Philox4x32-10 against Random123's known answers, the integer
weights, a longhand second implementation, greedy and NaN rules as numpy's argmax, the distribution it
draws from, the params input and the IR rule; the kernel's constants are the reference's."""

import math
import re

import numpy as np
import pytest

from rocmforge.backends import numpy_ref as R
from rocmforge.backends import sampling as S
from rocmforge.backends.hip.modules import KERNEL_DIR
from rocmforge.backends.numpy_backend import NumpyBackend
from rocmforge.ir.cost import node_cost
from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import SAMPLE_MAX_K, SAMPLE_PARAMS, IRError


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


# Random123's kat_vectors for philox4x32 with 10 rounds: counter words, key words, the result
PHILOX_KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr, key, want", PHILOX_KAT)
def test_philox_matches_random123(ctr, key, want):
    assert S.philox4x32_10(ctr, key) == want


def test_exp2_q30_is_two_to_the_minus_y_in_q30():
    assert S.EXP2_Q30 == tuple(round(math.log(2) / i * 2**30) for i in range(10, 0, -1))
    y = np.concatenate([np.linspace(0, 31.99, 20001), [0.0, 1.0, 1e-7, 0.5]]).astype(np.float32)
    w = S.exp2_q30(y)
    assert w.dtype == np.uint64 and int(w[0]) == 1 << 30
    yfx = np.floor(y.astype(np.float64) * 2**20)  # y in 20 fractional bits
    exact = np.exp2(-yfx / 2**20) * 2**30
    assert np.abs(w.astype(np.float64) - exact).max() < 3  # Q30 units
    assert np.all(np.diff(w[:20001].astype(np.int64)) <= 0)  # never increasing
    assert S.exp2_q30(np.array([32.0, 1e30, np.inf, np.nan], np.float32)).tolist() == [0, 0, 0, 0]


def test_sample_params_layout():
    p = S.sample_params(0x123456789ABCDEF0, 77, 0.5, 40, 0.9)
    assert p.dtype == np.int32 and p.shape == (SAMPLE_PARAMS,)
    u = p.view(np.uint32)
    assert (u[0], u[1], u[2], u[3]) == (0x9ABCDEF0, 0x12345678, 77, 40)
    assert u[4:5].view(np.float32)[0] == np.float32(math.log2(math.e) / 0.5)
    assert u[5] == round(0.9 * 2**24) and u[6] == u[7] == 0
    assert S.sample_params(1, 2, 0.0)[4] == 0 and S.sample_params(1, 2, 1.0, top_p=1.0)[5] == 1 << 24
    assert S.sample_params(1, 2**32 + 5, 1.0)[2] == 5  # the counter wraps
    for bad in (-1, 1 << 64):
        with pytest.raises(ValueError, match="seed"):
            S.sample_params(bad, 0, 1.0)


def longhand(x: np.ndarray, seed: int, counter: int, temperature: float, top_k: int, top_p: float) -> int:
    """sample_logits' steps one scalar at a time, with Python's sort and integers (a second reading)."""
    if any(math.isnan(v) for v in x):
        return next(i for i, v in enumerate(x) if math.isnan(v))
    order = sorted(range(len(x)), key=lambda i: (-float(x[i]), i))  # -0.0 == 0.0 in Python too
    K = min(top_k if top_k > 0 else len(x), len(x))
    cand = order[:K]
    scale = np.float32(math.log2(math.e) / temperature) if temperature > 0 else np.float32(0)
    if scale == 0 or math.isinf(x[cand[0]]):
        return cand[0]
    cum, total = [], 0
    for j in cand:
        y = np.float32(np.float32(x[cand[0]] - x[j]) * scale)
        if not y < 32:
            w = 0
        else:
            yfx = int(np.float32(y * np.float32(2**20)))
            f, r = yfx % 2**20, 2**30
            for a in S.EXP2_Q30:
                r = 2**30 - (((a * f) >> 20) * r >> 30)
            w = r >> (yfx >> 20)
        total += w
        cum.append(total)
    P = round(top_p * 2**24)
    thr = -(-P * total // 2**24)
    m = next(j for j, c in enumerate(cum) if c >= thr)
    u = S.philox4x32_10((counter, 0, 0, 0), (seed % 2**32, seed >> 32))[0] >> 8
    target = u * cum[m] >> 24
    return cand[next(j for j, c in enumerate(cum) if c > target)]


@pytest.mark.parametrize("temperature, top_k, top_p", [
    (0.7, 40, 0.9), (1.5, 256, 1.0), (1.0, 1, 1.0), (1.0, 0, 0.95), (0.3, 5, 0.5), (40.0, 300, 1.0),
])
def test_reference_equals_its_longhand_reading(rng, temperature, top_k, top_p):
    for V in (3, 257, 1000):
        x = (rng.standard_normal(V) * 3).astype(np.float32)
        x[rng.integers(0, V, V // 4)] = np.round(x[: V // 4])  # ties
        for c in range(20):
            seed = int(rng.integers(0, 2**63)) * 2 + 1
            got = S.sample_logits(x, S.sample_params(seed, c, temperature, top_k, top_p))
            assert int(got) == longhand(x, seed, c, temperature, top_k, top_p)


def test_greedy_and_non_finite_rows_are_numpys_argmax(rng):
    x = np.round(rng.standard_normal((8, 300))).astype(np.float32)  # ties everywhere
    x[1] = 0.0
    x[1, ::3] = -0.0  # -0 and +0 are equal: the first of them
    x[2, [17, 40]] = np.nan  # the first NaN
    x[3, [5, 9]] = np.inf
    x[4] = -np.inf
    x[5, 250] = np.nan
    x[5, 3] = np.inf
    greedy = S.sample_params(9, 0, 0.0, 40, 0.9)
    assert R.SAMPLE(x, greedy).tolist() == np.argmax(x, -1).tolist()
    hot = R.SAMPLE(x, S.sample_params(9, 0, 2.0, 40, 0.9))
    assert hot[2:6].tolist() == np.argmax(x[2:6], -1).tolist()  # NaN, +inf, all -inf: argmax's
    assert R.SAMPLE(x, S.sample_params(9, 0, 2.0, 1, 1.0)).tolist() == np.argmax(x, -1).tolist()


def test_draws_follow_the_cut_distribution():
    x = np.array([0.0, 5.0, 4.0, -1.0, 3.0, 4.0], np.float32)
    T, n = 1.3, 6000
    for top_k, top_p, keep in [(0, 1.0, 6), (3, 1.0, 3), (0, 0.7, 3)]:  # the nucleus at 0.7: 5, 4, 4
        draws = [int(S.sample_logits(x, S.sample_params(42, c, T, top_k, top_p))) for c in range(n)]
        order = np.argsort(-x, kind="stable")[:keep]
        p = np.zeros(len(x))
        p[order] = np.exp((x[order] - x.max()) / T)
        p /= p.sum()
        freq = np.bincount(draws, minlength=len(x)) / n
        assert np.all(freq[p == 0] == 0)
        assert np.abs(freq - p).max() < 4.5 * np.sqrt(p.max() / n), (freq, p)


def test_rows_draw_with_consecutive_counters_and_the_seed_decides(rng):
    x = (rng.standard_normal((3, 500)) * 0.2).astype(np.float32)  # flat: every draw differs
    p = S.sample_params(5, 2**32 - 2, 1.0, 256, 1.0)  # the counter wraps within the run
    rows = [int(S.sample_logits(x[r], S.sample_params(5, (2**32 - 2 + r) % 2**32, 1.0, 256, 1.0)))
            for r in range(3)]
    assert R.SAMPLE(x, p).tolist() == rows
    assert np.array_equal(R.SAMPLE(x, p), R.SAMPLE(x, p))
    seeds = {tuple(R.SAMPLE(x, S.sample_params(s, 0, 1.0, 256, 1.0))) for s in range(20)}
    assert len(seeds) > 15


def test_sample_keeps_at_most_max_k(rng):
    x = (rng.standard_normal(2000) * 0.01).astype(np.float32)
    for c in range(30):
        bounded = R.SAMPLE(x[None], S.sample_params(3, c, 1.0, 0, 1.0))  # no cut: SAMPLE_MAX_K
        assert int(bounded[0]) == int(S.sample_logits(x, S.sample_params(3, c, 1.0, SAMPLE_MAX_K, 1.0)))
        assert int(bounded[0]) in set(np.argsort(-x, kind="stable")[:SAMPLE_MAX_K].tolist())
    unbounded = {int(S.sample_logits(x, S.sample_params(3, c, 1.0, 0, 1.0))) for c in range(300)}
    assert not unbounded <= set(np.argsort(-x, kind="stable")[:SAMPLE_MAX_K].tolist())


def test_sample_op_rule_cost_and_graph_run(rng):
    g = Graph()
    logits = g.input("logits", (2, 50), "f32")
    params = g.input("params", (SAMPLE_PARAMS,), "i32")
    s = g.output(g.sample(logits, params, "tok"))
    assert s.shape == (2,) and s.dtype == "i32"
    assert node_cost(s).read == 2 * 50 * 4 + SAMPLE_PARAMS * 4 and node_cost(s).written == 8
    bad = Graph()
    bp = bad.input("params", (SAMPLE_PARAMS,), "i32")
    with pytest.raises(IRError, match="f32"):
        bad.sample(bad.input("h", (2, 50), "f16"), bp, "bad")
    with pytest.raises(IRError, match="params"):
        bad.sample(bad.input("x", (2, 50), "f32"), bad.input("p4", (4,), "i32"), "bad2")
    with pytest.raises(IRError, match="f32"):
        bad.sample(bad.input("x3", (2, 3, 50), "f32"), bp, "bad3")
    be = NumpyBackend()
    be.prepare(g)
    x = rng.standard_normal((2, 50)).astype(np.float32)
    p = S.sample_params(11, 4, 0.8, 10, 0.9)
    out, _ = be.run(g, {"logits": x, "params": p})
    assert out["tok"].tolist() == R.SAMPLE(x, p).tolist()
    assert be.supports(s.op)


def test_kernel_constants_are_the_references():
    from rocmforge.backends.hip.launch_rows import SAMPLE_BLOCK

    src = (KERNEL_DIR / "sample.hip").read_text()
    literals = re.search(r"const rf_u64 a\[10\] = \{(.*?)\};", src, re.S).group(1)
    assert tuple(int(v) for v in re.findall(r"(\d+)ull", literals)) == S.EXP2_Q30
    assert re.search(r"#define RF_SAMPLE_MAX_K (\d+)", src).group(1) == str(SAMPLE_MAX_K)
    assert re.search(r"#define RF_SAMPLE_BLOCK (\d+)", src).group(1) == str(SAMPLE_BLOCK)
    for m, w in zip(S.PHILOX_M, S.PHILOX_W, strict=True):
        assert f"0x{m:08X}u" in src and f"0x{w:08X}u" in src


@pytest.mark.parametrize("tunables, block", [({}, 512), ({"RF_SAMPLE_BLOCK": 256, "RF_SAMPLE_UNROLL": 2,
                                                          "RF_MMV_UNROLL": 2}, 256)])
def test_launcher_launches_a_row_a_block_of_the_module_prepare_compiled(tunables, block):
    """SAMPLE's launcher, recorded without a GPU: sample_f32 over n blocks of RF_SAMPLE_BLOCK threads, the
    module (sample.hip with the RF_SAMPLE_ tunables) the one prepare_launch compiled."""
    from matvec_launches import FakeBuf, Recorder

    from rocmforge.backends.hip.context import Ctx
    from rocmforge.backends.hip.launch import prepare_launch
    from rocmforge.backends.hip.launch_geometry import Device
    from rocmforge.backends.hip.tensor import DevTensor
    from rocmforge.ir.ops import Op

    rec = Recorder(32)
    compiled = []
    get = rec.get
    rec.get = lambda file, **d: compiled.append((file, d)) or get(file, **d)
    ctx = Ctx(rec, Device(32, 132), dict(tunables))
    logits = DevTensor(FakeBuf(1 << 30, 3 * 1000 * 4), 0, (3, 1000), "f32")
    params = DevTensor(FakeBuf(1 << 31, 32), 0, (SAMPLE_PARAMS,), "i32")
    out = DevTensor(FakeBuf(1 << 32, 12), 0, (3,), "i32")
    launch = prepare_launch(ctx, Op.SAMPLE, out, [logits, params], {})
    launch(ctx, out, logits, params)
    (rec_launch,) = rec.launches
    want = {k: v for k, v in tunables.items() if k.startswith("RF_SAMPLE_")}
    assert ("sample.hip", want) in compiled
    assert rec_launch["file"] == "sample.hip" and rec_launch["entry"] == "sample_f32"
    assert rec_launch["defines"] == {"RF_WARP": 32, **want}
    assert rec_launch["grid"] == [3] and rec_launch["block"] == [block] and rec_launch["smem"] == 0
    assert rec_launch["args"] == ["ptr", "ptr", "ptr", ["int32", 1000]]
