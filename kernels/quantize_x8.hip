// quantize_x8.hip: x [M, K] f32 -> xq [M, K + K / 4] bytes a token: int8 [K] in element order (one level, as
// llama.cpp's q8_1: scale amax / 127 per block of 32), then float2 [K / 32] (scale, block sum of x as
// quantized); the activations of the int8 mat-vecs (mul_mat_vec_xr, mul_mat_vec_xq). K % 32 == 0.
// Launch: grid (ceil(K / 1024), M), 256 threads, a float4 each (8 lanes a block of 32). Programmatic
// dependent launch (pdl.py): it waits for the kernel before it, and lets the mat-vec after it start (which
// waits for its end before reading xq).
// Tunables: none.
// Floor: K * 4 read, K * 1.25 written, a token.
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

RF_KERNEL void __launch_bounds__(256)
    quantize_x8(const float* x, rf_i64 x_stride, rf_u8* xq, rf_i64 xq_stride, int K) {
    rf_grid_dependents();
    rf_grid_wait();
    const int t = blockIdx.x * 256 + (int)threadIdx.x, n4 = K / 4;  // n4 % 8 == 0: whole blocks per 8 lanes
    x += blockIdx.y * x_stride;
    xq += blockIdx.y * xq_stride;
    const float4 v = t < n4 ? rf_ld4(x + 4 * t) : float4{0.0f, 0.0f, 0.0f, 0.0f};
    int a, b, c, e;
    float id;
    const float d = x8_quantize4(v, a, b, c, e, id);
    const float sum = rf_group_sum((float)(a + b + c + e), 8) * d;
    if (t < n4) {
        ((int*)xq)[t] = rf_pack4(a, b, c, e);
        if ((t & 7) == 0) ((float2*)(xq + K))[t >> 3] = float2{d, sum};
    }
}
