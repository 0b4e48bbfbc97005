"""When contextual sparsity (Deja Vu; the survey's sections 4.1.3-4.1.4) pays, in closed form.

For one group of the `contextual_sparsity` pass (the MLP neurons, or the attention heads), with a
fraction s skipped per token and a predictor of P weight bytes per step, the group's W weight
bytes are read as the expected union over the n token rows of a step: W (1 - s^n). Where the
step is memory-bound and its weights dominate the group's traffic (decode at small batch, the
regime Deja Vu targets), the sparse group costs less than the dense one exactly when the saving
W s^n exceeds the predictor's P, so:

- the sparsity at which the predictor eats the saving:   s* = (P / W)^(1/n)
- the batch above which sparsity stops paying (n = b t): b* = ln(P / W) / (t ln s)
- the batch at which the union of kept rows reaches a fraction q of dense (1 - s^n = q):
  b_q = ln(1 - q) / (t ln s), with no cost model at all.

P, W and n come from the compiled graph, not from a second formula. The first two are the
weights-only balance; each answer also carries the exact value from the whole time model (every
op's max of compute and memory time, activations and the KV cache included, efficiencies where
the hardware file has them): a root of T_sparse - T_dense found numerically (the time is a sum
of maxima of terms in s^n), so the two can be compared: they agree where the balance's
assumptions hold, and the exact one is the answer where they do not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import sympy

from ..symbols import to_bytes
from .. import symbols as S
from .crossover import bracketed_root, numeric_roots
from .roofline import StageRoofline

SPARSITY = sympy.Symbol("sparsity", nonnegative=True)
"""The skipped fraction of the group being asked about, kept symbolic in the sparse graph."""


@dataclass(frozen=True)
class SparsityAnswer:
    group: str                       # "mlp" or "heads"
    question: str                    # break_even_sparsity | stop_paying_batch | dense_batch
    expression: sympy.Expr | None    # the closed form (in `sparsity` or in batch)
    closed_value: float | None       # its value at the operating point
    value: float | None              # the exact value from the whole time model
    note: str = ""


def _weights(sparse: StageRoofline, values: dict) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr]:
    """(W, P, n): the group's dense weight bytes, its predictors' bytes (both summed over the
    ops' occurrences) and the token rows of a step whose union the weights are read over."""
    w, p, rows = sympy.Integer(0), sympy.Integer(0), None
    bits = {k: v for k, v in values.items() if k in S.BITS_BY_CLASS.values()}
    for o in sparse.ops:
        node = o.node
        for a in node.reads:
            if a.cls != "weight":
                continue
            size = node.repeat * to_bytes(a.elements, node.stored_bits("weight")).xreplace(bits)
            if a.tensor.endswith(".predictor"):
                p += size
            elif SPARSITY in a.elements.free_symbols:
                w += size.xreplace({SPARSITY: 0})
                if rows is None:
                    rows = next(x.exp for x in a.elements.atoms(sympy.Pow)
                                if x.base == SPARSITY)
    return sympy.nsimplify(w), sympy.nsimplify(p), rows


def _time(stage: StageRoofline, values: dict) -> sympy.Expr:
    return sympy.sympify(stage.time).xreplace(values)


def sparsity_answers(group: str, dense: StageRoofline, sparse: StageRoofline, given: float,
                     values: dict, dense_fraction: float = 0.95) -> list[SparsityAnswer]:
    """The three answers for one group at the operating point `values` (batch, seq, tokens,
    bitwidths), `given` being the group's skipped fraction as the pass states it."""
    w, p, rows = _weights(sparse, values)
    if rows is None or w == 0:
        return []
    out = []
    ratio = p / w
    per_batch = sympy.cancel(rows / S.batch)           # rows per sequence: 1 in decode
    at = {k: v for k, v in values.items() if k != S.batch}
    n = rows.xreplace(values)
    # 1. the sparsity where the predictor eats the saving, at this batch
    even = ratio ** (1 / rows) if p != 0 else sympy.Integer(0)
    exact = bracketed_root(_time(sparse, values) - _time(dense, values), SPARSITY, 0.0, 1.0)
    out.append(SparsityAnswer(group, "break_even_sparsity", even,
                              float(even.xreplace(values)), exact,
                              f"n = {_int(n)} rows per step; the predictors weigh "
                              f"{float(ratio):.4g} of the group's weights" if p != 0 else
                              "no predictor: any sparsity pays"))
    # 2. the batch above which the given sparsity stops paying
    if p != 0 and 0 < given < 1:
        stop = sympy.log(ratio) / (per_batch * sympy.log(SPARSITY))
        g = (_time(sparse, {**at, SPARSITY: given}) - _time(dense, at))
        roots = numeric_roots(g, S.batch, 1.0, float(S.MAX_SIZE)) if g.free_symbols == {
            S.batch} else []
        out.append(SparsityAnswer(group, "stop_paying_batch", stop,
                                  float(stop.xreplace({**at, SPARSITY: given})),
                                  roots[0] if roots else None,
                                  "" if roots else "the whole time model finds no such batch "
                                  "below 1e9: what else the group saves (the heads' KV-cache "
                                  "reads) outweighs the predictor"))
    # 3. the batch at which the union of kept rows reaches `dense_fraction` of dense
    if 0 < given < 1:
        union = sympy.log(1 - sympy.nsimplify(dense_fraction)) / (per_batch
                                                                  * sympy.log(SPARSITY))
        value = float(union.xreplace({**at, SPARSITY: given}))
        out.append(SparsityAnswer(group, "dense_batch", union, value, value,
                                  f"1 - sparsity^n = {dense_fraction:g}: a batch reads that "
                                  "share of the weights"))
    return out


def _int(x) -> str:
    v = float(x)
    return f"{int(v)}" if math.isfinite(v) and v == int(v) else f"{v:g}"
