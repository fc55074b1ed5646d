// argmax.hip: ARGMAX over the last dim -> i32; ties go to the first index and NaN ranks above every
// number (the first NaN's index), as numpy's argmax.
//
// Launch: grid (n_blocks, rows), block 256 (fewer for short rows). A row is split into n_blocks chunks (a
// vocabulary of 150k read by one block is bound by one SM's loads in flight: ~100 us on an H100); each
// thread scans a strided slice of its block's chunk, four loads at a time, keeping (value, index); a
// warp-shuffle and shared-memory reduction gives the chunk's; with n_blocks > 1 each block writes its
// (value, index) to part_v/part_i [rows, n_blocks] and the last of a row's blocks to finish (a ticket from
// tickets [rows], zero before the first launch and left zero) merges them. The merge is a total order, so
// the result does not depend on which block finishes last.
// Tunables: block size, n_blocks (launch_rows.ARGMAX).
// Floor: the rows read once (rows * n * 4 bytes).
#include "rf_compat.h"
#include "rf_split.h"

#define AM_NONE 0x7fffffff  // the index of "nothing seen yet"

// NaN ranks above every number (numpy's argmax returns the first NaN's index); ties to the lower index
RF_DEV void am_merge(float& v, int& i, float v2, int i2) {
    const bool nan1 = v != v, nan2 = v2 != v2;
    if (nan1 ? (nan2 && i2 < i) : (nan2 || v2 > v || (v2 == v && i2 < i))) {
        v = v2;
        i = i2;
    }
}

// the block's (v, i) merged into thread 0's; sv, si: shared [32]
RF_DEV void am_block(float& v, int& i, float* sv, int* si) {
    for (int m = RF_WARP / 2; m > 0; m >>= 1) am_merge(v, i, rf_shfl_xor(v, m), rf_shfl_xor(i, m));
    const int lane = threadIdx.x % RF_WARP, warp = threadIdx.x / RF_WARP;
    if (lane == 0) {
        sv[warp] = v;
        si[warp] = i;
    }
    __syncthreads();
    if (warp == 0) {
        const bool ok = lane < (int)(blockDim.x / RF_WARP);
        v = ok ? sv[lane] : -RF_INF;
        i = ok ? si[lane] : AM_NONE;
        for (int m = RF_WARP / 2; m > 0; m >>= 1) am_merge(v, i, rf_shfl_xor(v, m), rf_shfl_xor(i, m));
    }
    __syncthreads();
}

template <typename T>
__device__ void argmax(const T* __restrict__ a, int* __restrict__ out, int n, float* part_v, int* part_i,
                       int* __restrict__ tickets) {
    RF_PDL_BEGIN();
    __shared__ float sv[32];
    __shared__ int si[32];
    const int row = blockIdx.y, nb = gridDim.x;
    const rf_i64 base = (rf_i64)row * n;
    const int chunk = (n + nb - 1) / nb, begin = blockIdx.x * chunk, end = min(n, begin + chunk);
    float v = -RF_INF;
    int idx = AM_NONE;
    const int bd = blockDim.x;
    int i = begin + threadIdx.x;
    for (; i + 3 * bd < end; i += 4 * bd) {  // four loads in flight before the compares wait on them
        const float x0 = rf_io<T>::load(a, base + i), x1 = rf_io<T>::load(a, base + i + bd);
        const float x2 = rf_io<T>::load(a, base + i + 2 * bd), x3 = rf_io<T>::load(a, base + i + 3 * bd);
        am_merge(v, idx, x0, i);
        am_merge(v, idx, x1, i + bd);
        am_merge(v, idx, x2, i + 2 * bd);
        am_merge(v, idx, x3, i + 3 * bd);
    }
    for (; i < end; i += bd) am_merge(v, idx, rf_io<T>::load(a, base + i), i);
    am_block(v, idx, sv, si);
    if (nb == 1) {
        if (threadIdx.x == 0) out[row] = idx == AM_NONE ? 0 : idx;
        return;
    }
    if (threadIdx.x == 0) {
        part_v[(rf_i64)row * nb + blockIdx.x] = v;
        part_i[(rf_i64)row * nb + blockIdx.x] = idx;
    }
    if (!rf_last_block(tickets + row, nb)) return;
    const volatile float* pv = part_v + (rf_i64)row * nb;  // written by other blocks: past this SM's L1
    const volatile int* pi = part_i + (rf_i64)row * nb;
    v = -RF_INF;
    idx = AM_NONE;
    for (int j = threadIdx.x; j < nb; j += blockDim.x) am_merge(v, idx, pv[j], pi[j]);
    am_block(v, idx, sv, si);
    if (threadIdx.x == 0) out[row] = idx == AM_NONE ? 0 : idx;
}

RF_KERNEL void argmax_f32(const float* a, int* out, int n, float* part_v, int* part_i, int* tickets) {
    argmax<float>(a, out, n, part_v, part_i, tickets);
}
RF_KERNEL void argmax_f16(const rf_u16* a, int* out, int n, float* part_v, int* part_i, int* tickets) {
    argmax<rf_u16>(a, out, n, part_v, part_i, tickets);
}
