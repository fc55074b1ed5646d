"""Single-pass GGUF reader: header, metadata, tensor index and zero-copy tensor views.

The file is memory-mapped once; everything else (config, tokenizer, weights) reads from the one
`GGUFFile`. Layout (little-endian, GGUF v2/v3):

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, n_dims x i64 ne, i32 ggml type, u64 offset)
    padding to `general.alignment` | tensor data (offsets relative to here)

where a string is a u64 byte length then UTF-8 bytes, and an array value is a u32 element type,
a u64 count, then the elements. Every count and length read from the file is checked against the
bytes left in it before anything is allocated or looped over, and arrays are copied out of the map (big
string arrays decoded) only once the whole index has been checked, so a corrupt or truncated file
fails fast, in little memory, with a `GGUFError` naming the path and the problem.
"""

from __future__ import annotations

import codecs
import os
import struct
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType
from gguf.constants import GGML_QUANT_SIZES

from rocmforge import hub

__all__ = [
    "GGUFError",
    "TensorInfo",
    "GGUFFile",
    "open_model",
    "SUPPORTED_VERSIONS",
    "DEFAULT_ALIGNMENT",
]

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32  # GGUF_DEFAULT_ALIGNMENT
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_NAME_BYTES = 63  # GGML_MAX_NAME (64) including the NUL
_HEADER_BYTES = 24  # magic + version + n_tensors + n_kv
# strings longer than this are checked for UTF-8 in pieces of this size before decoding: CPython's
# decoder allocates up to 4 bytes per input byte before it finds the first bad one
_BIG_STRING = 1 << 14

# smallest possible encodings, used to bound counts by the bytes left in the file
_MIN_KV_BYTES = 8 + 1 + 4 + 1  # key length, >= 1 key byte, value type, 1-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 1 + 4 + 8 + 4 + 8  # name length, >= 1 name byte, n_dims, ne[0], type, offset

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")

_VT = GGUFValueType
# scalar value type -> (struct format, numpy dtype for arrays)
_SCALARS: dict[GGUFValueType, tuple[struct.Struct, str]] = {
    _VT.UINT8: (struct.Struct("<B"), "<u1"),
    _VT.INT8: (struct.Struct("<b"), "<i1"),
    _VT.UINT16: (struct.Struct("<H"), "<u2"),
    _VT.INT16: (struct.Struct("<h"), "<i2"),
    _VT.UINT32: (struct.Struct("<I"), "<u4"),
    _VT.INT32: (struct.Struct("<i"), "<i4"),
    _VT.FLOAT32: (struct.Struct("<f"), "<f4"),
    _VT.BOOL: (struct.Struct("<B"), "<u1"),  # any non-zero byte is true, as in ggml
    _VT.UINT64: (struct.Struct("<Q"), "<u8"),
    _VT.INT64: (struct.Struct("<q"), "<i8"),
    _VT.FLOAT64: (struct.Struct("<d"), "<f8"),
}

# ggml type -> (elements per block, bytes per block); module-level so tests can narrow it
_QUANT_SIZES: dict[GGMLQuantizationType, tuple[int, int]] = dict(GGML_QUANT_SIZES)


class GGUFError(Exception):
    """A GGUF file is missing, malformed or unsupported; the message names the path and the problem."""

    def __init__(self, problem: str, path: str | os.PathLike[str] | None = None) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        super().__init__(problem if path is None else f"{path}: {problem}")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order: ggml ne reversed, last dim contiguous
    ggml_type: GGMLQuantizationType
    offset: int  # absolute byte offset in file
    n_bytes: int
    n_elements: int


