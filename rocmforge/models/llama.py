"""LLaMA family (LLaMA 1-3, SmolLM2, ...): pre-norm decoder, RoPE in normal (interleaved-pair) order,
grouped-query attention, SwiGLU FFN, output tied to token_embd when the GGUF has no output.weight."""

from __future__ import annotations

from ..config import ModelConfig
from ..ir.graph import Graph
from .common import GraphSpec, WeightSpec, build_decoder

ARCH = "llama"
ROPE_NEOX = False  # llama.cpp: LLAMA_ROPE_TYPE_NORM


def build(cfg: ModelConfig, weights: WeightSpec, spec: GraphSpec) -> Graph:
    if cfg.rope_neox != ROPE_NEOX:
        raise ValueError(f"{ARCH}: config says rope_neox={cfg.rope_neox}")
    return build_decoder(cfg, weights, spec)
