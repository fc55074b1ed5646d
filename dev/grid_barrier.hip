// grid_barrier.hip (dev: measurement only): the latency floor of a decode step's stages in the two designs
// issue 19 weighs. stage_kernel: one stage as a kernel of its own (RF_PDL_BEGIN, then a store), launched
// n times back to back (a replayed graph, with or without programmatic launch): today's design, ~200
// kernels a step. persistent_stages: one kernel whose n stages are separated by device-wide barriers (a
// counter and a generation word in global memory; every block must be resident: grid <= the blocks the
// device holds at once), as a persistent (mega)kernel would run them.
// Launch: stage_kernel grid (blocks), 128 threads; persistent_stages grid (blocks), 128 threads, and
// sync[2] zeroed before the first launch (each barrier leaves the counter at zero).
// Tunables: none. Bytes: a store a block per stage (out[blockIdx.x]), the barrier's atomics.
#include "rf_compat.h"

RF_KERNEL void __launch_bounds__(128) stage_kernel(unsigned* out, unsigned stage) {
    RF_PDL_BEGIN();
    if (threadIdx.x == 0) out[blockIdx.x] = stage;
}

// every block of the grid waits here until all have arrived: the last to arrive resets the counter and
// bumps the generation the others spin on
RF_DEV void rf_grid_sync(unsigned* count, volatile unsigned* gen, unsigned blocks) {
    __syncthreads();
    if (threadIdx.x == 0) {
        const unsigned g = *gen;
        __threadfence();
        if (atomicAdd(count, 1u) == blocks - 1) {
            *count = 0u;
            __threadfence();
            atomicAdd((unsigned*)gen, 1u);
        } else {
            while (*gen == g) {
            }
        }
        __threadfence();
    }
    __syncthreads();
}

RF_KERNEL void __launch_bounds__(128) persistent_stages(unsigned* out, unsigned* sync, unsigned n_stages) {
    for (unsigned s = 0; s < n_stages; ++s) {
        if (threadIdx.x == 0) out[blockIdx.x] = s;
        rf_grid_sync(sync, sync + 1, gridDim.x);
    }
}
