"""MUL_MAT's prefill path through the vendor BLAS (mul_mat_blas, a row of kernel_choice's table): x and the
weight's rows in f16 (the copy kernel, dequantize.hip) through one scratch buffer, then the library's GEMM
with f32 arithmetic and f32 output.

The mapping: row-major out [M, N] = x [M, K] @ w [N, K]^T is, read column-major, C (N x M, ldc = N) =
A^T B with A = w's rows stored K x N (lda = K) and B = x's rows stored K x M (ldb = K): `gemm_rows`.
`blas_steps` lays one node out as conversions of x, dequantizations of weight tiles and GEMMs over the
shared scratch (tiled as kernel_choice.blas_tiles says); launch_mul_mat runs those steps.

The libraries, one object per backend (its own workspace) on a handle per process and device:
- cuBLAS (`Cublas`), called through ctypes on a handle of our own: CuPy's cupy.cuda.cublas refuses every
  call while the stream captures (its setStream raises NotImplementedError on CUDA), and HipBackend
  captures whole steps, prefill's included. libcublas is the one CuPy loaded.
- hipBLAS (`CupyBlas`), through CuPy's cupy.cuda.cublas, which maps it to hipBLAS on ROCm and lets calls
  through while a stream captures there. Unmeasured and its capture untried: kernel_choice's defaults
  choose it only when asked (prefill "blas").

Capture (CUDA graphs): a cuBLAS call is captured as its kernels where it neither allocates nor
synchronizes. This relies on (a) host pointer mode: alpha and beta are read at the call and kept in the
captured nodes (cuBLAS's "CUDA Graphs support"); (b) a workspace of our own (cublasSetWorkspace), allocated
at prepare and set again after every cublasSetStream (which resets the handle to its default pool), so no
call takes memory (before CUDA 12.2 cuBLAS allocated a workspace per capture, since then by
cudaMallocAsync); (c) HipBackend.run's eager first run of every plan, which calls each GEMM once outside
any capture (kernels loaded, heuristics cached). hipBLAS: CuPy exposes no workspace call; rocBLAS sizes its
device memory in that eager first run.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .launch_geometry import BlasTiles
from .tensor import cdiv

# cuBLAS / CUDA enum values (cublas_api.h, library_types.h); CuPy's hipBLAS layer maps the same values
CUBLAS_OP_N, CUBLAS_OP_T = 0, 1
CUDA_R_32F, CUDA_R_16F = 0, 2
CUBLAS_COMPUTE_32F = 68  # f32 arithmetic, no TF32
CUBLAS_GEMM_DEFAULT = -1
CUBLAS_POINTER_MODE_HOST = 0
DATA_TYPE = {"f16": CUDA_R_16F, "f32": CUDA_R_32F}
ITEM = {"f16": 2, "f32": 4}
# cuBLAS's recommended workspace on Hopper (4 MiB elsewhere): one per backend
WORKSPACE_BYTES = 32 << 20


@dataclass(frozen=True)
class GemmCall:
    """One column-major GEMM as cublasGemmEx takes it: C (m x n, ldc) = A^T B + beta C, A stored k x m
    (lda), B stored k x n (ldb), both of type `ab` ("f16", "f32"); C f32, f32 arithmetic. a, b, c: device
    addresses."""

    m: int
    n: int
    k: int
    a: int
    lda: int
    b: int
    ldb: int
    c: int
    ldc: int
    ab: str
    beta: float = 0.0


def gemm_rows(
    out: int, ld_out: int, w: int, ld_w: int, x: int, ld_x: int, M: int, N: int, K: int, ab: str, beta: float
) -> GemmCall:
    """Row-major out [M, N] (rows ld_out elements apart, f32) = x [M, K] (rows ld_x apart) @ w [N, K]^T
    (rows ld_w apart) + beta out, as the column-major GEMM: C = out (N x M, ldc = ld_out), A = w (K x N,
    lda = ld_w) transposed, B = x (K x M, ldb = ld_x)."""
    return GemmCall(N, M, K, w, ld_w, x, ld_x, out, ld_out, ab, beta)


@dataclass(frozen=True)
class ToF16:
    """Convert x's rows [m0, m0 + rows) (f32, dense) to f16 at dst (dense [rows, K])."""

    m0: int
    rows: int
    dst: int


