"""fuse_add_norm: a residual add merged into the norm that reads its sum (vLLM's and
TensorRT-LLM's fused add + RMSNorm kernel), inside a layer and across the loop of layers.

The op graph draws a repeated layer once (its ops carry `repeat`), so the add that closes one
occurrence and the norm that opens the next are never neighbours in it: the closing add's sum
leaves the body for what follows the loop (the next kind of layer, or the final norm), and the
opening norm reads what came before it. The stacks run each such pair as one kernel (layer i's
input norm takes layer i-1's output and the residual stream), so a layer is two norm kernels,
not three. The rotation, per add that closes a loop (its sum read only outside its body):
- its last occurrence merges into the norm after the loop, which reads its inputs;
- its other occurrences are the adds of the loop's own opening norm: that norm becomes an add +
  norm reading the previous occurrence's branch too, unless an add already sits in it (the
  previous kind of layer's closing add, merged there by the first rule). The first layer has no
  add before its norm; it is counted as one (a row block of traffic a model) where nothing
  before the loop is a sum.
Every occurrence of the closing add is then in exactly one norm kernel."""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access
from ..schema import Node, connect, nodes
from .fusion import (ENGINE_RANK, NORM_KINDS, contract, fused_name, kinds_of, merge,
                     producer_of, stored_unlike, try_fuse)
from .registry import PassError, register
from .rewire import reading


@register("fuse_add_norm")
def fuse_add_norm(graph: nx.DiGraph) -> nx.DiGraph:
    """A residual add merged into the norm that reads its sum: the sum is written once for the
    residual stream and normalised in registers, not read back. Across the loop of layers too:
    the add that closes a layer and the next layer's input norm are one kernel."""
    groups = []
    for node in nodes(graph):
        if node.kind not in NORM_KINDS:
            continue
        p = producer_of(graph, node.name, node.inputs[0])
        if p and graph.nodes[p]["op"].kind == "add":
            groups.append([p, node.name])
    graph = try_fuse(graph, groups, shared=True)
    for name in [n.name for n in nodes(graph) if n.kind == "add"]:
        if name in graph:
            graph = _rotate(graph, graph.nodes[name]["op"])
    return graph


def _rotate(graph: nx.DiGraph, add: Node) -> nx.DiGraph:
    """The closing add `add` merged into the norm after its loop and, for its other
    occurrences, into its loop's opening norm; the graph unchanged where it closes no loop."""
    opening = _opening_norm(graph, add) if add.repeat != 1 else None
    if add.repeat != 1 and (opening is None or stored_unlike(add, opening) is not None):
        return graph  # its other occurrences would have no norm to go to
    rotated = graph
    send = _stage_send(graph, add)
    if send is not None:
        rotated = _send_first(graph, add, send)
        add = rotated.nodes[add.name]["op"]
    after = _norm_after_loop(rotated, add)
    if after is None:
        return graph
    try:
        merged = merge(rotated, [replace(add, repeat=after.repeat), after], shared=True)
        rotated = contract(rotated, [add, after], merged)
    except PassError:
        return graph  # another reader of the sum runs before the norm, or widths differ
    if not nx.is_directed_acyclic_graph(rotated):
        return graph
    if opening is not None and "add" not in kinds_of(opening):
        rotated = contract(rotated, [opening], _with_loop_add(opening, add))
    return rotated


def _stage_send(graph: nx.DiGraph, add: Node) -> Node | None:
    """The pipeline's send at the end of a stage, where it is the add's one reader."""
    readers = [graph.nodes[r]["op"] for r in graph.successors(add.name)]
    if len(readers) == 1 and readers[0].kind == "send_recv":
        return readers[0]
    return None


def _send_first(graph: nx.DiGraph, add: Node, send: Node) -> nx.DiGraph:
    """The stage's send moved before its closing add: it carries the add's inputs (the stacks
    hand the next stage the hidden state and the residual apart, and its first norm adds
    them), and the add, after it, reads what it carried."""
    sent = send.transfers["comm"][0].elements
    carrying = replace(send, inputs=add.inputs,
                       transfers={"comm": tuple(Access(t, "act", sent) for t in add.inputs)})
    swapped = {add.name: replace(add, inputs=(send.output,)), send.name: carrying}
    out = nx.DiGraph(**graph.graph)
    for key, data in graph.nodes(data=True):
        op = swapped.get(key) or reading(data["op"], send.output, add.output)
        out.add_node(key, op=op)
    for src, dst, data in graph.edges(data=True):
        for tensor in data["tensors"]:
            if dst == add.name:
                connect(out, src, send.name, tensor)
            elif src == send.name:
                connect(out, add.name, dst, add.output)
            elif src != add.name:
                connect(out, src, dst, tensor)
    connect(out, send.name, add.name, send.output)
    return out


def _norm_after_loop(graph: nx.DiGraph, add: Node) -> Node | None:
    """The one plain norm that reads `add`'s sum, where every reader runs outside the add's
    body (another repeat count): the add closes a loop. None otherwise."""
    readers = [graph.nodes[r]["op"] for r in graph.successors(add.name)]
    if not readers or any(_same(r.repeat, add.repeat) for r in readers):
        return None
    norms = [r for r in readers if r.kind in NORM_KINDS and r.inputs[0] == add.output]
    return norms[0] if len(norms) == 1 else None


def _opening_norm(graph: nx.DiGraph, add: Node) -> Node | None:
    """The norm that opens the loop `add` closes: follow the residual stream back from the
    add's first input through the adds of its body to the tensor that enters the body, and
    take the body's first op that reads it, where that is a norm."""
    tensor, reader = add.inputs[0], add.name
    while True:
        p = producer_of(graph, reader, tensor)
        op = graph.nodes[p]["op"] if p else None
        if op is None or not _same(op.repeat, add.repeat) or "add" not in kinds_of(op):
            break
        tensor, reader = op.inputs[0], p
    readers = [n for n in nodes(graph) if _same(n.repeat, add.repeat) and tensor in n.inputs]
    first = readers[0] if readers else None   # in execution order: the body's first op
    return first if first is not None and kinds_of(first)[-1] in NORM_KINDS else None


def _with_loop_add(norm: Node, add: Node) -> Node:
    """`norm` running the previous occurrence's `add` first: it also reads that add's branch
    (the residual it reads already) and writes the sum for the residual stream."""
    branch = tuple(a for a in add.reads if a.tensor != add.inputs[0])
    names = [add.name, norm.name]
    return replace(norm, name=fused_name(names), kind="fused", fused_from=tuple(names),
                   flops=add.flops + norm.flops, reads=norm.reads + branch,
                   writes=add.writes + norm.writes,
                   attrs={**norm.attrs, "kinds": ("add",) + kinds_of(norm)},
                   engine=max((add.engine, norm.engine), key=ENGINE_RANK.get))


def _same(a: sympy.Expr, b: sympy.Expr) -> bool:
    return sympy.expand(a - b) == 0