class _Cursor:
    """Bounds-checked little-endian reads from the mapped file."""

    __slots__ = ("buf", "pos", "end", "path")

    def __init__(self, buf: memoryview, pos: int, path: str) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf)
        self.path = path

    def error(self, problem: str) -> GGUFError:
        return GGUFError(problem, self.path)

    def left(self) -> int:
        return self.end - self.pos

    def need(self, n: int, what: str) -> None:
        if n > self.end - self.pos:
            raise self.error(
                f"file truncated: {what} at offset {self.pos} needs {n} bytes, only {self.left()} left"
            )

    def unpack(self, st: struct.Struct, what: str) -> Any:
        self.need(st.size, what)
        (v,) = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return v

    def u32(self, what: str) -> int:
        return self.unpack(_U32, what)

    def u64(self, what: str) -> int:
        return self.unpack(_U64, what)

    def string(self, what: str, max_len: int | None = None) -> str:
        n = self.u64(f"length of {what}")
        if n > self.left():
            raise self.error(
                f"{what}: string length {n} at offset {self.pos - 8} exceeds the {self.left()} bytes "
                "left in the file (corrupt or truncated)"
            )
        start = self.pos
        self.pos += n
        if max_len is not None and n > max_len:
            # not decoded whole (a bad length can be most of the file): the caller refuses the name
            # by its length and shows its first 80 characters
            return str(self.buf[start : start + max(80, max_len + 1)], "utf-8", "replace")
        try:
            if n > _BIG_STRING:
                dec = codecs.getincrementaldecoder("utf-8")()
                for i in range(start, self.pos, _BIG_STRING):
                    dec.decode(self.buf[i : min(i + _BIG_STRING, self.pos)], i + _BIG_STRING >= self.pos)
            return str(self.buf[start : self.pos], "utf-8")
        except UnicodeDecodeError as e:
            raise self.error(f"{what} at offset {start} is not valid UTF-8 ({e.reason})") from None

    def string_array(self, n: int, what: str) -> list[str] | _StringArray:
        """n length-prefixed strings. Small arrays are decoded at once; a big one (tokens, merges) is only
        walked here (its string ends checked against the file) and decoded by `decode` once the whole
        index is known to be sound, so a truncated or corrupt file fails before its big arrays become
        Python strings (several times their size in the file)."""
        if n < 256:
            out, self.pos = self._string_loop(self.pos, n, what)
            return out
        buf, pos0, unpack = self.buf, self.pos, _U64.unpack_from
        ends = array("q")  # int64 end offset of each string; grows only as far as the file allows
        append = ends.append
        pos = pos0
        try:
            for _ in range(n):
                (ln,) = unpack(buf, pos)  # struct.error once pos is past the end
                pos += 8 + ln
                append(pos)  # OverflowError past int64
        except (struct.error, OverflowError):
            raise self.error(
                f"file truncated in {what}: element {len(ends)} of {n} runs past the end of the file "
                "(corrupt length or truncated file)"
            ) from None
        if pos > self.end:
            raise self.error(f"file truncated in {what}: element {n - 1} runs past the end of the file")
        self.pos = pos
        return _StringArray(pos0, n, ends, what)

    def decode(self, a: _StringArray) -> list[str]:
        """The strings of a walked array. Fast path: numpy turns each 8-byte length into one NUL
        separator, and a single decode + split builds the list; anything unusual falls back to the
        plain loop."""
        buf, pos0, n, ends = self.buf, a.pos, a.n, a.ends
        pos = ends[-1]
        pre = np.empty(n, dtype=np.int64)  # offset of each length prefix, relative to pos0
        pre[0] = 0
        pre[1:] = np.frombuffer(ends, dtype=np.int64)[:-1] - pos0
        blob = np.frombuffer(buf, dtype=np.uint8, count=pos - pos0, offset=pos0)
        keep = np.ones(blob.size, dtype=bool)
        for k in range(1, 8):  # keep 1 byte of each prefix (no n x 7 index temporary)
            keep[pre + k] = False
        content = blob[keep]  # copy
        sep = pre - 7 * np.arange(n)
        content[sep] = 0
        first = sep + 1
        first = first[first < content.size]
        # no NUL inside a string, and no string starts with a UTF-8 continuation byte (so no
        # multi-byte character spans two strings): then one decode validates every string
        if np.count_nonzero(content == 0) == n and not np.any((content[first] & 0xC0) == 0x80):
            try:
                return content.tobytes().decode("utf-8").split("\0")[1:]
            except UnicodeDecodeError:
                pass
        return self._string_loop(pos0, n, a.what)[0]

    def _string_loop(self, pos: int, n: int, what: str) -> tuple[list[str], int]:
        # reference decoder from `pos`, used for small arrays and when the fast path declines;
        # -> (strings, end offset)
        buf, end, unpack = self.buf, self.end, _U64.unpack_from
        out: list[str] = []
        append = out.append
        i = 0
        try:
            for i in range(n):  # noqa: B007 (i names the bad element below)
                (ln,) = unpack(buf, pos)  # struct.error past the end
                pos += 8
                if ln > end - pos:  # checked before decoding: never a huge str from a bad length
                    raise self.error(
                        f"{what}: element {i} string length {ln} at offset {pos - 8} exceeds the "
                        f"{end - pos} bytes left in the file (corrupt or truncated)"
                    )
                append(str(buf[pos : pos + ln], "utf-8"))
                pos += ln
        except struct.error:
            raise self.error(f"file truncated in {what}: element {i} of {n} at offset {pos}") from None
        except UnicodeDecodeError as e:
            raise self.error(f"{what}: element {i} at offset {pos} is not valid UTF-8 ({e.reason})") from None
        return out, pos


