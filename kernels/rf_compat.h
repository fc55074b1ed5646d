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

// what is written on top of the layer above, the same on every compiler (and in tests/unit/simt_emu.h's
// CPU emulation, which supplies the layer itself)
#include "rf_common.h"
