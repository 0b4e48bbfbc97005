"""Formula tables: each op's costs as readable expressions, for documentation.

Model parameters are bound to their values except those the user keeps free; the runtime
symbols (batch, seq, tokens, bitwidths) stay, unless a value is given for them (`bind`). Expressions are expanded, then collected by the
runtime symbols and with common factors pulled out, so that a linear layer reads
2*batch*hidden**2 rather than a nested product.
"""
from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import sympy

from ..graph.schema import nodes
from .. import symbols as S

COLUMNS = ("operations", "weight bytes", "activation bytes", "KV bytes", "intensity")


def tidy(expr: sympy.Expr) -> sympy.Expr:
    """A stable, human form: expanded, collected by batch and seq, common factors out."""
    expr = sympy.expand(sympy.sympify(expr))
    if expr == 0:
        return expr
    if sympy.denom(sympy.together(expr)).free_symbols:  # one flat fraction, not nested ones
        return sympy.factor_terms(sympy.together(expr))
    return sympy.factor_terms(sympy.collect(expr, [S.batch, S.seq, S.tokens], evaluate=True))


def _ratio(num: sympy.Expr, den: sympy.Expr) -> sympy.Expr:
    if num == 0:
        return sympy.Integer(0)
    return sympy.factor_terms(sympy.cancel(sympy.expand(num) / sympy.expand(den)))


@dataclass(frozen=True)
class FormulaRow:
    op: str
    kind: str
    repeat: sympy.Expr
    cells: tuple[sympy.Expr, ...]   # in the order of COLUMNS


@dataclass(frozen=True)
class FormulaTable:
    stage: str
    kept: tuple[str, ...]
    rows: tuple[FormulaRow, ...]
    per_layer: FormulaRow            # one occurrence of every repeated op
    per_model: FormulaRow            # every op times its repeat count


def _cells(flops, by_class, bind) -> tuple[sympy.Expr, ...]:
    flops = sympy.sympify(flops).xreplace(bind)
    by_class = {c: sympy.sympify(b).xreplace(bind) for c, b in by_class.items()}
    total_bytes = by_class["weight"] + by_class["act"] + by_class["kv"]
    return (tidy(flops), tidy(by_class["weight"]), tidy(by_class["act"]), tidy(by_class["kv"]),
            _ratio(flops, total_bytes))


def _sum_row(name: str, items, bind) -> FormulaRow:
    flops = sympy.Integer(0)
    by_class = {"weight": sympy.Integer(0), "act": sympy.Integer(0), "kv": sympy.Integer(0)}
    for count, node in items:
        flops += count * node.flops
        for cls, b in node.bytes_of(node.reads + node.writes).items():
            by_class[cls] += count * b
    return FormulaRow(name, "", sympy.Integer(1), _cells(flops, by_class, bind))


def formula_table(graph: nx.DiGraph, kept: tuple[str, ...] = (),
                  bind: dict | None = None) -> FormulaTable:
    """The table of `graph`'s stage; `bind` gives values to runtime symbols (e.g. tokens)."""
    bind = bind or {}
    ops = nodes(graph)
    rows = tuple(FormulaRow(n.name, n.kind, n.repeat,
                            _cells(n.flops, n.bytes_of(n.reads + n.writes), bind)) for n in ops)
    layer = _sum_row("per layer", [(1, n) for n in ops if n.repeat != 1], bind)
    model = _sum_row("per model", [(n.repeat, n) for n in ops], bind)
    return FormulaTable(graph.graph["stage"], tuple(kept), rows, layer, model)
