"""When compression pays, in closed form: the answers of `crossover --solve ARG` where ARG is an
argument of a compression pass in the pipeline (prune's heads/kv_heads/ffn/layers, low_rank's
rank, sparsify's weights). The pass is compiled once more with that argument a symbol x, so
every op's costs are expressions in x; the answers then come from two sides:

- the closed form, from the balance the regime makes linear: memory-bound time is bytes over
  bandwidth, and bytes, weights and the KV cache are linear in a kept fraction or a rank, so
  sympy solves them exactly (as expressions in batch and seq where those are left free);
- the exact value, from the whole time model (every op's max of compute and memory time, with
  the hardware file's efficiencies): a root found numerically, as the max makes it piecewise.

Questions:
- low_rank, per factorised op: the rank below which the pair stores fewer weights, r* = in out /
  (in + out), and the rank at which the pair's time equals the dense op's (memory-bound: its
  bytes, r = w in out / (w (in + out) + 2 a n) at w weight and a activation bytes per element and
  n token rows: the intermediate is written and read once);
- with `target_time` (a stage time: closed form with every op memory-bound, its bytes at its
  bandwidth plus its launch cost) or `target_memory` (weights + KV cache): the argument's value
  that reaches it (for prune: the fraction to remove; rounding to whole units is not applied).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from .. import symbols as S
from .crossover import bracketed_root, numeric_roots
from .roofline import StageRoofline


@dataclass(frozen=True)
class CompressionAnswer:
    op: str                          # the op (low_rank) or "stage" / "memory"
    question: str                    # weights_rank | time_rank | target_time | target_memory
    expression: sympy.Expr | None    # closed form
    closed_value: float | None
    value: float | None              # exact (whole time model), where it differs in kind
    note: str = ""


def _number(expr, values) -> float | None:
    if expr is None:
        return None
    v = sympy.sympify(expr).xreplace(values)
    return float(v) if v.is_number and v.is_real else None


def _positive_root(expr: sympy.Expr, x: sympy.Symbol) -> sympy.Expr | None:
    """The root of a balance linear (or rational) in x, kept as an expression."""
    roots = [r for r in sympy.solve(expr, x) if not r.has(sympy.I)]
    return sympy.simplify(roots[0]) if len(roots) == 1 else None


def low_rank_answers(dense: StageRoofline, factored: StageRoofline, x: sympy.Symbol,
                     values: dict, high: float) -> list[CompressionAnswer]:
    """Per factorised op `<op>` (the pair `<op>.a`, `<op>.b` in `factored`)."""
    by_name = {o.node.name: o for o in factored.ops}
    answers = []
    bits = {k: v for k, v in values.items() if k in S.BITS_BY_CLASS.values()}
    for o in dense.ops:
        a, b = by_name.get(o.node.name + ".a"), by_name.get(o.node.name + ".b")
        if a is None or b is None:
            continue
        weights = _positive_root(a.node.params + b.node.params - o.node.params, x)
        answers.append(CompressionAnswer(o.node.name, "weights_rank", weights,
                                         _number(weights, values), None,
                                         "below it the pair stores fewer weights"))
        balance = _positive_root((a.node.bytes + b.node.bytes - o.node.bytes).xreplace(bits), x)
        g = (a.time + b.time - o.time).xreplace(values)
        roots = numeric_roots(g, x, 1.0, high) if g.free_symbols == {x} else []
        answers.append(CompressionAnswer(
            o.node.name, "time_rank", balance, _number(balance, values),
            roots[0] if roots else None,
            "closed form: equal bytes (memory-bound, no launch cost); exact: equal time" if roots else
            "the pair is slower than the dense op at every rank (compute-bound: it does "
            "the same work in two kernels)"))
    return answers


def target_answers(stage: StageRoofline, weights_kv: sympy.Expr, x: sympy.Symbol, values: dict,
                   low: float, high: float, target_time: float | None,
                   target_memory: float | None, none_at: float | None = None
                   ) -> list[CompressionAnswer]:
    """The value of x that brings the stage time (or weights + KV cache) to the target.

    `none_at` is the value of x that compresses nothing (0 of a fraction removed): where the
    target already holds there, the answer is that value, "already met"; where it is not met
    anywhere in [low, high], "out of reach", the closed form kept only as a formula."""
    out = []
    at = {k: v for k, v in values.items() if k != x}
    none_at = low if none_at is None else none_at
    if target_time is not None:
        memory_bound = sum((o.node.repeat * o.node.share * (o.node.bytes / o.bandwidth + o.launch)
                            for o in stage.ops), sympy.Integer(0))
        closed = _positive_root(memory_bound.xreplace(at) - target_time, x)
        g = sympy.sympify(stage.time).xreplace(at) - target_time
        out.append(_target("stage", "target_time", g, closed, at, x, low, high, none_at,
                           "closed form: every op memory-bound (bytes at the bandwidth, plus "
                           "launches); exact: the whole time model", 2000))
    if target_memory is not None:
        g = sympy.sympify(weights_kv).xreplace(at) - target_memory
        closed = _positive_root(g, x)
        out.append(_target("memory", "target_memory", g, closed, at, x, low, high, none_at,
                           "weights and KV cache (activations left out)", 2000))
    return out


def _target(op: str, question: str, g: sympy.Expr, closed, at: dict, x: sympy.Symbol,
            low: float, high: float, none_at: float, note: str, steps: int) -> CompressionAnswer:
    """One target's answer from g = (quantity - target) as a function of x."""
    start = _number(g.xreplace({x: none_at}), at) if g.free_symbols <= {x} else None
    if start is not None and start <= 0:
        return CompressionAnswer(op, question, closed, _number(closed, at), none_at,
                                 f"{note}; already met with no compression ({x.name} = "
                                 f"{none_at:g})")
    exact = bracketed_root(g, x, low, high, steps)
    closed_value = _number(closed, at)
    if closed_value is not None and not low <= closed_value <= high:
        closed_value = None
    if exact is None:
        return CompressionAnswer(op, question, closed, closed_value, None,
                                 f"{note}; out of reach for {x.name} in [{low:g}, {high:.6g}] "
                                 "alone")
    return CompressionAnswer(op, question, closed, closed_value, exact, note)
