"""Capacity questions, solved on the memory expressions: the largest batch that fits at a
context, the longest context that fits at a batch, and the context at which the KV cache
outweighs the weights.

Every memory term but the weights is proportional to batch (each sequence has its own cache
and activations), so memory = W + batch x per_sequence(seq), where per_sequence is the larger
over the stages of (KV cache + activation peak) of one sequence. Hence
    batch_max = floor((capacity - W) / per_sequence(seq)),
and seq_max solves W + batch x per_sequence(seq) = capacity (per piece of its min/max).
Where a term is not proportional to batch (a MoE's activations follow the experts a batch
touches, E (1 - (1 - k/E)^n)), batch_max is found by a numeric search over whole batches and
the answer says so; seq_max keeps its closed form at the given batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import sympy

from .crossover import _intervals, minmax_breakpoints, resolve_minmax, roots_in
from .evaluate import check_bound
from .memory import StageMemory, memory_symbols
from .. import symbols as S


@dataclass(frozen=True)
class Fit:
    capacity_bytes: float
    weights_bytes: float
    seq: int
    batch: int
    per_sequence: sympy.Expr | None   # bytes of one sequence, in seq (max over the stages);
                                      # None where memory is not proportional to batch
    per_sequence_bytes: float         # at `seq` (batch 1)
    max_batch: int                    # at `seq`; 0 when not even one sequence fits
    max_seq: int | None               # at `batch`; None: unbounded (no growth) or 0 fits
    max_seq_reason: str | None
    kv_crossover: sympy.Expr | None   # seq where the KV cache equals the weights (kv_bits free)
    kv_crossover_value: float | None
    kv_crossover_reason: str | None
    max_batch_method: str | None = None   # how max_batch was found where not in closed form
    devices: object = None                # records.Devices on a system: figures per device
    fused_max_batch: int | None = None    # the largest batch with flash_attention(), where the
                                          # unfused score matrix is what limits it


def _load(stages: Mapping[str, StageMemory], values) -> sympy.Expr:
    """KV cache + activation peak of the larger stage, in batch and seq (the rest bound)."""
    bound = {k: v for k, v in values.items() if k not in (S.batch, S.seq)}
    parts = [(m.kv_cache + m.activation_peak).subs(bound) for m in stages.values()]
    return sympy.Max(*parts) if len(parts) > 1 else parts[0]


def _per_sequence(stages: Mapping[str, StageMemory], values) -> sympy.Expr | None:
    """Bytes of one sequence, in seq, where every stage's memory is proportional to batch;
    None where it is not (a MoE's activations grow with the experts a batch touches)."""
    parts = []
    for m in stages.values():
        one = _load({m.stage: m}, values)
        two, one = one.subs(S.batch, 2), one.subs(S.batch, 1)
        probe = {S.seq: 1000}
        if abs(float(two.subs(probe)) - 2 * float(one.subs(probe))) > 1e-9 * float(two.subs(probe)):
            return None
        parts.append(one)
    return sympy.Max(*parts) if len(parts) > 1 else parts[0]


def _largest_batch(load_at_seq: sympy.Expr, free: float) -> int:
    """The largest integer batch whose load fits `free` bytes, by doubling then bisection (the
    load grows with batch): the fallback where no closed form in batch exists."""
    fn = sympy.lambdify([S.batch], load_at_seq, modules="math")
    if fn(1) > free:
        return 0
    low, high = 1, 2
    while high <= S.MAX_SIZE and fn(high) <= free:
        low, high = high, 2 * high
    if high > S.MAX_SIZE:
        return int(S.MAX_SIZE)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if fn(mid) <= free else (low, mid)
    return low


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


def _weights(stages: Mapping[str, StageMemory], bits) -> float:
    return float(next(iter(stages.values())).weights.subs(bits))


def _batch_answer(stages, values, capacity: float, seq: int):
    """(per_sequence, its bytes at seq, the largest batch, how it was found: None = closed)."""
    unbound = set().union(*(memory_symbols(m) for m in stages.values())) - {S.batch, S.seq}
    check_bound(sorted(unbound, key=lambda s: s.name), values)  # a family's free dimensions
    free = capacity - _weights(stages, {k: v for k, v in values.items()
                                        if k not in (S.batch, S.seq)})
    per_seq = _per_sequence(stages, values)
    if per_seq is not None:
        per_seq_at = float(per_seq.subs(S.seq, seq))
        return (per_seq, per_seq_at,
                max(0, math.floor(free / per_seq_at)) if per_seq_at > 0 else 0, None)
    at_seq = _load(stages, values).subs(S.seq, seq)
    return (None, float(at_seq.subs(S.batch, 1)), _largest_batch(at_seq, free),
            "memory is not proportional to batch (the activations grow with the experts a "
            "batch touches): the largest batch found by a numeric search")


def max_batch(stages: Mapping[str, StageMemory], values: Mapping[sympy.Symbol, float],
              capacity: float, seq: int) -> int:
    """The largest batch that fits at `seq`: fit's first answer alone (plans ask it per
    layout and need neither the longest context nor the KV crossover)."""
    return _batch_answer(stages, values, capacity, seq)[2]


def fit(stages: Mapping[str, StageMemory], values: Mapping[sympy.Symbol, float],
        capacity: float, seq: int, batch: int) -> Fit:
    """`values` binds the bitwidths (batch and seq are solved for or set here)."""
    # first: it checks that the family file's free dimensions are bound
    per_seq, per_seq_at, max_batch, method = _batch_answer(stages, values, capacity, seq)
    weights = _weights(stages, {k: v for k, v in values.items() if k not in (S.batch, S.seq)})
    load = _load(stages, values)
    max_seq, reason = _max_seq(load.subs(S.batch, batch), weights, capacity, batch)
    kv, kv_value, kv_reason = _kv_crossover(stages, values, batch, weights)
    return Fit(capacity, weights, seq, batch, per_seq, per_seq_at, max_batch, max_seq, reason,
               kv, kv_value, kv_reason, method)


def _max_seq(load_at_batch, weights, capacity, batch) -> tuple[int | None, str | None]:
    if weights >= capacity:
        return 0, "the weights alone exceed the memory"
    if float(load_at_batch.subs(S.seq, 1)) + weights > capacity:
        return 0, f"not even seq = 1 fits at batch {batch}"
    root = _first_root(weights + load_at_batch - capacity, S.seq)
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
