"""prune: structured pruning -- whole attention heads, MLP channels or layers removed (LLM-Pruner,
FLaP, SliceGPT-style depth pruning; the survey "Faster and Lighter LLMs", 2024).

Every shape that depends on a removed unit shrinks with it, by the kept fraction k of that unit:
- MLP channels (`ffn=f`): the linears feeding the activation (their weights, bias, work and
  output), the activation, and the linears reading it (their weight matrix, work and input; not
  their bias or output).
- Attention heads (`heads=f`): the query projection, RoPE of the queries, the attention kernels'
  work and their query-side traffic, the output projection's matrix and input. With as many KV
  heads as query heads (multi-head attention) each removed head takes its key and value with
  it: the K and V projections and the KV cache shrink too. With grouped-query attention the
  heads are removed inside the groups and the KV heads stay.
- KV heads (`kv_heads=f`): the K and V projections and the KV cache shrink, and the query heads
  of the removed groups go with them (the query heads kept are at most that share).
- Layers (`layers=f`): each repeated op (a layer's) occurs fewer times; the KV cache and weights
  follow, since both count occurrences.

Rounding: a numeric fraction removes floor(f N) units of N (never more than asked: heads=0.3
of 32 removes 9, keeps 23); a fraction left free (a model parameter, `--free p`) is continuous.
Pruning that leaves no head, channel or layer is refused. Mixture-of-experts MLPs are left as
they are. Run prune before fusion passes (a fused projection takes the heads with it). f = 0 is
the identity.
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access
from ..schema import Node, nodes
from .registry import Arg, PassError, register
from .select import matches, patterns, select
from .sparsity import HEAD_WISE, _attention_groups, _mlp_groups, head_chain


def _kept(fraction, units, what: str, arg: str) -> sympy.Expr:
    """Kept share of `units` after removing `fraction` of them (rounded down when numeric)."""
    fraction, units = sympy.sympify(fraction), sympy.sympify(units)
    if fraction == 0:
        return sympy.Integer(1)
    if fraction.is_number and units.is_number:
        removed = sympy.floor(fraction * units)
        if removed >= units:
            raise PassError(f"{arg}={fraction} removes all {units} {what}: nothing would be "
                            "left", arg=arg)
        return (units - removed) / units
    return 1 - fraction


def _scale_all(node: Node, keep, kv_keep=None) -> Node:
    """A unit-wide op (its output narrows): work, weights, bias and every access but its
    inputs' reads scale by `keep`; KV-cache accesses by `kv_keep` where given."""
    def scale(a: Access, reading: bool) -> Access:
        if a.cls == "kv" and kv_keep is not None:
            return Access(a.tensor, a.cls, a.elements * kv_keep)
        if reading and a.tensor in node.inputs and a.cls != "kv":
            return a
        return Access(a.tensor, a.cls, a.elements * keep)
    return replace(node, flops=node.flops * keep, vector_flops=node.vector_flops * keep,
                   reads=tuple(scale(a, True) for a in node.reads),
                   writes=tuple(scale(a, False) for a in node.writes),
                   params=node.params * keep,
                   active_params=None if node.active_params is None
                   else node.active_params * keep,
                   out_shape=_narrow_shape(node, keep))


def _scale_inside(node: Node, keep, kv_keep) -> Node:
    """An attention kernel or an op between units: everything by `keep`, the cache by
    `kv_keep`, and its heads attributes to match."""
    def scale(a: Access) -> Access:
        return Access(a.tensor, a.cls, a.elements * (kv_keep if a.cls == "kv" else keep))
    attrs = dict(node.attrs)
    for key, k in (("heads", keep), ("kv_heads", kv_keep)):
        if attrs.get(key) is not None:
            attrs[key] = attrs[key] * k
    return replace(node, flops=node.flops * keep, vector_flops=node.vector_flops * keep,
                   reads=tuple(scale(a) for a in node.reads),
                   writes=tuple(scale(a) for a in node.writes),
                   params=node.params * keep, attrs=attrs, out_shape=_narrow_shape(node, keep))


