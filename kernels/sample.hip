// sample.hip: SAMPLE, a token per row of logits f32 [n, V] drawn as numpy_ref.sample_logits defines it, bit
// for bit (integer weights and sums, Philox4x32-10), from at most RF_SAMPLE_MAX_K candidates.
//
// Launch: grid (n), block RF_SAMPLE_BLOCK, a row a block. The row streams through once, in tiles of
// RF_SAMPLE_BLOCK * RF_SAMPLE_UNROLL elements: an element enters a shared buffer of RF_SAMPLE_CAP (key,
// index) pairs when its key beats the K-th best so far (ties: the earlier index wins, and tiles come in
// index order); when the next tile might not fit, the buffer is sorted (bitonic, key then lower index) and
// cut to its best K, whose last sets the bar. The last sort orders the candidates. Then, one candidate a
// thread: weights (integers), their inclusive scan (u64), the nucleus and the draw.
// Tunables: RF_SAMPLE_BLOCK (a multiple of the wave, >= RF_SAMPLE_MAX_K), RF_SAMPLE_UNROLL, RF_SAMPLE_CAP (a
// power of two >= one tile + RF_SAMPLE_MAX_K), from HipBackend(tunables=...). Shared memory: 8 * (CAP +
// MAX_K) bytes (34 KB by default).
// Floor: the row read once (n * V * 4 bytes), 32 bytes of params, n * 4 written. Sorts: N(0, 3^2) rows of
// 151936 sort 4096 entries once (top_k 40) or twice (256), then about 2048; an increasing row, whose every
// element beats the bar, cuts every tile.
#include "rf_compat.h"

#ifndef RF_SAMPLE_MAX_K
#define RF_SAMPLE_MAX_K 256  // ir.ops.SAMPLE_MAX_K
#endif
#ifndef RF_SAMPLE_BLOCK
#define RF_SAMPLE_BLOCK 512
#endif
#ifndef RF_SAMPLE_UNROLL
#define RF_SAMPLE_UNROLL 4
#endif
#ifndef RF_SAMPLE_CAP
#define RF_SAMPLE_CAP 4096
#endif
#define RF_SAMPLE_TILE (RF_SAMPLE_BLOCK * RF_SAMPLE_UNROLL)

static_assert(RF_SAMPLE_BLOCK % RF_WARP == 0 && RF_SAMPLE_BLOCK >= RF_SAMPLE_MAX_K, "RF_SAMPLE_BLOCK");
static_assert((RF_SAMPLE_CAP & (RF_SAMPLE_CAP - 1)) == 0, "RF_SAMPLE_CAP: a power of two");
static_assert(RF_SAMPLE_CAP >= RF_SAMPLE_TILE + RF_SAMPLE_MAX_K, "RF_SAMPLE_CAP: a tile beside K kept");

// u32 key ordering f32 values as numbers (-0 as +0; every key of a non-NaN value is above 0x007fffff)
RF_DEV rf_u32 sample_key(float v) {
    rf_u32 b = __float_as_uint(v);
    if (b == 0x80000000u) b = 0u;
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// 2^-y in Q30 (numpy_ref.exp2_q30): Horner on exp(-t ln 2)'s Taylor series, ln(2) / i in Q30, i = 10..1
RF_DEV rf_u64 sample_exp2_q30(float y) {
    if (!(y < 32.0f)) return 0;
    const rf_u32 yfx = (rf_u32)(y * 1048576.0f);  // floor(y * 2^20), exact
    const rf_u64 f = yfx & 0xFFFFFu;
    const rf_u64 a[10] = {74426112ull,  82695680ull,  93032640ull,  106323017ull, 124043520ull,
                          148852224ull, 186065279ull, 248087039ull, 372130559ull, 744261118ull};
    rf_u64 r = 1ull << 30;
#pragma unroll
    for (int i = 0; i < 10; ++i) r = (1ull << 30) - ((((a[i] * f) >> 20) * r) >> 30);
    return r >> (yfx >> 20);
}

// the first word of Philox4x32-10 (numpy_ref.philox4x32_10) of counter (c0, 0, 0, 0) and key (k0, k1)
RF_DEV rf_u32 sample_philox(rf_u32 c0, rf_u32 k0, rf_u32 k1) {
    rf_u32 c1 = 0, c2 = 0, c3 = 0;
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        const rf_u64 p0 = (rf_u64)0xD2511F53u * c0, p1 = (rf_u64)0xCD9E8D57u * c2;
        const rf_u32 n0 = (rf_u32)(p1 >> 32) ^ c1 ^ k0, n2 = (rf_u32)(p0 >> 32) ^ c3 ^ k1;
        c1 = (rf_u32)p1;
        c3 = (rf_u32)p0;
        c0 = n0;
        c2 = n2;
    }
    return c0;
}

