// norm.hip: RMS_NORM: out[r, :] = a[r, :] / sqrt(mean(a[r, :]^2) + eps), f32 out, a f32 or f16.
//
// Launch: grid (rows), block 256 threads (fewer for short rows, a multiple of the warp); one block per
// row, f32 sum of squares reduced over the block (warp shuffles, then shared memory), a second pass
// scales and writes.
// Tunables: block size (chosen by the launcher).
// Floor: the row read twice from L2 (once from memory) + written once: rows * n * (in + 4) bytes.
#include "rf_compat.h"

template <typename T>
__device__ void rms_norm(const T* __restrict__ a, float* __restrict__ out, int n, float eps) {
    RF_PDL_BEGIN();
    __shared__ float sh[32];
    const rf_i64 base = (rf_i64)blockIdx.x * n;
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = rf_io<T>::load(a, base + i);
        s += v * v;
    }
    s = rf_block_sum(s, sh);
    const float r = rsqrtf(s / (float)n + eps);
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[base + i] = rf_io<T>::load(a, base + i) * r;
}

RF_KERNEL void rms_norm_f32(const float* a, float* out, int n, float eps) {
    rms_norm<float>(a, out, n, eps);
}
RF_KERNEL void rms_norm_f16(const rf_u16* a, float* out, int n, float eps) {
    rms_norm<rf_u16>(a, out, n, eps);
}
