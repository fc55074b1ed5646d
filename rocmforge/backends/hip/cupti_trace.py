"""CUPTI activity tracing of a replayed device graph (timing="trace"), through cupti-python.

`ActivityTracer.trace(run)` turns on CUPTI's activity records of kernels, memcpys and memsets
(CONCURRENT_KERNEL, MEMCPY, MEMSET: not GRAPH_TRACE, which reports a graph launch as one record instead of
its nodes), runs `run` (one replay of the untimed graph and a synchronize), flushes CUPTI's buffers and
turns the records off again; it returns what was recorded in between, with CUPTI timestamps (ns) taken
before and after on the clock of the records (cuptiGetTimestamp), so that the caller can drop records of
anything else. CUPTI takes one pair of buffer callbacks per process: `activity_tracer()` registers them
once and hands out the one tracer. `NodeCounter` counts the nodes each step adds to a capture
(cuStreamGetCaptureInfo, cuGraphGetNodes), which is how the records are laid onto the steps.

cupti-python is imported only here and only when asked for (`load_cupti`): the package imports and runs
without it. It finds libcupti through cuda.pathfinder; where that fails, `load_cupti` loads it first from
the CUDA toolkit (CUDA_HOME, CUDA_PATH, the toolkit of the nvcc on PATH, /usr/local/cuda: extras/CUPTI/lib64
or lib64), which pathfinder then finds already loaded.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .timing import TraceRecord

log = logging.getLogger("rocmforge.hip")

_LIB_DIRS = ("extras/CUPTI/lib64", "lib64", "targets/x86_64-linux/lib", "targets/sbsa-linux/lib")


def libcupti_candidates(env: Mapping[str, str] | None = None, nvcc: str | None = "") -> list[str]:
    """libcupti files of the CUDA toolkits this machine names (CUDA_HOME, CUDA_PATH, CUDA_ROOT, the toolkit
    of the nvcc on PATH, /usr/local/cuda), versioned names first, newest first. nvcc "": look it up."""
    env = os.environ if env is None else env
    if nvcc == "":
        nvcc = shutil.which("nvcc")
    roots = [env.get(k) for k in ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT")]
    if nvcc:
        roots.append(str(Path(nvcc).resolve().parent.parent))
    roots.append("/usr/local/cuda")
    out: list[str] = []
    for root in roots:
        if not root:
            continue
        for sub in _LIB_DIRS:
            d = os.path.join(root, sub)
            versioned = sorted(glob.glob(os.path.join(d, "libcupti.so.*")), key=_version_key, reverse=True)
            for f in [*versioned, os.path.join(d, "libcupti.so")]:
                if os.path.isfile(f) and f not in out:
                    out.append(f)
    return out


def _version_key(path: str) -> tuple[int, ...]:
    tail = path.rsplit("libcupti.so.", 1)[-1]
    return tuple(int(p) if p.isdigit() else -1 for p in tail.split("."))


def _preload_libcupti() -> str:
    """Make sure libcupti can be found: cuda.pathfinder's search, else the toolkit's files loaded here
    (RTLD_GLOBAL: pathfinder, and so cupti-python, then finds the library already loaded). Returns where
    it came from; raises with what was tried."""
    why = ""
    try:
        from cuda.pathfinder import load_nvidia_dynamic_lib

        return str(load_nvidia_dynamic_lib("cupti").abs_path)
    except Exception as e:  # not installed, too old, or the library is where it does not look
        why = f"cuda.pathfinder: {type(e).__name__}: {e}"
    import ctypes

    tried = []
    for f in libcupti_candidates():
        try:
            ctypes.CDLL(f, mode=ctypes.RTLD_GLOBAL)
            return f
        except OSError as e:
            tried.append(f"{f}: {e}")
    raise OSError(f"libcupti not found ({why}; toolkit files tried: {tried or 'none'})")


def load_cupti() -> Any:
    """cupti-python's `cupti.cupti` module, libcupti loaded first (_preload_libcupti)."""
    try:
        import cupti  # noqa: F401
    except ImportError as e:
        raise ImportError(f"cupti-python is not installed (pip install cupti-python): {e}") from e
    _preload_libcupti()
    from cupti import cupti as api

    return api


def trace_unavailable(is_hip: bool) -> str | None:
    """Why timing="trace" cannot be used here (None: cupti-python imports and libcupti loads; whether
    activity tracing works shows at the first traced run)."""
    if is_hip:
        return "HIP: CUPTI is CUDA's (ROCm's tracer is not wired up)"
    try:
        from cuda.bindings import driver  # noqa: F401
    except ImportError:
        return "cuda-bindings is not installed (pip install cuda-bindings)"
    try:
        load_cupti()
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return _TRACER_FAILED or None  # tracing already failed in this process


