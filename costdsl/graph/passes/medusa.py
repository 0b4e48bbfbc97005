"""medusa_heads: Medusa's extra decoding heads (Cai et al., "Medusa: Simple LLM Inference
Acceleration Framework with Multiple Decoding Heads", ICML 2024; the survey's section 4.2.2).

Head k predicts the token k + 1 positions ahead from the last hidden state h (the LM head's
input): p_k = softmax(W2_k (SiLU(W1_k h + b1_k) + h)), W1_k of hidden x hidden with a bias
(`layers` such residual blocks per head), W2_k of hidden x vocab. The heads run in the same
forward pass as the model, on the rows the LM head runs on (the last position in decode, every
verified token in the verify stage), so they add to the verify step:

- `medusa.block` (linear, hidden x hidden + bias), `medusa.act` (SiLU) and `medusa.residual`
  (add h), each repeated heads x layers times; the blocks' weights are real parameters.
- `medusa.lm_head`: lm_head="shared" (the default, as this project's issue states the design)
  projects every head's state with the model's own LM head: one matmul over heads x rows that
  reads the shared table once and holds no parameters of its own. lm_head="own" gives each head
  its own hidden x vocab projection (the Medusa-1 checkpoints released with the paper initialise
  W2_k from the LM head and train it separately): heads such matmuls, heads x hidden x vocab
  parameters.

If a fusion pass has merged the final norm into the LM head, the heads read that op's input (the
un-normed state): the norm is one hidden-wide row per token, beside a head's hidden^2 weights.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import networkx as nx
import sympy

from ..costs import SITES, Access
from ..lower import node_of
from ..schema import Node, connect, nodes
from ...language.design import OpInstance, Tensor
from .fusion import kinds_of
from .registry import Arg, PassError, register

LM_HEADS = ("shared", "own")


@dataclass(frozen=True)
class _Table:
    """What a tied linear names: the op whose `<name>.weight` it reads."""
    name: str


def _lm_head(graph: nx.DiGraph) -> Node:
    """The model's LM head: the linear that runs on the last position only (tokens=last)."""
    heads = [n for n in nodes(graph) if "linear" in kinds_of(n)
             and n.attrs.get("tokens") == "last" and not graph.out_degree(n.name)]
    if len(heads) != 1:
        raise PassError("medusa_heads() needs the model's LM head: a final "
                        "linear(..., tokens=last) op (found "
                        f"{len(heads) or 'none'})")
    return heads[0]


def _stacked(node: Node, k: sympy.Expr) -> Node:
    """The node over k times its rows: operations and activation traffic times k, the weights
    read once (the shared LM head over every head's state in one matmul)."""
    def scale(a: Access) -> Access:
        return a if a.cls == "weight" else Access(a.tensor, a.cls, a.elements * k)
    return replace(node, flops=node.flops * k, reads=tuple(scale(a) for a in node.reads),
                   writes=tuple(scale(a) for a in node.writes),
                   out_shape=(node.out_shape[0] * k,) + tuple(node.out_shape[1:]))


def _weight_table(lm: Node) -> str:
    table = next(a.tensor for a in lm.reads if a.cls == "weight" and
                 a.tensor.endswith(".weight"))
    return table[:-len(".weight")]


@register("medusa_heads",
          heads=Arg("count", 4, help="decoding heads (tokens predicted ahead)"),
          layers=Arg("count", 1, help="residual blocks per head"),
          lm_head=Arg("pattern", "shared", help='"shared" (the model\'s LM head) or "own" '
                                                '(a vocabulary projection per head)'))
def medusa_heads(graph: nx.DiGraph, heads, layers, lm_head) -> nx.DiGraph:
    """Medusa's decoding heads on the last hidden state: heads x layers residual blocks
    (hidden x hidden + bias, SiLU, add) and their vocabulary projections."""
    if lm_head not in LM_HEADS:
        raise PassError(f"lm_head={lm_head!r}: expected one of {', '.join(LM_HEADS)}",
                        arg="lm_head")
    lm = _lm_head(graph)
    if any(n.startswith("medusa.") for n in graph.nodes):
        raise PassError("the model has Medusa heads already")
    site = SITES[graph.graph["stage"]]
    h_name = lm.inputs[0]
    hidden = sympy.cancel(next(a.elements for a in lm.reads if a.tensor == h_name)
                          / lm.out_shape[0])
    vocab = lm.out_shape[1]
    blocks = sympy.Integer(heads) * layers
    h = Tensor(h_name, hidden, "last", None)
    block = Tensor("medusa.block", hidden, "last", "medusa.block")
    act = Tensor("medusa.act", hidden, "last", "medusa.act")
    res = Tensor("medusa.residual", hidden, "last", "medusa.residual")
    logits = Tensor("medusa.lm_head", vocab, "last", "medusa.lm_head")
    own = lm_head == "own"
    linear = {"in": None, "tokens": "last"}
    ops = [
        (OpInstance("medusa.block", "linear", (h_name,), block.name,
                    {**linear, "out": hidden, "bias": "true", "tied": None}, blocks, None,
                    "medusa"), [h], block),
        (OpInstance("medusa.act", "silu", (block.name,), act.name, {}, blocks, None, "medusa"),
         [block], act),
        (OpInstance("medusa.residual", "add", (h_name, act.name), res.name, {}, blocks, None,
                    "medusa"), [h, act], res),
        (OpInstance("medusa.lm_head", "linear", (res.name,), logits.name,
                    {**linear, "out": vocab, "bias": "false",
                     "tied": None if own else _Table(_weight_table(lm))},
                    sympy.Integer(heads) if own else sympy.Integer(1), None, "medusa"),
         [res], logits),
    ]
    out = graph.copy()
    producer = next((p for p in graph.predecessors(lm.name)
                     if h_name in graph.edges[p, lm.name]["tensors"]), None)
    for op, ins, o in ops:
        node = node_of(op, ins, o, site)
        out.add_node(op.name, op=node if own or op.name != "medusa.lm_head"
                     else _stacked(node, sympy.Integer(heads)))
        for t in op.inputs:
            source = producer if t == h_name else t
            if source is not None:
                connect(out, source, op.name, t)
    return out
