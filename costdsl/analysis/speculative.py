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

Token trees (SpecInfer, Miao et al. 2024; Medusa's trees): tree = [w_1, ..., w_L] keeps w_l
candidates for each surviving prefix at level l. Level l is reached when one of its w_l
candidates is accepted, probability 1 - (1 - alpha)^w_l, so E = 1 + sum over l of the product
over j <= l of (1 - (1 - alpha)^w_j); the target verifies 1 + sum_l prod_{j<=l} w_j tokens in
one pass (the tree-attention mask, which lets each candidate attend only to its ancestors, is
not subtracted: the verify stage counts the whole new block, as prefill counts the causal
half); the draft runs one pass per level over the frontier, prod_{j<l} w_j tokens. A chain
[1, ..., 1] of length k is plain speculation.
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


def expected_tokens(alpha, k: int, tree: tuple[int, ...] | None = None) -> sympy.Expr:
    """Tokens one target step yields on average: sum of alpha^i for i = 0..k (a chain), or the
    tree's 1 + sum_l prod_{j<=l} (1 - (1 - alpha)^w_j)."""
    if tree is None:
        return sum((alpha ** i for i in range(k + 1)), sympy.Integer(0))
    total, reach = sympy.Integer(1), sympy.Integer(1)
    for w in tree:
        reach *= 1 - (1 - alpha) ** w
        total += reach
    return sympy.expand(total)


def tree_sizes(k: int, tree: tuple[int, ...] | None) -> tuple[int, list[int]]:
    """(tokens the target verifies, the draft's frontier size at each level)."""
    widths = tree or (1,) * k
    frontier, verified, fronts = 1, 1, []
    for w in widths:
        fronts.append(frontier)
        frontier *= w
        verified += frontier
    return verified, fronts


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
    verified: int = 0          # tokens one verification carries (k + 1 for a chain)
    tree: tuple[int, ...] | None = None
    strategy: str = "speculative"
    medusa: tuple[int, int, str] | None = None  # heads, blocks per head, LM head (Medusa)


def _time(stage: StageRoofline, values: dict) -> float:
    """The stage's time at numbers: its lambdified form, compiled once per stage."""
    return float(stage_time(stage, {s: float(v) for s, v in values.items()}))


def _draft_time(draft_verify: StageRoofline | None, fronts: list[int], values: dict) -> float:
    """The draft's passes of one target step: one per level over its frontier (none for Medusa,
    whose heads run inside the target's pass)."""
    if draft_verify is None:
        return 0.0
    return sum(_time(draft_verify, {**values, S.tokens: f}) for f in fronts)


def speculate(target_decode: StageRoofline, target_verify: StageRoofline,
              draft_verify: StageRoofline | None, draft: str, k: int, accept: float,
              values: dict, tree: tuple[int, ...] | None = None,
              strategy: str = "speculative") -> Speculation:
    """`values` binds batch, seq and the bitwidths. The draft's stage is its verify stage (a
    pass over the frontier, with logits for each; over one token it is the decode step).
    Medusa (no draft: `draft_verify` None) verifies the heads' candidates with the heads in
    the target's own pass: `target_verify` is the graph with the heads added."""
    verified, fronts = tree_sizes(k, tree)
    drafting = _draft_time(draft_verify, fronts, values)
    t_draft = drafting / k
    t_verify = _time(target_verify, {**values, S.tokens: verified})
    t_decode = _time(target_decode, values)
    cost = drafting + t_verify
    e_expr = expected_tokens(ACCEPT, k, tree)
    speedup_expr = e_expr * sympy.Float(t_decode, 15) / sympy.Float(cost, 15)
    e = float(e_expr.subs(ACCEPT, accept))
    root, expr, closed = _break_even(e_expr, cost / t_decode, float(e_expr.subs(ACCEPT, 1)))
    return Speculation(draft, k, accept, int(values[S.batch]), int(values[S.seq]), t_draft,
                       t_verify, t_decode, e, cost / e, e * t_decode / cost, speedup_expr,
                       root, expr, closed, verified, tree, strategy)


def _break_even(e_expr: sympy.Expr, ratio: float, most: float):
    """alpha in [0, 1] where E(alpha) = ratio (the cost of a target step in plain steps)."""
    poly = sympy.Poly(e_expr - sympy.Float(ratio, 15), ACCEPT)
    if not 1 < ratio < most:  # E rises from 1 (alpha = 0) to its most at alpha = 1
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
                      draft_verify: StageRoofline | None, k: int, accept: float,
                      values: dict, tree: tuple[int, ...] | None = None,
                      lookahead_tokens: int | None = None) -> float | None:
    """The batch above which speculation is slower than plain decoding at this alpha and k:
    the root of E T_decode(b) - T_draft passes(b) - T_verify(b), the larger batch turning the
    verification (k + 1 tokens per sequence) compute-bound first."""
    b = S.batch
    bound = {s: v for s, v in values.items() if s != b}
    if lookahead_tokens:  # a step yields `accept` tokens and costs one pass, no draft
        e, verified, fronts = sympy.Float(accept, 15), lookahead_tokens, []
    else:
        e = expected_tokens(sympy.Float(accept, 15), k, tree)
        verified, fronts = tree_sizes(k, tree)
    drafting = sum((sympy.sympify(draft_verify.time).xreplace({S.tokens: sympy.Integer(f)})
                    for f in fronts if draft_verify is not None), sympy.Integer(0))
    g = (e * sympy.sympify(target_decode.time) - drafting
         - sympy.sympify(target_verify.time).xreplace({S.tokens: sympy.Integer(verified)}))
    g = g.xreplace(bound)
    if g.free_symbols - {b}:
        names = ", ".join(sorted(s.name for s in g.free_symbols - {b}))
        raise EvaluationError(f"{names} still free: bind every dimension to solve for batch")
    roots = numeric_roots(g, b, 1.0, float(S.MAX_SIZE))
    return roots[0] if roots else None