class ActivityTracer:
    """CUPTI activity records of kernels, memcpys and memsets, on only while `trace` runs."""

    BUFFER_BYTES = 8 << 20

    def __init__(self, api: Any) -> None:
        self._api = api
        kind = api.ActivityKind
        self.kinds = [kind.CONCURRENT_KERNEL, kind.MEMCPY, kind.MEMSET]
        self._labels = {int(kind.CONCURRENT_KERNEL): "kernel", int(kind.KERNEL): "kernel",
                        int(kind.MEMCPY): "memcpy", int(kind.MEMSET): "memset"}
        self._flush_flag = int(api.ActivityFlag.FLUSH_FORCED)
        self._lock = threading.Lock()
        self._got: list[TraceRecord] = []
        self._callback_error = ""
        api.activity_register_callbacks(self._buffer_requested, self._buffer_completed)

    def _buffer_requested(self) -> tuple[int, int]:
        return self.BUFFER_BYTES, 0  # 0: as many records as fit

    def _buffer_completed(self, activities: list) -> None:
        """Copy out what a record says (the record objects belong to CUPTI's buffer)."""
        try:
            got = [r for r in (self._record(a) for a in activities) if r is not None]
        except Exception as e:  # an exception must not cross into CUPTI's thread
            self._callback_error = f"{type(e).__name__}: {e}"
            return
        with self._lock:
            self._got.extend(got)

    def _record(self, a: Any) -> TraceRecord | None:
        label = self._labels.get(int(a.kind))
        if label is None:
            return None
        name = (getattr(a, "name", "") or "") if label == "kernel" else label
        return TraceRecord(int(a.start), int(a.end), int(getattr(a, "correlation_id", 0) or 0),
                           int(getattr(a, "graph_id", 0) or 0), str(name), label)

    def trace(self, run: Callable[[], None], expected: int, warmup: Callable[[], None] | None = None,
              wait_s: float = 1.0) -> tuple[list[TraceRecord], int, int]:
        """Records on -> warmup() -> run() -> flush -> records off (both must synchronize: warmup's records
        end before run's window opens). Returns every record CUPTI delivered and the CUPTI timestamps
        before and after run() (the records' clock: ns). Flushes again for up to wait_s until `expected`
        records start between them (delivery may lag a flush)."""
        api = self._api
        api.activity_flush_all(self._flush_flag)  # whatever is pending from before: not ours
        with self._lock:
            self._got = []
        self._callback_error = ""
        enabled = []
        try:
            for k in self.kinds:
                api.activity_enable(k)
                enabled.append(k)
            if warmup is not None:  # whatever a traced launch costs the first time, not in the window
                warmup()
            t0 = int(api.get_timestamp())
            run()
            t1 = int(api.get_timestamp())
            api.activity_flush_all(self._flush_flag)
        finally:
            for k in enabled:
                api.activity_disable(k)
        deadline = time.monotonic() + wait_s
        while self._count(t0, t1) < expected and time.monotonic() < deadline:
            time.sleep(0.002)
            api.activity_flush_all(self._flush_flag)
        if self._callback_error:
            raise RuntimeError(f"CUPTI buffer callback failed: {self._callback_error}")
        with self._lock:
            got, self._got = self._got, []
        return got, t0, t1

    def _count(self, t0: int, t1: int) -> int:
        with self._lock:
            return sum(1 for r in self._got if t0 <= r.start <= t1)


_TRACER: ActivityTracer | None = None
_TRACER_FAILED = ""


def activity_tracer() -> ActivityTracer:
    """The process's tracer: cupti-python loaded and the buffer callbacks registered on the first call.
    Once tracing failed (here, or tracer_failed), every call raises RuntimeError with the first reason."""
    global _TRACER, _TRACER_FAILED
    if _TRACER_FAILED:
        raise RuntimeError(_TRACER_FAILED)
    if _TRACER is None:
        try:
            _TRACER = ActivityTracer(load_cupti())
        except Exception as e:
            _TRACER_FAILED = f"{type(e).__name__}: {e}"
            raise RuntimeError(_TRACER_FAILED) from e
    return _TRACER


def tracer_failed(reason: str) -> None:
    """Mark CUPTI tracing as not working in this process (a traced run failed in CUPTI): later backends
    take the event-node mode without trying again. The tracer stays referenced: CUPTI keeps its callbacks."""
    global _TRACER_FAILED
    _TRACER_FAILED = reason


class NodeCounter:
    """The number of graph nodes each step adds to a stream capture: the capture's node count after each
    step (cuStreamGetCaptureInfo's graph, cuGraphGetNodes) minus the count before it. Never raises while
    the capture runs: a failure leaves `counts` None and says why in `failed`."""

    def __init__(self, stream: Any, driver: Any = None) -> None:
        if driver is None:
            from cuda.bindings import driver
        self._cu = driver
        self._stream = driver.CUstream(stream.ptr)
        # cuda-bindings 12 names the call that returns edge data (programmatic edges) _v3
        self._info = getattr(driver, "cuStreamGetCaptureInfo_v3", None) or driver.cuStreamGetCaptureInfo
        self.counts: list[int] | None = []
        self.failed = ""
        self._last = 0

    def _nodes(self) -> int:
        cu = self._cu
        res = self._info(self._stream)
        if res[0] != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuStreamGetCaptureInfo: {res[0]}")
        if res[1] != cu.CUstreamCaptureStatus.CU_STREAM_CAPTURE_STATUS_ACTIVE:
            raise RuntimeError(f"the stream is not capturing ({res[1]})")
        err, _, n = cu.cuGraphGetNodes(res[3], 0)
        if err != cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"cuGraphGetNodes: {err}")
        return int(n)

    def step(self, launched: bool = True) -> None:
        """After a step: the nodes it added (0 for a step that launches nothing, without asking)."""
        if self.counts is None:
            return
        if not launched:
            self.counts.append(0)
            return
        try:
            n = self._nodes()
        except Exception as e:
            self.counts, self.failed = None, f"counting capture nodes: {type(e).__name__}: {e}"
            return
        self.counts.append(n - self._last)
        self._last = n
