// elementwise.hip: ADD, MUL (b broadcast to a), SCALE, SILU, SWIGLU, and the strided copy behind CONT
// and CPY (f32 / f16 / i32 in any combination). Results of the arithmetic ops are f32.
//
// Launch: 1-D grid-stride loops, block 256 threads, grid min(ceil(n / 256), 65535 * ...): every thread
// handles elements i, i + stride, ... so any n works with a bounded grid.
// Binary ops take a's shape as 4 dims (innermost first, ggml's ne0..ne3) and b's; b index =
// sum (i_k mod nb_k) * stride_k. mode 1: b has a's size (same index); mode 2: b is one row of ne0.
// The copy reads a 4-dim strided view (element strides) and writes contiguously.
// Tunables: block size.
// Floor: inputs read once, output written once (b, when broadcast, stays in cache).
#include "rf_compat.h"

template <typename Ti, typename To> struct rf_cvt {
    static RF_DEV To apply(Ti v);
};
template <typename T> struct rf_cvt<T, T> {
    static RF_DEV T apply(T v) { return v; }
};
template <> RF_DEV rf_u16 rf_cvt<float, rf_u16>::apply(float v) { return rf_f2h(v); }
template <> RF_DEV int rf_cvt<float, int>::apply(float v) { return (int)v; }
template <> RF_DEV float rf_cvt<rf_u16, float>::apply(rf_u16 v) { return rf_h2f(v); }
template <> RF_DEV int rf_cvt<rf_u16, int>::apply(rf_u16 v) { return (int)rf_h2f(v); }
template <> RF_DEV float rf_cvt<int, float>::apply(int v) { return (float)v; }
template <> RF_DEV rf_u16 rf_cvt<int, rf_u16>::apply(int v) { return rf_f2h((float)v); }

#define EW_LOOP(n) for (rf_i64 i = (rf_i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
                        i += (rf_i64)gridDim.x * blockDim.x)

struct Shape4 {
    int a0, a1, a2, b0, b1, b2, b3;
};

RF_DEV rf_i64 bcast_index(rf_i64 i, int mode, const Shape4& s) {
    if (mode == 1) return i;
    if (mode == 2) return i % s.a0;
    const rf_i64 i0 = i % s.a0, r0 = i / s.a0;
    const rf_i64 i1 = r0 % s.a1, r1 = r0 / s.a1;
    const rf_i64 i2 = r1 % s.a2, i3 = r1 / s.a2;
    return (((i3 % s.b3) * s.b2 + (i2 % s.b2)) * s.b1 + (i1 % s.b1)) * s.b0 + (i0 % s.b0);
}

template <typename Ta, typename Tb, int OP>
__device__ void binary(const Ta* __restrict__ a, const Tb* __restrict__ b, float* __restrict__ out, rf_i64 n,
                       int mode, Shape4 s) {
    RF_PDL_BEGIN();
    EW_LOOP(n) {
        const float x = rf_io<Ta>::load(a, i), y = rf_io<Tb>::load(b, bcast_index(i, mode, s));
        out[i] = OP == 0 ? x + y : x * y;
    }
}

#define EW_BINARY(opname, OP, ta, Ta, tb, Tb)                                                          \
    RF_KERNEL void opname##_##ta##_##tb(const Ta* a, const Tb* b, float* out, rf_i64 n, int mode, int a0, \
                                        int a1, int a2, int b0, int b1, int b2, int b3) {              \
        binary<Ta, Tb, OP>(a, b, out, n, mode, Shape4{a0, a1, a2, b0, b1, b2, b3});                   \
    }
#define EW_BINARY_ALL(opname, OP)                                                                      \
    EW_BINARY(opname, OP, f32, float, f32, float) EW_BINARY(opname, OP, f32, float, f16, rf_u16)       \
    EW_BINARY(opname, OP, f16, rf_u16, f32, float) EW_BINARY(opname, OP, f16, rf_u16, f16, rf_u16)
EW_BINARY_ALL(add, 0)
EW_BINARY_ALL(mul, 1)


#define EW_UNARY(t, T)                                                                                 \
    RF_KERNEL void scale_##t(const T* a, float* out, rf_i64 n, float s) {                             \
        RF_PDL_BEGIN();                                                                                \
        EW_LOOP(n) out[i] = rf_io<T>::load(a, i) * s;                                                  \
    }                                                                                                  \
    RF_KERNEL void silu_##t(const T* a, float* out, rf_i64 n) {                                       \
        RF_PDL_BEGIN();                                                                                \
        EW_LOOP(n) out[i] = rf_silu(rf_io<T>::load(a, i));                                             \
    }
EW_UNARY(f32, float)
EW_UNARY(f16, rf_u16)

#define EW_SWIGLU(tg, Tg, tu, Tu)                                                                      \
    RF_KERNEL void swiglu_##tg##_##tu(const Tg* g, const Tu* u, float* out, rf_i64 n) {               \
        RF_PDL_BEGIN();                                                                                \
        EW_LOOP(n) out[i] = rf_silu(rf_io<Tg>::load(g, i)) * rf_io<Tu>::load(u, i);                   \
    }
EW_SWIGLU(f32, float, f32, float)
EW_SWIGLU(f32, float, f16, rf_u16)
EW_SWIGLU(f16, rf_u16, f32, float)
EW_SWIGLU(f16, rf_u16, f16, rf_u16)

// MUL_MAT_SWIGLU after a kernel without the GLU epilogue: y [n rows, 2F] of gate/up pairs -> out [n, F]
RF_KERNEL void glu_pairs_f32(const float* y, float* out, rf_i64 n) {
    RF_PDL_BEGIN();
    EW_LOOP(n) out[i] = rf_silu(y[2 * i]) * y[2 * i + 1];
}

// strided 4-dim view (ne0 innermost, element strides s0..s3) -> contiguous, converting the type
template <typename Ti, typename To>
__device__ void copy4(const Ti* __restrict__ src, To* __restrict__ dst, rf_i64 n, int ne0, int ne1, int ne2,
                      rf_i64 s0, rf_i64 s1, rf_i64 s2, rf_i64 s3) {
    RF_PDL_BEGIN();
    EW_LOOP(n) {
        const rf_i64 i0 = i % ne0, r0 = i / ne0;
        const rf_i64 i1 = r0 % ne1, r1 = r0 / ne1;
        const rf_i64 i2 = r1 % ne2, i3 = r1 / ne2;
        dst[i] = rf_cvt<Ti, To>::apply(src[i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3]);
    }
}

#define EW_COPY(ti, Ti, to, To)                                                                        \
    RF_KERNEL void copy_##ti##_##to(const Ti* src, To* dst, rf_i64 n, int ne0, int ne1, int ne2, rf_i64 s0, \
                                    rf_i64 s1, rf_i64 s2, rf_i64 s3) {                                 \
        copy4<Ti, To>(src, dst, n, ne0, ne1, ne2, s0, s1, s2, s3);                                     \
    }
#define EW_COPY_FROM(ti, Ti) \
    EW_COPY(ti, Ti, f32, float) EW_COPY(ti, Ti, f16, rf_u16) EW_COPY(ti, Ti, i32, int)
EW_COPY_FROM(f32, float)
EW_COPY_FROM(f16, rf_u16)
EW_COPY_FROM(i32, int)
