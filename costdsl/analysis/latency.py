"""Whole-request latency in closed form: prefill, then a decode step per generated token.

Timeline of a request with a prompt of `seq` tokens and `gen` generated tokens, for each of
`batch` sequences: prefill processes the prompt and emits token 1; decode step j (j = 1 ..
gen - 1) has seq + j - 1 tokens in the KV cache and emits token j + 1. So

    total(gen) = prefill(seq) + sum_{c = seq}^{seq + gen - 2} decode(c)

decode(c), the time of one step with c cached tokens, is a Piecewise of linear pieces in c whose
breakpoints are the ops' crossovers in seq; each piece sums in closed form (Faulhaber), so the
total is a Piecewise in `gen` whose breakpoints are where the last step crosses a breakpoint.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Callable

import numpy as np
import sympy

from .records import Settings, stage_result
from .crossover import stage_crossover
from .evaluate import evaluate, stage_time
from ..hardware import Hardware
from .roofline import StageRoofline
from .. import symbols as S


@dataclass(frozen=True)
class Latency:
    settings: Settings
    gen: int
    ttft_s: float                 # time to first token: the prefill (and the engine's
                                  # time per request, with a stack's framework figures)
    tpot_s: float                 # mean time per output token after the first
    e2e_s: float                  # end to end: prefill and every decode step
    time_model: str = "ideal"     # "ideal" or "efficiency": which model the times come from
    stack: str | None = None      # the serving stack whose kernels priced them (efficiency)
    framework: object = None      # its serving engine's figures (hardware Framework), if any
    closed_forms: Callable[[], tuple] | None = field(default=None, repr=False, compare=False)
    encoder: "Encoder | None" = None  # a multimodal prompt's vision encoder, in ttft_s
    """Builds (step time, decode total, request total) when first asked: solving the step's
    crossovers in seq and summing its pieces costs about a second, the numbers a millisecond."""
    memory: object = field(default=None, compare=False)
    """One device's bytes over the request (MemoryNumbers, read when first asked): the prefill's
    peak and the last decode step's, whose cache holds seq + gen - 1 tokens."""

    @cached_property
    def _forms(self) -> tuple:
        return self.closed_forms()

    @property
    def step_time(self) -> sympy.Expr:
        """One decode step, Piecewise in seq (tokens cached)."""
        return self._forms[0]

    @property
    def decode_total(self) -> sympy.Expr:
        """All decode steps, Piecewise in gen."""
        return self._forms[1]

    @property
    def request_total(self) -> sympy.Expr:
        """prefill + decode_total, in gen."""
        return self._forms[2]

    @property
    def tokens_per_s_per_user(self) -> float:
        return self.gen / self.e2e_s

    @property
    def tokens_per_s(self) -> float:
        return self.settings.batch * self.gen / self.e2e_s


def _pieces(piecewise: sympy.Expr):
    """[(expression, upper bound or None)] of a Piecewise built by crossover.piecewise_time."""
    if not isinstance(piecewise, sympy.Piecewise):  # one piece collapses to its expression
        return [(piecewise, None)]
    out = []
    for expr, cond in piecewise.args:
        out.append((expr, None if cond is sympy.true else float(cond.rhs)))
    return out


def decode_sum(step_time: sympy.Expr, seq0: int) -> sympy.Expr:
    """sum_{c = seq0}^{seq0 + gen - 2} step_time(c) as a Piecewise in gen."""
    c = sympy.Symbol("c", integer=True)
    pieces = []
    start = seq0                      # first cache length not yet summed
    done = sympy.Integer(0)           # sum over the pieces already passed
    for expr, upper in _pieces(step_time):
        last = None if upper is None else math.ceil(upper) - 1  # integer c < upper
        if last is not None and last < start:
            continue
        term = expr.subs(S.seq, c)
        partial = sympy.summation(term, (c, start, seq0 + S.gen - 2))
        if last is None:
            pieces.append((sympy.expand(done + partial), True))
            break
        pieces.append((sympy.expand(done + partial), S.gen <= last - seq0 + 2))
        done += sympy.summation(term, (c, start, last))
        start = last + 1
    return sympy.Piecewise(*pieces)


NUMERIC_STEPS = 2_000_000
"""Decode steps summed numerically (one vectorised evaluation of the compiled step time, a
few milliseconds); a longer request takes its total from the closed form."""


@dataclass(frozen=True)
class Encoder:
    """A multimodal prompt's vision encoder: its model, the prompt's image tokens, the patches
    it encodes for them (the merger's patches per token times those), and its kernels' time
    (the encoder runs in the prompt's iteration: the engine's step is the prefill's)."""
    model: str
    image_tokens: int
    patches: int
    time_s: float


def request_latency(prefill: StageRoofline, decode: StageRoofline, hw: Hardware,
                    settings: Settings, gen: int, encoder: Encoder | None = None) -> Latency:
    """The request's numbers now (the decode steps summed over every cache length: the same
    sum the closed form states), its closed forms when asked. With an encoder, the first token
    also waits for it."""
    # the prefill, and the serving engine's time per request before it (0 without figures)
    ttft = stage_result(prefill, settings).total.time_s + hw.request_s \
        + (encoder.time_s if encoder is not None else 0.0)

    def closed_forms() -> tuple:
        values = {k: v for k, v in settings.values().items() if k != S.seq}
        step = stage_crossover(decode, hw, S.seq, values).time
        total = decode_sum(step, settings.seq)
        return step, total, sympy.Float(ttft, 15) + total

    latency = Latency(settings, gen, ttft, 0.0, ttft, hw.time_model, hw.stack, hw.framework,
                      closed_forms, encoder)
    if gen <= 1:
        return latency
    if gen - 1 <= NUMERIC_STEPS:
        total_decode = _decode_steps(decode, settings, gen)
    else:
        total_decode = float(latency.decode_total.subs(S.gen, gen))
    return replace(latency, tpot_s=total_decode / (gen - 1), e2e_s=ttft + total_decode)


def _decode_steps(decode: StageRoofline, settings: Settings, gen: int) -> float:
    """sum_{c = seq}^{seq + gen - 2} decode(c), every step evaluated (stage_time's compiled
    function, from the compile cache where it is warm)."""
    cached = np.arange(settings.seq, settings.seq + gen - 1, dtype=float)
    return float(np.sum(stage_time(decode, {**settings.values(), S.seq: cached})))


def stepwise_decode_total(decode: StageRoofline, settings: Settings, gen: int) -> float:
    """The same sum done step by step (numerically, every cache length), to check the closed
    form against."""
    if gen <= 1:
        return 0.0
    cached = np.arange(settings.seq, settings.seq + gen - 1)
    values = {**settings.values(), S.seq: cached}
    numbers = evaluate(decode, values)
    return float(numbers.stage_time().sum())
