"""Expression trees to code: the tree form of analysis.compiled (["add", ...], ["s", "batch"],
["q", "3/8"]) turned into Python source we generate, node by node checked, and compiled into a
numpy function (grids) or a float function (one point). No sympy here: a command answered from
the cache compiles its stored trees without loading the compiler."""
from __future__ import annotations

import math
import re
from fractions import Fraction
from typing import Callable, Sequence

import numpy as np

_NUMBER = re.compile(r"^-?[0-9]+(/[0-9]+)?$")
_FLOAT = re.compile(r"^-?(inf|nan|[0-9.]+(e[-+]?[0-9]+)?)$")
_COMPARE = {"gt": " > ", "ge": " >= ", "lt": " < ", "le": " <= "}


class CorruptEntry(ValueError):
    """A stored tree or record that is not what costdsl writes (a ValueError: the cache
    rebuilds what raises it)."""


class _Numpy:
    """How the numpy source spells each node: arrays in, arrays out (grids)."""
    nary = {"add": " + ", "mul": " * ", "and": " & ", "or": " | "}
    functions = {"ceil": "_np.ceil", "floor": "_np.floor", "log": "_np.log", "exp": "_np.exp",
                 "abs": "_np.abs"}

    @staticmethod
    def float(text: str) -> str:
        return f"_np.float64({text!r})"

    inf = "_np.inf"

    @staticmethod
    def reduce(op: str, parts: list[str]) -> str:
        out = parts[0]
        for part in parts[1:]:
            out = f"_np.{'maximum' if op == 'max' else 'minimum'}({out}, {part})"
        return out

    @staticmethod
    def power(base: str, exponent: str) -> str:
        return f"_np.power({base}, {exponent})"

    @staticmethod
    def piecewise(pieces: list[tuple[str, str]]) -> str:
        values = ", ".join(f"_np.asarray({e}, dtype=_np.float64)" for e, _ in pieces)
        conditions = ", ".join(f"_np.asarray({c}, dtype=_np.bool_)" for _, c in pieces)
        return f"_np.select(_np.broadcast_arrays({conditions}), " \
               f"_np.broadcast_arrays({values}), _np.nan)"


class _Scalar:
    """How the scalar source spells each node: floats and the math module, conditional
    expressions for pieces. A serving simulation calls one iteration's cost thousands of times
    on one point, where numpy's per-call overhead would be most of the time."""
    nary = {"add": " + ", "mul": " * ", "and": " and ", "or": " or "}
    functions = {"ceil": "_m.ceil", "floor": "_m.floor", "log": "_m.log", "exp": "_m.exp",
                 "abs": "abs"}

    @staticmethod
    def float(text: str) -> str:
        return f"_float({text!r})"

    inf = "_float('inf')"

    @staticmethod
    def reduce(op: str, parts: list[str]) -> str:
        return f"{op}(" + ", ".join(parts) + ")" if len(parts) > 1 else parts[0]

    @staticmethod
    def power(base: str, exponent: str) -> str:
        return f"(({base}) ** ({exponent}))"

    @staticmethod
    def piecewise(pieces: list[tuple[str, str]]) -> str:
        out = "_float('nan')"
        for e, c in reversed(pieces):
            out = f"({e} if {c} else {out})"
        return out


def to_source(tree, names: dict[str, str], depth: int = 0, dialect=_Numpy) -> str:
    """Python source for a tree (numpy, or with `dialect=_Scalar` plain floats), every node
    checked: an unknown operator, a malformed number or a symbol outside `names` (symbol
    name -> argument name) is CorruptEntry."""
    if depth > 200 or not isinstance(tree, list) or not tree or not isinstance(tree[0], str):
        raise CorruptEntry("malformed node")
    op, args = tree[0], tree[1:]
    if op == "s":
        if len(args) != 1 or args[0] not in names:
            raise CorruptEntry(f"unknown symbol {args!r}")
        return names[args[0]]
    if op == "q":
        if len(args) != 1 or not isinstance(args[0], str) or not _NUMBER.match(args[0]):
            raise CorruptEntry("malformed number")
        value = Fraction(args[0])
        return repr(float(value)) if value.denominator != 1 else f"{value.numerator}.0"
    if op == "f":
        if len(args) != 1 or not isinstance(args[0], str) or not _FLOAT.match(args[0]):
            raise CorruptEntry("malformed number")
        return dialect.float(args[0])
    if op == "inf":
        return dialect.inf
    if op == "true":
        return "True"
    sub = lambda t: to_source(t, names, depth + 1, dialect)
    if op in dialect.nary and args:
        return "(" + dialect.nary[op].join(sub(a) for a in args) + ")"
    if op in ("max", "min") and args:
        return dialect.reduce(op, [sub(a) for a in args])
    if op in dialect.functions and len(args) == 1:
        return f"{dialect.functions[op]}({sub(args[0])})"
    if op in _COMPARE and len(args) == 2:
        return f"({sub(args[0])}{_COMPARE[op]}{sub(args[1])})"
    if op == "pow" and len(args) == 2:
        return dialect.power(sub(args[0]), sub(args[1]))
    if op == "pw" and args and all(isinstance(a, list) and len(a) == 2 for a in args):
        return dialect.piecewise([(sub(e), sub(c)) for e, c in args])
    raise CorruptEntry(f"unknown operator {op!r}")


def compile_tree(tree, symbols: Sequence[str], scalar: bool = False) -> Callable:
    """A numpy function of the symbols (in order) computing the tree; `scalar`: a function of
    floats (the math module), several times faster per call on one point."""
    names = {s: f"_a{i}" for i, s in enumerate(symbols)}
    body = to_source(tree, names, dialect=_Scalar if scalar else _Numpy)
    return function_of(f"def _f({', '.join(names.values())}):\n    return {body}\n")


def function_of(source: str) -> Callable:
    """The function `_f` that `source` (generated by costdsl, never read from a file) defines,
    in a scope of numpy, math and the few builtins the dialects use."""
    scope = {"_np": np, "_m": math, "_float": float, "max": max, "min": min, "abs": abs,
             "_inf": math.inf, "__builtins__": {}}
    exec(compile(source, "<costdsl compiled expression>", "exec"), scope)  # our own source
    return scope["_f"]


def compile_trees(trees: Sequence, symbols: Sequence[str], scalar: bool = False) -> Callable:
    """One function of the symbols (in order) returning every tree's value, as a tuple: a
    stage's rows in one call instead of one call per row."""
    names = {s: f"_a{i}" for i, s in enumerate(symbols)}
    dialect = _Scalar if scalar else _Numpy
    body = "".join(to_source(t, names, dialect=dialect) + ", " for t in trees)
    return function_of(f"def _f({', '.join(names.values())}):\n    return ({body})\n")
