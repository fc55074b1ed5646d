// argmax.hip: ARGMAX over the last dim -> i32; ties go to the first index and NaN ranks above every
// number (the first NaN's index), as numpy's argmax.
//
// Launch: grid (rows), block 256 (fewer for short rows); each thread scans a strided slice keeping
// (value, index), then a warp-shuffle and shared-memory reduction with the tie rule.
// Tunables: block size.
// Floor: the rows read once (rows * n * 4 bytes).
#include "rf_compat.h"

// NaN ranks above every number (numpy's argmax returns the first NaN's index); ties to the lower index
RF_DEV void am_merge(float& v, int& i, float v2, int i2) {
    const bool nan1 = v != v, nan2 = v2 != v2;
    if (nan1 ? (nan2 && i2 < i) : (nan2 || v2 > v || (v2 == v && i2 < i))) {
        v = v2;
        i = i2;
    }
}

template <typename T>
__device__ void argmax(const T* __restrict__ a, int* __restrict__ out, int n) {
    RF_PDL_BEGIN();
    __shared__ float sv[32];
    __shared__ int si[32];
    const rf_i64 base = (rf_i64)blockIdx.x * n;
    float v = -RF_INF;
    int idx = 0x7fffffff;
    for (int i = threadIdx.x; i < n; i += blockDim.x) am_merge(v, idx, rf_io<T>::load(a, base + i), i);
    for (int m = RF_WARP / 2; m > 0; m >>= 1) am_merge(v, idx, rf_shfl_xor(v, m), rf_shfl_xor(idx, m));
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = idx;
    }
    __syncthreads();
    if (warp == 0) {
        const bool ok = lane < (int)(blockDim.x / RF_WARP);
        v = ok ? sv[lane] : -RF_INF;
        idx = ok ? si[lane] : 0x7fffffff;
        for (int m = RF_WARP / 2; m > 0; m >>= 1) am_merge(v, idx, rf_shfl_xor(v, m), rf_shfl_xor(idx, m));
        if (lane == 0) out[blockIdx.x] = idx == 0x7fffffff ? 0 : idx;
    }
}

RF_KERNEL void argmax_f32(const float* a, int* out, int n) { argmax<float>(a, out, n); }
RF_KERNEL void argmax_f16(const rf_u16* a, int* out, int n) { argmax<rf_u16>(a, out, n); }
