// rf_rope.h: the RoPE rotation of one element, shared by ROPE, SET_ROWS_ROPE (rope.hip) and FLASH_ATTN_EXT's
// q (attention.hip), so that a fused op computes bit for bit what ROPE does.
// theta = pos * freq_scale * base^(-2i / n_dims); normal mode pairs (2i, 2i+1), NEOX pairs (i, i + n_dims/2);
// dims >= n_dims are copied. Angle, sine and cosine in double (at positions in the tens of thousands an f32
// angle is off by ~1e-3 rad), the result rounded to f32 once.
#pragma once
#include "rf_compat.h"

// element d of the head at h (D values of type T) rotated for position p; lb = log2(base)
template <typename T>
RF_DEV float rf_rope_elem(const T* h, int d, int p, int n_dims, int neox, double lb, float freq_scale) {
    if (d >= n_dims) return rf_io<T>::load(h, d);
    const int half = n_dims / 2;
    int i, first, d0;  // pair index, whether d is the pair's first member, and the first member
    if (neox) {
        i = d % half;
        first = d < half;
        d0 = first ? d : d - half;
    } else {
        i = d / 2;
        first = (d & 1) == 0;
        d0 = first ? d : d - 1;
    }
    const int d1 = neox ? d0 + half : d0 + 1;
    const double theta = (double)p * (double)freq_scale * exp2(-lb * (2.0 * i) / (double)n_dims);
    const double c = cos(theta), s = sin(theta);
    const double x0 = rf_io<T>::load(h, d0), x1 = rf_io<T>::load(h, d1);
    return (float)(first ? x0 * c - x1 * s : x0 * s + x1 * c);
}
