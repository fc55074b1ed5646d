// mul_mat_vec_xr.hip: MUL_MAT and MUL_MAT_ADD for up to 4 tokens on int8 x (quantize_x8's rows), Q4_0 and
// Q8_0 (mul_mat_vec_xr_<type>): y[m, n] = sum_k w[n, k] * x[m, k] (+ b[m * b_stride + n] where b is not
// null: rf_plus_b); MUL_MAT_SWIGLU with RF_MMVR_GLU; K a multiple of 256, rows packed and 16-byte
// aligned. The int8 default where it applies (kernel_choice.py).
// The weights are read as the plain read floor reads them: coalesced 16-byte loads into registers, a whole
// step in flight, no async copies. A block owns row groups of 8 rows (dealt round the grid, which stays
// resident); a group is read in steps, dealt round the block's warps (K split W ways): per step
// H = RF_WARP / 8 consecutive groups of 8 blocks (Q4_0: 144 bytes, 9 chunks of 16; Q8_0: 272, 17) of each
// of the 8 rows. A warp stores its step to its staging area in shared memory, issues its next step's loads
// (across row groups), and computes: lane b + 8 h takes block b of group h in all 8 rows, so its x block
// (read through L1, coalesced over the warp) serves 8 rows; a group's base in staging is 32 h bytes off a
// 128-byte line (Q4_0: 160-byte groups), so the 32 lanes' word loads of a row hit 32 different banks. A row
// group ends with a transposed warp reduction of the 8 rows, then (W > 1) one over the warps through shared
// memory. Every warp starts at once, so the first loads come before any other index arithmetic.
// RF_MMVR_Q = Q (K = 256 H Q, one warp a block): a row is read as Q virtual rows of one step each (its
// quarters for K = 4096), so a row group is 8 / Q whole rows, contiguous bytes, and each round of the grid's
// loads reads one contiguous span of the weight; x's Q blocks a lane stay in registers, loaded before the
// first weights; the Q virtual rows of a row are summed in registers before the warp reduction.
// RF_MMVR_PDL (programmatic dependent launch, sm_90+, XPF 0): the kernel starts while the one before it
// ends, asks for its first item before waiting for it and reads x after.
// Launch: grid (min(resident blocks, ceil(N / 8)), M) (Q: ceil(Q N / 8) row groups spread evenly over the
// fewest rounds of resident blocks), RF_MMVR_WARPS * RF_WARP threads; dynamic shared memory: per warp
// 8 rows x H groups x (chunks a group + 1) x 16 bytes, and 2 x W x 8 floats.
// Tunables (-D; kernel_choice.py XR_DEFAULTS): RF_MMVR_WARPS (4), RF_MMVR_MINB (blocks per SM for the
// register budget), RF_MMVR_XPF (1: x prefetched with the weights), RF_MMVR_Q (whole rows, above; set by
// the geometry), RF_MMVR_XDEP, RF_MMVR_PDL, RF_MMVR_PDLT (below), RF_MMVR_GLU (MUL_MAT_SWIGLU), RF_MMV_HI16
// and RF_MMVB_CHAINS (rf_block_dot.h); host-side: blocks per SM (RF_MMVR_BPS), the largest Q
// (RF_MMVR_QMAX; 0: no whole rows), Q row groups spread evenly (RF_MMVR_EVEN 1) or over every resident
// block (0).
// Floor: the weights once; x (K * 1.25) through L1 per block and row group (L2-resident); y and b once.
#include "rf_compat.h"
#include "rf_block_dot.h"

#ifndef RF_MMVR_WARPS
#define RF_MMVR_WARPS 4
#endif
#ifndef RF_MMVR_MINB
#define RF_MMVR_MINB 4
#endif
#ifndef RF_MMVR_XPF
#define RF_MMVR_XPF 0  // 1: x of the next item loaded with its weights (10 registers more)
#endif
#ifndef RF_MMVR_Q
#define RF_MMVR_Q 0  // Q > 0 (one warp a block, XPF 0): K = 256 H Q; a row group: 8 / Q whole rows (above)
#endif
#ifndef RF_MMVR_XDEP
// with Q (CUDA): 1 ties x's scales to each item's staged weights through an empty asm, so that work on them
// is not hoisted above the first item's staging (which would then wait for x as well as for the weights)
#define RF_MMVR_XDEP 0
#endif
#ifndef RF_MMVR_PDL
// 1: launched with programmatic dependent launch (pdl.py; XPF 0): the first item's weights are asked for
// before waiting for the kernel before (rf_grid_wait), x read after; the next launch may start once every
// block has started (PDLT 1) or after the wait (PDLT 0)
#define RF_MMVR_PDL 0
#endif
#ifndef RF_MMVR_PDLT
#define RF_MMVR_PDLT 1  // with PDL: 1 lets the next launch start at once, 0 after the wait
#endif
#ifndef RF_MMVR_GLU
// 1: MUL_MAT_SWIGLU's epilogue: rows 2i and 2i + 1 are gate_i and up_i (a row group holds whole pairs: 8
// or 8 / Q rows), y[m, i] = silu(row 2i . x) * (row 2i + 1 . x), y_stride N / 2, no b
#define RF_MMVR_GLU 0
#endif
#define MMVR_THREADS (RF_MMVR_WARPS * RF_WARP)
#define MMVR_H (RF_WARP / 8)           // groups of a row per step

template <class T>
__device__ void mmvr(const rf_u8* __restrict__ w, rf_i64 row_bytes, const rf_u8* __restrict__ xq,
                     rf_i64 x_stride, float* __restrict__ y, rf_i64 y_stride, int N, int K,
                     const float* b_add, rf_i64 b_stride) {  // b_add: MUL_MAT_ADD's b (b: a lane's block)
    constexpr int H = MMVR_H, W = RF_MMVR_WARPS;
    constexpr int CG = T::BYTES / 2;  // chunks per group of 8 blocks (9, 17)
    constexpr int CR = H * CG;        // chunks of a row per step
    constexpr int GP = CG + 1, RP = H * GP;  // staging: chunks a group (one of padding), a row
    constexpr int LOADS = CG;                // 8 * CR / RF_WARP: chunks per lane and step
    // Q > 0: row r's Q parts of H groups (quarters for K = 4096 on 32-wide warps) are the virtual rows
    // Q r ... Q r + Q - 1, of one step each: a row group is RR = 8 / Q whole rows, contiguous bytes
    constexpr int Q = RF_MMVR_Q, RR = Q ? 8 / Q : 8, SPAN = 32 / RR;  // a row's sum ends in lanes of SPAN
    static_assert(Q == 0 || (W == 1 && 8 % Q == 0 && !RF_MMVR_XPF), "RF_MMVR_Q: one warp a block, no XPF");
    static_assert(!RF_MMVR_PDL || !RF_MMVR_XPF, "RF_MMVR_PDL: x must not come with the first weights");
    RF_DYN_SHARED(int, smem);
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const int b = lane & 7, h = lane >> 3;
    const int n_rows = N;  // real rows
    if (Q) {  // the virtual rows (x keeps the real K)
        row_bytes = 16 * CR;
        N *= Q;
    }
    const int G = Q ? H : K / 256, steps = (G + H - 1) / H, groups = (N + 7) / 8;
    xq += blockIdx.y * x_stride;
    y += blockIdx.y * y_stride;
    rf_u8* stage = (rf_u8*)smem + warp * (8 * RP * 16);
    float* red = (float*)((rf_u8*)smem + W * (8 * RP * 16));
    // this lane's chunks of a step: chunk c = j * RF_WARP + lane is row c / CR's chunk m = c % CR, of the
    // step's group m / CG; byte offsets from the row group's start (16 c + (c / CR) (row_bytes - 16 CR)), and
    // in staging (dst[], after the first loads: every warp of the grid starts at once, and the first loads
    // wait on off[] alone)
    int off[LOADS], dst[LOADS];
    const int skip = (int)row_bytes - 16 * CR;
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
        const unsigned c = j * RF_WARP + lane;
        off[j] = 16 * c + c / CR * skip;
    }
    // step t of row group g into v; chunks past the row's last group or of rows past N are not loaded but set
    // to zero (their lanes compute nothing, their rows are not written; zero rather than what v held, and v
    // not zeroed ahead of the first loads: Q8_0 4096x11008 79% of copy bandwidth against 73%, the rest equal)
    auto load_item = [&](uint4 (&v)[LOADS], int g, int t) {
        if (g < groups) {
            const rf_u8* p = w + (rf_i64)g * 8 * row_bytes + (rf_i64)t * (16 * CR);
            const int nr = N - g * 8;  // rows of the group (< 8 in the last one)
            if (nr >= 8 && (t + 1) * H <= G) {  // a whole step (all but tails): no per-chunk test
#pragma unroll
                for (int j = 0; j < LOADS; ++j) v[j] = *(const uint4*)(p + off[j]);
            } else {
#pragma unroll
                for (int j = 0; j < LOADS; ++j) {
                    const unsigned c = j * RF_WARP + lane;
                    if (t * H + c % CR / CG < G && c / CR < nr) v[j] = *(const uint4*)(p + off[j]);
                    else v[j] = make_uint4(0u, 0u, 0u, 0u);
                }
            }
        }
    };
    // a block takes row groups g = blockIdx.x, + gridDim.x, ...; its warp w the steps w, w + W, ... of each
    int gl = blockIdx.x, tl = warp;  // the next item (row group, step) this warp loads
    uint4 v[LOADS];  // not zeroed here: whole steps load every chunk, tails zero what they skip
