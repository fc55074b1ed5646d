// mul_mat_vec.hip: MUL_MAT for one token (decode): y[n] = sum_k w[n, k] * x[k], w in its GGUF blocks.
//
// Six kernel families; the launcher uses mul_mat_vec_<type> unless asked for another: mul_mat_vec_q and
// _s measured slower on an H100; mul_mat_vec_x (further down) is faster for large Q4_0 / Q8_0 weights but
// quantizes x to int8 (see scripts/bench_matvec.py --sweep); its twin mul_mat_vec_xq reads x already
// quantized by quantize_x8 (once per activation, shared by the mat-vecs that read it); mul_mat_vec_xb reads
// that x with a whole GGUF block per lane (the int8 default where rows are 16-byte multiples and K is not a
// multiple of 256), and mul_mat_vec_xr (at the end) reads row groups with plain 16-byte loads (the int8
// default for Q4_0 and Q8_0 where K is a multiple of 256).
//
// mul_mat_vec_q_<type> (quantized weights, opt-in): int8 dot products (dp4a).
// Launch: grid (ceil(N / (RF_MMVQ_WARPS * RF_MMVQ_ROWS)), T), block RF_MMVQ_WARPS * RF_WARP threads,
// dynamic shared memory K * 2.25 bytes. The block first quantizes x to int8 in blocks of 32 (scale
// amax / 127, a second int8 level for the rounding error, the f32 block sum) into shared memory, loads
// in batches, with its warps' first weights already in flight; then each warp owns RF_MMVQ_ROWS rows and
// its lanes walk their units (rf_quant.h), RF_MMVQ_UNROLL per step, loading the next step's weights
// while computing this one; a warp reduction ends each row.
// Tunables: -D RF_MMVQ_WARPS (8), RF_MMVQ_ROWS (2), RF_MMVQ_UNROLL (2).
// Error: x's two-level rounding, normalized MSE ~4e-10 for Gaussian x (one int8 level, as llama.cpp's
// q8_1, gives ~3e-5).
//
// mul_mat_vec_<type> (every type, the default): f32 x, weights dequantized in registers.
// Launch: grid (ceil(N / RF_MMV_ROWS), T), block RF_MMV_WARPS * RF_WARP threads. A block owns
// RF_MMV_ROWS rows; its threads split each row into "units" (rf_quant.h: 8-16 elements, lanes next to
// each other read neighbouring x) and every unit of x is loaded once for all the block's rows. Per
// thread: RF_MMV_UNROLL units in flight per row, weights loaded before any arithmetic; the partial sums
// are reduced over the warp (shuffles) and then over the warps (shared memory). x stays f32 (no
// activation quantization), weights are dequantized in registers, accumulation is f32.
// Tunables (-D): RF_MMV_ROWS (2), RF_MMV_WARPS (4; the launcher picks 8 for Q4_0/Q8_0 rows of K >= 8192),
// RF_MMV_UNROLL (1), RF_MMV_FAST (rf_quant.h: 1, the four-shift Q4_0 dot; 2 adds a one-permute Q8_0 dot,
// normalized MSE ~1e-9 instead of ~1e-13). Measured on an H100 (scripts/bench_matvec.py --sweep): ROWS 1
// or 4, UNROLL 2-4, a one-unit-ahead software pipeline, 12-16 blocks per SM through launch bounds, and a
// variant with warp-owned rows (no block barrier) were all slower.
//
// mul_mat_vec_s_<type> (Q4_0, Q4_1, Q5_0, Q8_0 with rows a multiple of 16 bytes, opt-in):
// the f32 kernel's arithmetic, but each warp owns RF_MMVS_ROWS rows and stages them through shared
// memory: its lanes load 16-byte chunks of a row (coalesced; lcm(block, 16) bytes hold whole blocks),
// RF_MMVS_DEPTH chunks per lane in flight, while the previous stage is decoded unit by unit from shared.
// Launch: grid (ceil(N / (RF_MMVS_WARPS * RF_MMVS_ROWS)), T), block RF_MMVS_WARPS * RF_WARP threads.
// Tunables (-D): RF_MMVS_WARPS (4), RF_MMVS_ROWS (2), RF_MMVS_DEPTH (2).
// Floor: the weight bytes, N * row_bytes, read once (x, K * 4 bytes, and y stay in L2).
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMV_ROWS
#define RF_MMV_ROWS 2
#endif
#ifndef RF_MMV_WARPS
#define RF_MMV_WARPS 4
#endif
#ifndef RF_MMV_UNROLL
#define RF_MMV_UNROLL 1  // 1 and 2 measured the same on an H100; 1 uses fewer registers
#endif

#ifndef RF_MMVQ_ROWS
#define RF_MMVQ_ROWS 2
#endif
#ifndef RF_MMVQ_WARPS
#define RF_MMVQ_WARPS 8
#endif
#ifndef RF_MMVQ_UNROLL
#define RF_MMVQ_UNROLL 2
#endif

#ifndef RF_MMVS_ROWS
#define RF_MMVS_ROWS 2
#endif
#ifndef RF_MMVS_WARPS
#define RF_MMVS_WARPS 4
#endif
#ifndef RF_MMVS_DEPTH
#define RF_MMVS_DEPTH 2
#endif

#define MMV_THREADS (RF_MMV_WARPS * RF_WARP)
#define MMVS_THREADS (RF_MMVS_WARPS * RF_WARP)
#define MMVQ_THREADS (RF_MMVQ_WARPS * RF_WARP)

