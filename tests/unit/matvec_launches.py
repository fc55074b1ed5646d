"""What MUL_MAT launches, recorded without a GPU: kernel file, entry point, compile defines, grid, block,
dynamic shared memory, programmatic launch and scalar arguments, for every case of `cases()`.

The fixture matvec_launches.json was recorded from the mat-vec choice code before the kernel layer's
refactor (`python tests/unit/matvec_launches.py` at commit 7358230, its drive_before_refactor, with compact's
layout); test_matvec_launches.py asserts that the current code launches exactly the same kernels for the
same cases, with the changes since then spelled out (test_matvec_launches._as_now: MUL_MAT_ADD's null addend
appended to every MUL_MAT kernel's arguments, among others). The fixture itself is never re-recorded.
"""

from __future__ import annotations

import itertools
import json
import math
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

FIXTURE = Path(__file__).with_name("matvec_launches.json")
WEIGHT_TYPES = ("f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
# (N, K): Llama 7B, Qwen2 0.5B, SmolLM 135M shapes and an odd row count
SHAPES = (
    (4096, 4096),
    (11008, 4096),
    (4096, 11008),
    (32000, 4096),
    (896, 896),
    (4864, 896),
    (576, 576),
    (1536, 576),
    (49152, 576),
    (515, 2048),
)
TOKENS = (1, 2, 3, 4, 5, 64)
# (warp, SMs, shared memory a block may opt in to, shared memory an SM): an H100, a 64-wide-wave GPU
DEVICES = (
    (32, 132, 227 * 1024, 228 * 1024),
    (64, 84, 64 * 1024, 64 * 1024),
    (32, 84, 227 * 1024, 228 * 1024),
)
DEVICES += ((64, 132, 64 * 1024, 64 * 1024),)
# host-side and compile-time tunables (HipBackend(tunables=...)), on the first device, a few types
TUNABLES = (
    {"RF_MMVR_QMAX": 0},
    {"RF_MMVR_EVEN": 0},
    {"RF_MMVR_QMAX": 8},
    {"RF_MMVR_WARPS": 2, "RF_MMVR_BPS": 3},
    {"RF_MMVR_PDL": 0},
    {"RF_MMVR_XPF": 0},
    {"RF_MMVX_BPS": 2, "RF_MMVX_SPREAD": 0},
    {"RF_MMVX_ASYNC": 0, "RF_MMVX_ROWS": 2},
    {"RF_MMV_WARPS": 8, "RF_MMV_ROWS": 1},
    {"RF_MMV_UNROLL": 2},
)
TUNED_TYPES = ("f16", "q4_0", "q8_0", "q4_k")
W_PTR, X_PTR, OUT_PTR, B_PTR = 1 << 20, 1 << 32, 1 << 34, 1 << 35


class FakeBuf:
    """A device buffer's stand-in: its address (data.ptr) and size."""

    def __init__(self, ptr: int, nbytes: int) -> None:
        self.data = types.SimpleNamespace(ptr=ptr)
        self.nbytes = nbytes


class Recorder:
    """ModuleCache, kernel functions and the programmatic launcher replaced by fakes that record launches."""

    def __init__(self, warp: int) -> None:
        self.base_defines = {"RF_WARP": warp}
        self.launches: list[dict[str, Any]] = []
        self._next_ptr = 1 << 40

    def empty(self, nbytes: int, dtype: Any = None) -> FakeBuf:  # cupy.empty
        self._next_ptr += (int(nbytes) + 4095) // 4096 * 4096
        return FakeBuf(self._next_ptr, int(nbytes))

    def get(self, file: str, **defines: Any) -> Any:  # ModuleCache.get
        d = {**self.base_defines, **defines}
        rec = self

        class Fn:
            def __init__(self, name: str) -> None:
                self.file, self.name, self.defines = file, name, d

            def __call__(self, grid, block, args, shared_mem=0) -> None:
                rec.record(file, self.name, d, grid, block, args, shared_mem, False)

        return types.SimpleNamespace(fn=Fn)

    def pdl_launcher(self) -> Callable[..., None]:  # pdl.PdlLauncher
        def launch(f, grid, block, args, shared_mem=0) -> None:
            self.record(f.file, f.name, f.defines, grid, block, args, shared_mem, True)

        return launch

    def record(self, file, name, defines, grid, block, args, smem, pdl) -> None:
        self.launches.append(
            {
                "file": file,
                "entry": name,
                "defines": dict(sorted(defines.items())),
                "grid": [int(n) for n in grid],
                "block": [int(n) for n in block],
                "smem": int(smem),
                "pdl": pdl,
                "args": [_arg(a) for a in args],
            }
        )


class FakeBlas:
    """blas.py's interface without a library: GEMM calls recorded in `calls` (a GemmCall each), prepare
    counted."""

    name = "cublas"

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.prepared = 0
        self.workspace = None

    def prepare(self) -> None:
        self.prepared += 1

    def gemm(self, call: Any) -> None:
        self.calls.append(call)


def _arg(a: Any) -> Any:
    """A kernel argument as recorded: "ptr" for an address, "null" for a null pointer (a Python int 0; no
    fake buffer is there), "b" for MUL_MAT_ADD's b (`addend`'s address), [dtype, value] for a scalar."""
    if isinstance(a, (int, np.uint64)) and not isinstance(a, np.integer | bool):
        return {0: "null", B_PTR: "b"}.get(a, "ptr")
    a = np.asarray(a)
    return [a.dtype.name, a.item()]


def _case(
    device: tuple, wt: str, N: int, K: int, M: int, int8: bool, pdl: bool, tun: dict
) -> tuple[str, dict]:
    warp, n_sm, smem_block, smem_sm = device
    key = f"w{warp}-sm{n_sm}-{wt}-{N}x{K}-M{M}" + ("-int8" if int8 else "") + ("-pdl" if pdl else "")
    key += "".join(f"-{k}={v}" for k, v in tun.items())
    case = dict(warp=warp, n_sm=n_sm, smem_block=smem_block, smem_sm=smem_sm, wt=wt, N=N, K=K, M=M)
    return key, {**case, "int8": int8, "pdl": pdl, **({"tunables": tun} if tun else {})}


def cases() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every device, type, shape, token count and option without tunables, then the tunables on the first
    device for a few types; programmatic launch only with int8 activations (it changes nothing else)."""
    grid = (
        (d, wt, nk, M, int8, pdl, {})
        for d, wt, nk, M, int8, pdl in itertools.product(
            DEVICES, WEIGHT_TYPES, SHAPES, TOKENS, (False, True), (False, True)
        )
    )
    tuned = (
        (DEVICES[0], wt, nk, M, int8, pdl, tun)
        for tun, wt, nk, M, int8, pdl in itertools.product(
            TUNABLES, TUNED_TYPES, SHAPES, (1, 3), (False, True), (False, True)
        )
    )
    for device, wt, (N, K), M, int8, pdl, tun in itertools.chain(grid, tuned):
        if int8 or not pdl:
            yield _case(device, wt, N, K, M, int8, pdl, tun)


def record(drive: Callable[[Recorder, dict[str, Any]], None]) -> dict[str, list[dict[str, Any]]]:
    """case key -> the launches drive(recorder, case) made; cupy.empty and pdl.PdlLauncher are faked."""
    from rocmforge.backends.hip import pdl as pdl_module

    out = {}
    saved_cupy, saved_pdl = sys.modules.get("cupy"), pdl_module.PdlLauncher
    try:
        for key, case in cases():
            rec = Recorder(case["warp"])
            sys.modules["cupy"] = types.SimpleNamespace(empty=rec.empty)  # type: ignore[assignment]
            pdl_module.PdlLauncher = rec.pdl_launcher  # type: ignore[assignment, misc]
            drive(rec, case)
            out[key] = rec.launches
    finally:
        pdl_module.PdlLauncher = saved_pdl  # type: ignore[misc]
        if saved_cupy is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved_cupy
    return out


def tensors(case: dict[str, Any]) -> tuple[Any, Any, Any]:
    """(out, w, x) device tensors of a case: a weight in its blocks, x and out contiguous f32."""
    from rocmforge.backends.hip.tensor import BLOCK, DevTensor

    N, K, M = case["N"], case["K"], case["M"]
    bs, ts = BLOCK[case["wt"]]
    w = DevTensor(FakeBuf(W_PTR, N * K // bs * ts), 0, (N, K), case["wt"])
    x = DevTensor(FakeBuf(X_PTR, 4 * M * K), 0, (M, K), "f32")
    out = DevTensor(FakeBuf(OUT_PTR, 4 * M * N), 0, (M, N), "f32")
    return out, w, x


def addend(case: dict[str, Any], kind: str) -> Any:
    """MUL_MAT_ADD's b of a case, contiguous f32: "bias" [N] or "residual" [M, N] (the output's shape)."""
    from rocmforge.backends.hip.tensor import DevTensor

    N, M = case["N"], case["M"]
    shape = (N,) if kind == "bias" else (M, N)
    return DevTensor(FakeBuf(B_PTR, 4 * math.prod(shape)), 0, shape, "f32")


def compact(records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """{"launches": unique launches, "cases": per case of cases(), in order, its launches' indices}: the
    fixture's layout."""
    uniq: list[str] = []
    index: dict[str, int] = {}
    keyed = []
    for launches in records.values():
        ids = []
        for r in launches:
            s = json.dumps(r, sort_keys=True)
            if s not in index:
                index[s] = len(uniq)
                uniq.append(s)
            ids.append(index[s])
        keyed.append(ids)
    return {"launches": [json.loads(s) for s in uniq], "cases": keyed}


def expand(fixture: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The fixture as record() gives it: case key -> launches."""
    keys = [k for k, _ in cases()]
    assert len(keys) == len(fixture["cases"]), "cases() changed since the fixture was recorded"
    return {k: [fixture["launches"][i] for i in ids] for k, ids in zip(keys, fixture["cases"], strict=True)}
