// rf_compat.h: the portability layer every rocmforge kernel includes first.
//
// One source, four compilers:
//   hipRTC (ROCm, run time)     __HIPCC_RTC__ : HIP builtins are implicit, no system headers at all
//   clang / hipcc (HIP, offline) __HIPCC__     : <hip/hip_runtime.h> gives the builtins
//   NVRTC (CUDA, run time)      otherwise      : CUDA builtins are implicit; no cuda_fp16.h (not
//                                                 reachable without a toolkit include path)
// Halves are carried as raw uint16 bits (rf_u16) everywhere and converted with rf_h2f / rf_f2h, so no
// half type from either vendor's headers is needed.
// RF_WARP (the wave size) comes from the device properties as -DRF_WARP=32|64: 32 on RDNA3 and NVIDIA,
// 64 on CDNA. Kernels never assume 32.
#pragma once

#if defined(__HIPCC_RTC__) || defined(__HIPCC__) || defined(__HIP__)
#define RF_HIP 1
#if !defined(__HIPCC_RTC__)
#include <hip/hip_runtime.h>
#endif
#else
#define RF_CUDA 1
#endif

#ifndef RF_WARP
#if defined(RF_HIP) && defined(__AMDGCN_WAVEFRONT_SIZE)
#define RF_WARP __AMDGCN_WAVEFRONT_SIZE
#else
#define RF_WARP 32
#endif
#endif

// fixed-width integers without <stdint.h> (not available under the run-time compilers)
typedef unsigned char rf_u8;
typedef signed char rf_i8;
typedef unsigned short rf_u16;
typedef short rf_i16;
typedef unsigned int rf_u32;
typedef int rf_i32;
typedef long long rf_i64;
typedef unsigned long long rf_u64;

#define RF_DEV __device__ __forceinline__
#define RF_KERNEL extern "C" __global__

#define RF_INF __int_as_float(0x7f800000)

// dynamic shared memory (size given at launch) as an array of `type`
#define RF_DYN_SHARED(type, name) extern __shared__ type name[]
#define RF_ALIGN(n) __attribute__((aligned(n)))  // after a declarator: `__shared__ float a[N] RF_ALIGN(16);`

// ---- warp shuffles (int or float v) -------------------------------------------------------------------
#if defined(RF_HIP)
#define RF_SHFL(kind, v, arg, width) __shfl##kind(v, arg, width)
#else
#define RF_SHFL(kind, v, arg, width) __shfl##kind##_sync(0xffffffffu, v, arg, width)
#endif

// v of lane (this ^ mask), of lane `src`, of lane (this - delta) (lanes below delta keep their own v)
template <class T>
RF_DEV T rf_shfl_xor(T v, int mask, int width = RF_WARP) { return RF_SHFL(_xor, v, mask, width); }
template <class T>
RF_DEV T rf_shfl(T v, int src, int width = RF_WARP) { return RF_SHFL(, v, src, width); }
template <class T>
RF_DEV T rf_shfl_up(T v, int delta, int width = RF_WARP) { return RF_SHFL(_up, v, delta, width); }

// the lanes whose p is true, as a mask (bit i: lane i); every lane of the warp calls it
RF_DEV rf_u64 rf_ballot(bool p) {
#if defined(RF_HIP)
    return (rf_u64)__ballot(p);
#else
    return (rf_u64)__ballot_sync(0xffffffffu, p);
#endif
}

// 16-byte copies global -> shared that run while the thread goes on (sm_80+: cp.async, in groups: commit
// closes a group, wait<N> returns once at most N groups are still in flight); elsewhere a plain copy
RF_DEV void rf_cp_async16(void* smem, const void* gmem) {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((rf_u32)__cvta_generic_to_shared(smem)),
                 "l"(gmem));
#else
    *(uint4*)smem = *(const uint4*)gmem;
#endif
}

RF_DEV void rf_cp_async_commit() {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;");
#endif
}

template <int N>
RF_DEV void rf_cp_async_wait() {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;" ::"n"(N));
#endif
}