template <class T>
__device__ void mmv(const rf_u8* __restrict__ w, rf_i64 row_bytes, const float* __restrict__ x,
                    rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K) {
    constexpr int R = RF_MMV_ROWS, U = RF_MMV_UNROLL;
    const int tid = threadIdx.x;
    const int row0 = blockIdx.x * R;
    const int n_units = K / T::UNIT;
    x += blockIdx.y * x_stride;
    y += blockIdx.y * y_stride;

    const rf_u8* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = w + (rf_i64)min(row0 + r, N - 1) * row_bytes;

    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;

    int u = tid;
    // full steps: U units per thread, all loads issued before the arithmetic
    for (; u + (U - 1) * MMV_THREADS < n_units; u += U * MMV_THREADS) {
        typename T::W wv[U][R];
        typename T::X xv[U];
#pragma unroll
        for (int j = 0; j < U; ++j) {
#pragma unroll
            for (int r = 0; r < R; ++r) T::load_w(wr[r], u + j * MMV_THREADS, wv[j][r]);
        }
#pragma unroll
        for (int j = 0; j < U; ++j) T::load_x(x, u + j * MMV_THREADS, xv[j]);
#pragma unroll
        for (int j = 0; j < U; ++j) {
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] += T::dot(wv[j][r], xv[j]);
        }
    }
    for (; u < n_units; u += MMV_THREADS) {  // the tail, one unit at a time
        typename T::X xv;
        T::load_x(x, u, xv);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            typename T::W wv;
            T::load_w(wr[r], u, wv);
            acc[r] += T::dot(wv, xv);
        }
    }

    __shared__ float red[R][RF_MMV_WARPS];
    const int warp = tid / RF_WARP, lane = tid % RF_WARP;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float s = rf_warp_sum(acc[r]);
        if (lane == 0) red[r][warp] = s;
    }
    __syncthreads();
    if (tid < R && row0 + tid < N) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < RF_MMV_WARPS; ++i) s += red[tid][i];
        y[row0 + tid] = s;
    }
}

#define RF_MMV_ENTRY(name, T)                                                                          \
    RF_KERNEL void __launch_bounds__(MMV_THREADS)                                                      \
        mul_mat_vec_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                           rf_i64 y_stride, int N, int K) {                                            \
        mmv<T>(w, row_bytes, x, x_stride, y, y_stride, N, K);                                          \
    }

RF_WEIGHT_TYPES(RF_MMV_ENTRY)

// ---- staged f32 path ------------------------------------------------------------------------------------

__host__ __device__ constexpr int rf_gcd(int a, int b) { return b == 0 ? a : rf_gcd(b, a % b); }

template <class T>
__device__ void mmv_staged(const rf_u8* __restrict__ w, rf_i64 row_bytes, const float* __restrict__ x,
                           rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K) {
    constexpr int R = RF_MMVS_ROWS, D = RF_MMVS_DEPTH;
    constexpr int P = T::BYTES * 16 / rf_gcd(T::BYTES, 16);  // bytes holding whole blocks and chunks
    constexpr int C = P / 16;                                   // chunks per period
    constexpr int LANES = (RF_WARP / C) * C;                    // loading lanes: whole periods
    constexpr int SPAN = LANES * 16 * D;                        // bytes of a row per stage
    constexpr int UPS = SPAN / T::BYTES * (T::QK / T::UNIT);    // units per stage
    __shared__ uint4 buf[RF_MMVS_WARPS][2][R][SPAN / 16];  // uint4: 16-byte aligned
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const int row0 = (blockIdx.x * RF_MMVS_WARPS + warp) * R;
    if (row0 >= N) return;  // whole warps leave; no block-wide barrier follows
    x += blockIdx.y * x_stride;
    y += blockIdx.y * y_stride;
    const int row_chunks = (int)(row_bytes / 16), n_units = K / T::UNIT;
    const int stages = (row_chunks + LANES * D - 1) / (LANES * D);
    const uint4* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = (const uint4*)(w + (rf_i64)min(row0 + r, N - 1) * row_bytes);

    uint4 nxt[R][D];
    auto fetch = [&](int st) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
#pragma unroll
            for (int d = 0; d < D; ++d) {
                const int c = st * LANES * D + d * LANES + lane;
                if (lane < LANES && c < row_chunks) nxt[r][d] = wr[r][c];
            }
        }
    };
    fetch(0);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    for (int st = 0; st < stages; ++st) {
        uint4(*sb)[SPAN / 16] = buf[warp][st & 1];
        if (lane < LANES) {
#pragma unroll
            for (int r = 0; r < R; ++r) {
#pragma unroll
                for (int d = 0; d < D; ++d) sb[r][d * LANES + lane] = nxt[r][d];
            }
        }
        rf_syncwarp();
        if (st + 1 < stages) fetch(st + 1);  // in flight while this stage is decoded
        const int ub = st * UPS;
        for (int u = lane; u < UPS && ub + u < n_units; u += RF_WARP) {
            typename T::X xv;
            T::load_x(x, ub + u, xv);
#pragma unroll
            for (int r = 0; r < R; ++r) {
                typename T::W wv;
                T::load_w((const rf_u8*)sb[r], u, wv);
                acc[r] += T::dot(wv, xv);
            }
        }
        rf_syncwarp();
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float v = rf_warp_sum(acc[r]);
        if (lane == 0 && row0 + r < N) y[row0 + r] = v;
    }
}

#define RF_MMVS_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVS_THREADS)                                                     \
        mul_mat_vec_s_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                             rf_i64 y_stride, int N, int K) {                                          \
        mmv_staged<T>(w, row_bytes, x, x_stride, y, y_stride, N, K);                                   \
    }

RF_MMVS_ENTRY(q4_0, QT_Q4_0)
RF_MMVS_ENTRY(q4_1, QT_Q4_1)
RF_MMVS_ENTRY(q5_0, QT_Q5_0)
RF_MMVS_ENTRY(q8_0, QT_Q8_0)

// ---- int8 path ----------------------------------------------------------------------------------------

// x [K] f32 -> shared q1, q2 (int8 levels, as ints), d (scale), s (sum of x) per block of 32; 8 lanes a block
RF_DEV int rf_pack4(int a, int b, int c, int d) {
    return (a & 0xff) | ((b & 0xff) << 8) | ((c & 0xff) << 16) | ((int)((rf_u32)d << 24));
}

