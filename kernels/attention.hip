// attention.hip: FLASH_ATTN_EXT: causal attention by position with grouped KV heads (GQA), online softmax.
// q [T, H, D] f32 (ROPE'd on the way in when rope_dims > 0); k, v [C, Hkv, D] f32 or f16, read through
// their view strides (the KV cache); query t sees cache rows 0..pos[t]; head h reads kv head h / (H / Hkv).
// Out [T, H, D] f32.
//
// Launch: grid (ceil(T * G / BQ), Hkv, n_splits), block 128. A block's BQ "rows" are (token, head) pairs
// of one KV group, so the G heads sharing a KV head read each K/V tile once. It walks KV tiles of BKV rows
// (K, V converted to f32 in shared memory), scores q.k for its rows, and keeps per-row running max / sum
// / output (online softmax): no T x C score matrix ever exists. Decode fills the GPU by splitting the
// cache into n_splits chunks (grid z); each chunk writes an unnormalised partial (o, m, l), and the last
// block of a (query tile, KV head) to finish merges them (a ticket from counters: int [grid x * grid y],
// zero before the first launch, left zero by every launch). With n_splits == 1 (prefill) the block writes
// the output directly.
// Chunks past the block's largest position do no work.
// Tunables: RF_HEAD_DIM (compile-time D); BQ and BKV follow from D so shared memory stays under 48 KB;
// RF_DEC_G (flash_attn_decode's query heads a KV head, compile-time: no branch on the group).
// Floor: K and V rows 0..max(pos) read once per KV head and query tile, q read, out written.
#include "rf_compat.h"
#include "rf_rope.h"
#include "rf_split.h"

#ifndef RF_HEAD_DIM
#define RF_HEAD_DIM 128
#endif
#define FA_D RF_HEAD_DIM
#define FA_THREADS 128
#define FA_BQ (FA_D <= 64 ? 32 : (FA_D <= 128 ? 16 : 8))
#define FA_BKV (FA_D <= 128 ? 32 : 16)
#define FA_TPR (FA_THREADS / FA_BQ)                 // threads per row: 4, 8, 16
#define FA_CPT (FA_BKV / FA_TPR)                    // KV columns per thread
#define FA_DPT ((FA_D + FA_TPR - 1) / FA_TPR)       // output dims per thread
// FA_VEC: q.k and p.v read shared memory four floats at a time (a thread's output dims in runs of four:
// FA_DIM), where D is a multiple of 4 * FA_TPR; q and K rows then padded by 4 floats (16-byte aligned, no
// bank conflicts), else by 1. Either way the sums run in the same order, so the results are the same.
#define FA_VEC (FA_D % (4 * FA_TPR) == 0)
#define FA_QKP (FA_VEC ? FA_D + 4 : FA_D + 1)
#define FA_DIM(i) (FA_VEC ? 4 * (sub + FA_TPR * ((i) / 4)) + (i) % 4 : sub + FA_TPR * (i))

// The last block's merge: output dims d0, d0 + step, ... of (token, head) th over n_splits partials (part_m,
// part_l [n_splits, TH], part_o [n_splits, TH, FA_D], unnormalised; a split that saw no row has m = -inf).
RF_DEV void fa_merge_splits(const float* part_m, const float* part_l, const float* part_o, rf_i64 TH,
                            rf_i64 th, int n_splits, int d0, int step, float* __restrict__ out) {
    // written by other blocks: read through rf_ld_cg (past this SM's L1)
    float M = -RF_INF;
    for (int s = 0; s < n_splits; ++s) M = fmaxf(M, rf_ld_cg(part_m + s * TH + th));
    float L = 0.0f;
    float acc[FA_DPT];
#pragma unroll
    for (int i = 0; i < FA_DPT; ++i) acc[i] = 0.0f;
    for (int s = 0; s < n_splits; ++s) {
        const float m = rf_ld_cg(part_m + s * TH + th);
        if (m == -RF_INF) continue;
        const float w = expf(m - M);
        L += w * rf_ld_cg(part_l + s * TH + th);
#pragma unroll
        for (int i = 0; i < FA_DPT; ++i) {
            const int d = d0 + step * i;
            if (d < FA_D) acc[i] += w * rf_ld_cg(part_o + (s * TH + th) * FA_D + d);
        }
    }
    const float inv = 1.0f / L;
#pragma unroll
    for (int i = 0; i < FA_DPT; ++i) {
        const int d = d0 + step * i;
        if (d < FA_D) out[th * FA_D + d] = acc[i] * inv;
    }
}

