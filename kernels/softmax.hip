// softmax.hip: SOFT_MAX over the last dim: out = softmax(a * scale + mask), mask [m, n] (optional, f32
// or f16) repeating over rows (flat row r takes mask row r % m).
//
// Launch: grid (rows), block 256 (fewer for short rows); three passes over the row: max, sum of exp,
// write. f32 arithmetic, expf.
// Tunables: block size.
// Floor: a (and the mask) read, out written: rows * n * (4 + 4) bytes.
#include "rf_compat.h"

template <typename T, typename Tm>
__device__ void soft_max(const T* __restrict__ a, const Tm* __restrict__ mask, int m, float* __restrict__ out,
                         int n, float scale) {
    RF_PDL_BEGIN();
    __shared__ float sh[32];
    const rf_i64 base = (rf_i64)blockIdx.x * n;
    const rf_i64 mbase = mask ? (rf_i64)(blockIdx.x % m) * n : 0;
    float mx = -RF_INF;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        float z = rf_io<T>::load(a, base + i) * scale;
        if (mask) z += rf_io<Tm>::load(mask, mbase + i);
        out[base + i] = z;
        mx = fmaxf(mx, z);
    }
    mx = rf_block_max(mx, sh);
    float s = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const float e = expf(out[base + i] - mx);
        out[base + i] = e;
        s += e;
    }
    s = rf_block_sum(s, sh);
    const float inv = 1.0f / s;
    for (int i = threadIdx.x; i < n; i += blockDim.x) out[base + i] *= inv;
}

#define SM_ENTRY(t, T, tm, Tm)                                                                         \
    RF_KERNEL void soft_max_##t##_##tm(const T* a, const Tm* mask, int m, float* out, int n, float scale) { \
        soft_max<T, Tm>(a, mask, m, out, n, scale);                                                    \
    }
SM_ENTRY(f32, float, f32, float)
SM_ENTRY(f32, float, f16, rf_u16)
SM_ENTRY(f16, rf_u16, f32, float)
SM_ENTRY(f16, rf_u16, f16, rf_u16)
