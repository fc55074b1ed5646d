"""The package finds its kernel sources and recorded references as package data (importlib.resources), and a
wheel built from the repository carries them, so that a non-editable install reads no repository path."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import rocmforge
from rocmforge.backends.hip.modules import KERNEL_DIR, assemble_source
from rocmforge.llamacpp import REFS_DIR, load_refs

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(rocmforge.__file__).parent


def test_kernel_sources_are_package_data():
    assert KERNEL_DIR == PACKAGE / "kernels"  # not the repository's kernels/ (a link to it in a checkout)
    assert {"mul_mat_vec.hip", "rf_compat.h", "rf_quant.h"} <= {p.name for p in KERNEL_DIR.iterdir()}
    src = assemble_source("mul_mat_vec.hip")
    assert '#line 1 "rf_quant.h"' in src and '#include "rf_quant.h"' not in src  # includes found there too


def test_refs_are_package_data():
    assert REFS_DIR == PACKAGE / "data" / "refs"
    refs = load_refs("smollm2-135m")
    assert refs.texts == ["prose", "code"] and refs.meta


def test_gpu_table_is_package_data():
    from rocmforge.profile import find_gpu, gpus

    assert (PACKAGE / "data" / "gpus.json").is_file()
    table = gpus()
    assert len(table) >= 8 and table["source"].str.startswith("datasheet").all()
    assert find_gpu("RX 7900 XT")["bandwidth_gbs"] == 800


def _sources(top: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if p.suffix in (".hip", ".h")}


@pytest.mark.slow
def test_wheel_carries_kernels_and_refs(tmp_path):
    """pip builds a wheel from a copy of the repository's package files (the link kept as a link): it holds
    every kernel source and header, every reference file and the GPU table under rocmforge/, and no
    top-level kernels/."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "kernels", src / "kernels")
    shutil.copytree(REPO / "rocmforge", src / "rocmforge", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(src)],
                   check=True)
    (wheel,) = tmp_path.glob("rocmforge-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {f"rocmforge/kernels/{n}" for n in _sources(REPO / "kernels")}
    want |= {f"rocmforge/data/refs/{p.name}" for p in (REPO / "rocmforge" / "data" / "refs").iterdir()}
    want.add("rocmforge/data/gpus.json")
    assert len(want) > 10 and want <= names
    assert not [n for n in names if n.startswith("kernels/")]
