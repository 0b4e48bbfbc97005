"""A stage's per-op numbers as plain data, for a page that evaluates them itself (`report
--live`): the rows `evaluate` computes (repeat, operations, bytes by class, vector operations,
transfers, occupancy, GEMM waves), each an expression tree (analysis.compiled), and the rates
each op runs at (peak, bandwidth, vector peak, launch cost, overlap, channel).

The page repeats evaluate.StageNumbers' few lines of arithmetic on them (compute time, memory
time, time, bound, the stage total), so it shows the CLI's numbers, not an approximation.
"""
from __future__ import annotations

import math

import sympy

from .compiled import Unsupported, to_tree
from .. import symbols as S
from .evaluate import stage_rows, static_numbers
from .memory import memory_rows
from .roofline import StageRoofline
from ..graph.schema import CLASSES


def _number(x: float) -> float | str:
    """JSON has no infinity: an op without arithmetic has peak "inf"."""
    x = float(x)
    return "inf" if math.isinf(x) else x


def stage_record(stage: StageRoofline) -> dict:
    symbols, rows = stage_rows(stage)
    fixed = static_numbers(stage)
    return {"symbols": [s.name for s in symbols], "classes": list(CLASSES),
            "rows": [to_tree(r) for r in rows],
            "names": list(fixed["names"]), "kinds": list(fixed["kinds"]),
            "compute_types": [t or "" for t in fixed["compute_types"]],
            "channels": [c or "" for c in fixed["channels"]],
            **{k: [_number(v) for v in fixed[k]] for k in
               ("peak", "bandwidth", "vector_peak", "launch")},
            "overlap": [bool(v) for v in fixed["overlap"]],
            "schedule": list(stage.schedule)}


def memory_record(memory) -> list:
    """Weights, KV cache and activation peak of one device, as trees."""
    return [to_tree(r) for r in memory_rows(memory)[:3]]


def crossover_records(crossovers, bandwidth: dict[str, float]) -> list[dict]:
    """Each op's crossover as a tree in the symbols left free, the op's peak and bandwidth put
    in (the printed form keeps them as symbols); ops without one, or with a root the tree form
    lacks, are left out."""
    out = []
    for c in crossovers:
        if c.expression is None or c.ridge is None or c.op not in bandwidth:
            continue
        b = bandwidth[c.op]
        expr = sympy.sympify(c.expression).subs({S.peak: c.ridge * b, S.bandwidth: b})
        try:
            out.append({"op": c.op, "tree": to_tree(expr), "direction": c.direction or ""})
        except Unsupported:
            continue
    return out
