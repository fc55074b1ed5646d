// rf_quant.h: GGUF block formats as stored by ggml (ggml-common.h), read in registers.
//
// Every weight type is a struct with the same static interface:
//   QK, BYTES              elements and bytes per block (1 element for plain float types)
//   deq8(row, k0, out)     the 8 elements k0..k0+7 of a row (k0 % 8 == 0) as f32
//   deq1(row, k)           one element (plain float types only: their rows may be any length)
// and the mat-vec "unit" used by mul_mat_vec.hip: a lane's share of a row, chosen so that lanes next to
// each other read neighbouring x (coalesced) and the weight loads stay naturally aligned:
//   UNIT                   elements per unit (units tile a row exactly)
//   W, X                   register holders for one unit of weights / of x
//   load_w(row, u, W&)     load_x(x, u, X&)     dot(W, X) -> float
// The int8 path (dev/mul_mat_vec_q.hip's mmvq) has a second unit per quantized type, against x quantized to
// int8 in blocks of 32 in two levels: x ~ d * (q1 + q2 / 254) (q2 quantizes q1's rounding error, so the
// error is ~1/254 of one level's: f32-like accuracy at int8 speed). In shared memory (RfQx): q1 and q2
// as ints of 4 values, d the block scale, s the f32 sum of the block's x:
//   QUNIT, QX, q_load_x(RfQx, u, QX&), q_dot(W, QX) -> float   (weights: load_w / W as above)
// Offsets and mins (Q4_0's -8, Q4_1's m, Q5_0's -16, Q4_K's dmin*m) multiply the f32 block sum xs; a
// unit covering 1/n of a block adds 1/n of that term, so the units of a block add up to the whole.
// Blocks are only 2-byte aligned for Q4_0 (18 B), Q5_0 (22 B), Q8_0 (34 B) and Q6_K (210 B): those are
// read with 16-bit loads; Q4_1 (20 B) with 32-bit, Q4_K (144 B) with 64/128-bit loads.
#pragma once
#include "rf_compat.h"

// n = (q >> s) & 15 as a float, minus `bias`: 2^23 + n built in the mantissa, then one exact subtract
RF_DEV float rf_nib(rf_u32 q, int s, float bias) {
    return __int_as_float(0x4B000000 | ((q >> s) & 0xFu)) - (8388608.0f + bias);
}

// signed byte k of q as a float (same trick on b + 128)
RF_DEV float rf_sbyte(rf_u32 q, int k) {
    return __int_as_float(0x4B000000 | (((q >> (8 * k)) & 0xFFu) ^ 0x80u)) - 8388736.0f;
}

// 1 + n / 16 for the nibble n at bit p of q (p a multiple of 4): n lands in the top mantissa bits of 1.0f,
// one shift and one logic op; a dot product over these is sum(x) + sum(n * x) / 16 (f in [1, 2): no
// cancellation worth the name). Three instructions per element with the FMA, against four for rf_nib.
RF_DEV float rf_nib16(rf_u32 q, int p) {
    const rf_u32 t = p <= 19 ? (q << (19 - p)) : (q >> (p - 19));
    return __uint_as_float((t & 0x00780000u) | 0x3F800000u);
}

// 1 + (b + 128) / 256 for the signed byte k of q, the same way
RF_DEV float rf_byte256(rf_u32 q, int k) {
    const int p = 8 * k;
    const rf_u32 t = p <= 15 ? (q << (15 - p)) : (q >> (p - 15));
    return __uint_as_float(((t & 0x007F8000u) ^ 0x00400000u) | 0x3F800000u);
}

// Mat-vec dot variants (mul_mat_vec.hip's f32 kernels): RF_MMV_FAST 1 uses the four-shift Q4_0 dot
// (f32 accumulation; nibbles as 1 + n/256 or 1 + n/16), 2 also the one-permute Q8_0 dot (bytes as
// 1 + b/32768: ~15 bits of each product survive the cancellation against sum x).
#ifndef RF_MMV_FAST
#define RF_MMV_FAST 1
#endif

// the bits `mask` of t (inside the mantissa) over 1.0f
RF_DEV float rf_mbits(rf_u32 t, rf_u32 mask) { return __uint_as_float((t & mask) | 0x3F800000u); }

