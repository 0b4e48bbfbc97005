"""low_rank: each selected linear y = x W, W of in x out, becomes y = (x A) B with A of in x r
and B of r x out (SVD-style factorisation, e.g. ASVD, SVD-LLM; the survey "Faster and Lighter
LLMs", 2024, section on low-rank decomposition).

The two factors are ordinary linears lowered by the linear cost rule: `<op>.a` (in -> r) writes
an r-wide intermediate `<op>.lr` that `<op>.b` (r -> out, with the op's bias) reads. Parameters
r (in + out) against in out: the factorisation stores fewer weights below r* = in out / (in + out)
(`crossover --solve rank` answers it per op, with the rank where the pair's time equals the
dense op's). The rank may be a model parameter left free (`--free rank`). A rank above min(in,
out) is refused: it cannot compress, it adds a matrix. Linears tied to the embedding are left
alone (their table is the embedding's).
"""
from __future__ import annotations

import networkx as nx
import sympy

from ..costs import SITES
from ..lower import node_of
from ..schema import Node, connect
from ...language.design import OpInstance, Tensor
from .registry import Arg, PassError, register
from .select import select


def _widths(node: Node) -> tuple[sympy.Expr, sympy.Expr]:
    """(in, out) of a linear, from its input read and its output shape."""
    rows = node.out_shape[0]
    d_in = sympy.cancel(next(a.elements for a in node.reads if a.tensor == node.inputs[0])
                        / rows)
    return d_in, node.out_shape[1]


def _factors(node: Node, rank, site) -> tuple[Node, Node]:
    d_in, d_out = _widths(node)
    rows = node.attrs.get("tokens", "all")
    x = Tensor(node.inputs[0], d_in, rows, None)
    mid = Tensor(f"{node.name}.lr", rank, rows, f"{node.name}.a")
    y = Tensor(node.output, d_out, rows, f"{node.name}.b")
    base = {"in": None, "tokens": rows, "tied": None}
    a = OpInstance(f"{node.name}.a", "linear", (x.name,), mid.name,
                   {**base, "out": rank, "bias": "false"}, node.repeat, None, node.group)
    b = OpInstance(f"{node.name}.b", "linear", (mid.name,), y.name,
                   {**base, "out": d_out, "bias": node.attrs.get("bias", "false")},
                   node.repeat, None, node.group)
    made = []
    for op, ins, out in ((a, [x], mid), (b, [mid], y)):
        new = node_of(op, ins, out, site)
        made.append(new.__class__(**{**new.__dict__, "bits": dict(node.bits),
                                     "scale_bits": dict(node.scale_bits), "share": node.share,
                                     "stage": node.stage}))
    return made[0], made[1]


@register("low_rank",
          rank=Arg("size", help="rank r of the factorisation (a number or a free parameter)"),
          ops=Arg("pattern", help="only these linears (names or globs)"),
          exclude=Arg("pattern", help="not these linears"))
def low_rank(graph: nx.DiGraph, rank, ops, exclude) -> nx.DiGraph:
    """Each selected linear in x out as two, in x rank and rank x out."""
    if rank is None:
        raise PassError("low_rank() needs rank=", hint="e.g. low_rank(rank=1024)")
    chosen = [n for n in select(graph, ops, exclude)
              if n.kind == "linear" and not n.attrs.get("tied")]
    if not chosen:
        raise PassError("low_rank() selected no linear op (fused ones are not factorised: run "
                        "low_rank before fusion passes)")
    site = SITES[graph.graph["stage"]]
    out = graph.copy()
    for node in chosen:
        d_in, d_out = _widths(node)
        smallest = sympy.Min(d_in, d_out)
        if sympy.sympify(rank).is_number and smallest.is_number and rank > smallest:
            raise PassError(f"rank={rank} on {node.name} ({d_in} x {d_out}) does not compress: "
                            f"it is above min(in, out) = {smallest}", arg="rank",
                            hint=f"ranks below {float(d_in * d_out / (d_in + d_out)):.6g} store fewer "
                                 "weights than the dense matrix")
        a, b = _factors(node, rank, site)
        preds = [(p, graph.edges[p, node.name]["tensors"]) for p in graph.predecessors(node.name)]
        succs = [(s, graph.edges[node.name, s]["tensors"]) for s in graph.successors(node.name)]
        out.remove_node(node.name)
        out.add_node(a.name, op=a)
        out.add_node(b.name, op=b)
        for p, tensors in preds:
            for t in tensors:
                connect(out, p, a.name, t)
        connect(out, a.name, b.name, a.output)
        for s, tensors in succs:
            for t in tensors:
                connect(out, b.name, s, t)
    return out
