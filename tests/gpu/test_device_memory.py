"""Device memory on the GPU: planned before allocation (a capped CuPy pool), returned when an engine is
dropped (50 create/drop cycles), and two engines side by side."""

import gc
import re

import numpy as np
import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.backends.hip import HipBackend, gpu_available
from rocmforge.engine import DeviceMemoryError, Engine
from rocmforge.synth import write_tiny_model

ok, why = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not ok, reason=f"no GPU: {why}")]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "m.gguf", "llama", n_layer=4, n_embd=256,
                            n_ff=512, wtype=Q.Q4_0, seed=11)


@pytest.fixture
def pool():
    import cupy

    p = cupy.get_default_memory_pool()
    gc.collect()
    p.free_all_blocks()
    yield p
    p.set_limit(size=0)


def test_a_capped_pool_fails_before_upload_and_the_named_context_fits(tiny, pool):
    be = HipBackend()
    # what the HIP backend needs (its weights' form, its scratch: cuBLAS's workspace and tiles), f16 KV
    need = Engine.from_gguf(tiny, backend="numpy", max_ctx=8192, kv_dtype="f16").device_plan(backend=be)
    assert need["scratch"] > 0
    base = pool.used_bytes()
    pool.set_limit(size=base + need["total"] - need["kv_cache"] // 2)
    used = pool.used_bytes()
    with pytest.raises(DeviceMemoryError) as e:
        Engine.from_gguf(tiny, backend=be, max_ctx=8192)
    assert pool.used_bytes() == used and not be.weights  # nothing uploaded
    fits = int(re.search(r"max_ctx=(\d+) would fit", str(e.value)).group(1))
    eng = Engine.from_gguf(tiny, backend=be, max_ctx=fits)
    eng.prefill([1, 2, 3])
    assert np.isfinite(eng.step(timed=False).logits).all()


def test_fifty_engines_created_and_dropped_return_device_memory(tiny, pool):
    import cupy

    def cycle():
        eng = Engine.from_gguf(tiny, backend="hip", max_ctx=64)
        eng.prefill([1, 2, 3])
        eng.step(timed=False)
        eng.step(timed=False)  # a replayed graph too

    cycle()  # kernels compiled once per process
    gc.collect()
    pool.free_all_blocks()
    free0 = cupy.cuda.runtime.memGetInfo()[0]
    for _ in range(50):
        cycle()
    gc.collect()
    pool.free_all_blocks()
    assert pool.used_bytes() == 0
    assert abs(cupy.cuda.runtime.memGetInfo()[0] - free0) <= 1 << 20


def test_two_engines_side_by_side_decode_as_each_alone(tiny, pool):
    """f32 prefill throughout (prefill="tiled"): b's prompt in two pieces of 3 runs on the mat-vecs, which
    the 6-token prompts of the others would not on the vendor BLAS's f16 default."""
    ids = [4, 8, 15, 16, 23, 42]

    def engine():
        return Engine.from_gguf(tiny, backend=HipBackend(prefill="tiled"), max_ctx=64)

    alone = engine()
    alone.prefill(ids)
    want = [alone.step(timed=False).token for _ in range(8)]
    a = engine()
    b = engine()
    a.prefill(ids)
    b.prefill(ids[:3])
    b.prefill(ids[3:])
    got_a, got_b = [], []
    for _ in range(8):  # interleaved
        got_a.append(a.step(timed=False).token)
        got_b.append(b.step(timed=False).token)
    assert got_a == want and got_b == want
