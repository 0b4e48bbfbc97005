"""Fusion: merge a group of ops into one kernel when the graph allows it, removing the memory
traffic of the tensors that stay inside the kernel. `fuse` is the generic pass; the named
fusions (QKV, norm + linear, linear + activation, residual add) find their groups and use it.

Legality: every tensor a member writes is either consumed only inside the group (an
intermediate: never written, never read back) or only outside it (an output of the fused op);
no path leaves the group and re-enters it (the merged op would depend on itself); all members
run the same number of times and store their tensors at the same bitwidths."""
from __future__ import annotations

import os

import networkx as nx
import sympy

from ..costs import Access
from ..schema import Node, connect, nodes
from .registry import Arg, PassError, register
from .select import select

LINEAR_KINDS = ("linear", "expert_linear")
ACTIVATION_KINDS = ("silu", "gelu", "relu", "relu2", "swiglu", "geglu", "expert_act")
NORM_KINDS = ("rmsnorm", "layernorm")
ENGINE_RANK = {"memory": 0, "vector": 1, "matrix": 2}


def kinds_of(node: Node) -> tuple[str, ...]:
    """The op kinds inside a node: its own, or for a fused op those it was built from."""
    return tuple(node.attrs.get("kinds", (node.kind,)))


def fused_name(names: list[str]) -> str:
    """`layers.attn.qk`, `layers.attn.softmax`, `layers.attn.sv` -> `layers.attn[qk+softmax+sv]`."""
    prefix = os.path.commonprefix(names)
    prefix = prefix[:prefix.rfind(".") + 1] if "." in prefix else ""
    return prefix.rstrip(".") + "[" + "+".join(n[len(prefix):] for n in names) + "]"


def _consumers(graph: nx.DiGraph, node: str, tensor: str) -> list[str]:
    return [c for c in graph.successors(node) if tensor in graph.edges[node, c]["tensors"]]


def _check_legal(graph: nx.DiGraph, members: list[Node],
                 shared: bool = False) -> tuple[set[str], set[str]]:
    """(the intermediates, the shared results) of a legal group; PassError naming the op that
    blocks it otherwise. A shared result is read both inside and outside the group: allowed
    only with `shared` (written once for the outside, handed on in registers inside)."""
    inside = {m.name for m in members}
    intermediates, both = set(), set()
    for m in members:
        for tensor in m.outputs:
            users = _consumers(graph, m.name, tensor)
            outside = [u for u in users if u not in inside]
            if outside and len(outside) < len(users) and shared:
                both.add(tensor)
            elif outside and len(outside) < len(users):
                raise PassError(f"cannot fuse {m.name!r}: its output {tensor!r} is also read by "
                                f"{outside[0]!r}, outside the fusion",
                                hint=f"fuse {outside[0]!r} too, or leave {m.name!r} out")
            if users and not outside:
                intermediates.add(tensor)
    for m in members[1:]:
        if m.repeat != members[0].repeat:
            raise PassError(f"cannot fuse {m.name!r} (runs {m.repeat} times) with "
                            f"{members[0].name!r} (runs {members[0].repeat} times)")
        cls = stored_unlike(m, members[0])
        if cls is not None:
            raise PassError(f"cannot fuse {m.name!r} with {members[0].name!r}: their "
                            f"{cls} tensors are stored at different bitwidths",
                            hint="quantize them alike before fusing them")
    below = set().union(*(nx.descendants(graph, m.name) for m in members)) - inside
    above = set().union(*(nx.ancestors(graph, m.name) for m in members)) - inside
    between = below & above
    if between:
        blocker = sorted(between)[0]
        raise PassError(f"cannot fuse: {blocker!r} runs between ops of the group (it reads "
                        f"one member's result and feeds another)", hint=f"fuse {blocker!r} too")
    return intermediates, both


def stored_unlike(a: Node, b: Node) -> str | None:
    """The first tensor class a and b store at different widths (one kernel's tensors take
    one width each); None where they agree."""
    return next((cls for cls in a.bits if (a.stored_bits(cls) - b.stored_bits(cls)) != 0),
                None)


def _merge_accesses(accesses, drop: set[str]) -> tuple[Access, ...]:
    """Accesses of the fused kernel: intermediates dropped, a tensor several members read (the
    input of a QKV projection) read once."""
    out: list[Access] = []
    for a in accesses:
        if a.tensor not in drop and a not in out:
            out.append(a)
    return tuple(out)


