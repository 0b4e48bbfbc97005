"""Serving metrics of a batch of requests (prompt `seq`, `gen` generated tokens each) over a
range of batch sizes, vectorised: time to first token (the prefill), time per output token
(mean decode step), end-to-end latency, tokens/s per user and in total, and memory at the end
of the request, when the cache is longest.

Decode step j (j = 1 .. gen - 1) has seq + j - 1 tokens cached (see latency.py); all steps of
all batch sizes are one numpy evaluation of the decode stage's time expression.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import EvaluationError
from ..analysis.records import Settings
from ..analysis.evaluate import compute_bound_share, stage_time
from ..hardware import Hardware
from ..analysis.memory import evaluate_memory
from .. import symbols as S


@dataclass(frozen=True)
class ServeCurve:
    seq: int
    gen: int
    batch: np.ndarray
    ttft_s: np.ndarray
    tpot_s: np.ndarray
    e2e_s: np.ndarray
    memory_bytes: np.ndarray
    decode_compute_share: np.ndarray   # of the first decode step's time
    capacity_bytes: float
    max_batch: int                     # the largest batch that fits (closed form)
    decode_balance_batch: float | None  # batch where decode compute time = memory time
    first_compute_batch: float | None   # batch where the first decode op turns compute-bound
    first_compute_op: str | None

    @property
    def tokens_per_s_per_user(self) -> np.ndarray:
        return self.gen / self.e2e_s

    @property
    def tokens_per_s(self) -> np.ndarray:
        return self.batch * self.gen / self.e2e_s

    @property
    def fits(self) -> np.ndarray:
        return self.memory_bytes <= self.capacity_bytes


MAX_STEP_POINTS = 50_000_000
"""Decode steps evaluated by one serving curve (batches x generated tokens): about a second per
ten million on a laptop core. Above it the curve is refused with a hint instead of running for
minutes."""

_CHUNK_POINTS = 1_000_000  # steps evaluated at once: bounds the memory of the grid


def _decode_totals(decode, base: dict, batches: np.ndarray, seq: int, gen: int) -> np.ndarray:
    """Total time of the gen - 1 decode steps (cache seq, seq + 1, ...) at each batch,
    evaluated in blocks of batches so that memory stays bounded whatever batch x gen is."""
    steps = gen - 1
    if steps == 0:
        return np.zeros_like(batches)
    if len(batches) * steps > MAX_STEP_POINTS:
        raise EvaluationError(
            f"the serving curve would evaluate {len(batches):,} batch sizes x {steps:,} decode "
            f"steps, more than {MAX_STEP_POINTS:,}",
            hint="give fewer batch sizes (a log range such as 1:4096:log13) or a shorter --gen")
    cached = np.arange(seq, seq + steps, dtype=float)
    rows = max(1, _CHUNK_POINTS // steps)
    totals = [stage_time(decode, {**base, S.batch: block[:, None], S.seq: cached[None, :]})
              .sum(axis=1) for block in np.array_split(batches, -(-len(batches) // rows))]
    return np.concatenate(totals)


def serve_curve(model, hw: Hardware, seq: int, gen: int, batches: np.ndarray | None,
                bits: dict) -> ServeCurve:
    """`batches` None: powers of two up to twice the largest batch that fits, so that the
    curve shows the memory limit."""
    base = Settings(1, seq, **bits).validate().values()
    last = seq + max(gen - 2, 0)  # tokens cached at the last decode step
    max_batch = model.max_batch(hw, seq=last + 1, **bits)
    if batches is None:
        batches = 2 ** np.arange(0, max(1, int(np.log2(max(max_batch, 1))) + 2))
    b = batches.astype(float)
    prefill = model.roofline(hw, "prefill", **bits)
    decode = model.roofline(hw, "decode", **bits)
    ttft = stage_time(prefill, {**base, S.batch: b, S.seq: seq})
    decode_total = _decode_totals(decode, base, b, seq, gen)
    tpot = decode_total / max(gen - 1, 1)
    memory = np.maximum(
        sum(evaluate_memory(model.memory("prefill"), {**base, S.batch: b, S.seq: seq})[:3]),
        sum(evaluate_memory(model.memory("decode"), {**base, S.batch: b, S.seq: last})[:3]))
    share = compute_bound_share(decode, {**base, S.batch: b, S.seq: seq})
    summary = model.crossover("batch", hw, "decode", seq=seq, **bits).summary
    first = summary.first_compute_bound
    return ServeCurve(seq, gen, batches, ttft, tpot, ttft + decode_total, memory,
                      np.asarray(share, dtype=float), hw.memory_bytes, max_batch,
                      summary.balance_value, first.value if first else None,
                      first.op if first else None)



@dataclass(frozen=True)
class SpeculativeServing:
    """A decoding strategy's time per token at each batch of a serving curve, next to plain
    decoding's; taken at the request's mean cache length, where step times linear in the cache
    equal their mean over the request."""
    params: dict
    tpot_s: np.ndarray
    speedup: np.ndarray


def speculative_serving(model, hw: Hardware, decoding, curve: ServeCurve,
                        bits: dict) -> SpeculativeServing:
    seq = curve.seq + (curve.gen - 1) // 2
    specs = [model.speculate(hw, decoding, int(b), seq, **bits) for b in curve.batch]
    return SpeculativeServing({"strategy": decoding.strategy, **decoding.params()},
                              np.array([s.time_per_token_s for s in specs]),
                              np.array([s.speedup for s in specs]))
