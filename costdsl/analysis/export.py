"""A stage's per-op numbers as plain data, for a page that evaluates them itself (`report
--live`): the rows `evaluate` computes (repeat, operations, bytes by class, vector operations,
transfers, occupancy, GEMM waves), each an expression tree (analysis.compiled), and the rates
each op runs at (peak, bandwidth, vector peak, launch cost, a decode attention kernel's split
regime, overlap, channel).

The page repeats evaluate.StageNumbers' few lines of arithmetic on them (compute time, memory
time, time, bound, the stage total), so it shows the CLI's numbers, not an approximation.
"""
from __future__ import annotations

import functools
import math

import numpy as np

import sympy

from .compiled import Unsupported, to_tree
from .. import symbols as S
from .memory import memory_rows, memory_symbols
from .roofline import StageRoofline
from ..graph.schema import CLASSES


@functools.lru_cache(maxsize=64)
def stage_rows(stage: StageRoofline):
    """Per stage: the symbols and the rows [repeat..., flops..., bytes by class...,
    vector flops..., transfers..., occupancy..., waves..., serial work...] of every op (serial
    work: the prologue and epilogue, roofline.OpRoofline.serial_work)."""
    rows = [o.node.repeat for o in stage.ops] + [o.flops for o in stage.ops]
    for cls in CLASSES:
        rows += [o.bytes_by_class[cls] for o in stage.ops]
    rows += [o.vector_flops for o in stage.ops]
    rows += [o.overlapped_transfer for o in stage.ops] + [o.serial_transfer for o in stage.ops]
    rows += [o.occupancy for o in stage.ops] + [o.waves for o in stage.ops]
    rows += [o.serial_work for o in stage.ops]
    rows = [sympy.sympify(r) for r in rows]
    symbols = sorted(set().union(*(r.free_symbols for r in rows)), key=lambda s: s.name)
    return symbols, rows


@functools.lru_cache(maxsize=64)
def static_numbers(stage: StageRoofline) -> dict:
    """What of a stage's numbers no value changes: names, kinds, and the hardware's rates."""
    ops = stage.ops
    return dict(names=tuple(o.node.name for o in ops), kinds=tuple(o.node.kind for o in ops),
                compute_types=tuple(o.compute_type for o in ops),
                peak=np.array([o.peak for o in ops]), bandwidth=np.array([o.bandwidth for o in ops]),
                vector_peak=np.array([o.vector_peak for o in ops]),
                launch=np.array([o.launch for o in ops]),
                split_launch=np.array([o.split[0] if o.split else math.inf for o in ops]),
                split_ratio=np.array([o.split[1] if o.split else 1.0 for o in ops]),
                floor=np.array([o.floor for o in ops]),
                overlap=np.array([o.overlap for o in ops]),
                fused_from=tuple(o.node.fused_from for o in ops),
                channels=tuple(o.channel for o in ops))



def _number(x: float) -> float | str:
    """JSON has no infinity: an op without arithmetic has peak "inf"."""
    x = float(x)
    return "inf" if math.isinf(x) else x


def stage_record(stage: StageRoofline, trees: bool = True) -> dict:
    """The stage as data (analysis.programs reads it): its rows as trees (Unsupported where
    an expression has a node the tree form lacks; `trees=False`: without them) and the rest."""
    symbols, rows = stage_rows(stage)
    fixed = static_numbers(stage)
    return {"stage": stage.stage, "symbols": [s.name for s in symbols],
            "classes": list(CLASSES), **({"rows": [to_tree(r) for r in rows]} if trees else {}),
            "names": list(fixed["names"]), "kinds": list(fixed["kinds"]),
            "fused_from": [list(f) for f in fixed["fused_from"]],
            "compute_types": [t or "" for t in fixed["compute_types"]],
            "channels": [c or "" for c in fixed["channels"]],
            **{k: [_number(v) for v in fixed[k]] for k in
               ("peak", "bandwidth", "vector_peak", "launch", "split_launch", "split_ratio",
                "floor")},
            "overlap": [bool(v) for v in fixed["overlap"]],
            "schedule": list(stage.schedule), "server": [float(v) for v in stage.server]}


def memory_trees(memory) -> dict:
    """Weights, KV cache, activation peak and host bytes of one device, as trees in their
    symbols (analysis.programs)."""
    return {"symbols": [s.name for s in memory_symbols(memory)],
            "rows": [to_tree(r) for r in memory_rows(memory)]}


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
