// chain.hip: the decode chain (HipBackend.run_chain, Engine.decode): after a replayed one-token decode step,
// its greedy token (ARGMAX's output) becomes the next step's input token, the position advances and the
// token is kept in ring[i] and its logit in ring_v[i] (NaN or +Inf there: the step's logits were not finite,
// as ARGMAX ranks NaN first), all on the device, so that steps follow one another without the host.
// Launch: grid 1, block 1, a plain launch between two graph replays (stream order). No tunables.
// Bytes: 8 read (the token, its logit), 4 read + 4 written (the position), 12 written.
#include "rf_compat.h"

RF_KERNEL void chain_advance(const int* argmax, const float* logits, int* token, int* pos, int* ring,
                             float* ring_v, int i) {
    const int t = *argmax;
    ring[i] = t;
    ring_v[i] = logits[t];
    *token = t;
    *pos += 1;
}