def _scale_reader(node: Node, keep, narrow: set[str]) -> Node:
    """A linear whose input narrows: its matrix, work and the narrowed read scale; its bias
    and output do not."""
    bias = node.bias_elements
    def scale(a: Access) -> Access:
        if (a.cls == "weight" and not a.tensor.endswith(".bias")) or a.tensor in narrow:
            return Access(a.tensor, a.cls, a.elements * keep)
        return a
    rows = node.out_shape[0]
    flops = (node.flops - rows * bias) * keep + rows * bias
    return replace(node, flops=flops, reads=tuple(scale(a) for a in node.reads),
                   params=(node.params - bias) * keep + bias,
                   active_params=None if node.active_params is None
                   else (node.active_params - bias) * keep + bias)


def _narrow_shape(node: Node, keep) -> tuple:
    shape = list(node.out_shape)
    if len(shape) >= 2:
        shape[1] = shape[1] * keep
    return tuple(shape)


def _chosen(ops: list[Node], include) -> bool:
    return include is None or any(matches(n, patterns(include)) for n in ops)


def _prune_mlp(graph, out, ffn, include) -> bool:
    found = False
    for feeders, act, readers in list(_mlp_groups(graph)):
        if not _chosen(feeders + [act] + readers, include):
            continue
        found = True
        shrink_mlp(out, feeders, act, readers, _kept(ffn, act.out_shape[1], "MLP channels", "ffn"))
    return found


def shrink_mlp(out, feeders: list[Node], act: Node, readers: list[Node], keep) -> None:
    """Keep the share `keep` of an MLP's channels: the feeding linears narrow their output, the
    activation narrows, the reading linears narrow their input (tensor parallelism keeps 1/n)."""
    for f in feeders:
        out.nodes[f.name]["op"] = _scale_all(f, keep)
    out.nodes[act.name]["op"] = _scale_inside(act, keep, keep)
    for r in readers:
        out.nodes[r.name]["op"] = _scale_reader(r, keep, set(act.outputs))


def kv_side(graph, kernels: list[Node]) -> list[Node]:
    """The ops making the keys and values the kernels read from the cache: the K and V
    projections and RoPE of K."""
    side = []
    for k in kernels:
        cached = {a.tensor for a in k.reads if a.cls == "kv"}
        for x in graph.predecessors(k.name):
            if not cached & set(graph.edges[x, k.name]["tensors"]):
                continue
            p = graph.nodes[x]["op"]
            projection, between = head_chain(graph, k.name, p.output)
            chain = between + [projection]
            side += [c for c in chain if c is not None and c not in side]
    return side


def _prune_attention(graph, out, heads, kv_heads, include) -> bool:
    found = False
    for q, kernels, o in list(_attention_groups(graph)):
        side = kv_side(graph, kernels)
        if not _chosen([q] + kernels + [o] + side, include):
            continue
        found = True
        h, hkv = kernels[0].attrs["heads"], kernels[0].attrs["kv_heads"]
        keep_q = _kept(heads, h, "attention heads", "heads")
        keep_kv = _kept(kv_heads, hkv, "KV heads", "kv_heads")
        if kv_heads != 0:  # a removed KV head takes its group of query heads
            keep_q = sympy.Min(keep_q, keep_kv) if heads != 0 else keep_kv
        elif sympy.simplify(h - hkv) == 0:  # multi-head: a head's K and V go with it
            keep_kv = keep_q
        shrink_attention(graph, out, q, kernels, o, side, keep_q, keep_kv)
    return found


