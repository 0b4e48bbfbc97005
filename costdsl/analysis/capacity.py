"""Capacity questions, solved on the memory expressions: the largest batch that fits at a
context, the longest context that fits at a batch, and the context at which the KV cache
outweighs the weights.

Every memory term but the weights is proportional to batch (each sequence has its own cache
and activations), so memory = W + batch x per_sequence(seq), where per_sequence is the larger
over the stages of (KV cache + activation peak) of one sequence. Hence
    batch_max = floor((capacity - W) / per_sequence(seq)),
and seq_max solves W + batch x per_sequence(seq) = capacity (per piece of its min/max).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import sympy

from .crossover import _intervals, minmax_breakpoints, resolve_minmax, roots_in
from ..errors import EvaluationError
from .evaluate import check_bound
from .memory import StageMemory, memory_symbols
from .. import symbols as S


@dataclass(frozen=True)
class Fit:
    capacity_bytes: float
    weights_bytes: float
    seq: int
    batch: int
    per_sequence: sympy.Expr          # bytes of one sequence, in seq (max over the stages)
    per_sequence_bytes: float         # at `seq`
    max_batch: int                    # at `seq`; 0 when not even one sequence fits
    max_seq: int | None               # at `batch`; None: unbounded (no growth) or 0 fits
    max_seq_reason: str | None
    kv_crossover: sympy.Expr | None   # seq where the KV cache equals the weights (kv_bits free)
    kv_crossover_value: float | None
    kv_crossover_reason: str | None


def _per_sequence(stages: Mapping[str, StageMemory], values) -> sympy.Expr:
    bound = {k: v for k, v in values.items() if k not in (S.batch, S.seq)}
    parts = []
    for m in stages.values():
        one = (m.kv_cache + m.activation_peak).subs(bound)
        two = one.subs(S.batch, 2)
        one = one.subs(S.batch, 1)
        probe = {S.seq: 1000}
        if abs(float(two.subs(probe)) - 2 * float(one.subs(probe))) > 1e-9 * float(two.subs(probe)):
            raise EvaluationError(f"the {m.stage} memory is not proportional to batch; "
                                  "fit cannot use its closed form")
        parts.append(one)
    return sympy.Max(*parts) if len(parts) > 1 else parts[0]


def _first_root(expr: sympy.Expr, x: sympy.Symbol, numbers=None):
    """(root, value) of the smallest positive root of expr in x, piece by piece of its
    min()/max(); None if there is none. Symbols in `numbers` stay in the root's expression
    and are substituted in its value."""
    numbers = numbers or {}
    for low, high, probe in _intervals(minmax_breakpoints(expr.subs(numbers), x)):
        piece = resolve_minmax(expr, x, probe)
        found = [(root, float(v)) for root, v, _ in roots_in(piece, x, numbers, low, high)
                 if v.is_number]
        if found:
            return min(found, key=lambda rv: rv[1])
    return None


def fit(stages: Mapping[str, StageMemory], values: Mapping[sympy.Symbol, float],
        capacity: float, seq: int, batch: int) -> Fit:
    """`values` binds the bitwidths (batch and seq are solved for or set here)."""
    bits = {k: v for k, v in values.items() if k not in (S.batch, S.seq)}
    free = set().union(*(memory_symbols(m) for m in stages.values())) - {S.batch, S.seq}
    check_bound(sorted(free, key=lambda s: s.name), bits)  # a family file's free dimensions
    weights = float(next(iter(stages.values())).weights.subs(bits))
    per_seq = _per_sequence(stages, values)
    per_seq_at = float(per_seq.subs(S.seq, seq))
    free = capacity - weights
    max_batch = max(0, math.floor(free / per_seq_at)) if per_seq_at > 0 else 0
    max_seq, reason = _max_seq(per_seq, weights, capacity, batch)
    kv, kv_value, kv_reason = _kv_crossover(stages, values, batch, weights)
    return Fit(capacity, weights, seq, batch, per_seq, per_seq_at, max_batch, max_seq, reason,
               kv, kv_value, kv_reason)


def _max_seq(per_seq, weights, capacity, batch) -> tuple[int | None, str | None]:
    if weights >= capacity:
        return 0, "the weights alone exceed the memory"
    if float(per_seq.subs(S.seq, 1)) * batch + weights > capacity:
        return 0, f"not even seq = 1 fits at batch {batch}"
    root = _first_root(weights + batch * per_seq - capacity, S.seq)
    if root is None:
        return None, ("memory stops growing with seq (a sliding window or a recurrent state): "
                      "every context fits")
    return math.floor(root[1]), None


def _kv_crossover(stages, values, batch, weights):
    """seq at which the decode KV cache equals the weights, with kv_bits kept free."""
    decode = stages.get("decode") or next(iter(stages.values()))
    keep = {k: v for k, v in values.items() if k not in (S.seq, S.kv_bits)}
    kv = decode.kv_cache.subs({**keep, S.batch: batch})
    w = decode.weights.subs(keep)
    if kv == 0:
        return None, None, "the model keeps no KV cache"
    root = _first_root(kv - w, S.seq, {S.kv_bits: values[S.kv_bits]})
    if root is not None:
        return sympy.expand(root[0]), root[1], None
    cap = float(kv.subs(S.kv_bits, values[S.kv_bits]).subs(S.seq, 10**12))
    return None, None, (f"the KV cache never outweighs the weights: it stops growing at "
                        f"{cap:.4g} bytes (a window or a recurrent state), below "
                        f"{weights:.4g}")