@dataclass(frozen=True)
class _StringArray:
    """A big string array walked but not yet decoded: where it starts, its length, its string ends."""

    pos: int
    n: int
    ends: array
    what: str


class StringArray(Sequence[str]):
    """A big metadata string array (tokens, merges), checked when the file is opened (every string's bounds
    and UTF-8) but decoded only when read: as Python strings such an array takes several times its bytes in
    the file, which opening must not cost (a vocabulary alone can be most of a file). It reads the file's map,
    which it keeps alive after the file is closed. Compares equal to a list of the same strings; pickles
    as one."""

    __slots__ = ("_mm", "_walk", "_path", "_list")

    def __init__(self, mm: np.ndarray, walk: _StringArray, path: str) -> None:
        self._mm, self._walk, self._path = mm, walk, path
        self._list: list[str] | None = None

    def tolist(self) -> list[str]:
        """Every string (decoded once, then kept)."""
        if self._list is None:
            buf = memoryview(self._mm)
            try:
                self._list = _Cursor(buf, self._walk.pos, self._path).decode(self._walk)
            finally:
                buf.release()
        return self._list

    def __len__(self) -> int:
        return self._walk.n

    def __getitem__(self, i):  # type: ignore[override]
        if self._list is not None or isinstance(i, slice):
            return self.tolist()[i]
        n = self._walk.n
        if not -n <= i < n:
            raise IndexError(f"string array index {i} out of range ({n})")
        i %= n
        ends = self._walk.ends
        start = (ends[i - 1] if i else self._walk.pos) + 8
        return str(self._mm[start : ends[i]].tobytes(), "utf-8")

    def __iter__(self):
        return iter(self.tolist())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, StringArray | list | tuple):
            return self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self):
        return (list, (self.tolist(),))

    def __repr__(self) -> str:
        return f"StringArray({self._walk.n} strings)"


# strings checked a chunk at a time when a file is opened: the decoded chunk is dropped at once
_CHECK_CHUNK = 2048


@dataclass(frozen=True)
class _NumArray:
    """A numeric or bool array checked against the file but not yet copied out of the map."""

    pos: int
    n: int
    etype: GGUFValueType

    def copy(self, buf: memoryview) -> np.ndarray:
        dtype = _SCALARS[self.etype][1]
        arr = np.frombuffer(buf, dtype=dtype, count=self.n, offset=self.pos)
        # one copy out of the map (not a copy and then a bool array: a bool array can be most of a file)
        arr = arr != 0 if self.etype == _VT.BOOL else arr.astype(dtype[1:], copy=True)
        arr.flags.writeable = False
        return arr