RF_DEV int rf_q2(float v, int q1, float d, float id2) {  // the second level: (v - q1 * d) in steps of d / 254
    return max(-127, min(127, (int)rintf((v - (float)q1 * d) * id2)));
}

#define QX_BATCH 8  // float4 loads per thread in flight at once

RF_DEV void quantize_x_q8(const float* __restrict__ x, int K, int* q1, int* q2, float* xd, float* xs) {
    const int n4 = K / 4;
    for (int base = 0; base < n4; base += QX_BATCH * MMVQ_THREADS) {  // uniform trip count
        float4 v[QX_BATCH];
#pragma unroll
        for (int j = 0; j < QX_BATCH; ++j) {
            const int e = base + j * MMVQ_THREADS + threadIdx.x;
            v[j] = e < n4 ? rf_ld4(x + 4 * e) : float4{0.0f, 0.0f, 0.0f, 0.0f};
        }
#pragma unroll
        for (int j = 0; j < QX_BATCH; ++j) {
            const int e = base + j * MMVQ_THREADS + threadIdx.x;
            float amax = fmaxf(fmaxf(fabsf(v[j].x), fabsf(v[j].y)), fmaxf(fabsf(v[j].z), fabsf(v[j].w)));
            float sum = rf_sum4(v[j]);
            amax = rf_group_max(amax, 8);  // the 8 lanes of one block of 32
            sum = rf_group_sum(sum, 8);
            const float d = amax / 127.0f, id = amax > 0.0f ? 127.0f / amax : 0.0f, id2 = 254.0f * id;
            const int a = (int)rintf(v[j].x * id), b = (int)rintf(v[j].y * id);
            const int c = (int)rintf(v[j].z * id), f = (int)rintf(v[j].w * id);
            if (e < n4) {
                q1[e] = rf_pack4(a, b, c, f);
                q2[e] = rf_pack4(rf_q2(v[j].x, a, d, id2), rf_q2(v[j].y, b, d, id2), rf_q2(v[j].z, c, d, id2),
                                 rf_q2(v[j].w, f, d, id2));
                if ((e & 7) == 0) {
                    xd[e >> 3] = d;
                    xs[e >> 3] = sum;
                }
            }
        }
    }
}

// Each warp owns RF_MMVQ_ROWS rows; its lanes walk their units, loading the next step's weights while
// computing this one. The block's warps share the quantized x and never wait for each other after it.
template <class T>
__device__ void mmvq(const rf_u8* __restrict__ w, rf_i64 row_bytes, const float* __restrict__ x,
                     rf_i64 x_stride,
                     float* __restrict__ y, rf_i64 y_stride, int N, int K) {
    constexpr int R = RF_MMVQ_ROWS, U = RF_MMVQ_UNROLL;
    RF_DYN_SHARED(int, smem);
    int* q1 = smem;
    int* q2 = smem + K / 4;
    float* xd = (float*)(smem + K / 2);
    float* xs = xd + K / 32;
    const RfQx xq = {q1, q2, xd, xs};
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const int row0 = (blockIdx.x * RF_MMVQ_WARPS + warp) * R;
    const int n_units = K / T::QUNIT;
    x += blockIdx.y * x_stride;
    y += blockIdx.y * y_stride;

    const rf_u8* wr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wr[r] = w + (rf_i64)min(row0 + r, N - 1) * row_bytes;
    typename T::W wv[U][R];
    int u = lane;
#pragma unroll
    for (int j = 0; j < U; ++j) {  // the first step's weights, in flight while x is quantized
        if (u + j * RF_WARP < n_units) {
#pragma unroll
            for (int r = 0; r < R; ++r) T::load_w(wr[r], u + j * RF_WARP, wv[j][r]);
        }
    }
    quantize_x_q8(x, K, q1, q2, xd, xs);
    __syncthreads();
    if (row0 >= N) return;

    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = 0.0f;
    for (; u < n_units; u += U * RF_WARP) {
        typename T::QX xv[U];
#pragma unroll
        for (int j = 0; j < U; ++j) {
            if (u + j * RF_WARP < n_units) T::q_load_x(xq, u + j * RF_WARP, xv[j]);
        }
#pragma unroll
        for (int j = 0; j < U; ++j) {
            if (u + j * RF_WARP < n_units) {
#pragma unroll
                for (int r = 0; r < R; ++r) acc[r] += T::q_dot(wv[j][r], xv[j]);
            }
        }
        const int next = u + U * RF_WARP;
#pragma unroll
        for (int j = 0; j < U; ++j) {
            if (next + j * RF_WARP < n_units) {
#pragma unroll
                for (int r = 0; r < R; ++r) T::load_w(wr[r], next + j * RF_WARP, wv[j][r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float v = rf_warp_sum(acc[r]);
        if (lane == 0 && row0 + r < N) y[row0 + r] = v;
    }
}

#define RF_MMVQ_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVQ_THREADS)                                                     \
        mul_mat_vec_q_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                             rf_i64 y_stride, int N, int K) {                                          \
        mmvq<T>(w, row_bytes, x, x_stride, y, y_stride, N, K);                                         \
    }

RF_MMVQ_ENTRY(q4_0, QT_Q4_0)
RF_MMVQ_ENTRY(q4_1, QT_Q4_1)
RF_MMVQ_ENTRY(q5_0, QT_Q5_0)
RF_MMVQ_ENTRY(q8_0, QT_Q8_0)
RF_MMVQ_ENTRY(q4_k, QT_Q4_K)
RF_MMVQ_ENTRY(q6_k, QT_Q6_K)

// ---- int8 x in shared memory, warps streaming row groups (mul_mat_vec_x_<type>: Q4_0, Q8_0) -------------
// Opt-in (HipBackend(int8_activations=True)), for weights of >= 8192 rows (launch.py X8_MIN_N).
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
// Tunables (-D, the launcher's per-type defaults in launch.py X8_DEFAULTS): RF_MMVX_WARPS, RF_MMVX_ROWS,
// RF_MMVX_UNROLL, RF_MMVX_ASYNC, RF_MMVX_MINB (blocks per SM for the register budget), RF_MMVX_LEVELS,
// RF_MMVX_SHFL, RF_MMVX_QB (x loads in flight while quantizing), RF_MMVX_SPREAD (row groups dealt round
// the blocks, 1, or consecutive to a block's warps, 0); the launcher's RF_MMVX_BPS.
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

// QUANTIZE_X8: x [T, K] f32 -> xq [T, K + K / 4] bytes per token: int8 [K] in element order (one level,
// as llama.cpp's q8_1), then float2 [K / 32] (scale, block sum of x as quantized); what mul_mat_vec_xq
// copies into shared memory. Launch: grid (ceil(K / 1024), T), 256 threads, a float4 each; K % 32 == 0.
// Bytes: K * 4 read, K * 1.25 written. With programmatic dependent launch (Ctx.pdl) the mat-vecs after it
// may start at once (they wait for its end before reading xq); it waits for the kernel before it.
RF_KERNEL void __launch_bounds__(256)
    quantize_x8(const float* x, rf_i64 x_stride, rf_u8* xq, rf_i64 xq_stride, int K) {
    rf_grid_dependents();
    rf_grid_wait();
    const int t = blockIdx.x * 256 + (int)threadIdx.x, n4 = K / 4;  // n4 % 8 == 0: whole blocks per 8 lanes
    x += blockIdx.y * x_stride;
    xq += blockIdx.y * xq_stride;
    const float4 v = t < n4 ? rf_ld4(x + 4 * t) : float4{0.0f, 0.0f, 0.0f, 0.0f};
    int a, b, c, e;
    float id;
    const float d = mmvx_q1(v, a, b, c, e, id);
    const float sum = rf_group_sum((float)(a + b + c + e), 8) * d;
    if (t < n4) {
        ((int*)xq)[t] = rf_pack4(a, b, c, e);
        if ((t & 7) == 0) ((float2*)(xq + K))[t >> 3] = float2{d, sum};
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
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K) {
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
            if (lane == 0 && g * R + i < N) y[g * R + i] = v;
        }
    }
}

#ifndef RF_MMVX_MINB
#define RF_MMVX_MINB 1  // blocks per SM the register allocation must allow
#endif
#define RF_MMVX_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVX_THREADS, RF_MMVX_MINB)                                       \
        mul_mat_vec_x_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                             rf_i64 y_stride, int N, int K) {                                          \
        mmvx<T, false>(w, row_bytes, x, x_stride, y, y_stride, N, K);                                  \
    }
#define RF_MMVXQ_ENTRY(name, T)                                                                        \
    RF_KERNEL void __launch_bounds__(MMVX_THREADS, RF_MMVX_MINB)                                       \
        mul_mat_vec_xq_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, rf_i64 xq_stride,     \
                              float* y, rf_i64 y_stride, int N, int K) {                               \
        mmvx<T, true>(w, row_bytes, xq, xq_stride, y, y_stride, N, K);                                 \
    }