template <typename Tkv>
__device__ void flash_attn(const float* __restrict__ q, const Tkv* __restrict__ k, const Tkv* __restrict__ v,
                           const int* __restrict__ pos, float* __restrict__ out, float* part_o, float* part_m,
                           float* part_l, int* __restrict__ counters, int T, int H, int Hkv,
                           rf_i64 row_stride, rf_i64 head_stride, int C, int chunk, float scale,
                           int rope_dims, int rope_neox, float rope_base, float rope_freq_scale) {
    RF_PDL_BEGIN();
    __shared__ float qs[FA_BQ][FA_QKP] RF_ALIGN(16);  // 16-byte aligned rows where FA_VEC
    __shared__ float ks[FA_BKV][FA_QKP] RF_ALIGN(16);
    __shared__ float vs[FA_BKV][FA_D] RF_ALIGN(16);
    __shared__ float ps[FA_BQ][FA_BKV + 1];
    __shared__ int rpos[FA_BQ];

    const int G = H / Hkv;
    const int hk = blockIdx.y, split = blockIdx.z;
    const int row0 = blockIdx.x * FA_BQ, n_rows = T * G;
    const int tid = threadIdx.x, r = tid / FA_TPR, sub = tid % FA_TPR;

    if (tid < FA_BQ) rpos[tid] = row0 + tid < n_rows ? pos[(row0 + tid) / G] : -1;
    const double rope_lb = rope_dims ? log2((double)rope_base) : 0.0;
    for (int e = tid; e < FA_BQ * FA_D; e += FA_THREADS) {
        const int rr = e / FA_D, d = e % FA_D, gr = row0 + rr;
        float val = 0.0f;
        if (gr < n_rows) {
            const float* qh = q + ((rf_i64)(gr / G) * H + hk * G + gr % G) * FA_D;
            // rope_dims > 0: q ROPE'd at its position on the way in (rf_rope.h, as ROPE computes it)
            val = rope_dims ? rf_rope_elem<float>(qh, d, pos[gr / G], rope_dims, rope_neox, rope_lb,
                                                  rope_freq_scale)
                            : qh[d];
            val *= scale;
        }
        qs[rr][d] = val;
    }
    __syncthreads();
    int maxpos = -1;
    for (int i = 0; i < FA_BQ; ++i) maxpos = max(maxpos, rpos[i]);
    const int kv_begin = split * chunk;
    const int kv_end = min(min(kv_begin + chunk, maxpos + 1), C);
    const int my_pos = rpos[r];

    float m_i = -RF_INF, l_i = 0.0f;
    float o[FA_DPT];
#pragma unroll
    for (int i = 0; i < FA_DPT; ++i) o[i] = 0.0f;

    for (int kv0 = kv_begin; kv0 < kv_end; kv0 += FA_BKV) {
        for (int e = tid; e < FA_BKV * FA_D; e += FA_THREADS) {
            const int c = e / FA_D, d = e % FA_D, kv = kv0 + c;
            float kk = 0.0f, vv = 0.0f;
            if (kv < kv_end) {
                const rf_i64 off = (rf_i64)kv * row_stride + (rf_i64)hk * head_stride + d;
                kk = rf_io<Tkv>::load(k, off);
                vv = rf_io<Tkv>::load(v, off);
            }
            ks[c][d] = kk;
            vs[c][d] = vv;
        }
        __syncthreads();

        float s[FA_CPT];
        float tmax = -RF_INF;
#pragma unroll
        for (int j = 0; j < FA_CPT; ++j) {
            const int c = sub + FA_TPR * j, kv = kv0 + c;
            float acc = 0.0f;
#if FA_VEC
#pragma unroll 4
            for (int d = 0; d < FA_D; d += 4) {
                const float4 a = *(const float4*)&qs[r][d], b = *(const float4*)&ks[c][d];
                acc += a.x * b.x;
                acc += a.y * b.y;
                acc += a.z * b.z;
                acc += a.w * b.w;
            }
#else
#pragma unroll 8
            for (int d = 0; d < FA_D; ++d) acc += qs[r][d] * ks[c][d];
#endif
            s[j] = (kv < kv_end && kv <= my_pos) ? acc : -RF_INF;
            tmax = fmaxf(tmax, s[j]);
        }
        tmax = rf_group_max(tmax, FA_TPR);
        const float m_new = fmaxf(m_i, tmax);
        float corr = 1.0f, psum = 0.0f;
        if (m_new == -RF_INF) {  // nothing visible to this row yet
#pragma unroll
            for (int j = 0; j < FA_CPT; ++j) s[j] = 0.0f;
        } else {
            corr = expf(m_i - m_new);
#pragma unroll
            for (int j = 0; j < FA_CPT; ++j) {
                s[j] = expf(s[j] - m_new);
                psum += s[j];
            }
        }
        psum = rf_group_sum(psum, FA_TPR);
        l_i = l_i * corr + psum;
        m_i = m_new;
#pragma unroll
        for (int j = 0; j < FA_CPT; ++j) ps[r][sub + FA_TPR * j] = s[j];
        __syncthreads();
#if FA_VEC
#pragma unroll
        for (int i = 0; i < FA_DPT; ++i) o[i] *= corr;
#pragma unroll 4
        for (int c = 0; c < FA_BKV; ++c) {
            const float pc = ps[r][c];
#pragma unroll
            for (int i4 = 0; i4 < FA_DPT / 4; ++i4) {
                const float4 vv = *(const float4*)&vs[c][FA_DIM(4 * i4)];
                o[4 * i4] += pc * vv.x;
                o[4 * i4 + 1] += pc * vv.y;
                o[4 * i4 + 2] += pc * vv.z;
                o[4 * i4 + 3] += pc * vv.w;
            }
        }
#else
#pragma unroll
        for (int i = 0; i < FA_DPT; ++i) {
            const int d = FA_DIM(i);
            float acc = o[i] * corr;
            if (d < FA_D) {
#pragma unroll 8
                for (int c = 0; c < FA_BKV; ++c) acc += ps[r][c] * vs[c][d];
            }
            o[i] = acc;
        }
#endif
        __syncthreads();
    }

    const int gr = row0 + r;
    const bool valid = gr < n_rows;
    const int t = gr / G, h = hk * G + gr % G;
    if (gridDim.z == 1) {
        if (!valid) return;
        const float inv = 1.0f / l_i;
#pragma unroll
        for (int i = 0; i < FA_DPT; ++i) {
            const int d = FA_DIM(i);
            if (d < FA_D) out[((rf_i64)t * H + h) * FA_D + d] = o[i] * inv;
        }
        return;
    }
    const rf_i64 TH = (rf_i64)T * H, th = (rf_i64)t * H + h;
    if (valid) {
        const rf_i64 pr = split * TH + th;
#pragma unroll
        for (int i = 0; i < FA_DPT; ++i) {
            const int d = FA_DIM(i);
            if (d < FA_D) part_o[pr * FA_D + d] = o[i];
        }
        if (sub == 0) {
            part_m[pr] = m_i;
            part_l[pr] = l_i;
        }
    }
    // the last of a tile's n_splits blocks to finish merges their partials (no second kernel)
    if (!rf_last_block(counters + blockIdx.y * gridDim.x + blockIdx.x, gridDim.z) || !valid) return;
    fa_merge_splits(part_m, part_l, part_o, TH, th, gridDim.z, sub, FA_TPR, out);
}

