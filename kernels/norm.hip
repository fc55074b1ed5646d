// norm.hip: RMS_NORM (rms_norm_<a>): out[r, :] = a[r, :] * s_r, s_r = 1 / sqrt(mean(a[r, :]^2) + eps), f32
// out, a f32 or f16; RMS_NORM_MUL (rms_norm_mul_<a>_<w>): RMS_NORM times the norm's weight w [n] (f32 or
// f16), out[r, i] = (a[r, i] * s_r) * w[i], a * s_r rounded to f32 first (RMS_NORM then MUL, one launch).
//
// Launch: grid (rows), one block per row of 256 threads, or about n / 4 for long rows (a multiple of the
// warp, at most 1024; launch_rows.norm_block). Rows of up to NORM_NPT x the block are read once into
// registers (every load in flight at once); longer ones twice. f32 sum of squares reduced over the block
// (warp shuffles, then shared memory); each thread sums its elements in index order either way. w_early
// (RMS_NORM_MUL, w a weight: no kernel writes it): a held row's w is asked for before waiting for the
// kernel before (programmatic launch), so its round trip is not after the reduction.
// Tunables: NORM_NPT (values a thread holds), the block size (the launcher).
// Floor: the row read once + written once: rows * n * (in + 4) bytes; w (n * its item size) once from
// memory, then from L2 per row.
#include "rf_compat.h"

// values a thread holds in registers (launch_rows.NORM_NPT mirrors it)
#define NORM_NPT 8

// out[base + i] = v (RMS_NORM's f32 result), times w[i] for RMS_NORM_MUL
template <typename W, bool MUL>
RF_DEV void rms_norm_write(float v, const W* __restrict__ w, float* __restrict__ out, rf_i64 base, int i) {
    if constexpr (MUL) {
        out[base + i] = v * rf_io<W>::load(w, i);
    } else {
        out[base + i] = v;
    }
}

// MUL: RMS_NORM_MUL (times w[i]); otherwise RMS_NORM, w unused
template <typename T, typename W, bool MUL>
__device__ void rms_norm(const T* __restrict__ a, const W* __restrict__ w, float* __restrict__ out, int n,
                         float eps, int w_early) {
    const bool held = n <= NORM_NPT * (int)blockDim.x;
    float wv[NORM_NPT];  // a held row's w, where w_early
    if (MUL && held && w_early) {
#pragma unroll
        for (int j = 0; j < NORM_NPT; ++j) {
            const int i = threadIdx.x + j * blockDim.x;
            wv[j] = i < n ? rf_io<W>::load(w, i) : 0.0f;
        }
    }
    RF_PDL_BEGIN();
    __shared__ float sh[32];
    const rf_i64 base = (rf_i64)blockIdx.x * n;
    float x[NORM_NPT];
    float s = 0.0f;
    if (held) {
#pragma unroll
        for (int j = 0; j < NORM_NPT; ++j) {
            const int i = threadIdx.x + j * blockDim.x;
            x[j] = i < n ? rf_io<T>::load(a, base + i) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < NORM_NPT; ++j) s += x[j] * x[j];
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const float v = rf_io<T>::load(a, base + i);
            s += v * v;
        }
    }
    s = rf_block_sum(s, sh);
    const float r = rsqrtf(s / (float)n + eps);  // s_r
    if (held) {
#pragma unroll
        for (int j = 0; j < NORM_NPT; ++j) {
            const int i = threadIdx.x + j * blockDim.x;
            if (i >= n) continue;
            if (MUL && w_early) out[base + i] = (x[j] * r) * wv[j];
            else rms_norm_write<W, MUL>(x[j] * r, w, out, base, i);
        }
    } else {
        for (int i = threadIdx.x; i < n; i += blockDim.x)
            rms_norm_write<W, MUL>(rf_io<T>::load(a, base + i) * r, w, out, base, i);
    }
}

RF_KERNEL void rms_norm_f32(const float* a, float* out, int n, float eps) {
    rms_norm<float, float, false>(a, nullptr, out, n, eps, 0);
}
RF_KERNEL void rms_norm_f16(const rf_u16* a, float* out, int n, float eps) {
    rms_norm<rf_u16, float, false>(a, nullptr, out, n, eps, 0);
}

#define RF_RMS_NORM_MUL(an, T, wn, W)                                                                  \
    RF_KERNEL void rms_norm_mul_##an##_##wn(const T* a, const W* w, float* out, int n, float eps,      \
                                            int w_early) {                                             \
        rms_norm<T, W, true>(a, w, out, n, eps, w_early);                                              \
    }

RF_RMS_NORM_MUL(f32, float, f32, float)
RF_RMS_NORM_MUL(f32, float, f16, rf_u16)
RF_RMS_NORM_MUL(f16, rf_u16, f32, float)
RF_RMS_NORM_MUL(f16, rf_u16, f16, rf_u16)