RF_MMVX_ENTRY(q4_0, MX_Q4_0)
RF_MMVX_ENTRY(q8_0, MX_Q8_0)
#if RF_MMVX_LEVELS == 1  // pre-quantized x has one level (the launcher compiles it without RF_MMVX_LEVELS)
RF_MMVXQ_ENTRY(q4_0, MX_Q4_0)
RF_MMVXQ_ENTRY(q8_0, MX_Q8_0)
#endif

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
// Tunables (-D; launch.py XB_DEFAULTS): RF_MMVB_WARPS (8), RF_MMVB_ROWS (2), RF_MMVB_ASYNC (4, >= 2),
// RF_MMVB_MINB (blocks per SM for the register budget; the launcher's RF_MMVB_BPS resident blocks),
// RF_MMVB_CHAINS (1: dp4a accumulators per block and row; Q4_0 only where RF_MMV_HI16 is 0), RF_MMV_HI16 (1:
// Q4_0's high nibbles masked in place and multiplied as unsigned bytes where the hardware has that dp4a).
// Bytes: the weights once; x (K * 1.25) from L2 per block.
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
#ifndef RF_MMVB_CHAINS
#define RF_MMVB_CHAINS 1  // independent dp4a accumulators per block and row (1: one dependent chain of 8)
#endif
#ifndef RF_MMV_HI16
#define RF_MMV_HI16 1  // Q4_0 high nibbles through an unsigned x signed dp4a where the hardware has one
#endif
#ifndef RF_MMVB_ABLATE
#define RF_MMVB_ABLATE 0  // diagnostic for bench_matvec.py only (WRONG results): 1 drops the dot products,
#endif                    // keeping the ring, the waits and two word loads per block and row
#define MMVB_THREADS (RF_MMVB_WARPS * RF_WARP)

// bits sh .. sh + 31 of hi:lo (sh 16 or 32): a word of a block that starts on, or 2 bytes off, a word
RF_DEV rf_u32 mmvb_funnel(rf_u32 lo, rf_u32 hi, int sh) {
    return (rf_u32)((((unsigned long long)hi << 32) | lo) >> sh);
}

RF_DEV int mmvb_sum(const int (&s)[RF_MMVB_CHAINS]) {
    int t = s[0];
#pragma unroll
    for (int c = 1; c < RF_MMVB_CHAINS; ++c) t += s[c];
    return t;
}

