// mul_mat_vec.hip: MUL_MAT and MUL_MAT_ADD for up to 4 tokens (decode), x in f32: y[m, n] = sum_k w[n, k] *
// x[m, k] (+ b[m * b_stride + n] where b is not null: rf_plus_b), w in its GGUF blocks, every weight type
// (mul_mat_vec_<type>; `_s`: float rows that are not 16-byte multiples). With RF_MMV_GLU, MUL_MAT_SWIGLU:
// w's rows are gate/up pairs and y[m, i] = silu(row 2i . x) * (row 2i+1 . x) (no b).
//
// Launch: grid (ceil(N / RF_MMV_ROWS), M), block RF_MMV_WARPS * RF_WARP threads. A block owns RF_MMV_ROWS
// rows; its threads split each row into "units" (rf_quant.h: 8-16 elements, lanes next to each other read
// neighbouring x) and every unit of x is loaded once for all the block's rows. Per thread: RF_MMV_UNROLL
// units in flight per row, weights loaded before any arithmetic; partial sums are reduced over the warp
// (shuffles), then over the warps (shared memory). Weights are dequantized in registers; f32 accumulation.
// Tunables (-D): RF_MMV_ROWS (2), RF_MMV_WARPS (4; kernel_choice.py: 8 for Q4_0/Q8_0 rows of K >= 8192),
// RF_MMV_UNROLL (1), RF_MMV_FAST (rf_quant.h: 1, the four-shift Q4_0 dot; 2 adds a one-permute Q8_0 dot,
// normalized MSE ~1e-9 instead of ~1e-13), RF_MMV_BCONST (1: b is a weight, e.g. a bias: no kernel writes
// it, so the block's b is asked for with its first weights, before the wait; the launcher's choice),
// RF_MMV_NORM (1: RMS_NORM_MUL_MAT*, an RMS norm of x and its weight wn folded in: the block multiplies the
// x it loads by wn (loaded beside it) and sums its squares beside the dot products, reduces both together,
// and scales its rows' sums by s = 1 / sqrt(mean(x^2) + eps) at the end: y = s * W (x * wn); the entry
// points take wn and eps after b_stride).
// Floor: the weights once, N * row_bytes (x, M * K * 4, y and b stay in L2).
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMV_ROWS
#define RF_MMV_ROWS 2
#endif
#ifndef RF_MMV_WARPS
#define RF_MMV_WARPS 4
#endif
#ifndef RF_MMV_GLU
#define RF_MMV_GLU 0  // 1: MUL_MAT_SWIGLU's epilogue (y [M, N / 2] = silu of even rows times odd rows)
#endif
#ifndef RF_MMV_BCONST
#define RF_MMV_BCONST 0
#endif
#ifndef RF_MMV_NORM
#define RF_MMV_NORM 0
#endif
#ifndef RF_MMV_UNROLL
#define RF_MMV_UNROLL 1  // 1 uses fewer registers than 2, and is as fast (H100)
#endif

#define MMV_THREADS (RF_MMV_WARPS * RF_WARP)

