"""Every script in scripts/ starts without a GPU and answers --help (or its usage line): a script whose
imports broke (a module moved, a name renamed) fails here rather than in a device call."""

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[2] / "scripts").glob("*.py"))
NEEDS = {"record_llamacpp_refs.py": "llama_cpp"}  # optional modules a script imports at the top


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_a_script_answers_help(script):
    if script.name in NEEDS:
        pytest.importorskip(NEEDS[script.name])
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 2) and "usage" in (r.stdout + r.stderr).lower(), r.stderr[-2000:]
