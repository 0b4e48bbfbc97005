"""Parameter counts, from the op graph: each op's parameters times its repeat count.

Total counts every parameter held; active counts those one token uses (they differ for mixtures
of experts, where a token visits top_k of the experts)."""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import sympy

from ..graph.schema import nodes


@dataclass(frozen=True)
class OpParams:
    name: str
    kind: str
    repeat: sympy.Expr
    params: sympy.Expr         # one occurrence
    active: sympy.Expr         # one occurrence, per token


def total_params(graph: nx.DiGraph) -> sympy.Expr:
    return sympy.expand(sum((n.params * n.repeat for n in nodes(graph)), sympy.Integer(0)))


def active_params(graph: nx.DiGraph) -> sympy.Expr:
    return sympy.expand(sum((n.active_params * n.repeat for n in nodes(graph)),
                            sympy.Integer(0)))


def params_by_op(graph: nx.DiGraph) -> list[tuple[str, str, sympy.Expr, sympy.Expr]]:
    """(name, kind, parameters of one occurrence, repeat) for every op that holds parameters."""
    return [(n.name, n.kind, n.params, n.repeat) for n in nodes(graph) if n.params != 0]


def op_params(graph: nx.DiGraph) -> list[OpParams]:
    return [OpParams(n.name, n.kind, n.repeat, n.params, n.active_params)
            for n in nodes(graph) if n.params != 0]
