// mul_mat_vec_x.hip: MUL_MAT and MUL_MAT_ADD (+ b: rf_plus_b) for up to 4 tokens, int8 x quantized by every
// block (Q4_0, Q8_0).
// dev/: a measurement variant, chosen by no HipBackend option (scripts/bench_matvec.py runs it through
// dev/matvec_variants.py); compiled by tests/unit/test_kernels_compile.py.
// ---- int8 x in shared memory, warps streaming row groups (mul_mat_vec_x_<type>: Q4_0, Q8_0) -------------
// For weights of >= 8192 rows (dev/matvec_variants.py).
// Launch: grid (B, T), B = min(n_SM * RF_MMVX_BPS, row groups) blocks (RF_MMVX_SPREAD 0: as few as give
// every warp the same number of groups); block RF_MMVX_WARPS * RF_WARP threads; dynamic shared memory
// K * levels + K / 4 bytes for x, plus RF_MMVX_ASYNC chunks of RF_MMVX_ROWS rows per warp for the ring.
// The block quantizes x to int8 once (blocks of 32 with scale and sum, as llama.cpp's q8_1: normalized
// MSE ~3e-5; RF_MMVX_LEVELS 2 adds a second int8 level for the rounding error: ~1e-9). Then each warp
// walks its groups of RF_MMVX_ROWS rows in chunks of RF_MMVX_UNROLL warp steps (a step: 8-element units
// across the lanes), no block barrier after the quantization. RF_MMVX_ASYNC D >= 2: each warp keeps a
// ring of D chunks in shared memory that async copies (cp.async, 16 B) fill D - 1 chunks ahead, across
// its groups, so memory stays busy while it computes and registers hold no loads in flight (rows must be
// 16-byte multiples: K % 256 == 0; otherwise, and with D = 0, a chunk loads into registers first).
// RF_MMVX_SHFL 1: pairs of blocks (Q4_0 36 B, Q8_0 68 B: 4-byte aligned when K % 64 == 0) are read as
// aligned 32-bit words, lane j of 8 taking word j + 1 (lane 0 also word 0), and shuffles hand each lane
// its unaligned half-words and scale: 1.1 (Q4_0) or 2.1 (Q8_0) loads per unit instead of 3 or 5.
// Bytes: the weights once; x (K * 4) once per block from L2. Measured on an H100 (bench_matvec.py, in a
// device graph, % of copy bandwidth): Q4_0 11008x4096 60-64% (f32 kernel 50%), 32000x4096 80% (55%);
// Q8_0 11008x4096 81-84% (77%). With N = 4096 it is no faster than the f32 kernel. Tried and slower: a
// one-chunk software pipeline in registers, L2 prefetch instructions, split K across warps, f32 x.
// mul_mat_vec_xq_<type> (Ctx.x8_prequant): the same, but x comes from quantize_x8 (K + K / 4 bytes per
// token, L2-resident) and each block copies it into shared memory with async copies issued before its first
// weight chunks, instead of quantizing 4 K bytes of f32 x itself. On an H200 it was slower than
// mul_mat_vec_x for Q4_0 11008x4096 and faster for Q8_0 11008x4096 (data/bench/matvec_log.md).
// Tunables (-D; the per-type defaults: kernel_choice.py XQ_DEFAULTS): RF_MMVX_WARPS, RF_MMVX_ROWS,
// RF_MMVX_UNROLL, RF_MMVX_ASYNC, RF_MMVX_MINB (blocks per SM for the register budget), RF_MMVX_LEVELS,
// RF_MMVX_SHFL, RF_MMVX_QB (x loads in flight while quantizing), RF_MMVX_SPREAD (row groups dealt round
// the blocks, 1, or consecutive to a block's warps, 0); the launcher's RF_MMVX_BPS.
#include "rf_compat.h"
#include "rf_quant.h"

RF_DEV int rf_pack4(int a, int b, int c, int d) {
    return (a & 0xff) | ((b & 0xff) << 8) | ((c & 0xff) << 16) | ((int)((rf_u32)d << 24));
}

RF_DEV int rf_q2(float v, int q1, float d, float id2) {  // the second level: (v - q1 * d) in steps of d / 254
    return max(-127, min(127, (int)rintf((v - (float)q1 * d) * id2)));
}

