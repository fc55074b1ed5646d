// rope.hip: ROPE on x [T, H, D] with positions pos [T] (rf_rope.h: pairs, angles, precision); and
// SET_ROWS_ROPE: rows idx [T] of dst [R, W] (f32 or f16) overwritten by src [T, W] (f32, row stride
// src_stride) whose first n_rot columns, heads of D, are ROPE'd at position idx[t] (K and V into one cache).
//
// Launch: grid-stride over the elements (T * H * D; T * W), block 256; each thread writes one element
// (reading its pair partner).
// Tunables: block size.
// Floor: x read once and written once (T * H * D * (in + 4) bytes); SET_ROWS_ROPE: T * W * (4 + out) bytes;
// pos is tiny.
#include "rf_compat.h"
#include "rf_rope.h"

template <typename T>
__device__ void rope(const T* __restrict__ x, const int* __restrict__ pos, float* __restrict__ out, int H,
                     int D, rf_i64 n, int n_dims, int neox, float base, float freq_scale) {
    RF_PDL_BEGIN();
    const double lb = log2((double)base);
    const rf_i64 stride = (rf_i64)gridDim.x * blockDim.x;
    for (rf_i64 e = (rf_i64)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const int d = (int)(e % D);
        const rf_i64 t = e / ((rf_i64)H * D);
        out[e] = rf_rope_elem<T>(x + (e - d), d, pos[t], n_dims, neox, lb, freq_scale);
    }
}

RF_KERNEL void rope_f32(const float* x, const int* pos, float* out, int H, int D, rf_i64 n, int n_dims,
                        int neox, float base, float freq_scale) {
    rope<float>(x, pos, out, H, D, n, n_dims, neox, base, freq_scale);
}
RF_KERNEL void rope_f16(const rf_u16* x, const int* pos, float* out, int H, int D, rf_i64 n, int n_dims,
                        int neox, float base, float freq_scale) {
    rope<rf_u16>(x, pos, out, H, D, n, n_dims, neox, base, freq_scale);
}

template <typename To>
__device__ void set_rows_rope(const float* __restrict__ src, rf_i64 src_stride, const int* __restrict__ idx,
                              To* __restrict__ dst, rf_i64 dst_stride, int T, int W, int n_rot, int D,
                              int n_dims, int neox, float base, float freq_scale) {
    RF_PDL_BEGIN();
    const double lb = log2((double)base);
    const rf_i64 n = (rf_i64)T * W, stride = (rf_i64)gridDim.x * blockDim.x;
    for (rf_i64 e = (rf_i64)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const int t = (int)(e / W), c = (int)(e % W), p = idx[t];
        const float* row = src + (rf_i64)t * src_stride;
        const int d = c % D;
        const float v = c < n_rot ? rf_rope_elem<float>(row + (c - d), d, p, n_dims, neox, lb, freq_scale)
                                  : row[c];
        rf_io<To>::store(dst, (rf_i64)p * dst_stride + c, v);
    }
}

#define SRR_ENTRY(to, To)                                                                              \
    RF_KERNEL void set_rows_rope_f32_##to(const float* src, rf_i64 src_stride, const int* idx, To* dst, \
                                          rf_i64 dst_stride, int T, int W, int n_rot, int D, int n_dims, \
                                          int neox, float base, float freq_scale) {                    \
        set_rows_rope<To>(src, src_stride, idx, dst, dst_stride, T, W, n_rot, D, n_dims, neox, base,    \
                          freq_scale);                                                                 \
    }
SRR_ENTRY(f32, float)
SRR_ENTRY(f16, rf_u16)
