// rf_rope.h: the RoPE rotation of one element, shared by ROPE, SET_ROWS_ROPE (rope.hip) and FLASH_ATTN_EXT's
// q (attention.hip), so that a fused op computes bit for bit what ROPE does.
// theta = pos * freq_scale * base^(-2i / n_dims); normal mode pairs (2i, 2i+1), NEOX pairs (i, i + n_dims/2);
// dims >= n_dims are copied. Angle, sine and cosine in double (at positions in the tens of thousands an f32
// angle is off by ~1e-3 rad), the result rounded to f32 once.
#pragma once
#include "rf_compat.h"

// RoPE of element d at position p, apart from the values it rotates: which elements (d0, d1) it pairs,
// whether d is the first, and the angle's cosine and sine (double). The same for every head at p.
struct RfRopeAt {
    int d, d0, d1, rotate, first;
    double c, s;
};

RF_DEV RfRopeAt rf_rope_at(int d, int p, int n_dims, int neox, double lb, float freq_scale) {
    RfRopeAt r{d, d, d, 0, 0, 1.0, 0.0};
    if (d >= n_dims) return r;
    const int half = n_dims / 2;
    int i;  // pair index
    if (neox) {
        i = d % half;
        r.first = d < half;
        r.d0 = r.first ? d : d - half;
    } else {
        i = d / 2;
        r.first = (d & 1) == 0;
        r.d0 = r.first ? d : d - 1;
    }
    r.d1 = neox ? r.d0 + half : r.d0 + 1;
    r.rotate = 1;
    const double theta = (double)p * (double)freq_scale * exp2(-lb * (2.0 * i) / (double)n_dims);
    r.c = cos(theta);
    r.s = sin(theta);
    return r;
}

// element r.d of the head at h (D values of type T) rotated as r says
template <typename T>
RF_DEV float rf_rope_apply(const T* h, const RfRopeAt& r) {
    if (!r.rotate) return rf_io<T>::load(h, r.d);
    const double x0 = rf_io<T>::load(h, r.d0), x1 = rf_io<T>::load(h, r.d1);
    return (float)(r.first ? x0 * r.c - x1 * r.s : x0 * r.s + x1 * r.c);
}

// element d of the head at h (D values of type T) rotated for position p; lb = log2(base)
template <typename T>
RF_DEV float rf_rope_elem(const T* h, int d, int p, int n_dims, int neox, double lb, float freq_scale) {
    return rf_rope_apply<T>(h, rf_rope_at(d, p, n_dims, neox, lb, freq_scale));
}
