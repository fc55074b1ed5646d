// get_rows.hip: GET_ROWS: out[i, :] = a[idx[i], :] as f32, a in GGUF blocks or a plain float/int type.
//
// Launch: grid (ceil(D / (8 * 128)), n), block 128 threads; each thread writes 8 consecutive elements
// (one deq8 of the source row; element by element for the `_s` float variants whose rows are not a
// multiple of 8). An index outside [0, R) leaves its output row unwritten.
// Tunables: none.
// Floor: n rows of a (n * row_bytes) read + n * D * 4 bytes written.
#include "rf_compat.h"
#include "rf_quant.h"

#define GR_THREADS 128

template <class T>
__device__ void get_rows(const rf_u8* __restrict__ a, rf_i64 row_bytes, int R, const int* __restrict__ idx,
                         float* __restrict__ out, int D) {
    RF_PDL_BEGIN();
    const int i = blockIdx.y;
    const int k = (blockIdx.x * GR_THREADS + threadIdx.x) * 8;
    const int r = idx[i];
    if (k >= D || r < 0 || r >= R) return;
    const rf_u8* row = a + (rf_i64)r * row_bytes;
    float* o = out + (rf_i64)i * D + k;
    if constexpr (T::UNIT != 1) {
        float v[8];
        T::deq8(row, k, v);
#pragma unroll
        for (int j = 0; j < 8; ++j) o[j] = v[j];
    } else {
        for (int j = 0; j < 8 && k + j < D; ++j) o[j] = T::deq1(row, k + j);
    }
}

#define RF_GR_ENTRY(name, T)                                                                           \
    RF_KERNEL void __launch_bounds__(GR_THREADS)                                                       \
        get_rows_##name(const rf_u8* a, rf_i64 row_bytes, int R, const int* idx, float* out, int D) {  \
        get_rows<T>(a, row_bytes, R, idx, out, D);                                                     \
    }

RF_WEIGHT_TYPES(RF_GR_ENTRY)

// i32 rows (converted to f32, as numpy's astype)
RF_KERNEL void __launch_bounds__(GR_THREADS)
    get_rows_i32(const int* a, int R, const int* idx, float* out, int D) {
    RF_PDL_BEGIN();
    const int i = blockIdx.y;
    const int k0 = (blockIdx.x * GR_THREADS + threadIdx.x) * 8;
    const int r = idx[i];
    if (r < 0 || r >= R) return;
    for (int k = k0; k < k0 + 8 && k < D; ++k) out[(rf_i64)i * D + k] = (float)a[(rf_i64)r * D + k];
}
