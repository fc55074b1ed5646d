"""The numpy reference ops against independent expectations (formulas written out longhand)."""

import math

import numpy as np
import pytest

from rocmforge.backends import numpy_ref as R
from rocmforge.ir.graph import Graph
from rocmforge.ir.ops import IRError, Op


@pytest.fixture
def rng():
    return np.random.default_rng()


def test_every_op_has_a_reference():
    assert set(R.REF) == {op for op in Op if op is not Op.NONE}


def test_rope_normal_matches_formula(rng):
    T, H, D, n_dims, base = 5, 3, 8, 6, 10000.0
    x = rng.standard_normal((T, H, D)).astype(np.float32)
    pos = rng.integers(0, 1000, T).astype(np.int32)
    out = R.ROPE(x, pos, n_dims=n_dims, neox=False, base=base)
    for t in range(T):
        for h in range(H):
            for i in range(n_dims // 2):
                th = pos[t] * base ** (-2 * i / n_dims)
                a, b = float(x[t, h, 2 * i]), float(x[t, h, 2 * i + 1])
                assert out[t, h, 2 * i] == pytest.approx(a * math.cos(th) - b * math.sin(th), abs=1e-5)
                assert out[t, h, 2 * i + 1] == pytest.approx(a * math.sin(th) + b * math.cos(th), abs=1e-5)
            np.testing.assert_array_equal(out[t, h, n_dims:], x[t, h, n_dims:])  # untouched tail


def test_rope_neox_matches_formula(rng):
    T, H, D = 4, 2, 8
    x = rng.standard_normal((T, H, D)).astype(np.float32)
    pos = np.array([0, 1, 7, 300], np.int32)
    out = R.ROPE(x, pos, n_dims=D, neox=True, base=1e6, freq_scale=0.5)
    half = D // 2
    for t in range(T):
        for i in range(half):
            th = pos[t] * 0.5 * 1e6 ** (-2 * i / D)
            a, b = x[t, :, i].astype(np.float64), x[t, :, i + half].astype(np.float64)
            np.testing.assert_allclose(out[t, :, i], a * np.cos(th) - b * np.sin(th), atol=1e-5)
            np.testing.assert_allclose(out[t, :, i + half], a * np.sin(th) + b * np.cos(th), atol=1e-5)
    np.testing.assert_array_equal(out[0], x[0])  # position 0 is the identity


def test_rope_preserves_norm_of_pairs(rng):
    x = rng.standard_normal((3, 4, 16)).astype(np.float32)
    out = R.ROPE(x, np.array([3, 9, 27], np.int32), n_dims=16, neox=False, base=10000.0)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_set_rows_overwrites_never_adds(rng):
    dst = rng.standard_normal((6, 4)).astype(np.float32)
    before = dst.copy()
    src = rng.standard_normal((2, 4)).astype(np.float32)
    out = R.SET_ROWS(dst, src, np.array([4, 1], np.int32))
    assert out is dst
    np.testing.assert_array_equal(dst[4], src[0])
    np.testing.assert_array_equal(dst[1], src[1])
    np.testing.assert_array_equal(dst[[0, 2, 3, 5]], before[[0, 2, 3, 5]])
    R.SET_ROWS(dst, src, np.array([4, 1], np.int32))  # writing twice gives the same, not 2x
    np.testing.assert_array_equal(dst[4], src[0])


def test_set_rows_converts_to_dst_dtype_and_checks_range(rng):
    dst = np.zeros((3, 2), np.float16)
    R.SET_ROWS(dst, np.array([[1.5, -2.25]], np.float32), np.array([2], np.int32))
    assert dst.dtype == np.float16 and dst[2].tolist() == [1.5, -2.25]
    with pytest.raises(IndexError):
        R.SET_ROWS(dst, np.zeros((1, 2), np.float32), np.array([3], np.int32))


def test_soft_max_with_mask_and_scale(rng):
    a = rng.standard_normal((2, 3, 5)).astype(np.float32)
    mask = np.where(rng.random((3, 5)) < 0.3, -np.inf, rng.standard_normal((3, 5))).astype(np.float32)
    mask[:, 0] = 0.0  # at least one visible column per row
    out = R.SOFT_MAX(a, mask, scale=0.7)
    for b in range(2):
        for r in range(3):
            z = [0.7 * float(a[b, r, c]) + float(mask[r, c]) for c in range(5)]
            m = max(z)
            e = [math.exp(v - m) if v != -math.inf else 0.0 for v in z]
            np.testing.assert_allclose(out[b, r], np.array(e) / sum(e), rtol=1e-6, atol=1e-7)
    assert np.all(out[:, mask == -np.inf] == 0)


def test_view_with_offset_and_strides():
    a = np.arange(24, dtype=np.float32).reshape(4, 6)
    v = R.VIEW(a, shape=(2, 3), strides=(6, 2), offset=7)
    np.testing.assert_array_equal(v, [[7, 9, 11], [13, 15, 17]])
    v3 = R.VIEW(a, shape=(2, 2, 3), strides=(12, 3, 1), offset=0)
    np.testing.assert_array_equal(v3, a.reshape(2, 2, 2, 3)[:, 0])


def test_view_shape_rule_catches_overrun():
    g = Graph()
    a = g.input("a", (4, 6))
    g.view(a, (2, 3), "ok", (6, 2), 7)
    with pytest.raises(IRError, match="runs past"):
        g.view(a, (2, 3), "bad", (6, 2), 14)


def test_flash_attn_matches_softmax_chain(rng):
    T, H, Hkv, D, C = 3, 4, 2, 8, 10
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((C, Hkv, D)).astype(np.float32)
    v = rng.standard_normal((C, Hkv, D)).astype(np.float32)
    pos = np.array([4, 5, 6], np.int32)
    out = R.FLASH_ATTN_EXT(q, k, v, pos, scale=0.3)
    for t in range(T):
        for h in range(H):
            kh = h // (H // Hkv)
            s = [0.3 * float(q[t, h] @ k[j, kh]) for j in range(pos[t] + 1)]
            w = np.exp(np.array(s) - max(s))
            w /= w.sum()
            ref = sum(w[j] * v[j, kh].astype(np.float64) for j in range(pos[t] + 1))
            np.testing.assert_allclose(out[t, h], ref, rtol=1e-5, atol=1e-6)
    k2 = k.copy()
    k2[7:] = 1e6  # rows after the last position are never read
    np.testing.assert_array_equal(R.FLASH_ATTN_EXT(q, k2, v, pos, scale=0.3), out)


def test_rms_norm_mul_mat_swiglu_argmax(rng):
    a = rng.standard_normal((3, 7)).astype(np.float32)
    ref = a / np.sqrt((a.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(R.RMS_NORM(a, eps=1e-6), ref, rtol=1e-6)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_allclose(R.MUL_MAT(w, a), np.einsum("nk,mk->mn", w, a), rtol=1e-5, atol=1e-5)
    g, u = a, a[::-1].copy()
    np.testing.assert_allclose(R.SWIGLU(g, u), g / (1 + np.exp(-g.astype(np.float64))) * u, rtol=1e-6)
    np.testing.assert_allclose(R.SILU(g), g / (1 + np.exp(-g.astype(np.float64))), rtol=1e-6)
    assert R.ARGMAX(a).tolist() == [int(np.argmax(r)) for r in a]


def test_get_rows_and_binary_broadcast(rng):
    a = rng.standard_normal((9, 4)).astype(np.float32)
    idx = np.array([8, 0, 8], np.int32)
    np.testing.assert_array_equal(R.GET_ROWS(a, idx), a[[8, 0, 8]])
    b = rng.standard_normal(4).astype(np.float32)
    np.testing.assert_array_equal(R.ADD(a, b), a + b)
    np.testing.assert_array_equal(R.MUL(a, b), a * b)
    np.testing.assert_array_equal(R.SCALE(a, s=0.5), a * np.float32(0.5))


def test_quantize_x8_layout_matches_the_longhand_formula(rng):
    """Each row: int8 [K] = rint(x * 127 / amax) per block of 32, then (amax / 127, sum of the values times
    it) as f32 pairs; an all-zero block has scale 0 and values 0."""
    M, K = 3, 96
    x = (rng.standard_normal((M, K)) * 4).astype(np.float32)
    x[1, 32:64] = 0.0
    out = R.QUANTIZE_X8(x)
    assert out.shape == (M, K * 5 // 16) and out.dtype == np.int32
    rows = out.view(np.uint8).reshape(M, K + K // 4)
    for m in range(M):
        for b in range(K // 32):
            blk = x[m, 32 * b : 32 * b + 32]
            amax = float(np.abs(blk).max())
            q = rows[m, 32 * b : 32 * b + 32].view(np.int8).astype(int)
            d, s = rows[m, K + 8 * b : K + 8 * b + 8].view(np.float32)
            if amax == 0.0:
                assert not q.any() and d == 0.0 and s == 0.0
                continue
            want = [round(v * np.float32(127 / np.float32(amax))) for v in blk.astype(np.float64)]
            assert np.abs(q - want).max() <= 1 and np.abs(q).max() == 127
            assert d == pytest.approx(amax / 127, rel=1e-6) and s == pytest.approx(q.sum() * d, rel=1e-6)
    back = R.dequantize_x8(out, K)
    assert np.abs(back - x).max() <= np.abs(x).max() / 127  # half a step of the coarsest block, and more


def test_mul_mat_reads_x_not_its_quantized_copy(rng):
    w = rng.standard_normal((5, 64)).astype(np.float32)
    x = rng.standard_normal((2, 64)).astype(np.float32)
    np.testing.assert_array_equal(R.MUL_MAT(w, x, R.QUANTIZE_X8(x)), R.MUL_MAT(w, x))
