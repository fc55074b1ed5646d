"""Device tensors: a shape and strides over a CuPy buffer, for activations (f32, f16, i32) and for weights
in their GGUF blocks; the scalar argument types of kernel launches."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...ir.graph import contiguous_strides
from ...ir.ops import ITEMSIZE, NP_DTYPES

# GGUF weight types the kernels read natively (their names as the IR writes them)
NATIVE_WEIGHTS = ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
# (elements, bytes) per block
BLOCK = {
    "f32": (1, 4),
    "f16": (1, 2),
    "bf16": (1, 2),
    "q4_0": (32, 18),
    "q4_1": (32, 20),
    "q5_0": (32, 22),
    "q8_0": (32, 34),
    "q4_k": (256, 144),
    "q6_k": (256, 210),
    "i32": (1, 4),
}


@dataclass
class DevTensor:
    """A tensor on the device: `shape`/`strides` (elements) over `buf` (a CuPy array) from byte `offset`.

    dtype is an activation dtype (f32, f16, i32) or, for weights in GGUF blocks, the type's name (q4_0,
    bf16, ...; then strides are unused and rows are `row_bytes` apart).
    """

    buf: Any
    offset: int
    shape: tuple[int, ...]
    dtype: str
    strides: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if not self.strides:
            self.strides = contiguous_strides(self.shape)

    @property
    def ptr(self) -> int:
        return int(self.buf.data.ptr) + self.offset

    @property
    def n_elements(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return ITEMSIZE[self.dtype]

    @property
    def row_bytes(self) -> int:
        bs, ts = BLOCK[self.dtype]
        return self.shape[-1] // bs * ts

    @property
    def nbytes(self) -> int:
        if self.dtype in ITEMSIZE:
            return self.n_elements * self.itemsize
        return math.prod(self.shape[:-1]) * self.row_bytes

    @property
    def is_contiguous(self) -> bool:
        return all(
            s == c
            for n, s, c in zip(self.shape, self.strides, contiguous_strides(self.shape), strict=True)
            if n > 1
        )

    def with_shape(self, shape: Sequence[int]) -> DevTensor:
        return DevTensor(self.buf, self.offset, tuple(shape), self.dtype)


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def i32(v: int) -> np.int32:
    return np.int32(v)


def i64(v: int) -> np.int64:
    return np.int64(v)


def f32(v: float) -> np.float32:
    return np.float32(v)


def download(cp: Any, t: DevTensor) -> np.ndarray:
    """A device tensor (any strides) as a contiguous host array."""
    if t.dtype not in ITEMSIZE:
        raise NotImplementedError(f"download of a {t.dtype} tensor")
    item = ITEMSIZE[t.dtype]
    span = 1 + sum((n - 1) * s for n, s in zip(t.shape, t.strides, strict=True)) if t.n_elements else 0
    host = cp.asnumpy(t.buf[t.offset : t.offset + span * item]).view(NP_DTYPES[t.dtype])
    view = np.lib.stride_tricks.as_strided(host, shape=t.shape, strides=[s * item for s in t.strides])
    return np.array(view)
