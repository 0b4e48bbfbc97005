"""The op graph: a networkx.DiGraph with one node per op and one edge per tensor.

Node schema: the node key is the op name; attribute `op` holds a frozen `Node`:
    name, kind, stage, repeat   identity, and how many times the op occurs (e.g. layers)
    inputs, output              tensor names; edges producer -> consumer carry `tensors=(<name>, ...)`
    out_shape                   sympy shape of the output
    flops                       operations (a multiply-add is 2) of one occurrence
    reads, writes               `Access` records: tensor, class (weight/act/kv), elements
    params, active_params       parameters held by the op, and those one token uses (MoE)
    bits                        bitwidth of each tensor class (sympy: symbols or numbers)
    engine, operands            which units run it (matrix/vector/memory) and, for matrix ops,
                                which tensor classes are its operands
    attrs                       resolved attributes
    fused_from                  the ops a fusion pass merged into this one (empty otherwise)
    extra_outputs               further tensors a fused op writes (e.g. q, k and v of a fused
                                QKV projection); `outputs` is output + extra_outputs
    vector_flops                the part of `flops` run on the vector units at their rate (the
                                softmax inside a fused attention, an activation fused into a
                                linear, dequantization); 0 for unfused ops
    scale_bits                  extra bits per element of a class (group-wise quantization
                                scales and zero points); bytes use bits + scale_bits
    origin                      the pass call that made the node (its text and position, for
                                errors about it); None for ops the lowering made
    share                       the expected fraction of the op's occurrences that run (early
                                exit skips layers): time scales by it, weights and memory not
    transfers                   bytes one occurrence moves off the device, by channel: "comm"
                                (a collective: the link inside a node, the network across
                                nodes; the roofline picks) or "host" (offloaded tensors
                                streamed over the host link)
    messages                    message steps of a collective (each costs the link's latency)
    offloaded                   fraction of a class's bytes (weight, kv) held in host memory
Graph attributes: `model`, `stage`, `params` (resolved values), `passes` (texts applied), and
after parallelism passes `parallel` ({"tp": n, "pp": n, "ep": n}: devices per op group) and
`pipeline` ((stages, microbatches)).
Passes map OpGraph -> OpGraph and must leave `check(graph)` true.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import networkx as nx
import sympy

from .costs import Access
from ..errors import CostDSLError
from ..symbols import BITS_BY_CLASS, to_bytes

CLASSES = ("weight", "act", "kv")


@dataclass(frozen=True)
class Node:
    name: str
    kind: str
    stage: str
    repeat: sympy.Expr
    inputs: tuple[str, ...]
    output: str
    out_shape: tuple[sympy.Expr, ...]
    flops: sympy.Expr
    reads: tuple[Access, ...]
    writes: tuple[Access, ...]
    params: sympy.Expr
    engine: str
    operands: tuple[str, ...] = ()
    attrs: Mapping[str, object] = field(default_factory=dict)
    bits: Mapping[str, sympy.Expr] = field(default_factory=lambda: dict(BITS_BY_CLASS))
    fused_from: tuple[str, ...] = ()
    group: str | None = None
    active_params: sympy.Expr | None = None  # parameters one token uses; None means all
    extra_outputs: tuple[str, ...] = ()
    vector_flops: sympy.Expr = sympy.Integer(0)
    scale_bits: Mapping[str, sympy.Expr] = field(default_factory=dict)
    origin: object = None  # the pass call (language AST) that made this node; None: lowering
    share: sympy.Expr = sympy.Integer(1)  # expected fraction of occurrences that run
    transfers: Mapping[str, sympy.Expr] = field(default_factory=dict)  # channel -> bytes
    messages: sympy.Expr = sympy.Integer(0)  # message steps of a collective
    offloaded: Mapping[str, sympy.Expr] = field(default_factory=dict)  # class -> host fraction

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.output,) + self.extra_outputs

    def stored_bits(self, cls: str) -> sympy.Expr:
        """Bits one element of class `cls` takes in memory: its bitwidth plus any scales."""
        return self.bits[cls] + self.scale_bits.get(cls, 0)

    def bytes_of(self, accesses) -> dict[str, sympy.Expr]:
        out = {c: sympy.Integer(0) for c in CLASSES}
        for a in accesses:
            out[a.cls] += to_bytes(a.elements, self.stored_bits(a.cls))
        return out

    @property
    def read_bytes(self) -> dict[str, sympy.Expr]:
        return self.bytes_of(self.reads)

    @property
    def write_bytes(self) -> dict[str, sympy.Expr]:
        return self.bytes_of(self.writes)

    @property
    def bytes(self) -> sympy.Expr:
        return sum(self.bytes_of(self.reads + self.writes).values(), sympy.Integer(0))

    @property
    def bias_elements(self) -> sympy.Expr:
        """Elements of the bias vectors the op reads (tensors named `<op>.bias`)."""
        return sum((a.elements for a in self.reads if a.tensor.endswith(".bias")),
                   sympy.Integer(0))

    @property
    def intensity(self) -> sympy.Expr:
        return self.flops / self.bytes


def connect(graph: nx.DiGraph, producer: str, consumer: str, tensor: str) -> None:
    """Add `tensor` to the edge producer -> consumer (one edge may carry several tensors)."""
    if graph.has_edge(producer, consumer):
        carried = graph.edges[producer, consumer]["tensors"]
        if tensor not in carried:
            graph.edges[producer, consumer]["tensors"] = carried + (tensor,)
    else:
        graph.add_edge(producer, consumer, tensors=(tensor,))


def nodes(graph: nx.DiGraph) -> list[Node]:
    """The graph's ops in execution (topological) order, ties broken by insertion order."""
    order = {n: i for i, n in enumerate(graph.nodes)}
    return [graph.nodes[n]["op"] for n in nx.lexicographical_topological_sort(graph, key=order.get)]


class GraphError(CostDSLError):
    label = "invalid graph"


def check(graph: nx.DiGraph) -> nx.DiGraph:
    """Raise GraphError unless the graph is a well-formed op graph; return it unchanged.

    Checked: acyclic; every node holds a Node under its own name, with a bitwidth for each
    tensor class; every edge carries a tensor that its source writes and its target reads;
    every input with a producer in the graph has an edge from it.
    """
    if not nx.is_directed_acyclic_graph(graph):
        raise GraphError("the op graph has a cycle")
    producers = {}
    for key, data in graph.nodes(data=True):
        node = data.get("op")
        if not isinstance(node, Node) or node.name != key:
            raise GraphError(f"node {key!r} does not hold its op record")
        if set(node.bits) != set(CLASSES):
            raise GraphError(f"node {key!r} lacks a bitwidth for some tensor class")
        for tensor in node.outputs:
            if producers.setdefault(tensor, key) != key:
                raise GraphError(f"tensor {tensor!r} is written by both {producers[tensor]!r} "
                                 f"and {key!r}")
    for src, dst, data in graph.edges(data=True):
        tensors = data.get("tensors") or ()
        if not tensors or any(t not in graph.nodes[src]["op"].outputs
                              or t not in graph.nodes[dst]["op"].inputs for t in tensors):
            raise GraphError(f"edge {src} -> {dst} does not carry a tensor between them")
    for key, data in graph.nodes(data=True):
        for tensor in data["op"].inputs:
            if tensor in producers and not graph.has_edge(producers[tensor], key):
                raise GraphError(f"{key!r} reads {tensor!r} but has no edge from its producer")
    return graph