// Decode (one token): flash_attn_decode_<kv>. Grid (n_splits, Hkv), block FA_DEC_WARPS warps. A block
// serves every query head of its KV head (G = H / Hkv = FA_DEC_G: no rows padded to a tile) over its share
// of the cache: groups of `group` rows (a multiple of FA_DEC_ROWS) dealt in turn to the step's splits
// (n_eff: as many as give each at least `span` rows, up to n_splits; split s takes groups s, s + n_eff,
// ...), so the rows up to the position spread over them and a short cache needs no merge. q is ROPE'd and
// scaled into shared memory once (a dim's rotation for every head). Before the wait for the kernel before
// (programmatic launch) a block computes those rotations and asks its first rows of K and V into L2, from
// the position as it reads then (FA_DEC_AHEAD passes; what it uses is read after). Each warp takes
// FA_DEC_ROWS rows at a time as FA_DEC_R slots of FA_DEC_L lanes, a lane FA_DEC_E dims (one 16-byte load of
// an f16 row: the launcher keeps unaligned caches on the tiled kernel); each slot scores its rows for every
// head (E products and a sum over its L lanes) and keeps its own running max, sum and output a head in
// registers;
// at the end the slots merge by shuffles, the warps in shared memory; with n_eff > 1 the block writes its
// partial and the last block of the KV head to finish merges them (tickets, as flash_attn). Few
// instructions a row matter more than bytes here: at short depths one warp's dependent chain is the time.
// With kn and vn (f32 [Hkv * D]: the step's K row before RoPE and its V row) the block whose split holds
// row p first writes them there (fuse_kv_write: no SET_ROWS_ROPE launch before it); null: the cache holds
// row p already.
#ifndef RF_DEC_G
#define RF_DEC_G 8
#endif
#define FA_DEC_G RF_DEC_G  // query heads a KV head, compile-time (the launcher's G, at most 8)
#ifndef RF_DEC_WARPS
#define RF_DEC_WARPS 4  // warps a block (a tunable: launch_attention.dec_params)
#endif
#define FA_DEC_WARPS RF_DEC_WARPS
#define FA_DEC_ROWS 8
#define FA_DEC_E 8                      // dims a lane holds: 16 bytes of an f16 row
#define FA_DEC_L (FA_D / FA_DEC_E)      // lanes a row: 8 (D 64), 16 (D 128)
#define FA_DEC_R (RF_WARP / FA_DEC_L)   // rows a warp scores at once (slots): 4, 2 (wave32)
#define FA_DEC_MERGE 8  // splits whose partials load before their arithmetic
#ifndef FA_DEC_POS_HINT
#define FA_DEC_POS_HINT(pos) (*(const volatile int*)(pos))  // the position before the wait (tests: another)
#endif
#ifndef FA_DEC_PIPE
// a warp's next pass of K/V rows loaded during this one's arithmetic, where the registers allow (sm_90: at D
// 128 and G 8 it would spill)
#define FA_DEC_PIPE (FA_D * FA_DEC_G <= 512)
#endif
#ifndef FA_DEC_AHEAD
#define FA_DEC_AHEAD 2  // passes of a warp's rows asked into L2 before the wait
#endif

