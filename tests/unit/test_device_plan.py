"""Device memory planned before allocation: the engine sums what a model needs (weights as uploaded, KV
cache, arenas) and, where the backend cannot hold it, fails before uploading anything, naming both numbers
and a max_ctx that fits. The GPU side (a capped CuPy pool) is tests/gpu/test_device_memory.py."""

import re

import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.backends.numpy_backend import NumpyBackend
from rocmforge.engine import DeviceMemoryError, Engine
from rocmforge.synth import write_tiny_model


class SmallDevice(NumpyBackend):
    """The numpy backend with a device budget of `have` bytes that counts its uploads."""

    def __init__(self, have: int) -> None:
        super().__init__()
        self.have, self.bound = have, 0

    def available_bytes(self) -> int:
        return self.have

    def bind_weights(self, graph, source):
        self.bound += 1
        super().bind_weights(graph, source)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_model(tmp_path_factory.mktemp("m") / "m.gguf", "llama", n_layer=4, n_embd=128,
                            n_ff=256, wtype=Q.Q8_0)


def test_the_plan_adds_up_and_grows_with_the_context(tiny):
    eng = Engine.from_gguf(tiny, backend="numpy", max_ctx=256)
    p = eng.device_plan()
    cfg = eng.config
    assert p["kv_cache"] == 2 * cfg.n_layer * 256 * cfg.n_head_kv * cfg.head_dim * 4
    # the weights as the numpy backend holds them (dequantized to f32): what binding them took
    assert p["weights"] == eng.backend.weight_bytes > sum(t.n_bytes for t in eng.model.tensors.values())
    assert p["total"] == p["weights"] + p["kv_cache"] + p["activations"] and p["activations"] > 0
    assert p["scratch"] == 0  # the numpy backend takes none beside its arenas
    assert eng.device_plan(512)["kv_cache"] == 2 * p["kv_cache"]


def test_too_small_a_device_fails_before_uploading_and_names_a_context_that_fits(tiny):
    need = Engine.from_gguf(tiny, backend="numpy", max_ctx=4096).device_plan()
    be = SmallDevice(need["total"] - need["kv_cache"] // 2)
    with pytest.raises(DeviceMemoryError) as e:
        Engine.from_gguf(tiny, backend=be, max_ctx=4096)
    msg = str(e.value)
    assert be.bound == 0 and not be.weights  # nothing uploaded
    assert re.search(r"at max_ctx=4096 needs [\d.]+ GiB .* GiB is available", msg)
    fits = int(re.search(r"max_ctx=(\d+) would fit", msg).group(1))
    assert 1500 <= fits < 4096
    Engine.from_gguf(tiny, backend=SmallDevice(be.have), max_ctx=fits)  # and it does


class ScratchDevice(SmallDevice):
    """SmallDevice whose prepare would also take `scratch` bytes for graphs of more than one token (as the
    HIP backend's BLAS workspace and tile scratch)."""

    scratch = 3 << 20

    def scratch_bytes_needed(self, graph) -> int:
        tokens = graph.inputs["inp_tokens"].shape[0] if "inp_tokens" in graph.inputs else 1
        return self.scratch if tokens > 1 else 0


def test_the_backends_scratch_is_planned_and_named(tiny):
    plain = Engine.from_gguf(tiny, backend="numpy", max_ctx=1024).device_plan()
    be = ScratchDevice(plain["total"] + ScratchDevice.scratch // 2)  # the arenas fit, the scratch not
    with pytest.raises(DeviceMemoryError, match=r"scratch 0\.00") as e:
        Engine.from_gguf(tiny, backend=be, max_ctx=1024)
    fits = int(re.search(r"max_ctx=(\d+) would fit", str(e.value)).group(1))
    eng = Engine.from_gguf(tiny, backend=ScratchDevice(be.have), max_ctx=fits)
    p = eng.device_plan()
    assert p["scratch"] == ScratchDevice.scratch
    assert p["total"] == sum(v for k, v in p.items() if k != "total")
    assert p["total"] <= be.have
    # planned for another backend: its scratch, not the engine's
    other = Engine.from_gguf(tiny, backend="numpy", max_ctx=fits)
    assert other.device_plan()["scratch"] == 0 and other.device_plan(backend=be)["scratch"] == be.scratch


def test_a_device_smaller_than_the_weights_says_no_context_fits(tiny):
    with pytest.raises(DeviceMemoryError, match="no max_ctx fits"):
        Engine.from_gguf(tiny, backend=SmallDevice(1000), max_ctx=64)


def test_the_hip_backend_counts_weights_in_the_form_it_uploads_them():
    from rocmforge import quant
    from rocmforge.backends.hip.weights import device_bytes, device_form
    from rocmforge.ir.ops import Op

    Qt = quant.QType
    assert device_form(Qt.Q4_K, (8, 256), {Op.MUL_MAT}) == "raw"  # read in its blocks
    assert device_form(Qt.Q2_K, (8, 256), {Op.MUL_MAT}) == "f16"  # no kernel reads Q2_K
    assert device_form(Qt.Q8_0, (8, 256), {Op.MUL_MAT, Op.MUL}) == "f32"  # also read element-wise
    assert device_form(Qt.F32, (256,), {Op.MUL}) == "raw"
    assert device_form(Qt.Q4_0, (8, 256), {Op.MUL_MAT, Op.MUL_MAT_ADD}) == "raw"  # the fused op's w
    assert device_form(Qt.F16, (8,), {Op.MUL_MAT_ADD}) == "raw"  # a bias, as stored
    assert device_form(Qt.F32, (256,), {Op.RMS_NORM_MUL}) == "raw"  # a norm's weight
    assert device_bytes("raw", (8, 256), 2176) == 2176
    assert device_bytes("f16", (8, 256), 2176) == 8 * 256 * 2 and device_bytes("f32", (8, 256), 0) == 8192


def test_the_numpy_backend_checks_host_memory_before_dequantizing(tiny, monkeypatch):
    """The numpy backend holds weights in f32: a model that would not fit in the host's available memory
    (a 7B file on a 24 GB machine) is refused before any weight is dequantized, not killed half way."""
    from rocmforge.backends import numpy_backend

    have = numpy_backend.NumpyBackend().available_bytes()
    assert have is None or have > 0  # Linux's MemAvailable where it can be read
    need = Engine.from_gguf(tiny, backend="numpy", max_ctx=64).device_plan()
    monkeypatch.setattr(numpy_backend.NumpyBackend, "available_bytes", lambda self: need["weights"] // 2)
    be = numpy_backend.NumpyBackend()
    with pytest.raises(DeviceMemoryError, match=r"on CPU \(numpy\).*no max_ctx fits"):
        Engine.from_gguf(tiny, backend=be, max_ctx=64)
    assert not be.weights
