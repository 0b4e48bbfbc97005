"""flash_attention: QK^T, softmax and xV of each attention fused into one FlashAttention
kernel, with the traffic of costs.flash_attention (the score matrix is never written; K and V
are reread once per block of queries that fits on chip)."""
from __future__ import annotations

from dataclasses import replace

import networkx as nx

from ..costs import (FLASH_MIN_ROWS, SITES, attention_form, expands,
                     flash_attention as flash_cost, flash_sram_needed)
from ..schema import nodes
from ... import symbols as S
from .fusion import merge, contract
from .registry import Arg, PassError, register


def has_attention(graph: nx.DiGraph) -> bool:
    return any(True for _ in _triples(graph))


def _triples(graph: nx.DiGraph):
    """(qk, softmax, sv) of every unfused attention, found by following the score tensors."""
    for qk in nodes(graph):
        if qk.kind != "qk_matmul":
            continue
        soft = [graph.nodes[s]["op"] for s in graph.successors(qk.name)]
        soft = [s for s in soft if s.kind == "softmax"]
        if len(soft) != 1:
            continue
        sv = [graph.nodes[s]["op"] for s in graph.successors(soft[0].name)]
        sv = [s for s in sv if s.kind == "sv_matmul"]
        if len(sv) == 1:
            yield qk, soft[0], sv[0]


@register("flash_attention",
          block=Arg("count", help="query rows per block, as a given kernel tiles (default: "
                                  "as many as fit in the hardware's on-chip memory per block)"),
          causal=Arg("flag", 1, help="1: the kernel skips the key tiles a causal mask hides "
                                     "(about half the prefill work); 0: it computes them all"))
def flash_attention(graph: nx.DiGraph, block=None, causal=1) -> nx.DiGraph:
    """Fuses every attention (QK^T, softmax, xV) into one FlashAttention op. In prefill the keys
    and values are reread once per block of queries that fits in the hardware's on-chip memory
    per block (IO Theta(N^2 d^2 / M), Dao et al. 2022), from the L2 while a KV head fits in it
    and from memory beyond; in decode the KV cache is read once.
    block=B fixes the block at B query rows (FlashAttention-2 uses 128 on A100/H100 for
    head_dim 128). With causal=1 (the default: decoder LLMs) the kernel skips the key tiles
    above the diagonal, so a prefill attends (N + 1) / 2 positions per query on average.
    Not applicable on hardware whose on-chip memory cannot hold the block (16 rows at least)."""
    found = False
    site = SITES[graph.graph["stage"]]
    for qk, soft, sv in list(_triples(graph)):
        found = True
        fused = merge(graph, [qk, soft, sv], kind="flash_attention")
        q, k, *selected = qk.inputs      # a sparse attention also reads its indexer's choice
        v = sv.inputs[1]
        a = attention_form(qk.attrs, site)   # a dense MLA's prefill: expanded keys and values
        expanded = expands(qk.attrs, site)   # its keys and values are activations, not a cache
        rows = "all" if qk.out_shape[2] == site.new else "last"
        cost = flash_cost(a, q, k, v, sv.output, rows, site,
                          v_dim=attention_form(sv.attrs, site)["head_dim"],
                          block_rows=block, causal=bool(causal), name=soft.name,
                          selected=tuple(selected), expanded=expanded)
        needed = flash_sram_needed(a["head_dim"], S.a_bits, S.a_bits if expanded else S.kv_bits,
                                   block if block is not None else FLASH_MIN_ROWS)
        attrs = {**a, "kinds": fused.attrs["kinds"], "sram_needed": needed,
                 "block_rows": block if block is not None else FLASH_MIN_ROWS}
        # the softmax of the scores the kernel computes (causal: about half), not of all
        fused = replace(fused, flops=cost.flops, vector_flops=cost.vector, reads=cost.reads,
                        writes=cost.writes, attrs=attrs)
        graph = contract(graph, [qk, soft, sv], fused)
    if not found:
        raise PassError("flash_attention(): the graph has no unfused attention (QK^T, softmax, "
                        "xV) to fuse")
    return graph
