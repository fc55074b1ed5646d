"""Shared pieces of decoder-only transformer graphs: norm, attention over a fixed KV cache, FFN.

Shapes are fixed: the KV cache of each layer is a state tensor of `max_ctx` rows, written with SET_ROWS
at the positions held in the input `inp_pos` and read whole through a view; attention masks by position.
So the decode graph (one token) is the same at every position and can be captured once and replayed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import ModelConfig
from ..ir.graph import Graph, Tensor
from ..ir.ops import SAMPLE_PARAMS

# weight name -> (numpy shape, dtype name such as "f32", "q4_k")
WeightSpec = Mapping[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class GraphSpec:
    """What a graph is built for: tokens per run, cache rows, KV dtype, which logits come out, and whether the
    next token is drawn on the device (sample: the input `inp_sample` and the one output "sample", a token a
    row of logits; no logits and no greedy token come out)."""

    n_tokens: int
    max_ctx: int
    kv_dtype: str = "f32"
    all_logits: bool = False
    sample: bool = False

    @property
    def name(self) -> str:
        kind = "decode" if self.n_tokens == 1 else f"prefill{self.n_tokens}"
        kind += "_all" if self.all_logits and self.n_tokens > 1 else ""
        return kind + ("_sample" if self.sample else "")


class Builder:
    """A graph under construction for one model: weights are leaves named after their GGUF tensors."""

    def __init__(self, cfg: ModelConfig, weights: WeightSpec, spec: GraphSpec) -> None:
        self.cfg, self.spec, self.specs = cfg, spec, weights
        self.g = Graph(spec.name)
        self._w: dict[str, Tensor] = {}
        self.tokens = self.g.input("inp_tokens", (spec.n_tokens,), "i32")  # i32 [T]
        self.pos = self.g.input("inp_pos", (spec.n_tokens,), "i32")  # i32 [T]

    def has(self, name: str) -> bool:
        return name in self.specs

    def w(self, name: str) -> Tensor:
        if name not in self._w:
            shape, dtype = self.specs[name]
            self._w[name] = self.g.weight(name, shape, dtype)
        return self._w[name]

    # ---- blocks -----------------------------------------------------------------------------------
    def norm(self, x: Tensor, weight: str, name: str) -> Tensor:
        """RMS norm times its weight: f32 [T, n_embd]."""
        cur = self.g.rms_norm(x, self.cfg.norm_eps, f"{name}_rms")
        return self.g.mul(cur, self.w(weight), name)

    def linear(self, x: Tensor, prefix: str, name: str) -> Tensor:
        """x @ W.T (+ bias when the GGUF has `<prefix>.bias`)."""
        cur = self.g.mul_mat(self.w(f"{prefix}.weight"), x, name)
        if self.has(f"{prefix}.bias"):
            cur = self.g.add(cur, self.w(f"{prefix}.bias"), f"{name}_b")
        return cur

    def attn(self, x: Tensor, il: int) -> Tensor:
        """Self-attention of layer il over its KV cache: f32 [T, n_embd]."""
        c, g, T = self.cfg, self.g, self.spec.n_tokens
        b = f"blk.{il}"
        rope = dict(n_dims=c.rope_dim, neox=c.rope_neox, base=c.rope_base, freq_scale=c.rope_scale)
        q = self.linear(x, f"{b}.attn_q", f"{b}.attn_q")  # f32 [T, n_head * hd]
        k = self.linear(x, f"{b}.attn_k", f"{b}.attn_k")  # f32 [T, n_head_kv * hd]
        v = self.linear(x, f"{b}.attn_v", f"{b}.attn_v")
        q = g.rope(g.reshape(q, (T, c.n_head, c.head_dim), f"{b}.q_heads"), self.pos, f"{b}.q_rope", **rope)
        k = g.rope(g.reshape(k, (T, c.n_head_kv, c.head_dim), f"{b}.k_heads"), self.pos, f"{b}.k_rope",
                   **rope)
        kv_w = c.n_head_kv * c.head_dim
        ck = g.state(f"cache_k_l{il}", (self.spec.max_ctx, kv_w), self.spec.kv_dtype)
        cv = g.state(f"cache_v_l{il}", (self.spec.max_ctx, kv_w), self.spec.kv_dtype)
        ck = g.set_rows(ck, g.reshape(k, (T, kv_w), f"{b}.k_rows"), self.pos, f"{b}.cache_k_set")
        cv = g.set_rows(cv, v, self.pos, f"{b}.cache_v_set")
        kv3 = (self.spec.max_ctx, c.n_head_kv, c.head_dim)
        kview = g.view_3d(ck, *kv3, kv_w, c.head_dim, 0, f"{b}.cache_k_view")
        vview = g.view_3d(cv, *kv3, kv_w, c.head_dim, 0, f"{b}.cache_v_view")
        o = g.flash_attn_ext(q, kview, vview, self.pos, c.head_dim ** -0.5, f"{b}.attn")
        o = g.reshape(o, (T, c.n_head * c.head_dim), f"{b}.attn_flat")
        return self.linear(o, f"{b}.attn_output", f"{b}.attn_output")

    def ffn(self, x: Tensor, il: int) -> Tensor:
        """SwiGLU feed-forward: down(silu(gate(x)) * up(x)), f32 [T, n_embd]."""
        b = f"blk.{il}"
        gate = self.linear(x, f"{b}.ffn_gate", f"{b}.ffn_gate")
        up = self.linear(x, f"{b}.ffn_up", f"{b}.ffn_up")
        return self.linear(self.g.swiglu(gate, up, f"{b}.ffn_swiglu"), f"{b}.ffn_down", f"{b}.ffn_down")

    def head(self, x: Tensor) -> Graph:
        """Final norm, the rows whose logits are wanted, the output projection, and the greedy token (outputs
        "logits" and "argmax") or, for a sampling graph, the drawn token (output "sample" only)."""
        g, T = self.g, self.spec.n_tokens
        if T > 1 and not self.spec.all_logits:  # the row wanted: the last real token of a padded prompt
            x = g.get_rows(x, g.input("inp_out_ids", (1,), "i32"), "last_row")
        cur = self.norm(x, "output_norm.weight", "output_norm")
        out = "output.weight" if self.has("output.weight") else "token_embd.weight"
        logits = g.mul_mat(self.w(out), cur, "logits")  # f32 [n_out, n_vocab]
        if self.spec.sample:  # seed, counter and settings: sampling.sample_params
            params = g.input("inp_sample", (SAMPLE_PARAMS,), "i32")
            g.output(g.sample(logits, params, "sample"))  # i32 [n_out]
            return g
        g.output(logits)
        g.output(g.argmax(logits, "argmax"))  # i32 [n_out]
        return g


def build_decoder(cfg: ModelConfig, weights: WeightSpec, spec: GraphSpec) -> Graph:
    """The pre-norm decoder shared by LLaMA-family models: embed, n_layer x (attn + FFN), head."""
    bld = Builder(cfg, weights, spec)
    x = bld.g.get_rows(bld.w("token_embd.weight"), bld.tokens, "inp_embd")  # f32 [T, n_embd]
    for il in range(cfg.n_layer):
        cur = bld.attn(bld.norm(x, f"blk.{il}.attn_norm.weight", f"blk.{il}.attn_norm"), il)
        x = bld.g.add(cur, x, f"blk.{il}.ffn_inp")
        cur = bld.ffn(bld.norm(x, f"blk.{il}.ffn_norm.weight", f"blk.{il}.ffn_norm"), il)
        x = bld.g.add(cur, x, f"blk.{il}.l_out")
    return bld.head(x)