#ifndef RF_MMVX_WARPS
#define RF_MMVX_WARPS 8
#endif
#ifndef RF_MMVX_ROWS
#define RF_MMVX_ROWS 2
#endif
#ifndef RF_MMVX_LEVELS
#define RF_MMVX_LEVELS 1
#endif
#ifndef RF_MMVX_SHFL
#define RF_MMVX_SHFL 1
#endif
#ifndef RF_MMVX_QB
#define RF_MMVX_QB 4  // float4 loads of x per thread in flight while x is quantized
#endif
#define MMVX_THREADS (RF_MMVX_WARPS * RF_WARP)

// one float4 of x in its block of 32 (8 lanes together): level-1 int8 values a b c e and the inverse
// scale id; returns the scale
RF_DEV float mmvx_q1(const float4& v, int& a, int& b, int& c, int& e, float& id) {
    const float amax =
        rf_group_max(fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))), 8);
    id = amax > 0.0f ? 127.0f / amax : 0.0f;
    a = (int)rintf(v.x * id), b = (int)rintf(v.y * id), c = (int)rintf(v.z * id), e = (int)rintf(v.w * id);
    return amax / 127.0f;
}

// x [K] f32 -> shared q1 (q2) [K / 4] int8 x 4, ds [K / 32] = (scale, block sum of x as quantized).
// NIB (4-bit weights): unit u = 4b + i reads ints u and K / 8 + u (elements 4i.. and 16 + 4i.. of block
// b), so consecutive lanes read consecutive banks; otherwise the ints are in element order.
template <bool NIB>
RF_DEV void mmvx_quantize(const float* __restrict__ x, int K, int* q1, int* q2, float2* ds) {
    const int n4 = K / 4;
    for (int base = 0; base < n4; base += RF_MMVX_QB * MMVX_THREADS) {  // uniform trip count: shuffles
        float4 v[RF_MMVX_QB];  // all of this pass's loads in flight before any arithmetic
#pragma unroll
        for (int k = 0; k < RF_MMVX_QB; ++k) {
            const int t = base + k * MMVX_THREADS + (int)threadIdx.x;
            v[k] = t < n4 ? rf_ld4(x + 4 * t) : float4{0.0f, 0.0f, 0.0f, 0.0f};
        }
#pragma unroll
        for (int k = 0; k < RF_MMVX_QB; ++k) {
            const int t = base + k * MMVX_THREADS + (int)threadIdx.x;
            int a, b, c, e;
            float id;
            const float d = mmvx_q1(v[k], a, b, c, e, id);
#if RF_MMVX_LEVELS == 2
            const float id2 = 254.0f * id;
            const int a2 = rf_q2(v[k].x, a, d, id2), b2 = rf_q2(v[k].y, b, d, id2);
            const int c2 = rf_q2(v[k].z, c, d, id2), e2 = rf_q2(v[k].w, e, d, id2);
            const float qs = 254.0f * (float)(a + b + c + e) + (float)(a2 + b2 + c2 + e2);
#else
            const float qs = (float)(a + b + c + e);
#endif
            // the block sum of x as quantized, so that offsets (Q4_0's -8) multiply the same x as the dot
            const float sum = rf_group_sum(qs, 8) * (RF_MMVX_LEVELS == 2 ? d * RF_Q2_SCALE : d);
            if (t < n4) {
                const int blk = t >> 3, j = t & 7;
                const int at = NIB ? (j < 4 ? 4 * blk + j : n4 / 2 + 4 * blk + j - 4) : t;
                q1[at] = rf_pack4(a, b, c, e);
#if RF_MMVX_LEVELS == 2
                q2[at] = rf_pack4(a2, b2, c2, e2);
                if (j == 0) ds[blk] = float2{d * RF_Q2_SCALE, sum};
#else
                if (j == 0) ds[blk] = float2{d, sum};
#endif
            }
        }
    }
}

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

