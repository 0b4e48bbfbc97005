"""Parameter counts, from the op graph: each op's held parameters times its repeat count."""
from __future__ import annotations

import networkx as nx
import sympy

from .graph import nodes


def total_params(graph: nx.DiGraph) -> sympy.Expr:
    return sympy.expand(sum((n.params * n.repeat for n in nodes(graph)), sympy.Integer(0)))


def params_by_op(graph: nx.DiGraph) -> list[tuple[str, str, sympy.Expr, sympy.Expr]]:
    """(name, kind, parameters of one occurrence, repeat) for every op that holds parameters."""
    return [(n.name, n.kind, n.params, n.repeat) for n in nodes(graph) if n.params != 0]
