"""Run-time compilation of the HIP kernel sources in `kernels/`, cached by (file, defines, arch).

The same `.hip` files are compiled by hipRTC on ROCm and by NVRTC on CUDA, through `cupy.RawModule`.
Local `#include "x.h"` lines are inlined here (with `#line` markers, so compiler messages keep the real
file and line) because neither run-time compiler is given an include path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

KERNEL_DIR = Path(str(files("rocmforge") / "kernels"))  # package data (the repository's kernels/)

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
# first error location in a compiler log: NVRTC "file(12): error", clang/hipRTC "file:12:5: error"
_ERR_NVRTC = re.compile(r"([\w./-]+\.(?:hip|h))\((\d+)\): (?:catastrophic )?error")
_ERR_CLANG = re.compile(r"([\w./-]+\.(?:hip|h)):(\d+):\d+: (?:fatal )?error")


class KernelCompileError(RuntimeError):
    """A kernel source that failed to compile: names the file, the line and carries the compiler log."""

    def __init__(self, file: str, line: int | None, log: str, options: tuple[str, ...]) -> None:
        self.file, self.line, self.log, self.options = file, line, log, options
        where = f"{file}:{line}" if line else file
        super().__init__(f"kernel compile failed at {where} (options {' '.join(options)})\n{log}")


def assemble_source(name: str, kernel_dir: Path = KERNEL_DIR) -> str:
    """The source of kernels/<name> with its local includes inlined once each, `#line`-marked."""
    seen: set[str] = set()

    def expand(fname: str) -> list[str]:
        path = kernel_dir / fname
        if fname in seen:
            return []
        seen.add(fname)
        out = [f'#line 1 "{fname}"']
        for i, line in enumerate(path.read_text().splitlines(), start=1):
            m = _INCLUDE.match(line)
            if m and (kernel_dir / m.group(1)).exists():
                out.extend(expand(m.group(1)))
                out.append(f'#line {i + 1} "{fname}"')
            elif line.strip() == "#pragma once":
                out.append("")
            else:
                out.append(line)
        return out

    return "\n".join(expand(name)) + "\n"


def compile_options(defines: Mapping[str, Any]) -> tuple[str, ...]:
    """Compiler options for a module: C++17 and one -D per define (sorted, so keys are stable)."""
    return ("-std=c++17", *(f"-D{k}={v}" for k, v in sorted(defines.items())))


def parse_error_location(log: str) -> tuple[str | None, int | None]:
    for pat in (_ERR_NVRTC, _ERR_CLANG):
        m = pat.search(log)
        if m:
            return Path(m.group(1)).name, int(m.group(2))
    return None, None


def _compile_error(e: Exception, file: str, opts: tuple[str, ...]) -> KernelCompileError | None:
    """The KernelCompileError for a CuPy compile exception (None for any other exception)."""
    if not hasattr(e, "get_message") and type(e).__name__ != "CompileException":
        return None
    log = e.get_message() if hasattr(e, "get_message") else str(e)
    fname, line = parse_error_location(log)
    return KernelCompileError(fname or file, line, log, opts)


class Module:
    """One compiled kernel file: `fn(name)` gives its (cached) kernel functions."""

    def __init__(self, raw: Any, file: str, opts: tuple[str, ...]) -> None:
        self.raw, self.file, self.opts = raw, file, opts
        self._fns: dict[str, Any] = {}

    def fn(self, name: str) -> Any:
        f = self._fns.get(name)
        if f is None:
            try:
                f = self._fns[name] = self.raw.get_function(name)
            except Exception as e:  # CuPy may compile lazily, at the first get_function
                err = _compile_error(e, self.file, self.opts)
                if err is not None:
                    raise err from None
                raise RuntimeError(f"{self.file}: no kernel {name!r} ({e})") from e
        return f


class ModuleCache:
    """Compiles each (file, defines) once for the device's arch; `get` returns the Module."""

    def __init__(self, arch: str, base_defines: Mapping[str, Any], kernel_dir: Path = KERNEL_DIR) -> None:
        self.arch = arch
        self.base_defines = dict(base_defines)
        self.kernel_dir = kernel_dir
        self._mods: dict[tuple, Module] = {}
        self.compile_count = 0

    def get(self, file: str, **defines: Any) -> Module:
        d = {**self.base_defines, **defines}
        key = (file, tuple(sorted(d.items())), self.arch)
        mod = self._mods.get(key)
        if mod is None:
            mod = self._mods[key] = self._compile(file, d)
        return mod

    def _compile(self, file: str, defines: Mapping[str, Any]) -> Module:
        import cupy

        src = assemble_source(file, self.kernel_dir)
        opts = compile_options(defines)
        try:
            raw = cupy.RawModule(code=src, options=opts)
            if hasattr(raw, "module"):
                raw.module  # noqa: B018 - CuPy compiles lazily; this compiles now
        except Exception as e:
            err = _compile_error(e, file, opts)
            if err is None:
                raise
            raise err from None
        self.compile_count += 1
        return Module(raw, file, opts)
