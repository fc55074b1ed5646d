"""Kernel sources prepared for simt_emu.h (the CPU emulation the *_kernel_cpu tests compile with g++)."""

from pathlib import Path

from rocmforge.backends.hip.modules import KERNEL_DIR

HERE = Path(__file__).resolve().parent  # where simt_emu.h is


def emu_source(name: str) -> str:
    """kernels/<name> for simt_emu.h: rf_compat.h replaced by it, rf_rope.h inlined without its include."""
    rope = (KERNEL_DIR / "rf_rope.h").read_text().replace('#include "rf_compat.h"', "")
    src = (KERNEL_DIR / name).read_text().replace('#include "rf_compat.h"', '#include "simt_emu.h"')
    return src.replace('#include "rf_rope.h"', rope)
