"""The pass registry: each pass is a pure function OpGraph -> OpGraph, registered by name with
the arguments it takes. `apply_passes` resolves the arguments of parsed pass calls (expressions
are built into sympy from the parse tree, in the model's parameters and the bitwidth symbols),
runs each pass on a copy of the graph, and checks the result with `graph.check`."""
from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import networkx as nx
import sympy

from ...language import ast
from ...errors import CostDSLError, at
from ...language.expr import to_sympy
from ..schema import check
from ... import symbols as S


class PassError(CostDSLError):
    label = "pass error"

    def __init__(self, message: str, *, arg: str | None = None, **kw):
        super().__init__(message, **kw)
        self.arg = arg  # the argument at fault, so that the message can point at it


@dataclass(frozen=True)
class Arg:
    """An argument a pass takes: `kind` says what values are valid.
    bits: a bitwidth in [1, 64] or a symbol; fraction: a number in [0, 1] or a symbol; count: a
    positive integer; size: a positive integer or a symbol (a model parameter left free); flag:
    0 or 1; pattern: a quoted string (op names or globs, or a word); degree: a size, or a new
    name (a parallel degree left free, as a symbol of that name)."""
    kind: str
    default: object = None
    help: str = ""


@dataclass(frozen=True)
class PassDef:
    name: str
    run: Callable[..., nx.DiGraph]   # run(graph, **args) -> graph
    args: Mapping[str, Arg] = field(default_factory=dict)
    doc: str = ""


PASSES: dict[str, PassDef] = {}


def register(name: str, **args: Arg):
    def add(fn):
        PASSES[name] = PassDef(name, fn, args, inspect.cleandoc(fn.__doc__ or ""))
        return fn
    return add


def _scope(graph: nx.DiGraph) -> dict[str, sympy.Expr]:
    """Names a pass argument may use: the model's parameters and the bitwidth symbols."""
    return {**graph.graph.get("params", {}),
            "w_bits": S.w_bits, "a_bits": S.a_bits, "kv_bits": S.kv_bits}


def _resolve(spec: Arg, arg: ast.PassArg, call: ast.PassCall, scope) -> object:
    where = f"{call.name}({arg.name}=...)"
    if spec.kind == "pattern":
        if not isinstance(arg.value, str):
            raise at(PassError, f"{where} takes a quoted string of op names or patterns",
                     arg.pos, hint=f'e.g. {arg.name}="layers.gate,layers.up"')
        return arg.value
    if isinstance(arg.value, (str, tuple)):
        raise at(PassError, f"{where} takes a number, not a string or a list", arg.pos)
    if spec.kind == "degree" and isinstance(arg.value, ast.Name) and arg.value.id not in scope:
        return S.model_param(arg.value.id)  # a parallel degree left free: crossover --solve it
    if spec.kind == "flag":  # true / false read as 1 / 0
        scope = {**scope, "true": sympy.Integer(1), "false": sympy.Integer(0)}
    value = to_sympy(arg.value, scope)
    if spec.kind == "bits":
        if value.is_number and not S.is_bitwidth(value):
            raise at(PassError, f"{where}: a bitwidth must be in {S.BITS_RANGE}, got {value}",
                     arg.pos)
        return value
    if spec.kind == "fraction":  # a number in [0, 1], or a model parameter left free
        if value.is_number and not 0 <= value <= 1:
            raise at(PassError, f"{where}: a fraction must be in [0, 1], got {value}", arg.pos)
        return value
    if spec.kind in ("size", "degree"):  # a positive integer, or a symbol
        if value.is_number and not (value.is_integer and value > 0):
            raise at(PassError, f"{where} must be a positive integer, got {value}", arg.pos)
        return value
    if not value.is_number:
        raise at(PassError, f"{where} must be a number, got {value}", arg.pos)
    if spec.kind == "count" and not (value.is_integer and value > 0):
        raise at(PassError, f"{where} must be a positive integer, got {value}", arg.pos)
    if spec.kind == "flag" and value not in (0, 1):
        raise at(PassError, f"{where} must be 0 or 1 (false or true), got {value}", arg.pos)
    return int(value) if spec.kind == "flag" else value


def resolve_args(call: ast.PassCall, graph: nx.DiGraph) -> tuple[PassDef, dict]:
    if call.name not in PASSES:
        close = difflib.get_close_matches(call.name, PASSES, 1)
        raise at(PassError, f"unknown pass {call.name!r}", call.pos,
                 hint=(f"did you mean {close[0]!r}? " if close else "") +
                 "passes: " + ", ".join(sorted(PASSES)))
    spec = PASSES[call.name]
    values = {name: a.default for name, a in spec.args.items()}
    scope = _scope(graph)
    seen = set()
    for arg in call.args:
        if arg.name not in spec.args:
            raise at(PassError, f"{call.name}() takes no argument {arg.name!r}", arg.pos,
                     hint="arguments: " + (", ".join(spec.args) or "none"))
        if arg.name in seen:
            raise at(PassError, f"{call.name}(): argument {arg.name!r} given twice", arg.pos)
        seen.add(arg.name)
        values[arg.name] = _resolve(spec.args[arg.name], arg, call, scope)
    return spec, values


def apply_pass(graph: nx.DiGraph, call: ast.PassCall) -> nx.DiGraph:
    spec, values = resolve_args(call, graph)
    try:
        out = spec.run(graph, **values)
    except PassError as err:
        if err.file is None:  # point at the argument, or the pass call, that failed
            pos = next((a.pos for a in call.args if a.name == err.arg), call.pos)
            raise at(PassError, err.message, pos, err.hint) from None
        raise
    out.graph["passes"] = list(graph.graph.get("passes", [])) + [call.text or call.name]
    for name in set(out.nodes) - set(graph.nodes):  # what this pass made remembers the call
        node = out.nodes[name]["op"]
        if node.origin is None:
            out.nodes[name]["op"] = replace(node, origin=call)
    return check(out)


def apply_passes(graph: nx.DiGraph, calls) -> nx.DiGraph:
    for call in calls:
        graph = apply_pass(graph, call)
    return graph
