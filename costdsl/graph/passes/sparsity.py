"""contextual_sparsity: Deja Vu (Liu et al., ICML 2023; the survey's section 4.1.3).

A small predictor per layer picks, from each token's input, the MLP neurons and attention heads
that matter for it; only those are read and computed. With a fraction `mlp` of the neurons and
`heads` of the heads skipped per token:

- MLP (the linears feeding the activation, the activation, the linear reading it): operations
  and the intermediate activations scale by (1 - mlp). Weights: n tokens of a step choose
  independently, so a neuron's weights are read unless every token skips it: the fraction read is
  1 - mlp^n (the expected union; one token: 1 - mlp, many: all) -- the rule the MoE expected-
  experts count follows. Sparsity so changes each op's intensity, not only its time (the
  survey's section 4.1.4 point): one token reads (1 - mlp) of the weights for (1 - mlp) of the
  work, but a batch reads nearly all of them for (1 - mlp) of the work.
- Attention: the query projection, the attention kernels and the output projection scale the
  same way by (1 - heads) (per token; the query/output weights by 1 - heads^n). The key and value
  projections stay dense, so that the cache holds every head for later tokens (Deja Vu's
  attention sparsity is per token; a head skipped now may be chosen later).
- The predictors: per layer, a low-rank MLP of hidden x rank and rank x (ffn | heads) weights
  per predicted op group, their parameters added to the model (they are real weights) and their
  work and reads added to the first op of the group.

A group whose fraction is exactly 0 is left as it is, with no predictor (nothing to predict):
mlp = heads = 0 is the identity, with or without a rank. Mixture-of-experts layers are left as
they are (their routing is already sparse).
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access
from ..schema import Node, nodes
from .fusion import kinds_of
from .registry import Arg, PassError, register
from ... import symbols as S

ACTIVATION_KINDS = ("swiglu", "geglu", "gelu", "silu", "relu", "relu2")
ATTENTION_KINDS = ("qk_matmul", "softmax", "sv_matmul", "flash_attention")


def _producer(graph, node: str, tensor: str, skip=("rope",)):
    """The op that writes `tensor` for `node`, looking through ops of the `skip` kinds."""
    for p in graph.predecessors(node):
        if tensor in graph.edges[p, node]["tensors"]:
            op = graph.nodes[p]["op"]
            if op.kind in skip:
                return _producer(graph, p, op.inputs[0], skip)
            return op
    return None


HEAD_WISE = ("rope", "rmsnorm")
"""Ops between a projection and the attention kernels that work head by head (RoPE, Qwen3's
QK-norm): they shrink with the heads."""


def head_chain(graph, node: str, tensor: str,
               through=lambda op: op.kind in HEAD_WISE) -> tuple[Node | None, list[Node]]:
    """The op writing `tensor` for `node` found by walking up through the ops `through`
    accepts (head-wise ops by default), and those ops (nearest first): the query projection
    behind its RoPE and QK-norm."""
    between = []
    op = _producer(graph, node, tensor, ())
    while op is not None and through(op) and op.inputs:
        between.append(op)
        op = _producer(graph, op.name, op.inputs[0], ())
    return op, between


def _successors(graph, node: Node, kind: str) -> list[Node]:
    return [graph.nodes[s]["op"] for s in graph.successors(node.name)
            if kind in kinds_of(graph.nodes[s]["op"])]


def _rows(node: Node) -> sympy.Expr:
    return node.out_shape[0]


def _scaled(node: Node, keep: sympy.Expr, narrow: set[str], weight_keep: sympy.Expr) -> Node:
    """Operations times `keep`; accesses of the `narrow` tensors (those whose width shrinks)
    times `keep`; weight reads times `weight_keep`; other accesses as they are."""
    def scale(a: Access) -> Access:
        if a.cls == "weight":
            return Access(a.tensor, a.cls, a.elements * weight_keep)
        return Access(a.tensor, a.cls, a.elements * keep) if a.tensor in narrow else a
    return replace(node, flops=node.flops * keep, vector_flops=node.vector_flops * keep,
                   reads=tuple(scale(a) for a in node.reads),
                   writes=tuple(scale(a) for a in node.writes))


def _with_predictor(node: Node, hidden: sympy.Expr, rank, width: sympy.Expr) -> Node:
    """The group's predictor (hidden x rank, rank x width) added to its first op."""
    params = hidden * rank + rank * width
    n = _rows(node)
    return replace(node, flops=node.flops + 2 * n * params,
                   reads=node.reads + (Access(f"{node.name}.predictor", "weight", params),),
                   params=node.params + params,
                   active_params=(node.active_params if node.active_params is not None
                                  else node.params) + params)


