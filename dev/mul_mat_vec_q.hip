// mul_mat_vec_q.hip: MUL_MAT and MUL_MAT_ADD (+ b: rf_plus_b) for up to 4 tokens, int8 dot products on x
// quantized in every block.
// dev/: a measurement variant, chosen by no HipBackend option (scripts/bench_matvec.py runs it through
// dev/matvec_variants.py); compiled by tests/unit/test_kernels_compile.py.
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
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMVQ_ROWS
#define RF_MMVQ_ROWS 2
#endif
#ifndef RF_MMVQ_WARPS
#define RF_MMVQ_WARPS 8
#endif
#ifndef RF_MMVQ_UNROLL
#define RF_MMVQ_UNROLL 2
#endif

#define MMVQ_THREADS (RF_MMVQ_WARPS * RF_WARP)

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
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K, const float* b,
                     rf_i64 b_stride) {
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
        if (lane == 0 && row0 + r < N) y[row0 + r] = rf_plus_b(v, b, b_stride, blockIdx.y, row0 + r);
    }
}

#define RF_MMVQ_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVQ_THREADS)                                                     \
        mul_mat_vec_q_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                             rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) {          \
        mmvq<T>(w, row_bytes, x, x_stride, y, y_stride, N, K, b, b_stride);                            \
    }

RF_MMVQ_ENTRY(q4_0, QT_Q4_0)
RF_MMVQ_ENTRY(q4_1, QT_Q4_1)
RF_MMVQ_ENTRY(q5_0, QT_Q5_0)
RF_MMVQ_ENTRY(q8_0, QT_Q8_0)
RF_MMVQ_ENTRY(q4_k, QT_Q4_K)
RF_MMVQ_ENTRY(q6_k, QT_Q6_K)
