"""fuse_all: the usual inference-engine fusions in the order that lets each find its pattern."""
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
