"""Numbers last: substitute values into a stage's expressions, vectorised with numpy.

Each stage is compiled once into a program (analysis.programs: every op's operations, bytes by
class and repeat count as one generated function of the symbols, from the stage's expression
trees); all derived numbers (intensity, times, bound) are then array arithmetic
(analysis.numbers), so the same path serves one configuration, a grid of a million, and a
command answered from the cache without the compiler.
"""
from __future__ import annotations

import functools
from typing import Mapping

import numpy as np
import sympy

from ..limits import STEP_STAGES
from .compiled import Unsupported, cached_functions
from .export import stage_record, stage_rows
from .programs import StageProgram
from .numbers import StageNumbers, bound_args, check_bound, check_named  # noqa: F401
from .roofline import StageRoofline


@functools.lru_cache(maxsize=64)
def program_of(stage: StageRoofline) -> StageProgram:
    """The stage's program (analysis.programs), compiled once: from its record's trees, or with
    sympy's lambdify where an expression has a node the tree form lacks."""
    try:
        return StageProgram(stage_record(stage))
    except Unsupported:
        symbols, rows = stage_rows(stage)
        record = stage_record(stage, trees=False)
        return StageProgram(record, sympy.lambdify(symbols, rows, modules="math"),
                            sympy.lambdify(symbols, rows, modules="numpy"))


def evaluate(stage: StageRoofline, values: Mapping[sympy.Symbol, object]) -> StageNumbers:
    """Substitute `values` (numbers or numpy arrays, broadcast together) into every op."""
    return program_of(stage).numbers({s.name: v for s, v in values.items()})


def _compute_bound_time(stage: StageRoofline) -> sympy.Expr:
    """Time spent in ops that are compute-bound: sum of repeat x compute time where it wins."""
    return stage.steps * sympy.Add(*(o.node.repeat * sympy.Piecewise(
        (o.compute_time + o.launch + o.serial_work + (0 if o.overlap else o.memory_time),
         o.compute_time > o.memory_time), (0, True))
        for o in stage.ops if o.compute_type))


_EXPRESSIONS = {"time": lambda st: st.time, "compute_bound_time": _compute_bound_time}


def total_expression(stage: StageRoofline, what: str) -> sympy.Expr:
    """The stage's "time" or "compute_bound_time" as one expression."""
    return _EXPRESSIONS[what](stage)


class GridFunctions:
    """A stage's grid functions (analysis.compiled): time, compute-bound time and the memory
    rows, each a numpy function of the named symbols; None when compiled the sympy way."""

    def __init__(self, compiled):
        self.available = compiled is not None
        self.names, self.functions = compiled if compiled else ([], [])

    def __call__(self, i: int, values: Mapping[sympy.Symbol, object]) -> np.ndarray:
        by_name = {s.name: v for s, v in values.items()}
        check_named(self.names, by_name)
        args = [np.asarray(by_name[n], dtype=float) for n in self.names]
        shape = np.broadcast_shapes(*(a.shape for a in args)) if args else ()
        return np.broadcast_to(np.asarray(self.functions[i](*args), dtype=float), shape)


@functools.lru_cache(maxsize=128)
def _compiled_total(stage: StageRoofline, what: str) -> GridFunctions:
    """The stage's `what` as a grid function: from the persistent cache where the stage carries
    the key of its inputs (Model's rooflines do), else compiled with sympy."""
    def build():
        expr = _EXPRESSIONS[what](stage)
        return sorted(s.name for s in sympy.sympify(expr).free_symbols), [expr]
    if stage.cache_key is not None:
        cached = cached_functions(stage.cache_key + (what,), build)
        if cached is not None:
            return GridFunctions(cached)
    names, (expr,) = build()
    symbols = sorted(sympy.sympify(expr).free_symbols, key=lambda s: s.name)
    return GridFunctions((names, [sympy.lambdify(symbols, expr, modules="numpy")]))


def _grid_total(stage: StageRoofline, what: str, values) -> np.ndarray:
    return _compiled_total(stage, what)(0, values)


def tokens_processed(stage: str, batch, seq, tokens=1):
    """Tokens a stage handles: every prompt position in prefill, one per sequence in decode,
    `tokens` per sequence in the general step."""
    if stage == "prefill":
        return batch * seq
    return batch * tokens if stage in STEP_STAGES else batch


def stage_time(stage: StageRoofline, values: Mapping[sympy.Symbol, object]) -> np.ndarray:
    """The stage's total time over a grid, without per-op arrays: one lambdified expression
    (sum of repeat x max(compute, memory) time), so memory stays that of a few grid arrays.
    The path for sweeps; `evaluate` gives the per-op numbers that tables need."""
    return _grid_total(stage, "time", values)


def compute_bound_share(stage: StageRoofline, values: Mapping[sympy.Symbol, object],
                        total: np.ndarray | None = None) -> np.ndarray:
    """The fraction of the stage's time spent in compute-bound ops, over a grid (the bound
    mix: 0 all memory-bound, 1 all compute-bound). `total`: the stage time over the same grid,
    where the caller has it already."""
    total = stage_time(stage, values) if total is None else total
    return _grid_total(stage, "compute_bound_time", values) / total
