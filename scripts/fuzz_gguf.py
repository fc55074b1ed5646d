"""Fuzz the GGUF reader: mutate real and synthetic files and open each in a bounded worker process.

Each mutant is a base file (a real model given with --files, or a small synthetic one written here)
with a few edits: bit flips, byte runs, truncation at every structural boundary (after the magic,
the version, the counts, each key, each value, each tensor info, the padding, inside the data),
counts, lengths, dims, types and offsets set to extremes, duplicated and dropped keys and tensor
infos, wrong value types, bad alignments, bytes inserted or removed. A worker process opens it; the
outcome is one of

    error        GGUFFile.open raised GGUFError naming the path
    opened       it opened, every tensor view is in bounds, ModelConfig.from_gguf worked
    opened-cfg   it opened, views in bounds, ModelConfig.from_gguf raised GGUFError

or a failure: exception (any other type), bad-view (a tensor outside the file or a short view),
crash (the worker died), hang (no answer in --timeout s), memory (peak above 2x the file's size).
Peak memory is tracemalloc's peak (Python and numpy allocations) for files up to 16 MiB, and the
growth of the kernel's peak RSS (VmHWM, reset per mutant; it counts the file's pages read too) for
bigger ones; traced files get a fixed 64 KiB allowance for the reader's own objects. The worker also
runs under RLIMIT_AS, so a runaway allocation ends as a MemoryError instead of swapping the machine.

    python scripts/fuzz_gguf.py --n 10000 --seed 1 --files ~/.cache/rocmforge/models/smollm2-135m.gguf
    python scripts/fuzz_gguf.py --n 0 --cuts     # each synthetic base cut at every boundary
    python scripts/fuzz_gguf.py --n 1 --start 5714 --seed 2026 --files ...   # replay one mutant

Real files are not copied per mutant: each worker keeps one working copy (on /dev/shm when there
is one) and only rewrites the ranges the previous and the current mutant changed. Failing mutants
are saved under --save (default fuzz-failures/) with their seed and index in the name.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import shutil
import struct
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's rocmforge, not another

FAILURES = ("exception", "bad-view", "crash", "hang", "memory")
TRACE_MAX = 16 << 20  # files up to this size: tracemalloc peak; bigger: peak RSS growth
SMALL_ALLOWANCE = 64 << 10  # the reader's fixed cost (dicts, the map object) on tiny files
_WIDTH = {"<B": 1, "<I": 4, "<i": 4, "<Q": 8, "<q": 8}


# -- the layout of a valid base file ---------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    off: int
    size: int
    kind: str  # n_tensors, n_kv, str_len, key, vtype, etype, arr_len, value, ti_name, ti_ndims, ...
    fmt: str | None = None  # struct format of a number, None for bytes


@dataclass
class Layout:
    size: int
    fields: list[Field]
    kvs: list[tuple[int, int, str]]  # (start, end, key) of each metadata entry
    infos: list[tuple[int, int]]  # (start, end) of each tensor info
    index_end: int
    data_offset: int
    tensor_offsets: list[int]  # absolute data start of each tensor
    boundaries: list[int] = field(default_factory=list)


def layout(data: bytes | memoryview) -> Layout:
    """Fields of a valid GGUF file (trusted: only base files are parsed here). Big arrays record
    their first and last few elements only."""
    u32 = lambda o: struct.unpack_from("<I", data, o)[0]  # noqa: E731
    u64 = lambda o: struct.unpack_from("<Q", data, o)[0]  # noqa: E731
    fields = [Field(0, 4, "magic"), Field(4, 4, "version", "<I"), Field(8, 8, "n_tensors", "<Q"),
              Field(16, 8, "n_kv", "<Q")]
    n_tensors, n_kv = u64(8), u64(16)
    pos = 24
    kvs, alignment = [], 32
    scalar = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<B", 10: "<Q", 11: "<q",
              12: "<d"}

    def string(kind: str, keep: bool = True) -> str:
        nonlocal pos
        n = u64(pos)
        if keep:
            fields.extend([Field(pos, 8, "str_len", "<Q"), Field(pos + 8, n, kind)])
        s = bytes(data[pos + 8 : pos + 8 + n]).decode("utf-8", "replace")
        pos += 8 + n
        return s

    for _ in range(n_kv):
        start = pos
        key = string("key")
        vt = u32(pos)
        fields.append(Field(pos, 4, "vtype", "<I"))
        pos += 4
        if vt == 9:
            et, n = u32(pos), u64(pos + 4)
            fields += [Field(pos, 4, "etype", "<I"), Field(pos + 4, 8, "arr_len", "<Q")]
            pos += 12
            for i in range(n):
                keep = i < 3 or i >= n - 2
                if et == 8:
                    string("value", keep)
                else:
                    w = struct.calcsize(scalar[et])
                    if keep:
                        fields.append(Field(pos, w, "value", scalar[et]))
                    pos += w
        elif vt == 8:
            string("value")
        else:
            w = struct.calcsize(scalar[vt])
            if key == "general.alignment":
                alignment = u32(pos)
            fields.append(Field(pos, w, "alignment" if key == "general.alignment" else "value", scalar[vt]))
            pos += w
        kvs.append((start, pos, key))
    infos, rel = [], []
    for _ in range(n_tensors):
        start = pos
        string("ti_name")
        nd = u32(pos)
        fields.append(Field(pos, 4, "ti_ndims", "<I"))
        pos += 4
        for _ in range(nd):
            fields.append(Field(pos, 8, "ti_dim", "<q"))
            pos += 8
        fields += [Field(pos, 4, "ti_type", "<i"), Field(pos + 4, 8, "ti_offset", "<Q")]
        rel.append(u64(pos + 4))
        pos += 12
        infos.append((start, pos))
    data_offset = -(-pos // alignment) * alignment
    fields.append(Field(pos, data_offset - pos, "padding"))
    lay = Layout(len(data), fields, kvs, infos, pos, data_offset, [data_offset + r for r in rel])
    ends = {f.off + f.size for f in fields} | {f.off for f in fields} | set(lay.tensor_offsets)
    lay.boundaries = sorted(b for b in ends if 0 <= b <= len(data))
    return lay


# -- mutants: a few edits on a base, kept as a rope of literal bytes and ranges of the base --------


Piece = bytes | tuple[int, int]  # literal bytes, or base[start:end]


class Rope:
    def __init__(self, size: int) -> None:
        self.pieces: list[Piece] = [(0, size)]

    def __len__(self) -> int:
        return sum(len(p) if isinstance(p, bytes) else p[1] - p[0] for p in self.pieces)

    def _split(self, off: int) -> int:
        """Index of the piece that starts at `off` (splitting one if needed); len(pieces) at the end."""
        pos = 0
        for i, p in enumerate(self.pieces):
            n = len(p) if isinstance(p, bytes) else p[1] - p[0]
            if off == pos:
                return i
            if off < pos + n:
                k = off - pos
                a, b = (p[:k], p[k:]) if isinstance(p, bytes) else ((p[0], p[0] + k), (p[0] + k, p[1]))
                self.pieces[i : i + 1] = [a, b]
                return i + 1
            pos += n
        return len(self.pieces)

    def replace(self, off: int, n: int, data: bytes) -> None:
        off = min(off, len(self))
        i = self._split(off)
        j = self._split(min(off + n, len(self)))
        self.pieces[i:j] = [data] if data else []

    def truncate(self, size: int) -> None:
        if size < len(self):
            self.pieces[self._split(size) :] = []

    def layout_out(self) -> list[tuple[int, Piece]]:
        out, pos = [], 0
        for p in self.pieces:
            out.append((pos, p))
            pos += len(p) if isinstance(p, bytes) else p[1] - p[0]
        return out

    def materialize(self, base: bytes | memoryview) -> bytes:
        return b"".join(p if isinstance(p, bytes) else bytes(base[p[0] : p[1]]) for p in self.pieces)


@dataclass
class Base:
    path: Path
    data: memoryview  # the whole file (mapped)
    lay: Layout
    real: bool


def _extremes(f: Field, left: int, rng: np.random.Generator) -> int:
    bits = 8 * _WIDTH.get(f.fmt or "<Q", 8)
    top = (1 << bits) - 1
    signed = f.fmt in ("<i", "<q")
    cands = [0, 1, 2, 3, 5, 63, 64, 255, 256, 4096, 1 << 31, (1 << 31) - 1, (1 << 32) - 1, 1 << 32,
             (1 << 63) - 1, 1 << 63, top, top - 1, left, left + 1, left - 1, left // 8, left // 8 + 1,
             left // 33, left // 14, int(rng.integers(0, 1 << 62))]
    v = cands[int(rng.integers(0, len(cands)))] & top
    if signed and v > top >> 1:
        v -= top + 1
    return v


def _pack(fmt: str, v: int) -> bytes:
    w = _WIDTH[fmt]
    return (v & ((1 << 8 * w) - 1)).to_bytes(w, "little")


def _region(b: Base, rng: np.random.Generator) -> int:
    """An offset to edit: mostly inside the header (where the parser looks), sometimes anywhere."""
    if rng.random() < 0.85 or b.lay.size <= b.lay.index_end:
        return int(rng.integers(0, max(1, b.lay.data_offset)))
    return int(rng.integers(0, b.lay.size))


def _count_edit(rope: Rope, off: int, fmt: str, b: Base, delta: int) -> None:
    old = struct.unpack_from(fmt, b.data, off)[0]
    rope.replace(off, _WIDTH[fmt], _pack(fmt, old + delta))


def _numeric_fields(b: Base, kinds: Sequence[str] | None = None) -> list[Field]:
    return [f for f in b.lay.fields if f.fmt and (kinds is None or f.kind in kinds)]


def mutate(b: Base, rng: np.random.Generator) -> tuple[Rope, str]:
    """One to three edits of a random kind; returns the mutant and a description."""
    rope, descs = Rope(b.lay.size), []
    for _ in range(1 if rng.random() < 0.7 else int(rng.integers(2, 4))):
        kind = str(rng.choice(list(MUTATORS), p=list(MUTATORS.values())))
        descs.append(_MUTATE[kind](b, rope, rng))
    return rope, "; ".join(descs)


def _bitflip(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    offs = []
    for _ in range(int(rng.integers(1, 9))):
        off = _region(b, rng)
        bit = int(rng.integers(0, 8))
        rope.replace(off, 1, bytes([b.data[off] ^ (1 << bit)]))
        offs.append(f"{off}.{bit}")
    return "bitflip " + ",".join(offs)


def _byterun(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    off = _region(b, rng)
    n = int(rng.integers(1, 65)) if rng.random() < 0.8 else int(rng.integers(65, 4097))
    fill = str(rng.choice(["00", "ff", "80", "random"]))
    run = rng.bytes(n) if fill == "random" else bytes.fromhex(fill) * n
    rope.replace(off, n, run)
    return f"byterun {fill} x{n} at {off}"


def _truncate_boundary(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    cut = int(rng.choice(b.lay.boundaries)) + int(rng.choice([0, 0, 0, -1, 1]))
    rope.truncate(max(0, cut))
    return f"truncate at boundary {cut}"


def _truncate_data(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    cut = int(rng.integers(b.lay.data_offset, b.lay.size + 1))
    rope.truncate(cut)
    return f"truncate in data at {cut}"


def _extreme(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    fs = _numeric_fields(b, ("n_tensors", "n_kv", "str_len", "arr_len", "vtype", "etype", "ti_ndims",
                             "ti_dim", "ti_type", "ti_offset", "alignment"))
    # counts, lengths and tensor infos are few next to the elements of big arrays: pick a kind first
    kinds = sorted({f.kind for f in fs})
    kind = str(rng.choice(kinds))
    f = fs[int(rng.choice([i for i, g in enumerate(fs) if g.kind == kind]))]
    v = _extremes(f, b.lay.size - f.off - f.size, rng)
    rope.replace(f.off, f.size, _pack(f.fmt, v))
    return f"{f.kind} at {f.off} = {v}"


def _dup_or_drop(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    tensors = bool(b.lay.infos) and rng.random() < 0.4
    spans = b.lay.infos if tensors else [(s, e) for s, e, _ in b.lay.kvs]
    if not spans:
        return "no entries"
    s, e = spans[int(rng.integers(0, len(spans)))]
    dup = rng.random() < 0.5
    if dup:  # right after itself, or at the start of the section
        at = e if rng.random() < 0.7 else spans[0][0]
        rope.replace(at, 0, bytes(b.data[s:e]))
    else:
        rope.replace(s, e - s, b"")
    fix = rng.random() < 0.8  # keep the count consistent, mostly
    if fix:
        _count_edit(rope, 8 if tensors else 16, "<Q", b, 1 if dup else -1)
    what = "tensor info" if tensors else "metadata entry"
    return f"{'duplicate' if dup else 'drop'} {what} [{s}, {e}){'' if fix else ' (count kept)'}"


def _wrong_type(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    fs = _numeric_fields(b, ("vtype", "etype", "ti_type"))
    f = fs[int(rng.integers(0, len(fs)))]
    v = int(rng.integers(0, 14)) if f.kind != "ti_type" else int(rng.integers(-2, 45))
    rope.replace(f.off, f.size, _pack(f.fmt, v))
    return f"{f.kind} at {f.off} = {v}"


def _alignment(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    fs = _numeric_fields(b, ("alignment",))
    if not fs:
        return _extreme(b, rope, rng)
    f = fs[0]
    v = int(rng.choice([0, 1, 2, 3, 8, 48, 64, 4096, 1 << 20, 1 << 31, (1 << 32) - 1]))
    rope.replace(f.off, f.size, _pack(f.fmt, v))
    return f"alignment = {v}"


def _shift(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    off = int(rng.integers(0, max(1, b.lay.data_offset)))
    n = int(rng.integers(1, 17))
    if rng.random() < 0.5:
        rope.replace(off, 0, rng.bytes(n))
        return f"insert {n} bytes at {off}"
    rope.replace(off, n, b"")
    return f"delete {n} bytes at {off}"


def _splice(b: Base, rope: Rope, rng: np.random.Generator) -> str:
    src, dst = _region(b, rng), _region(b, rng)
    n = int(rng.integers(1, 65))
    rope.replace(dst, n, bytes(b.data[src : src + n]))
    return f"copy {n} bytes {src} -> {dst}"


# mutation kind -> weight
MUTATORS: dict[str, float] = {"bitflip": 0.16, "byterun": 0.12, "truncate-boundary": 0.16,
                              "truncate-data": 0.04, "extreme": 0.24, "dup-drop": 0.1, "wrong-type": 0.06,
                              "alignment": 0.03, "shift": 0.05, "splice": 0.04}
_MUTATE: dict[str, Callable[[Base, Rope, np.random.Generator], str]] = {
    "bitflip": _bitflip, "byterun": _byterun, "truncate-boundary": _truncate_boundary,
    "truncate-data": _truncate_data, "extreme": _extreme, "dup-drop": _dup_or_drop,
    "wrong-type": _wrong_type, "alignment": _alignment, "shift": _shift, "splice": _splice,
}


# -- synthetic bases ---------------------------------------------------------------------------------


def write_synthetic(d: Path) -> list[Path]:
    """Small files covering the reader's paths: two tiny models (llama, qwen2 untied with biases, quantized
    weights) and a file with every value type, big and small string arrays, 1-4 dim tensors of several
    ggml types, a custom alignment, as GGUF v3 and v2."""
    from gguf import GGMLQuantizationType as Q
    from gguf import GGUFValueType as VT
    from gguf import GGUFWriter
    from gguf.quants import quantize

    from rocmforge.synth import write_tiny_model

    d.mkdir(parents=True, exist_ok=True)
    out = [write_tiny_model(d / "tiny-llama.gguf", wtype=Q.Q8_0),
           write_tiny_model(d / "tiny-qwen2.gguf", "qwen2", n_layer=1, wtype=Q.Q4_0, tied=False)]
    rng = np.random.default_rng(0)
    p = d / "kinds.gguf"
    w = GGUFWriter(str(p), "llama")
    w.add_custom_alignment(64)
    for i, vt in enumerate([VT.UINT8, VT.INT8, VT.UINT16, VT.INT16, VT.UINT32, VT.INT32, VT.UINT64,
                            VT.INT64]):
        w.add_key_value(f"k.int{i}", i + 1, vt)
        w.add_key_value(f"k.ints{i}", [i, i + 1, i + 2], VT.ARRAY, vt)
    w.add_key_value("k.f32", 0.5, VT.FLOAT32)
    w.add_key_value("k.f64", 0.25, VT.FLOAT64)
    w.add_key_value("k.flag", True, VT.BOOL)
    w.add_key_value("k.flags", [True, False], VT.ARRAY, VT.BOOL)
    w.add_key_value("k.floats", [1.0, 2.0], VT.ARRAY, VT.FLOAT32)
    w.add_key_value("k.s", "héllo", VT.STRING)
    w.add_key_value("k.words", ["a", "bb", "é"], VT.ARRAY, VT.STRING)
    w.add_key_value("k.many", [f"w{i}" for i in range(300)], VT.ARRAY, VT.STRING)  # reader's fast path
    w.add_tensor("t.f32", rng.standard_normal(64).astype(np.float32))
    w.add_tensor("t.f16", rng.standard_normal((3, 32)).astype(np.float16))
    w.add_tensor("t.q80", quantize(rng.standard_normal((2, 2, 64)).astype(np.float32), Q.Q8_0),
                 raw_dtype=Q.Q8_0)
    w.add_tensor("t.q4k", rng.integers(0, 256, (1, 2, 1, 144), dtype=np.uint8), raw_dtype=Q.Q4_K)  # 1 block
    w.add_tensor("t.i8", rng.integers(-5, 5, 7).astype(np.int8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    v2 = d / "kinds-v2.gguf"
    v2.write_bytes(p.read_bytes()[:4] + struct.pack("<I", 2) + p.read_bytes()[8:])
    return out + [p, v2]


# -- the worker: open one file under bounds -----------------------------------------------------------


def check_file(path: str) -> tuple[str, str]:
    """Open `path` like a user would; -> (outcome, detail). Raises nothing the fuzzer does not expect."""
    from rocmforge.config import ModelConfig
    from rocmforge.gguf import GGUFError, GGUFFile

    try:
        f = GGUFFile.open(path)
    except GGUFError as e:
        if not str(e).startswith(f"{path}: "):
            return "exception", f"GGUFError does not name the path: {e}"
        return "error", e.problem
    except Exception as e:  # noqa: BLE001 (any other type is the bug being looked for)
        return "exception", f"open: {type(e).__name__}: {e}"
    with f:
        for info in f.tensors.values():
            if info.offset < f.data_offset or info.offset + info.n_bytes > f.file_size:
                return "bad-view", f"tensor '{info.name}' [{info.offset}, +{info.n_bytes}) outside the data"
            v = f.raw(info.name)
            if v.size != info.n_bytes:
                return "bad-view", f"tensor '{info.name}' view has {v.size} bytes, index says {info.n_bytes}"
            int(v[0]) + int(v[-1])  # touch both ends: a view past the end would fault here
        try:
            ModelConfig.from_gguf(f)
        except GGUFError as e:
            return "opened-cfg", e.problem
        except Exception as e:  # noqa: BLE001
            return "exception", f"ModelConfig.from_gguf: {type(e).__name__}: {e}"
    return "opened", ""


def _proc_kib(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM (peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _worker(conn: Connection, as_limit: int) -> None:
    if as_limit:
        soft = _proc_kib("VmSize") * 1024 + as_limit
        resource.setrlimit(resource.RLIMIT_AS, (soft, resource.getrlimit(resource.RLIMIT_AS)[1]))
    check_file("/nonexistent")  # import everything before the first measurement
    can_hwm = _reset_hwm()
    paths: dict[str, Path] = {}
    while True:
        try:
            path, size = conn.recv()
        except EOFError:
            return
        # pathlib interns path parts; kept alive here, they stop churning the interned-string dict, whose
        # periodic rebuild (~1 MB, nothing to do with the file) would land in some mutant's peak
        paths.setdefault(path, Path(path))
        traced = size <= TRACE_MAX or not can_hwm
        if traced:
            tracemalloc.start()
        else:
            _reset_hwm()
            rss0 = _proc_kib("VmRSS")
        t0 = time.perf_counter()
        try:
            outcome, detail = check_file(path)
        except MemoryError:
            outcome, detail = "memory", "MemoryError (RLIMIT_AS)"
        dt = time.perf_counter() - t0
        if traced:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        else:
            peak = (_proc_kib("VmHWM") - rss0) * 1024
        conn.send((outcome, detail, dt, peak, traced))


class Worker:
    def __init__(self, ctx: mp.context.BaseContext, as_limit: int) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(child, as_limit), daemon=True)
        self.proc.start()
        child.close()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()


# -- materializing mutants ----------------------------------------------------------------------------


class WorkFile:
    """A worker's copy of a base file, patched per mutant: only the ranges that differ from the base
    are written (the previous mutant's are restored first), so a 100 MB base costs little per mutant."""

    def __init__(self, base: Base, path: Path, pristine: Path) -> None:
        self.base, self.path = base, path
        if not pristine.exists():  # a copy on the same file system, so copy_file_range can work
            shutil.copyfile(base.path, pristine)
        shutil.copyfile(pristine, path)
        self.dirty: list[tuple[int, int]] = []
        self.fd = os.open(path, os.O_RDWR)
        self.src = os.open(pristine, os.O_RDONLY)

    def _copy(self, src: int, dst: int, n: int) -> None:
        while n > 0:
            try:
                k = os.copy_file_range(self.src, self.fd, n, src, dst)
            except OSError:
                k = 0
            if k <= 0:  # where copy_file_range does not work: through user space
                k = min(n, 1 << 24)
                os.pwrite(self.fd, self.base.data[src : src + k], dst)
            src, dst, n = src + k, dst + k, n - k

    def write(self, rope: Rope) -> None:
        size = self.base.lay.size
        for s, e in self.dirty:  # back to the base
            s, e = min(s, size), min(e, size)
            if e > s:
                self._copy(s, s, e - s)
        os.ftruncate(self.fd, size)
        self.dirty = []
        for pos, p in rope.layout_out():
            if isinstance(p, bytes):
                os.pwrite(self.fd, p, pos)
                self.dirty.append((pos, pos + len(p)))
            elif p[0] != pos:  # shifted range
                self._copy(p[0], pos, p[1] - p[0])
                self.dirty.append((pos, pos + p[1] - p[0]))
        n = len(rope)
        if n < size:
            os.ftruncate(self.fd, n)
            self.dirty.append((n, size))

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.src)


