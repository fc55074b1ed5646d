"""The GPU as CuPy sees it: whether there is one, its properties as the kernel choice wants them, and
how much memory a new allocation can still get."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .launch_geometry import SMEM_DEFAULT, Device, device_family, has_mma


def gpu_available() -> tuple[bool, str]:
    """(True, device name) when CuPy sees a GPU, else (False, the reason)."""
    try:
        import cupy
    except ImportError as e:
        return False, f"cupy is not installed ({e})"
    except Exception as e:  # a broken install raises other errors at import
        return False, f"cupy failed to import: {e}"
    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, f"GPU driver/runtime error: {e}"
    if n < 1:
        return False, "no GPU device visible to CuPy"
    try:
        name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
    except Exception as e:
        return False, f"GPU driver/runtime error: {e}"
    return True, name.decode() if isinstance(name, bytes) else str(name)


@dataclass(frozen=True)
class Probe:
    name: str
    is_hip: bool
    arch: str  # sm_90, gfx1100, ...
    cc: int  # CUDA compute capability x 10 (0 on HIP)
    shape: Device


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def probe(cupy: Any, device: int) -> Probe:
    """Device `device`'s name, platform, architecture and the shape the kernel choice reads."""
    props = cupy.cuda.runtime.getDeviceProperties(device)
    is_hip = bool(cupy.cuda.runtime.is_hip)
    if is_hip:
        arch = _text(props.get("gcnArchName", b"")).split(":")[0]
        cc = 0
    else:
        arch = f"sm_{props['major']}{props['minor']}"
        cc = 10 * int(props["major"]) + int(props["minor"])
    sm_keys = ("sharedMemPerMultiprocessor", "maxSharedMemoryPerMultiProcessor")  # CUDA, HIP
    shape = Device(
        warp=int(props["warpSize"]),
        n_sm=int(props["multiProcessorCount"]),
        smem_block=int(props.get("sharedMemPerBlockOptin", 0)) or SMEM_DEFAULT,
        smem_sm=next((int(props[k]) for k in sm_keys if props.get(k)), 0),
        family=device_family(arch),
        mma=has_mma(arch),
    )
    return Probe(_text(props["name"]), is_hip, arch, cc, shape)


def available_bytes(cupy: Any) -> int:
    """Device memory a new allocation can still get: the device's free memory plus the pool's cached
    blocks, no more than the pool's limit leaves (cupy.get_default_memory_pool().set_limit)."""
    pool = cupy.get_default_memory_pool()
    free, _ = cupy.cuda.runtime.memGetInfo()
    used = int(pool.used_bytes())
    avail = int(free) + int(pool.total_bytes()) - used
    limit = int(pool.get_limit())
    return min(avail, limit - used) if limit else avail


def copy_bandwidth(cupy: Any, stream: Any, nbytes: int = 256 << 20, reps: int = 10) -> float:
    """The device's copy bandwidth, bytes read + written per second: the median of `reps` device-to-device
    copies of nbytes (at most an eighth of the free memory), timed with events after 3 untimed ones. The
    ceiling decode's bytes per second are compared with (bench: `pct_copy`)."""
    import statistics

    free, _ = cupy.cuda.runtime.memGetInfo()
    n = max(1 << 20, min(nbytes, int(free) // 8)) // 16 * 16
    a = cupy.empty(n, dtype="uint8")
    b = cupy.empty(n, dtype="uint8")
    kind = cupy.cuda.runtime.memcpyDeviceToDevice
    times = []
    for i in range(reps + 3):
        e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
        e0.record(stream)
        cupy.cuda.runtime.memcpyAsync(b.data.ptr, a.data.ptr, n, kind, stream.ptr)
        e1.record(stream)
        e1.synchronize()
        if i >= 3:
            times.append(cupy.cuda.get_elapsed_time(e0, e1) * 1e-3)
    del a, b
    return 2 * n / statistics.median(times)