#define FA_DEC_MAX_SPLITS 32  // the launcher's cap on n_splits (the merge: a lane a split's weight, a head)

// the decode merge: out[h0 + g] over the first n_live splits' partials (part_m, part_l [n_splits, H],
// part_o [n_splits, H, FA_D], unnormalised; a split that saw no row has m = -inf, l = 0, o = 0). Every
// thread first asks for the first FA_DEC_MERGE splits' o of its (head, dim) elements (they do not depend on
// the weights), then each warp turns a head's (m, l) into every split's weight e^(m_s - M) / L (lanes over
// splits), and the sums use the o already in registers: one round of L2 reads for up to FA_DEC_MERGE
// splits (later ones, FA_DEC_MERGE at a time, after the weights).
RF_DEV void fa_dec_merge(const float* part_m, const float* part_l, const float* part_o, int H, int h0,
                         int n_live, float* __restrict__ out) {
    constexpr int G = FA_DEC_G, T = FA_DEC_WARPS * RF_WARP, EPT = (G * FA_D + T - 1) / T, S = FA_DEC_MERGE;
    static_assert(FA_DEC_MAX_SPLITS <= RF_WARP, "a lane a split: one pass of the weights");
    __shared__ float w[FA_DEC_G][FA_DEC_MAX_SPLITS];
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const rf_i64 split_stride = (rf_i64)H * FA_D;
    const float* po = part_o + (rf_i64)h0 * FA_D;  // element e = g * FA_D + d of split s: po[s * stride + e]
    float o[EPT][S];
#pragma unroll
    for (int k = 0; k < EPT; ++k) {
        const int e = threadIdx.x + k * T;
#pragma unroll
        for (int i = 0; i < S; ++i)
            o[k][i] = e < G * FA_D && i < n_live ? rf_ld_cg(po + i * split_stride + e) : 0.0f;
    }
    for (int g = warp; g < G; g += FA_DEC_WARPS) {
        const rf_i64 h = h0 + g;
        const bool live = lane < n_live;
        const float m = live ? rf_ld_cg(part_m + lane * H + h) : -RF_INF;
        const float l = live ? rf_ld_cg(part_l + lane * H + h) : 0.0f;
        const float M = rf_warp_max(m);
        const float e = m == -RF_INF ? 0.0f : expf(m - M);
        const float inv = 1.0f / rf_warp_sum(e * l);
        if (lane < FA_DEC_MAX_SPLITS) w[g][lane] = e * inv;
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < EPT; ++k) {
        const int e = threadIdx.x + k * T;
        if (e >= G * FA_D) continue;
        const int g = e / FA_D;
        float O = 0.0f;
#pragma unroll
        for (int i = 0; i < S; ++i) O += w[g][i] * o[k][i];  // (splits past n_live: weight 0, o 0)
        for (int s0 = S; s0 < n_live; s0 += S) {
            float x[S];
#pragma unroll
            for (int i = 0; i < S; ++i)
                x[i] = s0 + i < n_live ? rf_ld_cg(po + (s0 + i) * split_stride + e) : 0.0f;
#pragma unroll
            for (int i = 0; i < S; ++i) O += s0 + i < n_live ? w[g][s0 + i] * x[i] : 0.0f;
        }
        out[(rf_i64)h0 * FA_D + e] = O;
    }
}

