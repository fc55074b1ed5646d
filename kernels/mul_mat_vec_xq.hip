// mul_mat_vec_xq.hip: MUL_MAT and MUL_MAT_ADD for up to 4 tokens on int8 x (quantize_x8's rows), Q4_0 and
// Q8_0 (mul_mat_vec_xq_<type>): y[m, n] = sum_k w[n, k] * x[m, k] (+ b[m * b_stride + n] where b is not null:
// rf_plus_b); MUL_MAT_SWIGLU with RF_MMVX_GLU (rows 2i, 2i + 1 gate_i, up_i: y[m, i] = silu(gate_i . x) *
// (up_i . x), y_stride N / 2; RF_MMVX_ROWS even). Where K % 64 == 0 (pairs of blocks 4-byte aligned) but
// mul_mat_vec_xr does not apply (K % 256 != 0), for weights of >= 8192 rows.
// Launch: grid (B, M), B = min(n_SM * blocks per SM, row groups) (RF_MMVX_SPREAD 0: as few as give every
// warp the same number of groups); block RF_MMVX_WARPS * RF_WARP threads; dynamic shared memory K * 1.25
// bytes (16-byte rounded) for x, plus per warp a ring of RF_MMVX_ASYNC chunks of RF_MMVX_ROWS rows.
// Each block copies x into shared memory (async copies issued before its first weight chunks); each warp
// walks its groups of RF_MMVX_ROWS rows in chunks of RF_MMVX_UNROLL warp steps (a step: 8-element units
// across the lanes), no block barrier after the copy. RF_MMVX_ASYNC D >= 2: the warp's ring of D chunks in
// shared memory is filled by async copies (16 B) D - 1 chunks ahead, across its groups (rows must be 16-byte
// multiples; otherwise, and with D = 0, a chunk loads into registers first). RF_MMVX_SHFL 1: pairs of
// blocks (Q4_0 36 B, Q8_0 68 B: 4-byte aligned when K % 64 == 0) are read as aligned 32-bit words, lane j of
// 8 taking word j + 1 (lane 0 also word 0), and shuffles hand each lane its unaligned half-words and scale.
// Tunables (-D; kernel_choice.py XQ_DEFAULTS): RF_MMVX_WARPS (8), RF_MMVX_ROWS (2), RF_MMVX_UNROLL (4),
// RF_MMVX_ASYNC (0), RF_MMVX_MINB (blocks per SM for the register budget), RF_MMVX_SHFL (1),
// RF_MMVX_SPREAD (1: row groups dealt round the blocks; 0: consecutive to a block's warps); host-side: blocks
// per SM (RF_MMVX_BPS).
// Floor: the weights once; x (K * 1.25) from L2 per block; y and b (M * N * 4 each at most) once.
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMVX_WARPS
#define RF_MMVX_WARPS 8
#endif
#ifndef RF_MMVX_ROWS
#define RF_MMVX_ROWS 2
#endif
#ifndef RF_MMVX_GLU
#define RF_MMVX_GLU 0  // 1: MUL_MAT_SWIGLU's epilogue (above)
#endif
#ifndef RF_MMVX_SHFL
#define RF_MMVX_SHFL 1
#endif
#define MMVX_THREADS (RF_MMVX_WARPS * RF_WARP)

// quantize_x8's row -> shared memory, 16-byte async copies (committed by the caller). NIB (4-bit weights):
// chunk 2b (elements 0-15 of block b) to int 4b, chunk 2b + 1 to K / 8 + 4b, so that unit u = 4b + i reads
// ints u and K / 8 + u (elements 4i.. and 16 + 4i.. of block b) and consecutive lanes read consecutive banks;
// otherwise the ints stay in element order. Then float2 [K / 32] (scale, block sum).
template <bool NIB>
RF_DEV void mmvx_copy_xq(const rf_u8* __restrict__ xq, int K, rf_u8* smem, int n_threads) {
    const int nq = K / 16, n = nq + K / 64;  // chunks of int8 x, then of (scale, sum) pairs
    for (int c = (int)threadIdx.x; c < n; c += n_threads) {
        const int dst = NIB && c < nq ? (c & 1) * (K / 2) + 16 * (c >> 1) : 16 * c;
        rf_cp_async16(smem + dst, xq + 16 * c);
    }
}