// asks for the line holding p into L2 (sm_80+), nothing else: no register waits for it, so a line another
// kernel still writes is no hazard (writes land in L2); elsewhere nothing
RF_DEV void rf_prefetch_l2(const void* p) {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 800
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
#else
    (void)p;
#endif
}

// Programmatic dependent launch (sm_90+, a launch with the attribute, pdl.py): the kernel may start
// while the one before it in the stream still runs. rf_grid_wait() returns once that one has ended and its
// writes are visible (before anything reads what it wrote, or writes anything it may still read);
// rf_grid_dependents() lets the next such launch start. Both do nothing without the attribute, and on HIP.
RF_DEV void rf_grid_wait() {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

RF_DEV void rf_grid_dependents() {
#if defined(RF_CUDA) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// a load of what another block wrote (after rf_last_block's fence and ticket): from L2, past this SM's L1;
// unlike a volatile access the compiler may batch such loads
RF_DEV float rf_ld_cg(const float* p) {
#if defined(RF_CUDA)
    return __ldcg(p);
#else
    return __hip_atomic_load(const_cast<float*>(p), __ATOMIC_RELAXED, __HIP_MEMORY_SCOPE_AGENT);
#endif
}

// The first statement of every kernel: with programmatic launch (pdl.py) a kernel may start while the one
// before it runs; it waits for that one here, and lets the next launch start (its blocks wait the same way).
#define RF_PDL_BEGIN() \
    do {               \
        rf_grid_wait();        \
        rf_grid_dependents();  \
    } while (0)

// orders shared-memory accesses among the lanes of a warp
RF_DEV void rf_syncwarp() {
#if defined(RF_CUDA)
    __syncwarp();
#else
    __builtin_amdgcn_wave_barrier();  // a wave's LDS accesses complete in order; stop compiler reordering
#endif
}

// reductions over groups of `width` consecutive lanes (width a power of two <= RF_WARP)
RF_DEV float rf_group_sum(float v, int width = RF_WARP) {
    for (int m = width >> 1; m > 0; m >>= 1) v += rf_shfl_xor(v, m, width);
    return v;
}

RF_DEV float rf_group_max(float v, int width = RF_WARP) {
    for (int m = width >> 1; m > 0; m >>= 1) v = fmaxf(v, rf_shfl_xor(v, m, width));
    return v;
}

RF_DEV float rf_warp_sum(float v) { return rf_group_sum(v, RF_WARP); }
RF_DEV float rf_warp_max(float v) { return rf_group_max(v, RF_WARP); }

// ---- matrix instructions: 16x16x16 f16 products with f32 accumulation, one per warp -------------------
// RF_MMA: the device has them (CUDA sm_80+: mma.sync m16n8k16, two per tile; RDNA3 gfx11 wave32: WMMA);
// kernels that use them exist only there. rf_mma_acc is a 16x16 f32 tile spread over the warp, 8 floats a
// lane; element i of a lane sits at (rf_mma_acc_row(i), rf_mma_acc_col(i)), the same for every tile.
// Operands are f16 bits in shared memory: A [16][16] row-major (A[m][k] = a[m * lda + k]); B either n-major
// (B[k][n] = b[n * ldb + k]: K's rows as stored, for Q K^T) or k-major (_kn: B[k][n] = b[k * ldb + n]: V's
// rows, for P V). a, b 4-byte aligned with lda, ldb even (16-byte aligned, multiples of 8 on gfx11).
struct rf_mma_acc {
    float x[8];
};
// the int32 tile of rf_mma_i8 (RF_MMA_I8: where the int8 instructions are), elements where rf_mma_acc's are
struct rf_mma_acci {
    int x[8];
};

#if defined(RF_CUDA) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define RF_MMA 1
// m16n8k16 C fragment, n8 half j = i / 4: c[4j], c[4j+1] at row lane/4, c[4j+2], c[4j+3] at row lane/4 + 8;
// cols 8j + 2 (lane % 4) + {0, 1}
RF_DEV int rf_mma_acc_row(int i) { return (int)(threadIdx.x % 32) / 4 + 8 * ((i >> 1) & 1); }
RF_DEV int rf_mma_acc_col(int i) { return 8 * (i >> 2) + 2 * (int)(threadIdx.x % 4) + (i & 1); }

RF_DEV rf_u32 rf_mma_pack(rf_u16 lo, rf_u16 hi) { return (rf_u32)lo | ((rf_u32)hi << 16); }

// c (the n8 half's 4 floats) += A (a0..a3) B (b0, b1)
RF_DEV void rf_mma_m16n8k16(float* c, const rf_u32* a, rf_u32 b0, rf_u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// A fragment: a0 (row g, k 2t..2t+1), a1 (row g + 8), a2 (row g, k + 8), a3 (row g + 8, k + 8); g = lane/4,
// t = lane%4, each a half pair in one word (low half first)
RF_DEV void rf_mma_load_a(rf_u32* f, const rf_u16* a, int lda) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const rf_u16* p = a + g * lda + 2 * t;
    f[0] = *(const rf_u32*)p;
    f[1] = *(const rf_u32*)(p + 8 * lda);
    f[2] = *(const rf_u32*)(p + 8);
    f[3] = *(const rf_u32*)(p + 8 * lda + 8);
}

// B fragment of n8 half j: b0 (k 2t..2t+1, n 8j + g), b1 (k + 8)
RF_DEV void rf_mma_16x16x16(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int ldb) {
    rf_u32 fa[4];
    rf_mma_load_a(fa, a, lda);
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const rf_u16* p = b + (8 * j + g) * ldb + 2 * t;
        rf_mma_m16n8k16(c.x + 4 * j, fa, *(const rf_u32*)p, *(const rf_u32*)(p + 8));
    }
}

RF_DEV void rf_mma_16x16x16_kn(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int ldb) {
    rf_u32 fa[4];
    rf_mma_load_a(fa, a, lda);
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const rf_u16* p = b + 2 * t * ldb + 8 * j + g;  // B[2t][8j + g]
        const rf_u32 b0 = rf_mma_pack(p[0], p[ldb]), b1 = rf_mma_pack(p[8 * ldb], p[9 * ldb]);
        rf_mma_m16n8k16(c.x + 4 * j, fa, b0, b1);
    }
}