// a lane's FA_DEC_E consecutive elements of a cache row: loaded as they are stored (16-byte loads: one for
// f16, two for f32), then as f32
template <typename Tkv>
struct FaDecRaw {
    uint4 u[FA_DEC_E * sizeof(Tkv) / 16];
};
template <typename Tkv>
RF_DEV void fa_dec_load(const Tkv* p, FaDecRaw<Tkv>& r) {
#pragma unroll
    for (int i = 0; i < (int)(FA_DEC_E * sizeof(Tkv) / 16); ++i) r.u[i] = ((const uint4*)p)[i];
}
RF_DEV void fa_dec_f32(const FaDecRaw<rf_u16>& r, float (&x)[FA_DEC_E]) {
    const rf_u32 u[4] = {r.u[0].x, r.u[0].y, r.u[0].z, r.u[0].w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        x[2 * i] = rf_h2f_lo(u[i]);
        x[2 * i + 1] = rf_h2f_hi(u[i]);
    }
}
RF_DEV void fa_dec_f32(const FaDecRaw<float>& r, float (&x)[FA_DEC_E]) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
        const rf_u32 u[4] = {r.u[i].x, r.u[i].y, r.u[i].z, r.u[i].w};
#pragma unroll
        for (int j = 0; j < 4; ++j) x[4 * i + j] = __uint_as_float(u[j]);
    }
}