template <class T>
__device__ void mmv(const rf_u8* __restrict__ w, rf_i64 row_bytes, const float* __restrict__ x,
                    rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K, const float* b,
                    rf_i64 b_stride, const float* __restrict__ wn, float eps) {
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

    // a full step: U units per thread, all weight loads issued before x's and before any arithmetic
    typename T::W wv[U][R];
    auto load_w = [&](int u0) {
#pragma unroll
        for (int j = 0; j < U; ++j) {
#pragma unroll
            for (int r = 0; r < R; ++r) T::load_w(wr[r], u0 + j * MMV_THREADS, wv[j][r]);
        }
    };
#if RF_MMV_NORM
    RfLdxNorm ld{wn, 0.0f};  // x * wn as loaded, and the sum of squares of x
#else
    RfLdx ld;
    (void)wn;
    (void)eps;
#endif
    auto finish = [&](int u0) {
        typename T::X xv[U];
#pragma unroll
        for (int j = 0; j < U; ++j) T::load_x(x, u0 + j * MMV_THREADS, xv[j], ld);
#pragma unroll
        for (int j = 0; j < U; ++j) {
#pragma unroll
            for (int r = 0; r < R; ++r) acc[r] += T::dot(wv[j][r], xv[j]);
        }
    };
    int u = tid;
    // the first step's weights (no kernel writes them) are asked for before waiting for the kernel before
    // (under programmatic launch this block may start while it runs); x is read only after the wait
    const bool first = u + (U - 1) * MMV_THREADS < n_units;
    if (first) load_w(u);
    // b of the thread's row (tid < R), asked for before the dot products (its round trip beside x's, not
    // after the reduction): a weight's before the wait, another's (a residual) right after it
    float bv = 0.0f;
    const bool has_b = !RF_MMV_GLU && b && tid < R && row0 + tid < N;
    if (RF_MMV_BCONST && has_b) bv = b[(rf_i64)blockIdx.y * b_stride + row0 + tid];
    RF_PDL_BEGIN();
    if (!RF_MMV_BCONST && has_b) bv = b[(rf_i64)blockIdx.y * b_stride + row0 + tid];
    if (first) {
        finish(u);
        u += U * MMV_THREADS;
    }
    for (; u + (U - 1) * MMV_THREADS < n_units; u += U * MMV_THREADS) {
        load_w(u);
        finish(u);
    }
    for (; u < n_units; u += MMV_THREADS) {  // the tail, one unit at a time
        typename T::X xv;
        T::load_x(x, u, xv, ld);
#pragma unroll
        for (int r = 0; r < R; ++r) {
            typename T::W wv;
            T::load_w(wr[r], u, wv);
            acc[r] += T::dot(wv, xv);
        }
    }

    __shared__ float red[R + RF_MMV_NORM][RF_MMV_WARPS];  // (RF_MMV_NORM: row R, the sums of squares)
    const int warp = tid / RF_WARP, lane = tid % RF_WARP;
#pragma unroll
    for (int r = 0; r < R; ++r) {
        const float s = rf_warp_sum(acc[r]);
        if (lane == 0) red[r][warp] = s;
    }
#if RF_MMV_NORM
    {
        const float s = rf_warp_sum(ld.ss);
        if (lane == 0) red[R][warp] = s;
    }
#endif
    __syncthreads();
    float scale = 1.0f;  // s of the folded norm
#if RF_MMV_NORM
    if (tid < R) {
        float ss = 0.0f;
#pragma unroll
        for (int i = 0; i < RF_MMV_WARPS; ++i) ss += red[R][i];
        scale = rsqrtf(ss / (float)K + eps);
    }
#endif
#if RF_MMV_GLU
    // rows 2i and 2i+1 are gate_i and up_i (an interleaved weight): y[i] = silu(gate_i) * up_i
    static_assert(R % 2 == 0, "RF_MMV_GLU needs an even RF_MMV_ROWS");
    if (tid < R / 2 && row0 + 2 * tid + 1 < N) {
        float g = 0.0f, u = 0.0f;
#pragma unroll
        for (int i = 0; i < RF_MMV_WARPS; ++i) {
            g += red[2 * tid][i];
            u += red[2 * tid + 1][i];
        }
        if (RF_MMV_NORM) g *= scale, u *= scale;
        y[row0 / 2 + tid] = rf_silu(g) * u;
    }
#else
    if (tid < R && row0 + tid < N) {
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < RF_MMV_WARPS; ++i) s += red[tid][i];
        if (RF_MMV_NORM) s *= scale;
        y[row0 + tid] = b ? s + bv : s;  // (rf_plus_b's sum)
    }
#endif
}

#if RF_MMV_NORM
#define RF_MMV_ENTRY(name, T)                                                                          \
    RF_KERNEL void __launch_bounds__(MMV_THREADS)                                                      \
        mul_mat_vec_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                           rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride,             \
                           const float* wn, float eps) {                                               \
        mmv<T>(w, row_bytes, x, x_stride, y, y_stride, N, K, b, b_stride, wn, eps);                    \
    }
#else
#define RF_MMV_ENTRY(name, T)                                                                          \
    RF_KERNEL void __launch_bounds__(MMV_THREADS)                                                      \
        mul_mat_vec_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                           rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) {            \
        mmv<T>(w, row_bytes, x, x_stride, y, y_stride, N, K, b, b_stride, nullptr, 0.0f);              \
    }
#endif

RF_WEIGHT_TYPES(RF_MMV_ENTRY)
