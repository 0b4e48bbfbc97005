"""AST expressions -> sympy, within a scope of names. Nothing is evaluated as Python text."""
from __future__ import annotations

import math
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


MAX_MAGNITUDE = 10**18
"""The largest magnitude a number in a model may have (and the smallest non-zero one is its
inverse). Dimensions, counts and bitwidths are far inside it; the bound keeps sympy from
computing exact powers of millions of digits (`10^10^10`) and numpy from overflowing int64."""

MAX_NESTING = 100
"""How deeply expressions may nest (parentheses, powers, function calls). A flat chain of sums
or products of any length does not count: it is built without recursion."""


def to_sympy(node: ast.Expr, scope: Mapping[str, sympy.Expr],
             undefined: Callable[[ast.Name], Exception] | None = None) -> sympy.Expr:
    """Build the sympy expression of `node`; names are looked up in `scope`.

    `undefined(name_node)` makes the error for a name missing from the scope, so that callers can
    say "used before it is defined" where they know the name comes later.

    The tree is walked with an explicit stack, so a sum of thousands of terms or a long chain of
    unary minuses needs no recursion; every number built is checked to be real and within
    MAX_MAGNITUDE, and powers of numbers are checked before they are computed.
    """
    results: dict[int, sympy.Expr] = {}
    stack: list[tuple[ast.Expr, int, bool]] = [(node, 0, False)]
    while stack:
        item, depth, expanded = stack.pop()
        if depth > MAX_NESTING:
            raise at(ArchError, f"the expression nests more than {MAX_NESTING} levels deep",
                     item.pos, hint="flat sums and products of any length are fine")
        children = _children(item)
        if not expanded and children:
            stack.append((item, depth, True))
            for child, deeper in children:
                stack.append((child, depth + deeper, False))
            continue
        values = [results.pop(id(child)) for child, _ in children]
        results[id(item)] = _checked(_build(item, values, scope, undefined), item.pos)
    return results[id(node)]


def shown(value: sympy.Expr) -> str:
    """A number as the user would write it: inf, 4096.5, 12.3333 (not oo or 8193/2)."""
    if value is sympy.oo or value is -sympy.oo:
        return "inf" if value is sympy.oo else "-inf"
    if value.is_Rational and not value.is_Integer:
        return f"{float(value):g}"
    return str(value)


def _chain(node: ast.Expr, ops: tuple[str, ...]):
    """The operands of a left-nested chain of `ops` (a + b - c + ...) and their signs, found
    without recursion: (operand, op applied to it) pairs, the first with op None."""
    terms = []
    while isinstance(node, ast.BinOp) and node.op in ops:
        terms.append((node.right, node.op))
        node = node.left
    terms.append((node, None))
    return terms[::-1]


def _children(node: ast.Expr) -> list[tuple[ast.Expr, int]]:
    """The sub-expressions `node` is built from, each with the nesting it adds (0 for the
    operands of a flat chain, 1 otherwise)."""
    if isinstance(node, ast.BinOp) and node.op in ("+", "-"):
        return [(t, 0 if op is None else 1) for t, op in _chain(node, ("+", "-"))]
    if isinstance(node, ast.BinOp) and node.op in ("*",):
        return [(t, 0 if op is None else 1) for t, op in _chain(node, ("*",))]
    if isinstance(node, ast.BinOp):
        return [(node.left, 1), (node.right, 1)]
    if isinstance(node, ast.Neg):
        inner = node.operand
        while isinstance(inner, ast.Neg):  # a chain of minuses is a sign
            inner = inner.operand
        return [(inner, 1)]
    if isinstance(node, ast.Func):
        return [(a, 1) for a in node.args]
    return []


def _build(node, values, scope, undefined) -> sympy.Expr:
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
        minuses = 0
        while isinstance(node, ast.Neg):
            minuses, node = minuses + 1, node.operand
        return -values[0] if minuses % 2 else values[0]
    if isinstance(node, ast.BinOp) and node.op in ("+", "-", "*"):
        ops = _chain(node, ("+", "-") if node.op in "+-" else ("*",))
        if node.op == "*":
            return sympy.Mul(*values)
        return sympy.Add(*(-v if op == "-" else v for v, (_, op) in zip(values, ops)))
    if isinstance(node, ast.BinOp):
        left, right = values
        if node.op in ("/", "//") and right.is_zero:
            raise at(ArchError, "division by zero", node.pos)
        if node.op == "^":
            _check_power(left, right, node.pos)
        return _BINARY[node.op](left, right)
    if isinstance(node, ast.Func):
        return _call(node, values)
    raise TypeError(f"not an expression: {node!r}")


def _check_power(base: sympy.Expr, exponent: sympy.Expr, pos) -> None:
    """Refuse a power of numbers whose exact value would exceed MAX_MAGNITUDE (or be a
    division by zero) before sympy spends minutes computing it."""
    if not (base.is_number and exponent.is_number) or base.is_zero is None:
        return
    if base.is_zero and exponent.is_extended_negative:
        raise at(ArchError, "division by zero: 0 to a negative power", pos)
    if base.is_zero or not base.is_finite or not exponent.is_finite or abs(base) == 1:
        return
    try:
        digits = float(abs(exponent)) * math.log10(float(abs(base)))
    except (TypeError, ValueError, OverflowError):
        return
    if digits > math.log10(MAX_MAGNITUDE):
        raise at(ArchError, f"the power {base}^{exponent} is out of range: numbers in a model "
                 f"are limited to 1e{round(math.log10(MAX_MAGNITUDE))} in magnitude", pos)


def _checked(value: sympy.Expr, pos) -> sympy.Expr:
    """A number built from the user's text must be real and within MAX_MAGNITUDE; `inf` is
    allowed (a window); nan or complex infinity means an undefined operation."""
    if not value.is_number:
        return value
    if value is sympy.nan or value is sympy.zoo:
        raise at(ArchError, "the expression is undefined (a division by zero or inf - inf)", pos)
    if value.is_extended_real is False:
        raise at(ArchError, f"the expression is not a real number: {value}", pos)
    if value.is_infinite:
        return value
    if value.is_Rational and value != 0 and (abs(value.p) > MAX_MAGNITUDE * value.q
                                             or value.q > MAX_MAGNITUDE * abs(value.p)):
        e = round(math.log10(MAX_MAGNITUDE))
        what = "small" if value.q > abs(value.p) else "large"
        raise at(ArchError, f"the value {float(value):.3g} is too {what}: numbers in a model "
                 f"are limited to magnitudes from 1e-{e} to 1e{e}", pos)
    return value


def _call(node: ast.Func, args: list[sympy.Expr]) -> sympy.Expr:
    if node.name not in FUNCTIONS:
        raise at(ArchNameError, f"unknown function {node.name!r}", node.pos,
                 hint="functions are " + ", ".join(sorted(FUNCTIONS)))
    arity, build = FUNCTIONS[node.name]
    if (arity is None and len(args) < 2) or (arity is not None and len(args) != arity):
        wanted = "two or more arguments" if arity is None else f"{arity} argument"
        raise at(ArchError, f"{node.name}() takes {wanted}, got {len(args)}", node.pos)
    return build(*args)