template <typename Tkv>
RF_DEV void flash_attn_decode(const float* __restrict__ q, Tkv* __restrict__ k, Tkv* __restrict__ v,
                              const int* __restrict__ pos,
                              const float* __restrict__ kn, const float* __restrict__ vn,
                              float* __restrict__ out, float* part_o, float* part_m, float* part_l,
                              int* __restrict__ counters, int H, int Hkv, rf_i64 row_stride,
                              rf_i64 head_stride, int C, int group, int span, float scale, int rope_dims,
                              int rope_neox, float rope_base, float rope_freq_scale) {
    __shared__ float sm[FA_DEC_WARPS][FA_DEC_G], sl[FA_DEC_WARPS][FA_DEC_G];
    __shared__ float so[FA_DEC_WARPS][FA_DEC_G][FA_D] RF_ALIGN(16);
    __shared__ float sq[FA_DEC_G][FA_D] RF_ALIGN(16);
    constexpr int G = FA_DEC_G;  // = H / Hkv (the launcher compiles the kernel for it)
    constexpr int E = FA_DEC_E, L = FA_DEC_L, R = FA_DEC_R;
    constexpr int SUB = FA_DEC_ROWS / R > 0 ? FA_DEC_ROWS / R : 1;  // rows a slot takes of the warp's
    (void)Hkv;
    const int hk = blockIdx.y, split = blockIdx.x;
    const int warp = threadIdx.x / RF_WARP, lane = threadIdx.x % RF_WARP;
    const int slot = lane / L, d0 = lane % L * E;  // the lane's row slot (of R) and first dim
    const double rope_lb = rope_dims ? log2((double)rope_base) : 0.0;
    // before the wait (programmatic launch: the kernel before may still run), from the position as it reads
    // now (p_hint: the step's is read again after the wait, and used): the rotation of the thread's dim, and
    // the block's first FA_DEC_AHEAD passes of K and V rows asked into L2 (no register holds them, so a row
    // another kernel still writes is no hazard)
    const int p_hint = FA_DEC_POS_HINT(pos);
    const RfRopeAt rr_hint = rf_rope_at(threadIdx.x, p_hint, rope_dims, rope_neox, rope_lb, rope_freq_scale);
    {
        const int end_h = min(p_hint + 1, C), n_h = min((int)gridDim.x, max(1, (end_h + span - 1) / span));
#pragma unroll
        for (int a = 0; a < FA_DEC_AHEAD; ++a) {
            const int i0 = warp * FA_DEC_ROWS + a * FA_DEC_WARPS * FA_DEC_ROWS;
            const int r0 = split * group + i0 % group + i0 / group * group * n_h;
#pragma unroll
            for (int s = 0; s < SUB; ++s) {
                const int r = r0 + slot + s * R;
                if (split < n_h && r < end_h) {
                    const rf_i64 off = (rf_i64)r * row_stride + (rf_i64)hk * head_stride + d0;
                    rf_prefetch_l2(k + off);
                    rf_prefetch_l2(v + off);
                }
            }
        }
    }
    RF_PDL_BEGIN();
    const int p = pos[0];
    const int kv_end = min(p + 1, C);
    // the splits this step: at least `span` rows each (a multiple of group), at most the grid's; the rest
    // have no rows, and neither write a partial nor take a ticket
    const int n_eff = min((int)gridDim.x, max(1, (kv_end + span - 1) / span));
    if (split >= n_eff) return;
    // the block whose split reads row p writes the step's own row there (k_new ROPE'd as SET_ROWS_ROPE
    // ropes it, v_new): no other block reads it, and the __syncthreads below shows it to this one
    const bool write_row = kn != nullptr && p < C && (p / group) % n_eff == split;
    // q of the group's heads, ROPE'd and scaled, through shared memory: each dim's rotation (its double
    // sine and cosine are the cost; computed before the wait where the position is the one read then) once
    // for every head and the step's K row
    for (int d = threadIdx.x; d < FA_D; d += blockDim.x) {  // (one pass: D <= the block)
        const RfRopeAt rr = p == p_hint && d == threadIdx.x
                                ? rr_hint : rf_rope_at(d, p, rope_dims, rope_neox, rope_lb, rope_freq_scale);
#pragma unroll
        for (int g = 0; g < G; ++g)
            sq[g][d] = rf_rope_apply<float>(q + (rf_i64)(hk * G + g) * FA_D, rr) * scale;
        if (write_row) {
            const rf_i64 off = (rf_i64)p * row_stride + (rf_i64)hk * head_stride + d;
            rf_io<Tkv>::store(k, off, rf_rope_apply<float>(kn + (rf_i64)hk * FA_D, rr));
            rf_io<Tkv>::store(v, off, vn[(rf_i64)hk * FA_D + d]);
        }
    }
    __syncthreads();
    float qv[G][E], m[G], l[G], o[G][E];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = -RF_INF;
        l[g] = 0.0f;
#pragma unroll
        for (int j = 0; j < E; ++j) {
            qv[g][j] = sq[g][d0 + j];
            o[g][j] = 0.0f;
        }
    }
    // i0: the offset in the split's rows (its groups one after another), FA_DEC_ROWS a warp at a time; of
    // those, the lane's slot takes rows slot, slot + R, ...: L lanes a row, E dims a lane. A pass's rows are
    // loaded during the pass before (FA_DEC_PIPE), as stored, and turned to f32 where they are used.
    const auto first_row = [&](int i) { return split * group + i % group + i / group * group * n_eff; };
    FaDecRaw<Tkv> rk[SUB], rv[SUB];
    const auto load_pass = [&](int r0) {
#pragma unroll
        for (int s = 0; s < SUB; ++s) {
            const int r = r0 + slot + s * R;
            const rf_i64 off = (rf_i64)(r < kv_end ? r : r0) * row_stride + (rf_i64)hk * head_stride + d0;
            fa_dec_load<Tkv>(k + off, rk[s]);
            fa_dec_load<Tkv>(v + off, rv[s]);
        }
    };
    int i0 = warp * FA_DEC_ROWS, r0 = first_row(i0);
    if (FA_DEC_PIPE && r0 < kv_end) load_pass(r0);
    for (; r0 < kv_end; i0 += FA_DEC_WARPS * FA_DEC_ROWS, r0 = first_row(i0)) {
        if (!FA_DEC_PIPE) load_pass(r0);
        float kk[SUB][E], vv[SUB][E];
#pragma unroll
        for (int s = 0; s < SUB; ++s) {
            fa_dec_f32(rk[s], kk[s]);
            fa_dec_f32(rv[s], vv[s]);
        }
        if (FA_DEC_PIPE) {
            const int r1 = first_row(i0 + FA_DEC_WARPS * FA_DEC_ROWS);
            if (r1 < kv_end) load_pass(r1);
        }
        // every (row, head) score first: E products and a sum over the row's L lanes each, independent
        float sc[SUB][G];
#pragma unroll
        for (int s = 0; s < SUB; ++s) {
#pragma unroll
            for (int g = 0; g < G; ++g) {
                float x = 0.0f;
#pragma unroll
                for (int j = 0; j < E; ++j) x += qv[g][j] * kk[s][j];
                x = rf_group_sum(x, L);
                sc[s][g] = r0 + slot + s * R < kv_end ? x : -RF_INF;
            }
        }
        // one online-softmax step a head over the slot's rows (a slot whose rows are all past the position,
        // with nothing before, keeps its empty state)
#pragma unroll
        for (int g = 0; g < G; ++g) {
            float mx = m[g];
#pragma unroll
            for (int s = 0; s < SUB; ++s) mx = fmaxf(mx, sc[s][g]);
            if (mx == -RF_INF) continue;
            const float corr = expf(m[g] - mx);
            float e[SUB], sum = 0.0f;
#pragma unroll
            for (int s = 0; s < SUB; ++s) {
                e[s] = expf(sc[s][g] - mx);
                sum += e[s];
            }
            l[g] = l[g] * corr + sum;
#pragma unroll
            for (int j = 0; j < E; ++j) {
                float acc = o[g][j] * corr;
#pragma unroll
                for (int s = 0; s < SUB; ++s) acc += e[s] * vv[s][j];
                o[g][j] = acc;
            }
            m[g] = mx;
        }
    }
    // the warp's R slots merged (lanes L apart hold the same dims): slot 0's lanes hold the warp's partial
