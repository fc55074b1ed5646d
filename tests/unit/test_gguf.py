"""rocmforge.gguf: parsing valid files (checked against gguf.GGUFReader) and every corrupt-file case."""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Callable
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as VT
from gguf_factory import (
    fails_fast,
    kv_type_offset,
    patch,
    patch_bytes,
    real_model,
    tensor_info_offset,
    truncate,
    write_gguf,
    write_model,
    write_small,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rocmforge.gguf as rg
from rocmforge.config import ModelConfig
from rocmforge.gguf import GGUFError, GGUFFile, TensorInfo, open_model


def _same_as_reader(f: GGUFFile) -> None:
    """Every tensor and metadata value equals what gguf's own reader finds."""
    r = gguf.GGUFReader(f.path)
    assert list(f.tensors) == [t.name for t in r.tensors]
    for t in r.tensors:
        info = f.tensors[t.name]
        assert info.offset == t.data_offset
        assert info.n_bytes == t.n_bytes
        assert info.n_elements == t.n_elements
        assert info.ggml_type == t.tensor_type
        assert info.shape == tuple(int(d) for d in reversed(t.shape))
        assert np.array_equal(f.raw(t.name), t.data.view(np.uint8).reshape(-1))
    keys = [k for k in r.fields if not k.startswith("GGUF.")]
    assert list(f.metadata) == keys
    for k in keys:
        want = r.fields[k].contents()
        got = f.metadata[k]
        if isinstance(want, list):
            assert list(got) == pytest.approx(want) if not isinstance(want[0], str) else got == want, k
        else:
            assert got == pytest.approx(want) if isinstance(want, float) else got == want, k


# -- valid files ------------------------------------------------------------------------------------------


def test_small_file_values_types_and_views(tmp_path: Path) -> None:
    p = write_small(tmp_path / "small.gguf")
    with GGUFFile.open(p) as f:
        assert f.path == p and f.version == 3 and f.arch == "llama"
        assert f.alignment == 32 and f.data_offset % 32 == 0
        assert f.file_size == p.stat().st_size
        md = f.metadata
        assert md["general.name"] == "small"
        assert md["test.u8"] == 7 and type(md["test.u8"]) is int
        assert md["test.i64"] == -5
        assert md["test.f64"] == 0.25
        assert md["test.flag"] is True
        assert md["test.words"] == ["alpha", "beta", "gamma"]
        ints = md["test.ints"]
        assert isinstance(ints, np.ndarray) and ints.dtype == np.int32 and ints.tolist() == [1, -2, 3]
        assert not ints.flags.writeable
        assert f.kv_types["test.ints"] == (VT.ARRAY, VT.INT32)
        assert f.get("nope") is None and f.get("nope", 3) == 3
        assert f.require("test.u8") == 7

        a, b = f.tensors["a.weight"], f.tensors["b.weight"]
        assert isinstance(a, TensorInfo)
        assert a == TensorInfo("a.weight", (4, 64), Q.F32, f.data_offset, 4 * 64 * 4, 256)
        assert b.shape == (2, 64) and b.ggml_type == Q.Q8_0 and b.n_bytes == 2 * 2 * 34
        assert b.offset % 32 == 0
        raw = f.raw("a.weight")
        assert raw.dtype == np.uint8 and raw.shape == (a.n_bytes,)
        assert isinstance(raw, np.memmap) and not raw.flags.writeable  # a view of the map, not a copy
        _same_as_reader(f)
    assert f.closed
    with pytest.raises(GGUFError, match=re.escape(str(p)) + ".*closed"):
        f.raw("a.weight")


def test_tiny_model_matches_gguf_reader(tmp_path: Path) -> None:
    p = write_model(tmp_path / "tiny.gguf", "qwen2", tied=False, qkv_bias=True)
    with GGUFFile.open(p) as f:
        _same_as_reader(f)
        types = {t.ggml_type for t in f.tensors.values()}
        assert types == {Q.F32, Q.F16, Q.Q8_0, Q.Q4_0}
        assert f.tensor_bytes == sum(t.n_bytes for t in f.tensors.values())
        assert f.metadata["tokenizer.ggml.tokens"][-2:] == ["🎉x", "a" * 200]


def test_version_2_and_custom_alignment(tmp_path: Path) -> None:
    p = write_model(tmp_path / "v2.gguf", alignment=64)
    patch(p, 4, "<I", 2)
    with GGUFFile.open(p) as f:
        assert f.version == 2 and f.alignment == 64
        assert all(t.offset % 64 == 0 for t in f.tensors.values())
        _same_as_reader(f)


def test_missing_key_unknown_tensor_and_missing_file(tmp_path: Path) -> None:
    p = write_small(tmp_path / "s.gguf")
    f = GGUFFile.open(p)
    with pytest.raises(GGUFError, match=re.escape(str(p)) + ".*missing required metadata key 'llama.nope'"):
        f.require("llama.nope")
    with pytest.raises(GGUFError, match=re.escape(str(p)) + ".*no tensor named 'c.weight'"):
        f.raw("c.weight")
    with pytest.raises(GGUFError, match="no such file"):
        GGUFFile.open(tmp_path / "absent.gguf")
    with pytest.raises(GGUFError, match="is a directory"):
        GGUFFile.open(tmp_path)


def test_parse_count_and_single_parse(tmp_path: Path) -> None:
    """config + tokenizer metadata + every weight from one open_model: exactly one parse."""
    p = write_model(tmp_path / "tiny.gguf")
    before = GGUFFile.parse_count
    f = open_model(p)
    cfg = ModelConfig.from_gguf(f)
    _ = (f.get("tokenizer.ggml.tokens"), f.get("tokenizer.ggml.merges"), f.get("tokenizer.ggml.token_type"))
    n = sum(f.raw(name).size for name in f.tensors)
    assert n == f.tensor_bytes and cfg.n_layer == 2
    assert GGUFFile.parse_count == before + 1


def test_open_model_unknown_name_lists_known(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-model.*smollm2-135m"):
        open_model("no-such-model")


# fast path (>= 256 strings) and plain loop must agree, whatever the strings
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.text(max_size=12), min_size=1, max_size=40), pad=st.sampled_from([0, 300]))
def test_string_arrays_roundtrip(tmp_path: Path, words: list[str], pad: int) -> None:
    arr = words + [f"w{i}é" for i in range(pad)]
    p = write_gguf(tmp_path / "strs.gguf", kv={"x.words": (arr, VT.ARRAY, VT.STRING),
                                                "x.after": (5, VT.UINT32, None)})
    with GGUFFile.open(p) as f:
        assert f.metadata["x.words"] == arr
        assert f.metadata["x.after"] == 5