def shrink_attention(graph, out, q: Node, kernels: list[Node], o: Node, kv_side: list[Node],
                     keep_q, keep_kv) -> None:
    """Keep the share `keep_q` of an attention's query heads and `keep_kv` of its KV heads: the
    query projection and its RoPE, the K/V side, the kernels, and the output projection's
    input (tensor parallelism keeps 1/n of each, or one replicated KV head)."""
    _, q_side = head_chain(graph, kernels[0].name, kernels[0].inputs[0])
    out.nodes[q.name]["op"] = _scale_all(q, keep_q)
    for r in q_side:
        out.nodes[r.name]["op"] = _scale_headwise(r, keep_q)
    for p in kv_side:
        out.nodes[p.name]["op"] = (_scale_headwise(p, keep_kv) if p.kind in HEAD_WISE
                                   else _scale_all(p, keep_kv, keep_kv))
    for k in kernels:
        out.nodes[k.name]["op"] = _scale_inside(k, keep_q, keep_kv)
        if k.kind == "mul":
            for g in _gate_branch(graph, k, kernels):
                out.nodes[g.name]["op"] = (_scale_all(g, keep_q) if g.kind == "linear"
                                           else _scale_inside(g, keep_q, keep_q))
    out.nodes[o.name]["op"] = _scale_reader(o, keep_q, set(kernels[-1].outputs))


def _scale_headwise(node: Node, keep) -> Node:
    """A head-by-head op (RoPE, QK-norm) on a share `keep` of the heads: its work and tensors
    scale, its weights (a gain the heads share) do not."""
    scaled = _scale_inside(node, keep, keep)
    weights = tuple(a for a in node.reads if a.cls == "weight")
    return replace(scaled, params=node.params,
                   reads=tuple(a for a in scaled.reads if a.cls != "weight") + weights)


def _gate_branch(graph, gate: Node, kernels: list[Node]) -> list[Node]:
    """The ops computing an attention output gate's other factor: elementwise ops back to the
    projection that starts them (Qwen3.5: sigmoid of a linear), nearest first."""
    inside = {k.output for k in kernels}
    tensor = next(t for t in gate.inputs if t not in inside)
    start, between = head_chain(graph, gate.name, tensor, through=lambda op: op.kind != "linear")
    return between + ([start] if start is not None else [])


def _prune_layers(graph, out, layers, include) -> bool:
    repeated = [n for n in nodes(graph) if n.repeat != 1 and _chosen([n], include)]
    for n in repeated:
        keep = _kept(layers, n.repeat, "layers", "layers")
        out.nodes[n.name]["op"] = replace(out.nodes[n.name]["op"], repeat=n.repeat * keep)
    return bool(repeated)


@register("prune",
          heads=Arg("fraction", 0, help="fraction of attention heads removed"),
          kv_heads=Arg("fraction", 0, help="fraction of KV heads removed (with their query "
                                           "heads)"),
          ffn=Arg("fraction", 0, help="fraction of MLP channels removed"),
          layers=Arg("fraction", 0, help="fraction of the repeated layers removed"),
          ops=Arg("pattern", help="only the groups with an op matching (names or globs)"))
def prune(graph: nx.DiGraph, heads, kv_heads, ffn, layers, ops) -> nx.DiGraph:
    """Structured pruning of heads, KV heads, MLP channels and layers (see the module's
    documentation for what shrinks and how fractions round)."""
    for name, value in (("heads", heads), ("kv_heads", kv_heads), ("ffn", ffn),
                        ("layers", layers)):
        if sympy.sympify(value).is_number and value >= 1:
            raise PassError(f"{name}={value}: pruning removes a fraction in [0, 1); all of "
                            "them would leave nothing", arg=name)
    if ops is not None:
        select(graph, ops)  # a pattern matching no op is an error (a typo)
    out = graph.copy()
    asked = {"ffn": ffn != 0, "heads": heads != 0 or kv_heads != 0, "layers": layers != 0}
    done = {"ffn": asked["ffn"] and _prune_mlp(graph, out, ffn, ops),
            "heads": asked["heads"] and _prune_attention(graph, out, heads, kv_heads, ops)}
    for what in ("ffn", "heads"):
        if asked[what] and not done[what]:
            raise PassError(f"prune({what}=...) found no {'dense MLP' if what == 'ffn' else 'attention'}"
                            " to prune" + (" among the ops selected" if ops else "") +
                            " (run prune before fusion passes)", arg=what)
    if asked["layers"]:
        final = out.copy()
        if not _prune_layers(out, final, layers, ops):
            raise PassError("prune(layers=...) found no repeated layer", arg="layers")
        out = final
    return out