// Q4_0 block: d (f16) then 16 bytes of nibbles; byte i holds elements i (low) and 16 + i (high). wd: the 5
// aligned words from the block's start rounded down to 4; sh 16: d in wd[0]'s low half, else (32) its high.
struct MB_Q4_0 {
    static constexpr int BYTES = 18, WORDS = 5;
    static constexpr bool NIB = true;  // x: elements 0-15 of each block at 16 b, 16-31 at K / 2 + 16 b
    RF_DEV static float dot(const rf_u32 (&wd)[WORDS], int sh, const int4& xa, const int4& xb, float2 xd) {
        const float d = rf_h2f((rf_u16)(wd[0] >> (sh - 16)));
        const int xl[4] = {xa.x, xa.y, xa.z, xa.w}, xh[4] = {xb.x, xb.y, xb.z, xb.w};
#if RF_MMV_HI16 && RF_HAS_DP4A_US
        // high nibbles masked in place: 16 x their dot in a chain of its own, no shifts (3 instructions less)
        int lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const rf_u32 q = mmvb_funnel(wd[k], wd[k + 1], sh);
            lo = rf_dp4a((int)(q & RF_NIB_LO), xl[k], lo);
            hi = rf_dp4a_us(q & ~RF_NIB_LO, xh[k], hi);
        }
        const int s = lo + (hi >> 4);  // hi is a multiple of 16: the shift is exact
#else
        int c[RF_MMVB_CHAINS] = {};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const rf_u32 q = mmvb_funnel(wd[k], wd[k + 1], sh);
            c[(2 * k) % RF_MMVB_CHAINS] = rf_dp4a((int)(q & RF_NIB_LO), xl[k], c[(2 * k) % RF_MMVB_CHAINS]);
            c[(2 * k + 1) % RF_MMVB_CHAINS] =
                rf_dp4a((int)((q >> 4) & RF_NIB_LO), xh[k], c[(2 * k + 1) % RF_MMVB_CHAINS]);
        }
        const int s = mmvb_sum(c);
#endif
        return d * (xd.x * (float)s - 8.0f * xd.y);  // nibbles are q + 8: -8 * sum(x) of the block
    }
};

// Q8_0 block: d (f16) then 32 int8; x in element order
struct MB_Q8_0 {
    static constexpr int BYTES = 34, WORDS = 9;
    static constexpr bool NIB = false;  // x: elements 0-15 of each block at 32 b, 16-31 at 32 b + 16
    RF_DEV static float dot(const rf_u32 (&wd)[WORDS], int sh, const int4& xa, const int4& xb, float2 xd) {
        const float d = rf_h2f((rf_u16)(wd[0] >> (sh - 16)));
        const int xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        int s[RF_MMVB_CHAINS] = {};
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int c = k % RF_MMVB_CHAINS;
            s[c] = rf_dp4a((int)mmvb_funnel(wd[k], wd[k + 1], sh), xv[k], s[c]);
        }
        return d * xd.x * (float)mmvb_sum(s);
    }
};

template <class T>
__device__ void mmvb(const rf_u8* __restrict__ w, rf_i64 row_bytes, const rf_u8* __restrict__ xq,
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K) {
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
            if (lane == 0 && g * R + i < N) y[g * R + i] = v;
        }
    }
}

#define RF_MMVB_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVB_THREADS, RF_MMVB_MINB)                                       \
        mul_mat_vec_xb_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, rf_i64 xq_stride,     \
                              float* y, rf_i64 y_stride, int N, int K) {                               \
        mmvb<T>(w, row_bytes, xq, xq_stride, y, y_stride, N, K);                                       \
    }

RF_MMVB_ENTRY(q4_0, MB_Q4_0)
RF_MMVB_ENTRY(q8_0, MB_Q8_0)

