// mul_mat_vec.hip: MUL_MAT for one token (decode): y[n] = sum_k w[n, k] * x[k], w in its GGUF blocks.
//
// Three kernels; the launcher uses mul_mat_vec_<type> unless asked for another (on an H100 the other
// two measured slower: see scripts/bench_matvec.py --sweep).
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
