// mul_mat_vec_xb.hip: MUL_MAT and MUL_MAT_ADD (+ b: rf_plus_b) for up to 4 tokens on int8 x (quantize_x8), a
// GGUF block per lane.
// dev/: a measurement variant, chosen by no HipBackend option (scripts/bench_matvec.py runs it through
// dev/matvec_variants.py); compiled by tests/unit/test_kernels_compile.py.
// mul_mat_vec_xb_<type> (Q4_0, Q8_0; x from quantize_x8; rows a multiple of 16 bytes, 16-byte aligned): the
// async ring of mul_mat_vec_xq, but a whole GGUF block per lane. ncu on an H200 (Q4_0 11008x4096) put
// mul_mat_vec_xq at 42 instructions per 8 weights and lane, issue-bound with 1.4-way bank conflicts; here a
// lane reads its block's aligned words from shared memory (a funnel shift realigns the 2-byte offset of odd
// blocks), x's two 16-byte halves with two 16-byte loads (Q4_0: the nibble layout, conflict-free), and does
// one scale product per block and row: 8 dp4a per 32 weights.
// Launch: grid (blocks, T), RF_MMVB_WARPS * RF_WARP threads; row groups of RF_MMVB_ROWS dealt round all
// warps of the grid (group g to block g % blocks); dynamic shared memory: x's copy (K * 1.25 bytes, 16-byte
// rounded) + per warp a ring of RF_MMVB_ASYNC chunks, a chunk = RF_MMVB_ROWS rows x RF_WARP blocks (576 bytes
// a row for Q4_0, 1088 for Q8_0; a row's last chunk holds its tail), filled RF_MMVB_ASYNC - 1 chunks ahead.
// Tunables (-D; dev/matvec_variants.py XB_DEFAULTS): RF_MMVB_WARPS (8), RF_MMVB_ROWS (2), RF_MMVB_ASYNC (4),
// RF_MMVB_MINB (blocks per SM for the register budget; the launcher's RF_MMVB_BPS resident blocks),
// RF_MMVB_CHAINS (1: dp4a accumulators per block and row; Q4_0 only where RF_MMV_HI16 is 0), RF_MMV_HI16 (1:
// Q4_0's high nibbles masked in place and multiplied as unsigned bytes where the hardware has that dp4a).
// Bytes: the weights once; x (K * 1.25) from L2 per block.
#include "rf_compat.h"
#include "rf_block_dot.h"

// pre-quantized x (quantize_x8's row) -> shared memory in mmvx_quantize's layout, 16-byte async copies
// (committed by the caller). NIB: chunk 2b (elements 0-15 of block b) to int 4b, chunk 2b + 1 to K / 8 + 4b.
template <bool NIB>
RF_DEV void mmvx_copy_xq(const rf_u8* __restrict__ xq, int K, rf_u8* smem, int n_threads) {
    const int nq = K / 16, n = nq + K / 64;  // chunks of int8 x, then of (scale, sum) pairs
    for (int c = (int)threadIdx.x; c < n; c += n_threads) {
        const int dst = NIB && c < nq ? (c & 1) * (K / 2) + 16 * (c >> 1) : 16 * c;
        rf_cp_async16(smem + dst, xq + 16 * c);
    }
}

#ifndef RF_MMVB_WARPS
#define RF_MMVB_WARPS 8
#endif
#ifndef RF_MMVB_ROWS
#define RF_MMVB_ROWS 2
#endif
#ifndef RF_MMVB_ASYNC
#define RF_MMVB_ASYNC 4
#endif
#ifndef RF_MMVB_MINB
#define RF_MMVB_MINB 2
#endif
#ifndef RF_MMVB_ABLATE
#define RF_MMVB_ABLATE 0  // diagnostic for bench_matvec.py only (WRONG results): 1 drops the dot products,
#endif                    // keeping the ring, the waits and two word loads per block and row
#define MMVB_THREADS (RF_MMVB_WARPS * RF_WARP)