// mul_mat_vec_xr_<type> (Q4_0, Q8_0; x from quantize_x8; K a multiple of 256, rows packed and aligned): the
// weights are read as the plain read floor reads them: coalesced 16-byte loads into registers, a whole
// step in flight, no async copies. A block owns row groups of 8 rows (dealt round the grid, which stays
// resident); a group is read in steps, dealt round the block's warps (K split W ways): per step
// H = RF_WARP / 8 consecutive groups of 8 blocks (Q4_0: 144 bytes, 9 chunks of 16; Q8_0: 272, 17) of each
// of the 8 rows. A warp stores its step to its staging area in shared memory, issues its next step's loads
// (across row groups), and computes: lane b + 8 h takes block b of group h in all 8 rows, so its x block
// (read through L1, coalesced over the warp) serves 8 rows; a group's base in staging is 32 h bytes off a
// 128-byte line (Q4_0: 160-byte groups), so the 32 lanes' word loads of a row hit 32 different banks. A row
// group ends with a transposed warp reduction of the 8 rows, then (W > 1) one over the warps through shared
// memory.
// H200 measurements that shaped it (data/bench/matvec_log.md): xb's and a first xr's x copy to shared
// memory per block (cp.async, then a barrier) cost ~3 us of a 12 us launch; the loads alone, in this
// pattern, reach 78% of copy bandwidth (RF_MMVR_ABLATE=2, one warp a row group), the loads and staging 76%
// (ABLATE=1), the full kernel 71%: the last step's arithmetic, after the last bytes arrive, is most of the
// gap. Every warp starts at once, so the first loads come before any other index arithmetic (72-75% against
// 71-73% for Q4_0, 79-83% against 62-65% for Q8_0). Slower and dropped: cp.async copies of the steps (2-4
// stages, 50-61%), a lane reading a whole group (a load instruction then reads half of each 32-byte sector:
// 62% as a pure read), the last step row by row or as a smaller fifth item (matvec_log.md).
// RF_MMVR_Q = Q (K = 256 H Q, one warp a block): a row is read as Q virtual rows of one step each (its
// quarters for K = 4096), so a row group is 8 / Q whole rows, 4.6 KB of contiguous bytes (Q4_0), and each
// round of the grid's loads reads one contiguous span of the weight; x's Q blocks a lane stay in registers,
// loaded before the first weights; the Q virtual rows of a row are summed in registers before the warp
// reduction. H200, 11008x4096: Q4_0 71.5-73.6% on five machines (loads and staging alone 78-80%, against 76%
// for row groups of 8 rows), 74.4-75.1% with RF_MMVR_XDEP on a sixth (73.2-73.9% without), 72.6-74.9% on
// six more; Q8_0 84-86% (80-83%). Slower and dropped: x loaded after the first weights (its hoisted scale
// products held the first staging, or its late arrival the second item's loads: 67-70%; with XDEP 71%, first
// arrival 2.55 us against 1.97), x copied to shared memory by cp.async (41%), two items in flight a warp
// (66-67%: the last two items' arithmetic both come after the last bytes), row groups dealt by tickets from
// a global counter (43%: the atomics serialize), an item staged and computed in two halves (1 point less).
// RF_MMVR_PDL (Ctx.pdl, programmatic dependent launch on sm_90+, the launcher's default there, XPF 0): the
// kernel starts while the one before it ends, asks for its first item before waiting for it and reads x
// after; what was left of the gap on the H200 was the launch and the first bytes' latency, which now overlap
// the kernel before. H200, 11008x4096 in a device graph: Q4_0 80.7-83.3% (73.2-75.1% plain), Q8_0 88.2-90.3%
// (83.8-85.9%); the later items prefetched into L2 as well (cp.async.bulk.prefetch): 68.8%, dropped. Row
// groups of 8 rows need XPF 1 (59-62% with XPF 0 and the early start, against 64% plain), so they stay plain.
// Launch: grid (min(resident blocks, ceil(N / 8)), T) (Q: ceil(Q N / 8) row groups spread evenly over the
// fewest rounds of resident blocks), RF_MMVR_WARPS * RF_WARP threads; dynamic shared
// memory: per warp 8 rows x H groups x (chunks a group + 1) x 16 bytes, and 2 x W x 8 floats.
// Tunables (-D; launch.py XR_DEFAULTS, XR_ONE_WARP, XR_WHOLE): RF_MMVR_WARPS (4), RF_MMVR_MINB (blocks per SM
// for the register budget; the launcher's RF_MMVR_BPS resident blocks), RF_MMVR_XPF (1: x prefetched with the
// weights), RF_MMVR_Q (whole rows, above), RF_MMVR_XDEP, RF_MMVR_PDL and RF_MMVR_PDLT (above and below),
// RF_MMV_HI16 (Q4_0's dot, as in xb),
// RF_MMVR_ABLATE (diagnostic, WRONG results: 1 keeps loads and staging but drops the dot products, 2 keeps
// only the loads), RF_MMVR_TRACE (diagnostic: per-warp time stamps, scripts/trace_matvec_xr.py).
// Bytes: the weights once; x (K * 1.25) through L1 per block and row group (L2-resident).
#ifndef RF_MMVR_WARPS
#define RF_MMVR_WARPS 4
#endif
#ifndef RF_MMVR_MINB
#define RF_MMVR_MINB 4
#endif
#ifndef RF_MMVR_XPF
#define RF_MMVR_XPF 0  // 1: x of the next item loaded with its weights (10 registers more)
#endif
#ifndef RF_MMVR_Q
#define RF_MMVR_Q 0  // Q > 0 (one warp a block, XPF 0): K = 256 H Q; a row group: 8 / Q whole rows (above)
#endif
#ifndef RF_MMVR_XDEP
// with Q (CUDA): 1 ties x's scales to each item's staged weights through an empty asm, so that work on them
// is not hoisted above the first item's staging (which would then wait for x as well as for the weights)
#define RF_MMVR_XDEP 0
#endif
#ifndef RF_MMVR_PDL
// 1: launched with programmatic dependent launch (launch.py, Ctx.pdl; XPF 0): the first item's weights are
// asked for before waiting for the kernel before (rf_grid_wait), x read after; the next launch may start
// once every block has started (PDLT 1: ~1 point more for Q4_0 than after the wait, matvec_log.md)
#define RF_MMVR_PDL 0
#endif
#ifndef RF_MMVR_PDLT
#define RF_MMVR_PDLT 1  // with PDL: 1 lets the next launch start at once, 0 after the wait
#endif
#ifndef RF_MMVR_TRACE
#define RF_MMVR_TRACE 0  // diagnostics (CUDA): time stamps of the first RF_MMVR_TRACE warps, rf_mmvr_trace
#endif
#ifndef RF_MMVR_ABLATE
#define RF_MMVR_ABLATE 0
#endif
#define MMVR_THREADS (RF_MMVR_WARPS * RF_WARP)
#define MMVR_H (RF_WARP / 8)           // groups of a row per step

#if RF_MMVR_TRACE && defined(RF_CUDA)
// diagnostics (scripts/trace_matvec_xr.py): per warp of grid row 0, 16 stamps: [0] globaltimer (ns) at entry,
// [1] clock64 at entry, [2 + i] clock64 once item i's bytes are in (i < 8), [10] after the last arithmetic,
// [11] at exit, [12] the SM, [13] globaltimer at exit
__device__ unsigned long long rf_mmvr_trace[RF_MMVR_TRACE * 16];
RF_DEV unsigned long long mmvr_gtime() {
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}
RF_DEV unsigned mmvr_smid() {
    unsigned r;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(r));
    return r;
}
#define MMVR_STAMP(k, v)                                                                                    \
    if (lane == 0 && blockIdx.y == 0 && tw < RF_MMVR_TRACE) rf_mmvr_trace[tw * 16 + (k)] = (v)
#else
#define MMVR_STAMP(k, v)
#endif

