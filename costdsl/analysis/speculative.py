"""Speculative decoding (Leviathan et al., ICML 2023; the survey's section 4.2.1), in closed form
in the acceptance rate.

Per target step the draft model runs k decode steps (batch b, cache s) and the target verifies
k + 1 tokens in one forward pass: the `verify` stage (the step of tokens = k + 1 over s cached,
with logits for every new token). With an i.i.d. per-token acceptance probability alpha, the
expected number of tokens a target step yields is

    E = 1 + alpha + alpha^2 + ... + alpha^k = (1 - alpha^(k+1)) / (1 - alpha)   (k + 1 at 1)

and the time per generated token is (k T_draft + T_verify) / E, against T_decode for plain
decoding: speedup = E T_decode / (k T_draft + T_verify). The sum form is used, so alpha = 1
needs no limit. At fixed b, s and k the three stage times are numbers and the break-even
acceptance (speedup = 1) is a root of a polynomial of degree k in alpha: solved by radicals up
to degree 2, numerically (sympy's nroots, to 1e-15) above. In batch the stage times are sums of
per-op maxima (each op compute- or memory-bound): the batch above which speculation stops paying
is found numerically on them (bisection to machine precision, the max being piecewise linear
in b). The best k is the integer minimising the time per token (1 to 16): the continuous
optimum has no closed form (k sits in an exponent and in T_verify).
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from ..errors import EvaluationError
from .. import symbols as S
from .crossover import numeric_roots
from .evaluate import stage_time
from .roofline import StageRoofline

ACCEPT = sympy.Symbol("accept", nonnegative=True)
"""The per-token acceptance probability alpha."""

MAX_DRAFT = 16  # draft lengths searched for the best k


def expected_tokens(alpha, k: int) -> sympy.Expr:
    """Tokens one target step yields on average: sum of alpha^i for i = 0..k."""
    return sum((alpha ** i for i in range(k + 1)), sympy.Integer(0))


@dataclass(frozen=True)
class Speculation:
    """Speculative decoding at one operating point (batch, cache, k, alpha)."""
    draft: str
    k: int
    accept: float
    batch: int
    seq: int
    draft_step_s: float        # one draft decode step
    verify_s: float            # one target verification of k + 1 tokens
    decode_s: float            # one plain target decode step
    tokens_per_step: float     # E
    time_per_token_s: float
    speedup: float
    speedup_expr: sympy.Expr   # speedup as a function of `accept` at this batch, cache and k
    break_even: float | None   # alpha where speedup = 1 (None: speculation pays at every alpha,
                               # or at none)
    break_even_expr: sympy.Expr | None
    break_even_closed: bool    # solved by radicals (else numerically)


def _time(stage: StageRoofline, values: dict) -> float:
    """The stage's time at numbers: its lambdified form, compiled once per stage."""
    return float(stage_time(stage, {s: float(v) for s, v in values.items()}))


def speculate(target_decode: StageRoofline, target_verify: StageRoofline,
              draft_decode: StageRoofline, draft: str, k: int, accept: float,
              values: dict) -> Speculation:
    """`values` binds batch, seq and the bitwidths; the verify stage gets tokens = k + 1."""
    t_draft = _time(draft_decode, values)
    t_verify = _time(target_verify, {**values, S.tokens: sympy.Integer(k + 1)})
    t_decode = _time(target_decode, values)
    cost = k * t_draft + t_verify
    e_expr = expected_tokens(ACCEPT, k)
    speedup_expr = e_expr * sympy.Float(t_decode, 15) / sympy.Float(cost, 15)
    e = float(e_expr.subs(ACCEPT, accept))
    root, expr, closed = _break_even(e_expr, cost / t_decode, k)
    return Speculation(draft, k, accept, int(values[S.batch]), int(values[S.seq]), t_draft,
                       t_verify, t_decode, e, cost / e, e * t_decode / cost, speedup_expr,
                       root, expr, closed)


def _break_even(e_expr: sympy.Expr, ratio: float, k: int):
    """alpha in [0, 1] where E(alpha) = ratio (the cost of a target step in plain steps)."""
    poly = sympy.Poly(e_expr - sympy.Float(ratio, 15), ACCEPT)
    if not 1 < ratio < k + 1:  # E runs from 1 (alpha = 0) to k + 1 (alpha = 1)
        return None, None, False
    if poly.degree() <= 2:
        for r in sympy.solve(poly.as_expr(), ACCEPT):
            if r.is_real and 0 <= float(r) <= 1:
                return float(r), r, True
    for r in poly.nroots(n=17):
        if abs(sympy.im(r)) < 1e-12 and 0 <= float(sympy.re(r)) <= 1:
            return float(sympy.re(r)), sympy.Float(sympy.re(r), 15), False
    return None, None, False


def stop_paying_batch(target_decode: StageRoofline, target_verify: StageRoofline,
                      draft_decode: StageRoofline, k: int, accept: float,
                      values: dict) -> float | None:
    """The batch above which speculation is slower than plain decoding at this alpha and k:
    the root of E T_decode(b) - k T_draft(b) - T_verify(b), the larger batch turning the
    verification (k + 1 tokens per sequence) compute-bound first."""
    b = S.batch
    bound = {s: v for s, v in values.items() if s != b}
    e = expected_tokens(sympy.Float(accept, 15), k)
    g = (e * sympy.sympify(target_decode.time) - k * sympy.sympify(draft_decode.time)
         - sympy.sympify(target_verify.time).xreplace({S.tokens: sympy.Integer(k + 1)}))
    g = g.xreplace(bound)
    if g.free_symbols - {b}:
        names = ", ".join(sorted(s.name for s in g.free_symbols - {b}))
        raise EvaluationError(f"{names} still free: bind every dimension to solve for batch")
    roots = numeric_roots(g, b, 1.0, float(S.MAX_SIZE))
    return roots[0] if roots else None


def best_draft_length(target_verify: StageRoofline, draft_decode: StageRoofline, accept: float,
                      values: dict) -> tuple[int, float]:
    """(k, time per token) minimising (k T_draft + T_verify(k + 1)) / E(alpha, k), k = 1..16."""
    t_draft = _time(draft_decode, values)
    best = None
    for k in range(1, MAX_DRAFT + 1):
        t = (k * t_draft + _time(target_verify, {**values, S.tokens: sympy.Integer(k + 1)})) / \
            float(expected_tokens(sympy.Float(accept, 15), k))
        if best is None or t < best[1]:
            best = (k, t)
    return best