// byte k of q in bits 8-15 of 1.0f: 1 + byte / 32768
RF_DEV float rf_byte_f15(rf_u32 q, int k) {
#if defined(RF_CUDA)
    return __uint_as_float(__byte_perm(q, 0x3F800000u, 0x7604u + 16u * (rf_u32)k));
#else
    return __uint_as_float((((q >> (8 * k)) & 0xFFu) << 8) | 0x3F800000u);
#endif
}

RF_DEV float rf_u16f(const rf_u8* p) { return rf_h2f(*(const rf_u16*)p); }

RF_DEV float4 rf_ld4(const float* p) { return *(const float4*)p; }

RF_DEV float rf_sum4(float4 a) { return (a.x + a.y) + (a.z + a.w); }

RF_DEV float rf_get(const float4& a, int k) { return k == 0 ? a.x : k == 1 ? a.y : k == 2 ? a.z : a.w; }

#define RF_NIB_LO 0x0F0F0F0F

// How a unit's load_x reads x: RfLdx as it is; RfLdxNorm (mul_mat_vec's RF_MMV_NORM, an RMS norm folded
// in) times the norm's weight w, element by element, keeping the sum of squares of x as read.
struct RfLdx {
    RF_DEV float4 ld4(const float*, const float* p) { return rf_ld4(p); }
    RF_DEV float ld1(const float* x, int i) { return x[i]; }
};
struct RfLdxNorm {
    const float* w;  // [K], 16-byte aligned
    float ss;
    RF_DEV float4 ld4(const float* x, const float* p) {
        const float4 a = rf_ld4(p), b = rf_ld4(w + (p - x));
        ss += a.x * a.x + a.y * a.y + a.z * a.z + a.w * a.w;
        return make_float4(a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w);
    }
    RF_DEV float ld1(const float* x, int i) {
        const float a = x[i];
        ss += a * a;
        return a * w[i];
    }
};

// the x of an 8-element unit u = 4b + i of a 4/5-bit block type (qs byte j holds elements j and 16 + j):
// elements 4i..4i+3 (lo) and 16+4i..16+4i+3 (hi) of block b
template <class L>
RF_DEV void rf_load_x_nib(const float* x, int u, float4& lo, float4& hi, L& ld) {
    const float* p = x + 32 * (u >> 2) + 4 * (u & 3);
    lo = ld.ld4(x, p);
    hi = ld.ld4(x, p + 16);
}

// 16 * sum(nibble * x) over such a unit: low nibbles of q against lo, high nibbles against hi
RF_DEV float rf_dot_nib16(rf_u32 q, const float4& lo, const float4& hi) {
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        s += rf_nib16(q, 8 * k) * rf_get(lo, k);
        s += rf_nib16(q, 8 * k + 4) * rf_get(hi, k);
    }
    return s;
}

// x quantized for the dp4a path (shared memory): q1, q2 (4 int8 per int), d scale and s sum per block of 32
struct RfQx {
    const int* q1;
    const int* q2;
    const float* d;
    const float* s;
};

#define RF_Q2_SCALE (1.0f / 254.0f)

// sum_i w.i8[i] * x[i] over two ints of weights against both levels of x, in units of the block scale
RF_DEV float rf_dot2(int w0, int w1, int a1, int b1, int a2, int b2) {
    const int s1 = rf_dp4a(w0, a1, rf_dp4a(w1, b1, 0));
    const int s2 = rf_dp4a(w0, a2, rf_dp4a(w1, b2, 0));
    return (float)s1 + (float)s2 * RF_Q2_SCALE;
}

// the two 4-element ints (elements 4i.. and 16+4i.. of block b) of an 8-element unit u = 4b + i
struct QX8 {
    int lo, hi, lo2, hi2;
    float d, s;
};

RF_DEV void rf_q_load_x8(const RfQx& q, int u, QX8& v) {
    const int b = u >> 2, i = u & 3;
    v.lo = q.q1[8 * b + i];
    v.hi = q.q1[8 * b + 4 + i];
    v.lo2 = q.q2[8 * b + i];
    v.hi2 = q.q2[8 * b + 4 + i];
    v.d = q.d[b];
    v.s = q.s[b];
}

// low 4 bits of h -> bit 4 of each byte (Q5 high bits)
RF_DEV rf_u32 rf_spread4(rf_u32 h) {
    return ((h << 4) & 0x10u) | ((h << 11) & 0x1000u) | ((h << 18) & 0x100000u) | ((h << 25) & 0x10000000u);
}

