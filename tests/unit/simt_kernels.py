"""Kernel sources prepared for simt_emu.h (the CPU emulation the *_kernel_cpu tests compile with g++)."""

from pathlib import Path

from rocmforge.backends.hip.modules import KERNEL_DIR

HERE = Path(__file__).resolve().parent  # where simt_emu.h is


def emu_source(name: str) -> str:
    """kernels/<name> for simt_emu.h: rf_compat.h replaced by it and rf_common.h (the helpers written on top
    of the platform layer it emulates), the other local headers (rf_rope.h, rf_split.h, ...) inlined without
    their own include of rf_compat.h."""
    common = (KERNEL_DIR / "rf_common.h").read_text().replace("#pragma once", "")
    src = (KERNEL_DIR / name).read_text()
    src = src.replace('#include "rf_compat.h"', f'#include "simt_emu.h"\n{common}')
    for header in sorted(KERNEL_DIR.glob("rf_*.h")):
        if header.name not in ("rf_compat.h", "rf_common.h"):
            body = header.read_text().replace('#include "rf_compat.h"', "")
            src = src.replace(f'#include "{header.name}"', body)
    return src


def build(d: Path, kernel: str, main: str, builds: dict[str, dict]) -> dict[str, Path]:
    """Compile `main` (which includes "<kernel stem>_emu.hip") against kernels/<kernel> for simt_emu.h in
    d, once per build (name -> -D defines), side by side; skips the test without a C++20 compiler."""
    import shutil
    import subprocess

    import pytest

    cxx = shutil.which("g++") or shutil.which("clang++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    (d / f"{Path(kernel).stem}_emu.hip").write_text(emu_source(kernel))
    (d / "main.cpp").write_text(main)
    procs = {}
    for name, defines in builds.items():
        cmd = [cxx, "-std=c++20", "-O2", "-pthread", "-I", str(HERE), "-I", str(d),
               *(f"-D{k}={v}" for k, v in defines.items()), str(d / "main.cpp"), "-o", str(d / name)]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for p in procs.values():
        _, err = p.communicate()
        if p.returncode and "barrier" in err:
            pytest.skip(f"{cxx} has no C++20 <barrier>")
        if p.returncode and "_Float16" in err:
            pytest.skip(f"{cxx} has no _Float16 (the f16 conversions of simt_emu.h)")
        assert p.returncode == 0, err
    return {name: d / name for name in builds}


def mat_vec_reference(w, x, b, residual: bool, glu: bool):
    """numpy_ref's result of the mat-vec kernels' cases: MUL_MAT_SWIGLU (glu), MUL_MAT_ADD of the residual
    b, or MUL_MAT of w [N, K] (dequantized) and x [M, K]."""
    from rocmforge.backends import numpy_ref as R

    if glu:
        return R.MUL_MAT_SWIGLU(w, x)
    return R.MUL_MAT_ADD(w, x, b) if residual else R.MUL_MAT(w, x)
