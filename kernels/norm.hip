// norm.hip: RMS_NORM (rms_norm_<a>): out[r, :] = a[r, :] * s_r, s_r = 1 / sqrt(mean(a[r, :]^2) + eps), f32
// out, a f32 or f16; RMS_NORM_MUL (rms_norm_mul_<a>_<w>): RMS_NORM times the norm's weight w [n] (f32 or
// f16), out[r, i] = (a[r, i] * s_r) * w[i], a * s_r rounded to f32 first (RMS_NORM then MUL, one launch).
//
// Launch: grid (rows), block 256 threads (fewer for short rows, a multiple of the warp); one block per
// row, f32 sum of squares reduced over the block (warp shuffles, then shared memory), a second pass
// scales and writes.
// Tunables: block size (chosen by the launcher).
// Floor: the row read twice from L2 (once from memory) + written once: rows * n * (in + 4) bytes; w
// (n * its item size) once from memory, then from L2 per row.
#include "rf_compat.h"

// MUL: RMS_NORM_MUL (times w[i]); otherwise RMS_NORM, w unused
template <typename T, typename W, bool MUL>
__device__ void rms_norm(const T* __restrict__ a, const W* __restrict__ w, float* __restrict__ out, int n,
                         float eps) {
    RF_PDL_BEGIN();
    __shared__ float sh[32];
    const rf_i64 base = (rf_i64)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = rf_io<T>::load(a, base + i);
        s += v * v;
    }
    s = rf_block_sum(s, sh);
    const float r = rsqrtf(s / (float)n + eps);  // s_r
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = rf_io<T>::load(a, base + i) * r;  // RMS_NORM's f32 result
        if constexpr (MUL) {
            out[base + i] = v * rf_io<W>::load(w, i);
        } else {
            out[base + i] = v;
        }
    }
}

RF_KERNEL void rms_norm_f32(const float* a, float* out, int n, float eps) {
    rms_norm<float, float, false>(a, nullptr, out, n, eps);
}
RF_KERNEL void rms_norm_f16(const rf_u16* a, float* out, int n, float eps) {
    rms_norm<rf_u16, float, false>(a, nullptr, out, n, eps);
}

#define RF_RMS_NORM_MUL(an, T, wn, W)                                                                  \
    RF_KERNEL void rms_norm_mul_##an##_##wn(const T* a, const W* w, float* out, int n, float eps) {    \
        rms_norm<T, W, true>(a, w, out, n, eps);                                                       \
    }

RF_RMS_NORM_MUL(f32, float, f32, float)
RF_RMS_NORM_MUL(f32, float, f16, rf_u16)
RF_RMS_NORM_MUL(f16, rf_u16, f32, float)
RF_RMS_NORM_MUL(f16, rf_u16, f16, rf_u16)
