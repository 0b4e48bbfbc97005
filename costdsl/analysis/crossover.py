"""Closed-form crossover points: where an op, or a whole stage, changes bound.

An op is compute-bound when its intensity I = operations / bytes exceeds the ridge point
R = peak / bandwidth of its compute type. For a chosen symbol x (batch, seq, a bitwidth, or a
free model parameter), with every other symbol bound to a value or left free, the crossover
solves operations(x) - R * bytes(x) = 0, which is the same equation as I(x) = R but polynomial.
Where the compute type itself depends on x (solving for a bitwidth), each bitwidth range that
maps to one type is solved separately and only roots inside their range are kept.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping

import numpy as np
import sympy

from ..errors import EvaluationError
from ..hardware import Hardware
from .roofline import OpRoofline, StageRoofline, kernel_type, matrix_peak
from .. import symbols as S

BIT_SYMBOLS = (S.w_bits, S.a_bits, S.kv_bits)
# (low, high] bitwidth ranges that ask for one operand type (see roofline._operand_type)
BIT_REGIONS = ((0, 4), (4, 8), (8, 16), (16, 64))


@dataclass(frozen=True)
class Crossover:
    op: str
    kind: str
    repeat: sympy.Expr
    symbol: sympy.Symbol
    expression: sympy.Expr | None   # the root, in the symbols left free
    value: float | None             # its number, when nothing is left free
    direction: str | None           # "memory->compute" or "compute->memory" as the symbol grows
    ridge: float | None
    compute_type: str | None
    reason: str | None = None       # why there is none
    limit: sympy.Expr | None = None # intensity as the symbol grows without bound
    closed_form: bool = True        # False: found numerically (x in an exponent, as in MoE)
    unquantised: float | None = None  # with a tile model: the root without wave quantisation
                                      # (`expression`); `value` is then the step it turns at

    @property
    def latex(self) -> str | None:
        return sympy.latex(self.expression) if self.expression is not None else None

    @property
    def rounded(self) -> tuple[int, int] | None:
        """(floor, ceiling) of the value, for integer symbols such as batch and seq."""
        if self.value is None or not self.symbol.is_integer:
            return None
        return math.floor(self.value), math.ceil(self.value)


def _bind(expr: sympy.Expr, values: Mapping[sympy.Symbol, float], x: sympy.Symbol) -> sympy.Expr:
    return sympy.sympify(expr).subs({k: v for k, v in values.items() if k != x})


def _positive_roots(poly: sympy.Expr, x: sympy.Symbol) -> list[sympy.Expr]:
    # Solve in a real stand-in: batch is an integer symbol, and sympy would drop every root
    # that is not an integer, while the crossover usually lies between two integers.
    real = sympy.Symbol(x.name, positive=True)
    numerator = sympy.numer(sympy.together(poly.subs(x, real)))
    # a polynomial of x alone of degree 3 or more, or one with float coefficients (the
    # compiled times: sympy.solve turns their floats into fractions and back, 60 ms a call)
    if numerator.free_symbols == {real} and numerator.is_polynomial(real) \
            and (sympy.degree(numerator, real) >= 3 or numerator.has(sympy.Float)):
        return _numeric_positive_roots(numerator, real, x)
    try:
        roots = [r.subs(real, x) for r in sympy.solve(numerator, real)]
    except NotImplementedError:
        return []
    kept = []
    for r in roots:
        if r.is_real is False or r.is_positive is False:
            continue
        if r.is_number and (not r.is_real or r <= 0):
            continue
        kept.append(sympy.simplify(r))
    return kept


def _numeric_positive_roots(numerator, real, x) -> list[sympy.Expr]:
    """The positive real roots of a numeric polynomial. sympy's closed forms of a cubic with
    float coefficients carry imaginary rounding (5000 + 1e-20 i) that hides real roots;
    numeric root finding does not (and is faster at any degree)."""
    out = []
    for r in sympy.Poly(numerator, real).nroots(n=15):
        re, im = sympy.re(r), sympy.im(r)
        if abs(im) <= 1e-9 * max(1.0, abs(re)) and re > 0:
            out.append(sympy.Float(re, 15))
    return out


def transcendental(expr: sympy.Expr, x: sympy.Symbol) -> bool:
    """True where x appears in an exponent (the experts a batch touches, E (1 - (1-k/E)^n)):
    no closed-form root exists there, and sympy's solvers and limits would give up or hang."""
    return any(x in p.exp.free_symbols for p in sympy.sympify(expr).atoms(sympy.Pow))


