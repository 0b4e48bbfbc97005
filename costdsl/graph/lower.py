"""Design + stage -> OpGraph. Each op instance gets its cost rule's expressions for the stage's
sizes; edges follow the tensors. Prefill, decode and the general step (`tokens` new tokens over
`seq` cached) are lowerings of one design at three sites of one cost rule."""
from __future__ import annotations

import networkx as nx

from .costs import SITES, Site, cost_of
from ..language.design import Design, OpInstance, Tensor
from .schema import Node, check, connect
from ..language.ops import SIGNATURES
from ..limits import ALL_STAGES, STAGES, STEP_STAGES  # noqa: F401 (named here too)


def lower(design: Design, stage: str) -> nx.DiGraph:
    if stage not in SITES:
        raise ValueError(f"unknown stage {stage!r}")
    site = SITES[stage]
    graph = nx.DiGraph(model=design.name, stage=stage, params=dict(design.params), passes=[])
    for op in design.ops:
        ins = [design.tensor(t) for t in op.inputs]
        graph.add_node(op.name, op=node_of(op, ins, design.tensor(op.output), site))
        for t in ins:
            if t.producer is not None:
                connect(graph, t.producer, op.name, t.name)
    return check(graph)


def node_of(op: OpInstance, ins: list[Tensor], out: Tensor, site: Site) -> Node:
    """The graph node of one op instance at a site: its cost rule's expressions and the
    signature of its kind (passes that add ops build their nodes here too)."""
    cost = cost_of(op, ins, out, site)
    sig = SIGNATURES[op.kind]
    return Node(
        name=op.name, kind=op.kind, stage=site.stage, repeat=op.repeat, inputs=op.inputs,
        output=op.output, out_shape=cost.out_shape, flops=cost.flops, reads=cost.reads,
        writes=cost.writes, params=cost.params, engine=sig.engine, operands=sig.operands,
        attrs=dict(op.attrs), group=op.group,
        active_params=cost.params if cost.active is None else cost.active)