def _mlp_groups(graph):
    """(feeding linears, activation, reading linears) of every dense MLP."""
    for act in nodes(graph):
        if not set(kinds_of(act)) & set(ACTIVATION_KINDS) or act.kind == "expert_act":
            continue
        feeders = [graph.nodes[p]["op"] for p in graph.predecessors(act.name)]
        readers = [graph.nodes[s]["op"] for s in graph.successors(act.name)]
        feeders = [f for f in feeders if "linear" in kinds_of(f)]
        readers = [r for r in readers if "linear" in kinds_of(r)]
        if feeders and readers:
            yield feeders, act, readers


def _attention_groups(graph):
    """(query projection, attention kernels, output projection) of every attention whose query
    projection is a plain linear (a fused QKV projection would take K and V with it). An output
    gate (Qwen3.5: the attention's output times sigmoid of another projection) between the
    kernels and the output projection counts as the last kernel: it works head by head."""
    for qk in nodes(graph):
        if "qk_matmul" not in kinds_of(qk):
            continue
        q, _ = head_chain(graph, qk.name, qk.inputs[0])
        kernels, last = [qk], qk
        while "sv_matmul" not in kinds_of(last):
            nxt = [graph.nodes[s]["op"] for s in graph.successors(last.name)
                   if set(kinds_of(graph.nodes[s]["op"])) & set(ATTENTION_KINDS)]
            if not nxt:
                break
            last = nxt[0]
            kernels.append(last)
        o = _successors(graph, last, "linear")
        gates = _successors(graph, last, "mul")
        if not o and len(gates) == 1 and _successors(graph, gates[0], "linear"):
            kernels.append(gates[0])
            o = _successors(graph, gates[0], "linear")
        if q is not None and q.kind == "linear" and o:
            yield q, kernels, o[0]


def _queries(kernel: Node) -> sympy.Expr:
    """Query positions per sequence of an attention kernel: the union of the heads the
    sequence's new tokens keep is what its KV cache is read for."""
    if kernel.kind in ("qk_matmul", "softmax"):
        return kernel.out_shape[2]          # (b, H, Lq, Lk)
    return kernel.out_shape[0] / S.batch    # (b Lq, H d)


@register("contextual_sparsity",
          mlp=Arg("fraction", 0, help="fraction of MLP neurons a token skips, in [0, 1)"),
          heads=Arg("fraction", 0, help="fraction of attention heads a token skips, in [0, 1)"),
          predictor_rank=Arg("count", help="rank of each layer's predictors (none if omitted)"))
def contextual_sparsity(graph: nx.DiGraph, mlp, heads, predictor_rank) -> nx.DiGraph:
    """Deja Vu: each token reads and computes only the MLP neurons and heads a predictor picks
    (see the module's documentation for the formulas)."""
    mlp, heads = sympy.sympify(mlp), sympy.sympify(heads)
    for name, value in (("mlp", mlp), ("heads", heads)):
        if value.is_number and value >= 1:
            raise PassError(f"{name}={value}: a token must keep some of them; the fraction "
                            "skipped is in [0, 1)", arg=name)
    out = graph.copy()
    found = False
    for feeders, act, readers in list(_mlp_groups(graph)):
        found = True
        if mlp == 0:
            continue
        narrow = set(act.inputs) | set(act.outputs)
        for i, n in enumerate(feeders + [act] + readers):
            new = _scaled(n, 1 - mlp, narrow, 1 - mlp ** _rows(n))
            if i == 0 and predictor_rank is not None:
                hidden = n.reads[0].elements / _rows(n)
                new = _with_predictor(new, hidden, predictor_rank, act.out_shape[1])
            out.nodes[n.name]["op"] = new
    for q, kernels, o in list(_attention_groups(graph)):
        found = True
        if heads == 0:
            continue
        narrow = set(q.outputs) | {t for k in kernels for t in k.outputs} | set(o.inputs)
        for i, n in enumerate([q] + kernels + [o]):
            new = _scaled(n, 1 - heads, narrow,
                          1 - heads ** _rows(n) if n in (q, o) else sympy.Integer(1))
            if n in kernels:  # the cache: read for the heads a sequence's tokens keep
                kv_keep = 1 - heads ** _queries(n)
                new = replace(new, reads=tuple(
                    Access(a.tensor, a.cls, a.elements * kv_keep) if a.cls == "kv" else a
                    for a in new.reads))
            if i == 0 and predictor_rank is not None:
                hidden = n.reads[0].elements / _rows(n)
                new = _with_predictor(new, hidden, predictor_rank, kernels[0].attrs["heads"])
            out.nodes[n.name]["op"] = new
    if not found:
        raise PassError("contextual_sparsity() found no dense MLP or attention to sparsify")
    return out
