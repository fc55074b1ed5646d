"""kernels/attention.hip run on the CPU (simt_emu.h: a std::thread per GPU thread, blocks one after another)
against numpy_ref.FLASH_ATTN_EXT: decode and short prompts over a cache split into chunks, where the last
block of each tile to finish merges the chunks' partials; the tickets it takes are left zero, so a second
launch computes the same. Blocks run one after another here, so which block merges is not tested (any
order would do); what only a GPU shows (blocks at once, memory ordering between SMs, f16 caches, speed) is
tests/gpu/test_conformance.py's FLASH_ATTN_EXT rows."""

import subprocess

import numpy as np
import pytest
from simt_kernels import build

from rocmforge.backends import numpy_ref as R

MAIN = r"""
#include <cstdio>
#include "attention_emu.hip"
int main(int argc, char** argv) {
    FILE* f = std::fopen(argv[1], "rb");
    int d[12];  // T, H, Hkv, C, n_splits, chunk, rope_dims, rope_neox, decode kernel, f16 cache, write row,
    if (std::fread(d, 4, 12, f) != 12) return 2;  // rows a decode split takes at least
    const int T = d[0], H = d[1], Hkv = d[2], C = d[3], S = d[4], chunk = d[5];
    std::vector<float> q((size_t)T * H * RF_HEAD_DIM), k((size_t)C * Hkv * RF_HEAD_DIM), v(k.size());
    std::vector<int> pos(T);
    for (auto* a : {&q, &k, &v})
        if (!emu::read(f, *a)) return 2;
    if (std::fread(pos.data(), 4, T, f) != (size_t)T) return 2;
    // with d[10]: the step's K and V rows, which the decode kernel writes into cache row pos[0] itself
    std::vector<float> kn(d[10] ? (size_t)Hkv * RF_HEAD_DIM : 0), vn(kn.size());
    for (auto* a : {&kn, &vn})
        if (!emu::read(f, *a)) return 2;
    const float* knp = d[10] ? kn.data() : nullptr;
    const float* vnp = d[10] ? vn.data() : nullptr;
    std::fclose(f);
    const int G = H / Hkv, bx = (T * G + FA_BQ - 1) / FA_BQ;
    std::vector<float> po((size_t)S * T * H * RF_HEAD_DIM), pm((size_t)S * T * H), pl(pm.size());
    std::vector<int> tickets((size_t)bx * Hkv, 0);
    std::vector<rf_u16> kh(k.size()), vh(v.size());  // the f16 cache: the same values, rounded
    for (size_t i = 0; i < k.size(); ++i) {
        rf_io<rf_u16>::store(kh.data(), i, k[i]);
        rf_io<rf_u16>::store(vh.data(), i, v[i]);
    }
    for (int run = 0; run < 2; ++run) {
        std::vector<float> out(q.size(), std::numeric_limits<float>::quiet_NaN());
        const rf_i64 rs = (rf_i64)Hkv * RF_HEAD_DIM;
#if FA_D % FA_DEC_E == 0 && FA_D <= 128 && RF_WARP % FA_DEC_L == 0 && FA_DEC_ROWS % FA_DEC_R == 0
        if (d[8] && d[9])
            emu::launch(rf_dim3{(unsigned)S, (unsigned)Hkv, 1}, FA_DEC_WARPS * RF_WARP, [&] {
                flash_attn_decode_f16(q.data(), kh.data(), vh.data(), pos.data(), knp, vnp, out.data(),
                                      po.data(), pm.data(), pl.data(), tickets.data(), H, Hkv, rs,
                                      RF_HEAD_DIM, C, 32, d[11], 0.125f, d[6], d[7], 10000.0f, 1.0f);
            });
        else if (d[8])
            emu::launch(rf_dim3{(unsigned)S, (unsigned)Hkv, 1}, FA_DEC_WARPS * RF_WARP, [&] {
                flash_attn_decode_f32(q.data(), k.data(), v.data(), pos.data(), knp, vnp, out.data(),
                                      po.data(), pm.data(), pl.data(), tickets.data(), H, Hkv, rs,
                                      RF_HEAD_DIM, C, 32, d[11], 0.125f, d[6], d[7], 10000.0f, 1.0f);
            });
        else
#endif
        if (d[9])
            emu::launch(rf_dim3{(unsigned)bx, (unsigned)Hkv, (unsigned)S}, FA_THREADS, [&] {
                flash_attn_f16(q.data(), kh.data(), vh.data(), pos.data(), out.data(), po.data(), pm.data(),
                               pl.data(), tickets.data(), T, H, Hkv, rs, RF_HEAD_DIM, C, chunk, 0.125f, d[6],
                               d[7], 10000.0f, 1.0f);
            });
        else
            emu::launch(rf_dim3{(unsigned)bx, (unsigned)Hkv, (unsigned)S}, FA_THREADS, [&] {
                flash_attn_f32(q.data(), k.data(), v.data(), pos.data(), out.data(), po.data(), pm.data(),
                               pl.data(), tickets.data(), T, H, Hkv, (rf_i64)Hkv * RF_HEAD_DIM, RF_HEAD_DIM,
                               C, chunk, 0.125f, d[6], d[7], 10000.0f, 1.0f);
            });
        int left = 0;
        for (int t : tickets) left += t != 0;
        std::printf("tickets %d\n", left);
        for (float x : out) std::printf("%.9g\n", x);
    }
    // cache row pos[0] as the kernels left it: K's heads, then V's
    const size_t r0 = (size_t)pos[0] * Hkv * RF_HEAD_DIM;
    for (int i = 0; i < 2 * Hkv * RF_HEAD_DIM; ++i) {
        const size_t e = r0 + i % (Hkv * RF_HEAD_DIM);
        const bool is_k = i < Hkv * RF_HEAD_DIM;
        std::printf("%.9g\n", d[9] ? rf_io<rf_u16>::load(is_k ? kh.data() : vh.data(), e)
                                   : (is_k ? k : v)[e]);
    }
}
"""