// the 4 lanes holding a row: lane ^ 1, lane ^ 2
RF_DEV float rf_mma_row_max(float v) {
    v = fmaxf(v, rf_shfl_xor(v, 1));
    return fmaxf(v, rf_shfl_xor(v, 2));
}
RF_DEV float rf_mma_row_sum(float v) {
    v += rf_shfl_xor(v, 1);
    return v + rf_shfl_xor(v, 2);
}

// int8 products (mul_mat_q.hip): A [16][KK] and B (n-major: B[k][n] = b[n * ldb + k]) signed bytes in
// shared memory, KK 16 or 32, into a 16x16 int32 tile with rf_mma_acc's layout; a, b 4-byte aligned, lda
// and ldb multiples of 16. m16n8k32 (KK 32) / m16n8k16 (KK 16), two a tile: A a0..a3 (rows g, g + 8; k
// 4t..4t+3, + 16), B b0, b1 (n 8j + g; k 4t..4t+3, + 16), 4 bytes a word.
#define RF_MMA_I8 1

template <int KK>
RF_DEV void rf_mma_i8(rf_mma_acci& c, const rf_i8* a, int lda, const rf_i8* b, int ldb) {
    const int g = (threadIdx.x % 32) / 4, t = threadIdx.x % 4;
    const rf_i8* pa = a + g * lda + 4 * t;
    const rf_u32 a0 = *(const rf_u32*)pa, a1 = *(const rf_u32*)(pa + 8 * lda);
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        const rf_i8* pb = b + (8 * j + g) * ldb + 4 * t;
        int* d = c.x + 4 * j;
        if (KK == 32) {
            const rf_u32 a2 = *(const rf_u32*)(pa + 16), a3 = *(const rf_u32*)(pa + 8 * lda + 16);
            asm volatile("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                         "{%8,%9}, {%0,%1,%2,%3};"
                         : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                         : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(*(const rf_u32*)pb),
                           "r"(*(const rf_u32*)(pb + 16)));
        } else {
            asm volatile("mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5}, {%6}, "
                         "{%0,%1,%2,%3};"
                         : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
                         : "r"(a0), "r"(a1), "r"(*(const rf_u32*)pb));
        }
    }
}