template <class T>
__device__ void mmvb(const rf_u8* __restrict__ w, rf_i64 row_bytes, const rf_u8* __restrict__ xq,
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K, const float* b,
                     rf_i64 b_stride) {
    constexpr int R = RF_MMVB_ROWS, D = RF_MMVB_ASYNC, CB = T::BYTES * RF_WARP;
    static_assert(D >= 2, "the ring needs a chunk in flight");
    static_assert(CB % 16 == 0, "chunks are copied in 16-byte pieces");
    RF_DYN_SHARED(int, smem);
    rf_u8* sm = (rf_u8*)smem;
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const int nb = K / 32, chunks = (nb + RF_WARP - 1) / RF_WARP, groups = (N + R - 1) / R;
    const int gstride = gridDim.x * RF_MMVB_WARPS, g0 = warp * gridDim.x + blockIdx.x;
    y += blockIdx.y * y_stride;
    mmvx_copy_xq<T::NIB>(xq + blockIdx.y * x_stride, K, sm, MMVB_THREADS);
    rf_cp_async_commit();  // the oldest group: it lands before the weights'

    rf_u8* ring = sm + (K + K / 4 + 15) / 16 * 16 + warp * (D * R * CB);
    const int n_mine = g0 < groups ? (groups - g0 + gstride - 1) / gstride : 0;
    const int items = n_mine * chunks;  // (group, chunk) pairs of this warp, in order
    // the next item to issue: its index, chunk, and its group's row pointers (this lane's first 16 bytes);
    // counters rather than divisions, pointers rather than 64-bit products per chunk
    int it = 0, ic = 0, ig = g0;
    const rf_u8* src[R];
    auto set_rows = [&]() {
#pragma unroll
        for (int i = 0; i < R; ++i) src[i] = w + (rf_i64)min(ig * R + i, N - 1) * row_bytes + 16 * lane;
    };
    set_rows();
    auto issue = [&]() {  // async copies of the next item into its ring slot
        if (it < items) {
            const int off = ic * CB, n = (int)min((rf_i64)CB, row_bytes - off) - 16 * lane;  // a row's tail
            rf_u8* dst = ring + (it % D) * (R * CB) + 16 * lane;
#pragma unroll
            for (int i = 0; i < R; ++i) {
#pragma unroll
                for (int o = 0; o < CB; o += 16 * RF_WARP) {
                    if (o < n) rf_cp_async16(dst + i * CB + o, src[i] + off + o);
                }
            }
            if (++ic == chunks) {
                ic = 0;
                ig += gstride;
                set_rows();
            }
        }
        ++it;
        rf_cp_async_commit();  // one group per item, empty past the end: the counts stay uniform
    };
#pragma unroll
    for (int t = 0; t < D - 1; ++t) issue();
    rf_cp_async_wait<D - 1>();  // x's group
    __syncthreads();

    const int a = lane * T::BYTES, sh = 16 + 8 * (a & 2);  // this lane's block in a chunk's row
    int t = 0;
    for (int g = g0; g < groups; g += gstride) {  // warp-uniform
        float acc[R];
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = 0.0f;
        for (int c = 0; c < chunks; ++c, ++t) {
            issue();                    // item t + D - 1
            rf_cp_async_wait<D - 1>();  // item t has landed
            rf_syncwarp();
            const int b = c * RF_WARP + lane;
            if (b < nb) {
                const rf_u32* wp = (const rf_u32*)(ring + (t % D) * (R * CB) + (a & ~3));  // row 0's words
#if RF_MMVB_ABLATE
#pragma unroll
                for (int i = 0; i < R; ++i)
                    acc[i] += (float)(int)(wp[i * CB / 4] ^ wp[i * CB / 4 + T::WORDS - 1]);
#else
                const int4 xa = *(const int4*)(sm + (T::NIB ? 16 * b : 32 * b));
                const int4 xb = *(const int4*)(sm + (T::NIB ? K / 2 + 16 * b : 32 * b + 16));
                const float2 xd = ((const float2*)(sm + K))[b];
#pragma unroll
                for (int i = 0; i < R; ++i) {
                    rf_u32 wd[T::WORDS];
#pragma unroll
                    for (int k = 0; k < T::WORDS; ++k) wd[k] = wp[i * (CB / 4) + k];
                    acc[i] += T::dot(wd, sh, xa, xb, xd);
                }
#endif
            }
            rf_syncwarp();  // every lane has read the slot before it is refilled
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const float v = rf_warp_sum(acc[i]);
            if (lane == 0 && g * R + i < N) y[g * R + i] = rf_plus_b(v, b, b_stride, blockIdx.y, g * R + i);
        }
    }
}

#define RF_MMVB_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVB_THREADS, RF_MMVB_MINB)                                       \
        mul_mat_vec_xb_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, rf_i64 xq_stride,     \
                              float* y, rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) { \
        mmvb<T>(w, row_bytes, xq, xq_stride, y, y_stride, N, K, b, b_stride);                          \
    }

RF_MMVB_ENTRY(q4_0, MB_Q4_0)
RF_MMVB_ENTRY(q8_0, MB_Q8_0)
