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
a warning); a cache directory that is not the user's own, or is writable by others, is not used.

    COSTDSL_CACHE=/path      where entries live (default $XDG_CACHE_HOME/costdsl or ~/.cache/costdsl)
    COSTDSL_NO_CACHE=1       no cache at all (`costdsl --no-cache ...` sets it)
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import sys
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import sympy

from ..version import __version__

SCHEMA = 2  # 2: entries carry their key and a digest of their content


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


_NUMBER = re.compile(r"^-?[0-9]+(/[0-9]+)?$")
_FLOAT = re.compile(r"^-?(inf|nan|[0-9.]+(e[-+]?[0-9]+)?)$")
_COMPARE = {"gt": " > ", "ge": " >= ", "lt": " < ", "le": " <= "}


class CorruptEntry(Exception):
    pass


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
    source = f"def _f({', '.join(names.values())}):\n    return {body}\n"
    scope = {"_np": np, "_m": math, "_float": float, "max": max, "min": min, "abs": abs,
             "__builtins__": {}}
    exec(compile(source, "<costdsl compiled expression>", "exec"), scope)  # our own source
    return scope["_f"]


# --- the cache -------------------------------------------------------------------------------------

def cache_dir() -> Path | None:
    """The cache directory, or None when disabled or unsafe to use."""
    return cache_status()[0]


def cache_status() -> tuple[Path | None, str]:
    """(the cache directory or None, why it is off: "" when on)."""
    if os.environ.get("COSTDSL_NO_CACHE"):
        return None, "COSTDSL_NO_CACHE is set (or --no-cache was given)"
    base = os.environ.get("COSTDSL_CACHE")
    if base:
        path = Path(base)
    else:
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(root) / "costdsl"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
    except OSError as err:
        what = "is a file, not a directory" if path.is_file() else \
            f"cannot be made ({err.strerror or err})"
        return None, f"{path} {what}"
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        # someone else's, or writable by others: entries could be planted
        return None, f"{path} is not private to you (owned by another user or writable by others)"
    return path, ""


def _digest(key: str, symbols, trees) -> str:
    """What an entry must hash to: its key and its content (a changed digit, a swapped tree or
    an entry copied under another key is caught on read and rebuilt)."""
    text = json.dumps([key, symbols, trees], separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The package's modules as (path, size, mtime) stats: the cost rules an entry was made by.
    Stats, not contents: a few hundred microseconds once per process, and a reinstall that
    changes nothing costs one rebuild, not a wrong answer."""
    root = Path(__file__).resolve().parent.parent
    stats = []
    for path in sorted(root.rglob("*.py")):
        info = path.stat()
        stats.append((str(path.relative_to(root)), info.st_size, info.st_mtime_ns))
    return hashlib.sha256(repr(stats).encode()).hexdigest()


def key_of(parts) -> str:
    text = json.dumps([SCHEMA, __version__, code_fingerprint(), parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def cached_functions(parts, build: Callable[[], tuple[list[str], list]]
                     ) -> tuple[list[str], list[Callable]] | None:
    """(symbol names, one numpy function per expression) for the inputs `parts` describe:
    read from the cache, or made by `build()` (-> symbol names, expressions) and stored. None
    when the expressions have a node the tree form does not cover (compile them as before)."""
    directory = cache_dir()
    key = key_of(parts)
    path = directory / f"{key}.json" if directory else None
    if path is not None and path.exists():
        try:
            return _read(path, key)
        except (OSError, ValueError, KeyError, TypeError, CorruptEntry, SyntaxError,
                ZeroDivisionError, RecursionError, MemoryError) as err:
            reason = type(err).__name__ if isinstance(err, (RecursionError, MemoryError)) \
                else str(err) or type(err).__name__
            print(f"costdsl: warning: cache entry {path.name} is unreadable ({reason}); "
                  "rebuilt", file=sys.stderr)
    symbols, expressions = build()
    try:
        trees = [to_tree(e) for e in expressions]
    except Unsupported:
        return None
    functions = [compile_tree(t, symbols) for t in trees]
    if path is not None:
        _store(path, {"schema": SCHEMA, "key": key, "symbols": symbols, "trees": trees,
                      "digest": _digest(key, symbols, trees)})
    return symbols, functions


def _read(path: Path, key: str) -> tuple[list[str], list[Callable]]:
    """An entry's functions, after checking its shape, its key and its digest."""
    entry = json.loads(path.read_text())
    if not isinstance(entry, dict) or entry.get("schema") != SCHEMA:
        raise CorruptEntry("not an entry of this costdsl")
    symbols, trees = entry["symbols"], entry["trees"]
    if not (isinstance(symbols, list) and all(isinstance(s, str) for s in symbols)
            and isinstance(trees, list)):
        raise CorruptEntry("malformed entry")
    if entry.get("key") != key or entry.get("digest") != _digest(key, symbols, trees):
        raise CorruptEntry("its digest does not match its content")
    return symbols, [compile_tree(t, symbols) for t in trees]


def _store(path: Path, entry: dict) -> None:
    """Write atomically (a reader never sees half an entry); a failure only skips caching."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass


def clear() -> int:
    """Remove every entry; the number removed."""
    directory = cache_dir()
    if directory is None:
        return 0
    removed = 0
    for entry in directory.glob("*.json"):
        try:
            entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed
