// attention_mma.hip: FLASH_ATTN_EXT for prompts on matrix instructions (rf_compat.h's rf_mma_*: mma.sync on
// NVIDIA sm_80+, WMMA on RDNA3), f16 KV caches. Computes what attention.hip's flash_attn does, with q and
// the softmax weights P rounded to f16 for the products (f32 accumulation, as llama.cpp's).
// q [T, H, D] f32 (ROPE'd on the way in when rope_dims > 0, scaled, rounded to f16); k, v [C, Hkv, D] f16
// bits read through row_stride / head_stride (the KV cache); query t sees cache rows 0..pos[t] (positions
// in any order); head h reads kv head h / (H / Hkv). Out [T, H, D] f32.
//
// Launch: grid (ceil(T * G / MA_BQ), Hkv), block MA_WARPS * RF_WARP. A block's MA_BQ rows are (token, head)
// pairs of one KV group (as flash_attn's), 16 a warp, so the G heads sharing a KV head read each K/V tile
// once. It walks KV tiles of MA_BKV rows up to its largest position (K and V copied to shared memory as
// they are); each warp computes S = Q K^T (16 x MA_BKV, f32 accumulators), masks the columns past its rows'
// positions, keeps each row's running max m and sum l (online softmax), writes P = e^(S - m) as f16 and
// adds P V to its output tiles (16 x D, f32 in registers). A warp whose rows all end before a tile skips it.
// Tunables: RF_HEAD_DIM (compile-time D: a multiple of 16, at most 128), RF_MMA_BKV (KV rows a tile: 64 up
// to D = 64, else 32, so static shared memory stays under 48 KB).
// Floor: K and V rows 0..max(pos) read once per KV head and query tile (2 bytes an element), q read, out
// written.
#include "rf_compat.h"
#include "rf_rope.h"

#ifndef RF_HEAD_DIM
#define RF_HEAD_DIM 128
#endif
#define MA_D RF_HEAD_DIM
#define MA_WARPS 4
#define MA_THREADS (MA_WARPS * RF_WARP)
#define MA_BQ (16 * MA_WARPS)
#ifndef RF_MMA_BKV
#define RF_MMA_BKV (MA_D <= 64 ? 64 : 32)
#endif
#define MA_BKV RF_MMA_BKV
#define MA_NT (MA_D / 16)   // output tiles a warp
#define MA_ST (MA_BKV / 16)  // score tiles a warp and KV tile
// q, K, V rows padded by 8 halves (16 bytes): 16-byte aligned rows, fragment loads free of bank conflicts
#define MA_QP (MA_D + 8)
#define MA_PP (MA_BKV + 8)

// the kernel exists where the instructions do (RF_MMA) and for head dims the launcher sends it
#if defined(RF_MMA) && MA_D % 16 == 0 && MA_D <= 128 && MA_BKV % 16 == 0

// v[i] <- the max (or sum) of row rf_mma_acc_row(i) over the elements of it this lane holds (4 on NVIDIA,
// 1 on RDNA3), then over the lanes holding it. Which elements share a row folds at compile time.
RF_DEV void ma_row_reduce(float* v, bool is_max) {
    float r[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        int first = i;  // the row's first element in this lane
#pragma unroll
        for (int i2 = 7; i2 >= 0; --i2)
            if (i2 < i && rf_mma_acc_row(i2) == rf_mma_acc_row(i)) first = i2;
        if (first == i) {
            float a = v[i];
#pragma unroll
            for (int i2 = i + 1; i2 < 8; ++i2)
                if (rf_mma_acc_row(i2) == rf_mma_acc_row(i)) a = is_max ? fmaxf(a, v[i2]) : a + v[i2];
            r[i] = is_max ? rf_mma_row_max(a) : rf_mma_row_sum(a);
        } else {
            r[i] = r[first];
        }
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) v[i] = r[i];
}