def test_big_string_array_with_nul_falls_back(tmp_path: Path) -> None:
    arr = [f"a{i}" for i in range(300)] + ["x\0y", "", "\0"]
    p = write_gguf(tmp_path / "nul.gguf", kv={"x.words": (arr, VT.ARRAY, VT.STRING)})
    with GGUFFile.open(p) as f:
        assert f.metadata["x.words"] == arr


def test_big_string_arrays_decode_when_read_and_outlive_the_file(tmp_path: Path) -> None:
    """A vocabulary of 40,000 strings: opening checks every string but keeps none (tracemalloc's peak well
    under the file's size), reading decodes (one string, or all at once), and the array stays readable after
    the file is closed; it compares equal to its list and pickles as one."""
    import pickle
    import tracemalloc

    arr = [f"tok{i}\u0120x" for i in range(40_000)]
    p = write_gguf(tmp_path / "vocab.gguf", kv={"tokenizer.ggml.tokens": (arr, VT.ARRAY, VT.STRING)})
    size = p.stat().st_size
    tracemalloc.start()
    f = GGUFFile.open(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < size, (peak, size)  # as Python strings the list alone is several times the file
    toks = f.metadata["tokenizer.ggml.tokens"]
    assert isinstance(toks, rg.StringArray) and len(toks) == 40_000 and "40000 strings" in repr(toks)
    assert toks[0] == arr[0] and toks[-1] == arr[-1] and toks[12345] == arr[12345]
    with pytest.raises(IndexError):
        toks[40_000]
    f.close()
    assert toks[1:3] == arr[1:3] and toks == arr and list(toks) == arr and toks.tolist() is toks.tolist()
    assert pickle.loads(pickle.dumps(toks)) == arr and type(pickle.loads(pickle.dumps(toks))) is list


def test_a_bad_string_deep_in_a_big_array_fails_at_open(tmp_path: Path) -> None:
    arr = [f"w{i}" for i in range(5000)]
    p = write_gguf(tmp_path / "bad.gguf", kv={"x.words": (arr, VT.ARRAY, VT.STRING)})
    data = bytearray(p.read_bytes())
    at = data.index(b"w4321")
    data[at + 1] = 0xFF  # not UTF-8
    p.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="not valid UTF-8"):
        GGUFFile.open(p)


