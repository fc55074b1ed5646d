// mul_mat_q.hip: MUL_MAT and MUL_MAT_ADD for prompts on integer matrix instructions: y[m, n] = sum_k x[m, k]
// * w[n, k] (+ b[m * b_stride + n] where b is not null), w in GGUF blocks, x as quantize_x8 wrote it (int8
// [K] then float2 (scale, sum of the block as quantized) [K / 32] a token: K + K / 4 bytes a row).
// Each weight granule of G elements under one scale (32; Q6_K 16) is unpacked to signed bytes q with
// w = d q + m (RfG below); a 16x16 tile's int32 products over one granule (rf_compat.h's rf_mma_i8: mma.sync
// s8 on NVIDIA sm_80+, WMMA iu8 on RDNA3) are scaled into f32 accumulators: += dx dw p + m sx.
//
// Launch: grid (ceil(N / MQ_BN), ceil(M / MQ_BM)), MQ_THREADS (4 warps of 32, 2 x 2 over the block's tile).
// A block computes MQ_BM tokens x MQ_BN weight rows, stepping over K by MQ_BK = 128: x's int8 rows and
// scales copied to shared memory, the weight granules unpacked there, then each warp's RF_MMQ_WM x RF_MMQ_WN
// tiles of 16 x 16.
// Tunables: RF_MMQ_WM, RF_MMQ_WN (16-token and 16-row tiles a warp: MQ_BM = 32 RF_MMQ_WM, MQ_BN = 32
// RF_MMQ_WN; 2 and 2 by default).
// Floor: the weight bytes N * row_bytes once per MQ_BM tokens (from L2 after the first pass), x (M * (K + K /
// 4)) once per MQ_BN rows, y (M * N * 4) (+ b); arithmetic 2 * M * N * K.
// Needs K % 32 == 0 (quantize_x8's blocks) and x rows 8-byte aligned.
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMQ_WM
#define RF_MMQ_WM 2
#endif
#ifndef RF_MMQ_WN
#define RF_MMQ_WN 2
#endif
#define MQ_BM (32 * RF_MMQ_WM)    // tokens a block
#define MQ_BN (32 * RF_MMQ_WN)    // weight rows a block
#define MQ_BK 128                 // K a stage
#define MQ_THREADS 128            // 4 warps of 32, 2 x 2 over the block's tile
#define MQ_LD (MQ_BK + 16)        // bytes a shared row: 16-byte aligned, no bank conflicts on fragments

// x - c for 4 bytes of v in [0, 127] and c <= 128 a byte: signed bytes, no borrow between them
RF_DEV rf_u32 rf_bytes_minus(rf_u32 v, rf_u32 c) { return ((v | 0x80808080u) - c) ^ 0x80808080u; }

// RfG<T>: G elements of a row under one scale, granule g (elements G g ..), as signed bytes q (G / 4 words,
// element order) with w = d q + m; HAS_M: m may be nonzero (mins); load(row, g, q, d, m)
template <class T>
struct RfG;

template <>
struct RfG<QT_Q4_0> {  // d qs[16]: low nibbles elements 0..15, high 16..31; q = n - 8
    static constexpr int G = 32;
    static constexpr bool HAS_M = false;
    RF_DEV static void load(const rf_u8* row, int g, rf_u32* q, float& d, float& m) {
        const rf_u8* b = row + g * QT_Q4_0::BYTES;
        d = rf_u16f(b), m = 0.0f;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const rf_u32 v = rf_ld_u32_a2(b + 2 + 4 * i);
            q[i] = rf_bytes_minus(v & 0x0F0F0F0Fu, 0x08080808u);
            q[i + 4] = rf_bytes_minus((v >> 4) & 0x0F0F0F0Fu, 0x08080808u);
        }
    }
};

template <>
struct RfG<QT_Q4_1> {  // d m qs[16]; q = n
    static constexpr int G = 32;
    static constexpr bool HAS_M = true;
    RF_DEV static void load(const rf_u8* row, int g, rf_u32* q, float& d, float& m) {
        const rf_u8* b = row + g * QT_Q4_1::BYTES;
        const rf_u32 dm = rf_ld_u32_a4(b);
        d = rf_h2f_lo(dm), m = rf_h2f_hi(dm);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const rf_u32 v = rf_ld_u32_a4(b + 4 + 4 * i);
            q[i] = v & 0x0F0F0F0Fu;
            q[i + 4] = (v >> 4) & 0x0F0F0F0Fu;
        }
    }
};

template <>
struct RfG<QT_Q5_0> {  // d qh qs[16]: element j's fifth bit is bit j of qh; q = n - 16
    static constexpr int G = 32;
    static constexpr bool HAS_M = false;
    RF_DEV static void load(const rf_u8* row, int g, rf_u32* q, float& d, float& m) {
        const rf_u8* b = row + g * QT_Q5_0::BYTES;
        d = rf_u16f(b), m = 0.0f;
        const rf_u32 qh = rf_ld_u32_a2(b + 2);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const rf_u32 v = rf_ld_u32_a2(b + 6 + 4 * i);
            q[i] = rf_bytes_minus((v & 0x0F0F0F0Fu) | rf_spread4(qh >> (4 * i)), 0x10101010u);
            q[i + 4] = rf_bytes_minus(((v >> 4) & 0x0F0F0F0Fu) | rf_spread4(qh >> (16 + 4 * i)), 0x10101010u);
        }
    }
};