// the int8 dot of 4 + 4 weights against x: sum in units of ds.x
RF_DEV int mmvx_idot(int w0, int w1, const int* q1, int i0, int i1) {
    return rf_dp4a(w0, q1[i0], rf_dp4a(w1, q1[i1], 0));
}

// Q4_0, pair of blocks A B = words w0..w8: A's d in w0's low half, its qs from w0's high half to w4's low
// half; B's d in w4's high half, its qs in w5..w8. Unit u = 8 (pair) + j: j < 4 unit j of A, else of B.
// A warp step covers RF_WARP units = RF_WARP / 8 pairs; `p` points at this lane's pair.
struct MX_Q4_0 {
    static constexpr bool NIB = true;
    static constexpr int PAIR = 36, STEP = PAIR * RF_WARP / 8;
    struct Raw { rf_u32 a, b; };
    typedef QT_Q4_0::W W;  // d, q
    RF_DEV static void load(const rf_u8* p, int j, Raw& r) {
#if RF_MMVX_SHFL
        r.a = ((const rf_u32*)p)[j + 1];
        r.b = j == 0 ? ((const rf_u32*)p)[0] : 0u;
#else
        const rf_u8* b = p + (j >> 2) * 18;
        r.a = rf_ld_u32_a2(b + 2 + 4 * (j & 3));
        r.b = *(const rf_u16*)b;
#endif
    }
    RF_DEV static W decode(const Raw& r, int lane) {  // every lane of the warp, together
#if RF_MMVX_SHFL
        const int j = lane & 7;
        const rf_u32 prev = (rf_u32)rf_shfl_up((int)r.a, 1);  // lane j - 1's word j
        const rf_u32 wj = j == 0 ? r.b : prev;
        const rf_u32 dw = (rf_u32)rf_shfl((int)(j == 0 ? r.b : r.a), (lane & ~7) + (j < 4 ? 0 : 3));
        return W{rf_h2f((rf_u16)(j < 4 ? dw : dw >> 16)), j < 4 ? (wj >> 16) | (r.a << 16) : r.a};
#else
        (void)lane;
        return W{rf_h2f((rf_u16)r.b), r.a};
#endif
    }
    RF_DEV static float dot(const W& w, const int* q1, const float2* ds, int K, int u) {
        const int s = mmvx_idot((int)(w.q & RF_NIB_LO), (int)((w.q >> 4) & RF_NIB_LO), q1, u, K / 8 + u);
        const float2 xd = ds[u >> 2];
        return w.d * (xd.x * (float)s - 2.0f * xd.y);  // -8 * sum(x) over the block, a quarter per unit
    }
};

// Q8_0, pair of blocks A B = words w0..w16: A's d in w0's low half, its qs from w0's high half to w8's low
// half; B's d in w8's high half, its qs in w9..w16. Lane j loads w(2j + 1), w(2j + 2), lane 0 also w0.
struct MX_Q8_0 {
    static constexpr bool NIB = false;
    static constexpr int PAIR = 68, STEP = PAIR * RF_WARP / 8;
    struct Raw { rf_u32 a, b, c; };
    typedef QT_Q8_0::W W;  // d, q0, q1
    RF_DEV static void load(const rf_u8* p, int j, Raw& r) {
#if RF_MMVX_SHFL
        r.a = ((const rf_u32*)p)[2 * j + 1];
        r.b = ((const rf_u32*)p)[2 * j + 2];
        r.c = j == 0 ? ((const rf_u32*)p)[0] : 0u;
#else
        const rf_u8* b = p + (j >> 2) * 34;
        r.a = rf_ld_u32_a2(b + 2 + 8 * (j & 3));
        r.b = rf_ld_u32_a2(b + 6 + 8 * (j & 3));
        r.c = *(const rf_u16*)b;
#endif
    }
    RF_DEV static W decode(const Raw& r, int lane) {
#if RF_MMVX_SHFL
        const int j = lane & 7;
        const rf_u32 prev = (rf_u32)rf_shfl_up((int)r.b, 1);  // lane j - 1's word 2j
        const rf_u32 w2j = j == 0 ? r.c : prev;
        const rf_u32 dw = (rf_u32)rf_shfl((int)(j == 0 ? r.c : r.b), (lane & ~7) + (j < 4 ? 0 : 3));
        const float d = rf_h2f((rf_u16)(j < 4 ? dw : dw >> 16));
        return j < 4 ? W{d, (w2j >> 16) | (r.a << 16), (r.a >> 16) | (r.b << 16)} : W{d, r.a, r.b};
#else
        (void)lane;
        return W{rf_h2f((rf_u16)r.c), r.a, r.b};
#endif
    }
    RF_DEV static float dot(const W& w, const int* q1, const float2* ds, int K, int u) {
        (void)K;
        const int s = mmvx_idot((int)w.q0, (int)w.q1, q1, 2 * u, 2 * u + 1);
        return w.d * ds[u >> 2].x * (float)s;
    }
};

