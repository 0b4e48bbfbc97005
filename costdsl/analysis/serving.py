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

from .records import Settings
from .evaluate import compute_bound_share, stage_time
from ..hardware import Hardware
from .memory import evaluate_memory
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


def serve_curve(model, hw: Hardware, seq: int, gen: int, batches: np.ndarray | None,
                bits: dict) -> ServeCurve:
    """`batches` None: powers of two up to twice the largest batch that fits, so that the
    curve shows the memory limit."""
    base = Settings(1, seq, **bits).validate().values()
    last = seq + max(gen - 2, 0)  # tokens cached at the last decode step
    max_batch = model.fit(hw, seq=last + 1, batch=1, **bits).max_batch
    if batches is None:
        batches = 2 ** np.arange(0, max(1, int(np.log2(max(max_batch, 1))) + 2))
    b = batches.astype(float)
    prefill = model.roofline(hw, "prefill", **bits)
    decode = model.roofline(hw, "decode", **bits)
    ttft = stage_time(prefill, {**base, S.batch: b, S.seq: seq})
    cached = np.arange(seq, seq + gen - 1, dtype=float)  # gen - 1 decode steps
    if len(cached):
        steps = stage_time(decode, {**base, S.batch: b[:, None], S.seq: cached[None, :]})
        decode_total = steps.sum(axis=1)
        tpot = decode_total / len(cached)
    else:
        decode_total = tpot = np.zeros_like(b)
    memory = np.maximum(
        sum(evaluate_memory(model.memory("prefill"), {**base, S.batch: b, S.seq: seq})),
        sum(evaluate_memory(model.memory("decode"), {**base, S.batch: b, S.seq: last})))
    share = compute_bound_share(decode, {**base, S.batch: b, S.seq: seq})
    summary = model.crossover("batch", hw, "decode", seq=seq, **bits).summary
    first = summary.first_compute_bound
    return ServeCurve(seq, gen, batches, ttft, tpot, ttft + decode_total, memory,
                      np.asarray(share, dtype=float), hw.memory_bytes, max_batch,
                      summary.balance_value, first.value if first else None,
                      first.op if first else None)

