"""Every kernel compiles, without a GPU, for both targets with the defines the runtime uses.

(a) sm_90 with NVRTC from the `nvidia-cuda-nvrtc` + `cuda-bindings` wheels, on the source exactly as
    `modules.py` hands it to CuPy (includes inlined); the PTX must hold every entry point a launcher calls,
    and the MUL_MAT kernels' parameters must be the arguments MUL_MAT_ADD's launcher passes (CuPy does not
    check them).
(b) gfx1100 with clang-15 (`-x hip --offload-arch=gfx1100 --cuda-device-only -nogpulib`, Debian's
    libamdhip64-dev headers): the assembly must be gfx1100 code with wave32 kernels, every entry point
    there. Also CDNA (gfx90a, wave64, RF_WARP=64), so no kernel assumes a 32-wide warp.
Each toolchain's tests skip with the reason when it is missing; scripts/ci_install_toolchains.sh
installs both.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import matvec_launches as R
import numpy as np
import pytest

from dev import matvec_variants as V
from rocmforge.backends.hip.context import Ctx
from rocmforge.backends.hip.kernel_choice import (
    MUL_MAT_KERNELS,
    XQ_DEFAULTS,
    XR_DEFAULTS,
    MatMulKernel,
    MatMulOptions,
)
from rocmforge.backends.hip.launch_geometry import Device
from rocmforge.backends.hip.launch_mul_mat import prepare_mul_mat
from rocmforge.backends.hip.modules import KERNEL_DIR, assemble_source, compile_options
from rocmforge.backends.hip.tensor import NATIVE_WEIGHTS

DEV_DIR = Path(__file__).resolve().parents[2] / "dev"  # measurement variants, outside the package
# kernels/ files by name, dev/ files as dev/<name>
FILES = sorted(p.name for p in KERNEL_DIR.glob("*.hip")) + sorted(
    f"dev/{p.name}" for p in DEV_DIR.glob("*.hip")
)
HEAD_DIMS = (64, 80, 128, 256)  # attention is compiled once per head dim
MMA_HEAD_DIMS = (64, 80, 128)  # attention_mma.hip's: multiples of 16 up to 128
_WTYPES = [t + s for t in NATIVE_WEIGHTS for s in (("", "_s") if t in ("f32", "f16", "bf16") else ("",))]
_ACT2 = [f"{a}_{b}" for a in ("f32", "f16") for b in ("f32", "f16")]
_Q8 = ("q4_0", "q4_1", "q5_0", "q8_0", "q4_k", "q6_k")
_X8 = ("q4_0", "q8_0")
ENTRY_POINTS = {
    "mul_mat_vec.hip": [f"mul_mat_vec_{t}" for t in _WTYPES],
    "quantize_x8.hip": ["quantize_x8"],
    "mul_mat_vec_xq.hip": [f"mul_mat_vec_xq_{t}" for t in _X8],
    "mul_mat_vec_xr.hip": [f"mul_mat_vec_xr_{t}" for t in _X8],
    "mul_mat.hip": [f"mul_mat_{t}" for t in _WTYPES],
    "get_rows.hip": [f"get_rows_{t}" for t in _WTYPES] + ["get_rows_i32"],
    "dequantize.hip": [f"dequantize_f16_{t}" for t in _WTYPES],
    "elementwise.hip": [f"{op}_{p}" for op in ("add", "mul") for p in _ACT2]
    + [f"swiglu_{p}" for p in _ACT2] + ["glu_pairs_f32"]
    + [f"{op}_{t}" for op in ("scale", "silu") for t in ("f32", "f16")]
    + [f"copy_{a}_{b}" for a in ("f32", "f16", "i32") for b in ("f32", "f16", "i32")],
    "norm.hip": ["rms_norm_f32", "rms_norm_f16"] + [f"rms_norm_mul_{p}" for p in _ACT2],
    "rope.hip": ["rope_f32", "rope_f16", "set_rows_rope_f32_f32", "set_rows_rope_f32_f16"],
    "set_rows.hip": [f"set_rows_{p}" for p in _ACT2],
    "softmax.hip": [f"soft_max_{p}" for p in _ACT2],
    "argmax.hip": ["argmax_f32", "argmax_f16"],
    "sample.hip": ["sample_f32"],
    "attention.hip": ["flash_attn_f32", "flash_attn_f16", "flash_attn_decode_f32", "flash_attn_decode_f16"],
    "attention_mma.hip": ["flash_attn_mma_f16"],
    "mul_mat_q.hip": [f"mul_mat_q_{t}" for t in _Q8],
    "chain.hip": ["chain_advance"],
    "dev/mul_mat_vec_q.hip": [f"mul_mat_vec_q_{t}" for t in _Q8],
    "dev/grid_barrier.hip": ["stage_kernel", "persistent_stages"],
    "dev/mul_mat_vec_s.hip": [f"mul_mat_vec_s_{t}" for t in ("q4_0", "q4_1", "q5_0", "q8_0")],
    "dev/mul_mat_vec_x.hip": [f"mul_mat_vec_x_{t}" for t in _X8],
    "dev/mul_mat_vec_xb.hip": [f"mul_mat_vec_xb_{t}" for t in _X8],
    "dev/mul_mat_vec_xr_trace.hip": [f"mul_mat_vec_xr_{t}" for t in _X8],
}


# the matrix instructions a file must use: in NVRTC's PTX for sm_90, in clang's gfx1100 assembly
MATRIX_INSTRUCTIONS = {
    "attention_mma.hip": {"sm_90": ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32",),
                          "gfx1100": ("v_wmma_f32_16x16x16_f16",)},
    "mul_mat_q.hip": {"sm_90": ("mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32",  # blocks of 32
                                "mma.sync.aligned.m16n8k16.row.col.s32.s8.s8.s32"),  # Q6_K's 16
                      "gfx1100": ("v_wmma_i32_16x16x16_iu8",)},
}


def _rf(d: dict) -> dict:
    """The compile defines of a defaults entry (lower-case keys are host-side parameters)."""
    return {k: v for k, v in d.items() if k.startswith("RF_")}


def _variants(warp: int) -> list[tuple[str, dict]]:
    out = []
    for f in FILES:
        if f == "attention.hip":
            out += [(f, {"RF_WARP": warp, "RF_HEAD_DIM": d}) for d in HEAD_DIMS]
        elif f == "attention_mma.hip":
            out += [(f, {"RF_WARP": warp, "RF_HEAD_DIM": d}) for d in MMA_HEAD_DIMS]
        else:
            out.append((f, {"RF_WARP": warp}))
    for t in _X8:  # the int8 mat-vecs with the table's per-type defines
        out.append(("mul_mat_vec_xq.hip", {"RF_WARP": warp, **_rf(XQ_DEFAULTS[t])}))
        out.append(("dev/mul_mat_vec_x.hip", {"RF_WARP": warp, **_rf(XQ_DEFAULTS[t])}))
        out.append(("dev/mul_mat_vec_xb.hip", {"RF_WARP": warp, "RF_MMVB_ROWS": 4, "RF_MMVB_MINB": 2}))
        xr = XR_DEFAULTS[t]
        groups = {"RF_WARP": warp, **xr["groups"]}
        out.append(("mul_mat_vec_xr.hip", groups))
        early = {"RF_MMVR_XPF": 0, "RF_MMVR_PDL": 1}  # launched early (tests/gpu/test_pdl.py)
        out.append(("mul_mat_vec_xr.hip", {**groups, **early}))
        out.append(("mul_mat_vec_xr.hip", {**groups, **xr["one_warp"]}))
        # whole rows at K = 4096 (Q = 4 on 32-wide waves, 2 on 64-wide), as the geometry sets them
        whole = {**groups, **xr["whole"], "RF_MMVR_Q": 128 // warp}
        out.append(("mul_mat_vec_xr.hip", whole))
        out.append(("mul_mat_vec_xr.hip", {**whole, "RF_MMVR_PDL": 1}))  # a no-op on HIP
        for glu in (groups, {**groups, **xr["one_warp"]}, whole):  # MUL_MAT_SWIGLU's epilogue, each write
            out.append(("mul_mat_vec_xr.hip", {**glu, "RF_MMVR_GLU": 1}))
        if XQ_DEFAULTS[t]["RF_MMVX_ROWS"] % 2 == 0:
            out.append(("mul_mat_vec_xq.hip", {"RF_WARP": warp, **_rf(XQ_DEFAULTS[t]), "RF_MMVX_GLU": 1}))
    for tun in ({"RF_SAMPLE_BLOCK": 256, "RF_SAMPLE_UNROLL": 2, "RF_SAMPLE_CAP": 1024},
                {"RF_SAMPLE_BLOCK": 1024, "RF_SAMPLE_UNROLL": 2}):  # SAMPLE's other geometries (tunables)
        out.append(("sample.hip", {"RF_WARP": warp, **tun}))
    out.append(("mul_mat_vec.hip", {"RF_WARP": warp, "RF_MMV_GLU": 1}))  # MUL_MAT_SWIGLU's epilogue
    out.append(("mul_mat_vec.hip", {"RF_WARP": warp, "RF_MMV_BCONST": 1}))  # a weight's b read early
    for extra in ({}, {"RF_MMV_GLU": 1}, {"RF_MMV_BCONST": 1}):  # an RMS norm folded in (RMS_NORM_MUL_MAT*)
        out.append(("mul_mat_vec.hip", {"RF_WARP": warp, "RF_MMV_NORM": 1, **extra}))
    out.append(("mul_mat_q.hip", {"RF_WARP": warp, "RF_MMQ_WM": 4, "RF_MMQ_WN": 2}))  # another tiling
    out.append(("dev/mul_mat_vec_x.hip", {"RF_WARP": warp, "RF_MMVX_LEVELS": 2}))
    out.append(("mul_mat_vec_xr.hip", {"RF_WARP": warp, "RF_MMV_HI16": 0}))  # Q4_0's dot with shifted nibbles
    out.append(("dev/mul_mat_vec_xb.hip", {"RF_WARP": warp, "RF_MMV_HI16": 0, "RF_MMVB_CHAINS": 2}))
    out.append(("dev/mul_mat_vec_xb.hip", {"RF_WARP": warp, "RF_MMVB_ABLATE": 1}))
    for build in ({"RF_MMVR_TRACE": 64}, {"RF_MMVR_ABLATE": 1}, {"RF_MMVR_ABLATE": 2}):  # measurement builds
        out.append(("dev/mul_mat_vec_xr_trace.hip", {"RF_WARP": warp, **build}))
    return out


def _source_path(fname: str) -> Path:
    return DEV_DIR.parent / fname if fname.startswith("dev/") else KERNEL_DIR / fname


def _expected(fname: str, defines: dict) -> set[str]:
    """The entry points a variant must have (attention's decode kernel: head dims a multiple of the warp, up
    to 128; attention_mma.hip's and mul_mat_q.hip's: only where the matrix instructions are, so none on
    64-wide waves)."""
    names = set(ENTRY_POINTS[fname])
    d = defines.get("RF_HEAD_DIM", 0)
    if fname == "attention.hip" and (d % defines["RF_WARP"] or d > 128):
        names = {n for n in names if "decode" not in n}
    if fname in ("attention_mma.hip", "mul_mat_q.hip") and defines["RF_WARP"] != 32:
        names = set()
    return names


def _id(v: tuple[str, dict]) -> str:
    return v[0] + "".join(f"-{k}={x}" for k, x in v[1].items() if k != "RF_WARP")


def _table_file(kern: MatMulKernel) -> str:
    return f"dev/{Path(kern.file).name}" if Path(kern.file).is_absolute() else kern.file


# files of the MUL_MAT kernels (the table's and dev/'s) -> their argument list ("mat_vec", "mat_mat", or
# "blas": dequantize.hip, what the vendor-BLAS path launches of ours)
MUL_MAT_ARGS = {_table_file(k): k.args for k in (*MUL_MAT_KERNELS, *V.DEV_KERNELS)}


def _launcher_arg_bytes(args: str, norm: bool = False) -> list[int]:
    """Bytes of each argument MUL_MAT_ADD's launcher passes a kernel of this argument list (a residual b),
    recorded without a GPU (a fake BLAS for "blas"): pointers 8, scalars their size; norm: the launcher of
    RMS_NORM_MUL_MAT_ADD (the norm's weight and eps after them)."""
    M = 1 if args == "mat_vec" else 64
    case = {"wt": "q4_0", "N": 64, "K": 256, "M": M}
    rec = R.Recorder(32)
    blas = "cublas" if args == "blas" else ""
    ctx = Ctx(rec, Device(32, 132, blas=blas), {}, MatMulOptions(), blas=R.FakeBlas() if blas else None)
    out, w, x = R.tensors(case)
    b = R.addend(case, "residual")
    saved = sys.modules.get("cupy")
    sys.modules["cupy"] = types.SimpleNamespace(empty=rec.empty)  # the BLAS path's scratch, at prepare
    try:
        if norm:
            wn = R.addend({"N": case["K"], "M": 1}, "bias")
            prepare_mul_mat(ctx, out, w, x, b=b, norm=1e-5)(ctx, out, w, x, wn, b, eps=1e-5)
        else:
            prepare_mul_mat(ctx, out, w, x, b=b)(ctx, out, w, x, b)
    finally:
        if saved is None:
            sys.modules.pop("cupy", None)
        else:
            sys.modules["cupy"] = saved
    entry = {"mat_vec": "mul_mat_vec_q4_0", "mat_mat": "mul_mat_q4_0", "blas": "dequantize_f16_q4_0"}[args]
    (launch,) = [r for r in rec.launches if r["entry"] == entry]
    return [8 if isinstance(a, str) else np.dtype(a[0]).itemsize for a in launch["args"]]


def _ptx_param_bytes(ptx: str) -> dict[str, list[int]]:
    """Entry point -> bytes of each of its parameters (.param .u64, .u32, ...)."""
    out = {}
    for m in re.finditer(r"\.entry\s+(\w+)\s*\((.*?)\)", ptx, re.S):
        out[m.group(1)] = [int(n) // 8 for n in re.findall(r"\.param\s+\.[a-z]+(\d+)", m.group(2))]
    return out


def test_every_kernel_file_has_its_entry_points_listed():
    assert set(FILES) == set(ENTRY_POINTS)


def test_every_kernel_of_the_table_is_compiled_here():
    """The MUL_MAT table's files and entry points are among those compiled, every weight type of each row."""
    for kern in MUL_MAT_KERNELS:
        assert kern.file in ENTRY_POINTS, kern.name
        assert {kern.entry.format(type=t) for t in kern.weight_types} <= set(ENTRY_POINTS[kern.file])


# ---- (a) NVRTC, sm_90 ---------------------------------------------------------------------------------


def _missing(why: str) -> None:
    """A missing toolchain skips locally but fails in CI, where .ci/run installs both."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must compile every kernel, but {why}")
    pytest.skip(why)


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        _missing(f"NVRTC is not available (pip install nvidia-cuda-nvrtc cuda-bindings): {e}")
    try:
        nvrtc.nvrtcVersion()
    except Exception as e:  # the bindings are there but libnvrtc is not
        _missing(f"libnvrtc is not loadable: {e}")
    return nvrtc


@pytest.mark.parametrize("variant", _variants(32), ids=_id)
def test_nvrtc_sm90(variant):
    nvrtc = _nvrtc()
    fname, defines = variant
    src = assemble_source(str(_source_path(fname)))
    err, prog = nvrtc.nvrtcCreateProgram(src.encode(), Path(fname).name.encode(), 0, [], [])
    assert err == nvrtc.nvrtcResult.NVRTC_SUCCESS
    opts = [b"--gpu-architecture=sm_90", *(o.encode() for o in compile_options(defines))]
    (res,) = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
    _, n = nvrtc.nvrtcGetProgramLogSize(prog)
    log = bytearray(n)  # writable: never an interned bytes object
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert res == nvrtc.nvrtcResult.NVRTC_SUCCESS, log.decode(errors="replace")
    _, n = nvrtc.nvrtcGetPTXSize(prog)
    ptx = bytearray(n)
    nvrtc.nvrtcGetPTX(prog, ptx)
    ptx = ptx.decode(errors="replace")
    assert ".target sm_90" in ptx
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))
    missing = _expected(fname, defines) - entries
    assert not missing, f"{fname}: no entry point for {sorted(missing)}"
    for ins in MATRIX_INSTRUCTIONS.get(fname, {}).get("sm_90", ()):
        assert ins in ptx, f"{fname}: no {ins}"
    if fname in MUL_MAT_ARGS:  # (..., b, b_stride) as the launcher passes them (dequantize.hip: its own)
        want = _launcher_arg_bytes(MUL_MAT_ARGS[fname], bool(defines.get("RF_MMV_NORM")))
        params = _ptx_param_bytes(ptx)
        assert {e: params[e] for e in ENTRY_POINTS[fname]} == {e: want for e in ENTRY_POINTS[fname]}
    nvrtc.nvrtcDestroyProgram(prog)


# ---- (b) clang-15, gfx1100 (and gfx90a) -----------------------------------------------------------


def _clang() -> str:
    exe = shutil.which("clang-15")
    if exe is None:
        _missing("clang-15 is not installed (scripts/ci_install_toolchains.sh)")
    if not Path("/usr/include/hip/hip_runtime.h").exists():
        _missing("the HIP headers are not installed (apt-get install libamdhip64-dev)")
    return exe


def _clang_compile(exe: str, fname: str, defines: dict, arch: str, tmp_path: Path) -> str:
    out = tmp_path / (Path(fname).name + ".s")
    cmd = [
        exe,
        "-x",
        "hip",
        f"--offload-arch={arch}",
        "--cuda-device-only",
        "-nogpulib",
        "--rocm-path=/usr",
        "-S",
        "-O3",
        *compile_options(defines),
        "-I",
        str(KERNEL_DIR),
        str(_source_path(fname)),
        "-o",
        str(out),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, f"{' '.join(cmd)}\n{p.stderr}"
    return out.read_text()


def _kernels_in(asm: str) -> dict[str, int]:
    """kernel name -> .amdhsa_wavefront_size32 value, from the .amdhsa_kernel blocks."""
    out = {}
    for m in re.finditer(r"\.amdhsa_kernel (\w+)(.*?)\.end_amdhsa_kernel", asm, re.S):
        w = re.search(r"\.amdhsa_wavefront_size32 (\d)", m.group(2))
        out[m.group(1)] = int(w.group(1)) if w else 0
    return out


@pytest.mark.parametrize("variant", _variants(32), ids=_id)
def test_clang_gfx1100_wave32(variant, tmp_path):
    exe = _clang()
    fname, defines = variant
    asm = _clang_compile(exe, fname, defines, "gfx1100", tmp_path)
    assert '.amdgcn_target "amdgcn-amd-amdhsa--gfx1100"' in asm
    kernels = _kernels_in(asm)
    missing = _expected(fname, defines) - set(kernels)
    assert not missing, f"{fname}: no kernel for {sorted(missing)}"
    assert all(v == 1 for v in kernels.values()), f"not wave32: {[k for k, v in kernels.items() if v != 1]}"
    for ins in MATRIX_INSTRUCTIONS.get(fname, {}).get("gfx1100", ()):
        assert ins in asm, f"{fname}: no {ins}"


@pytest.mark.parametrize(
    "variant", [v for v in _variants(64) if v[1].get("RF_HEAD_DIM", 128) == 128], ids=_id
)
def test_clang_gfx90a_wave64(variant, tmp_path):
    exe = _clang()
    fname, defines = variant
    asm = _clang_compile(exe, fname, defines, "gfx90a", tmp_path)
    assert '.amdgcn_target "amdgcn-amd-amdhsa--gfx90a' in asm
    kernels = _kernels_in(asm)
    assert _expected(fname, defines) <= set(kernels)
    assert all(v == 0 for v in kernels.values())  # wave64 kernels