#elif defined(RF_HIP) && RF_WARP == 32 && (defined(__gfx1100__) || defined(__gfx1101__) || \
                                           defined(__gfx1102__) || defined(__gfx1103__) || \
                                           defined(__gfx1150__) || defined(__gfx1151__))
#define RF_MMA 1
typedef _Float16 rf_v16h __attribute__((ext_vector_type(16)));
typedef _Float16 rf_v8h __attribute__((ext_vector_type(8)));
typedef float rf_v8f __attribute__((ext_vector_type(8)));

// WMMA (wave32) D: lane l holds column l % 16, element i at row 2i + l / 16
RF_DEV int rf_mma_acc_row(int i) { return 2 * i + (int)(threadIdx.x % 32) / 16; }
RF_DEV int rf_mma_acc_col(int i) { return (int)(threadIdx.x % 16); }

// A and B operands: lanes l and l + 16 both hold A's row l % 16 (B's column l % 16), 16 halves along k
RF_DEV rf_v16h rf_mma_row16(const rf_u16* p) {  // 16 consecutive halves, 16-byte aligned
    const rf_v8h lo = *(const rf_v8h*)p, hi = *(const rf_v8h*)(p + 8);
    return __builtin_shufflevector(lo, hi, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
}

RF_DEV void rf_mma_wmma(rf_mma_acc& c, rf_v16h a, rf_v16h b) {
    rf_v8f d;
#pragma unroll
    for (int i = 0; i < 8; ++i) d[i] = c.x[i];
    d = __builtin_amdgcn_wmma_f32_16x16x16_f16_w32(a, b, d);
#pragma unroll
    for (int i = 0; i < 8; ++i) c.x[i] = d[i];
}

RF_DEV void rf_mma_16x16x16(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int ldb) {
    const int r = threadIdx.x % 16;
    rf_mma_wmma(c, rf_mma_row16(a + r * lda), rf_mma_row16(b + r * ldb));
}

RF_DEV void rf_mma_16x16x16_kn(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int ldb) {
    const int r = threadIdx.x % 16;
    rf_v16h fb;
#pragma unroll
    for (int k = 0; k < 16; ++k) fb[k] = __builtin_bit_cast(_Float16, b[k * ldb + r]);
    rf_mma_wmma(c, rf_mma_row16(a + r * lda), fb);
}

// the 16 lanes holding a row: lane ^ 1, 2, 4, 8
RF_DEV float rf_mma_row_max(float v) { return rf_group_max(v, 16); }
RF_DEV float rf_mma_row_sum(float v) { return rf_group_sum(v, 16); }

// int8 products (mul_mat_q.hip), as the CUDA branch's: WMMA iu8 (signed), 16 along k a call; lanes l and
// l + 16 hold A's row (B's column) l % 16; a, b 16-byte aligned, lda and ldb multiples of 16
#define RF_MMA_I8 1
typedef int rf_v4i __attribute__((ext_vector_type(4)));
typedef int rf_v8i __attribute__((ext_vector_type(8)));

template <int KK>
RF_DEV void rf_mma_i8(rf_mma_acci& c, const rf_i8* a, int lda, const rf_i8* b, int ldb) {
    const int r = threadIdx.x % 16;
    rf_v8i d;
#pragma unroll
    for (int i = 0; i < 8; ++i) d[i] = c.x[i];
#pragma unroll
    for (int h = 0; h < KK / 16; ++h) {
        const rf_v4i fa = *(const rf_v4i*)(a + r * lda + 16 * h), fb = *(const rf_v4i*)(b + r * ldb + 16 * h);
        d = __builtin_amdgcn_wmma_i32_16x16x16_iu8_w32(true, fa, true, fb, d, false);
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) c.x[i] = d[i];
}
#endif

// what is written on top of the layer above, the same on every compiler (and in tests/unit/simt_emu.h's
// CPU emulation, which supplies the layer itself)
#include "rf_common.h"