template <>
struct RfG<QT_Q8_0> {  // d qs[32]
    static constexpr int G = 32;
    static constexpr bool HAS_M = false;
    RF_DEV static void load(const rf_u8* row, int g, rf_u32* q, float& d, float& m) {
        const rf_u8* b = row + g * QT_Q8_0::BYTES;
        d = rf_u16f(b), m = 0.0f;
#pragma unroll
        for (int i = 0; i < 8; ++i) q[i] = rf_ld_u32_a2(b + 2 + 4 * i);
    }
};

template <>
struct RfG<QT_Q4_K> {  // sub-block j of a super-block: nibble j % 2 of qs[32 (j / 2)..]; w = d sc q - dmin mn
    static constexpr int G = 32;
    static constexpr bool HAS_M = true;
    RF_DEV static void load(const rf_u8* row, int g, rf_u32* q, float& d, float& m) {
        const rf_u8* b = row + (g >> 3) * QT_Q4_K::BYTES;
        const int j = g & 7;
        const uint4 hdr = *(const uint4*)b;
        float sc, mn;
        rf_scale_min_k4(j, hdr.y, hdr.z, hdr.w, sc, mn);
        d = rf_h2f_lo(hdr.x) * sc, m = -rf_h2f_hi(hdr.x) * mn;
        const rf_u8* qs = b + 16 + 32 * (j >> 1);
#pragma unroll
        for (int i = 0; i < 8; ++i) q[i] = (rf_ld_u32_a4(qs + 4 * i) >> (4 * (j & 1))) & 0x0F0F0F0Fu;
    }
};

template <>
struct RfG<QT_Q6_K> {  // 16 elements a scale: granule j of a super-block, scales[j]; q = (lo | hi << 4) - 32
    static constexpr int G = 16;
    static constexpr bool HAS_M = false;
    RF_DEV static void load(const rf_u8* row, int g, rf_u32* q, float& d, float& m) {
        const rf_u8* b = row + (g >> 4) * QT_Q6_K::BYTES;
        const int j = g & 15, n = j >> 3, k = (j >> 1) & 3, l0 = 16 * (j & 1);
        d = rf_u16f(b + 208) * (float)(rf_i8)b[192 + j], m = 0.0f;
        const rf_u8* ql = b + 64 * n + 32 * (k & 1) + l0;
        const rf_u8* qh = b + 128 + 32 * n + l0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const rf_u32 lo = (rf_ld_u32_a2(ql + 4 * i) >> (4 * (k >> 1))) & 0x0F0F0F0Fu;
            const rf_u32 hi = ((rf_ld_u32_a2(qh + 4 * i) >> (2 * k)) & 0x03030303u) << 4;
            q[i] = rf_bytes_minus(lo | hi, 0x20202020u);
        }
    }
};

// the kernel exists where the instructions do
#if defined(RF_MMA_I8)

// a block's shared memory, declared in each entry point (clang gives a device function's __shared__
// variables of every instantiation to every kernel of the module)
template <int G>
struct MqShared {
    rf_i8 xs[MQ_BM * MQ_LD] RF_ALIGN(16);
    rf_i8 ws[MQ_BN * MQ_LD] RF_ALIGN(16);
    float2 xds[MQ_BM][MQ_BK / 32];  // x's blocks of 32: (scale, sum as quantized)
    float2 wdm[MQ_BN][MQ_BK / G];   // the weight granules' (d, m)
};

static_assert(sizeof(MqShared<16>) <= 48 * 1024,
              "mul_mat_q.hip: static shared memory over 48 KB (RF_MMQ_WM/WN)");