// ---- Q4_0: d(f16) qs[16]; element j: low nibble of qs[j] (j < 16), high nibble of qs[j - 16] -------------
struct QT_Q4_0 {
    static constexpr int QK = 32, BYTES = 18, UNIT = 8;
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const rf_u8* b = row + (k0 >> 5) * BYTES;
        const int j = k0 & 31, s = j >= 16 ? 4 : 0;
        const float d = rf_u16f(b);
        const rf_u32 q0 = rf_ld_u32_a2(b + 2 + (j & 15)), q1 = rf_ld_u32_a2(b + 6 + (j & 15));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            o[k] = d * rf_nib(q0, 8 * k + s, 8.0f);
            o[k + 4] = d * rf_nib(q1, 8 * k + s, 8.0f);
        }
    }
    // unit u: block u/4, qs bytes 4i..4i+3 (i = u%4): elements 4i..4i+3 and 16+4i..16+4i+3
    struct W { float d; rf_u32 q; };
    struct X { float4 lo, hi; float sum, k; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        const rf_u8* b = row + (u >> 2) * BYTES;
        w.d = rf_u16f(b);
        w.q = rf_ld_u32_a2(b + 2 + 4 * (u & 3));
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        rf_load_x_nib(x, u, v.lo, v.hi, ld);
#if RF_MMV_FAST
        const float slo = rf_sum4(v.lo), shi = rf_sum4(v.hi);
        v.sum = slo + shi;
        v.k = 264.0f * slo + 24.0f * shi;  // see dot
#else
        v.sum = rf_sum4(v.lo) + rf_sum4(v.hi);
        v.k = 0.0f;
#endif
    }
    RF_DEV static float dot(const W& w, const X& v) {
#if RF_MMV_FAST
        // four shifts serve eight nibbles: after q << 15, << 7, >> 1, >> 9 the low nibbles (elements
        // 4i..4i+3) sit at bits 15-18 (1 + n / 256) and the high ones (16+4i..) at 19-22 (1 + n / 16):
        // one logic op per element. sum((n - 8) x) = 256 (slo - Slo) + 16 (shi - Shi) - 8 (Slo + Shi).
        const rf_u32 t0 = w.q << 15, t1 = w.q << 7, t2 = w.q >> 1, t3 = w.q >> 9;
        float a = rf_mbits(t0, 0x00078000u) * v.lo.x;
        float b = rf_mbits(t0, 0x00780000u) * v.hi.x;
        a += rf_mbits(t1, 0x00078000u) * v.lo.y;
        b += rf_mbits(t1, 0x00780000u) * v.hi.y;
        a += rf_mbits(t2, 0x00078000u) * v.lo.z;
        b += rf_mbits(t2, 0x00780000u) * v.hi.z;
        a += rf_mbits(t3, 0x00078000u) * v.lo.w;
        b += rf_mbits(t3, 0x00780000u) * v.hi.w;
        return w.d * (256.0f * a + (16.0f * b - v.k));
#else
        const float s = rf_dot_nib16(w.q, v.lo, v.hi);
        return w.d * (16.0f * s - 24.0f * v.sum);  // sum((n - 8) x) = 16 (s - sum x) - 8 sum x
#endif
    }
    static constexpr int QUNIT = 8;
    typedef QX8 QX;
    RF_DEV static void q_load_x(const RfQx& q, int u, QX& v) { rf_q_load_x8(q, u, v); }
    RF_DEV static float q_dot(const W& w, const QX& x) {
        const float s = rf_dot2(w.q & RF_NIB_LO, (w.q >> 4) & RF_NIB_LO, x.lo, x.hi, x.lo2, x.hi2);
        return w.d * (x.d * s - 2.0f * x.s);  // -8 * sum(x) over the block, a quarter per unit
    }
};

