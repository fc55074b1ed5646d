"""Qwen2 / Qwen2.5: the LLaMA-style decoder with biases on Q, K and V, RoPE in NEOX (half-split) order,
and a separate output.weight or one tied to token_embd."""

from __future__ import annotations

from ..config import ModelConfig
from ..ir.graph import Graph
from .common import GraphSpec, WeightSpec, build_decoder

ARCH = "qwen2"
ROPE_NEOX = True  # llama.cpp: LLAMA_ROPE_TYPE_NEOX


def build(cfg: ModelConfig, weights: WeightSpec, spec: GraphSpec) -> Graph:
    if cfg.rope_neox != ROPE_NEOX:
        raise ValueError(f"{ARCH}: config says rope_neox={cfg.rope_neox}")
    for p in ("attn_q", "attn_k", "attn_v"):
        if f"blk.0.{p}.bias" not in weights:
            raise ValueError(f"{ARCH}: blk.0.{p}.bias is missing; Qwen2 has Q/K/V biases")
    return build_decoder(cfg, weights, spec)
