// simt_emu.h: enough of rf_compat.h to run a kernel on the CPU, one std::thread per GPU thread (tests only).
// Its platform layer only: rf_common.h's helpers (block reductions, f16 conversions, int8 dots, rf_io, ...)
// are the kernels' own, inlined after this header by simt_kernels.emu_source.
//
// __shared__ is a function-static (shared by the threads of the block; blocks run one after another),
// __syncthreads a std::barrier over the block, warp votes and shuffles a barrier over the warp's lanes.
// Shared-memory races a GPU would have are data races here (build with -fsanitize=thread to see them).
#pragma once

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#ifndef RF_WARP
#define RF_WARP 32
#endif

typedef unsigned char rf_u8;
typedef signed char rf_i8;
typedef unsigned short rf_u16;
typedef short rf_i16;
typedef unsigned int rf_u32;
typedef int rf_i32;
typedef long long rf_i64;
typedef unsigned long long rf_u64;

#define RF_DEV inline  // not static: RF_DEV static members of rf_quant.h's weight types
#define RF_KERNEL
#define __device__
#define __launch_bounds__(...)
#define __shared__ static
#define RF_ALIGN(n) __attribute__((aligned(n)))
#define RF_DYN_SHARED(type, name) static type name[65536 / sizeof(type)]  // dynamic shared memory: 64 KB
#define RF_INF std::numeric_limits<float>::infinity()
#define RF_PDL_BEGIN() \
    do {               \
    } while (0)
// programmatic dependent launch: one kernel at a time here, nothing to wait for
static inline void rf_grid_wait() {}
static inline void rf_grid_dependents() {}

struct rf_dim3 {
    unsigned x = 0, y = 0, z = 0;
};
static thread_local rf_dim3 threadIdx, blockIdx;
static rf_dim3 blockDim, gridDim;

namespace emu {
inline std::unique_ptr<std::barrier<>> block_bar;
inline std::vector<std::unique_ptr<std::barrier<>>> warp_bar;
inline std::vector<rf_u64> lanes;  // one word a thread: what votes and shuffles exchange

inline std::barrier<>& warp() { return *warp_bar[threadIdx.x / RF_WARP]; }

// run kernel(args...) on a grid of blocks of `block` threads, one block after another (x fastest)
template <class F>
void launch(rf_dim3 grid, unsigned block, F kernel) {
    blockDim.x = block;
    blockDim.y = blockDim.z = 1;
    gridDim = grid;
    for (unsigned b = 0; b < grid.x * grid.y * grid.z; ++b) {
        block_bar = std::make_unique<std::barrier<>>(block);
        warp_bar.clear();
        for (unsigned w = 0; w < block / RF_WARP; ++w)
            warp_bar.push_back(std::make_unique<std::barrier<>>(RF_WARP));
        lanes.assign(block, 0);
        std::vector<std::thread> threads;
        for (unsigned t = 0; t < block; ++t)
            threads.emplace_back([=] {
                threadIdx.x = t;
                blockIdx.x = b % grid.x;
                blockIdx.y = b / grid.x % grid.y;
                blockIdx.z = b / (grid.x * grid.y);
                kernel();
            });
        for (auto& th : threads) th.join();
    }
}

template <class F>
void launch(unsigned grid, unsigned block, F kernel) {
    launch(rf_dim3{grid, 1, 1}, block, kernel);
}
}  // namespace emu

namespace emu {
// a harness's input: v.size() elements of f into v; false on a short read
template <class T>
bool read(std::FILE* f, std::vector<T>& v) {
    return std::fread(v.data(), sizeof(T), v.size(), f) == v.size();
}
}  // namespace emu

static inline void __syncthreads() { emu::block_bar->arrive_and_wait(); }

static inline rf_u64 rf_ballot(bool p) {
    const unsigned first = threadIdx.x / RF_WARP * RF_WARP;
    emu::lanes[threadIdx.x] = p;
    emu::warp().arrive_and_wait();
    rf_u64 m = 0;
    for (unsigned i = 0; i < RF_WARP; ++i) m |= (rf_u64)(emu::lanes[first + i] != 0) << i;
    emu::warp().arrive_and_wait();
    return m;
}

template <class T>
static inline T rf_shfl(T v, int src, int width = RF_WARP) {
    const unsigned first = threadIdx.x / width * width;
    rf_u64 bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    emu::lanes[threadIdx.x] = bits;
    emu::warp().arrive_and_wait();
    bits = emu::lanes[first + src];
    emu::warp().arrive_and_wait();
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

template <class T>
static inline T rf_shfl_xor(T v, int mask, int width = RF_WARP) {
    const unsigned first = threadIdx.x / width * width;
    return rf_shfl(v, (int)((threadIdx.x - first) ^ mask), width);
}

// lane i gets lane i - delta's value; the first delta lanes of each width keep their own (as __shfl_up_sync)
template <class T>
static inline T rf_shfl_up(T v, int delta, int width = RF_WARP) {
    const int i = (int)(threadIdx.x % width);
    const T other = rf_shfl(v, i >= delta ? i - delta : i, width);
    return i >= delta ? other : v;
}

static inline float rf_group_sum(float v, int width = RF_WARP) {
    for (int m = width >> 1; m > 0; m >>= 1) v += rf_shfl_xor(v, m, width);
    return v;
}

static inline float rf_warp_sum(float v) { return rf_group_sum(v, RF_WARP); }

static inline float rf_group_max(float v, int width = RF_WARP) {
    for (int m = width >> 1; m > 0; m >>= 1) v = std::fmax(v, rf_shfl_xor(v, m, width));
    return v;
}
static inline float rf_warp_max(float v) { return rf_group_max(v, RF_WARP); }

using std::max;
using std::min;

static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }

static inline float rf_ld_cg(const float* p) {
    return std::atomic_ref<float>(*const_cast<float*>(p)).load();
}
static inline int atomicAdd(int* p, int v) { return std::atomic_ref<int>(*p).fetch_add(v); }
static inline int atomicMin(int* p, int v) {
    std::atomic_ref<int> a(*p);
    int old = a.load();
    while (v < old && !a.compare_exchange_weak(old, v)) {
    }
    return old;
}
static inline int __popcll(rf_u64 v) { return std::popcount(v); }
static inline rf_u32 __float_as_uint(float v) { return std::bit_cast<rf_u32>(v); }
static inline float __int_as_float(int v) { return std::bit_cast<float>(v); }
static inline float __uint_as_float(rf_u32 v) { return std::bit_cast<float>(v); }
static inline float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
static inline rf_u32 __byte_perm(rf_u32 a, rf_u32 b, rf_u32 s) {  // CUDA's byte selector over {b, a}
    const rf_u64 v = ((rf_u64)b << 32) | a;
    rf_u32 r = 0;
    for (int i = 0; i < 4; ++i) r |= (rf_u32)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xff) << (8 * i);
    return r;
}
struct alignas(16) float4 {
    float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
struct alignas(16) uint4 {
    rf_u32 x, y, z, w;
};
struct alignas(16) int4 {
    int x, y, z, w;
};
static inline uint4 make_uint4(rf_u32 x, rf_u32 y, rf_u32 z, rf_u32 w) { return uint4{x, y, z, w}; }
struct alignas(8) uint2 {
    rf_u32 x, y;
};
struct alignas(8) float2 {
    float x, y;
};


// a warp barrier that orders the lanes' shared-memory accesses (__syncwarp)
static inline void rf_syncwarp() { emu::warp().arrive_and_wait(); }

static inline void rf_prefetch_l2(const void*) {}

// async copies done at once (the kernels wait for them before reading, as on a GPU)
static inline void rf_cp_async16(void* smem, const void* gmem) { std::memcpy(smem, gmem, 16); }
static inline void rf_cp_async_commit() {}
template <int N>
static inline void rf_cp_async_wait() {}

// ---- rf_compat.h's matrix instructions with the NVIDIA m16n8k16 layout (RF_WARP 32) -------------------
// Each lane computes its own 8 accumulator elements straight from the shared-memory operands (f16 -> f32,
// f32 sums), so a kernel that mixes up rows, columns or the lanes sharing a row gets wrong results here.
#define RF_MMA 1
struct rf_mma_acc {
    float x[8];
};
static inline int rf_mma_acc_row(int i) { return (int)(threadIdx.x % 32) / 4 + 8 * ((i >> 1) & 1); }
static inline int rf_mma_acc_col(int i) { return 8 * (i >> 2) + 2 * (int)(threadIdx.x % 4) + (i & 1); }

namespace emu {
inline float h2f(rf_u16 h) { return (float)std::bit_cast<_Float16>(h); }

// c += A B for B[k][n] = b[n * bn + k * bk]
inline void mma(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int bn, int bk) {
    for (int i = 0; i < 8; ++i) {
        const int m = rf_mma_acc_row(i), n = rf_mma_acc_col(i);
        float s = 0.0f;
        for (int k = 0; k < 16; ++k) s += h2f(a[m * lda + k]) * h2f(b[n * bn + k * bk]);
        c.x[i] += s;
    }
}
}  // namespace emu

static inline void rf_mma_16x16x16(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int ldb) {
    emu::mma(c, a, lda, b, ldb, 1);
}
static inline void rf_mma_16x16x16_kn(rf_mma_acc& c, const rf_u16* a, int lda, const rf_u16* b, int ldb) {
    emu::mma(c, a, lda, b, 1, ldb);
}
static inline float rf_mma_row_max(float v) {
    v = std::fmax(v, rf_shfl_xor(v, 1));
    return std::fmax(v, rf_shfl_xor(v, 2));
}
static inline float rf_mma_row_sum(float v) {
    v += rf_shfl_xor(v, 1);
    return v + rf_shfl_xor(v, 2);
}

// int8 products: each lane's 8 int32 elements straight from the signed bytes
#define RF_MMA_I8 1
struct rf_mma_acci {
    int x[8];
};
template <int KK>
static inline void rf_mma_i8(rf_mma_acci& c, const rf_i8* a, int lda, const rf_i8* b, int ldb) {
    for (int i = 0; i < 8; ++i) {
        const int m = rf_mma_acc_row(i), n = rf_mma_acc_col(i);
        int s = 0;
        for (int k = 0; k < KK; ++k) s += (int)a[m * lda + k] * (int)b[n * ldb + k];
        c.x[i] += s;
    }
}