// ---- Q4_1: d m (f16) qs[16]; x = d*q + m ------------------------------------------------------------------
struct QT_Q4_1 {
    static constexpr int QK = 32, BYTES = 20, UNIT = 8;
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const rf_u8* b = row + (k0 >> 5) * BYTES;
        const int j = k0 & 31, s = j >= 16 ? 4 : 0;
        const rf_u32 dm = rf_ld_u32_a4(b);
        const float d = rf_h2f_lo(dm), m = rf_h2f_hi(dm);
        const rf_u32 q0 = rf_ld_u32_a4(b + 4 + (j & 15)), q1 = rf_ld_u32_a4(b + 8 + (j & 15));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            o[k] = d * rf_nib(q0, 8 * k + s, 0.0f) + m;
            o[k + 4] = d * rf_nib(q1, 8 * k + s, 0.0f) + m;
        }
    }
    struct W { rf_u32 dm, q; };
    struct X { float4 lo, hi; float sum; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        const rf_u8* b = row + (u >> 2) * BYTES;
        w.dm = rf_ld_u32_a4(b);
        w.q = rf_ld_u32_a4(b + 4 + 4 * (u & 3));
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        rf_load_x_nib(x, u, v.lo, v.hi, ld);
        v.sum = rf_sum4(v.lo) + rf_sum4(v.hi);
    }
    RF_DEV static float dot(const W& w, const X& v) {
        const float s = rf_dot_nib16(w.q, v.lo, v.hi);
        return rf_h2f_lo(w.dm) * 16.0f * (s - v.sum) + rf_h2f_hi(w.dm) * v.sum;
    }
    static constexpr int QUNIT = 8;
    typedef QX8 QX;
    RF_DEV static void q_load_x(const RfQx& q, int u, QX& v) { rf_q_load_x8(q, u, v); }
    RF_DEV static float q_dot(const W& w, const QX& x) {
        const float s = rf_dot2(w.q & RF_NIB_LO, (w.q >> 4) & RF_NIB_LO, x.lo, x.hi, x.lo2, x.hi2);
        return rf_h2f_lo(w.dm) * x.d * s + rf_h2f_hi(w.dm) * 0.25f * x.s;
    }
};

// ---- Q5_0: d(f16) qh[4] qs[16]; bit 4 of element e is bit e of qh (little-endian u32); q - 16 ------------
struct QT_Q5_0 {
    static constexpr int QK = 32, BYTES = 22, UNIT = 8;
    RF_DEV static float q5(rf_u32 q, int s, rf_u32 qh, int e) {
        return __int_as_float(0x4B000000 | ((q >> s) & 0xFu) | (((qh >> e) & 1u) << 4)) - 8388624.0f;
    }
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const rf_u8* b = row + (k0 >> 5) * BYTES;
        const int j = k0 & 31, s = j >= 16 ? 4 : 0;
        const float d = rf_u16f(b);
        const rf_u32 qh = rf_ld_u32_a2(b + 2);
        const rf_u32 q0 = rf_ld_u32_a2(b + 6 + (j & 15)), q1 = rf_ld_u32_a2(b + 10 + (j & 15));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            o[k] = d * q5(q0, 8 * k + s, qh, j + k);
            o[k + 4] = d * q5(q1, 8 * k + s, qh, j + 4 + k);
        }
    }
    struct W { float d; rf_u32 qh, q; };
    struct X { float4 lo, hi; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        const rf_u8* b = row + (u >> 2) * BYTES;
        const int i = u & 3;
        w.d = rf_u16f(b);
        w.qh = rf_ld_u32_a2(b + 2) >> (4 * i);  // bit k: element 4i+k; bit 16+k: element 16+4i+k
        w.q = rf_ld_u32_a2(b + 6 + 4 * i);
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) { rf_load_x_nib(x, u, v.lo, v.hi, ld); }
    RF_DEV static float dot(const W& w, const X& v) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            s += q5(w.q, 8 * k, w.qh, k) * rf_get(v.lo, k);
            s += q5(w.q, 8 * k + 4, w.qh, 16 + k) * rf_get(v.hi, k);
        }
        return w.d * s;
    }
    static constexpr int QUNIT = 8;
    typedef QX8 QX;
    RF_DEV static void q_load_x(const RfQx& q, int u, QX& v) { rf_q_load_x8(q, u, v); }
    RF_DEV static float q_dot(const W& w, const QX& x) {
        const int vl = (int)((w.q & RF_NIB_LO) | rf_spread4(w.qh));
        const int vh = (int)(((w.q >> 4) & RF_NIB_LO) | rf_spread4(w.qh >> 16));
        return w.d * (x.d * rf_dot2(vl, vh, x.lo, x.hi, x.lo2, x.hi2) - 4.0f * x.s);  // -16 * sum(x)
    }
};