def best_draft_length(target_verify: StageRoofline, draft_verify: StageRoofline, accept: float,
                      values: dict) -> tuple[int, float]:
    """(k, time per token) minimising (k T_draft + T_verify(k + 1)) / E(alpha, k), k = 1..16."""
    t_draft = _time(draft_verify, {**values, S.tokens: 1})
    best = None
    for k in range(1, MAX_DRAFT + 1):
        t = (k * t_draft + _time(target_verify, {**values, S.tokens: sympy.Integer(k + 1)})) / \
            float(expected_tokens(sympy.Float(accept, 15), k))
        if best is None or t < best[1]:
            best = (k, t)
    return best


def lookahead(target_decode: StageRoofline, target_verify: StageRoofline, tokens: int,
              accepted: float, values: dict) -> Speculation:
    """Lookahead decoding (Fu et al., "Break the Sequential Dependency of LLM Inference Using
    Lookahead Decoding", 2024): each step runs W (N - 1) lookahead tokens and G (N - 1) n-gram
    guesses through the target with the current token, `tokens` = 1 + (W + G)(N - 1) in one
    pass (the verify stage), and accepts `accepted` tokens on average (it depends on the text:
    an input). Time per token T_verify / accepted; speedup accepted T_decode / T_verify, linear
    in the acceptance, so the break-even is T_verify / T_decode in closed form."""
    t_verify = _time(target_verify, {**values, S.tokens: tokens})
    t_decode = _time(target_decode, values)
    ratio = sympy.Float(t_verify / t_decode, 15)
    speedup = ACCEPT * sympy.Float(t_decode, 15) / sympy.Float(t_verify, 15)
    return Speculation("", tokens - 1, accepted, int(values[S.batch]), int(values[S.seq]), 0.0,
                       t_verify, t_decode, accepted, t_verify / accepted,
                       accepted * t_decode / t_verify, speedup, float(ratio), ratio, True,
                       tokens, None, "lookahead")


def speculation_grid(target_decode: StageRoofline, target_verify: StageRoofline,
                     draft_verify: StageRoofline | None, decoding, values: dict):
    """(time per token, speedup) of a strategy over a grid: `values` may hold numpy arrays
    (batch, seq); each stage's compiled time is evaluated once over the whole grid."""
    grid = {s: v for s, v in values.items()}
    t_decode = stage_time(target_decode, grid)
    if decoding.lookahead:
        tokens, accepted = decoding.k + 1, decoding.accept
        t_step = stage_time(target_verify, {**grid, S.tokens: float(tokens)})
        return t_step / accepted, accepted * t_decode / t_step
    verified, fronts = tree_sizes(decoding.k, decoding.tree)
    e = float(expected_tokens(sympy.Float(decoding.accept, 15), decoding.k, decoding.tree))
    cost = stage_time(target_verify, {**grid, S.tokens: float(verified)}) + sum(
        stage_time(draft_verify, {**grid, S.tokens: float(f)}) for f in fronts
        if draft_verify is not None)
    return cost / e, e * t_decode / cost