#if RF_MMVR_XPF
    int4 xa_n = {}, xb_n = {};  // x of the next item, loaded with its weights
    float2 xd_n = {};
#endif
    auto load = [&]() {
        load_item(v, gl, tl);
#if RF_MMVR_XPF
        const int blk = 8 * (tl * H + h) + b;
        if (gl < groups && blk < K / 32) {
            xa_n = *(const int4*)(xq + 32 * blk);
            xb_n = *(const int4*)(xq + 32 * blk + 16);
            xd_n = ((const float2*)(xq + K))[blk];
        }
#endif
        if ((tl += W) >= steps) tl = warp, gl += gridDim.x;
    };
    const int a = T::BYTES * b;                          // this lane's block in a group
    const rf_u8* rd = stage + 16 * (h * GP) + (a & ~3);  // ... its first word in row 0's staging
    const int sh = 16 + 8 * (a & 2);                     // d in the low (16) or high (32) half
    float acc[8] = {};
#if RF_MMVR_PDL
    // launched early: the first weights (no kernel writes them) are asked for before the wait; x (which the
    // kernel before may write) after it
    if (warp < steps) load();
    if (RF_MMVR_PDLT) rf_grid_dependents();
    rf_grid_wait();
    if (!RF_MMVR_PDLT) rf_grid_dependents();
#endif
#if RF_MMVR_Q
    // x of part i (every row group's virtual rows r with r % Q == i), loaded before the first weights: the
    // first item's arithmetic waits for both (loaded later, x costs a round trip that delays every later
    // item), and work on x hoisted out of the loop would hold the first staging until x is in (XDEP)
    int4 xqa[Q], xqb[Q];
    float2 xqd[Q];
#pragma unroll
    for (int i = 0; i < Q; ++i) {
        const int xk = 8 * (i * H + h) + b;
        xqa[i] = *(const int4*)(xq + 32 * xk);
        xqb[i] = *(const int4*)(xq + 32 * xk + 16);
        xqd[i] = ((const float2*)(xq + K))[xk];
    }
#endif
#if !RF_MMVR_PDL
    if (warp < steps) load();
