"""Graph surgery the multi-device passes share: put a communication op between a producer and
(some of) its consumers, and substitute a size in every expression of a node."""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access, collective
from ..schema import Node, connect


def comm_node(kind: str, producer: Node, tensor: str, elements: sympy.Expr, devices,
              group: str, **attrs) -> Node:
    """A collective (`kind`, see costs.collective) over `devices` devices of the parallel
    `group` ("tp", "ep" or "pp"), moving `elements` activation elements per device of
    `producer`'s tensor. It reads and writes no device memory of its own (NCCL works in place);
    its cost is its message steps and the bytes it sends."""
    steps, sent = collective(kind, elements, devices)
    name = f"{producer.name}.{kind}"
    return Node(name=name, kind=kind, stage=producer.stage, repeat=producer.repeat,
                inputs=(tensor,), output=name, out_shape=producer.out_shape,
                flops=sympy.Integer(0), reads=(), writes=(), params=sympy.Integer(0),
                active_params=sympy.Integer(0),
                engine="link", attrs={"devices": devices, "group": group, **attrs},
                bits=dict(producer.bits), scale_bits={c: b for c, b in producer.scale_bits.items()
                                                      if c == "act"},
                transfers={"comm": (Access(tensor, "act", sent),)}, messages=steps,
                share=producer.share)


def insert_after(graph: nx.DiGraph, producer: str, tensor: str, node: Node,
                 consumers: list[str] | None = None) -> nx.DiGraph:
    """A copy of `graph` with `node` reading `tensor` from `producer` and standing in for it
    with the `consumers` (all of them by default), placed right after `producer` in the
    execution order."""
    readers = [c for c in graph.successors(producer)
               if tensor in graph.edges[producer, c]["tensors"]
               and (consumers is None or c in consumers)]
    node = _at_readers_width(node, [graph.nodes[r]["op"] for r in readers])
    out = nx.DiGraph(**graph.graph)
    for key, data in graph.nodes(data=True):
        op = data["op"]
        if key in readers:
            op = reading(op, tensor, node.output)
        out.add_node(key, op=op)
        if key == producer:
            out.add_node(node.name, op=node)
    for src, dst, data in graph.edges(data=True):
        for t in data["tensors"]:
            if t == tensor and src == producer and dst in readers:
                continue
            connect(out, src, dst, t)
    connect(out, producer, node.name, tensor)
    for r in readers:
        connect(out, node.name, r, node.output)
    return out


def _at_readers_width(node: Node, readers: list[Node]) -> Node:
    """A collective moves its tensor at the activation width its readers take it in (the
    widest of theirs), not its producer's: a W8A8 GEMM quantises its input to FP8 on the fly
    but hands its result on at the model's width (the stacks' FP8 GEMMs write bf16), so the
    all-reduce after a tensor-parallel FP8 projection sums 16-bit partial sums, and a MoE
    dispatch into FP8 experts sends FP8 tokens. The producer's width where nothing reads it."""
    widths = list(dict.fromkeys(r.bits["act"] for r in readers))
    if node.engine != "link" or not widths:
        return node
    width = widths[0] if len(widths) == 1 else sympy.Max(*widths)
    if width == node.bits["act"]:
        return node
    return replace(node, bits={**node.bits, "act": width},
                   scale_bits={c: b for c, b in node.scale_bits.items() if c != "act"})


def reading(op: Node, old: str, new: str) -> Node:
    """`op` reading tensor `new` where it read `old`."""
    return replace(op, inputs=tuple(new if t == old else t for t in op.inputs),
                   reads=tuple(Access(new, a.cls, a.elements) if a.tensor == old else a
                               for a in op.reads))


def substituted(node: Node, mapping: dict) -> Node:
    """`node` with `mapping` (symbol -> expression) substituted in every cost expression."""
    sub = lambda e: sympy.sympify(e).xreplace(mapping)
    accesses = lambda xs: tuple(Access(a.tensor, a.cls, sub(a.elements)) for a in xs)
    return replace(node, flops=sub(node.flops), vector_flops=sub(node.vector_flops),
                   reads=accesses(node.reads), writes=accesses(node.writes),
                   out_shape=tuple(sub(d) for d in node.out_shape),
                   transfers={c: accesses(xs) for c, xs in node.transfers.items()},
                   messages=sub(node.messages))
