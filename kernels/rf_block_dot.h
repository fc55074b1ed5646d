// rf_block_dot.h: the int8 dot product of a whole Q4_0 / Q8_0 block (read as aligned words) against x from
// quantize_x8, for mul_mat_vec_xr (and dev/'s mul_mat_vec_xb).
//   MB_<type>::dot(words, sh, x elements 0-15, x elements 16-31, (scale, sum) of x) -> float
// Tunables (-D): RF_MMVB_CHAINS (1: dp4a accumulators per block and row; Q4_0 only where RF_MMV_HI16 is 0),
// RF_MMV_HI16 (1: Q4_0's high nibbles masked in place, multiplied as unsigned bytes where the hardware has
// that dp4a).
#pragma once
#include "rf_compat.h"
#include "rf_quant.h"

#ifndef RF_MMVB_CHAINS
#define RF_MMVB_CHAINS 1  // independent dp4a accumulators per block and row (1: one dependent chain of 8)
#endif
#ifndef RF_MMV_HI16
#define RF_MMV_HI16 1  // Q4_0 high nibbles through an unsigned x signed dp4a where the hardware has one
#endif

// bits sh .. sh + 31 of hi:lo (sh 16 or 32): a word of a block that starts on, or 2 bytes off, a word
RF_DEV rf_u32 mmvb_funnel(rf_u32 lo, rf_u32 hi, int sh) {
    return (rf_u32)((((unsigned long long)hi << 32) | lo) >> sh);
}

RF_DEV int mmvb_sum(const int (&s)[RF_MMVB_CHAINS]) {
    int t = s[0];
#pragma unroll
    for (int c = 1; c < RF_MMVB_CHAINS; ++c) t += s[c];
    return t;
}

// Q4_0 block: d (f16) then 16 bytes of nibbles; byte i holds elements i (low) and 16 + i (high). wd: the 5
// aligned words from the block's start rounded down to 4; sh 16: d in wd[0]'s low half, else (32) its high.
struct MB_Q4_0 {
    static constexpr int BYTES = 18, WORDS = 5;
    static constexpr bool NIB = true;  // x: elements 0-15 of each block at 16 b, 16-31 at K / 2 + 16 b
    RF_DEV static float dot(const rf_u32 (&wd)[WORDS], int sh, const int4& xa, const int4& xb, float2 xd) {
        const float d = rf_h2f((rf_u16)(wd[0] >> (sh - 16)));
        const int xl[4] = {xa.x, xa.y, xa.z, xa.w}, xh[4] = {xb.x, xb.y, xb.z, xb.w};
#if RF_MMV_HI16 && RF_HAS_DP4A_US
        // high nibbles masked in place: 16 x their dot in a chain of its own, no shifts (3 instructions less)
        int lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const rf_u32 q = mmvb_funnel(wd[k], wd[k + 1], sh);
            lo = rf_dp4a((int)(q & RF_NIB_LO), xl[k], lo);
            hi = rf_dp4a_us(q & ~RF_NIB_LO, xh[k], hi);
        }
        const int s = lo + (hi >> 4);  // hi is a multiple of 16: the shift is exact
#else
        int c[RF_MMVB_CHAINS] = {};
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const rf_u32 q = mmvb_funnel(wd[k], wd[k + 1], sh);
            c[(2 * k) % RF_MMVB_CHAINS] = rf_dp4a((int)(q & RF_NIB_LO), xl[k], c[(2 * k) % RF_MMVB_CHAINS]);
            c[(2 * k + 1) % RF_MMVB_CHAINS] =
                rf_dp4a((int)((q >> 4) & RF_NIB_LO), xh[k], c[(2 * k + 1) % RF_MMVB_CHAINS]);
        }
        const int s = mmvb_sum(c);
#endif
        return d * (xd.x * (float)s - 8.0f * xd.y);  // nibbles are q + 8: -8 * sum(x) of the block
    }
};

// Q8_0 block: d (f16) then 32 int8; x in element order
struct MB_Q8_0 {
    static constexpr int BYTES = 34, WORDS = 9;
    static constexpr bool NIB = false;  // x: elements 0-15 of each block at 32 b, 16-31 at 32 b + 16
    RF_DEV static float dot(const rf_u32 (&wd)[WORDS], int sh, const int4& xa, const int4& xb, float2 xd) {
        const float d = rf_h2f((rf_u16)(wd[0] >> (sh - 16)));
        const int xv[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
        int s[RF_MMVB_CHAINS] = {};
#pragma unroll
        for (int k = 0; k < 8; ++k) {
            const int c = k % RF_MMVB_CHAINS;
            s[c] = rf_dp4a((int)mmvb_funnel(wd[k], wd[k + 1], sh), xv[k], s[c]);
        }
        return d * xd.x * (float)mmvb_sum(s);
    }
};
