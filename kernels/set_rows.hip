// set_rows.hip: SET_ROWS: dst[idx[i], :] = src[i, :] converted to dst's type (overwrite, never add);
// the KV-cache write. dst is written in place and is the op's result.
//
// Launch: grid (ceil(W / 256), n), block 256; one thread per element of a row. Rows whose index is
// outside [0, R) are skipped (the reference raises; a kernel cannot).
// Tunables: block size.
// Floor: n * W * (src + dst element) bytes.
#include "rf_compat.h"

template <typename Ts, typename Td>
__device__ void set_rows(Td* __restrict__ dst, const Ts* __restrict__ src, const int* __restrict__ idx, int R,
                         int W) {
    RF_PDL_BEGIN();
    const int i = blockIdx.y, k = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = idx[i];
    if (k >= W || r < 0 || r >= R) return;
    rf_io<Td>::store(dst, (rf_i64)r * W + k, rf_io<Ts>::load(src, (rf_i64)i * W + k));
}

#define SR_ENTRY(ts, Ts, td, Td)                                                                       \
    RF_KERNEL void set_rows_##ts##_##td(Td* dst, const Ts* src, const int* idx, int R, int W) {        \
        set_rows<Ts, Td>(dst, src, idx, R, W);                                                         \
    }
SR_ENTRY(f32, float, f32, float)
SR_ENTRY(f32, float, f16, rf_u16)
SR_ENTRY(f16, rf_u16, f32, float)
SR_ENTRY(f16, rf_u16, f16, rf_u16)