// ---- Q8_0: d(f16) qs[32] int8 ---------------------------------------------------------------------------
struct QT_Q8_0 {
    static constexpr int QK = 32, BYTES = 34, UNIT = 8;
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const rf_u8* b = row + (k0 >> 5) * BYTES;
        const float d = rf_u16f(b);
        const rf_u32 q0 = rf_ld_u32_a2(b + 2 + (k0 & 31)), q1 = rf_ld_u32_a2(b + 6 + (k0 & 31));
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            o[k] = d * rf_sbyte(q0, k);
            o[k + 4] = d * rf_sbyte(q1, k);
        }
    }
    // unit u: block u/4, elements 8i..8i+7 (i = u%4)
    struct W { float d; rf_u32 q0, q1; };
    struct X { float4 a, b; float sum; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        const rf_u8* b = row + (u >> 2) * BYTES;
        w.d = rf_u16f(b);
        w.q0 = rf_ld_u32_a2(b + 2 + 8 * (u & 3));
        w.q1 = rf_ld_u32_a2(b + 6 + 8 * (u & 3));
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        v.a = ld.ld4(x, x + 8 * u);
        v.b = ld.ld4(x, x + 8 * u + 4);
        v.sum = rf_sum4(v.a) + rf_sum4(v.b);
    }
    RF_DEV static float dot(const W& w, const X& v) {
#if RF_MMV_FAST >= 2
        // byte b + 128 into bits 8-15 of 1.0f with one byte permute: 1 + (b + 128) / 32768;
        // sum(b x) = 32768 (s - sum x) - 128 sum x
        const rf_u32 qa = w.q0 ^ 0x80808080u, qb = w.q1 ^ 0x80808080u;
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            s += rf_byte_f15(qa, k) * rf_get(v.a, k);
            s += rf_byte_f15(qb, k) * rf_get(v.b, k);
        }
        return w.d * (32768.0f * s - 32896.0f * v.sum);
#else
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            s += rf_byte256(w.q0, k) * rf_get(v.a, k);
            s += rf_byte256(w.q1, k) * rf_get(v.b, k);
        }
        return w.d * (256.0f * s - 384.0f * v.sum);  // sum(b x) = 256 (s - sum x) - 128 sum x
#endif
    }
    static constexpr int QUNIT = 8;
    struct QX { int a, b, a2, b2; float d; };
    RF_DEV static void q_load_x(const RfQx& q, int u, QX& v) {
        const int b = u >> 2, i = u & 3;
        v.a = q.q1[8 * b + 2 * i];
        v.b = q.q1[8 * b + 2 * i + 1];
        v.a2 = q.q2[8 * b + 2 * i];
        v.b2 = q.q2[8 * b + 2 * i + 1];
        v.d = q.d[b];
    }
    RF_DEV static float q_dot(const W& w, const QX& x) {
        return w.d * x.d * rf_dot2((int)w.q0, (int)w.q1, x.a, x.b, x.a2, x.b2);
    }
};

// ---- Q4_K: d dmin (f16) scales[12] qs[128]; e = 64c + 32h + l: nibble h of qs[32c + l] -------------------
// sub-block e/32 has a 6-bit scale and min (get_scale_min_k4); x = d*sc*q - dmin*m
RF_DEV void rf_scale_min_k4(int j, rf_u32 s0, rf_u32 s1, rf_u32 s2, float& sc, float& m) {
    // s0, s1, s2: the 12 packed scale bytes as three little-endian words
    const int sh = 8 * (j & 3);
    const rf_u32 a = (s0 >> sh) & 0xFFu, b = (s1 >> sh) & 0xFFu, c = (s2 >> sh) & 0xFFu;
    if (j < 4) {
        sc = (float)(a & 63u);
        m = (float)(b & 63u);
    } else {
        sc = (float)((c & 0xFu) | ((a >> 6) << 4));
        m = (float)((c >> 4) | ((b >> 6) << 4));
    }
}

