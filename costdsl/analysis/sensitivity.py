"""Sensitivity of stage time at an operating point: the elasticity d log t / d log x.

At the point, each op is on one side of its roofline, so the stage time is locally
t = sum over ops of repeat x (operations / (pi * peak) if compute-bound else
bytes / (beta * bandwidth)), with pi = beta = 1 the hardware as it is. The elasticity of t with
respect to x is x / t * dt/dx: +1 means time grows in proportion to x, 0 that x does not matter
here, -1 that doubling x halves the time (bandwidth for a memory-bound stage). This is the
derivative of the piecewise stage time of `crossover.piecewise_time`, taken on the active piece.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import sympy

from .evaluate import check_bound
from .roofline import StageRoofline
from .. import symbols as S

PEAK_SCALE = S.peak            # a scale on every peak: 1 is the hardware as it is
BANDWIDTH_SCALE = S.bandwidth  # likewise for bandwidth
KNOBS = (S.batch, S.seq, S.w_bits, S.a_bits, S.kv_bits, BANDWIDTH_SCALE, PEAK_SCALE)


@dataclass(frozen=True)
class Sensitivity:
    stage: str
    time_s: float
    elasticity: Mapping[str, float]
    local_time: sympy.Expr      # the active piece of the stage time, in the knobs


def local_time(stage: StageRoofline, values: Mapping[sympy.Symbol, float]) -> sympy.Expr:
    total = sympy.Integer(0)
    for op in stage.ops:
        ct, mt = op.compute_time, op.memory_time
        compute_wins = float(ct.subs(values)) > float(mt.subs(values))
        if op.overlap:
            total += op.node.repeat * (ct / PEAK_SCALE if compute_wins else mt / BANDWIDTH_SCALE)
        else:   # the kernel's traffic adds to its arithmetic: both knobs move it
            total += op.node.repeat * (ct / PEAK_SCALE + mt / BANDWIDTH_SCALE)
        total += op.node.repeat * op.launch  # a fixed cost: no knob moves it
    return total


def sensitivity(stage: StageRoofline, values: Mapping[sympy.Symbol, float]) -> Sensitivity:
    check_bound(sorted(set().union(*(sympy.sympify(o.compute_time + o.memory_time).free_symbols
                                      for o in stage.ops)) - {S.peak, S.bandwidth},
                       key=lambda s: s.name), values)
    point = {**values, PEAK_SCALE: 1, BANDWIDTH_SCALE: 1}
    t = local_time(stage, values)
    t_value = float(t.subs(point))
    elasticity = {}
    for x in KNOBS:
        elasticity[x.name] = float((x * sympy.diff(t, x) / t).subs(point))
    return Sensitivity(stage.stage, t_value, elasticity, t)