template <class T>
__device__ void mmvr(const rf_u8* __restrict__ w, rf_i64 row_bytes, const rf_u8* __restrict__ xq,
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K) {
    constexpr int H = MMVR_H, W = RF_MMVR_WARPS;
    constexpr int CG = T::BYTES / 2;  // chunks per group of 8 blocks (9, 17)
    constexpr int CR = H * CG;        // chunks of a row per step
    constexpr int GP = CG + 1, RP = H * GP;  // staging: chunks a group (one of padding), a row
    constexpr int LOADS = CG;                // 8 * CR / RF_WARP: chunks per lane and step
    // Q > 0: row r's Q parts of H groups (quarters for K = 4096 on 32-wide warps) are the virtual rows
    // Q r ... Q r + Q - 1, of one step each: a row group is RR = 8 / Q whole rows, contiguous bytes
    constexpr int Q = RF_MMVR_Q, RR = Q ? 8 / Q : 8, SPAN = 32 / RR;  // a row's sum ends in lanes of SPAN
    static_assert(Q == 0 || (W == 1 && 8 % Q == 0 && !RF_MMVR_XPF), "RF_MMVR_Q: one warp a block, no XPF");
    static_assert(!RF_MMVR_PDL || !RF_MMVR_XPF, "RF_MMVR_PDL: x must not come with the first weights");
    RF_DYN_SHARED(int, smem);
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const int b = lane & 7, h = lane >> 3;
    const int n_rows = N;  // real rows
    if (Q) {  // the virtual rows (x keeps the real K)
        row_bytes = 16 * CR;
        N *= Q;
    }
    const int G = Q ? H : K / 256, steps = (G + H - 1) / H, groups = (N + 7) / 8;
#if RF_MMVR_TRACE && defined(RF_CUDA)
    const int tw = blockIdx.x * W + warp;
    int items = 0;
    MMVR_STAMP(0, mmvr_gtime());
    MMVR_STAMP(1, clock64());
    MMVR_STAMP(12, mmvr_smid());
#endif
    xq += blockIdx.y * x_stride;
    y += blockIdx.y * y_stride;
    rf_u8* stage = (rf_u8*)smem + warp * (8 * RP * 16);
    float* red = (float*)((rf_u8*)smem + W * (8 * RP * 16));
    // this lane's chunks of a step: chunk c = j * RF_WARP + lane is row c / CR's chunk m = c % CR, of the
    // step's group m / CG; byte offsets from the row group's start (16 c + (c / CR) (row_bytes - 16 CR)), and
    // in staging (dst[], after the first loads: every warp of the grid starts at once, and the first loads
    // wait on off[] alone)
    int off[LOADS], dst[LOADS];
    const int skip = (int)row_bytes - 16 * CR;
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
        const unsigned c = j * RF_WARP + lane;
        off[j] = 16 * c + c / CR * skip;
    }
    // step t of row group g into v; chunks past the row's last group or of rows past N are not loaded but set
    // to zero (their lanes compute nothing, their rows are not written; zero rather than what v held, and v
    // not zeroed ahead of the first loads: Q8_0 4096x11008 79% of copy bandwidth against 73%, the rest equal)
    auto load_item = [&](uint4 (&v)[LOADS], int g, int t) {
        if (g < groups) {
            const rf_u8* p = w + (rf_i64)g * 8 * row_bytes + (rf_i64)t * (16 * CR);
            const int nr = N - g * 8;  // rows of the group (< 8 in the last one)
            if (nr >= 8 && (t + 1) * H <= G) {  // a whole step (all but tails): no per-chunk test
#pragma unroll
                for (int j = 0; j < LOADS; ++j) v[j] = *(const uint4*)(p + off[j]);
            } else {
#pragma unroll
                for (int j = 0; j < LOADS; ++j) {
                    const unsigned c = j * RF_WARP + lane;
                    if (t * H + c % CR / CG < G && c / CR < nr) v[j] = *(const uint4*)(p + off[j]);
                    else v[j] = make_uint4(0u, 0u, 0u, 0u);
                }
            }
        }
    };
    // a block takes row groups g = blockIdx.x, + gridDim.x, ...; its warp w the steps w, w + W, ... of each
    int gl = blockIdx.x, tl = warp;  // the next item (row group, step) this warp loads
    uint4 v[LOADS];  // not zeroed here: whole steps load every chunk, tails zero what they skip
#if RF_MMVR_XPF
    int4 xa_n = {}, xb_n = {};  // x of the next item, loaded with its weights
    float2 xd_n = {};
#endif
    auto load = [&]() {
        load_item(v, gl, tl);
#if RF_MMVR_XPF
        const int blk = 8 * (tl * H + h) + b;
        if (gl < groups && blk < K / 32) {
            xa_n = *(const int4*)(xq + 32 * blk);
            xb_n = *(const int4*)(xq + 32 * blk + 16);
            xd_n = ((const float2*)(xq + K))[blk];
        }
#endif
        if ((tl += W) >= steps) tl = warp, gl += gridDim.x;
    };
    const int a = T::BYTES * b;                          // this lane's block in a group
    const rf_u8* rd = stage + 16 * (h * GP) + (a & ~3);  // ... its first word in row 0's staging
    const int sh = 16 + 8 * (a & 2);                     // d in the low (16) or high (32) half
    float acc[8] = {};
#if RF_MMVR_PDL
    // launched early: the first weights (no kernel writes them) are asked for before the wait; x (which the
    // kernel before may write) after it
    if (warp < steps) load();
    if (RF_MMVR_PDLT) rf_grid_dependents();
    rf_grid_wait();
    if (!RF_MMVR_PDLT) rf_grid_dependents();
#endif
#if RF_MMVR_Q
    // x of part i (every row group's virtual rows r with r % Q == i), loaded before the first weights: the
    // first item's arithmetic waits for both (loaded later, x costs a round trip that delays every later
    // item), and work on x hoisted out of the loop would hold the first staging until x is in (XDEP)
    int4 xqa[Q], xqb[Q];
    float2 xqd[Q];