def numeric_roots(g: sympy.Expr, x: sympy.Symbol, low: float, high: float) -> list[float]:
    """Positive roots of a function of x alone in (low, high]: sign changes on a log grid
    (1e-3 to 1e9, 400 points), each refined by bisection to machine precision."""
    fn = _safe(sympy.lambdify([x], g, modules="math"))
    lo, hi = max(low, 1e-3), min(high, 1e9)
    if not lo < hi:
        return []
    grid = [lo * (hi / lo) ** (i / 399) for i in range(400)]
    values = [fn(v) for v in grid]
    roots = []
    for (a, fa), (b, fb) in zip(zip(grid, values), zip(grid[1:], values[1:])):
        if fa == 0:
            roots.append(a)
        elif fa * fb < 0 and (root := _bisect(fn, a, b, fa)) is not None:
            roots.append(root)
    return roots


def _safe(fn):
    """fn, with NaN where it cannot be evaluated (a pole: a denominator that crosses zero, an
    overflow): a NaN never counts as a sign change, so a pole is never reported as a root."""
    def evaluate(v: float) -> float:
        try:
            return float(fn(v))
        except (ZeroDivisionError, OverflowError, ValueError):
            return math.nan
    return evaluate


def _bisect(fn, a: float, b: float, fa: float) -> float | None:
    """The root of fn in [a, b], where it changes sign (fa = fn(a)), to machine precision; None
    where the sign change is a pole (the function grows without bound towards it)."""
    fb = fn(b)
    for _ in range(200):
        mid = (a + b) / 2
        if (fn(mid) < 0) == (fa < 0):
            a = mid
        else:
            b = mid
    root = (a + b) / 2
    at = fn(root)
    if not math.isfinite(at) or abs(at) > max(abs(fa), abs(fb)):
        return None
    return root


def bracketed_root(g: sympy.Expr, x: sympy.Symbol, low: float, high: float,
                   steps: int = 1000) -> float | None:
    """The first root of g (a function of x alone) on [low, high): the first sign change on an
    even grid of `steps`, refined by bisection to machine precision. None where g has other
    symbols or keeps its sign."""
    if g.free_symbols != {x}:
        return None
    fn = _safe(sympy.lambdify([x], g, modules="math"))
    grid = [low + (high - low) * i / steps for i in range(steps)]
    values = [fn(v) for v in grid]
    for (a, fa), (b, fb) in zip(zip(grid, values), zip(grid[1:], values[1:])):
        if fa == 0:
            return a
        if fa * fb < 0 and (root := _bisect(fn, a, b, fa)) is not None:
            return root
    return None


def roots_in(g: sympy.Expr, x: sympy.Symbol, numbers: Mapping[sympy.Symbol, float],
             low: float = 0.0, high: float = math.inf) -> list[tuple[sympy.Expr, sympy.Expr, bool]]:
    """(root, its value, closed form?) for each positive root of g in x inside (low, high].

    A polynomial g is solved in closed form, the root kept as an expression in the symbols of
    `numbers` (peak, bandwidth) and any left free, its value with `numbers` substituted. With x
    in an exponent there is no closed form: g, with `numbers` substituted, is solved
    numerically, and the root is that number."""
    if transcendental(g, x):
        if sympy.sympify(g).free_symbols - {x} - set(numbers):
            return []  # free symbols and no closed form: nothing honest to report
        return [(sympy.Float(v, 15), sympy.Float(v, 15), False)
                for v in numeric_roots(g.subs(numbers), x, low, high)]
    out = []
    for root in _positive_roots(g, x):
        value = root.subs(numbers)
        if value.is_number and (not value.is_real or not low < value <= high):
            continue
        out.append((root, value, True))
    return out