#ifndef RF_MMVX_UNROLL
#define RF_MMVX_UNROLL 4  // warp steps per chunk (the unit of loading)
#endif
#ifndef RF_MMVX_SPREAD
#define RF_MMVX_SPREAD 1  // 1: row groups dealt round the blocks; 0: consecutive groups to a block's warps
#endif
#ifndef RF_MMVX_ASYNC
#define RF_MMVX_ASYNC 0  // 0: a chunk's weights into registers, then computed; D >= 2: a ring of D chunks
#endif                   // per warp in shared memory, filled by async copies D - 1 chunks ahead

// x: quantize_x8's output (rows of x_stride bytes), copied into shared memory by every block
template <class T>
__device__ void mmvxq(const rf_u8* __restrict__ w, rf_i64 row_bytes, const rf_u8* __restrict__ xq,
                      rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K, const float* b,
                      rf_i64 b_stride) {
    RF_PDL_BEGIN();
    constexpr int R = RF_MMVX_ROWS, U = RF_MMVX_UNROLL, D = RF_MMVX_ASYNC;
    constexpr int CB = U * T::STEP;  // bytes of a row in one chunk (a multiple of 16)
    RF_DYN_SHARED(int, smem);
    int* q1 = smem;
    float2* ds = (float2*)(smem + K / 4);
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP, j = lane & 7;
    const int n_units = K / 8, full = n_units / RF_WARP, steps = (n_units + RF_WARP - 1) / RF_WARP;
    const int chunks = full / U, groups = (N + R - 1) / R, gstride = gridDim.x * RF_MMVX_WARPS;
    // SPREAD: group g to block g % gridDim.x, so every block (and SM) gets within one group of the others
    const int g0 = RF_MMVX_SPREAD ? warp * gridDim.x + blockIdx.x : blockIdx.x * RF_MMVX_WARPS + warp;
    y += blockIdx.y * y_stride;
    // x's copy first: its commit group is the oldest, so it lands before the weights' groups
    mmvx_copy_xq<T::NIB>(xq + blockIdx.y * x_stride, K, (rf_u8*)smem, MMVX_THREADS);
    rf_cp_async_commit();
    auto row_of = [&](int g, int i) { return w + (rf_i64)min(g * R + i, N - 1) * row_bytes; };
    auto dot_chunk = [&](const typename T::Raw (&raw)[U][R], int st, float (&acc)[R]) {
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int u = (st + k) * RF_WARP + lane;
#pragma unroll
            for (int i = 0; i < R; ++i) acc[i] += T::dot(T::decode(raw[k][i], lane), q1, ds, K, u);
        }
    };

#if RF_MMVX_ASYNC
    // this warp's ring: D chunks of R rows, after x's quantized copy (16-byte aligned)
    rf_u8* ring = (rf_u8*)smem + (K + K / 4 + 15) / 16 * 16 + warp * (D * R * CB);
    const int n_mine = g0 < groups ? (groups - g0 + gstride - 1) / gstride : 0;
    const int items = n_mine * chunks;  // (group, chunk) pairs of this warp, in order
    auto issue = [&](int t) {           // async copies of item t into its ring slot
        if (t < items) {
            const int g = g0 + (t / chunks) * gstride, c = t % chunks;
            rf_u8* dst = ring + (t % D) * (R * CB);
#pragma unroll
            for (int i = 0; i < R; ++i) {
                const rf_u8* src = row_of(g, i) + (rf_i64)c * CB;
                for (int o = 16 * lane; o < CB; o += 16 * RF_WARP) rf_cp_async16(dst + i * CB + o, src + o);
            }
        }
        rf_cp_async_commit();  // one group per item, empty past the end: the counts stay uniform
    };