# -- the run ---------------------------------------------------------------------------------------------


@dataclass
class Summary:
    n: int = 0
    counts: Counter = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    max_s: float = 0.0
    peak: int = 0  # largest measured peak (bytes)
    peak_max_of: str = ""
    peak_ratio: float = 0.0  # largest peak / its bound (2x the file's size, + allowance when traced)
    peak_of: str = ""
    ok_ratio: float = 0.0  # the same over mutants that did not fail
    ok_of: str = ""
    by_base: Counter = field(default_factory=Counter)

    def report(self) -> str:
        lines = [f"{self.n} mutants in {self.wall_s:.1f} s ({self.n / max(self.wall_s, 1e-9):.0f}/s)"]
        for k in ("error", "opened", "opened-cfg", *FAILURES):
            lines.append(f"  {k:11s} {self.counts.get(k, 0)}")
        lines.append(f"  bases: {dict(self.by_base)}")
        lines.append(f"  slowest open: {self.max_s * 1000:.1f} ms")
        lines.append(f"  largest peak: {self.peak / 2**20:.2f} MiB ({self.peak_max_of})")
        lines.append(f"  largest peak / bound: {self.peak_ratio:.3f} ({self.peak_of})")
        lines.append(f"  largest peak / bound of a mutant that passed: {self.ok_ratio:.3f} ({self.ok_of})")
        rss = [resource.getrusage(who).ru_maxrss >> 10 for who in (resource.RUSAGE_SELF,
                                                                   resource.RUSAGE_CHILDREN)]
        lines.append(f"  max RSS: parent {rss[0]} MiB, workers {rss[1]} MiB")
        lines += [f"  FAIL {f}" for f in self.failures[:50]]
        return "\n".join(lines)


