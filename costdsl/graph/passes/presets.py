"""Fusion presets: fuse_all (every fusion costdsl knows, in the order that lets each find its
pattern) and fuse_serving (the kernels the serving stacks run)."""
from __future__ import annotations

import networkx as nx

from .flash import has_attention
from .registry import PASSES, register

ORDER = ("fuse_qkv", "flash_attention", "fuse_linear_act", "fuse_norm_linear", "fuse_residual")


@register("fuse_all")
def fuse_all(graph: nx.DiGraph) -> nx.DiGraph:
    """fuse_qkv, flash_attention, fuse_linear_act, fuse_norm_linear and fuse_residual, in
    this order (QKV first so that the norm before it fuses into one projection)."""
    for name in ORDER:
        if name == "flash_attention" and not has_attention(graph):
            continue  # an SSM-only model: nothing to fuse, which fuse_all does not mind
        graph = PASSES[name].run(graph)
    return graph


SERVING = ("fuse_qkv", "fuse_rope", "flash_attention", "fuse_gate_up", "fuse_add_norm")


@register("fuse_serving")
def fuse_serving(graph: nx.DiGraph) -> nx.DiGraph:
    """The kernels vLLM, TensorRT-LLM and SGLang run for a decoder layer: one QKV GEMM, one
    rotary kernel for q and k, FlashAttention, one gate_up GEMM, the SwiGLU on its own, the
    residual add fused into the next RMSNorm (fuse_qkv, fuse_rope, flash_attention,
    fuse_gate_up, fuse_add_norm).
    fuse_all goes further (norms and activations into the GEMMs) than these stacks do."""
    for name in SERVING:
        if name == "flash_attention" and not has_attention(graph):
            continue
        graph = PASSES[name].run(graph)
    return graph
