// rf_common.h: device helpers written on top of rf_compat.h's platform layer (RF_DEV, shuffles, warp
// reductions, __syncthreads): block reductions, SILU, int8 dot products, f16/bf16 on raw bits, unaligned
// loads, the rf_io element tags, MUL_MAT_ADD's addend. Vendor instructions only under #if, with a plain
// C++ path the CPU emulation (tests/unit/simt_emu.h) compiles. Included by rf_compat.h.
#pragma once

RF_DEV float rf_silu(float x) { return x / (1.0f + expf(-x)); }  // SILU, SWIGLU and the GLU epilogue

// reductions over the whole block (blockDim.x a multiple of RF_WARP); every thread gets the result.
// sh: at least 32 floats of shared memory; it may be reused right after the call returns.
template <float (*WarpReduce)(float)>
RF_DEV float rf_block_reduce(float v, float* sh, float identity) {
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP;
    v = WarpReduce(v);
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    v = lane < (int)(blockDim.x / RF_WARP) ? sh[lane] : identity;
    return WarpReduce(v);
}

RF_DEV float rf_block_sum(float v, float* sh) { return rf_block_reduce<rf_warp_sum>(v, sh, 0.0f); }
RF_DEV float rf_block_max(float v, float* sh) { return rf_block_reduce<rf_warp_max>(v, sh, -RF_INF); }

// ---- int8 dot product: c + sum_i a.i8[i] * b.i8[i] ---------------------------------------------------
// RF_AMD_SUDOT4: RDNA3/4, whose v_dot4_i32_iu8 takes each operand's signedness as a flag
#if defined(RF_HIP) && (defined(__gfx1100__) || defined(__gfx1101__) || defined(__gfx1102__) || \
                        defined(__gfx1103__) || defined(__gfx1150__) || defined(__gfx1151__) || \
                        defined(__gfx1200__) || defined(__gfx1201__))
#define RF_AMD_SUDOT4 1
#else
#define RF_AMD_SUDOT4 0
#endif
RF_DEV int rf_dp4a(int a, int b, int c) {
#if defined(RF_CUDA)
    int r;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#elif RF_AMD_SUDOT4
    return __builtin_amdgcn_sudot4(true, a, true, b, c, false);  // RDNA3/4: v_dot4_i32_iu8
#elif defined(RF_HIP) && (defined(__gfx906__) || defined(__gfx908__) || defined(__gfx90a__) || \
                          defined(__gfx940__) || defined(__gfx941__) || defined(__gfx942__) || \
                          defined(__gfx950__) || defined(__gfx1030__) || defined(__gfx1031__) || \
                          defined(__gfx1032__))
    return __builtin_amdgcn_sdot4(a, b, c, false);  // CDNA / RDNA2: v_dot4_i32_i8
#else
    return c + (rf_i8)(a) * (rf_i8)(b) + (rf_i8)(a >> 8) * (rf_i8)(b >> 8) +
           (rf_i8)(a >> 16) * (rf_i8)(b >> 16) + (rf_i8)(a >> 24) * (rf_i8)(b >> 24);
#endif
}

// c + sum_i a.u8[i] * b.i8[i] (a unsigned): Q4_0's high nibbles masked in place (a & 0xF0F0F0F0) give 16
// times their dot product with no shift. RF_HAS_DP4A_US: the hardware has it (NVIDIA sm_61+, RDNA3/4).
#if defined(RF_CUDA) || RF_AMD_SUDOT4
#define RF_HAS_DP4A_US 1
#else
#define RF_HAS_DP4A_US 0
#endif
RF_DEV int rf_dp4a_us(rf_u32 a, int b, int c) {
#if defined(RF_CUDA)
    int r;
    asm("dp4a.u32.s32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
    return r;
#elif RF_HAS_DP4A_US
    return __builtin_amdgcn_sudot4(false, (int)a, true, b, c, false);
#else
    return c + (int)(a & 0xFFu) * (rf_i8)(b) + (int)((a >> 8) & 0xFFu) * (rf_i8)(b >> 8) +
           (int)((a >> 16) & 0xFFu) * (rf_i8)(b >> 16) + (int)(a >> 24) * (rf_i8)(b >> 24);
#endif
}

// ---- fp16 / bf16 <-> f32 on raw bits -----------------------------------------------------------------
RF_DEV float rf_h2f(rf_u16 h) {
#if defined(RF_CUDA)
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    union { rf_u16 u; _Float16 f; } c;
    c.u = h;
    return (float)c.f;
#endif
}

RF_DEV rf_u16 rf_f2h(float f) {  // round to nearest even, as numpy's astype(float16)
#if defined(RF_CUDA)
    rf_u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    union { rf_u16 u; _Float16 f; } c;
    c.f = (_Float16)f;
    return c.u;
#endif
}

RF_DEV float rf_bf2f(rf_u16 b) { return __uint_as_float((rf_u32)b << 16); }

// the two halves of a 32-bit word (low half first, as stored)
RF_DEV float rf_h2f_lo(rf_u32 w) { return rf_h2f((rf_u16)(w & 0xffffu)); }
RF_DEV float rf_h2f_hi(rf_u32 w) { return rf_h2f((rf_u16)(w >> 16)); }

// ---- loads of unaligned little-endian words from 2-byte aligned addresses ------------------------------
RF_DEV rf_u32 rf_ld_u32_a2(const rf_u8* p) {
    const rf_u16* q = (const rf_u16*)p;
    return (rf_u32)q[0] | ((rf_u32)q[1] << 16);
}

RF_DEV rf_u32 rf_ld_u32_a4(const rf_u8* p) { return *(const rf_u32*)p; }

// element type tags for templates: activations are f32, f16 (raw bits) or i32
template <typename T> struct rf_io;
template <> struct rf_io<float> {
    static RF_DEV float load(const float* p, rf_i64 i) { return p[i]; }
    static RF_DEV void store(float* p, rf_i64 i, float v) { p[i] = v; }
};
template <> struct rf_io<rf_u16> {
    static RF_DEV float load(const rf_u16* p, rf_i64 i) { return rf_h2f(p[i]); }
    static RF_DEV void store(rf_u16* p, rf_i64 i, float v) { p[i] = rf_f2h(v); }
};
template <> struct rf_io<int> {
    static RF_DEV float load(const int* p, rf_i64 i) { return (float)p[i]; }
    static RF_DEV void store(int* p, rf_i64 i, float v) { p[i] = (int)v; }  // truncates, as astype
};

// MUL_MAT_ADD's addend, where a MUL_MAT kernel writes y[token, row]: s + b[token * b_stride + row] (b f32;
// b_stride 0 for a bias [N], N for a residual [M, N]). b null (plain MUL_MAT): s itself.
RF_DEV float rf_plus_b(float s, const float* b, rf_i64 b_stride, int token, int row) {
    return b ? s + b[(rf_i64)token * b_stride + row] : s;
}