class GGUFFile:
    """One parsed, memory-mapped GGUF file. Open with `GGUFFile.open(path)`; close or use `with`.

    `metadata` values are Python str/int/float/bool; arrays of strings are `list[str]` (big ones a
    `StringArray`: a sequence decoded when read), numeric and bool arrays are read-only 1-D numpy arrays
    (copied out of the map, native little-endian).
    """

    parse_count: int = 0  # class-level: bumped once per parse, so tests can prove single-pass loading

    path: Path
    version: int
    metadata: dict[str, Any]
    kv_types: dict[str, tuple[GGUFValueType, GGUFValueType | None]]  # key -> (type, array element type)
    tensors: dict[str, TensorInfo]  # file order
    alignment: int
    data_offset: int
    file_size: int

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.metadata = {}
        self.kv_types = {}
        self.tensors = {}
        self._mm: np.memmap | None = None
        GGUFFile.parse_count += 1
        self._parse()

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> GGUFFile:
        """Parse header, metadata and tensor index of `path` and map it; raises GGUFError."""
        return cls(path)

    # -- parsing ----------------------------------------------------------------------------------

    def _parse(self) -> None:
        path = str(self.path)
        try:
            with open(path, "rb") as fh:
                self.file_size = os.fstat(fh.fileno()).st_size
                head = fh.read(_HEADER_BYTES)
        except FileNotFoundError:
            raise GGUFError("no such file", path) from None
        except IsADirectoryError:
            raise GGUFError("is a directory, not a GGUF file", path) from None
        except OSError as e:
            raise GGUFError(f"cannot read file: {e.strerror or e}", path) from None

        if len(head) >= 4 and head[:4] != GGUF_MAGIC:
            raise GGUFError(f"not a GGUF file: magic is {head[:4]!r}, expected {GGUF_MAGIC!r}", path)
        if len(head) >= 8:
            self.version = _U32.unpack_from(head, 4)[0]
            self._check_version(self.version, path)
        if len(head) < _HEADER_BYTES:
            raise GGUFError(
                f"file truncated: header needs {_HEADER_BYTES} bytes, file has {self.file_size}", path
            )

        try:
            self._mm = np.memmap(path, dtype=np.uint8, mode="r")
        except (OSError, ValueError) as e:
            raise GGUFError(f"cannot memory-map file: {e}", path) from None
        buf = memoryview(self._mm)
        try:
            self._parse_from(_Cursor(buf, 8, path))
        except BaseException:
            buf.release()
            self._mm = None
            raise
        buf.release()

    @staticmethod
    def _check_version(version: int, path: str) -> None:
        if version in SUPPORTED_VERSIONS:
            return
        hint = ""
        if version & 0xFFFF == 0:
            hint = " (a big-endian file? only little-endian GGUF is supported)"
        elif version == 1:
            hint = " (GGUF v1 is obsolete; re-convert the model)"
        raise GGUFError(
            f"unsupported GGUF version {version}{hint}; supported versions: "
            + ", ".join(map(str, SUPPORTED_VERSIONS)),
            path,
        )

    def _parse_from(self, cur: _Cursor) -> None:
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        if n_kv * _MIN_KV_BYTES > cur.left():
            raise cur.error(
                f"metadata count {n_kv} is impossible: the {cur.left()} bytes left in the file hold "
                f"at most {cur.left() // _MIN_KV_BYTES} entries (corrupt or truncated header)"
            )
        if n_tensors * _MIN_TENSOR_INFO_BYTES > cur.left():
            raise cur.error(
                f"tensor count {n_tensors} is impossible: the {cur.left()} bytes left in the file hold "
                f"at most {cur.left() // _MIN_TENSOR_INFO_BYTES} tensor infos (corrupt or truncated header)"
            )

        for i in range(n_kv):
            key = cur.string(f"key of metadata entry {i}")
            if not key:
                raise cur.error(f"metadata entry {i} has an empty key")
            if key in self.metadata:
                raise cur.error(f"duplicate metadata key '{key}'")
            vtype = self._value_type(cur, f"value type of metadata key '{key}'")
            if vtype == _VT.ARRAY:
                etype = self._value_type(cur, f"array element type of metadata key '{key}'")
                self.metadata[key] = self._read_array(cur, key, etype)
                self.kv_types[key] = (vtype, etype)
            else:
                self.metadata[key] = self._read_scalar(cur, key, vtype)
                self.kv_types[key] = (vtype, None)

        self.alignment = self._read_alignment(cur)
        seen: set[str] = set()
        raw_infos = [self._read_tensor_info(cur, i, seen) for i in range(n_tensors)]

        # the data section starts at the next multiple of the alignment after the index
        self.data_offset = -(-cur.pos // self.alignment) * self.alignment
        if n_tensors and self.data_offset > self.file_size:
            raise cur.error(
                f"file truncated: tensor data should start at offset {self.data_offset}, "
                f"file has {self.file_size} bytes"
            )
        for name, shape, qtype, rel, n_el, n_bytes in raw_infos:
            if rel % self.alignment:
                raise cur.error(
                    f"tensor '{name}' data offset {rel} is not a multiple of the alignment {self.alignment}"
                )
            off = self.data_offset + rel
            if off + n_bytes > self.file_size:
                raise cur.error(
                    f"tensor '{name}' data [{off}, {off + n_bytes}) lies outside the file "
                    f"({self.file_size} bytes; truncated download?)"
                )
            self.tensors[name] = TensorInfo(name, shape, qtype, off, n_bytes, n_el)
        self._check_overlap(cur)
        for key, v in self.metadata.items():  # the index is sound: now the arrays' copies
            if isinstance(v, _StringArray):
                self._check_strings(cur, v)
                self.metadata[key] = StringArray(self._mm, v, str(self.path))
            elif isinstance(v, _NumArray):
                self.metadata[key] = v.copy(cur.buf)

    @staticmethod
    def _check_strings(cur: _Cursor, a: _StringArray) -> None:
        """Every string of a walked array is UTF-8 (GGUFError otherwise), decoded a chunk at a time and
        dropped: what StringArray decodes later cannot fail."""
        ends = a.ends
        for i in range(0, a.n, _CHECK_CHUNK):
            j = min(a.n, i + _CHECK_CHUNK)
            cur.decode(_StringArray(ends[i - 1] if i else a.pos, j - i, ends[i:j], a.what))

    @staticmethod
    def _value_type(cur: _Cursor, what: str) -> GGUFValueType:
        v = cur.u32(what)
        try:
            return GGUFValueType(v)
        except ValueError:
            raise cur.error(f"unknown {what}: {v} (offset {cur.pos - 4})") from None

    @staticmethod
    def _read_scalar(cur: _Cursor, key: str, vtype: GGUFValueType) -> Any:
        if vtype == _VT.STRING:
            return cur.string(f"value of metadata key '{key}'")
        st, _ = _SCALARS[vtype]
        v = cur.unpack(st, f"value of metadata key '{key}'")
        return bool(v) if vtype == _VT.BOOL else v

    @staticmethod
    def _read_array(cur: _Cursor, key: str, etype: GGUFValueType) -> list[str] | _StringArray | _NumArray:
        n = cur.u64(f"array length of metadata key '{key}'")
        if etype == _VT.ARRAY:
            raise cur.error(f"metadata key '{key}' is a nested array, which GGUF readers do not support")
        item = 8 if etype == _VT.STRING else _SCALARS[etype][0].size  # strings: at least the length
        if n * item > cur.left():
            raise cur.error(
                f"metadata key '{key}' array length {n} needs at least {n * item} bytes, "
                f"only {cur.left()} left in the file (corrupt or truncated)"
            )
        if etype == _VT.STRING:
            return cur.string_array(n, f"metadata key '{key}'")
        cur.pos += n * item
        return _NumArray(cur.pos - n * item, n, etype)  # copied once the whole index is sound

    def _read_alignment(self, cur: _Cursor) -> int:
        if "general.alignment" not in self.metadata:
            return DEFAULT_ALIGNMENT
        if self.kv_types["general.alignment"] != (_VT.UINT32, None):
            raise cur.error("metadata key 'general.alignment' must be a uint32")
        a = self.metadata["general.alignment"]
        if a <= 0 or a & (a - 1):
            raise cur.error(f"general.alignment {a} is not a power of two")
        return a

    @staticmethod
    def _read_tensor_info(cur: _Cursor, i: int, seen: set[str]) -> tuple:
        # -> (name, numpy shape, type, offset relative to the data section, n_elements, n_bytes)
        name = cur.string(f"name of tensor {i}", MAX_NAME_BYTES)
        if not name:
            raise cur.error(f"tensor {i} has an empty name")
        if len(name.encode()) > MAX_NAME_BYTES:
            raise cur.error(f"tensor {i} name '{name[:80]}...' is longer than {MAX_NAME_BYTES} bytes")
        if name in seen:
            raise cur.error(f"duplicate tensor name '{name}'")
        seen.add(name)
        n_dims = cur.u32(f"dimension count of tensor '{name}'")
        if not 1 <= n_dims <= MAX_DIMS:
            raise cur.error(f"tensor '{name}' has {n_dims} dimensions, expected 1 to {MAX_DIMS}")
        cur.need(8 * n_dims, f"dimensions of tensor '{name}'")
        ne = struct.unpack_from(f"<{n_dims}q", cur.buf, cur.pos)  # ggml order: ne[0] contiguous
        cur.pos += 8 * n_dims
        if any(d <= 0 for d in ne):
            raise cur.error(f"tensor '{name}' has invalid dimensions {list(ne)} (ggml order)")
        type_id = cur.unpack(_I32, f"type of tensor '{name}'")
        try:
            qtype = GGMLQuantizationType(type_id)
        except ValueError:
            raise cur.error(f"tensor '{name}' has unknown ggml type id {type_id}") from None
        if qtype not in _QUANT_SIZES:
            raise cur.error(f"tensor '{name}' has ggml type {qtype.name} with no known block size")
        block, type_size = _QUANT_SIZES[qtype]
        if ne[0] % block:
            raise cur.error(
                f"tensor '{name}' of type {qtype.name} has rows of {ne[0]} elements, "
                f"not a multiple of the block size {block}"
            )
        rel = cur.u64(f"data offset of tensor '{name}'")
        n_el = 1
        for d in ne:
            n_el *= d
        return (name, tuple(reversed(ne)), qtype, rel, n_el, n_el // block * type_size)

    def _check_overlap(self, cur: _Cursor) -> None:
        spans = sorted((t.offset, t.offset + t.n_bytes, t.name) for t in self.tensors.values())
        for (_, end_a, a), (start_b, _, b) in zip(spans, spans[1:], strict=False):
            if start_b < end_a:
                raise cur.error(f"tensor '{b}' data overlaps tensor '{a}'")

    # -- access -----------------------------------------------------------------------------------

    @property
    def arch(self) -> str:
        """`general.architecture`, e.g. "llama" or "qwen2"."""
        arch = self.require("general.architecture")
        if not isinstance(arch, str):
            raise GGUFError("metadata key 'general.architecture' is not a string", self.path)
        return arch

    @property
    def closed(self) -> bool:
        return self._mm is None

    @property
    def tensor_bytes(self) -> int:
        """Sum of all tensors' data sizes."""
        return sum(t.n_bytes for t in self.tensors.values())

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        try:
            return self.metadata[key]
        except KeyError:
            raise GGUFError(f"missing required metadata key '{key}'", self.path) from None

    def tensor(self, name: str) -> TensorInfo:
        """TensorInfo of `name`; GGUFError naming the tensor when absent."""
        try:
            return self.tensors[name]
        except KeyError:
            raise GGUFError(f"no tensor named '{name}'", self.path) from None

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes as a read-only uint8 view of the memory map (no copy)."""
        info = self.tensor(name)
        if self._mm is None:
            raise GGUFError(f"file is closed (reading tensor '{name}')", self.path)
        return self._mm[info.offset : info.offset + info.n_bytes]

    def close(self) -> None:
        """Drop the map; views handed out by raw() stay valid until they are released."""
        self._mm = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        arch = self.metadata.get("general.architecture", "?")
        return f"GGUFFile({str(self.path)!r}, arch={arch!r}, tensors={len(self.tensors)}, v{self.version})"


def open_model(name_or_path: str | os.PathLike[str]) -> GGUFFile:
    """Open a GGUF file by known model name (see `rocmforge.hub`) or by path; one parse."""
    return GGUFFile.open(hub.resolve(name_or_path))
