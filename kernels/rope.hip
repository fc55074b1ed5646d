// rope.hip: ROPE on x [T, H, D] with positions pos [T]: rotate pairs by theta = pos * freq_scale *
// base^(-2i / n_dims); normal mode pairs (2i, 2i+1), NEOX pairs (i, i + n_dims/2); dims >= n_dims copy.
//
// Launch: grid-stride over T * H * D elements, block 256; each thread writes one element (reading its
// pair partner). The angle and its sine/cosine are computed in double, as the reference does: at
// positions in the tens of thousands an f32 angle is off by ~1e-3 rad.
// Tunables: block size.
// Floor: x read once and written once (T * H * D * (in + 4) bytes); pos is tiny.
#include "rf_compat.h"

template <typename T>
__device__ void rope(const T* __restrict__ x, const int* __restrict__ pos, float* __restrict__ out, int H,
                     int D, rf_i64 n, int n_dims, int neox, float base, float freq_scale) {
    RF_PDL_BEGIN();
    const double lb = log2((double)base);
    const rf_i64 stride = (rf_i64)gridDim.x * blockDim.x;
    for (rf_i64 e = (rf_i64)blockIdx.x * blockDim.x + threadIdx.x; e < n; e += stride) {
        const int d = (int)(e % D);
        const rf_i64 t = e / ((rf_i64)H * D);
        if (d >= n_dims) {
            out[e] = rf_io<T>::load(x, e);
            continue;
        }
        const int half = n_dims / 2;
        int i, first;  // pair index, and whether this element is the pair's first member
        rf_i64 e0, e1;
        if (neox) {
            i = d % half;
            first = d < half;
            e0 = first ? e : e - half;
            e1 = e0 + half;
        } else {
            i = d / 2;
            first = (d & 1) == 0;
            e0 = first ? e : e - 1;
            e1 = e0 + 1;
        }
        const double theta = (double)pos[t] * (double)freq_scale * exp2(-lb * (2.0 * i) / (double)n_dims);
        const double c = cos(theta), s = sin(theta);
        const double x0 = rf_io<T>::load(x, e0), x1 = rf_io<T>::load(x, e1);
        out[e] = (float)(first ? x0 * c - x1 * s : x0 * s + x1 * c);
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
