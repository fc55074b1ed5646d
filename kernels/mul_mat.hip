// mul_mat.hip: MUL_MAT and MUL_MAT_ADD for several tokens (prefill): y[m, n] = sum_k x[m, k] * w[n, k]
// (+ b[m * b_stride + n] where b is not null: rf_plus_b), w in GGUF blocks.
//
// Launch: grid (ceil(N / 64), ceil(M / 64)), block 256 threads; a block computes a 64 (tokens) x 64
// (weight rows) tile of y, stepping over K by 32: each thread dequantizes 8 weights (one deq8) and loads
// 8 x values into shared memory (f32, padded against bank conflicts), then accumulates a 4 x 4
// micro-tile in f32 registers. VEC = 0 is the element-by-element loader for float weights whose rows are
// not a multiple of 8.
// Tunables: the tile sizes below (fixed; 64x64x32 with 4x4 per thread).
// Floor: the weight bytes N * row_bytes + x (M * K * 4) + y (M * N * 4) (+ b: N * 4 a bias, M * N * 4 a
// residual); arithmetic 2 * M * N * K.
#include "rf_compat.h"
#include "rf_quant.h"

#define MM_BM 64
#define MM_BN 64
#define MM_BK 32
#define MM_THREADS 256

template <class T, int VEC>
__device__ void mm(const rf_u8* __restrict__ w, rf_i64 row_bytes, const float* __restrict__ x,
                   float* __restrict__ y, int M, int N, int K, const float* b, rf_i64 b_stride) {
    RF_PDL_BEGIN();
    __shared__ float xs[MM_BK][MM_BM + 1];
    __shared__ float ws[MM_BK][MM_BN + 1];
    const int tid = threadIdx.x;
    const int m0 = blockIdx.y * MM_BM, n0 = blockIdx.x * MM_BN;
    const int lr = tid >> 2, lk = (tid & 3) * 8;  // loader: tile row, first k of its 8
    const int ty = tid >> 4, tx = tid & 15;       // compute: rows ty + 16i, cols tx + 16j
    const bool w_ok = n0 + lr < N, x_ok = m0 + lr < M;
    const rf_u8* wrow = w + (rf_i64)(w_ok ? n0 + lr : 0) * row_bytes;
    const float* xrow = x + (rf_i64)(x_ok ? m0 + lr : 0) * K;

    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    }

    for (int k0 = 0; k0 < K; k0 += MM_BK) {
        const int k = k0 + lk;
        float tw[8], tx8[8];
        if constexpr (VEC) {
            if (w_ok && k < K) {
                T::deq8(wrow, k, tw);
            } else {
#pragma unroll
                for (int i = 0; i < 8; ++i) tw[i] = 0.0f;
            }
        } else {
#pragma unroll
            for (int i = 0; i < 8; ++i) tw[i] = (w_ok && k + i < K) ? T::deq1(wrow, k + i) : 0.0f;
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) tx8[i] = (x_ok && k + i < K) ? xrow[k + i] : 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) {
            ws[lk + i][lr] = tw[i];
            xs[lk + i][lr] = tx8[i];
        }
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < MM_BK; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = xs[kk][ty + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = ws[kk][tx + 16 * j];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const int m = m0 + ty + 16 * i;
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int n = n0 + tx + 16 * j;
            if (n < N) y[(rf_i64)m * N + n] = rf_plus_b(acc[i][j], b, b_stride, m, n);
        }
    }
}

// quantized and 8-aligned float rows use deq8; the `_s` float variants load element by element
#define RF_MM_ENTRY(name, T)                                                                           \
    RF_KERNEL void __launch_bounds__(MM_THREADS)                                                       \
        mul_mat_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, float* y, int M, int N, int K, \
                       const float* b, rf_i64 b_stride) {                                              \
        mm<T, T::UNIT != 1>(w, row_bytes, x, y, M, N, K, b, b_stride);                                 \
    }

RF_WEIGHT_TYPES(RF_MM_ENTRY)