@dataclass(frozen=True)
class Dequantize:
    """Dequantize the weight's rows [n0, n0 + rows) (the first at src) to f16 at dst (dense [rows, K])."""

    n0: int
    rows: int
    src: int
    dst: int


Step = ToF16 | Dequantize | GemmCall


def blas_steps(
    tiles: BlasTiles,
    M: int,
    N: int,
    K: int,
    w: int,
    w_row_bytes: int,
    x: int,
    x_dtype: str,
    out: int,
    scratch: int,
    beta: float = 0.0,
) -> list[Step]:
    """One node's work in order: per chunk of m_tile tokens, x's rows to f16 at the scratch's start (unless
    x already is of the GEMM's type: then read in place), then per tile of n_tile weight rows its
    dequantization after the scratch's x_bytes (once for all chunks where one tile covers w; none where
    the GEMM reads w as it is) and its GEMM into out's block. w, x, out, scratch: device addresses; x dense
    [M, K] of x_dtype, out dense f32 [M, N]; beta 1: out holds an addend to keep."""
    ab, item = tiles.ab, ITEM[tiles.ab]
    convert = ab == "f16" and x_dtype != "f16"
    dequant = tiles.w_bytes > 0
    w_dst = scratch + tiles.x_bytes
    one_tile = cdiv(N, tiles.n_tile) == 1
    steps: list[Step] = []
    for m0 in range(0, M, tiles.m_tile):
        mt = min(tiles.m_tile, M - m0)
        if convert:
            steps.append(ToF16(m0, mt, scratch))
            xb = scratch
        else:
            xb = x + m0 * K * item
        for n0 in range(0, N, tiles.n_tile):
            nt = min(tiles.n_tile, N - n0)
            src = w + n0 * w_row_bytes
            if dequant:
                if m0 == 0 or not one_tile:
                    steps.append(Dequantize(n0, nt, src, w_dst))
                a, lda = w_dst, K
            else:
                a, lda = src, w_row_bytes // item
            steps.append(gemm_rows(out + 4 * (m0 * N + n0), N, a, lda, xb, K, mt, nt, K, ab, beta))
    return steps


# ---- the libraries --------------------------------------------------------------------------------------


