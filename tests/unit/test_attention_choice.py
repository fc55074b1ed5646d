"""Which FLASH_ATTN_EXT kernel runs (launch_attention.mma_kernel, launch_geometry.has_mma), and the launch
FLASH_ATTN_EXT makes for it, recorded without a GPU (matvec_launches.Recorder's fake modules)."""

import matvec_launches as R
import pytest

from rocmforge.backends.hip.context import Ctx
from rocmforge.backends.hip.launch_attention import FLASH_ATTN_EXT, decode_kernel, mma_kernel
from rocmforge.backends.hip.launch_geometry import Device, has_mma
from rocmforge.backends.hip.tensor import DevTensor


def _ctx(warp: int = 32, mma: bool = True) -> tuple[Ctx, R.Recorder]:
    rec = R.Recorder(warp)  # 4 SMs: the tiled kernel's tiles fill them, no split (no scratch to take)
    return Ctx(rec, Device(warp, 4, mma=mma)), rec


@pytest.mark.parametrize("arch, want", [
    ("sm_80", True), ("sm_86", True), ("sm_89", True), ("sm_90", True), ("sm_90a", True), ("sm_100", True),
    ("sm_120", True), ("sm_75", False), ("sm_70", False), ("sm_61", False),
    ("gfx1100", True), ("gfx1101", True), ("gfx1102", True), ("gfx1151", True),
    ("gfx90a", False), ("gfx942", False), ("gfx1030", False), ("gfx1200", False), ("", False),
])
def test_has_mma(arch, want):
    assert has_mma(arch) is want


@pytest.mark.parametrize("T, H, Hkv, D, kv, want", [
    (64, 14, 2, 64, "f16", True),     # a prompt, Qwen's group of 7
    (512, 32, 32, 128, "f16", True),  # LLaMA-7B's MHA
    (17, 9, 3, 64, "f16", True),
    (5, 6, 3, 80, "f16", False),      # 10 rows a KV head: less than a warp's 16
    (8, 4, 2, 80, "f16", True),       # exactly 16 rows; D = 80 is a multiple of 16
    (64, 14, 2, 64, "f32", False),    # f32 caches keep the tiled kernel
    (64, 4, 4, 72, "f16", False),     # D not a multiple of 16
    (64, 2, 1, 256, "f16", False),    # D past 128
    (1, 32, 32, 128, "f16", False),   # decode: flash_attn_decode
    (1, 32, 2, 128, "f16", True),     # one token, 16 query heads a KV head: not the decode kernel's
])
def test_mma_kernel_shapes(T, H, Hkv, D, kv, want):
    ctx, _ = _ctx()
    assert mma_kernel(ctx, T, H, Hkv, D, kv) is want
    if want:
        assert not decode_kernel(ctx, T, H, Hkv, D)


@pytest.mark.parametrize("warp, mma", [(32, False), (64, True), (64, False)])
def test_mma_kernel_needs_the_instructions(warp, mma):
    ctx, _ = _ctx(warp, mma)
    assert not mma_kernel(ctx, 64, 14, 2, 64, "f16")


def _tensor(rec: R.Recorder, shape: tuple[int, ...], dtype: str, strides: tuple[int, ...] = ()) -> DevTensor:
    return DevTensor(rec.empty(1 << 24), 0, shape, dtype, strides)


