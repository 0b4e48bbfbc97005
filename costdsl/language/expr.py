"""AST expressions -> sympy, within a scope of names. Nothing is evaluated as Python text."""
from __future__ import annotations

from typing import Callable, Mapping

import sympy

from . import ast
from ..errors import ArchNameError, ArchError, at

FUNCTIONS: dict[str, tuple[int | None, Callable]] = {
    # name: (number of arguments or None for "two or more", builder)
    "min": (None, sympy.Min),
    "max": (None, sympy.Max),
    "ceil": (1, sympy.ceiling),
    "floor": (1, sympy.floor),
}

CONSTANTS = {"inf": sympy.oo}  # window = inf: attention without a window

_BINARY = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": lambda a, b: a / b,
    "//": lambda a, b: sympy.floor(a / b),
    "^": lambda a, b: a ** b,
}


def to_sympy(node: ast.Expr, scope: Mapping[str, sympy.Expr],
             undefined: Callable[[ast.Name], Exception] | None = None) -> sympy.Expr:
    """Build the sympy expression of `node`; names are looked up in `scope`.

    `undefined(name_node)` makes the error for a name missing from the scope, so that callers can
    say "used before it is defined" where they know the name comes later.
    """
    if isinstance(node, ast.Num):
        return sympy.Rational(node.value.numerator, node.value.denominator)
    if isinstance(node, ast.Name):
        if node.id in scope:
            return scope[node.id]
        if node.id in CONSTANTS:
            return CONSTANTS[node.id]
        if undefined is not None:
            raise undefined(node)
        raise at(ArchNameError, f"name {node.id!r} is not defined", node.pos)
    if isinstance(node, ast.Neg):
        return -to_sympy(node.operand, scope, undefined)
    if isinstance(node, ast.BinOp):
        left = to_sympy(node.left, scope, undefined)
        right = to_sympy(node.right, scope, undefined)
        if node.op in ("/", "//") and right.is_zero:
            raise at(ArchError, "division by zero", node.pos)
        return _BINARY[node.op](left, right)
    if isinstance(node, ast.Func):
        return _call(node, [to_sympy(a, scope, undefined) for a in node.args])
    raise TypeError(f"not an expression: {node!r}")


def _call(node: ast.Func, args: list[sympy.Expr]) -> sympy.Expr:
    if node.name not in FUNCTIONS:
        raise at(ArchNameError, f"unknown function {node.name!r}", node.pos,
                 hint="functions are " + ", ".join(sorted(FUNCTIONS)))
    arity, build = FUNCTIONS[node.name]
    if (arity is None and len(args) < 2) or (arity is not None and len(args) != arity):
        wanted = "two or more arguments" if arity is None else f"{arity} argument"
        raise at(ArchError, f"{node.name}() takes {wanted}, got {len(args)}", node.pos)
    return build(*args)