#endif
#pragma unroll
    for (int j = 0; j < LOADS; ++j) {
        const unsigned c = j * RF_WARP + lane, m = c % CR;
        dst[j] = 16 * (c / CR * RP + m / CG * GP + m % CG);
    }
    int parity = 0;
    for (int g = blockIdx.x; g < groups; g += gridDim.x) {  // block-uniform
        for (int t = warp; t < steps; t += W) {              // warp-uniform
            const int blk = 8 * (t * H + h) + b;  // this lane's block of x (of every row)
#pragma unroll
            for (int j = 0; j < LOADS; ++j) *(uint4*)(stage + dst[j]) = v[j];
            rf_syncwarp();
#if RF_MMVR_XPF
            const int4 xa = xa_n, xb = xb_n;
            const float2 xd = xd_n;
#endif
            load();  // the next item's loads run during this item's arithmetic
            if (blk < K / 32) {
#if !RF_MMVR_XPF && !RF_MMVR_Q
                const int4 xa = *(const int4*)(xq + 32 * blk);
                const int4 xb = *(const int4*)(xq + 32 * blk + 16);
                const float2 xd = ((const float2*)(xq + K))[blk];
#endif
#pragma unroll
                for (int r = 0; r < 8; ++r) {
                    const rf_u32* wp = (const rf_u32*)(rd + r * (RP * 16));
                    rf_u32 wd[T::WORDS];
#pragma unroll
                    for (int k = 0; k < T::WORDS; ++k) wd[k] = wp[k];
#if RF_MMVR_Q
                    const int4 xa = xqa[r % Q], xb = xqb[r % Q];
                    float2 xd = xqd[r % Q];
#if RF_MMVR_XDEP && defined(RF_CUDA)
                    asm("" : "+f"(xd.x), "+f"(xd.y) : "r"(wd[0]));  // see RF_MMVR_XDEP
#endif
#endif
                    acc[r] += T::dot(wd, sh, xa, xb, xd);
                }
            }
            rf_syncwarp();  // every lane has read the staging before the next item's stores
        }
        // the row group is done: its RR rows summed over the warp (lane SPAN i: row i; 8 rows: lane 4 i),
        // then over the warps
        if constexpr (Q > 1) {  // a real row's virtual rows first (in registers)
#pragma unroll
            for (int r = 0; r < RR; ++r) {
                float s = acc[r * Q];
#pragma unroll
                for (int i = 1; i < Q; ++i) s += acc[r * Q + i];
                acc[r] = s;
            }
        }
#pragma unroll
        for (int m = RF_WARP / 2; m >= 32; m /= 2) {
#pragma unroll
            for (int r = 0; r < RR; ++r) acc[r] += rf_shfl_xor(acc[r], m);
        }
        // lanes that differ in bit SPAN s swap halves of their s-row sets (8 rows: bits 4, 3, 2)
#pragma unroll
        for (int s = RR / 2; s >= 1; s /= 2) {
            const bool up = lane & (SPAN * s);
#pragma unroll
            for (int r = 0; r < s; ++r) {
                const float keep = up ? acc[r + s] : acc[r], give = up ? acc[r] : acc[r + s];
                acc[r] = keep + rf_shfl_xor(give, SPAN * s);
            }
        }
#pragma unroll
        for (int m = SPAN / 2; m >= 1; m /= 2) acc[0] += rf_shfl_xor(acc[0], m);
        if constexpr (W == 1) {  // lane SPAN i holds row i's sum
            const int row = g * RR + (lane & 31) / SPAN;
#if RF_MMVR_GLU
            const float up = rf_shfl_xor(acc[0], SPAN);  // row i + 1's sum, to the lane of even row i
            if (lane % (2 * SPAN) == 0 && lane < 32 && row < n_rows) y[row / 2] = rf_silu(acc[0]) * up;
#else
            if (lane % SPAN == 0 && lane < 32 && row < n_rows)
                y[row] = rf_plus_b(acc[0], b_add, b_stride, blockIdx.y, row);
#endif
        } else {
            // red: [2][W][8] partial sums by group parity (a barrier a group keeps readers and writers apart)
            if ((lane & 3) == 0 && lane < 32) red[(parity * W + warp) * 8 + (lane >> 2)] = acc[0];
            __syncthreads();
#if RF_MMVR_GLU
            if (warp == 0) {  // every lane of the warp in the shuffle; lanes 2i < 8 write pair i
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < W; ++k) s += red[(parity * W + k) * 8 + (lane & 7)];
                const float up = rf_shfl_xor(s, 1);
                if (lane < 8 && lane % 2 == 0 && g * 8 + lane < N) y[(g * 8 + lane) / 2] = rf_silu(s) * up;
            }
#else
            if (warp == 0 && lane < 8 && g * 8 + lane < N) {
                float s = 0.0f;
#pragma unroll
                for (int k = 0; k < W; ++k) s += red[(parity * W + k) * 8 + lane];
                y[g * 8 + lane] = rf_plus_b(s, b_add, b_stride, blockIdx.y, g * 8 + lane);
            }
#endif
            parity ^= 1;
        }
#pragma unroll
        for (int r = 0; r < 8; ++r) acc[r] = 0.0f;
    }
}

#define RF_MMVR_ENTRY(name, T)                                                                         \
    RF_KERNEL void __launch_bounds__(MMVR_THREADS, RF_MMVR_MINB)                                       \
        mul_mat_vec_xr_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, rf_i64 xq_stride,     \
                              float* y, rf_i64 y_stride, int N, int K, const float* b, rf_i64 b_stride) { \
        mmvr<T>(w, row_bytes, xq, xq_stride, y, y_stride, N, K, b, b_stride);                          \
    }

RF_MMVR_ENTRY(q4_0, MB_Q4_0)
RF_MMVR_ENTRY(q8_0, MB_Q8_0)
