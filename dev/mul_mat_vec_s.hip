// mul_mat_vec_s.hip: MUL_MAT and MUL_MAT_ADD (+ b: rf_plus_b) for up to 4 tokens, x in f32, rows staged
// through shared memory.
// dev/: a measurement variant, chosen by no HipBackend option (scripts/bench_matvec.py runs it through
// dev/matvec_variants.py); compiled by tests/unit/test_kernels_compile.py.
// mul_mat_vec_s_<type> (Q4_0, Q4_1, Q5_0, Q8_0 with rows a multiple of 16 bytes, opt-in):
// the f32 kernel's arithmetic, but each warp owns RF_MMVS_ROWS rows and stages them through shared
// memory: its lanes load 16-byte chunks of a row (coalesced; lcm(block, 16) bytes hold whole blocks),
// RF_MMVS_DEPTH chunks per lane in flight, while the previous stage is decoded unit by unit from shared.
// Launch: grid (ceil(N / (RF_MMVS_WARPS * RF_MMVS_ROWS)), T), block RF_MMVS_WARPS * RF_WARP threads.
// Tunables (-D): RF_MMVS_WARPS (4), RF_MMVS_ROWS (2), RF_MMVS_DEPTH (2).
// Floor: the weight bytes, N * row_bytes, read once (x, K * 4 bytes, y and b stay in L2).
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMVS_ROWS
#define RF_MMVS_ROWS 2
#endif
#ifndef RF_MMVS_WARPS
#define RF_MMVS_WARPS 4
#endif
#ifndef RF_MMVS_DEPTH
#define RF_MMVS_DEPTH 2
#endif

#define MMVS_THREADS (RF_MMVS_WARPS * RF_WARP)

__host__ __device__ constexpr int rf_gcd(int a, int b) { return b == 0 ? a : rf_gcd(b, a % b); }

template <class T>
__device__ void mmv_staged(const rf_u8* __restrict__ w, rf_i64 row_bytes, const float* __restrict__ x,
                           rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K,
                           const float* b, rf_i64 b_stride) {
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
            RfLdx ld;
            T::load_x(x, ub + u, xv, ld);
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
        if (lane == 0 && row0 + r < N) y[row0 + r] = rf_plus_b(v, b, b_stride, blockIdx.y, row0 + r);
    }
}

#define RF_MMVS_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVS_THREADS)                                                     \
        mul_mat_vec_s_##name(const rf_u8* w, rf_i64 row_bytes, const float* x, rf_i64 x_stride, float* y, \
                             rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) {          \
        mmv_staged<T>(w, row_bytes, x, x_stride, y, y_stride, N, K, b, b_stride);                      \
    }

RF_MMVS_ENTRY(q4_0, QT_Q4_0)
RF_MMVS_ENTRY(q4_1, QT_Q4_1)
RF_MMVS_ENTRY(q5_0, QT_Q5_0)
RF_MMVS_ENTRY(q8_0, QT_Q8_0)