# -- corrupt files ----------------------------------------------------------------------------------------


def _hdr_count(field_offset: int, value: int) -> Callable[[Path, bytes], None]:
    return lambda p, d: patch(p, field_offset, "<Q", value)


def _kv_type(key: str, value: int) -> Callable[[Path, bytes], None]:
    return lambda p, d: patch(p, kv_type_offset(d, key), "<I", value)


def _kv_str_len(key: str, value: int) -> Callable[[Path, bytes], None]:
    return lambda p, d: patch(p, kv_type_offset(d, key) + 4, "<Q", value)


def _kv_arr(key: str, etype: int | None = None, count: int | Callable[[bytes], int] | None = None):
    def go(p: Path, d: bytes) -> None:
        off = kv_type_offset(d, key) + 4  # element type, then u64 count
        if etype is not None:
            patch(p, off, "<I", etype)
        if count is not None:
            patch(p, off + 4, "<Q", count(d) if callable(count) else count)
    return go


def _ti(name: str, field: str, value: int) -> Callable[[Path, bytes], None]:
    # tensor info of a 2-D tensor: u32 n_dims | i64 ne0 | i64 ne1 | i32 type | u64 offset
    fields = {"n_dims": (0, "<I"), "ne0": (4, "<q"), "ne1": (12, "<q"), "type": (20, "<i"),
              "offset": (24, "<Q")}
    rel, fmt = fields[field]

    def go(p: Path, d: bytes) -> None:
        off = tensor_info_offset(d, name) + rel
        if field == "offset":
            value_ = struct.unpack_from("<Q", d, off)[0] + value  # relative change
            patch(p, off, fmt, value_)
        else:
            patch(p, off, fmt, value)
    return go


def _rename(old: bytes, new: bytes) -> Callable[[Path, bytes], None]:
    return lambda p, d: patch_bytes(p, d.index(old), new)


def _cut(where: Callable[[bytes], int]) -> Callable[[Path, bytes], None]:
    return lambda p, d: truncate(p, where(d))


def _words_left(d: bytes) -> int:
    # a count that passes the "fits in the bytes left" bound (8 bytes per string) but is wrong
    return (len(d) - kv_type_offset(d, "test.words") - 16) // 8