def merge(graph: nx.DiGraph, members: list[Node], kind: str = "fused",
          attrs: dict | None = None, shared: bool = False) -> Node:
    """The fused op of a legal group (members in execution order); `shared`: see
    _check_legal."""
    intermediates, both = _check_legal(graph, members, shared)
    produced = {t for m in members for t in m.outputs}
    inputs = list(dict.fromkeys(t for m in members for t in m.inputs if t not in produced))
    outputs = [t for m in members for t in m.outputs if t not in intermediates]
    engine = max((m.engine for m in members), key=ENGINE_RANK.get)
    vector = sum((m.flops if (m.engine == "vector" and engine == "matrix") else m.vector_flops
                  for m in members), sympy.Integer(0))
    originals = [n for m in members for n in (m.fused_from or (m.name,))]
    groups = {m.group for m in members}
    first = members[0]
    return Node(
        name=fused_name(originals), kind=kind, stage=first.stage, repeat=first.repeat,
        inputs=tuple(inputs), output=outputs[0], extra_outputs=tuple(outputs[1:]),
        out_shape=members[-1].out_shape,
        flops=sum((m.flops for m in members), sympy.Integer(0)), vector_flops=vector,
        reads=_merge_accesses([a for m in members for a in m.reads], intermediates | both),
        writes=_merge_accesses([a for m in members for a in m.writes], intermediates),
        params=sum((m.params for m in members), sympy.Integer(0)),
        active_params=sum((m.active_params if m.active_params is not None else m.params
                           for m in members), sympy.Integer(0)),
        engine=engine,
        operands=tuple(dict.fromkeys(c for m in members for c in m.operands)),
        attrs={**(attrs or {}), "kinds": tuple(k for m in members for k in kinds_of(m))},
        bits=dict(first.bits), scale_bits=dict(first.scale_bits), fused_from=tuple(originals),
        group=groups.pop() if len(groups) == 1 else None)


def contract(graph: nx.DiGraph, members: list[Node], fused: Node) -> nx.DiGraph:
    """A new graph with `members` replaced by `fused`, placed where the first member was."""
    inside = {m.name for m in members}
    out = nx.DiGraph(**graph.graph)
    for name, data in graph.nodes(data=True):
        if name == members[0].name:
            out.add_node(fused.name, op=fused)
        elif name not in inside:
            out.add_node(name, **data)
    rename = lambda n: fused.name if n in inside else n
    for src, dst, data in graph.edges(data=True):
        if src in inside and dst in inside:
            continue
        for tensor in data["tensors"]:
            connect(out, rename(src), rename(dst), tensor)
    return out


def fuse_group(graph: nx.DiGraph, members: list[Node], kind: str = "fused",
               attrs: dict | None = None, shared: bool = False) -> nx.DiGraph:
    order = {n.name: i for i, n in enumerate(nodes(graph))}
    members = sorted(members, key=lambda m: order[m.name])
    return contract(graph, members, merge(graph, members, kind, attrs, shared))


def try_fuse(graph, groups, shared: bool = False) -> nx.DiGraph:
    """Fuse each group that is legal; a named fusion skips the places where it does not apply."""
    for names in groups:
        members = [graph.nodes[n]["op"] for n in names if n in graph]
        if len(members) < 2:
            continue
        try:
            graph = fuse_group(graph, members, shared=shared)
        except PassError:
            continue
    return graph


@register("fuse", ops=Arg("pattern", help="the ops to merge (names or globs)"))
def fuse(graph: nx.DiGraph, ops) -> nx.DiGraph:
    """Merges the selected ops into one kernel. Legal when every intermediate result has no
    consumer outside the group and no other op runs between two members; otherwise an error
    names the op that blocks it. The fused op reads the group's inputs once and writes only
    the results used outside it."""
    if ops is None:
        raise PassError("fuse() needs ops=", hint='e.g. fuse(ops="layers.gate,layers.up,layers.act")')
    members = select(graph, ops)
    if len(members) < 2:
        raise PassError(f"fuse(ops={ops!r}) selects {len(members)} op; a fusion needs two or more")
    return fuse_group(graph, members)


def producer_of(graph: nx.DiGraph, node: str, tensor: str) -> str | None:
    for p in graph.predecessors(node):
        if tensor in graph.edges[p, node]["tensors"]:
            return p
    return None