#pragma unroll
    for (int i = 0; i < Q; ++i) {
        const int xk = 8 * (i * H + h) + b;
        xqa[i] = *(const int4*)(xq + 32 * xk);
        xqb[i] = *(const int4*)(xq + 32 * xk + 16);
        xqd[i] = ((const float2*)(xq + K))[xk];
    }
#endif
#if !RF_MMVR_PDL
    if (warp < steps) load();
#endif
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
        const unsigned c = j * RF_WARP + lane, m = c % CR;
        dst[j] = 16 * (c / CR * RP + m / CG * GP + m % CG);
    }
    int parity = 0;
    for (int g = blockIdx.x; g < groups; g += gridDim.x) {  // block-uniform
        for (int t = warp; t < steps; t += W) {              // warp-uniform
            const int blk = 8 * (t * H + h) + b;  // this lane's block of x (of every row)
#if RF_MMVR_ABLATE == 2
#pragma unroll
            for (int j = 0; j < LOADS; ++j) acc[j & 7] += (float)(int)(v[j].x ^ v[j].y ^ v[j].z ^ v[j].w);
            MMVR_STAMP(2 + (items < 8 ? items++ : 7), clock64());
            load();
#else
#pragma unroll
            for (int j = 0; j < LOADS; ++j) *(uint4*)(stage + dst[j]) = v[j];
            MMVR_STAMP(2 + (items < 8 ? items++ : 7), clock64());
            rf_syncwarp();
#if RF_MMVR_XPF
            const int4 xa = xa_n, xb = xb_n;
            const float2 xd = xd_n;
#endif
            load();  // the next item's loads run during this item's arithmetic
            if (blk < K / 32) {
#if RF_MMVR_ABLATE == 1
#pragma unroll
                for (int r = 0; r < 8; ++r) {
                    const rf_u32* wp = (const rf_u32*)(rd + r * (RP * 16));
                    acc[r] += (float)(int)(wp[0] ^ wp[T::WORDS - 1]);
                }
#else
#if !RF_MMVR_XPF && !RF_MMVR_Q
                const int4 xa = *(const int4*)(xq + 32 * blk);
                const int4 xb = *(const int4*)(xq + 32 * blk + 16);
                const float2 xd = ((const float2*)(xq + K))[blk];
#endif
#pragma unroll
                for (int r = 0; r < 8; ++r) {
                    const rf_u32* wp = (const rf_u32*)(rd + r * (RP * 16));
                    rf_u32 wd[T::WORDS];
#pragma unroll
                    for (int k = 0; k < T::WORDS; ++k) wd[k] = wp[k];
#if RF_MMVR_Q
                    const int4 xa = xqa[r % Q], xb = xqb[r % Q];
                    float2 xd = xqd[r % Q];
#if RF_MMVR_XDEP && defined(RF_CUDA)
                    asm("" : "+f"(xd.x), "+f"(xd.y) : "r"(wd[0]));  // see RF_MMVR_XDEP
#endif
#endif
                    acc[r] += T::dot(wd, sh, xa, xb, xd);
                }
#endif
            }
            rf_syncwarp();  // every lane has read the staging before the next item's stores
#endif
        }
        MMVR_STAMP(10, clock64());
        // the row group is done: its RR rows summed over the warp (lane SPAN i: row i; 8 rows: lane 4 i),
        // then over the warps
        if constexpr (Q > 1) {  // a real row's virtual rows first (in registers)
#pragma unroll
            for (int r = 0; r < RR; ++r) {
                float s = acc[r * Q];
#pragma unroll
                for (int i = 1; i < Q; ++i) s += acc[r * Q + i];
                acc[r] = s;
            }
        }
#pragma unroll
        for (int m = RF_WARP / 2; m >= 32; m /= 2) {
#pragma unroll
            for (int r = 0; r < RR; ++r) acc[r] += rf_shfl_xor(acc[r], m);
        }
        // lanes that differ in bit SPAN s swap halves of their s-row sets (8 rows: bits 4, 3, 2)
#pragma unroll
        for (int s = RR / 2; s >= 1; s /= 2) {
            const bool up = lane & (SPAN * s);
#pragma unroll
            for (int r = 0; r < s; ++r) {
                const float keep = up ? acc[r + s] : acc[r], give = up ? acc[r] : acc[r + s];
                acc[r] = keep + rf_shfl_xor(give, SPAN * s);
            }
        }
#pragma unroll
        for (int m = SPAN / 2; m >= 1; m /= 2) acc[0] += rf_shfl_xor(acc[0], m);
        if constexpr (W == 1) {  // lane SPAN i holds row i's sum
            const int row = g * RR + (lane & 31) / SPAN;
            if (lane % SPAN == 0 && lane < 32 && row < n_rows) y[row] = acc[0];
        } else {
            // red: [2][W][8] partial sums by group parity (a barrier a group keeps readers and writers apart)
            if ((lane & 3) == 0 && lane < 32) red[(parity * W + warp) * 8 + (lane >> 2)] = acc[0];
            __syncthreads();
            if (warp == 0 && lane < 8 && g * 8 + lane < N) {
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < W; ++k) s += red[(parity * W + k) * 8 + lane];
                y[g * 8 + lane] = s;
            }
            parity ^= 1;
        }
#pragma unroll
        for (int r = 0; r < 8; ++r) acc[r] = 0.0f;
    }
    MMVR_STAMP(11, clock64());
    MMVR_STAMP(13, mmvr_gtime());
}

#define RF_MMVR_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVR_THREADS, RF_MMVR_MINB)                                       \
        mul_mat_vec_xr_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, rf_i64 xq_stride,     \
                              float* y, rf_i64 y_stride, int N, int K) {                               \
        mmvr<T>(w, row_bytes, xq, xq_stride, y, y_stride, N, K);                                       \
    }

RF_MMVR_ENTRY(q4_0, MB_Q4_0)
RF_MMVR_ENTRY(q8_0, MB_Q8_0)