CORRUPT: list[tuple[str, Callable[[Path, bytes], None], str]] = [
    ("magic", lambda p, d: patch_bytes(p, 0, b"GGML"), r"not a GGUF file: magic is b'GGML'"),
    ("version-1", lambda p, d: patch(p, 4, "<I", 1),
     r"unsupported GGUF version 1 .*supported versions: 2, 3"),
    ("version-4", lambda p, d: patch(p, 4, "<I", 4), r"unsupported GGUF version 4"),
    ("big-endian", lambda p, d: patch(p, 4, ">I", 3), r"unsupported GGUF version 50331648 \(a big-endian"),
    ("empty", _cut(lambda d: 0), r"file truncated: header"),
    ("header-cut", _cut(lambda d: 20), r"file truncated: header"),
    ("n-kv-absurd", _hdr_count(16, 2**62), r"metadata count 4611686018427387904 is impossible"),
    ("n-kv-huge", _hdr_count(16, 2**64 - 1), r"metadata count \d+ is impossible"),
    ("n-tensors-absurd", _hdr_count(8, 2**40), r"tensor count 1099511627776 is impossible"),
    ("n-kv-too-many", _hdr_count(16, 30), r"file truncated|unknown value type|not valid UTF-8|string length"),
    ("metadata-cut", _cut(lambda d: kv_type_offset(d, "test.words") + 30),
     r"file truncated in metadata key|array length 3 needs at least 24 bytes"),
    ("metadata-cut-key", _cut(lambda d: kv_type_offset(d, "test.u8") - 3),
     r"file truncated|metadata count 8 is impossible"),
    ("index-cut", _cut(lambda d: tensor_info_offset(d, "b.weight") + 6), r"file truncated: dimensions of"),
    ("data-cut", _cut(lambda d: len(d) - 40), r"tensor 'b.weight' data .* lies outside the file"),
    ("data-missing", _cut(lambda d: tensor_info_offset(d, "b.weight") + 32),
     r"file truncated: tensor data should start"),
    ("key-len-absurd", lambda p, d: patch(p, 24, "<Q", 2**60),
     r"string length 1152921504606846976 .*exceeds"),
    ("str-len-absurd", _kv_str_len("general.name", 2**63), r"value of metadata key 'general.name'.*exceeds"),
    ("str-len-past-end", _kv_str_len("general.name", 10**6), r"string length 1000000 .*exceeds"),
    ("arr-len-absurd", _kv_arr("test.words", count=2**61), r"'test.words' array length \d+ needs at least"),
    ("arr-num-len-absurd", _kv_arr("test.ints", count=2**62), r"'test.ints' array length \d+ needs at least"),
    ("arr-len-plausible", _kv_arr("test.words", count=_words_left),
     r"file truncated in metadata key 'test.words'|test.words.*(not valid UTF-8|exceeds the)"),
    ("value-type", _kv_type("test.u8", 99), r"unknown value type of metadata key 'test.u8': 99"),
    ("value-type-neg", _kv_type("test.u8", 2**32 - 1), r"unknown value type of metadata key 'test.u8'"),
    ("array-elem-type", _kv_arr("test.ints", etype=13),
     r"unknown array element type of metadata key 'test.ints'"),
    ("key-not-utf8", _rename(b"test.u8", b"test.\xff8"), r"key of metadata entry \d+ .*not valid UTF-8"),
    ("value-not-utf8", _rename(b"small", b"sm\xe9ll"),
     r"value of metadata key 'general.name'.*not valid UTF-8"),
    ("array-elem-not-utf8", _rename(b"gamma", b"gam\xc3a"),
     r"metadata key 'test.words': element 2 .*not valid"),
    ("tensor-name-not-utf8", _rename(b"b.weight", b"b.weigh\xff"), r"name of tensor 1 .*not valid UTF-8"),
    ("duplicate-key", _rename(b"test.f64", b"test.i64"), r"duplicate metadata key 'test.i64'"),
    ("duplicate-tensor", _rename(b"b.weight", b"a.weight"), r"duplicate tensor name 'a.weight'"),
    ("tensor-type-unknown", _ti("b.weight", "type", 99), r"tensor 'b.weight' has unknown ggml type id 99"),
    ("tensor-type-removed", _ti("b.weight", "type", 4), r"unknown ggml type id 4"),
    ("tensor-type-negative", _ti("b.weight", "type", -1), r"unknown ggml type id -1"),
    ("n-dims-0", _ti("b.weight", "n_dims", 0), r"tensor 'b.weight' has 0 dimensions, expected 1 to 4"),
    ("n-dims-5", _ti("b.weight", "n_dims", 5), r"tensor 'b.weight' has 5 dimensions"),
    ("n-dims-huge", _ti("b.weight", "n_dims", 2**31), r"has 2147483648 dimensions"),
    ("dim-zero", _ti("b.weight", "ne1", 0), r"tensor 'b.weight' has invalid dimensions \[64, 0\]"),
    ("dim-negative", _ti("b.weight", "ne1", -2), r"invalid dimensions \[64, -2\]"),
    ("dim-huge", _ti("b.weight", "ne1", 2**62), r"tensor 'b.weight' data .* lies outside the file"),
    ("row-not-block-multiple", _ti("b.weight", "ne0", 48),
     r"'b.weight' of type Q8_0 has rows of 48 elements, not a multiple of the block size 32"),
    ("offset-misaligned", _ti("b.weight", "offset", 4),
     r"'b.weight' data offset \d+ is not a multiple of .* 32"),
    ("offset-past-end", _ti("b.weight", "offset", 2**40), r"'b.weight' data .* lies outside the file"),
    ("offset-overlap", _ti("b.weight", "offset", -1024), r"tensor '[ab].weight' data overlaps"),
]