template <class T>
RF_DEV void mq(MqShared<RfG<T>::G>& sh, const rf_u8* __restrict__ w, rf_i64 row_bytes,
               const rf_u8* __restrict__ xq, float* __restrict__ y, int M, int N, int K, const float* b,
               rf_i64 b_stride) {
    RF_PDL_BEGIN();
    typedef RfG<T> Gr;
    constexpr int G = Gr::G, NG = MQ_BK / G, NB = MQ_BK / 32;
    rf_i8* xs = sh.xs;
    rf_i8* ws = sh.ws;
    auto& xds = sh.xds;
    auto& wdm = sh.wdm;
    const int tid = threadIdx.x, warp = tid / 32;
    const int m0 = blockIdx.y * MQ_BM, n0 = blockIdx.x * MQ_BN;
    const int tm = (MQ_BM / 2) * (warp >> 1), tn = (MQ_BN / 2) * (warp & 1);  // the warp's part of the tile
    const rf_i64 xstride = (rf_i64)K + K / 4;
    const int nblk = K / 32, ngr = K / G;

    rf_mma_acc acc[RF_MMQ_WM][RF_MMQ_WN];
#pragma unroll
    for (int i = 0; i < RF_MMQ_WM; ++i) {
#pragma unroll
        for (int j = 0; j < RF_MMQ_WN; ++j) {
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[i][j].x[e] = 0.0f;
        }
    }

    for (int k0 = 0; k0 < K; k0 += MQ_BK) {
        // x: MQ_BM rows of MQ_BK bytes, 8 at a time (zero past M and K)
        for (int c = tid; c < MQ_BM * (MQ_BK / 8); c += MQ_THREADS) {
            const int r = c / (MQ_BK / 8), kk = 8 * (c % (MQ_BK / 8));
            uint2 v = {0u, 0u};
            if (m0 + r < M && k0 + kk < K) v = *(const uint2*)(xq + (m0 + r) * xstride + k0 + kk);
            *(uint2*)(xs + r * MQ_LD + kk) = v;
        }
        for (int c = tid; c < MQ_BM * NB; c += MQ_THREADS) {
            const int r = c / NB, kb = k0 / 32 + c % NB;
            float2 v = {0.0f, 0.0f};
            if (m0 + r < M && kb < nblk) v = ((const float2*)(xq + (m0 + r) * xstride + K))[kb];
            xds[r][c % NB] = v;
        }
        // w: MQ_BN rows of NG granules, unpacked (zero past N and K)
        for (int c = tid; c < MQ_BN * NG; c += MQ_THREADS) {
            const int r = c / NG, gi = c % NG, g = k0 / G + gi;
            rf_u32 q[G / 4];
            float d = 0.0f, m = 0.0f;
            if (n0 + r < N && g < ngr) {
                Gr::load(w + (rf_i64)(n0 + r) * row_bytes, g, q, d, m);
            } else {
#pragma unroll
                for (int i = 0; i < G / 4; ++i) q[i] = 0u;
            }
#pragma unroll
            for (int i = 0; i < G / 4; ++i) *(rf_u32*)(ws + r * MQ_LD + gi * G + 4 * i) = q[i];
            wdm[r][gi] = float2{d, m};
        }
        __syncthreads();
#pragma unroll
        for (int gi = 0; gi < NG; ++gi) {
#pragma unroll
            for (int i = 0; i < RF_MMQ_WM; ++i) {
#pragma unroll
                for (int j = 0; j < RF_MMQ_WN; ++j) {
                    rf_mma_acci p;
#pragma unroll
                    for (int e = 0; e < 8; ++e) p.x[e] = 0;
                    const int k = gi * G;
                    const rf_i8* a = xs + (tm + 16 * i) * MQ_LD + k;
                    rf_mma_i8<G>(p, a, MQ_LD, ws + (tn + 16 * j) * MQ_LD + k, MQ_LD);
#pragma unroll
                    for (int e = 0; e < 8; ++e) {
                        const float2 xd = xds[tm + 16 * i + rf_mma_acc_row(e)][gi * G / 32];
                        const float2 wd = wdm[tn + 16 * j + rf_mma_acc_col(e)][gi];
                        float s = acc[i][j].x[e] + xd.x * wd.x * (float)p.x[e];
                        if (Gr::HAS_M) s += wd.y * xd.y;
                        acc[i][j].x[e] = s;
                    }
                }
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < RF_MMQ_WM; ++i) {
#pragma unroll
        for (int j = 0; j < RF_MMQ_WN; ++j) {
#pragma unroll
            for (int e = 0; e < 8; ++e) {
                const int m = m0 + tm + 16 * i + rf_mma_acc_row(e), n = n0 + tn + 16 * j + rf_mma_acc_col(e);
                if (m < M && n < N) y[(rf_i64)m * N + n] = rf_plus_b(acc[i][j].x[e], b, b_stride, m, n);
            }
        }
    }
}

#define RF_MQ_ENTRY(name, T)                                                                               \
    RF_KERNEL void __launch_bounds__(MQ_THREADS)                                                           \
        mul_mat_q_##name(const rf_u8* w, rf_i64 row_bytes, const rf_u8* xq, float* y, int M, int N, int K, \
                         const float* b, rf_i64 b_stride) {                                                \
        __shared__ MqShared<RfG<T>::G> sh;                                                                 \
        mq<T>(sh, w, row_bytes, xq, y, M, N, K, b, b_stride);                                              \
    }

RF_MQ_ENTRY(q4_0, QT_Q4_0)
RF_MQ_ENTRY(q4_1, QT_Q4_1)
RF_MQ_ENTRY(q5_0, QT_Q5_0)
RF_MQ_ENTRY(q8_0, QT_Q8_0)
RF_MQ_ENTRY(q4_k, QT_Q4_K)
RF_MQ_ENTRY(q6_k, QT_Q6_K)

#endif