// sort buf[0, count) decreasing (padded with 0, below every entry, to a power of two) and keep its best K:
// the new count, also in *s_count; the bar becomes the K-th key once there are K. Every thread calls it,
// with the same count.
RF_DEV int sample_cut(rf_u64* buf, int count, int K, int* s_count, rf_u32* bar) {
    int n = 1;
    while (n < count) n <<= 1;
    for (int i = count + threadIdx.x; i < n; i += RF_SAMPLE_BLOCK) buf[i] = 0;
    __syncthreads();
    for (int size = 2; size <= n; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int t = threadIdx.x; t < (n >> 1); t += RF_SAMPLE_BLOCK) {
                const int lo = 2 * t - (t & (stride - 1)), hi = lo + stride;
                const rf_u64 a = buf[lo], b = buf[hi];
                if ((a < b) == ((lo & size) == 0)) {
                    buf[lo] = b;
                    buf[hi] = a;
                }
            }
            __syncthreads();
        }
    }
    const int kept = count < K ? count : K;
    if (threadIdx.x == 0) {
        *s_count = kept;
        if (count >= K) *bar = (rf_u32)(buf[K - 1] >> 32);
    }
    __syncthreads();
    return kept;
}

// params: seed (low, high), counter, top_k, scale (f32 bits: log2(e) / temperature), top_p (Q24), 0, 0
RF_KERNEL void __launch_bounds__(RF_SAMPLE_BLOCK)
    sample_f32(const float* __restrict__ logits, const int* __restrict__ params, int* __restrict__ out,
               int V) {
    RF_PDL_BEGIN();
    __shared__ rf_u64 buf[RF_SAMPLE_CAP];  // (key << 32) | ~index: larger is better
    __shared__ rf_u64 cum[RF_SAMPLE_MAX_K];
    __shared__ int s_count, s_nan, s_pick;
    __shared__ rf_u32 s_bar;
    const int tid = threadIdx.x, lane = tid % RF_WARP;
    const float* x = logits + (rf_i64)blockIdx.x * V;
    const float scale = __int_as_float(params[4]);
    const bool greedy = !(scale > 0.0f && scale < RF_INF);
    const int top_k = params[3];
    int K = top_k > 0 && top_k < RF_SAMPLE_MAX_K ? top_k : RF_SAMPLE_MAX_K;
    K = greedy ? 1 : (K < V ? K : V);
    if (tid == 0) {
        s_count = 0;
        s_nan = 0x7fffffff;
        s_bar = 0u;
    }
    __syncthreads();
    int count = 0;  // s_count as every thread read it between two barriers
    for (int base = 0; base < V; base += RF_SAMPLE_TILE) {
        if (count > RF_SAMPLE_CAP - RF_SAMPLE_TILE) count = sample_cut(buf, count, K, &s_count, &s_bar);
        const rf_u32 bar = s_bar;
#pragma unroll
        for (int u = 0; u < RF_SAMPLE_UNROLL; ++u) {
            const int i = base + u * RF_SAMPLE_BLOCK + tid;
            rf_u32 key = 0u;  // none: past the row, or NaN
            if (i < V) {
                const float v = x[i];
                if (v != v) atomicMin(&s_nan, i);
                else key = sample_key(v);
            }
            const bool take = key > bar;
            const rf_u64 mask = rf_ballot(take);
            if (mask) {  // a slot for each lane that takes, in lane order
                int slot = 0;
                if (lane == 0) slot = atomicAdd(&s_count, __popcll(mask));
                slot = rf_shfl(slot, 0) + __popcll(mask & (((rf_u64)1 << lane) - 1));
                if (take) buf[slot] = ((rf_u64)key << 32) | (rf_u32)~(rf_u32)i;
            }
        }
        __syncthreads();
        count = s_count;
        __syncthreads();  // read by all before the next tile's slots change it
    }
    const int n_cand = sample_cut(buf, count, K, &s_count, &s_bar);
    if (s_nan != 0x7fffffff) {  // numpy's argmax: the first NaN
        if (tid == 0) out[blockIdx.x] = s_nan;
        return;
    }
    const float x0 = x[~(rf_u32)buf[0]];
    if (greedy || !(fabsf(x0) < RF_INF)) {
        if (tid == 0) out[blockIdx.x] = (int)~(rf_u32)buf[0];
        return;
    }
    rf_u64 w = 0;
    if (tid < n_cand) {
        const float d = x0 - x[~(rf_u32)buf[tid]];
        w = sample_exp2_q30(d * scale);
    }
    if (tid < RF_SAMPLE_MAX_K) cum[tid] = w;
    __syncthreads();
    for (int off = 1; off < RF_SAMPLE_MAX_K; off <<= 1) {  // inclusive scan, exact in any order
        const rf_u64 v = tid < RF_SAMPLE_MAX_K && tid >= off ? cum[tid - off] : 0;
        __syncthreads();
        if (tid < RF_SAMPLE_MAX_K) cum[tid] += v;
        __syncthreads();
    }
    // the nucleus: c_0..c_m, m the first j with cum_j >= ceil(P * total / 2^24) (P * total < 2^62)
    const int p = params[5];
    const rf_u64 P = p < 0 ? 0 : (p > (1 << 24) ? (1 << 24) : p);
    const rf_u64 thr = (P * cum[n_cand - 1] + (1u << 24) - 1) >> 24;
    if (tid < n_cand && cum[tid] >= thr && (tid == 0 || cum[tid - 1] < thr)) s_pick = tid;
    __syncthreads();
    const int m = s_pick;
    const rf_u32 u = sample_philox((rf_u32)params[2] + blockIdx.x, (rf_u32)params[0], (rf_u32)params[1]) >> 8;
    const rf_u64 target = ((rf_u64)u * cum[m]) >> 24;  // < cum[m]
    if (tid <= m && cum[tid] > target && (tid == 0 || cum[tid - 1] <= target))
        out[blockIdx.x] = (int)~(rf_u32)buf[tid];
}