@pytest.mark.parametrize("corrupt, problem", [c[1:] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_corrupt_file_raises_gguf_error(tmp_path: Path, corrupt: Callable[[Path, bytes], None],
                                        problem: str) -> None:
    p = write_small(tmp_path / "bad.gguf")
    corrupt(p, p.read_bytes())
    with fails_fast(), pytest.raises(GGUFError, match=re.escape(str(p)) + ": .*(" + problem + ")") as ei:
        GGUFFile.open(p)
    assert ei.value.path == str(p)
    assert str(ei.value).startswith(str(p) + ": ")


def _write_then(kv: dict, tensors: dict | None = None):
    def make(p: Path) -> None:
        write_gguf(p, kv=kv, tensors=tensors)
    return make


_TEN = {"t": np.zeros(32, np.float32)}
BAD_WRITTEN: list[tuple[str, Callable[[Path], None], str]] = [
    ("empty-key", _write_then({"": (1, VT.UINT32, None)}), r"metadata entry 1 has an empty key"),
    ("nested-array", _write_then({"x.n": ([[1, 2], [3]], VT.ARRAY, VT.ARRAY)}), r"'x.n' is a nested array"),
    ("alignment-not-pow2", _write_then({"general.alignment": (48, VT.UINT32, None)}, _TEN),
     r"general.alignment 48 is not a power of two"),
    ("alignment-zero", _write_then({"general.alignment": (0, VT.UINT32, None)}, _TEN), r"not a power of two"),
    ("alignment-type", _write_then({"general.alignment": (32, VT.UINT64, None)}, _TEN),
     r"'general.alignment' must be a uint32"),
    ("name-too-long", _write_then({}, {"x" * 64: np.zeros(4, np.float32)}), r"longer than 63 bytes"),
    ("big-array-not-utf8", _write_then({"x.w": ([b"ok%d" % i for i in range(300)] + [b"\xff"], VT.ARRAY,
                                                VT.STRING)}), r"'x.w': element 300 .*not valid UTF-8"),
]


@pytest.mark.parametrize("make, problem", [c[1:] for c in BAD_WRITTEN], ids=[c[0] for c in BAD_WRITTEN])
def test_bad_written_file_raises_gguf_error(tmp_path: Path, make: Callable[[Path], None],
                                            problem: str) -> None:
    p = tmp_path / "bad.gguf"
    make(p)
    with fails_fast(), pytest.raises(GGUFError, match=re.escape(str(p)) + ": .*" + problem):
        GGUFFile.open(p)


def test_type_without_block_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_small(tmp_path / "s.gguf")
    monkeypatch.delitem(rg._QUANT_SIZES, Q.Q8_0)
    with pytest.raises(GGUFError, match=re.escape(str(p)) + ": tensor 'b.weight' has ggml type Q8_0 with no"):
        GGUFFile.open(p)


def test_huge_count_in_big_file_fails_fast(tmp_path: Path) -> None:
    """Absurd counts and lengths are refused before any loop or allocation, however big the file
    (16 MiB of zeros here, which would decode as valid NUL characters)."""
    p = write_model(tmp_path / "m.gguf", tensor_update={"pad.weight": np.zeros((4096, 1024), np.float32)},
                    kv_update={"general.tags": (["a", "b"], VT.ARRAY, VT.STRING)})
    d = p.read_bytes()
    tokens, tags = kv_type_offset(d, "tokenizer.ggml.tokens"), kv_type_offset(d, "general.tags")
    left = len(d) - tags
    for off, fmt, val in [(16, "<Q", 2**50), (8, "<Q", 2**50),  # n_kv, n_tensors
                          (tokens + 8, "<Q", 2**59),  # array count
                          (tokens + 16, "<Q", len(d) - tokens - 100),  # 1st token length: fast path
                          (tags + 16, "<Q", left - 100),  # 1st string length: plain loop
                          (tags + 8, "<Q", left // 8 - 10)]:  # count that fits, strings that don't
        q = tmp_path / "huge.gguf"
        q.write_bytes(d)
        patch(q, off, fmt, val)
        with fails_fast(seconds=1.0, max_alloc=8 << 20), pytest.raises(GGUFError, match=re.escape(str(q))):
            GGUFFile.open(q)


def _padded(path: Path, kv: dict) -> tuple[Path, bytes]:
    """`kv` and 4 MiB of zero tensor data (zeros read as valid lengths and valid UTF-8)."""
    p = write_gguf(path, kv=kv, tensors={"pad.weight": np.zeros((1024, 1024), np.float32),
                                         "b.weight": np.ones(32, np.float32)}, types={"pad.weight": Q.F32})
    return p, p.read_bytes()


def test_truncated_index_fails_before_big_string_arrays_are_decoded(tmp_path: Path) -> None:
    """A file cut inside its tensor index: the big string arrays before it were only walked, not turned
    into Python strings (several times their bytes), when the GGUFError comes."""
    words = [f"{i % 1000:03d}" for i in range(50_000)]  # 550 KB in the file, ~3 MB as a list of str
    p = write_gguf(tmp_path / "w.gguf", kv={"x.words": (words, VT.ARRAY, VT.STRING)},
                   tensors={"a.weight": np.ones(32, np.float32), "b.weight": np.ones(32, np.float32)})
    truncate(p, tensor_info_offset(p.read_bytes(), "b.weight") + 6)
    with fails_fast(max_alloc=2 * p.stat().st_size), pytest.raises(GGUFError, match="file truncated"):
        GGUFFile.open(p)


def test_numeric_array_claiming_the_file_is_not_copied_first(tmp_path: Path) -> None:
    p, d = _padded(tmp_path / "n.gguf", {"x.bytes": ([1, 2, 3], VT.ARRAY, VT.UINT8)})
    at = kv_type_offset(d, "x.bytes") + 8
    patch(p, at, "<Q", len(d) - at - 8 - 64)  # fits in the file; what follows is not metadata
    with fails_fast(max_alloc=1 << 20), pytest.raises(GGUFError, match=re.escape(str(p))):
        GGUFFile.open(p)


def test_long_tensor_name_refused_before_decoding(tmp_path: Path) -> None:
    p, d = _padded(tmp_path / "t.gguf", {})
    at = tensor_info_offset(d, "b.weight") - len("b.weight") - 8
    patch(p, at, "<Q", len(d) - at - 8 - 64)  # 4 MiB of NULs: valid UTF-8, so only the limit stops it
    with fails_fast(max_alloc=1 << 20), pytest.raises(GGUFError, match="longer than 63 bytes"):
        GGUFFile.open(p)


def test_long_bad_utf8_string_refused_in_pieces(tmp_path: Path) -> None:
    """CPython's decoder allocates for the whole input before it finds a bad byte: a 4 MiB string is
    checked in 16 KiB pieces first."""
    p, d = _padded(tmp_path / "s.gguf", {"x.s": ("short", VT.STRING, None)})
    at = kv_type_offset(d, "x.s") + 4
    patch(p, at, "<Q", len(d) - at - 8 - 64)
    patch_bytes(p, len(d) - 200, b"\xff")
    with fails_fast(max_alloc=1 << 20), pytest.raises(GGUFError, match="'x.s' at offset .* not valid UTF-8"):
        GGUFFile.open(p)


def test_big_valid_string_still_decodes(tmp_path: Path) -> None:
    s = "x" * 16_382 + "🎉" + "é" * 40_000  # > 16 KiB: checked in pieces, a 4-byte char across two
    with GGUFFile.open(write_gguf(tmp_path / "v.gguf", kv={"x.s": (s, VT.STRING, None)})) as f:
        assert f.metadata["x.s"] == s


_FUZZ_BASE: list[tuple[bytes, int]] = []


def _fuzz_base(tmp: Path) -> tuple[bytes, int]:
    """The tiny qwen2 model's bytes and the end of its header (metadata + index), written once."""
    if not _FUZZ_BASE:
        p = write_model(tmp / "fuzz-base.gguf", "qwen2", tied=False, qkv_bias=True)
        with GGUFFile.open(p) as f:
            _FUZZ_BASE.append((p.read_bytes(), f.data_offset))
    return _FUZZ_BASE[0]


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True),
                                st.sampled_from(["byte", "u32", "u64", "cut"]),
                                st.integers(0, 2**64 - 1)), min_size=1, max_size=3))