static_assert(2 * (MA_BQ + 2 * MA_BKV) * MA_QP + 2 * MA_BQ * MA_PP + 4 * MA_BQ <= 48 * 1024,
              "attention_mma.hip: static shared memory over 48 KB (RF_MMA_BKV)");

RF_KERNEL void __launch_bounds__(MA_THREADS)
    flash_attn_mma_f16(const float* __restrict__ q, const rf_u16* __restrict__ k,
                       const rf_u16* __restrict__ v, const int* __restrict__ pos, float* __restrict__ out,
                       int T, int H, int Hkv, rf_i64 row_stride, rf_i64 head_stride, int C, float scale,
                       int rope_dims, int rope_neox, float rope_base, float rope_freq_scale) {
    RF_PDL_BEGIN();
    __shared__ rf_u16 qs[MA_BQ][MA_QP] RF_ALIGN(16);  // f16 bits: q scaled (and ROPE'd)
    __shared__ rf_u16 ks[MA_BKV][MA_QP] RF_ALIGN(16);
    __shared__ rf_u16 vs[MA_BKV][MA_QP] RF_ALIGN(16);
    __shared__ rf_u16 ps[MA_WARPS][16][MA_PP] RF_ALIGN(16);  // each warp's P
    __shared__ int rpos[MA_BQ];                               // a row's position, -1 past the last row

    const int G = H / Hkv, hk = blockIdx.y;
    const int row0 = blockIdx.x * MA_BQ, n_rows = T * G;
    const int tid = threadIdx.x, warp = tid / RF_WARP, w0 = 16 * warp;

    for (int i = tid; i < MA_BQ; i += MA_THREADS) rpos[i] = row0 + i < n_rows ? pos[(row0 + i) / G] : -1;
    const double rope_lb = rope_dims ? log2((double)rope_base) : 0.0;
    for (int e = tid; e < MA_BQ * MA_D; e += MA_THREADS) {
        const int rr = e / MA_D, d = e % MA_D, gr = row0 + rr;
        float val = 0.0f;
        if (gr < n_rows) {
            const float* qh = q + ((rf_i64)(gr / G) * H + hk * G + gr % G) * MA_D;
            // rope_dims > 0: q ROPE'd at its position on the way in (rf_rope.h, as ROPE computes it)
            val = rope_dims ? rf_rope_elem<float>(qh, d, pos[gr / G], rope_dims, rope_neox, rope_lb,
                                                  rope_freq_scale)
                            : qh[d];
            val *= scale;
        }
        qs[rr][d] = rf_f2h(val);
    }
    __syncthreads();
    int maxpos = -1, wpos = -1;  // the block's and this warp's largest position
    for (int i = 0; i < MA_BQ; ++i) maxpos = max(maxpos, rpos[i]);
    for (int i = 0; i < 16; ++i) wpos = max(wpos, rpos[w0 + i]);
    const int kv_end = min(maxpos + 1, C);
    const bool vec = (((rf_u64)k | (rf_u64)v) & 15) == 0 && row_stride % 8 == 0 && head_stride % 8 == 0;

    // per accumulator element i (the same row in every tile): its row's position, running max and sum
    int my_pos[8];
    float m[8], l[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
        my_pos[i] = rpos[w0 + rf_mma_acc_row(i)];
        m[i] = -RF_INF;
        l[i] = 0.0f;
    }
    rf_mma_acc o[MA_NT];
#pragma unroll
    for (int t = 0; t < MA_NT; ++t)
#pragma unroll
        for (int i = 0; i < 8; ++i) o[t].x[i] = 0.0f;

    for (int kv0 = 0; kv0 < kv_end; kv0 += MA_BKV) {
        // the K, V tile; rows past kv_end zero (P is 0 there, but 0 x a NaN in an unwritten row is NaN)
        if (vec) {
            for (int e = tid; e < MA_BKV * MA_D / 8; e += MA_THREADS) {
                const int c = e / (MA_D / 8), d = e % (MA_D / 8) * 8, kv = kv0 + c;
                uint4 kk, vv;
                kk.x = kk.y = kk.z = kk.w = 0u;
                vv = kk;
                if (kv < kv_end) {
                    const rf_i64 off = (rf_i64)kv * row_stride + (rf_i64)hk * head_stride + d;
                    kk = *(const uint4*)(k + off);
                    vv = *(const uint4*)(v + off);
                }
                *(uint4*)&ks[c][d] = kk;
                *(uint4*)&vs[c][d] = vv;
            }
        } else {
            for (int e = tid; e < MA_BKV * MA_D; e += MA_THREADS) {
                const int c = e / MA_D, d = e % MA_D, kv = kv0 + c;
                rf_u16 kk = 0, vv = 0;
                if (kv < kv_end) {
                    const rf_i64 off = (rf_i64)kv * row_stride + (rf_i64)hk * head_stride + d;
                    kk = k[off];
                    vv = v[off];
                }
                ks[c][d] = kk;
                vs[c][d] = vv;
            }
        }
        __syncthreads();

        if (kv0 <= wpos) {  // the same for the whole warp
            rf_mma_acc s[MA_ST];
#pragma unroll
            for (int j = 0; j < MA_ST; ++j) {
#pragma unroll
                for (int i = 0; i < 8; ++i) s[j].x[i] = 0.0f;
#pragma unroll
                for (int kk = 0; kk < MA_NT; ++kk)
                    rf_mma_16x16x16(s[j], &qs[w0][16 * kk], MA_QP, &ks[16 * j][16 * kk], MA_QP);
            }
            float mx[8], corr[8], sum[8];
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                mx[i] = -RF_INF;
#pragma unroll
                for (int j = 0; j < MA_ST; ++j) {
                    const int c = kv0 + 16 * j + rf_mma_acc_col(i);
                    if (c > my_pos[i] || c >= kv_end) s[j].x[i] = -RF_INF;
                    mx[i] = fmaxf(mx[i], s[j].x[i]);
                }
            }
            ma_row_reduce(mx, true);
#pragma unroll
            for (int i = 0; i < 8; ++i) {
                const float m_new = fmaxf(m[i], mx[i]);
                const bool none = m_new == -RF_INF;  // nothing visible to this row yet
                corr[i] = none ? 1.0f : expf(m[i] - m_new);
                sum[i] = 0.0f;
#pragma unroll
                for (int j = 0; j < MA_ST; ++j) {
                    const rf_u16 p = rf_f2h(none ? 0.0f : expf(s[j].x[i] - m_new));
                    ps[warp][rf_mma_acc_row(i)][16 * j + rf_mma_acc_col(i)] = p;
                    sum[i] += rf_h2f(p);  // the weights P V uses, so the output is their average
                }
                m[i] = m_new;
            }
            ma_row_reduce(sum, false);
#pragma unroll
            for (int i = 0; i < 8; ++i) l[i] = l[i] * corr[i] + sum[i];
            rf_syncwarp();  // the warp's P written before its lanes read it
#pragma unroll
            for (int t = 0; t < MA_NT; ++t) {
#pragma unroll
                for (int i = 0; i < 8; ++i) o[t].x[i] *= corr[i];
#pragma unroll
                for (int kk = 0; kk < MA_ST; ++kk)
                    rf_mma_16x16x16_kn(o[t], &ps[warp][0][16 * kk], MA_PP, &vs[16 * kk][16 * t], MA_QP);
            }
        }
        __syncthreads();  // K, V and P read before the next tile overwrites them
    }

#pragma unroll
    for (int i = 0; i < 8; ++i) {
        const int gr = row0 + w0 + rf_mma_acc_row(i);
        if (gr >= n_rows) continue;
        const float inv = 1.0f / l[i];  // l >= 1: every row sees cache row 0 at least
        float* o_row = out + ((rf_i64)(gr / G) * H + hk * G + gr % G) * MA_D;
#pragma unroll
        for (int t = 0; t < MA_NT; ++t) o_row[16 * t + rf_mma_acc_col(i)] = o[t].x[i] * inv;
    }
}

#endif