def test_the_launcher_mirrors_the_decode_kernels_macros():
    from rocmforge.backends.hip import launch_attention as L
    from rocmforge.backends.hip.modules import KERNEL_DIR

    src = (KERNEL_DIR / "attention.hip").read_text()
    for macro, value in (("RF_DEC_G", L.DEC_G), ("RF_DEC_WARPS", L.DEC_WARPS), ("FA_DEC_ROWS", L.DEC_ROWS),
                         ("FA_DEC_MAX_SPLITS", L.DEC_SPLITS), ("FA_DEC_E", L.DEC_E)):
        assert f"#define {macro} {value} " in src or f"#define {macro} {value}\n" in src, macro
    assert L.DEC_GROUP % L.DEC_ROWS == 0


DECODE_BUILDS = [(64, g) for g in (1, 2, 3, 4, 7)] + [(128, 2)]  # (D, G): flash_attn_decode is built per G


@pytest.fixture(scope="module")
def exes(tmp_path_factory):
    # D = 64 (4 threads a row, 16 dims each: the four-float path), 128 (8 threads, 16 dims), 80 (8 threads,
    # 10 dims: the one-float path); the decode kernel for the cases' groups of query heads
    d = tmp_path_factory.mktemp("attention_emu")
    builds = {(n, None): {"RF_HEAD_DIM": n} for n in (64, 80, 128)}
    builds.update({(n, g): {"RF_HEAD_DIM": n, "RF_DEC_G": g} for n, g in DECODE_BUILDS})
    # the position read before the wait (its rotation, the rows asked into L2) made stale on purpose
    builds[64, 7, "stale"] = {"RF_HEAD_DIM": 64, "RF_DEC_G": 7, "FA_DEC_POS_HINT(pos)": "(pos[0]-37)"}
    # other block sizes (the tunable RF_DEC_WARPS): 8 warps, 2 (fewer threads than head dims)
    builds[64, 7, "w8"] = {"RF_HEAD_DIM": 64, "RF_DEC_G": 7, "RF_DEC_WARPS": 8}
    builds[128, 2, "w2"] = {"RF_HEAD_DIM": 128, "RF_DEC_G": 2, "RF_DEC_WARPS": 2}
    # each pass's rows loaded in the pass (as at D 128, G 8), not during the pass before
    builds[64, 7, "nopipe"] = {"RF_HEAD_DIM": 64, "RF_DEC_G": 7, "FA_DEC_PIPE": 0}
    exes = build(d, "attention.hip", MAIN, {"fa" + "g".join(map(str, k)): v for k, v in builds.items()})
    return {key: exes["fa" + "g".join(map(str, key))] for key in builds}


F16_CASES = {(4, None), (7, None), (3, (32, 1))}  # (n_splits, rope) of the rows also run on an f16 cache