def _limit(expr: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    if transcendental(expr, x):  # exponentials decay or grow; evaluate far out instead
        far = expr.subs(x, 1e9)
        return sympy.Float(float(far), 6) if far.is_number else far
    return sympy.limit(expr, x, sympy.oo)


_SIMPLIFY_OPS = 400
"""Above this many operations, simplify() on a slope takes seconds (a family file with every
dimension free); the direction is then reported as depending on the free symbols."""


def _direction(intensity: sympy.Expr, x: sympy.Symbol, root: sympy.Expr) -> str | None:
    """Which way the op turns as x grows through the root: from the sign of dI/dx there."""
    slope = sympy.diff(intensity, x).subs(x, root)
    if slope.is_positive is None and sympy.count_ops(slope) <= _SIMPLIFY_OPS:
        slope = sympy.simplify(slope)  # large expressions (every dimension free) stay unsigned
    if slope.is_positive:
        return "memory->compute"
    if slope.is_negative:
        return "compute->memory"
    return None


def _flat_cause(x: sympy.Symbol) -> str:
    """Why an op's costs stop changing with x past a switch: in seq, a sliding window; in any
    other symbol (a parallel degree), a min() or max() settling, such as KV heads that stop
    dividing and are replicated, one per device."""
    if x == S.seq:
        return "a sliding window caps the positions it attends"
    return f"its costs stop changing with {x.name} there (a min() or max() in {x.name} settles)"


def _no_root_reason(op: OpRoofline, intensity: sympy.Expr, x: sympy.Symbol, ridge: float,
                    flat_after: float | None = None):
    """Why an op has no crossover in x. `flat_after`: the last switch of a min() in x (a
    sliding window), beyond which the costs stop depending on x."""
    if op.node.flops == 0:
        return "the op does no arithmetic: it is memory-bound whatever the value", None
    limit = _limit(intensity, x)
    if x not in intensity.free_symbols and flat_after is not None:
        state = "memory" if limit < ridge else "compute"
        return (f"intensity is flat beyond {x.name} = {flat_after:.6g} ({sympy.N(intensity, 4)} "
                f"ops/byte, ridge {ridge:.4g}): {_flat_cause(x)}, so it is {state}-bound for "
                f"every {x.name}"), limit
    if x not in intensity.free_symbols:
        return (f"intensity does not depend on {x.name} ({sympy.N(intensity, 4)} ops/byte, "
                f"ridge {ridge:.4g})"), limit
    if not limit.is_number:
        return (f"intensity tends to {limit} ops/byte as {x.name} grows: whether that is above "
                f"the ridge point {ridge:.4g} depends on the free parameters"), limit
    side = "below" if limit < ridge else "above"
    state = "memory" if side == "below" else "compute"
    return (f"intensity tends to {sympy.N(limit, 4)} ops/byte as {x.name} grows, {side} the "
            f"ridge point {ridge:.4g}: {state}-bound for every {x.name}"), limit


def minmax_breakpoints(expr: sympy.Expr, x: sympy.Symbol) -> list[float]:
    """Values of x where a min() or max() in expr switches argument (a sliding window, say),
    or a condition of a Piecewise changes (keys and values that stop fitting in the L2)."""
    points = []
    expr = sympy.sympify(expr)
    for f in expr.atoms(sympy.Min, sympy.Max):
        if x not in f.free_symbols:
            continue
        for i, a in enumerate(f.args):
            for b in f.args[i + 1:]:
                for difference in _branches(a - b, x):
                    points += [float(r) for r in _positive_roots(difference, x)
                               if r.is_number and _meets(a, b, x, r)]
    for f in expr.atoms(sympy.Piecewise):
        for _, condition in f.args:
            if isinstance(condition, sympy.core.relational.Relational) and \
                    x in condition.free_symbols:
                # a max() inside (a GEMM's tiles in its split of k): each branch's root,
                # kept where the condition flips
                points += [_switch(condition, x, r)
                           for difference in _branches(condition.lhs - condition.rhs, x)
                           for r in _positive_roots(difference, x)
                           if r.is_number and _flips(condition, x, r)]
    return points


def _flips(condition, x: sympy.Symbol, root: sympy.Expr) -> bool:
    """Whether `condition` holds on one side of x = root and not on the other."""
    value = float(root)
    step = max(abs(value) * 1e-6, 1e-9)
    return bool(condition.subs(x, value - step)) != bool(condition.subs(x, value + step))


def _branches(expr: sympy.Expr, x: sympy.Symbol) -> list[sympy.Expr]:
    """`expr` with each min() or max() inside it in x replaced by each of its arguments, in
    turn (a GEMM's occupancy is max(T, tiles) with tiles = max(128, rows) N / 128^2: the outer
    switch is where T equals the inner's either branch); `expr` itself where it has none. A
    root of a branch not taken only splits a piece where nothing changes."""
    inner = next((f for f in expr.atoms(sympy.Min, sympy.Max) if x in f.free_symbols), None)
    if inner is None:
        return [expr]
    branches = [b for a in inner.args for b in _branches(expr.xreplace({inner: a}), x)]
    # only the branches whose roots come in closed form quickly (a rational function of x: an
    # occupancy's switch); a branch with logs (a MoE's expected experts) is left to the search
    # on the whole expression (sympy.solve on a max(): a quarter second a call, so only then)
    rational = [b for b in branches if b.is_rational_function(x)]
    return rational if len(rational) == len(branches) else [expr] + rational


def _meets(a: sympy.Expr, b: sympy.Expr, x: sympy.Symbol, root: sympy.Expr) -> bool:
    """Whether a and b (min() and max() inside them as they are) are equal at x = root: a root
    of a branch _branches took is a switch only where that branch is the one taken."""
    at_a, at_b = (complex(e.subs(x, root)) for e in (a, b))
    return abs(at_a - at_b) <= 1e-9 * max(abs(at_a), abs(at_b), 1e-30)


def _switch(condition, x: sympy.Symbol, root: sympy.Expr) -> float:
    """Where `condition` changes truth near its boundary `root`: for a whole-number x and a
    whole root, half-way to the neighbour on the other side (tp <= 2 holds at 2: the switch
    is at 2.5, so that the piece `tp < 2.5` holds tp = 2), else the root itself."""
    value = float(root)
    if not x.is_integer or not value.is_integer():
        return value
    # half a step below, not the whole-number neighbour: at tp = 0 a group's n / (n - 1) is
    # infinite and its max() cannot compare
    at, below = (bool(condition.subs(x, v)) for v in (root, root - sympy.Rational(1, 2)))
    return value + 0.5 if at == below else value - 0.5


def resolve_minmax(expr: sympy.Expr, x: sympy.Symbol, probe: float) -> sympy.Expr:
    """expr with each min()/max() in x replaced by the argument that is active at x = probe,
    and each Piecewise in x by its branch there, so that between two breakpoints the expression
    is a plain polynomial ratio."""
    def active(f):
        values = [a.subs(x, probe) for a in f.args]
        if not all(v.is_number for v in values):
            return f     # depends on a symbol left free: keep it whole
        values = [float(v) for v in values]
        chosen = min(values) if isinstance(f, sympy.Min) else max(values)
        return f.args[values.index(chosen)]

    def branch(f):
        for value, condition in f.args:
            holds = sympy.sympify(condition).subs(x, probe)
            if holds is sympy.true:
                return value
            if holds is not sympy.false:
                return f     # depends on a symbol left free: keep it whole
        return f
    expr = sympy.sympify(expr).replace(
        lambda e: isinstance(e, sympy.Piecewise) and x in e.free_symbols, branch)
    return expr.replace(
        lambda e: isinstance(e, (sympy.Min, sympy.Max)) and x in e.free_symbols, active)


def _distinct(edges: list[float], rel: float = 1e-9) -> list[float]:
    """Sorted edges with those within `rel` of the one before dropped: one switch found twice
    (by an op's crossover and by its max(compute, memory)) in the last digits of a float."""
    out: list[float] = []
    for e in edges:
        if not out or e - out[-1] > rel * abs(e):
            out.append(e)
    return out


def _intervals(edges: list[float]) -> list[tuple[float, float, float]]:
    """(low, high, probe) covering (0, inf) between sorted breakpoints."""
    edges = _distinct(sorted(e for e in edges if e > 0))
    bounds = [0.0] + edges + [float("inf")]
    out = []
    for low, high in zip(bounds, bounds[1:]):
        probe = (low + high) / 2 if high != float("inf") else (2 * low if low > 0 else 1.0)
        out.append((low, high, probe))
    return out


def _pieces(flops: sympy.Expr, nbytes: sympy.Expr,
            x: sympy.Symbol) -> list[tuple[float, float, float]]:
    """(low, high, probe) of the spans of x where no min()/max() of an op's operations or bytes
    switches branch; the whole axis where another symbol is left free."""
    total = flops + nbytes
    return _intervals(minmax_breakpoints(total, x) if not total.free_symbols - {x} else [])


def _moved_bytes(op: OpRoofline, values: Mapping[sympy.Symbol, float],
                 x: sympy.Symbol) -> sympy.Expr:
    """The bytes that take an op's memory time, in x: where that time bends (too few rows or
    tiles, a floor, a split regime) the op turns compute-bound where its compute meets the bent
    time, as `analyze` judges it, not at its bare intensity. A bend in a symbol left free
    cannot be split into pieces: there, the bare bytes."""
    nbytes = _bind(op.effective_bytes, values, x)
    if nbytes.free_symbols - {x} and nbytes.atoms(sympy.Min, sympy.Max):
        nbytes = _bind(op.effective_bytes if op.node.transfers else op.bytes, values, x)
    return nbytes


def op_crossover(op: OpRoofline, hw: Hardware, x: sympy.Symbol,
                 values: Mapping[sympy.Symbol, float]) -> list[Crossover]:
    """Crossovers of one op in x; one record with a reason when there is none.

    Solves operations(x) * bandwidth - peak * bytes(x) = 0 with `peak` and `bandwidth` kept as
    symbols, so the expression reads as a formula; its value substitutes the hardware's numbers.
    Where min()/max() appear (a sliding window), x is split at their switch points and each
    interval is solved with the active branch.
    """
    stepped = _bind(op.effective_flops, values, x)
    flops = unquantised(stepped, x)
    nbytes = _moved_bytes(op, values, x)
    pieces = _pieces(flops, nbytes, x)
    found = []
    regions = _compute_regions(op, hw, x, values)
    for low, high, probe in pieces:
        f, b = resolve_minmax(flops, x, probe), resolve_minmax(nbytes, x, probe)
        intensity = sympy.simplify(f / b) if f != 0 else sympy.Integer(0)
        for ctype, peak, bandwidth, region in regions:
            if ctype is None:
                break
            numbers = {S.peak: peak, S.bandwidth: bandwidth}
            span = (max(low, region[0]), min(high, region[1])) if region else (low, high)
            for root, value, closed in roots_in(f * S.bandwidth - S.peak * b, x, numbers, *span):
                found.append(Crossover(
                    op.node.name, op.node.kind, op.node.repeat, x, root,
                    float(value) if value.is_number else None,
                    _direction(intensity, x, value), peak / bandwidth, ctype,
                    closed_form=closed))
    below = [c for c in found if x.is_integer and c.value is not None and c.value < 1]
    found = [c for c in found if c not in below]
    if found:
        return _stepped(op, found, stepped, nbytes, x) if stepped != flops else found
    if below:  # a count (batch, seq, tokens) is at least 1: the switch is never reached
        c = max(below, key=lambda c: c.value)
        side = "compute" if c.direction == "memory->compute" else "memory"
        return [replace(c, expression=None, value=None, direction=None,
                        reason=f"it switches at {x.name} = {c.value:.3g}, below 1: "
                               f"{side}-bound for every {x.name}")]
    ctype = op.compute_type
    ridge = op.ridge if ctype else None
    if x in BIT_SYMBOLS and ctype and flops != 0 and not (flops + nbytes).free_symbols - {x}:
        return [Crossover(op.node.name, op.node.kind, op.node.repeat, x, None, None, None, ridge,
                          ctype, _bits_reason(regions, x, flops, nbytes), None)]
    last = pieces[-1][2]
    intensity = (sympy.simplify(resolve_minmax(flops, x, last) / resolve_minmax(nbytes, x, last))
                 if flops != 0 else sympy.Integer(0))
    flat_after = pieces[-1][0] if len(pieces) > 1 and x in (flops + nbytes).free_symbols \
        else None
    reason, limit = _no_root_reason(op, intensity, x, ridge or 0.0, flat_after)
    return [Crossover(op.node.name, op.node.kind, op.node.repeat, x, None, None, None, ridge,
                      ctype, reason, limit)]


def _bits_reason(regions, x: sympy.Symbol, flops, nbytes) -> str:
    """Why an op has no crossover in a bitwidth: the side it is on in each range of bits (the
    compute type, and with it the peak and the family's bandwidth, changes at 4, 8 and 16
    bits, where the side may change without a root), not the limit of its intensity."""
    sides = []
    for ctype, peak, bandwidth, (low, high) in regions:   # _compute_regions
        probe = (low + high) / 2
        f, b = (float(resolve_minmax(e, x, probe).subs(x, probe)) for e in (flops, nbytes))
        sides.append((low, high, ctype, "compute" if f * bandwidth > peak * b else "memory"))
    if len({side for *_, side in sides}) == 1:
        return f"{sides[0][3]}-bound at every {x.name}: no switch within any compute type"
    return "it changes side only where its compute type does: " + ", ".join(
        f"{side}-bound in {ctype} at {low:g} < {x.name} <= {high:g}"
        for low, high, ctype, side in sides)


def _compute_regions(op: OpRoofline, hw: Hardware, x, values):
    """(compute type, its peak and bandwidth for the op's family, (low, high] range of x or
    None) to solve in: the op's own (the figures it is priced at: a family with a compute
    fraction of its own, block-scaled FP8, say, not the top-level one), or, solving for a
    bitwidth, the type and family each range of bits gives it (an 8-bit GEMM streams at its
    FP8 family's bandwidth, not at the 16-bit one's the stage was built with)."""
    if op.compute_type is None:
        return [(None, None, None, None)]
    if x not in BIT_SYMBOLS:
        return [(op.compute_type, op.peak, op.bandwidth, None)]
    regions = []
    for low, high in BIT_REGIONS:
        ctype, kind = _kernel_at(op, hw, x, values, (low + high) / 2)
        regions.append((ctype, matrix_peak(op.node, hw, ctype, kind), hw.bandwidth_for(kind),
                        (low, high)))
    return regions


def _kernel_at(op: OpRoofline, hw: Hardware, x, values, probe) -> tuple[str | None, str]:
    """The op's (compute type, family) at bitwidth x = probe."""
    bits = {**{s: v for s, v in values.items() if s in BIT_SYMBOLS}, x: probe}
    return kernel_type(op.node, hw, bits)


def stage_crossovers(stage: StageRoofline, hw: Hardware, x: sympy.Symbol,
                     values: Mapping[sympy.Symbol, float]) -> list[Crossover]:
    return [c for op in stage.ops for c in op_crossover(op, hw, x, values)]


@dataclass(frozen=True)
class StageCrossover:
    """Stage-level answers in the solved symbol x."""
    symbol: sympy.Symbol
    balance: sympy.Expr | None          # x where total compute time = total memory time
    balance_value: float | None
    balance_reason: str | None
    first_compute_bound: Crossover | None   # the first op to turn compute-bound as x grows
    time: sympy.Expr | None             # stage time as a Piecewise in x (None if params free)
    breakpoints: tuple[float, ...]
    note: str | None = None             # what the stage-level forms leave out (wave steps)


def _stage_sums(stage: StageRoofline, values, x):
    compute = sum((op.node.repeat * op.compute_time for op in stage.ops), sympy.Integer(0))
    memory = sum((op.node.repeat * op.memory_time for op in stage.ops), sympy.Integer(0))
    return (unquantised(_bind(stage.steps * compute, values, x), x),
            _bind(stage.steps * memory, values, x))


def unquantised(expr: sympy.Expr, x: sympy.Symbol) -> sympy.Expr:
    """expr with every ceiling in x read as its argument: a tile model's wave quantisation
    smoothed (exact at whole waves, below by less than one wave between), so that sums over
    ops keep closed-form roots and a Piecewise of few pieces."""
    return sympy.sympify(expr).replace(
        lambda e: isinstance(e, sympy.ceiling) and x in e.free_symbols, lambda e: e.args[0])


def _has_steps(expr: sympy.Expr, x: sympy.Symbol) -> bool:
    return any(x in c.free_symbols for c in sympy.sympify(expr).atoms(sympy.ceiling))


MAX_STEP_SCAN = 10**6
"""The largest integer a stepped crossover is searched up to (one vectorised evaluation)."""


def _first_step(g: sympy.Expr, x: sympy.Symbol, limit: float) -> float | None:
    """The least integer x >= 1 at which g (x alone, with ceilings) is >= 0, searched up to
    `limit` (at most MAX_STEP_SCAN): where a GEMM's compute time, a staircase of whole waves,
    first reaches its memory time."""
    top = int(min(max(limit, 1.0), MAX_STEP_SCAN))
    fn = sympy.lambdify([x], g, modules="numpy")
    grid = np.arange(1, top + 1, dtype=float)
    hits = np.nonzero(np.asarray(fn(grid), dtype=float) >= 0)[0]
    return float(grid[hits[0]]) if hits.size else None


def _stepped(op: OpRoofline, crossovers: list[Crossover], flops, nbytes, x) -> list[Crossover]:
    """Crossovers of a GEMM under wave quantisation: the closed form is that of the smooth
    model (ceil(u) read as u); compute time is a staircase in x, so the op turns compute-bound
    at the first integer where a step reaches the memory time -- a step, not a root. Wave
    quantisation only adds compute time, so that step is at or before the smooth root."""
    out = []
    for c in crossovers:
        g = (flops * S.bandwidth - S.peak * nbytes).subs(
            {S.peak: (c.ridge or 0.0) * op.bandwidth, S.bandwidth: op.bandwidth})
        if c.direction != "memory->compute" or c.value is None or g.free_symbols != {x} \
                or not x.is_integer:
            out.append(c)
            continue
        step = _first_step(g, x, math.ceil(c.value))
        out.append(replace(c, value=step if step is not None else c.value,
                           unquantised=c.value))
    return out


def piecewise_time(stage: StageRoofline, hw: Hardware, x: sympy.Symbol,
                   values: Mapping[sympy.Symbol, float], breakpoints: list[float]) -> sympy.Expr:
    """Stage time in x as a Piecewise whose pieces are sums of each op's active branch.

    Between two consecutive breakpoints every op stays on one side of its roofline, so each
    piece is a sum of compute or memory terms (plus the launch cost of every kernel, under an
    efficiency model, and the serving engine's time per iteration and sequence, with a stack's
    framework figures). Solving for a bitwidth, the compute type (and
    with it the peak) changes at 4, 8 and 16 bits: those are breakpoints too.
    """
    if x in BIT_SYMBOLS:
        breakpoints = list(breakpoints) + [high for _, high in BIT_REGIONS[:-1]]
    breakpoints = list(breakpoints) + [
        p for op in stage.ops
        for p in minmax_breakpoints(_bind(op.flops + op.bytes + op.memory_time
                                          + op.transfer_time + op.serial_work, values, x), x)]
    memory = [_bind(op.node.repeat * op.memory_time, values, x) for op in stage.ops]
    compute = [None if x in BIT_SYMBOLS else
               unquantised(_bind(op.node.repeat * op.compute_time, values, x), x)
               for op in stage.ops]  # with a bitwidth, the peak depends on the piece
    # an op whose memory side bends (a floor, too few rows or tiles to fill the chip, a split
    # regime) turns compute-bound where its compute time meets that bent time: its crossover
    # in `breakpoints` is that switch, but a GEMM's under wave quantisation is the step
    # (_stepped), and the smooth time here switches at the root: found again, one where equal
    breakpoints += [p for op, ct, mt in zip(stage.ops, compute, memory)
                    if _memory_bends(op) and ct is not None
                    for p in minmax_breakpoints(sympy.Max(ct, mt), x)]
    # fixed costs per kernel, serial transfers and the work beside a kernel's loop (a narrow
    # GEMM's input quantisation, an epilogue), in every piece
    launches = _bind(sum((op.node.repeat * (op.launch + op.serial_transfer + op.serial_work)
                          for op in stage.ops), sympy.Integer(0)), values, x)
    pieces = []
    for low, high, probe in _intervals(breakpoints):
        total = resolve_minmax(launches, x, probe)   # a one-row call's extra, a split of k
        for op, ct, mt in zip(stage.ops, compute, memory):
            if ct is None:
                ct = _bind(op.node.repeat * _compute_time_at(op, hw, x, values, probe), values, x)
            ct, mt = resolve_minmax(ct, x, probe), resolve_minmax(mt, x, probe)
            compute_wins = float(ct.subs(x, probe)) > float(mt.subs(x, probe))
            total += (ct if compute_wins else mt) if op.overlap else ct + mt
        condition = x < high if high != math.inf else True
        piece = sympy.expand(_bind(stage.steps, values, x) * total
                             + _bind(stage.server_time, values, x)).evalf(15)
        if pieces and pieces[-1][0] == piece:   # a breakpoint where nothing switched
            pieces.pop()
        pieces.append((piece, condition))
    return sympy.Piecewise(*pieces)


def _memory_bends(op: OpRoofline) -> bool:
    """Whether the op's memory time is more than its bytes over its bandwidth: a floor, an
    occupancy stretch (efficiency rows or tiles) or a split regime."""
    return bool(op.floor or op.fill_rows or op.fill_tiles or op.split)


def _compute_time_at(op: OpRoofline, hw: Hardware, x, values, probe) -> sympy.Expr:
    """The op's compute time with the peak of the compute type it has at bitwidth x = probe."""
    if op.compute_type is None:
        return op.compute_time
    ctype, kind = _kernel_at(op, hw, x, values, probe)
    return op.effective_flops / matrix_peak(op.node, hw, ctype, kind)


def _balance(compute: sympy.Expr, memory: sympy.Expr, x: sympy.Symbol):
    """(root of compute = memory, or None and why), interval by interval of min()/max()."""
    bound = not (compute + memory).free_symbols - {x}
    pieces = _intervals(minmax_breakpoints(compute + memory, x) if bound else [])
    for low, high, probe in pieces:
        c, m = resolve_minmax(compute, x, probe), resolve_minmax(memory, x, probe)
        for root, _, _ in roots_in(c - m, x, {}, low, high):
            return root, None
    c, m = (resolve_minmax(e, x, pieces[-1][2]) for e in (compute, memory))
    try:
        ratio = _limit(c / m, x) if m != 0 else sympy.oo
    except (NotImplementedError, TypeError, ValueError):   # a min/max of symbols left free
        free = ", ".join(sorted(s.name for s in (c / m).free_symbols - {x}))
        return None, (f"total compute time equals total memory time at no {x.name} found in "
                      f"closed form while {free} stays free")
    return None, (f"total compute time never equals total memory time; their ratio tends to "
                  f"{sympy.N(ratio, 4)} as {x.name} grows")


def stage_crossover(stage: StageRoofline, hw: Hardware, x: sympy.Symbol,
                    values: Mapping[sympy.Symbol, float],
                    ops: list[Crossover] | None = None) -> StageCrossover:
    ops = ops if ops is not None else stage_crossovers(stage, hw, x, values)
    compute, memory = _stage_sums(stage, values, x)
    balance, reason = _balance(compute, memory, x)
    turning = [c for c in ops if c.direction == "memory->compute" and c.value is not None]
    first = min(turning, key=lambda c: c.value) if turning else None
    numeric = [c.value for c in ops if c.value is not None]
    fully_bound = all(not (sympy.sympify(e).free_symbols - {x}) for e in (compute, memory))
    time = piecewise_time(stage, hw, x, values, numeric) if fully_bound else None
    steps = any(_has_steps(op.waves, x) for op in stage.ops)
    note = ("GEMM wave quantisation (the hardware's [efficiency.tile]) is smoothed in the "
            "stage balance and time (ceil(u) read as u: exact at whole waves); each GEMM's "
            "crossover above is the step at which it turns") if steps else None
    return StageCrossover(x, balance, float(balance) if balance is not None and balance.is_number
                          else None, reason, first, time, tuple(sorted(set(numeric))), note)


def solvable_symbol(name: str, free_params: tuple[str, ...]) -> sympy.Symbol:
    if name in S.RUNTIME and name != "gen":
        return S.RUNTIME[name]
    if name in free_params:
        return S.model_param(name)
    raise EvaluationError(f"cannot solve for {name!r}",
                          hint="solve for batch, seq, w_bits, a_bits, kv_bits, a model "
                               "parameter the file leaves free (`name = ?`), or a name a pass "
                               f"leaves free: --pass \"tensor_parallel(n={name})\"")


@dataclass(frozen=True)
class QuantCrossover:
    """Where a lower bitwidth stops saving time for one op, as x grows."""
    op: str
    expression: sympy.Expr | None
    value: float | None
    reason: str | None


def quantization_crossover(high: StageRoofline, low: StageRoofline, hw: Hardware,
                           x: sympy.Symbol, high_values: Mapping[sympy.Symbol, float],
                           low_values: Mapping[sympy.Symbol, float]) -> list[QuantCrossover]:
    """For each op, the x above which the `low` bitwidth setting no longer beats `high`.

    With operations F and bytes B_high > B_low, the saving is B_high / bandwidth - max(F / P_low,
    B_low / bandwidth) while `high` is memory-bound. If both settings compute in the same type,
    it vanishes exactly where `high` turns compute-bound (its crossover); if `low` computes in a
    slower type it vanishes where F * bandwidth = P_low * B_high; in a faster type, never.
    """
    out = []
    for a, b in zip(high.ops, low.ops):
        bytes_a, bytes_b = _bind(a.bytes, high_values, x), _bind(b.bytes, low_values, x)
        if sympy.simplify(bytes_a - bytes_b) == 0 or a.compute_type is None:
            out.append(QuantCrossover(a.node.name, None, None,
                                      "moves no tensor whose bitwidth changes: no saving"))
            continue
        p_a, p_b = a.peak, b.peak
        if p_b > p_a:
            out.append(QuantCrossover(a.node.name, None, None,
                                      f"the lower bitwidth computes in a faster type "
                                      f"({b.compute_type} vs {a.compute_type}): it saves at "
                                      f"every {x.name}"))
            continue
        flops = unquantised(_bind(a.effective_flops, high_values, x), x)
        moved = _moved_bytes(a, high_values, x)
        numbers = {S.peak: p_b, S.bandwidth: a.bandwidth}
        pieces = _pieces(flops, moved, x)
        roots = [r for low, high, probe in pieces
                 for r in roots_in(resolve_minmax(flops, x, probe) * S.bandwidth
                                   - S.peak * resolve_minmax(moved, x, probe), x, numbers,
                                   low, high)]
        if not roots:
            last = pieces[-1][2]
            intensity = resolve_minmax(flops, x, last) / resolve_minmax(moved, x, last)
            reason = (f"the higher bitwidth stays memory-bound at every {x.name}: the lower one "
                      f"always saves" if float(_limit(intensity, x)) < p_b / a.bandwidth else
                      f"compute-bound at every {x.name}: the lower bitwidth never saves")
            out.append(QuantCrossover(a.node.name, None, None, reason))
            continue
        root, value, _ = roots[0]
        out.append(QuantCrossover(a.node.name, root, float(value) if value.is_number else None,
                                  None))
    return out


@dataclass(frozen=True)
class VariantCrossing:
    """A value of x where the model and a variant of it (other parameter values: dense against
    sparse attention, say) take equal stage time."""
    expression: sympy.Expr
    value: float
    faster_above: str        # "model" or "variant": which one is faster just above it


def variant_crossover(base: StageRoofline, other: StageRoofline, hw: Hardware,
                      x: sympy.Symbol, values: Mapping[sympy.Symbol, float]
                      ) -> tuple[tuple[VariantCrossing, ...], str]:
    """Where the two stage times are equal: each a Piecewise in x (piecewise_time), their
    difference solved in closed form between the union of their breakpoints. Returns the
    crossings and a sentence on which is faster beyond the last one."""
    difference = piecewise_time(base, hw, x, values, []) - piecewise_time(other, hw, x, values, [])
    pieces = _intervals(minmax_breakpoints(difference, x))
    crossings = []
    for low, high, probe in pieces:
        g = resolve_minmax(difference, x, probe)
        # terms in 1 / x (a chunked scan's chunk states): the numerator has the same positive
        # roots, the denominator being a positive power of x
        for root, value, _ in roots_in(sympy.numer(sympy.together(g)), x, {}, low, high):
            after = float(g.subs(x, float(value) * (1 + 1e-6) + 1e-9))
            crossings.append(VariantCrossing(root, float(value),
                                             "variant" if after > 0 else "model"))
    far = max([pieces[-1][2]] + [2 * c.value for c in crossings])   # past every crossing
    tail = float(resolve_minmax(difference, x, far).subs(x, far))
    faster = "the variant" if tail > 0 else "this model" if tail < 0 else "neither"
    return tuple(crossings), f"{faster} is faster as {x.name} grows"


@dataclass(frozen=True)
class CrossoverAnswer:
    """Per-op and stage-level crossovers of one stage in one symbol."""
    stage: str
    symbol: sympy.Symbol
    bound: Mapping[str, float]          # the values the other symbols were bound to
    ops: tuple[Crossover, ...]
    summary: StageCrossover
    quantization: tuple[QuantCrossover, ...] | None = None
    versus: Mapping[str, float] | None = None
    time_model: str = "ideal"           # "ideal" or "efficiency" (achieved peak and bandwidth)
    stack: str | None = None            # the serving stack whose kernels priced it
    variant: Mapping[str, str] | None = None      # the parameters the variant sets
    variant_crossings: tuple[VariantCrossing, ...] | None = None
    variant_note: str | None = None