#pragma unroll
    for (int t = 0; t < D - 1; ++t) issue(t);  // in flight while x is copied
#endif
    rf_cp_async_wait<(D > 1 ? D - 1 : 0)>();  // x's group (D - 1 weight groups may still be in flight)
    __syncthreads();

#if RF_MMVX_ASYNC
    int t = 0;
#endif
    for (int g = g0; g < groups; g += gstride) {  // warp-uniform
        float acc[R];
#pragma unroll
        for (int i = 0; i < R; ++i) acc[i] = 0.0f;
        for (int c = 0; c < chunks; ++c) {
#if RF_MMVX_ASYNC
            issue(t + D - 1);
            rf_cp_async_wait<D - 1>();  // item t has landed
            rf_syncwarp();
            const rf_u8* slot = ring + (t % D) * (R * CB) + (lane >> 3) * T::PAIR;
#pragma unroll
            for (int k = 0; k < U; ++k) {  // shared-memory words, read as they are used
                const int u = (c * U + k) * RF_WARP + lane;
#pragma unroll
                for (int i = 0; i < R; ++i) {
                    typename T::Raw r;
                    T::load(slot + i * CB + k * T::STEP, j, r);
                    acc[i] += T::dot(T::decode(r, lane), q1, ds, K, u);
                }
            }
            rf_syncwarp();  // every lane has read the slot before it is refilled
            ++t;
#else
            typename T::Raw raw[U][R];  // every load of the chunk issued before any arithmetic
#pragma unroll
            for (int k = 0; k < U; ++k) {
#pragma unroll
                for (int i = 0; i < R; ++i)
                    T::load(row_of(g, i) + (rf_i64)(c * U + k) * T::STEP + (lane >> 3) * T::PAIR, j,
                            raw[k][i]);
            }
            dot_chunk(raw, c * U, acc);
#endif
        }
        for (int st = chunks * U; st < steps; ++st) {  // the rest one step at a time, from global memory;
            const int u = st * RF_WARP + lane;           // a last partial step adds zeros
            const bool ok = u < n_units;
            typename T::Raw raw[R];
#pragma unroll
            for (int i = 0; i < R; ++i) {
                raw[i] = typename T::Raw{};
                if (ok) T::load(row_of(g, i) + (rf_i64)st * T::STEP + (lane >> 3) * T::PAIR, j, raw[i]);
            }
#pragma unroll
            for (int i = 0; i < R; ++i) {
                const float v = T::dot(T::decode(raw[i], lane), q1, ds, K, ok ? u : 0);
                acc[i] += ok ? v : 0.0f;
            }
        }
#if RF_MMVX_GLU
        static_assert(R % 2 == 0, "RF_MMVX_GLU needs an even RF_MMVX_ROWS");
#pragma unroll
        for (int i = 0; i < R; i += 2) {  // rows 2j and 2j + 1: gate_j and up_j
            const float gate = rf_warp_sum(acc[i]), up = rf_warp_sum(acc[i + 1]);
            if (lane == 0 && g * R + i < N) y[(g * R + i) / 2] = rf_silu(gate) * up;
        }
#else
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const float v = rf_warp_sum(acc[i]);
            if (lane == 0 && g * R + i < N) y[g * R + i] = rf_plus_b(v, b, b_stride, blockIdx.y, g * R + i);
        }
#endif
    }
}

#ifndef RF_MMVX_MINB
#define RF_MMVX_MINB 1  // blocks per SM the register allocation must allow
#endif
#define RF_MMVXQ_ENTRY(name, T)                                                                        \
    RF_KERNEL void __launch_bounds__(MMVX_THREADS, RF_MMVX_MINB)                                       \
        mul_mat_vec_xq_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, rf_i64 xq_stride,     \
                              float* y, rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) { \
        mmvxq<T>(w, row_bytes, xq, xq_stride, y, y_stride, N, K, b, b_stride);                         \
    }

RF_MMVXQ_ENTRY(q4_0, MX_Q4_0)
RF_MMVXQ_ENTRY(q8_0, MX_Q8_0)
