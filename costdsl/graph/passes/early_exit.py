"""early_exit and layer_skip: fewer layers run per decoded token (the survey's section 4.1).

A token that exits early, or skips layers, does not run them: the repeated (per-layer) ops of
the graph run for a fraction f of their occurrences, the expected value over tokens (each
node's `share`, by which its time scales while its weights and memory stay). The layers a token
skipped still owe their KV-cache entries for this position, which later tokens attend to
(Elhoushi et al., LayerSkip 2024; Schuster et al., CALM 2022); `kv=` says how they are made:

- kv="recompute": the ops on the path to each KV write (the norm, the K and V projections,
  RoPE of K) run for every layer: their share stays 1.
- kv="copy" (state propagation, CALM): the exit layer's hidden state is copied into the skipped
  layers' caches: the op writing the cache runs its arithmetic and reads for the fraction f only,
  and writes the cache entry for every layer; the ops before it run for f.

f = 1 (and a skip of no layer) is the identity. With kv="copy" the cache-writing op's time is
max(f ops / P, (f reads + writes) / B), exact where it is memory-bound (decode) and an upper
bound on a split of the two otherwise.
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access
from ..schema import Node, nodes
from .registry import Arg, PassError, register

KV_MODES = ("recompute", "copy")


def _layer_ops(graph: nx.DiGraph) -> list[Node]:
    return [n for n in nodes(graph) if n.repeat != 1]


def _kv_writers(ops: list[Node]) -> list[Node]:
    return [n for n in ops if any(w.cls == "kv" for w in n.writes)]


def _kv_path(graph: nx.DiGraph, ops: list[Node]) -> set[str]:
    """The layer ops on the way to a KV write (the writers included)."""
    layer = {n.name for n in ops}
    path = set()
    for w in _kv_writers(ops):
        path |= ({w.name} | nx.ancestors(graph, w.name)) & layer
    return path


def skip(graph: nx.DiGraph, fraction: sympy.Expr, kv: str) -> nx.DiGraph:
    """Every layer op runs for `fraction` of its occurrences, the KV path as `kv` says."""
    if kv not in KV_MODES:
        raise PassError(f"kv={kv!r}: expected one of {', '.join(KV_MODES)}", arg="kv")
    ops = _layer_ops(graph)
    if not ops:
        raise PassError("the graph has no repeated layers to skip")
    kv_path = _kv_path(graph, ops)
    writers = {n.name for n in _kv_writers(ops)}
    out = graph.copy()
    for n in ops:
        if kv == "recompute" and n.name in kv_path:
            continue  # runs in every layer to fill the cache
        if kv == "copy" and n.name in writers:
            scaled = replace(n, flops=n.flops * fraction, vector_flops=n.vector_flops * fraction,
                             reads=tuple(Access(a.tensor, a.cls, a.elements * fraction)
                                         for a in n.reads))
            out.nodes[n.name]["op"] = scaled
            continue
        out.nodes[n.name]["op"] = replace(n, share=n.share * fraction)
    return out


@register("early_exit",
          mean_layers=Arg("fraction", help="mean fraction of the layers a token runs (0, 1]"),
          kv=Arg("pattern", "recompute", help='"recompute" or "copy": how skipped layers\' KV '
                                              "entries are made"))
def early_exit(graph: nx.DiGraph, mean_layers, kv) -> nx.DiGraph:
    """Early exit: on average a token runs `mean_layers` of the layers (CALM, LayerSkip's early
    exit); the skipped layers' KV entries are recomputed or copied (kv=)."""
    if mean_layers is None:
        raise PassError("early_exit() needs mean_layers=", hint="e.g. early_exit(mean_layers=0.7)")
    if mean_layers.is_number and mean_layers == 0:
        raise PassError("mean_layers=0: a token must run some layers; the fraction is in (0, 1]",
                        arg="mean_layers")
    return skip(graph, mean_layers, kv)


@register("layer_skip",
          layers=Arg("pattern", help='the layers skipped, as start:stop[:step] (Python slice of '
                                     'layer indices 0..L-1), e.g. "8:24:2"'),
          kv=Arg("pattern", "recompute", help='"recompute" or "copy"'))
def layer_skip(graph: nx.DiGraph, layers, kv) -> nx.DiGraph:
    """Skips the given layers for every token (a fixed layer-skipping schedule)."""
    if layers is None:
        raise PassError("layer_skip() needs layers=", hint='e.g. layer_skip(layers="8:24:2")')
    counts = {n.repeat for n in _layer_ops(graph)}
    if len(counts) != 1 or not next(iter(counts)).is_Integer:
        raise PassError("layer_skip needs one stack of a known number of layers (this graph "
                        f"repeats ops {', '.join(sorted(map(str, counts)))} times)",
                        hint="use early_exit(mean_layers=...) for the expected fraction")
    total = int(next(iter(counts)))
    try:
        parts = [int(p) if p.strip() else None for p in layers.split(":")]
        if not 2 <= len(parts) <= 3:
            raise ValueError
        skipped = len(range(total)[slice(*parts)])
    except ValueError:
        raise PassError(f'layers="{layers}": expected start:stop or start:stop:step',
                        arg="layers") from None
    if skipped >= total:
        raise PassError(f'layers="{layers}" skips all {total} layers', arg="layers")
    return skip(graph, sympy.Rational(total - skipped, total), kv)