@pytest.mark.parametrize("kv, mma", [("f16", True), ("f32", True), ("f16", False)])
def test_flash_attn_ext_launches(kv, mma):
    ctx, rec = _ctx(mma=mma)
    T, H, Hkv, D, C = 100, 14, 2, 64, 512
    q, out = _tensor(rec, (T, H, D), "f32"), _tensor(rec, (T, H, D), "f32")
    # the cache's [C, Hkv * D + 8] rows viewed as [C, Hkv, D]
    k = _tensor(rec, (C, Hkv, D), kv, (Hkv * D + 8, D, 1))
    v = _tensor(rec, (C, Hkv, D), kv, (Hkv * D + 8, D, 1))
    pos = _tensor(rec, (T,), "i32")
    FLASH_ATTN_EXT(ctx, out, q, k, v, pos, scale=0.125, rope_q=(64, True, 1e6, 1.0))
    (launch,) = rec.launches
    if kv == "f16" and mma:
        assert (launch["file"], launch["entry"]) == ("attention_mma.hip", "flash_attn_mma_f16")
        assert launch["defines"] == {"RF_HEAD_DIM": 64, "RF_WARP": 32}
        assert launch["grid"] == [-(-T * 7 // 64), Hkv] and launch["block"] == [128]
        scalars = [a[1] for a in launch["args"][5:]]
        assert scalars == [T, H, Hkv, Hkv * D + 8, D, C, 0.125, 64, 1, 1e6, 1.0]
    else:
        assert (launch["file"], launch["entry"]) == ("attention.hip", f"flash_attn_{kv}")


@pytest.mark.parametrize("pad, offset, want", [
    (0, 0, "flash_attn_decode_f16"),  # rows of whole 16-byte lane slices
    (8, 0, "flash_attn_decode_f16"),
    (4, 0, "flash_attn_f16"),         # a row stride of 132 halves: a lane's 16-byte load would straddle
    (0, 8, "flash_attn_f16"),         # a view 8 bytes into its buffer
])
def test_decode_kernel_needs_lane_aligned_caches(pad, offset, want):
    ctx, rec = _ctx()
    H, Hkv, D, C = 14, 2, 64, 32  # one split of the cache either way: no scratch to take
    q, out = _tensor(rec, (1, H, D), "f32"), _tensor(rec, (1, H, D), "f32")
    k = DevTensor(rec.empty(1 << 24), offset, (C, Hkv, D), "f16", (Hkv * D + pad, D, 1))
    v = DevTensor(rec.empty(1 << 24), offset, (C, Hkv, D), "f16", (Hkv * D + pad, D, 1))
    pos = _tensor(rec, (1,), "i32")
    FLASH_ATTN_EXT(ctx, out, q, k, v, pos, scale=0.125, rope_q=(64, True, 1e6, 1.0))
    assert rec.launches[-1]["entry"] == want


def test_cache_writes_before_a_kernel_that_does_not_take_them():
    # FLASH_ATTN_EXT with k_new and v_new where the decode kernel does not run (16 query heads a KV head):
    # SET_ROWS_ROPE's kernel writes K's row (ROPE'd) and V's through the cache views' row stride (a joint
    # [C, 2W] cache), then attention_mma's kernel attends
    ctx, rec = _ctx()
    H, Hkv, D, C = 32, 2, 64, 32
    W = Hkv * D
    q, out = _tensor(rec, (1, H, D), "f32"), _tensor(rec, (1, H, D), "f32")
    cache = rec.empty(1 << 24)
    k = DevTensor(cache, 0, (C, Hkv, D), "f16", (2 * W, D, 1))
    v = DevTensor(cache, 2 * W, (C, Hkv, D), "f16", (2 * W, D, 1))
    k_new, v_new = _tensor(rec, (1, W), "f32"), _tensor(rec, (1, W), "f32")
    pos = _tensor(rec, (1,), "i32")
    FLASH_ATTN_EXT(ctx, out, q, k, v, pos, k_new, v_new, scale=0.125, rope_q=(64, True, 1e6, 1.0))
    wk, wv, _ = rec.launches
    assert [x["entry"] for x in rec.launches] == ["set_rows_rope_f32_f16"] * 2 + ["flash_attn_mma_f16"]
    # src's and the cache's row strides, rows written, their width, the columns ROPE'd, the head dim, the RoPE
    assert [a[1] for a in wk["args"] if a != "ptr"] == [W, 2 * W, 1, W, W, D, 64, 1, 1e6, 1.0]
    assert [a[1] for a in wv["args"] if a != "ptr"] == [W, 2 * W, 1, W, 0, D, 0, 0, 1.0, 1.0]


@pytest.mark.parametrize("tunables, block, span, define", [
    ({}, 128, 32, None),                                      # the defaults: 4 warps, span 32, no define
    ({"RF_DEC_WARPS": 8, "RF_DEC_SPAN": 64}, 256, 64, 8),     # a build of 8 warps
    ({"RF_DEC_WARPS": 4, "RF_DEC_SPAN": 128}, 128, 128, None),
])
def test_decode_attention_tunables(tunables, block, span, define):
    rec = R.Recorder(32)
    ctx = Ctx(rec, Device(32, 4), tunables)
    H, Hkv, D, C = 14, 2, 64, 32  # one split: no scratch
    q, out = _tensor(rec, (1, H, D), "f32"), _tensor(rec, (1, H, D), "f32")
    k, v = _tensor(rec, (C, Hkv, D), "f16"), _tensor(rec, (C, Hkv, D), "f16")
    FLASH_ATTN_EXT(ctx, out, q, k, v, _tensor(rec, (1,), "i32"), scale=0.125, rope_q=(64, True, 1e6, 1.0))
    (launch,) = rec.launches
    assert launch["entry"] == "flash_attn_decode_f16" and launch["block"] == [block]
    assert launch["defines"].get("RF_DEC_WARPS") == define
    assert launch["args"][17] == ["int32", span]  # (q, k, v, pos, kn, vn, out, 3 partials, tickets, H, Hkv,
    # row and head strides, C, group, span, ...)


@pytest.mark.parametrize("tunables", [{"RF_DEC_WARPS": 3}, {"RF_DEC_SPAN": 48}, {"RF_DEC_SPAN": 0}])
def test_decode_attention_tunables_are_checked(tunables):
    rec = R.Recorder(32)
    ctx = Ctx(rec, Device(32, 4), tunables)
    q, out = _tensor(rec, (1, 14, 64), "f32"), _tensor(rec, (1, 14, 64), "f32")
    k, v = _tensor(rec, (32, 2, 64), "f16"), _tensor(rec, (32, 2, 64), "f16")
    with pytest.raises(ValueError, match="RF_DEC_"):
        FLASH_ATTN_EXT(ctx, out, q, k, v, _tensor(rec, (1,), "i32"), scale=0.125, rope_q=(64, True, 1e6, 1.0))