def _loaded_path(prefix: str) -> str | None:
    """The path of a shared library this process has mapped whose file name starts with prefix."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                if len(parts) == 6 and os.path.basename(parts[5].strip()).startswith(prefix):
                    return parts[5].strip()
    except OSError:
        pass
    return None


def _libcublas_path() -> str:
    """libcublas as CuPy found it (importing CuPy's wrapper loads it: cuda-pathfinder or the toolkit), else
    where cuda-pathfinder or the loader finds one."""
    from cupy.cuda import cublas  # noqa: F401

    path = _loaded_path("libcublas.so")
    if path:
        return path
    try:
        from cuda import pathfinder

        return pathfinder.load_nvidia_dynamic_lib("cublas").abs_path
    except Exception:
        pass
    found = ctypes.util.find_library("cublas")
    if found:
        return found
    raise OSError("libcublas is neither loaded by CuPy nor found by cuda-pathfinder or the loader")


class _CublasFns:
    """The few libcublas entry points the GEMM needs, with their C signatures."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        p, i, st = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        self.create = self._fn(lib, ("cublasCreate_v2", "cublasCreate"), [ctypes.POINTER(p)])
        self.set_stream = self._fn(lib, ("cublasSetStream_v2", "cublasSetStream"), [p, p])
        self.set_workspace = self._fn(lib, ("cublasSetWorkspace_v2", "cublasSetWorkspace"), [p, p, st])
        self.set_pointer_mode = self._fn(lib, ("cublasSetPointerMode_v2", "cublasSetPointerMode"), [p, i])
        gemm = [p, i, i, i, i, i, p, p, i, i, p, i, i, p, p, i, i, i, i]
        self.gemm_ex = self._fn(lib, ("cublasGemmEx",), gemm)
        self.status_name = getattr(lib, "cublasGetStatusName", None)
        if self.status_name is not None:
            self.status_name.argtypes, self.status_name.restype = [i], ctypes.c_char_p

    @staticmethod
    def _fn(lib: ctypes.CDLL, names: tuple[str, ...], argtypes: list) -> Any:
        for name in names:
            f = getattr(lib, name, None)
            if f is not None:
                f.argtypes, f.restype = argtypes, ctypes.c_int
                return f
        raise AttributeError(f"libcublas has none of {', '.join(names)}")

    def check(self, status: int, what: str) -> None:
        if status != 0:
            name = self.status_name(status).decode() if self.status_name is not None else ""
            raise RuntimeError(f"{what} failed: cuBLAS status {status} {name}".rstrip())


# device id -> (entry points, handle): one cuBLAS handle per process and device, as CuPy keeps its own
_HANDLES: dict[int, tuple[_CublasFns, ctypes.c_void_p]] = {}


class Cublas:
    """cuBLAS's GEMM on CuPy's current stream (the backend's, in runs and captures) with a workspace of this
    object's own, allocated by prepare."""

    name = "cublas"

    def __init__(self, cupy: Any) -> None:
        self._cupy = cupy
        dev = int(cupy.cuda.Device().id)
        shared = _HANDLES.get(dev)
        if shared is None:
            fns = _CublasFns(ctypes.CDLL(_libcublas_path()))
            handle = ctypes.c_void_p()
            fns.check(fns.create(ctypes.byref(handle)), "cublasCreate")
            fns.check(fns.set_pointer_mode(handle, CUBLAS_POINTER_MODE_HOST), "cublasSetPointerMode")
            shared = _HANDLES[dev] = (fns, handle)
        self._f, self._h = shared
        self._alpha = ctypes.c_float(1.0)
        self._betas = {0.0: ctypes.c_float(0.0), 1.0: ctypes.c_float(1.0)}
        self.workspace: Any = None

    def prepare(self) -> None:
        """The workspace, once: at prepare, never during a run (nor a capture)."""
        if self.workspace is None:
            self.workspace = self._cupy.empty(WORKSPACE_BYTES, dtype=np.uint8)

    def gemm(self, g: GemmCall) -> None:
        f, h = self._f, self._h
        f.check(f.set_stream(h, self._cupy.cuda.get_current_stream().ptr), "cublasSetStream")
        # after every cublasSetStream, which resets the handle to cuBLAS's own workspace pool
        f.check(f.set_workspace(h, self.workspace.data.ptr, WORKSPACE_BYTES), "cublasSetWorkspace")
        t, alpha, beta = DATA_TYPE[g.ab], ctypes.byref(self._alpha), ctypes.byref(self._betas[g.beta])
        status = f.gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, g.m, g.n, g.k, alpha, g.a, t, g.lda, g.b, t, g.ldb,
                           beta, g.c, CUDA_R_32F, g.ldc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT)
        f.check(status, f"cublasGemmEx ({g.m} x {g.n} x {g.k}, {g.ab})")


class CupyBlas:
    """The GEMM through CuPy's cupy.cuda.cublas (hipBLAS on ROCm), on CuPy's handle and current stream."""

    name = "hipblas"

    def __init__(self, cupy: Any) -> None:
        from cupy.cuda import cublas, device

        self._lib, self._h = cublas, device.get_cublas_handle()
        self._alpha = np.ones(1, np.float32)
        self._betas = {0.0: np.zeros(1, np.float32), 1.0: np.ones(1, np.float32)}

    def prepare(self) -> None:
        pass

    def gemm(self, g: GemmCall) -> None:
        lib, t = self._lib, DATA_TYPE[g.ab]
        lib.setPointerMode(self._h, CUBLAS_POINTER_MODE_HOST)
        # compute type as a data type (CUDA_R_32F): CuPy's hipBLAS layer maps it to HIPBLAS_COMPUTE_32F, and
        # takes only the default algorithm
        lib.gemmEx(self._h, CUBLAS_OP_T, CUBLAS_OP_N, g.m, g.n, g.k, self._alpha.ctypes.data, g.a, t, g.lda,
                   g.b, t, g.ldb, self._betas[g.beta].ctypes.data, g.c, CUDA_R_32F, g.ldc, CUDA_R_32F,
                   CUBLAS_GEMM_DEFAULT)


def open_blas(cupy: Any, is_hip: bool) -> tuple[Cublas | CupyBlas | None, str]:
    """The vendor BLAS for this backend and "", or None and why there is none."""
    try:
        return (CupyBlas(cupy) if is_hip else Cublas(cupy)), ""
    except Exception as e:
        return None, f"{'hipBLAS' if is_hip else 'cuBLAS'}: {type(e).__name__}: {e}"
