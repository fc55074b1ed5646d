// rf_split.h: one result split over blocks (attention over cache chunks, ARGMAX over a vocabulary): each
// block writes its partial, and the last block to finish merges them, in the same launch.
#pragma once
#include "rf_compat.h"

// Call after the block's partial writes, with every thread: whether this block is the last of the n that
// share `ticket` (an int that is zero before the first launch; the last block sets it back to zero for the
// next). Every thread gets the answer. In the last block the other blocks' partials are visible: read them
// past this SM's L1 (rf_ld_cg, or volatile pointers).
RF_DEV bool rf_last_block(int* ticket, int n) {
    __shared__ int last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
        last = atomicAdd(ticket, 1) == n - 1;
        if (last) *ticket = 0;
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}
