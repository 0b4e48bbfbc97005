"""How much can be offloaded before a step slows down: closed forms per offloaded op.

With a fraction f of an op's weights streamed from host memory (graph.passes.offload), its
memory-side time is linear in f,

    M(f) = M(0) + f W (1 / B_host - 1 / B),

for W the bytes of its weights, while its compute time C does not move. With the transfers
overlapping the kernel, the op keeps its time while M(f) <= max(C, M(0)), so the largest free
fraction is

    f* = (C - M(0)) / (M(1) - M(0)),   clipped to [0, 1],

a formula in the batch (C grows with it; M(0) slowly). f* = 0 while the op is memory-bound
(every offloaded byte costs time), and f* = 1 from the batch where C = M(1): that is where the
fully offloaded op turns compute-bound (about peak / B_host sequences for a 16-bit linear). The
step keeps its time while every op does: the step's free fraction is the least f* of its ops
whose weights matter. An op holding under NEGLIGIBLE of the selected weights (a norm's gain
vector) is answered but left out of that least: offloading its few bytes cannot slow a step
by more than their own transfer, and with it in the least the answer would be 0 whenever a
memory-bound norm is selected by a pattern such as "layers.*".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import sympy

from .crossover import bracketed_root
from .roofline import StageRoofline
from .. import symbols as S


NEGLIGIBLE = 1e-3
"""An op's share of the selected weights below which it does not limit the stage's answer."""


@dataclass(frozen=True)
class OffloadAnswer:
    op: str
    repeat: sympy.Expr
    fraction: sympy.Expr           # f*(batch), the other symbols bound, before clipping
    value: float                   # f* at the batch asked, in [0, 1]
    free_from: float | None        # batch from which the whole of it is free (f* = 1)
    weight_share: float = 1.0      # its share of the offloaded ops' parameters
    negligible: bool = False       # weight_share < NEGLIGIBLE: not in the stage's least


@dataclass(frozen=True)
class StageOffload:
    """The stage's answer: the least f* over the ops that matter, and from which batch all of
    the selected weights are free (None where some op never gets there)."""
    value: float | None
    limited_by: str | None
    all_free_from: float | None
    left_out: tuple[str, ...]      # negligible ops, named so the answer says so


def stage_offload(answers: list[OffloadAnswer]) -> StageOffload:
    counted = [a for a in answers if not a.negligible]
    left_out = tuple(a.op for a in answers if a.negligible)
    if not counted:
        return StageOffload(None, None, None, left_out)
    least = min(counted, key=lambda a: a.value)
    frees = [a.free_from for a in counted]
    return StageOffload(least.value, least.op,
                        max(frees) if all(f is not None for f in frees) else None, left_out)


def offload_answers(stage: StageRoofline, f: sympy.Symbol,
                    values: Mapping[sympy.Symbol, float]) -> list[OffloadAnswer]:
    """Per op whose transfers `f` scales: f* as a formula in batch and its value at
    values[batch]; `stage` is the roofline with the offloaded fraction left as the symbol f."""
    bound = {k: sympy.Float(v) for k, v in values.items() if k != S.batch}
    found = []
    for op in stage.ops:
        memory = sympy.sympify(op.memory_time).xreplace(bound)
        if f not in memory.free_symbols or op.serial:
            continue
        compute = sympy.sympify(op.compute_time).xreplace(bound)
        m0, m1 = memory.subs(f, 0), memory.subs(f, 1)
        fraction = sympy.simplify((compute - m0) / (m1 - m0))
        at = float(fraction.subs(S.batch, values[S.batch]))
        weights = float(sympy.sympify(op.node.params * op.node.repeat).xreplace(bound))
        found.append((op.node, fraction, at, weights))
    total = sum(w for *_, w in found) or 1.0
    return [OffloadAnswer(node.name, node.repeat, fraction, min(1.0, max(0.0, at)),
                          _free_from(fraction), weights / total, weights / total < NEGLIGIBLE)
            for node, fraction, at, weights in found]


def _free_from(fraction: sympy.Expr) -> float | None:
    """The batch where f*(batch) reaches 1 (None when it never does below 1e9)."""
    return bracketed_root(fraction - 1, S.batch, 1.0, float(S.MAX_SIZE))