@pytest.mark.parametrize("f16", [False, True], ids=["f32", "f16"])
@pytest.mark.parametrize("decode", [False, True], ids=["tiled", "decode"])
@pytest.mark.parametrize("T, H, Hkv, C, pos0, n_splits, rope", [
    (1, 9, 3, 100, 70, 1, None),       # one chunk: the block writes the output itself
    (1, 9, 3, 100, 70, 4, None),       # SmolLM2's decode shape over 4 chunks of 32 rows
    (1, 9, 3, 100, 20, 4, None),       # chunks past the position: no work, an empty partial
    (3, 4, 1, 96, 50, 3, None),        # a 3-token prompt, 4 query heads on 1 KV head
    (1, 14, 2, 200, 199, 7, None),     # Qwen's group of 7, the last row of the cache
    (1, 4, 4, 300, 299, 5, None),      # one query head a KV head (LLaMA-7B's MHA)
    (1, 9, 3, 100, 70, 4, (64, 0)),    # q ROPE'd on the way in (normal pairs)
    (3, 4, 1, 96, 50, 3, (32, 1)),     # NEOX pairs over half the head: the rest copied
    (1, 14, 2, 200, 150, 5, (64, 1)),  # Qwen's decode: NEOX pairs, the angle shared by the group's heads
    (1, 4, 2, 96, 40, 3, (32, 0)),     # normal pairs over half the head, splits past the position
    (1, 9, 3, 640, 300, 20, None),     # 20 splits, 10 up to the position: the partials of 10 merged
    (1, 4, 1, 2200, 2100, 30, None),   # 23 splits: the 66 live groups of 32 rows dealt 3 a split
    (40, 4, 2, 96, 20, 1, (64, 1)),    # a prompt of 40: several query tiles, causal across KV tiles
])
def test_split_attention_merges_in_the_last_block(exes, tmp_path, T, H, Hkv, C, pos0, n_splits, rope,
                                                  decode, f16):
    if decode and (T > 1 or H // Hkv > 8):
        pytest.skip("flash_attn_decode: one token, at most 8 query heads a KV head")
    if f16 and (n_splits, rope) not in F16_CASES:
        pytest.skip("the f16 cache: on a few rows (the emulator is slow)")
    _check_case(exes[64, H // Hkv if decode else None], tmp_path, T, H, Hkv, C, pos0, n_splits, rope, decode,
                f16, 64)


@pytest.mark.parametrize("D, decode", [(80, False), (128, False), (128, True)])
def test_other_head_dims(exes, tmp_path, D, decode):
    # a prompt of 20 over two query tiles (or one decode token), the cache split in 3, NEOX pairs
    T = 1 if decode else 20
    _check_case(exes[D, 2 if decode else None], tmp_path, T, 4, 2, 96, 40, 3, (D, 1), decode, False, D)


def _check_case(exe, tmp_path, T, H, Hkv, C, pos0, n_splits, rope, decode, f16, D, write=False,
                span=32):
    rng = np.random.default_rng(T * 1000 + C + n_splits)
    q = rng.standard_normal((T, H, D)).astype(np.float32)
    k = rng.standard_normal((C, Hkv, D)).astype(np.float32)
    v = rng.standard_normal((C, Hkv, D)).astype(np.float32)
    pos = np.arange(pos0, pos0 + T, dtype=np.int32)
    kv_new = ()
    if write:  # the step's rows: the kernel writes them into the cache's row pos (poisoned here)
        kv_new = tuple(rng.standard_normal((T, Hkv * D)).astype(np.float32) for _ in "kv")
        k[pos] = v[pos] = np.nan
    chunk = -(-C // n_splits // 32) * 32 if n_splits > 1 else C
    n_splits = -(-C // chunk)
    f = tmp_path / "in.bin"
    with open(f, "wb") as fh:
        head = [T, H, Hkv, C, n_splits, chunk, *(rope or (0, 0)), int(decode), int(f16), int(write), span]
        np.array(head, np.int32).tofile(fh)
        for a in (q, k, v, pos, *kv_new):
            a.tofile(fh)
    lines = subprocess.run([str(exe), str(f)], capture_output=True, text=True, check=True,
                           timeout=300).stdout.split("\n")
    n = T * H * D
    rope_q = None if rope is None else (rope[0], bool(rope[1]), 10000.0, 1.0)
    if f16:  # the kernel reads the f16 cache: the reference, the same rounded values
        k, v = k.astype(np.float16), v.astype(np.float16)
    want = R.FLASH_ATTN_EXT(q, k, v, pos, *kv_new, scale=0.125, rope_q=rope_q)  # writes k[pos], v[pos]
    for run in range(2):
        head = lines[run * (n + 1)]
        got = np.array(lines[run * (n + 1) + 1 : (run + 1) * (n + 1)], np.float32).reshape(T, H, D)
        assert head == "tickets 0"  # every counter left zero for the next launch
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-6)
    row = np.array(lines[2 * (n + 1) : 2 * (n + 1) + 2 * Hkv * D], np.float32).reshape(2, Hkv, D)
    # the row as written: bit for bit what SET_ROWS_ROPE's reference stores (rf_rope.h computes in double)
    np.testing.assert_array_equal(row[0], k[pos0].astype(np.float32))
    np.testing.assert_array_equal(row[1], v[pos0].astype(np.float32))


@pytest.mark.parametrize("f16", [False, True], ids=["f32", "f16"])
@pytest.mark.parametrize("H, Hkv, C, pos0, n_splits, rope", [
    (9, 3, 100, 70, 1, (64, 1)),     # one split: the only block writes the row and reads it
    (14, 2, 200, 150, 5, (64, 1)),   # Qwen's decode: the row in split (150 / 32) % 5 = 4's groups
    (4, 2, 96, 0, 3, (32, 0)),       # the first step: row 0, the one row attended
    (9, 3, 640, 300, 20, None),      # no RoPE: the rows copied; 20 splits
])
def test_decode_writes_the_steps_row_into_the_cache(exes, tmp_path, H, Hkv, C, pos0, n_splits, rope, f16):
    # fuse_kv_write: the attention takes k_new and v_new, writes them into row pos (k_new ROPE'd as q) and
    # attends over the cache with it; the poisoned row would make any read of it before the write NaN
    _check_case(exes[64, H // Hkv], tmp_path, 1, H, Hkv, C, pos0, n_splits, rope, True, f16, 64, write=True)


@pytest.mark.parametrize("H, Hkv, C, pos0, n_splits, span", [
    (14, 2, 640, 100, 20, 128),   # 101 rows, span 128: one split (no merge), the other 19 blocks idle
    (14, 2, 640, 300, 20, 128),   # 301 rows: 3 splits of 128-row spans, groups of 32 dealt over them
    (9, 3, 2200, 2100, 30, 256),  # 9 splits (2101 / 256), 66 groups dealt over them
    (4, 2, 96, 0, 3, 64),         # the first step: one row, one split
])
def test_decode_splits_by_the_position(exes, tmp_path, H, Hkv, C, pos0, n_splits, span):
    # the launcher's span: a step uses only the splits its rows fill (at least `span` rows each); the
    # tickets of the splits it uses are left zero, the others' untouched; the step's row written as well
    _check_case(exes[64, H // Hkv], tmp_path, 1, H, Hkv, C, pos0, n_splits, (64, 1), True, False, 64,
                write=True, span=span)


@pytest.mark.parametrize("pos0, n_splits, span", [(150, 5, 32), (300, 20, 128), (20, 3, 32)])
def test_decode_does_not_depend_on_the_position_read_before_the_wait(exes, tmp_path, pos0, n_splits, span):
    # the hint 37 rows off (fewer splits, another rotation): the result is the position's, the row written
    _check_case(exes[64, 7, "stale"], tmp_path, 1, 14, 2, 640, pos0, n_splits, (64, 1), True, False, 64,
                write=True, span=span)


@pytest.mark.parametrize("build, H, Hkv, D, pos0, n_splits, span", [
    ("w8", 14, 2, 64, 150, 5, 64),    # 8 warps: 64 rows a pass, 3 splits merged
    ("w8", 14, 2, 64, 40, 5, 64),     # ... one split, no merge
    ("w2", 4, 2, 128, 300, 20, 32),   # 2 warps (64 threads for 128 dims): 10 splits merged
    ("nopipe", 14, 2, 64, 300, 2, 32),  # 2 splits of 5 passes, each loaded in its own pass
])
def test_decode_at_other_block_sizes(exes, tmp_path, build, H, Hkv, D, pos0, n_splits, span):
    _check_case(exes[D, H // Hkv, build], tmp_path, 1, H, Hkv, 640, pos0, n_splits, (D, 1), True, False, D,
                write=True, span=span)