struct QT_Q4_K {
    static constexpr int QK = 256, BYTES = 144, UNIT = 16;
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const rf_u8* b = row + (k0 >> 8) * BYTES;
        const int e0 = k0 & 255, c = e0 >> 6, h = (e0 >> 5) & 1, l0 = e0 & 31;
        const uint4 hdr = *(const uint4*)b;
        float sc, m;
        rf_scale_min_k4(e0 >> 5, hdr.y, hdr.z, hdr.w, sc, m);
        const rf_u32 dm = hdr.x;
        const float dl = rf_h2f_lo(dm) * sc, ml = rf_h2f_hi(dm) * m;
        const uint2 q = *(const uint2*)(b + 16 + 32 * c + l0);
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            o[k] = dl * rf_nib(q.x, 8 * k + 4 * h, 0.0f) - ml;
            o[k + 4] = dl * rf_nib(q.y, 8 * k + 4 * h, 0.0f) - ml;
        }
    }
    // unit u: super-block u/16, r = u%16: c = r/4, l = 8(r%4)..+7: elements 64c+l (sub-block 2c, low
    // nibbles) and 64c+32+l (sub-block 2c+1, high nibbles)
    struct W { uint4 hdr; uint2 q; int c; };
    struct X { float4 a0, a1, b0, b1; float sa, sb; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        const rf_u8* b = row + (u >> 4) * BYTES;
        const int r = u & 15;
        w.hdr = *(const uint4*)b;
        w.q = *(const uint2*)(b + 16 + 32 * (r >> 2) + 8 * (r & 3));
        w.c = r >> 2;
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        const int r = u & 15;
        const float* p = x + 256 * (u >> 4) + 64 * (r >> 2) + 8 * (r & 3);
        v.a0 = ld.ld4(x, p);
        v.a1 = ld.ld4(x, p + 4);
        v.b0 = ld.ld4(x, p + 32);
        v.b1 = ld.ld4(x, p + 36);
        v.sa = rf_sum4(v.a0) + rf_sum4(v.a1);
        v.sb = rf_sum4(v.b0) + rf_sum4(v.b1);
    }
    RF_DEV static float dot(const W& w, const X& v) {
        float sc0, m0, sc1, m1;
        rf_scale_min_k4(2 * w.c, w.hdr.y, w.hdr.z, w.hdr.w, sc0, m0);
        rf_scale_min_k4(2 * w.c + 1, w.hdr.y, w.hdr.z, w.hdr.w, sc1, m1);
        float s0 = 0.0f, s1 = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            s0 += rf_nib(w.q.x, 8 * k, 0.0f) * rf_get(v.a0, k) + rf_nib(w.q.y, 8 * k, 0.0f) * rf_get(v.a1, k);
            s1 += rf_nib(w.q.x, 8 * k + 4, 0.0f) * rf_get(v.b0, k) +
                  rf_nib(w.q.y, 8 * k + 4, 0.0f) * rf_get(v.b1, k);
        }
        const float d = rf_h2f_lo(w.hdr.x), dmin = rf_h2f_hi(w.hdr.x);
        return d * (sc0 * s0 + sc1 * s1) - dmin * (m0 * v.sa + m1 * v.sb);
    }
    static constexpr int QUNIT = 16;
    struct QX { int a0, a1, b0, b1, a02, a12, b02, b12; float d0, d1, s0, s1; };
    RF_DEV static void q_load_x(const RfQx& q, int u, QX& v) {
        const int r = u & 15, b = 8 * (u >> 4) + 2 * (r >> 2), j = r & 3;  // x blocks b, b + 1
        const int i0 = 8 * b + 2 * j, i1 = 8 * b + 8 + 2 * j;
        v.a0 = q.q1[i0];
        v.a1 = q.q1[i0 + 1];
        v.b0 = q.q1[i1];
        v.b1 = q.q1[i1 + 1];
        v.a02 = q.q2[i0];
        v.a12 = q.q2[i0 + 1];
        v.b02 = q.q2[i1];
        v.b12 = q.q2[i1 + 1];
        v.d0 = q.d[b];
        v.d1 = q.d[b + 1];
        v.s0 = q.s[b];
        v.s1 = q.s[b + 1];
    }
    RF_DEV static float q_dot(const W& w, const QX& x) {
        float sc0, m0, sc1, m1;
        rf_scale_min_k4(2 * w.c, w.hdr.y, w.hdr.z, w.hdr.w, sc0, m0);
        rf_scale_min_k4(2 * w.c + 1, w.hdr.y, w.hdr.z, w.hdr.w, sc1, m1);
        const float s0 =
            rf_dot2((int)(w.q.x & RF_NIB_LO), (int)(w.q.y & RF_NIB_LO), x.a0, x.a1, x.a02, x.a12);
        const float s1 = rf_dot2((int)((w.q.x >> 4) & RF_NIB_LO), (int)((w.q.y >> 4) & RF_NIB_LO), x.b0, x.b1,
                                 x.b02, x.b12);
        const float d = rf_h2f_lo(w.hdr.x), dmin = rf_h2f_hi(w.hdr.x);
        return d * (sc0 * x.d0 * s0 + sc1 * x.d1 * s1) - dmin * 0.25f * (m0 * x.s0 + m1 * x.s1);
    }
};

