"""SAMPLE's definition: seeded sampling that every backend computes bit for bit (numpy_ref.SAMPLE, the
device kernel kernels/sample.hip, and the engine's draws on the host all follow it)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# ---- SAMPLE: seeded sampling that every backend computes bit for bit ------------------------------------
#
# Floats only where each step is one IEEE f32 operation (a subtraction, two multiplications: no sum, no
# exp, no division, nothing to contract into an FMA); integers everywhere else, so the order of a device's
# reductions cannot change a result. Subnormals are kept (numpy, NVRTC's and HIP's defaults: no flush).

_M32 = 0xFFFFFFFF
PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # Philox4x32-10's multipliers and key increments (Random123)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
# 2^-t, t in [0, 1) in Q20, by Horner on the Taylor series of exp(-t ln 2): these are ln(2) / i in Q30 for
# i = 10..1 (kernels/sample.hip holds the same literals); error under 3 units of Q30
EXP2_Q30 = (74426112, 82695680, 93032640, 106323017, 124043520, 148852224, 186065279, 248087039, 372130559,
            744261118)
ONE_Q30 = 1 << 30
ONE_Q24 = 1 << 24


def philox4x32_10(ctr: Sequence[int], key: Sequence[int]) -> tuple[int, int, int, int]:
    """Philox4x32-10 (Salmon et al. 2011, Random123's philox4x32 with 10 rounds): 4 u32 words of ctr and 2
    of key -> 4 u32 words."""
    c0, c1, c2, c3 = (int(c) & _M32 for c in ctr)
    k0, k1 = (int(k) & _M32 for k in key)
    for r in range(10):
        if r:
            k0, k1 = (k0 + PHILOX_W[0]) & _M32, (k1 + PHILOX_W[1]) & _M32
        p0, p1 = PHILOX_M[0] * c0, PHILOX_M[1] * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 & _M32, (p0 >> 32) ^ c3 ^ k1, p0 & _M32
    return c0, c1, c2, c3


def sample_params(seed: int, counter: int, temperature: float, top_k: int = 0, top_p: float = 1.0
                  ) -> np.ndarray:
    """SAMPLE's params, i32 [8]: seed's low and high words (0 <= seed < 2^64), the counter (row r of a run
    draws with counter + r, mod 2^32), top_k (0: no cut), the bits of the f32 `scale` = log2(e) /
    temperature (rounded once from float64; 0 at temperature 0: greedy), top_p in Q24 (round(top_p *
    2^24), 2^24: no cut), two zero words."""
    if not 0 <= seed < 1 << 64:
        raise ValueError(f"seed must be in [0, 2^64), got {seed}")
    with np.errstate(over="ignore"):
        scale = np.float32(math.log2(math.e) / temperature) if temperature > 0 else np.float32(0)
    words = [seed & _M32, seed >> 32, counter & _M32, max(0, int(top_k)), int(scale.view(np.uint32)),
             min(ONE_Q24, max(0, round(top_p * ONE_Q24))), 0, 0]
    return np.array(words, np.uint32).view(np.int32)


def f32_keys(x: np.ndarray) -> np.ndarray:
    """u32 keys that order f32 values as numbers do (-0 as +0; NaN has none: callers drop it)."""
    bits = np.ascontiguousarray(x, np.float32).view(np.uint32)
    bits = np.where(bits == 0x80000000, np.uint32(0), bits)
    return np.where(bits & 0x80000000, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)


def exp2_q30(y: np.ndarray) -> np.ndarray:
    """u64 weights 2^-y in Q30 of f32 y >= 0: 0 where y >= 32 (or NaN); else Y = floor(y * 2^20) (exact),
    2^-(Y mod 2^20) by EXP2_Q30's Horner steps (products shifted right, truncating), shifted right by
    Y >> 20. y = 0 weighs exactly 2^30."""
    y = np.asarray(y, np.float32)
    ok = y < np.float32(32)
    yfx = np.where(ok, y, np.float32(0)) * np.float32(1 << 20)  # exact: a power of two, y < 32
    yfx = yfx.astype(np.uint64)
    f = yfx & np.uint64((1 << 20) - 1)
    r = np.full(y.shape, ONE_Q30, np.uint64)
    for a in EXP2_Q30:
        r = ONE_Q30 - ((((a * f) >> 20) * r) >> 30)
    return np.where(ok, r >> (yfx >> 20), np.uint64(0))


def sample_logits(logits: np.ndarray, params: np.ndarray, max_k: int | None = None) -> np.ndarray:
    """SAMPLE's definition: a token a row of logits f32 [n, V] (i32 [n]; [V] gives a 0-d array), drawn as
    params (sample_params) say, from at most max_k candidates (None: no bound; SAMPLE's: SAMPLE_MAX_K).
    Row r, its values x:

    1. A NaN anywhere: the first NaN's index (numpy's argmax).
    2. Candidates c_0..c_{K-1}: the K largest values in decreasing order, -0 equal to +0, ties to the lower
       index; K = min(top_k (0 or less: V), max_k, V).
    3. scale = params[4] as f32; scale not in (0, inf) (temperature 0) or x[c_0] infinite: c_0, which is
       numpy's argmax.
    4. Weights w_j = exp2_q30(f32(f32(x[c_0] - x[c_j]) * scale)), integers (w_0 = 2^30); cum_j = w_0 + ..
       + w_j, exact (u64).
    5. Nucleus: P = params[5] clamped to [0, 2^24]; c_0..c_m, m the first j with cum_j >= ceil(P *
       cum_{K-1} / 2^24).
    6. Draw: u = the first word of Philox4x32-10 with counter (params[2] + r mod 2^32, 0, 0, 0) and key
       (params[0], params[1]), shifted right by 8 (24 bits); target = (u * cum_m) >> 24; the token is c_j
       for the first j with cum_j > target.
    """
    x2 = np.asarray(logits, np.float32)
    x2 = x2.reshape(-1, x2.shape[-1])
    p = [int(v) for v in np.asarray(params).astype(np.int32)]  # as i32
    seed_lo, seed_hi, counter, top_k = p[0] & _M32, p[1] & _M32, p[2] & _M32, p[3]
    scale = np.array(p[4], np.int32).view(np.float32)[()]
    top_p = min(ONE_Q24, max(0, p[5]))
    V = x2.shape[1]
    K = min(int(top_k) if top_k > 0 else V, V if max_k is None else max_k, V)
    greedy = not 0 < scale < np.inf
    out = np.empty(len(x2), np.int32)
    for r, x in enumerate(x2):
        nan = np.isnan(x)
        if nan.any():
            out[r] = int(np.argmax(nan))
            continue
        keys = f32_keys(x)
        c0 = int(np.argmax(keys))  # the first maximum
        if greedy or not np.isfinite(x[c0]):
            out[r] = c0
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            y = (x[c0] - x) * scale  # f32 - f32, then f32 * f32
        # only y < 32 weighs anything: those values are a prefix of the candidates' order (ties whole), so
        # the candidates past it change no sum and are never drawn
        live = np.flatnonzero(y < np.float32(32))
        order = (~keys[live]).astype(np.uint64) << np.uint64(32) | live.astype(np.uint64)  # ascending: the
        if K < len(order):  # candidates' order (value down, then index up); each unique
            order = np.partition(order, K - 1)[:K]
        cand = (np.sort(order) & np.uint64(_M32)).astype(np.int64)
        cum = np.cumsum(exp2_q30(y[cand]), dtype=np.uint64)
        thr = (top_p * int(cum[-1]) + ONE_Q24 - 1) >> 24  # Python ints: cum may pass 2^40 (no bound)
        m = int(np.argmax(cum >= thr))
        u = philox4x32_10(((counter + r) & _M32, 0, 0, 0), (seed_lo, seed_hi))[0] >> 8
        target = (u * int(cum[m])) >> 24
        out[r] = cand[int(np.argmax(cum[: m + 1] > target))]
    return out.reshape(np.shape(logits)[:-1])