def _load(path: Path, real: bool) -> Base:
    mm = np.memmap(path, dtype=np.uint8, mode="r")
    data = memoryview(mm)
    return Base(path, data, layout(data), real)


def run(n: int, seed: int = 0, files: Sequence[str | os.PathLike[str]] = (), *, synthetic: bool = True,
        jobs: int = 1, timeout: float = 5.0, workdir: str | os.PathLike[str] | None = None,
        save: str | os.PathLike[str] | None = None, real_share: float = 0.5, start: int = 0,
        cuts: bool = False, progress: Callable[[Summary], None] | None = None) -> Summary:
    """Fuzz mutants start .. start + n - 1 of `files` (real) and the synthetic bases; mutant i depends
    only on (seed, i) and the bases. With `cuts`, first every base truncated at each of its structural
    boundaries (those mutants are labelled cut<offset>)."""
    tmp = Path(workdir or tempfile.mkdtemp(prefix="fuzz-gguf-", dir="/dev/shm" if os.path.isdir("/dev/shm")
                                           else None))
    own_tmp = workdir is None
    try:
        bases = [_load(Path(f), True) for f in files]
        if synthetic:
            bases += [_load(p, False) for p in write_synthetic(tmp / "bases")]
        if not bases:
            raise SystemExit("no base files")
        as_limit = max(1 << 30, 4 * max(b.lay.size for b in bases))
        ctx = mp.get_context("fork")
        slots = [{"worker": Worker(ctx, as_limit), "work": {}, "job": None} for _ in range(jobs)]
    except BaseException:
        if own_tmp:  # the run's finally below is not reached yet
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    real = [b for b in bases if b.real]
    synth = [b for b in bases if not b.real]
    s = Summary()
    t0 = time.perf_counter()

    def finish(slot: dict, result: tuple | None) -> None:
        i, b, desc, path, size = slot["job"]
        slot["job"] = None
        if result is None:
            slot["worker"].proc.join(0.2)  # a dead worker is reaped here, so its exit code is known
            code = slot["worker"].proc.exitcode
            outcome, detail, dt, peak = ("hang", f"no answer in {timeout} s", timeout, 0) if code is None \
                else ("crash", f"worker exit code {code}", 0.0, 0)
            slot["worker"].stop()
            slot["worker"] = Worker(ctx, as_limit)
        else:
            outcome, detail, dt, peak, traced = result
            bound = 2 * size + (SMALL_ALLOWANCE if traced else 0)
            if outcome not in FAILURES and peak > bound:
                outcome, detail = "memory", f"{outcome}, but peak {peak} bytes > {bound} (file {size} bytes)"
            ratio, what = peak / max(bound, 1), f"{b.path.name} ({size} bytes): {desc}"
            if ratio > s.peak_ratio:
                s.peak_ratio, s.peak_of = ratio, what
            if ratio > s.ok_ratio and outcome not in FAILURES:
                s.ok_ratio, s.ok_of = ratio, what
        s.n += 1
        s.counts[outcome] += 1
        s.max_s = max(s.max_s, dt)
        if peak > s.peak:
            s.peak, s.peak_max_of = peak, f"{b.path.name} ({size} bytes): {desc}"
        if outcome in FAILURES:
            s.failures.append(f"[seed {seed} #{i}] {b.path.name}: {desc}: {outcome}: {detail}")
            if save is not None:
                Path(save).mkdir(parents=True, exist_ok=True)
                dst = Path(save) / f"{b.path.stem}-s{seed}-{i}-{outcome}.gguf"
                shutil.copyfile(path, dst)
        if progress and s.n % 500 == 0:
            progress(s)

    def wait_one(block: bool) -> None:
        busy = [sl for sl in slots if sl["job"] is not None]
        if not busy:
            return
        start = time.monotonic()
        deadline = min(sl["t0"] for sl in busy) + timeout
        ready = wait([sl["worker"].conn for sl in busy] + [sl["worker"].proc.sentinel for sl in busy],
                     max(0.0, deadline - start) if block else 0)
        for sl in busy:
            if sl["worker"].conn in ready:
                try:
                    finish(sl, sl["worker"].conn.recv())
                except (EOFError, OSError):  # the worker died (EOF, or a reset pipe)
                    finish(sl, None)
            elif sl["worker"].proc.sentinel in ready or time.monotonic() - sl["t0"] > timeout:
                finish(sl, None)

    try:
        def mutants() -> Iterator[tuple[str, Base, Rope, str]]:
            for b in bases if cuts else ():
                for cut in b.lay.boundaries[:-1]:  # the last one is the file's end
                    rope = Rope(b.lay.size)
                    rope.truncate(cut)
                    yield f"cut{cut}", b, rope, f"truncate at boundary {cut}"
            for i in range(start, start + n):
                rng = np.random.default_rng([seed, i])
                pool = real if real and (not synth or rng.random() < real_share) else synth
                b = pool[int(rng.integers(0, len(pool)))]
                yield str(i), b, *mutate(b, rng)

        for i, b, rope, desc in mutants():
            while all(sl["job"] is not None for sl in slots):
                wait_one(True)
            slot = next(sl for sl in slots if sl["job"] is None)
            k = slots.index(slot)
            if b.real:
                wf = slot["work"].get(b.path)
                if wf is None:
                    wf = slot["work"][b.path] = WorkFile(b, tmp / f"w{k}-{b.path.name}", tmp / b.path.name)
                wf.write(rope)
                path = wf.path
            else:
                path = tmp / f"w{k}-mutant.gguf"
                path.write_bytes(rope.materialize(b.data))
            size = path.stat().st_size
            s.by_base[b.path.name] += 1
            slot["job"] = (i, b, desc, path, size)
            slot["t0"] = time.monotonic()
            try:
                slot["worker"].conn.send((str(path), size))
            except OSError:  # the worker died before this mutant (say, while warming up)
                finish(slot, None)
        while any(sl["job"] is not None for sl in slots):
            wait_one(True)
    finally:
        for sl in slots:
            sl["worker"].stop()
            for wf in sl["work"].values():
                wf.close()
        if own_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    s.wall_s = time.perf_counter() - t0
    return s


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="number of mutants")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="index of the first mutant (to replay one)")
    ap.add_argument("--cuts", action="store_true", help="first, each base cut at every structural boundary")
    ap.add_argument("--files", nargs="*", default=[], help="real GGUF files to mutate (besides synthetic)")
    ap.add_argument("--no-synthetic", action="store_true", help="mutate only --files")
    ap.add_argument("--real-share", type=float, default=0.5, help="share of mutants made from --files")
    ap.add_argument("--jobs", type=int, default=1, help="worker processes")
    ap.add_argument("--timeout", type=float, default=5.0, help="seconds before a mutant counts as a hang")
    ap.add_argument("--save", default="fuzz-failures", help="where failing mutants are copied")
    a = ap.parse_args(argv)

    def progress(s: Summary) -> None:
        bad = sum(s.counts[k] for k in FAILURES)
        print(f"... {s.n} done, {bad} failures, {time.perf_counter() - t0:.0f} s", file=sys.stderr,
              flush=True)

    t0 = time.perf_counter()
    s = run(a.n, a.seed, a.files, synthetic=not a.no_synthetic, jobs=a.jobs, timeout=a.timeout, save=a.save,
            real_share=a.real_share, start=a.start, cuts=a.cuts, progress=progress)
    print(s.report())
    return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