#pragma unroll
    for (int g = 0; g < G; ++g) {
        float M = m[g];
        for (int off = L; off < RF_WARP; off <<= 1) M = fmaxf(M, rf_shfl_xor(M, off));
        const float c = m[g] == -RF_INF ? 0.0f : expf(m[g] - M);
        float lw = l[g] * c;
        for (int off = L; off < RF_WARP; off <<= 1) lw += rf_shfl_xor(lw, off);
#pragma unroll
        for (int j = 0; j < E; ++j) {
            float x = o[g][j] * c;
            for (int off = L; off < RF_WARP; off <<= 1) x += rf_shfl_xor(x, off);
            if (slot == 0) so[warp][g][d0 + j] = x;
        }
        if (lane == 0) {
            sm[warp][g] = M;
            sl[warp][g] = lw;
        }
    }
    __syncthreads();
    // the block's partial per (head, dim): its warps merged (a warp that saw no row has m = -inf)
    const bool split_out = n_eff > 1;
    for (int e = threadIdx.x; e < G * FA_D; e += blockDim.x) {
        const int g = e / FA_D, d = e % FA_D, h = hk * G + g;
        float M = -RF_INF;
        for (int w = 0; w < FA_DEC_WARPS; ++w) M = fmaxf(M, sm[w][g]);
        float L = 0.0f, O = 0.0f;
        if (M != -RF_INF) {
            for (int w = 0; w < FA_DEC_WARPS; ++w) {
                if (sm[w][g] == -RF_INF) continue;
                const float c = expf(sm[w][g] - M);
                L += c * sl[w][g];
                O += c * so[w][g][d];
            }
        }
        if (!split_out) {
            out[(rf_i64)h * FA_D + d] = O / L;
        } else {
            const rf_i64 pr = (rf_i64)split * H + h;
            part_o[pr * FA_D + d] = O;
            if (d == 0) {
                part_m[pr] = M;
                part_l[pr] = L;
            }
        }
    }
    if (!split_out || !rf_last_block(counters + hk, n_eff)) return;
    fa_dec_merge(part_m, part_l, part_o, H, hk * G, n_eff, out);
}