def test_random_corruption_raises_only_gguf_error(tmp_path_factory: pytest.TempPathFactory,
                                                  edits: list[tuple[float, str, int]]) -> None:
    """Random edits anywhere in the header: parse (and config) succeed or raise GGUFError, fast."""
    base, header_end = _fuzz_base(tmp_path_factory.getbasetemp())
    b = bytearray(base)
    for where, kind, v in edits:
        off = int(where * min(header_end, len(b)))
        if kind == "cut":
            del b[off:]
        elif kind == "byte":
            b[off : off + 1] = bytes([v & 0xFF])
        else:
            n = 4 if kind == "u32" else 8
            b[off : off + n] = v.to_bytes(8, "little")[:n]
    p = tmp_path_factory.getbasetemp() / "fuzzed.gguf"
    p.write_bytes(b)
    with fails_fast(seconds=2.0):
        try:
            with GGUFFile.open(p) as f:
                ModelConfig.from_gguf(f)
        except GGUFError as e:
            assert str(e).startswith(f"{p}: ")


# -- the real models --------------------------------------------------------------------------------------


@pytest.mark.models
@pytest.mark.slow  # gguf.GGUFReader itself takes seconds on these files
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b"])
def test_real_model_matches_gguf_reader(name: str) -> None:
    with GGUFFile.open(real_model(name)) as f:
        _same_as_reader(f)


@pytest.mark.models
def test_real_model_single_parse() -> None:
    path = real_model("qwen2.5-0.5b")
    before = GGUFFile.parse_count
    f = open_model(path)
    cfg = ModelConfig.from_gguf(f)
    tokens, merges = f.require("tokenizer.ggml.tokens"), f.require("tokenizer.ggml.merges")
    assert f.get("tokenizer.chat_template")
    assert len(tokens) == cfg.n_vocab == 151936 and len(merges) == 151387
    total = 0
    for name in f.tensors:
        total += f.raw(name).size
    assert total == f.tensor_bytes
    assert GGUFFile.parse_count == before + 1


@pytest.mark.models
def test_real_model_parse_time() -> None:
    """Metadata (151936 tokens, 151387 merges) + tensor index of the 491 MB Qwen file: well under 1 s."""
    path = real_model("qwen2.5-0.5b")
    GGUFFile.open(path)  # page cache
    best = min(_timed(lambda: GGUFFile.open(path)) for _ in range(3))
    assert best < 1.0, f"parse took {best:.3f} s"


def _timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
