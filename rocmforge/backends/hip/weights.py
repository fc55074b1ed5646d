"""Weights on the device: in which form each GGUF tensor is uploaded, what that costs, and the upload."""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ... import quant
from ...ir.ops import MUL_MAT_OPS, NORM_MUL_MAT_OPS, Op
from .tensor import NATIVE_WEIGHTS, DevTensor

log = logging.getLogger("rocmforge.hip")

# weights read by the weight kernels in their blocks; any other use wants plain f32 (MUL_MAT_ADD's b, a
# weight when it is a bias, is 1-D: f32 or f16 as stored, else converted to f32)
WEIGHT_OPS = {*MUL_MAT_OPS, *NORM_MUL_MAT_OPS, Op.GET_ROWS}


def device_form(qtype: quant.QType, shape: tuple[int, ...], uses: set[Op]) -> str:
    """How a weight of this type lives on the device: "raw" (its GGUF bytes, read by the kernels in their
    blocks), or converted at upload to "f16" (a type no kernel reads) or "f32" (other uses)."""
    tname = quant.QType(qtype).name.lower()
    blocks_only = uses <= WEIGHT_OPS and len(shape) == 2
    if tname in ("f32", "f16") or (tname in NATIVE_WEIGHTS and blocks_only):
        return "raw"
    return "f16" if blocks_only else "f32"


def device_bytes(form: str, shape: tuple[int, ...], gguf_bytes: int) -> int:
    """Bytes a weight takes on the device in `form` (device_form)."""
    return gguf_bytes if form == "raw" else math.prod(shape) * (2 if form == "f16" else 4)


def upload(cupy: Any, a: np.ndarray) -> Any:
    """a's bytes in a new device buffer (at least one byte)."""
    b = np.ascontiguousarray(np.asarray(a)).reshape(-1).view(np.uint8)
    d = cupy.empty(max(1, b.size), dtype=np.uint8)
    if b.size:
        d[: b.size].set(b)
    return d


def upload_weight(cupy: Any, name: str, raw: np.ndarray, qtype: quant.QType, shape: tuple[int, ...],
                  uses: set[Op]) -> DevTensor:
    """The weight on the device in its device_form."""
    qt = quant.QType(qtype)
    form = device_form(qt, shape, uses)
    if form == "raw":
        return DevTensor(upload(cupy, raw), 0, shape, qt.name.lower())
    if form == "f16":
        log.warning("weight %s: GGML type %s has no kernel; converted to f16 at upload", name, qt.name)
        return DevTensor(upload(cupy, quant.dequantize(raw, qt, shape).astype(np.float16)), 0, shape, "f16")
    return DevTensor(upload(cupy, quant.dequantize(raw, qt, shape)), 0, shape, "f32")
