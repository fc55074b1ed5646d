"""HipBackend.prepare without a GPU (CuPy replaced by a fake that hands out addresses, kernels compiled by a
recorder): with int8 activations the decode graph of a Q4_0 model gets one QUANTIZE_X8 node per value its
weight mat-vecs read, each with a buffer in the arena, and every module the run needs is compiled at
prepare."""

from __future__ import annotations

import sys
import types

import pytest
from gguf import GGMLQuantizationType as Q

from rocmforge.engine import Engine
from rocmforge.ir.ops import Op
from rocmforge.synth import write_tiny_model


class _Buf:
    """A device buffer: an address and a size; slices and .set() accept anything."""

    _next = 1 << 32

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.data = types.SimpleNamespace(ptr=_Buf._next)
        _Buf._next += (self.nbytes + 4095) // 4096 * 4096

    def __getitem__(self, _):
        return self

    def set(self, _) -> None:
        pass

    def fill(self, _) -> None:
        pass


def _fake_cupy(warp: int, sms: int) -> types.SimpleNamespace:
    props = {
        "name": b"fake H100",
        "warpSize": warp,
        "major": 9,
        "minor": 0,
        "multiProcessorCount": sms,
        "sharedMemPerBlockOptin": 227 * 1024,
        "sharedMemPerMultiprocessor": 228 * 1024,
    }
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1, getDeviceProperties=lambda i: props, is_hip=False,
        memGetInfo=lambda: (80 << 30, 80 << 30),
    )
    pool = types.SimpleNamespace(used_bytes=lambda: 0, total_bytes=lambda: 0, get_limit=lambda: 0)
    cuda = types.SimpleNamespace(
        runtime=runtime,
        Device=lambda i: types.SimpleNamespace(use=lambda: None),
        Stream=lambda non_blocking: object(),
    )
    return types.SimpleNamespace(
        cuda=cuda, empty=lambda n, dtype=None: _Buf(n), zeros=lambda n, dtype=None: _Buf(n),
        get_default_memory_pool=lambda: pool,
    )


class _Modules:
    def __init__(self) -> None:
        self.compiled: set[tuple] = set()

    def get(self, file: str, **defines):
        self.compiled.add((file, tuple(sorted(defines.items()))))
        return types.SimpleNamespace(fn=lambda name: types.SimpleNamespace())


@pytest.mark.parametrize("int8", [False, True])
def test_prepare_inserts_quantize_x8_and_compiles_every_module(tmp_path, monkeypatch, int8):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy(32, 132))
    from rocmforge.backends.hip import pdl
    from rocmforge.backends.hip.backend import HipBackend

    monkeypatch.setattr(pdl, "PdlLauncher", lambda: None)
    be = HipBackend(int8_activations=int8)
    be.ctx.mods = mods = _Modules()
    path = write_tiny_model(tmp_path / "m.gguf", "llama", wtype=Q.Q4_0, n_embd=256, n_ff=512, n_head=4)
    # every mat-vec of the tiny model is small: the int8 kernels from one row, as tests/gpu do
    if int8:
        from rocmforge.backends.hip import kernel_choice as C

        be.ctx.mat_mul = C.MatMulOptions(True, min_n={"mul_mat_vec_xr": 0, "mul_mat_vec_xq": 0})
    eng = Engine.from_gguf(path, backend=be, max_ctx=64)
    g = eng.graph(1)  # bound and prepared
    ops = [t for t in g.nodes if not t.is_leaf]
    quantized = [t for t in ops if t.op is Op.QUANTIZE_X8]
    weight_mm = [t for t in ops if t.op is Op.MUL_MAT and t.src[0].kind == "weight"]
    if not int8:
        assert not quantized and all(len(t.src) == 2 for t in weight_mm)
    else:
        n_layer = eng.config.n_layer
        assert len(quantized) == 4 * n_layer + 1  # attention and FFN inputs, their outputs, the last norm
        assert all(t.src[2].op is Op.QUANTIZE_X8 for t in weight_mm)
        plan = be.plan_of(g)
        assert all(t.id in plan.offsets for t in quantized)
    files = {f for f, _ in mods.compiled}
    want = {"elementwise.hip", "norm.hip", "rope.hip", "set_rows.hip", "attention.hip", "get_rows.hip"}
    want |= {"mul_mat_vec_xr.hip", "quantize_x8.hip"} if int8 else {"mul_mat_vec.hip"}
    assert want <= files, want - files
