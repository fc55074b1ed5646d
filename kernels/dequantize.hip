// dequantize.hip: a tile of weight rows in GGUF blocks (or a plain float type) -> f16 rows, for MUL_MAT's
// vendor-BLAS path (mul_mat_blas): out[r * K + k] = w[r, k] as f16 (round to nearest even) for r < rows,
// w pointing at the tile's first row (row r at w + r * row_bytes), out dense [rows, K].
//
// Launch: grid (ceil(rows * K / 8 / 256)), block 256 threads; the tile is one run of rows * K elements and
// thread i converts elements 8i..8i+7 of it: one deq8 of one row (K % 8 == 0, so the 8 never straddle a
// row) and one 16-byte store. The `_s` float variants (rows of any length) go element by element (deq1,
// 2-byte stores).
// Tunables: none.
// Floor: the tile's weight bytes (rows * row_bytes) read + rows * K * 2 bytes written (the GEMM then reads
// those f16 bytes again).
#include "rf_compat.h"
#include "rf_quant.h"

#define DQ_THREADS 256

template <class T>
__device__ void dequantize_f16(const rf_u8* __restrict__ w, rf_i64 row_bytes, rf_u16* __restrict__ out,
                               int rows, int K) {
    RF_PDL_BEGIN();
    const rf_i64 n = (rf_i64)rows * K;
    const rf_i64 e0 = ((rf_i64)blockIdx.x * DQ_THREADS + threadIdx.x) * 8;
    if (e0 >= n) return;
    if constexpr (T::UNIT != 1) {
        const rf_i64 r = e0 / K;
        const int k = (int)(e0 - r * K);
        float v[8];
        T::deq8(w + r * row_bytes, k, v);
        rf_u32 h[4];
#pragma unroll
        for (int j = 0; j < 4; ++j) h[j] = (rf_u32)rf_f2h(v[2 * j]) | ((rf_u32)rf_f2h(v[2 * j + 1]) << 16);
        *(uint4*)(out + e0) = make_uint4(h[0], h[1], h[2], h[3]);
    } else {
        for (rf_i64 e = e0; e < e0 + 8 && e < n; ++e) {
            const rf_i64 r = e / K;
            out[e] = rf_f2h(T::deq1(w + r * row_bytes, (int)(e - r * K)));
        }
    }
}

#define RF_DQ_ENTRY(name, T)                                                                           \
    RF_KERNEL void __launch_bounds__(DQ_THREADS)                                                       \
        dequantize_f16_##name(const rf_u8* w, rf_i64 row_bytes, rf_u16* out, int rows, int K) {        \
        dequantize_f16<T>(w, row_bytes, out, rows, K);                                                 \
    }

RF_WEIGHT_TYPES(RF_DQ_ENTRY)
