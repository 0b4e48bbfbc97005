"""The time of one all-reduce as a stack runs it: a Piecewise in the message size (and in the
group size where that is free), each piece an algorithm's alpha-beta closed form.

    t(S, n) = latency + steps(n) x step_latency + sent(S, n) / (efficiency x B)

for the algorithm whose `up_to` is the first at or above S (hardware.collectives), NCCL's ring
over the link above them all. The pieces stay closed forms, so `crossover --solve batch` and
`--solve tp` see the switch as a breakpoint, not a loop.
"""
from __future__ import annotations

import sympy

from ..graph.costs import all_reduce_terms
from ..hardware.collectives import Algorithm, AllReduce
from ..symbols import exact


def all_reduce_time(table: AllReduce, message: sympy.Expr, n: sympy.Expr, bandwidth: float,
                    ring: sympy.Expr) -> sympy.Expr:
    """Seconds for an all-reduce of `message` bytes over `n` devices under `table`; `ring` is the
    time of the link's own (NCCL) ring, used above the largest `up_to`."""
    n = sympy.sympify(n)
    if n.is_number:
        return _by_size(table.for_group(int(n)), message, n, bandwidth, ring)
    pieces = [(_by_size(algorithms, message, n, bandwidth, ring), n <= size)
              for size, algorithms in table.groups[:-1]]
    return sympy.Piecewise(*pieces, (_by_size(table.groups[-1][1], message, n, bandwidth, ring),
                                      True))


def _by_size(algorithms: tuple[Algorithm, ...], message: sympy.Expr, n: sympy.Expr,
             bandwidth: float, ring: sympy.Expr) -> sympy.Expr:
    pieces = [(_time(a, message, n, bandwidth),
               message <= exact(a.up_to_bytes) if a.up_to_bytes is not None else True)
              for a in algorithms]
    if not pieces or pieces[-1][1] is not True:
        pieces.append((ring, True))
    if len(pieces) == 1:
        return pieces[0][0]
    return sympy.Piecewise(*pieces)


def _time(a: Algorithm, message: sympy.Expr, n: sympy.Expr, bandwidth: float) -> sympy.Expr:
    steps, sent = all_reduce_terms(a.name, message, n)
    return (exact(a.latency_s) + steps * exact(a.step_latency_s)
            + sent / exact(a.efficiency * bandwidth))

