"""One module per architecture; each has `ARCH` and `build(cfg, weights, spec) -> Graph`."""

from __future__ import annotations

from collections.abc import Callable

from ..config import ModelConfig
from ..ir.graph import Graph
from . import llama, qwen2
from .common import GraphSpec, WeightSpec

BUILDERS: dict[str, Callable[[ModelConfig, WeightSpec, GraphSpec], Graph]] = {
    llama.ARCH: llama.build,
    qwen2.ARCH: qwen2.build,
}


def build_graph(cfg: ModelConfig, weights: WeightSpec, spec: GraphSpec) -> Graph:
    """The graph of cfg's architecture for this spec."""
    try:
        build = BUILDERS[cfg.arch]
    except KeyError:
        raise ValueError(
            f"architecture {cfg.arch!r} is not supported (supported: {sorted(BUILDERS)})") from None
    return build(cfg, weights, spec)


__all__ = ["BUILDERS", "GraphSpec", "build_graph"]