@register("fuse_linear_act")
def fuse_linear_act(graph: nx.DiGraph) -> nx.DiGraph:
    """An activation merged into the linear(s) that feed it: linear + GELU/ReLU/SiLU, and the
    gated MLP's gate and up projections with their SwiGLU/GeGLU (the intermediate activations
    are never written)."""
    groups = []
    for node in nodes(graph):
        if node.kind not in ACTIVATION_KINDS:
            continue
        feeders = [producer_of(graph, node.name, t) for t in node.inputs]
        if feeders and all(f and set(kinds_of(graph.nodes[f]["op"])) & set(LINEAR_KINDS)
                           for f in feeders):
            groups.append(list(dict.fromkeys(feeders)) + [node.name])
    return try_fuse(graph, groups)


@register("fuse_gate_up")
def fuse_gate_up(graph: nx.DiGraph) -> nx.DiGraph:
    """A gated MLP's gate and up projections as one GEMM over their concatenated weights (vLLM's
    and TensorRT-LLM's merged gate_up projection): their common input is read once; the
    SwiGLU / GeGLU stays its own kernel."""
    groups = []
    for node in nodes(graph):
        if node.kind not in ACTIVATION_KINDS or len(node.inputs) < 2:
            continue
        feeders = [producer_of(graph, node.name, t) for t in node.inputs]
        ops = [graph.nodes[f]["op"] for f in feeders if f]
        if len(ops) == len(feeders) and all(o.kind == "linear" for o in ops) and \
                len({o.inputs for o in ops}) == 1:
            groups.append(list(dict.fromkeys(feeders)))
    return try_fuse(graph, groups)


@register("fuse_rope")
def fuse_rope(graph: nx.DiGraph) -> nx.DiGraph:
    """The rotary embeddings of the queries and keys of one attention as one kernel (vLLM's
    rotary_embedding rotates both in place in one launch)."""
    groups = []
    for node in nodes(graph):
        if node.kind != "qk_matmul" and "qk_matmul" not in kinds_of(node):
            continue
        ropes = [p for t in node.inputs for p in [producer_of(graph, node.name, t)]
                 if p and graph.nodes[p]["op"].kind == "rope"]
        if len(ropes) >= 2:
            groups.append(ropes)
    return try_fuse(graph, groups)


@register("fuse_qkv")
def fuse_qkv(graph: nx.DiGraph) -> nx.DiGraph:
    """The query, key and value projections of an attention as one projection: their common
    input is read once."""
    groups = []
    for node in nodes(graph):
        if node.kind != "qk_matmul":
            continue
        # xV follows QK^T directly when fused, or through the softmax when not
        near = list(graph.successors(node.name))
        near += [s for n in near for s in graph.successors(n)]
        sv = [s for s in dict.fromkeys(near) if "sv_matmul" in kinds_of(graph.nodes[s]["op"])]
        projections = []
        for t, consumer in [(t, node.name) for t in node.inputs] + [
                (t, s) for s in sv for t in graph.nodes[s]["op"].inputs[1:]]:
            p = producer_of(graph, consumer, t)
            while p and graph.nodes[p]["op"].kind == "rope":  # q and k are rotated first
                rope = graph.nodes[p]["op"]
                p = producer_of(graph, p, rope.inputs[0])
            if p and graph.nodes[p]["op"].kind == "linear":
                projections.append(p)
        inputs = {graph.nodes[p]["op"].inputs for p in projections}
        if len(set(projections)) >= 2 and len(inputs) == 1:
            groups.append(list(dict.fromkeys(projections)))
    return try_fuse(graph, groups)


@register("fuse_norm_linear")
def fuse_norm_linear(graph: nx.DiGraph) -> nx.DiGraph:
    """A norm merged into the linear op(s) that read its output (each normalises its input
    tile before the matrix product): the normalised activations are never written."""
    groups = []
    for node in nodes(graph):
        if node.kind not in NORM_KINDS:
            continue
        users = list(graph.successors(node.name))
        if users and all(set(kinds_of(graph.nodes[u]["op"])) & {"linear"} for u in users):
            groups.append([node.name] + users)
    return try_fuse(graph, groups)


@register("fuse_residual")
def fuse_residual(graph: nx.DiGraph) -> nx.DiGraph:
    """A residual add merged into the op that produces its non-residual input (the output
    projection or the MLP's down projection): that op's result is never written alone."""
    groups = []
    for node in nodes(graph):
        if node.kind != "add":
            continue
        for t in reversed(node.inputs):  # the branch result is the last input by convention
            p = producer_of(graph, node.name, t)
            if p and set(kinds_of(graph.nodes[p]["op"])) & set(LINEAR_KINDS):
                groups.append([p, node.name])
                break
    return try_fuse(graph, groups)
