"""A persistent cache of compiled grid functions: expressions stored as data, evaluated by code
we generate from that data.

Compiling a stage's time for a grid (sympy's lambdify: printing a large expression as Python)
costs a few tenths of a second per stage, in every process anew. This module stores the
expression itself, as a tree of plain JSON lists (["add", ...], ["s", "batch"], ["q", "3/8"]),
under the user's cache directory, keyed by everything it depends on: the model's design (its
files, parameters and passes, as elaborated), the hardware's figures, the bitwidths, what is
compiled, and costdsl's version and code (a changed cost rule in a development install is a
new key, not a stale entry). Reading an entry back executes nothing from the file: the tree
is validated node by node (known operators, numbers that parse as numbers, symbols from the
given argument list) and the function's source is generated here from it -- never a pickle,
never stored code. A missing, unreadable, corrupt or foreign entry is rebuilt (corrupt ones with
a warning). Where entries live: costdsl.cache; the code generated from trees:
analysis.trees.
"""
from __future__ import annotations

from fractions import Fraction
from typing import Callable

import sympy

from ..cache import Slot
from .trees import CorruptEntry, compile_tree


class Unsupported(Exception):
    """An expression node the tree form does not cover: the caller compiles it as before."""


# --- expressions <-> trees -----------------------------------------------------------------------

_NARY = {sympy.Add: "add", sympy.Mul: "mul", sympy.Max: "max", sympy.Min: "min",
         sympy.And: "and", sympy.Or: "or"}
_UNARY = {sympy.ceiling: "ceil", sympy.floor: "floor", sympy.log: "log", sympy.exp: "exp",
          sympy.Abs: "abs"}
_RELATIONS = {sympy.StrictGreaterThan: "gt", sympy.GreaterThan: "ge",
              sympy.StrictLessThan: "lt", sympy.LessThan: "le"}


def to_tree(expr) -> list:
    """The expression as nested lists of strings; Unsupported for anything else."""
    expr = sympy.sympify(expr)
    if expr.is_Symbol:
        return ["s", expr.name]
    if expr is sympy.oo:
        return ["inf"]
    if expr is sympy.true:
        return ["true"]
    if expr.is_Integer or expr.is_Rational:
        return ["q", str(Fraction(int(expr.p), int(expr.q)))]
    if expr.is_Float:
        return ["f", repr(float(expr))]
    for cls, name in _NARY.items():
        if isinstance(expr, cls):
            return [name] + [to_tree(a) for a in expr.args]
    for cls, name in _UNARY.items():
        if isinstance(expr, cls):
            return [name, to_tree(expr.args[0])]
    for cls, name in _RELATIONS.items():
        if isinstance(expr, cls):
            return [name, to_tree(expr.lhs), to_tree(expr.rhs)]
    if isinstance(expr, sympy.Pow):
        return ["pow", to_tree(expr.base), to_tree(expr.exp)]
    if isinstance(expr, sympy.Piecewise):
        return ["pw"] + [[to_tree(e), to_tree(c)] for e, c in expr.args]
    raise Unsupported(type(expr).__name__)


def cached_functions(parts, build: Callable[[], tuple[list[str], list]]
                     ) -> tuple[list[str], list[Callable]] | None:
    """(symbol names, one numpy function per expression) for the inputs `parts` describe:
    read from the cache, or made by `build()` (-> symbol names, expressions) and stored. None
    when the expressions have a node the tree form does not cover (compile them as before)."""
    slot = Slot(parts)
    found = slot.load(_functions)
    if found is not None:
        return found
    symbols, expressions = build()
    try:
        trees = [to_tree(e) for e in expressions]
    except Unsupported:
        return None
    slot.store({"symbols": symbols, "trees": trees})
    return symbols, [compile_tree(t, symbols) for t in trees]


def _functions(entry: dict) -> tuple[list[str], list[Callable]]:
    """An entry's functions, after checking its shape (every node is checked as compiled)."""
    symbols, trees = entry["symbols"], entry["trees"]
    if not (isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)
            and isinstance(trees, list)):
        raise CorruptEntry("malformed entry")
    return symbols, [compile_tree(t, symbols) for t in trees]