// ---- Q6_K: ql[128] qh[64] scales[16] (int8) d(f16); e = 128n + 32k + l:
// low 4 bits: nibble k/2 of ql[64n + 32(k%2) + l]; high 2 bits: bits 2k of qh[32n + l]; q - 32
struct QT_Q6_K {
    static constexpr int QK = 256, BYTES = 210, UNIT = 16;
    RF_DEV static float q6(rf_u32 ql, rf_u32 qh, int t, int k) {
        const rf_u32 lo = (ql >> (8 * t + 4 * (k >> 1))) & 0xFu;
        const rf_u32 hi = (qh >> (8 * t + 2 * k)) & 3u;
        return __int_as_float(0x4B000000 | lo | (hi << 4)) - 8388640.0f;
    }
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const rf_u8* b = row + (k0 >> 8) * BYTES;
        const int e0 = k0 & 255, n = e0 >> 7, k = (e0 >> 5) & 3, l0 = e0 & 31;
        const float dl = rf_u16f(b + 208) * (float)(rf_i8)b[192 + (e0 >> 4)];
        const rf_u8* ql = b + 64 * n + 32 * (k & 1) + l0;
        const rf_u8* qh = b + 128 + 32 * n + l0;
        for (int h = 0; h < 2; ++h) {
            const rf_u32 wl = rf_ld_u32_a2(ql + 4 * h), wh = rf_ld_u32_a2(qh + 4 * h);
            for (int t = 0; t < 4; ++t) o[4 * h + t] = dl * q6(wl, wh, t, k);
        }
    }
    // unit u: super-block u/16, r = u%16: n = r/8, l = 4(r%8)..+3, all four k: 16 elements
    struct W { rf_u32 ql0, ql1, qh, sc0, sc1; float d; int j; };
    struct X { float4 v[4]; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        const rf_u8* b = row + (u >> 4) * BYTES;
        const int r = u & 15, n = r >> 3, j = r & 7;
        w.ql0 = rf_ld_u32_a2(b + 64 * n + 4 * j);
        w.ql1 = rf_ld_u32_a2(b + 64 * n + 32 + 4 * j);
        w.qh = rf_ld_u32_a2(b + 128 + 32 * n + 4 * j);
        w.sc0 = rf_ld_u32_a2(b + 192 + 8 * n);  // scales[8n + 2k + j/4]: bytes 0..3 -> k 0,1
        w.sc1 = rf_ld_u32_a2(b + 196 + 8 * n);  // bytes 4..7 -> k 2,3
        w.d = rf_u16f(b + 208);
        w.j = j >> 2;
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        const int r = u & 15;
        const float* p = x + 256 * (u >> 4) + 128 * (r >> 3) + 4 * (r & 7);
        for (int k = 0; k < 4; ++k) v.v[k] = ld.ld4(x, p + 32 * k);
    }
    RF_DEV static float dot(const W& w, const X& v) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const rf_u32 ql = (k & 1) ? w.ql1 : w.ql0;
            const rf_u32 scw = k < 2 ? w.sc0 : w.sc1;
            const float sc = (float)(rf_i8)(scw >> (8 * (2 * (k & 1) + w.j)));
            float t = 0.0f;
            for (int i = 0; i < 4; ++i) t += q6(ql, w.qh, i, k) * rf_get(v.v[k], i);
            s += sc * t;
        }
        return w.d * s;
    }
    static constexpr int QUNIT = 16;
    struct QX { int v[4], v2[4]; float d[4]; };
    RF_DEV static void q_load_x(const RfQx& q, int u, QX& v) {
        const int r = u & 15, b = 8 * (u >> 4) + 4 * (r >> 3), j = r & 7;  // x block b + k for group k
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            v.v[k] = q.q1[8 * (b + k) + j];
            v.v2[k] = q.q2[8 * (b + k) + j];
            v.d[k] = q.d[b + k];
        }
    }
    RF_DEV static float q_dot(const W& w, const QX& x) {
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const rf_u32 ql = (k & 1) ? w.ql1 : w.ql0;
            const rf_u32 v = ((ql >> (4 * (k >> 1))) & RF_NIB_LO) | (((w.qh >> (2 * k)) & 0x03030303u) << 4);
            const rf_u32 q = ((v | 0x80808080u) - 0x20202020u) ^ 0x80808080u;  // bytes v - 32, no borrows
            const rf_u32 scw = k < 2 ? w.sc0 : w.sc1;
            const float sc = (float)(rf_i8)(scw >> (8 * (2 * (k & 1) + w.j)));
            const float t =
                (float)rf_dp4a((int)q, x.v[k], 0) + (float)rf_dp4a((int)q, x.v2[k], 0) * RF_Q2_SCALE;
            s += sc * x.d[k] * t;
        }
        return w.d * s;
    }
};

