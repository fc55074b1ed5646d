"""MUL_MAT's vendor-BLAS prefill path (mul_mat_blas) without a GPU: which kernel the table chooses for which
token count, weight type, device and option; the tiling arithmetic of the shared scratch; the row-major to
column-major GEMM mapping against numpy; and the whole launcher (prepare_mul_mat) run on a numpy emulation
of the device: memory as one byte array, the copy and dequantize kernels executed from their launch
arguments as the kernels read them, and a GEMM with cuBLAS's column-major semantics."""

from __future__ import annotations

import math
import sys
import types

import matvec_launches as R
import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

from rocmforge import quant
from rocmforge.backends.hip import blas as B
from rocmforge.backends.hip import kernel_choice as C
from rocmforge.backends.hip import launch_geometry as G
from rocmforge.backends.hip.context import Ctx
from rocmforge.backends.hip.launch_mul_mat import kernel_type, prepare_mul_mat
from rocmforge.backends.hip.tensor import BLOCK, DevTensor
from rocmforge.backends.numpy_ref import MUL_MAT, MUL_MAT_ADD

H100 = G.Device(32, 132, 227 * 1024, 228 * 1024, "sm_90", blas="cublas")
Q = quant.QType
MIB = 1 << 20


def _weight(wt: str, N: int, K: int, ptr: int = 1 << 20) -> G.Weight:
    bs, ts = BLOCK[wt.removesuffix("_s")]
    return G.Weight(wt, N, K, K // bs * ts, ptr)


def _choose(wt: str, M: int, dev: G.Device = H100, opts: C.MatMulOptions | None = None, tunables=None,
            N: int = 4096, K: int = 4096) -> C.MulMatChoice:
    return C.choose_mul_mat(dev, opts or C.MatMulOptions(), tunables or {}, _weight(wt, N, K), M)


# ---- the choice -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("wt", C.KERNEL_TYPES)
def test_prefill_chooses_the_blas_on_cuda_and_decode_stays_on_the_mat_vecs(wt):
    K = 13 if wt.endswith("_s") else 4096
    for M in (1, 2, 4):
        assert _choose(wt, M, K=K).kernel.args == "mat_vec"
    for M in (5, 7, 64, 512, 2048):
        c = _choose(wt, M, K=K)
        assert c.kernel is C.MUL_MAT_BLAS and c.blas is not None and c.quantize is None, (wt, M)
        assert c.blas.ab == G.BLAS_AS_IS.get(wt, "f16")
        if wt in G.BLAS_AS_IS:  # the GEMM reads the weight as it is
            assert c.launch is None and c.blas.w_bytes == 0
        else:
            assert c.launch.file == "dequantize.hip" and c.launch.entry == f"dequantize_f16_{wt}"
            assert c.launch.grid == (math.ceil(c.blas.n_tile * K / 2048),) and c.launch.block == (256,)


def test_the_options_and_devices_that_keep_the_tiled_kernel():
    tiled = C.MatMulOptions(prefill="tiled")
    forced = C.MatMulOptions(prefill="blas")
    assert _choose("q4_0", 64, opts=tiled).kernel is C.MUL_MAT
    no_blas = G.Device(32, 132, family="sm_90")
    assert _choose("q4_0", 64, no_blas).kernel is C.MUL_MAT
    assert _choose("q4_0", 64, no_blas, forced).kernel is C.MUL_MAT  # nothing to call: the tiled kernel
    # the table without the row
    table = tuple(k for k in C.MUL_MAT_KERNELS if k is not C.MUL_MAT_BLAS)
    assert _choose("q4_0", 64, opts=C.MatMulOptions(kernels=table)).kernel is C.MUL_MAT
    # other CUDA GPUs: cuBLAS by default; ROCm (hipBLAS): only when asked, on every family
    assert _choose("q8_0", 64, G.Device(32, 108, family="other", blas="cublas")).kernel is C.MUL_MAT_BLAS
    for fam in ("gfx1100", "other"):
        amd = G.Device(32 if fam == "gfx1100" else 64, 48, family=fam, blas="hipblas")
        assert _choose("q4_0", 64, amd).kernel is C.MUL_MAT
        assert _choose("q4_0", 64, amd, forced).kernel is C.MUL_MAT_BLAS
    # forced, a token count the mat-vecs serve still goes to them (they come first in the table)
    assert _choose("q4_0", 3, opts=forced).kernel.args == "mat_vec"
    with pytest.raises(ValueError, match="prefill"):
        C.MatMulOptions(prefill="cublas")


def test_min_tokens_is_data_of_the_table(monkeypatch):
    """A measured crossover goes in the defaults: below min_tokens "auto" keeps the tiled kernel, "blas"
    does not."""
    base = dict(C.BLAS_DEFAULTS["sm_90"]["*"])
    monkeypatch.setitem(C.BLAS_DEFAULTS, "sm_90", {"*": {**base, "min_tokens": 32}})
    assert _choose("q4_0", 31).kernel is C.MUL_MAT and _choose("q4_0", 32).kernel is C.MUL_MAT_BLAS
    assert _choose("q4_0", 31, opts=C.MatMulOptions(prefill="blas")).kernel is C.MUL_MAT_BLAS


def test_too_small_a_scratch_falls_back_to_the_tiled_kernel():
    K = 4096
    small = {"RF_BLAS_SCRATCH": 2 * G.BLAS_TILE * 2 * K - 1}  # not 16 rows of x and 16 of w
    assert _choose("q4_0", 64, tunables=small).kernel is C.MUL_MAT
    fits = {"RF_BLAS_SCRATCH": 2 * G.BLAS_TILE * 2 * K + 256}
    c = _choose("q4_0", 64, tunables=fits)
    assert c.kernel is C.MUL_MAT_BLAS and (c.blas.m_tile, c.blas.n_tile) == (16, 16)
    assert _choose("f32", 64, tunables={"RF_BLAS_SCRATCH": 0}).kernel is C.MUL_MAT_BLAS  # no scratch needed


# ---- the tiling arithmetic ------------------------------------------------------------------------------


def test_llama_7b_and_qwen_shapes_in_the_default_64_mib():
    budget = C.BLAS_DEFAULTS["sm_90"]["*"]["scratch_bytes"]
    assert budget == 64 * MIB
    # attention / gate-up: x 4 MiB whole, 60 MiB of weight rows: 11008 in two tiles of 5504
    assert G.blas_tiles(512, 11008, 4096, budget, "f16", True) == (512, 5504, 4 * MIB, 5504 * 8192)
    assert G.blas_tiles(512, 4096, 4096, budget, "f16", True) == (512, 4096, 4 * MIB, 32 * MIB)
    # ffn_down: x 11 MiB, 4096 rows of 22016 bytes in two tiles
    m, n, xb, wb = G.blas_tiles(512, 4096, 11008, budget, "f16", True)
    assert (m, n, xb) == (512, 2048, 512 * 22016) and wb == 2048 * 22016
    # Qwen2-0.5B: every projection whole
    for N, K in ((896, 896), (128, 896), (4864, 896), (896, 4864)):
        assert G.blas_tiles(512, N, K, budget, "f16", True)[:2] == (512, N)
    # f16 weights: x alone; f32 weights: nothing
    assert G.blas_tiles(512, 4096, 4096, budget, "f16", False) == (512, 4096, 4 * MIB, 0)
    assert G.blas_tiles(512, 4096, 4096, 0, "f32", False) == (512, 4096, 0, 0)


@pytest.mark.parametrize("dequant", [True, False])
def test_tiles_fit_the_budget_cover_the_node_and_are_as_few_as_can_be(dequant):
    rng = np.random.default_rng(0)
    for _ in range(3000):
        M, N = int(rng.integers(5, 3000)), int(rng.integers(1, 40000))
        K = int(rng.choice([13, 64, 96, 896, 4096, 11008]))
        budget = int(rng.integers(0, 96 * MIB))
        t = G.blas_tiles(M, N, K, budget, "f16", dequant)
        row = 2 * K
        x_cap = (budget // 2 if dequant else budget) // row
        if x_cap < min(M, G.BLAS_TILE):
            assert t is None
            continue
        if t is None:  # then the weight's rows did not fit beside x's
            m = G._split(M, x_cap)
            assert dequant and max(0, budget - math.ceil(m * row / 256) * 256) // row < min(N, G.BLAS_TILE)
            continue
        m, n, xb, wb = t
        assert xb + wb <= budget and xb >= m * row and wb == (n * row if dequant else 0)
        assert n == N if not dequant else 0 < n <= N
        for size, total, cap in ((m, M, x_cap), (n, N, (budget - xb) // row if dequant else N)):
            if size < total:  # tiled: multiples of BLAS_TILE, the fewest tiles the cap allows
                assert size % G.BLAS_TILE == 0 and size <= cap
                assert math.ceil(total / size) == math.ceil(total / (cap // G.BLAS_TILE * G.BLAS_TILE))
            else:
                assert size == total


# ---- the GEMM mapping and the schedule, on numpy memory -------------------------------------------------


class Heap:
    """Device memory as one numpy byte array; addresses from BASE, allocations 256-byte aligned."""

    BASE = 1 << 24

    def __init__(self, nbytes: int = 96 * MIB) -> None:
        self.mem = np.zeros(nbytes, np.uint8)
        self.top = 0
        self.allocs = 0

    def empty(self, nbytes: int, dtype=None) -> R.FakeBuf:  # cupy.empty
        ptr = self.BASE + self.top
        self.top += -(-int(nbytes) // 256) * 256
        assert self.top <= self.mem.size
        self.allocs += 1
        return R.FakeBuf(ptr, int(nbytes))

    def put(self, a: np.ndarray) -> R.FakeBuf:
        b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        buf = self.empty(b.size)
        self.bytes(buf.data.ptr, b.size)[:] = b
        return buf

    def bytes(self, ptr: int, n: int) -> np.ndarray:
        off = ptr - self.BASE
        assert 0 <= off and off + n <= self.mem.size, "outside the heap"
        return self.mem[off : off + n]

    def matrix(self, ptr: int, dtype, rows: int, cols: int, ld: int) -> np.ndarray:
        """Column-major rows x cols of dtype at ptr, columns ld elements apart (a writable view)."""
        item = np.dtype(dtype).itemsize
        n = ((cols - 1) * ld + rows) * item
        base = self.bytes(ptr, n).view(dtype)
        return as_strided(base, shape=(rows, cols), strides=(item, ld * item))


class HeapBlas(R.FakeBlas):
    """cublasGemmEx's semantics on the heap: C (m x n, ldc) = A^T B + beta C, A stored k x m, B k x n."""

    def __init__(self, heap: Heap) -> None:
        super().__init__()
        self.heap = heap

    def gemm(self, g: B.GemmCall) -> None:
        super().gemm(g)
        dt = {"f16": np.float16, "f32": np.float32}[g.ab]
        assert g.lda >= g.k and g.ldb >= g.k and g.ldc >= g.m
        a = self.heap.matrix(g.a, dt, g.k, g.m, g.lda).astype(np.float64)
        b = self.heap.matrix(g.b, dt, g.k, g.n, g.ldb).astype(np.float64)
        c = self.heap.matrix(g.c, np.float32, g.m, g.n, g.ldc)
        c[:] = (a.T @ b + g.beta * c.astype(np.float64)).astype(np.float32)


def test_gemm_rows_is_the_row_major_product_on_blocks_of_wider_rows():
    """A block of out [M, N] (inside rows of ld_out), of x (rows of ld_x) and of w (rows of ld_w), as a tile
    of blas_steps addresses them."""
    rng = np.random.default_rng(1)
    heap = Heap(4 * MIB)
    blas = HeapBlas(heap)
    out = np.zeros((20, 50), np.float32)
    x = rng.standard_normal((30, 40)).astype(np.float32)
    w = rng.standard_normal((60, 45)).astype(np.float32)
    po, px, pw = (heap.put(a).data.ptr for a in (out, x, w))
    m0, n0, k0, M, N, K = 3, 7, 2, 11, 23, 31
    blas.gemm(B.gemm_rows(po + 4 * (m0 * 50 + n0), 50, pw + 4 * (n0 * 45 + k0), 45, px + 4 * (m0 * 40 + k0),
                          40, M, N, K, "f32", 0.0))
    got = heap.bytes(po, out.nbytes).view(np.float32).reshape(out.shape)
    want = np.zeros_like(out)
    want[m0 : m0 + M, n0 : n0 + N] = x[m0 : m0 + M, k0 : k0 + K] @ w[n0 : n0 + N, k0 : k0 + K].T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # beta 1 keeps what out held
    blas.gemm(B.gemm_rows(po, 50, pw, 45, px, 40, 2, 3, 4, "f32", 1.0))
    want[:2, :3] += x[:2, :4] @ w[:3, :4].T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_blas_steps_order_and_addresses():
    """x's chunk converted before its GEMMs, each weight tile dequantized before its GEMM (once, where one
    tile covers w), every GEMM writing its own block of out once."""
    M, N, K = 40, 70, 64
    t = G.BlasTiles(16, 32, 16 * 128, 32 * 128, "f16", G.dequantize_launch("q4_0", 32, K))
    steps = B.blas_steps(t, M, N, K, w=1000, w_row_bytes=36, x=5000, x_dtype="f32", out=9000, scratch=20000)
    kinds = "".join({B.ToF16: "x", B.Dequantize: "w", B.GemmCall: "g"}[type(s)] for s in steps)
    assert kinds == "xwgwgwg" * 3
    gemms = [s for s in steps if isinstance(s, B.GemmCall)]
    blocks = {((s.c - 9000) // 4 // N, (s.c - 9000) // 4 % N, s.n, s.m) for s in gemms}
    assert blocks == {(m0, n0, min(16, M - m0), min(32, N - n0)) for m0 in (0, 16, 32) for n0 in (0, 32, 64)}
    assert {s.dst for s in steps if isinstance(s, B.Dequantize)} == {20000 + 16 * 128}
    assert all(s.src == 1000 + s.n0 * 36 for s in steps if isinstance(s, B.Dequantize))
    one = G.BlasTiles(16, N, 16 * 128, N * 128, "f16", G.dequantize_launch("q4_0", N, K))
    kinds = "".join({B.ToF16: "x", B.Dequantize: "w", B.GemmCall: "g"}[type(s)] for s in
                    B.blas_steps(one, M, N, K, 1000, 36, 5000, "f32", 9000, 20000))
    assert kinds == "xwg" + "xg" * 2  # one tile: dequantized once for every chunk of x
    # f16 x is read in place; f32 weights and x too
    f16 = B.blas_steps(G.BlasTiles(M, N, 0, 0, "f16"), M, N, K, 1000, 2 * K, 5000, "f16", 9000, 20000)
    assert f16 == [B.GemmCall(N, M, K, 1000, K, 5000, K, 9000, N, "f16", 0.0)]


# ---- the launcher on an emulated device -------------------------------------------------------------------


class HeapKernels:
    """ModuleCache for the heap: kernels executed from their arguments as the .hip sources read them (the
    strided copy of elementwise.hip, dequantize.hip), anything else refused."""

    def __init__(self, heap: Heap) -> None:
        self.heap = heap
        self.base_defines = {"RF_WARP": 32}
        self.launches: list[tuple[str, tuple, tuple]] = []

    def get(self, file: str, **defines):
        return types.SimpleNamespace(fn=lambda name: (lambda grid, block, args, shared_mem=0:
                                                      self.run(file, name, grid, block, args)))

    def run(self, file: str, name: str, grid, block, args) -> None:
        self.launches.append((name, tuple(grid), tuple(block)))
        h = self.heap
        if file == "elementwise.hip" and name.startswith("copy_"):
            src, dst, n, ne0, ne1, ne2, s0, s1, s2, s3 = (int(a) for a in args)
            ti, to = name.split("_")[1:]
            dt = {"f32": np.float32, "f16": np.float16, "i32": np.int32}
            i = np.arange(n)
            i0, r0 = i % ne0, i // ne0
            i1, r1 = r0 % ne1, r0 // ne1
            idx = i0 * s0 + i1 * s1 + (r1 % ne2) * s2 + (r1 // ne2) * s3
            item = np.dtype(dt[ti]).itemsize
            a = h.bytes(src, (int(idx.max()) + 1) * item).view(dt[ti])
            h.bytes(dst, n * np.dtype(dt[to]).itemsize).view(dt[to])[:] = a[idx].astype(dt[to])
            assert grid[0] * block[0] >= 1
        elif file == "dequantize.hip":
            src, row_bytes, dst, rows, K = (int(a) for a in args)
            qt = Q[name.removeprefix("dequantize_f16_").removesuffix("_s").upper()]
            assert grid == (math.ceil(rows * K / 2048),) and block == (256,)  # 8 elements a thread
            raw = np.stack([h.bytes(src + r * row_bytes, row_bytes) for r in range(rows)])
            vals = quant.dequantize(raw, qt, (rows, K)).astype(np.float16)
            h.bytes(dst, rows * K * 2).view(np.float16)[:] = vals.reshape(-1)
        else:
            raise AssertionError(f"no emulation of {file}:{name}")


@pytest.fixture
def device(monkeypatch):
    """(heap, ctx): an H100-shaped context with cuBLAS, on the heap (cupy.empty is the heap's)."""
    heap = Heap()
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(empty=heap.empty))
    ctx = Ctx(HeapKernels(heap), H100, {}, C.MatMulOptions(), blas=HeapBlas(heap))
    return heap, ctx


def _node(heap: Heap, rng, qt, N: int, K: int, M: int, addend: str | None = None, bdt: str = "f32"):
    """(out, w, x, b) on the heap and their host values (w dequantized: f32)."""
    raw = quant.random_blocks(qt, (N, K), rng)
    wname = qt.name.lower()
    w = DevTensor(heap.put(raw), 0, (N, K), wname)
    x_host = rng.standard_normal((M, K)).astype(np.float32)
    x = DevTensor(heap.put(x_host), 0, (M, K), "f32")
    out = DevTensor(heap.empty(4 * M * N), 0, (M, N), "f32")
    b = b_host = None
    if addend is not None:
        shape = (N,) if addend == "bias" else (M, N)
        b_host = rng.standard_normal(shape).astype(np.float16 if bdt == "f16" else np.float32)
        b = DevTensor(heap.put(b_host), 0, shape, bdt)
    return (out, w, x, b), (quant.dequantize(raw, qt, (N, K)), x_host, b_host)


def _f16(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float16).astype(np.float64)


CASES = [
    (Q.Q4_0, 67, 160), (Q.Q4_1, 67, 160), (Q.Q5_0, 67, 160), (Q.Q8_0, 130, 256), (Q.Q4_K, 45, 512),
    (Q.Q6_K, 45, 512), (Q.BF16, 37, 96), (Q.BF16, 19, 13), (Q.F16, 37, 96), (Q.F16, 19, 13), (Q.F32, 37, 96),
    (Q.F32, 19, 13),
]


@pytest.mark.parametrize("qt,N,K", CASES, ids=[f"{q.name}-{n}x{k}" for q, n, k in CASES])
@pytest.mark.parametrize("M", [7, 64])
@pytest.mark.parametrize("scratch", ["default", "tiny"])
def test_mul_mat_on_the_emulated_device(device, qt, N, K, M, scratch):
    """prepare_mul_mat then its run: the product of x and w as f16 (f32 weights: as f32), f32 arithmetic;
    "tiny": a scratch of 16 rows of x and 16 of w (several chunks and tiles; f16/f32 weights need less)."""
    heap, ctx = device
    if scratch == "tiny":
        ctx.tunables["RF_BLAS_SCRATCH"] = 2 * G.BLAS_TILE * 2 * K + 256
    rng = np.random.default_rng(N * K + M)
    (out, w, x, _), (w_host, x_host, _) = _node(heap, rng, qt, N, K, M)
    run = prepare_mul_mat(ctx, out, w, x)
    allocs = heap.allocs
    run(ctx, out, w, x)
    assert heap.allocs == allocs  # nothing taken during the run
    got = heap.bytes(out.ptr, 4 * M * N).view(np.float32).reshape(M, N)
    f32 = qt == Q.F32
    want = x_host.astype(np.float64) @ w_host.astype(np.float64).T if f32 else _f16(x_host) @ _f16(w_host).T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    ref = MUL_MAT(w_host, x_host)  # the reference backend: within the f16 bound of the conformance table
    assert np.sum((got - ref) ** 2) / np.sum(ref**2) <= (1e-12 if f32 else 1e-4)
    tiles = C.choose_mul_mat(H100, ctx.mat_mul, ctx.tunables, _weight(kernel_type(w.dtype, K, w.ptr), N, K),
                             M).blas
    gemms = ctx.blas.calls
    assert len(gemms) == math.ceil(M / tiles.m_tile) * math.ceil(N / tiles.n_tile)
    if scratch == "tiny" and qt not in (Q.F16, Q.F32) and K >= 128:  # dequantized: 16 rows a tile (short
        assert len(gemms) > 1  # rows: the 256 bytes x_bytes is rounded to leave room for more)


@pytest.mark.parametrize("addend,bdt", [("bias", "f32"), ("bias", "f16"), ("residual", "f32"),
                                        ("residual", "f16")])
def test_mul_mat_add_on_the_emulated_device(device, addend, bdt):
    """MUL_MAT_ADD: b copied into out (a bias through a stride-0 view), then kept by the GEMMs (beta 1),
    over several tiles."""
    heap, ctx = device
    M, N, K = 40, 67, 160
    ctx.tunables["RF_BLAS_SCRATCH"] = 2 * G.BLAS_TILE * 2 * K + 256
    rng = np.random.default_rng(5)
    (out, w, x, b), (w_host, x_host, b_host) = _node(heap, rng, Q.Q4_0, N, K, M, addend, bdt)
    prepare_mul_mat(ctx, out, w, x, b=b)(ctx, out, w, x, b)
    got = heap.bytes(out.ptr, 4 * M * N).view(np.float32).reshape(M, N)
    want = _f16(x_host) @ _f16(w_host).T + b_host.astype(np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
    ref = MUL_MAT_ADD(w_host, x_host, b_host)
    assert np.sum((got - ref) ** 2) / np.sum(ref**2) <= 1e-4
    assert all(g.beta == 1.0 for g in ctx.blas.calls) and len(ctx.blas.calls) > 1


def test_x_given_as_f16_is_read_in_place(device):
    heap, ctx = device
    rng = np.random.default_rng(3)
    (out, w, _, _), (w_host, _, _) = _node(heap, rng, Q.Q8_0, 64, 128, 9)
    x_host = rng.standard_normal((9, 128)).astype(np.float16)
    x = DevTensor(heap.put(x_host), 0, (9, 128), "f16")
    prepare_mul_mat(ctx, out, w, x)(ctx, out, w, x)
    assert not any(n.startswith("copy_") for n, _, _ in ctx.mods.launches)
    (g,) = ctx.blas.calls
    assert g.b == x.ptr
    got = heap.bytes(out.ptr, 4 * 9 * 64).view(np.float32).reshape(9, 64)
    np.testing.assert_allclose(got, x_host.astype(np.float64) @ _f16(w_host).T, rtol=1e-5, atol=1e-4)


def test_one_scratch_for_every_node_taken_at_prepare(device):
    """The scratch is the context's, not a node's: a node that needs no more reuses it, a bigger one gets a
    bigger buffer at its prepare; the BLAS's workspace is prepared there too."""
    heap, ctx = device
    rng = np.random.default_rng(4)
    small, _ = _node(heap, rng, Q.Q4_0, 64, 256, 16)
    big, _ = _node(heap, rng, Q.Q4_0, 128, 512, 64)
    prepare_mul_mat(ctx, *small[:3])
    first = ctx._blas_scratch
    assert first.nbytes == 16 * 512 + 64 * 512 and ctx.blas.prepared == 1
    prepare_mul_mat(ctx, *big[:3])
    assert ctx._blas_scratch is not first and ctx._blas_scratch.nbytes == 64 * 1024 + 128 * 1024
    again = ctx._blas_scratch
    prepare_mul_mat(ctx, *small[:3])
    assert ctx._blas_scratch is again
    assert ctx.scratch_bytes >= again.nbytes


# ---- the recorded launches (a fake BLAS, the recorder's kernels) -------------------------------------


def test_recorded_launches_of_a_tiled_node():
    """The launch sequence as HipBackend would make it with programmatic launch: the addend's copy, x's
    chunk conversions and the dequantize launches (programmatic, last tile's grid smaller), GEMM calls in
    between on the fake BLAS."""
    rec = R.Recorder(32)
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = types.SimpleNamespace(empty=rec.empty)  # type: ignore[assignment]
    from rocmforge.backends.hip import pdl as pdl_module

    saved_pdl = pdl_module.PdlLauncher
    pdl_module.PdlLauncher = rec.pdl_launcher  # type: ignore[assignment, misc]
    try:
        case = {"wt": "q4_0", "N": 40, "K": 256, "M": 20}
        ctx = Ctx(rec, H100, {"RF_BLAS_SCRATCH": 16 * 512 + 16 * 512}, C.MatMulOptions(), pdl=True,
                  blas=R.FakeBlas())
        out, w, x = R.tensors(case)
        b = R.addend(case, "bias")
        prepare_mul_mat(ctx, out, w, x, b=b)(ctx, out, w, x, b)
    finally:
        pdl_module.PdlLauncher = saved_pdl  # type: ignore[misc]
        sys.modules["cupy"] = saved  # type: ignore[assignment]
    # tiles: 16 tokens (a chunk of 16, then 4) and 16 weight rows (16, 16, 8); 256-thread blocks of 8
    # dequantized elements, the copies' grids of 256-element blocks
    seq = [(r["entry"], r["grid"], r["pdl"]) for r in rec.launches]
    dq16, dq8 = ("dequantize_f16_q4_0", [2], True), ("dequantize_f16_q4_0", [1], True)
    assert seq == [("copy_f32_f32", [4], True), ("copy_f32_f16", [16], True), dq16, dq16, dq8,
                   ("copy_f32_f16", [4], True), dq16, dq16, dq8]
    dq_args = [r["args"] for r in rec.launches if r["entry"] == dq16[0]]
    assert dq_args[0] == ["ptr", ["int64", 144], "ptr", ["int32", 16], ["int32", 256]]
    assert dq_args[2] == ["ptr", ["int64", 144], "ptr", ["int32", 8], ["int32", 256]]
    assert len(ctx.blas.calls) == 6 and all(g.beta == 1.0 for g in ctx.blas.calls)
    assert ctx.blas.prepared == 1


# ---- the library wrappers without the library ---------------------------------------------------------


class _FakeFns:
    """blas._CublasFns's calls, recorded; every status 0 but the one asked for."""

    def __init__(self, fail: str = "") -> None:
        self.calls: list[tuple] = []
        self.fail = fail

    def _rec(self, name: str, *args) -> int:
        self.calls.append((name, *args))
        return 13 if name == self.fail else 0

    def set_stream(self, h, s):
        return self._rec("stream", h, s)

    def set_workspace(self, h, p, n):
        return self._rec("workspace", h, p, n)

    def gemm_ex(self, *args):
        return self._rec("gemm", *args)

    def check(self, status: int, what: str) -> None:
        B._CublasFns.check(types.SimpleNamespace(status_name=None), status, what)


def _fake_cupy(stream_ptr: int = 77) -> types.SimpleNamespace:
    cuda = types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0),
                                 get_current_stream=lambda: types.SimpleNamespace(ptr=stream_ptr))
    return types.SimpleNamespace(cuda=cuda, empty=lambda n, dtype=None: R.FakeBuf(1 << 30, n))


def test_cublas_gemm_sets_the_stream_then_the_workspace_then_calls_gemm_ex(monkeypatch):
    """Every GEMM: cublasSetStream to CuPy's current stream, our workspace again (SetStream resets it),
    then cublasGemmEx with GemmCall's fields in cuBLAS's order: A transposed, f16 or f32 A/B, f32 C,
    CUBLAS_COMPUTE_32F, the default algorithm, alpha 1 and beta from host memory."""
    fns = _FakeFns()
    monkeypatch.setitem(B._HANDLES, 0, (fns, "handle"))
    blas = B.Cublas(_fake_cupy())
    blas.prepare()
    blas.prepare()  # once
    g = B.GemmCall(3, 4, 5, a=100, lda=6, b=200, ldb=7, c=300, ldc=8, ab="f16", beta=1.0)
    blas.gemm(g)
    blas.gemm(B.GemmCall(3, 4, 5, 100, 6, 200, 7, 300, 8, "f32"))
    (s, ws, (name, *args)), second = fns.calls[:3], fns.calls[3:]
    assert s == ("stream", "handle", 77) and ws == ("workspace", "handle", 1 << 30, B.WORKSPACE_BYTES)
    h, ta, tb, m, n, k, alpha, a, at, lda, b, bt, ldb, beta, c, ct, ldc, comp, algo = args
    assert name == "gemm" and h == "handle"
    assert (ta, tb, m, n, k, a, at, lda) == (1, 0, 3, 4, 5, 100, 2, 6)
    assert (b, bt, ldb, c, ct, ldc, comp, algo) == (200, 2, 7, 300, 0, 8, 68, -1)
    assert alpha._obj.value == 1.0 and beta._obj.value == 1.0
    _, _, _, _, _, _, _, _, _, at, _, _, bt, _, beta, *_ = second[2]
    assert (at, bt, beta._obj.value) == (0, 0, 0.0)  # f32 operands, beta 0


def test_cublas_failures_name_the_call(monkeypatch):
    monkeypatch.setitem(B._HANDLES, 0, (_FakeFns(fail="gemm"), "handle"))
    blas = B.Cublas(_fake_cupy())
    blas.prepare()
    with pytest.raises(RuntimeError, match=r"cublasGemmEx \(3 x 4 x 5, f16\) failed: cuBLAS status 13"):
        blas.gemm(B.GemmCall(3, 4, 5, 100, 5, 200, 5, 300, 3, "f16"))


def test_no_blas_is_a_reason_and_the_backend_options_follow_it(monkeypatch):
    """Without CuPy's cuBLAS wrapper open_blas says why; HipBackend then prefills on the tiled kernel
    ("auto"), or refuses "blas"; an unknown prefill is refused before anything else."""
    from test_hip_backend_prepare import _fake_cupy as fake_gpu

    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    blas, why = B.open_blas(types.SimpleNamespace(), is_hip=False)
    assert blas is None and why.startswith("cuBLAS: ")
    monkeypatch.setitem(sys.modules, "cupy", fake_gpu(32, 132))
    monkeypatch.setattr(pdl, "PdlLauncher", lambda: None)
    be = HipBackend()
    assert be.ctx.blas is None and be.ctx.device.blas == "" and be.blas_unavailable.startswith("cuBLAS: ")
    assert be.ctx.mat_mul.prefill == "auto"
    assert HipBackend(prefill="tiled").blas_unavailable == "prefill='tiled'"
    with pytest.raises(RuntimeError, match="prefill='blas': cuBLAS: "):
        HipBackend(prefill="blas")
    with pytest.raises(ValueError, match="prefill 'cublas'"):
        HipBackend(prefill="cublas")
    # with a BLAS (stood in for): the device names it, the options carry the choice
    monkeypatch.setattr(B, "open_blas", lambda cupy, is_hip: (R.FakeBlas(), ""))
    be = HipBackend(prefill="blas")
    assert be.ctx.device.blas == "cublas" and be.ctx.mat_mul.prefill == "blas" and be.ctx.blas is not None


def test_the_loaded_library_is_found_by_name():
    assert B._loaded_path("libc.so") or B._loaded_path("libc-")
    assert B._loaded_path("libno-such-library.so") is None
