// quantize_x8.hip: QUANTIZE_X8 (quantize_x8): x [M, K] f32 -> xq [M, K + K / 4] bytes a token: int8 [K] in
// element order (one level, as llama.cpp's q8_1: scale amax / 127 per block of 32), then float2 [K / 32]
// (scale, block sum of x as quantized); the activations of the int8 mat-vecs (mul_mat_vec_xr,
// mul_mat_vec_xq). K % 32 == 0. RMS_NORM_MUL_QUANTIZE_X8 (rms_norm_mul_quantize_x8): the same of
// RMS_NORM_MUL(a, wn) (a f32 [M, K], wn f32 [K]; h = (a * s) * wn as norm.hip rounds it), so a norm whose
// readers all read int8 x costs no launch of its own.
// Launch: quantize_x8: grid (ceil(K / 1024), M), 256 threads, a float4 each (8 lanes a block of 32).
// rms_norm_mul_quantize_x8: grid (M), a block a row (launch_geometry.norm_quantize_x8_launch: a multiple of 32
// threads, at most 1024), QX8_NPT float4s a thread held in registers (longer rows read twice); the sum of
// squares reduced over the block, then each group of 8 lanes quantizes its block of 32. Both programmatic
// (pdl.py): they let the mat-vec after them start first (it loads its weights, then waits for their end),
// then wait for the kernel before; w_early: wn (a weight) asked for before that wait.
// Tunables: QX8_NPT (float4s a thread holds; the launcher mirrors it).
// Floor: K * 4 read (and K * 4 of wn, from L2 after the first row), K * 1.25 written, a token.
#include "rf_compat.h"
#include "rf_quant.h"

RF_DEV int rf_pack4(int a, int b, int c, int d) {
    return (a & 0xff) | ((b & 0xff) << 8) | ((c & 0xff) << 16) | ((int)((rf_u32)d << 24));
}

// one float4 of x in its block of 32 (8 lanes together): level-1 int8 values a b c e and the inverse
// scale id; returns the scale
RF_DEV float x8_quantize4(const float4& v, int& a, int& b, int& c, int& e, float& id) {
    const float amax =
        rf_group_max(fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))), 8);
    id = amax > 0.0f ? 127.0f / amax : 0.0f;
    a = (int)rintf(v.x * id), b = (int)rintf(v.y * id), c = (int)rintf(v.z * id), e = (int)rintf(v.w * id);
    return amax / 127.0f;
}

// one float4 of h (8 lanes a block of 32) quantized and stored at float4 index i of the row; every lane of
// the warp calls it (the group reductions), those past the row's end (i >= n4) with zeros
RF_DEV void x8_store4(const float4& h, rf_u8* xq, int i, int n4, int K) {
    int a, b, c, e;
    float id;
    const float d = x8_quantize4(h, a, b, c, e, id);
    const float sum = rf_group_sum((float)(a + b + c + e), 8) * d;
    if (i < n4) {
        ((int*)xq)[i] = rf_pack4(a, b, c, e);
        if ((i & 7) == 0) ((float2*)(xq + K))[i >> 3] = float2{d, sum};
    }
}

RF_KERNEL void __launch_bounds__(256)
    quantize_x8(const float* x, rf_i64 x_stride, rf_u8* xq, rf_i64 xq_stride, int K) {
    rf_grid_dependents();
    rf_grid_wait();
    const int t = blockIdx.x * 256 + (int)threadIdx.x, n4 = K / 4;  // n4 % 8 == 0: whole blocks per 8 lanes
    x += blockIdx.y * x_stride;
    xq += blockIdx.y * xq_stride;
    x8_store4(t < n4 ? rf_ld4(x + 4 * t) : float4{0.0f, 0.0f, 0.0f, 0.0f}, xq, t, n4, K);
}

#ifndef QX8_NPT
#define QX8_NPT 4
#endif

RF_DEV float4 x8_norm4(const float4& v, float r, const float4& w) {
    return float4{(v.x * r) * w.x, (v.y * r) * w.y, (v.z * r) * w.z, (v.w * r) * w.w};
}

RF_KERNEL void __launch_bounds__(1024)
    rms_norm_mul_quantize_x8(const float* a, rf_i64 a_stride, const float* wn, rf_u8* xq, rf_i64 xq_stride,
                             int K, float eps, int w_early) {
    const int T = (int)blockDim.x, n4 = K / 4;  // T % 8 == 0 and n4 % 8 == 0: a group's float4s one block
    const bool held = n4 <= QX8_NPT * T;
    const float4 zero{0.0f, 0.0f, 0.0f, 0.0f};
    float4 w[QX8_NPT];
    if (held && w_early) {
#pragma unroll
        for (int j = 0; j < QX8_NPT; ++j) {
            const int i = threadIdx.x + j * T;
            w[j] = i < n4 ? rf_ld4(wn + 4 * i) : zero;
        }
    }
    rf_grid_dependents();
    rf_grid_wait();
    a += blockIdx.x * a_stride;
    xq += blockIdx.x * xq_stride;
    __shared__ float sh[32];
    float4 v[QX8_NPT];
    float s = 0.0f;
    if (held) {
#pragma unroll
        for (int j = 0; j < QX8_NPT; ++j) {
            const int i = threadIdx.x + j * T;
            v[j] = i < n4 ? rf_ld4(a + 4 * i) : zero;
        }
#pragma unroll
        for (int j = 0; j < QX8_NPT; ++j)
            s += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
    } else {
        for (int i = threadIdx.x; i < n4; i += T) {
            const float4 u = rf_ld4(a + 4 * i);
            s += u.x * u.x + u.y * u.y + u.z * u.z + u.w * u.w;
        }
    }
    s = rf_block_sum(s, sh);
    const float r = rsqrtf(s / (float)K + eps);  // as norm.hip's s_r
    if (held) {
#pragma unroll
        for (int j = 0; j < QX8_NPT; ++j) {
            if (j * T >= n4) break;  // (the same for the whole block)
            const int i = threadIdx.x + j * T;
            const float4 wv = w_early ? w[j] : i < n4 ? rf_ld4(wn + 4 * i) : zero;
            x8_store4(i < n4 ? x8_norm4(v[j], r, wv) : zero, xq, i, n4, K);
        }
    } else {
        for (int i0 = 0; i0 < n4; i0 += T) {
            const int i = threadIdx.x + i0;
            x8_store4(i < n4 ? x8_norm4(rf_ld4(a + 4 * i), r, rf_ld4(wn + 4 * i)) : zero, xq, i, n4, K);
        }
    }
}