// ---- plain float types: F32, F16, BF16 (VEC: rows are a multiple of 8 elements, 16-byte aligned) -------
template <int VEC>
struct QT_F32 {
    static constexpr int QK = 1, BYTES = 4, UNIT = VEC ? 4 : 1;
    RF_DEV static float deq1(const rf_u8* row, int k) { return ((const float*)row)[k]; }
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const float4 a = rf_ld4((const float*)row + k0), b = rf_ld4((const float*)row + k0 + 4);
        o[0] = a.x; o[1] = a.y; o[2] = a.z; o[3] = a.w;
        o[4] = b.x; o[5] = b.y; o[6] = b.z; o[7] = b.w;
    }
    struct W { float4 w; };
    struct X { float4 x; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        if (VEC) w.w = rf_ld4((const float*)row + 4 * u);
        else w.w.x = ((const float*)row)[u];
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        if (VEC) v.x = ld.ld4(x, x + 4 * u);
        else v.x.x = ld.ld1(x, u);
    }
    RF_DEV static float dot(const W& w, const X& v) {
        if (VEC) return w.w.x * v.x.x + w.w.y * v.x.y + w.w.z * v.x.z + w.w.w * v.x.w;
        return w.w.x * v.x.x;
    }
};

template <int VEC, int BF>
struct QT_F16 {
    static constexpr int QK = 1, BYTES = 2, UNIT = VEC ? 8 : 1;
    RF_DEV static float cvt(rf_u32 h) { return BF ? rf_bf2f((rf_u16)h) : rf_h2f((rf_u16)h); }
    RF_DEV static float deq1(const rf_u8* row, int k) { return cvt(((const rf_u16*)row)[k]); }
    RF_DEV static void deq8(const rf_u8* row, int k0, float* o) {
        const uint4 q = *(const uint4*)((const rf_u16*)row + k0);
        const rf_u32 w[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            o[2 * k] = cvt(w[k] & 0xffffu);
            o[2 * k + 1] = cvt(w[k] >> 16);
        }
    }
    struct W { uint4 q; };
    struct X { float4 a, b; };
    RF_DEV static void load_w(const rf_u8* row, int u, W& w) {
        if (VEC) w.q = *(const uint4*)((const rf_u16*)row + 8 * u);
        else w.q.x = ((const rf_u16*)row)[u];
    }
    template <class L>
    RF_DEV static void load_x(const float* x, int u, X& v, L& ld) {
        if (VEC) {
            v.a = ld.ld4(x, x + 8 * u);
            v.b = ld.ld4(x, x + 8 * u + 4);
        } else {
            v.a.x = ld.ld1(x, u);
        }
    }
    RF_DEV static float dot(const W& w, const X& v) {
        if (!VEC) return cvt(w.q.x) * v.a.x;
        return cvt(w.q.x & 0xffffu) * v.a.x + cvt(w.q.x >> 16) * v.a.y + cvt(w.q.y & 0xffffu) * v.a.z +
               cvt(w.q.y >> 16) * v.a.w + cvt(w.q.z & 0xffffu) * v.b.x + cvt(w.q.z >> 16) * v.b.y +
               cvt(w.q.w & 0xffffu) * v.b.z + cvt(w.q.w >> 16) * v.b.w;
    }
};

typedef QT_F32<1> QT_F32V;
typedef QT_F32<0> QT_F32S;
typedef QT_F16<1, 0> QT_F16V;
typedef QT_F16<0, 0> QT_F16S;
typedef QT_F16<1, 1> QT_BF16V;
typedef QT_F16<0, 1> QT_BF16S;

// X-macro of the weight types every weight kernel is instantiated for: (suffix, trait). The `_s` float
// variants serve rows whose length is not a multiple of 8 (element by element).
#define RF_WEIGHT_TYPES(M)                                                                             \
    M(q4_0, QT_Q4_0) M(q4_1, QT_Q4_1) M(q5_0, QT_Q5_0) M(q8_0, QT_Q8_0) M(q4_k, QT_Q4_K)               \
    M(q6_k, QT_Q6_K) M(f32, QT_F32V) M(f32_s, QT_F32S) M(f16, QT_F16V) M(f16_s, QT_F16S)              \
    M(bf16, QT_BF16V) M(bf16_s, QT_BF16S)