// the int8 dot of 4 + 4 weights against x, both levels combined: sum in units of ds.x
RF_DEV int mmvx_idot(int w0, int w1, const int* q1, const int* q2, int i0, int i1) {
    const int s = rf_dp4a(w0, q1[i0], rf_dp4a(w1, q1[i1], 0));
#if RF_MMVX_LEVELS == 2
    return 254 * s + rf_dp4a(w0, q2[i0], rf_dp4a(w1, q2[i1], 0));
#else
    (void)q2;
    return s;
#endif
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
    RF_DEV static float dot(const W& w, const int* q1, const int* q2, const float2* ds, int K, int u) {
        const int s = mmvx_idot((int)(w.q & RF_NIB_LO), (int)((w.q >> 4) & RF_NIB_LO), q1, q2, u, K / 8 + u);
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
    RF_DEV static float dot(const W& w, const int* q1, const int* q2, const float2* ds, int K, int u) {
        (void)K;
        const int s = mmvx_idot((int)w.q0, (int)w.q1, q1, q2, 2 * u, 2 * u + 1);
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

// PREQ: x is quantize_x8's output (rows of x_stride bytes), copied, not quantized, by every block
template <class T, bool PREQ>
__device__ void mmvx(const rf_u8* __restrict__ w, rf_i64 row_bytes, const void* __restrict__ xv,
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K, const float* b,
                     rf_i64 b_stride) {
    constexpr int R = RF_MMVX_ROWS, U = RF_MMVX_UNROLL, D = RF_MMVX_ASYNC;
    static_assert(!PREQ || RF_MMVX_LEVELS == 1, "pre-quantized x has one int8 level");
    constexpr int CB = U * T::STEP;  // bytes of a row in one chunk (a multiple of 16)
    RF_DYN_SHARED(int, smem);
    int* q1 = smem;
    int* q2 = smem + K / 4;  // with 2 levels
    float2* ds = (float2*)(smem + (RF_MMVX_LEVELS == 2 ? K / 2 : K / 4));
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP, j = lane & 7;
    const int n_units = K / 8, full = n_units / RF_WARP, steps = (n_units + RF_WARP - 1) / RF_WARP;
    const int chunks = full / U, groups = (N + R - 1) / R, gstride = gridDim.x * RF_MMVX_WARPS;
    // SPREAD: group g to block g % gridDim.x, so every block (and SM) gets within one group of the others
    const int g0 = RF_MMVX_SPREAD ? warp * gridDim.x + blockIdx.x : blockIdx.x * RF_MMVX_WARPS + warp;
    y += blockIdx.y * y_stride;
    if (PREQ) {  // x's copy first: its commit group is the oldest, so it lands before the weights' groups
        mmvx_copy_xq<T::NIB>((const rf_u8*)xv + blockIdx.y * x_stride, K, (rf_u8*)smem, MMVX_THREADS);
        rf_cp_async_commit();
    }
    auto row_of = [&](int g, int i) { return w + (rf_i64)min(g * R + i, N - 1) * row_bytes; };
    auto dot_chunk = [&](const typename T::Raw (&raw)[U][R], int st, float (&acc)[R]) {
#pragma unroll
        for (int k = 0; k < U; ++k) {
            const int u = (st + k) * RF_WARP + lane;
#pragma unroll
            for (int i = 0; i < R; ++i) acc[i] += T::dot(T::decode(raw[k][i], lane), q1, q2, ds, K, u);
        }
    };

#if RF_MMVX_ASYNC
    // this warp's ring: D chunks of R rows, after x's quantized copy (16-byte aligned)
    rf_u8* ring = (rf_u8*)smem + ((RF_MMVX_LEVELS == 2 ? 2 * K : K) + K / 4 + 15) / 16 * 16 +
                  warp * (D * R * CB);
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
    for (int t = 0; t < D - 1; ++t) issue(t);  // in flight while x is quantized (or copied)
#endif
    if (PREQ) {
        rf_cp_async_wait<(D > 1 ? D - 1 : 0)>();  // x's group (D - 1 weight groups may still be in flight)
    } else {
        mmvx_quantize<T::NIB>((const float*)xv + blockIdx.y * x_stride, K, q1, q2, ds);
    }
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
                    acc[i] += T::dot(T::decode(r, lane), q1, q2, ds, K, u);
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
                const float v = T::dot(T::decode(raw[i], lane), q1, q2, ds, K, ok ? u : 0);
                acc[i] += ok ? v : 0.0f;
            }
        }
#pragma unroll
        for (int i = 0; i < R; ++i) {
            const float v = rf_warp_sum(acc[i]);
            if (lane == 0 && g * R + i < N) y[g * R + i] = rf_plus_b(v, b, b_stride, blockIdx.y, g * R + i);
        }
    }
}

#ifndef RF_MMVX_MINB
#define RF_MMVX_MINB 1  // blocks per SM the register allocation must allow
#endif
#define RF_MMVX_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVX_THREADS, RF_MMVX_MINB)                                       \
        mul_mat_vec_x_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                             rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) {          \
        mmvx<T, false>(w, row_bytes, x, x_stride, y, y_stride, N, K, b, b_stride);                     \
    }


RF_MMVX_ENTRY(q4_0, MX_Q4_0)
RF_MMVX_ENTRY(q8_0, MX_Q8_0)