#define FA_DEC_ENTRY(t, Tkv)                                                                           \
    RF_KERNEL void __launch_bounds__(FA_DEC_WARPS * RF_WARP)                                           \
        flash_attn_decode_##t(const float* q, Tkv* k, Tkv* v, const int* pos, const float* kn,          \
                              const float* vn, float* out, float* part_o, float* part_m, float* part_l, \
                              int* counters, int H, int Hkv, rf_i64 row_stride, rf_i64 head_stride,    \
                              int C, int group, int span, float scale, int rope_dims, int rope_neox,   \
                              float rope_base, float rope_freq_scale) {                                \
        flash_attn_decode<Tkv>(q, k, v, pos, kn, vn, out, part_o, part_m, part_l, counters, H, Hkv,     \
                               row_stride, head_stride, C, group, span, scale, rope_dims, rope_neox,   \
                               rope_base, rope_freq_scale);                                            \
    }
// (head dims of 16-byte lane slices that fill whole warps and FA_DEC_ROWS; up to 128: at 256 its partials
// would take the tiled kernel's shared memory)
#if FA_D % FA_DEC_E == 0 && FA_D <= 128 && RF_WARP % FA_DEC_L == 0 && FA_DEC_ROWS % FA_DEC_R == 0
FA_DEC_ENTRY(f32, float)
FA_DEC_ENTRY(f16, rf_u16)
#endif

#define FA_ENTRY(t, Tkv)                                                                               \
    RF_KERNEL void __launch_bounds__(FA_THREADS)                                                       \
        flash_attn_##t(const float* q, const Tkv* k, const Tkv* v, const int* pos, float* out,          \
                       float* part_o, float* part_m, float* part_l, int* counters, int T, int H, int Hkv, \
                       rf_i64 row_stride, rf_i64 head_stride, int C, int chunk, float scale,           \
                       int rope_dims, int rope_neox, float rope_base, float rope_freq_scale) {         \
        flash_attn<Tkv>(q, k, v, pos, out, part_o, part_m, part_l, counters, T, H, Hkv, row_stride,     \
                        head_stride, C, chunk, scale, rope_dims, rope_neox, rope_base, rope_freq_scale); \
    }
FA_ENTRY(f32, float)
FA_ENTRY(f16, rf_u16)
