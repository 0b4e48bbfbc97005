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
from ..analysis.numbers import check_named
from ..analysis.trees import CorruptEntry, compile_trees
from ..hardware import Hardware


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


class ServeProgram:
    """A serving curve's closed forms, compiled once from their record (api's
    `Model.serve_record`): the prefill and decode step times and the decode's compute-bound
    time as functions of batch and cache length, each stage's memory, and the answers that do
    not depend on the batch (the largest batch that fits, the decode crossovers). The record is
    data, so a curve at other batch sizes is read back from the cache without the compiler."""

    def __init__(self, record: dict):
        self.symbols = tuple(record["symbols"])
        if not all(isinstance(s, str) for s in self.symbols):
            raise CorruptEntry("malformed symbols")
        # one function per total: a sum over decode steps evaluates only the decode's
        self._times = {k: compile_trees([record["times"][k]], self.symbols) for k in _TIMES}
        self._memory = {stage: (tuple(m["symbols"]), compile_trees(m["rows"][:3], m["symbols"]))
                        for stage, m in record["memory"].items()}
        self.max_batch = int(record["max_batch"])
        self.balance = _optional(record["balance"])
        first = record["first"]
        self.first_value = _optional(first["value"]) if first else None
        self.first_op = str(first["op"]) if first else None

    def _time(self, which: str, values: dict) -> np.ndarray:
        args = _args(self.symbols, values)
        (time,) = self._times[which](*args)
        return np.broadcast_to(np.asarray(time, dtype=float),
                               np.broadcast_shapes(*(np.shape(a) for a in args)))

    def _memory_bytes(self, stage: str, values: dict) -> np.ndarray:
        symbols, f = self._memory[stage]
        args = _args(symbols, values)
        shape = np.broadcast_shapes(*(np.shape(a) for a in args))
        return sum(np.broadcast_to(np.asarray(v, dtype=float), shape) for v in f(*args))

    def curve(self, hw: Hardware, seq: int, gen: int, batches: np.ndarray | None,
              bits: dict) -> ServeCurve:
        """`batches` None: powers of two up to twice the largest batch that fits, so that the
        curve shows the memory limit."""
        base = Settings(1, seq, **bits).validate().named()
        last = seq + max(gen - 2, 0)  # tokens cached at the last decode step
        if batches is None:
            batches = 2 ** np.arange(0, max(1, int(np.log2(max(self.max_batch, 1))) + 2))
        b = batches.astype(float)
        ttft = self._time("prefill", {**base, "batch": b, "seq": seq}) + hw.request_s
        decode_total = self._decode_totals(base, b, seq, gen)
        tpot = decode_total / max(gen - 1, 1)
        memory = np.maximum(self._memory_bytes("prefill", {**base, "batch": b, "seq": seq}),
                            self._memory_bytes("decode", {**base, "batch": b, "seq": last}))
        at_seq = {**base, "batch": b, "seq": seq}
        share = self._time("compute_bound", at_seq) / self._time("decode", at_seq)
        return ServeCurve(seq, gen, batches, ttft, tpot, ttft + decode_total, memory,
                          np.asarray(share, dtype=float), hw.memory_bytes, self.max_batch,
                          self.balance, self.first_value, self.first_op)

    def _decode_totals(self, base: dict, batches: np.ndarray, seq: int, gen: int) -> np.ndarray:
        """Total time of the gen - 1 decode steps (cache seq, seq + 1, ...) at each batch,
        evaluated in blocks of batches so that memory stays bounded whatever batch x gen is."""
        steps = gen - 1
        if steps == 0:
            return np.zeros_like(batches)
        if len(batches) * steps > MAX_STEP_POINTS:
            raise EvaluationError(
                f"the serving curve would evaluate {len(batches):,} batch sizes x {steps:,} "
                f"decode steps, more than {MAX_STEP_POINTS:,}",
                hint="give fewer batch sizes (a log range such as 1:4096:log13) or a shorter "
                     "--gen")
        cached = np.arange(seq, seq + steps, dtype=float)
        rows = max(1, _CHUNK_POINTS // steps)
        totals = [self._time("decode", {**base, "batch": block[:, None], "seq": cached[None, :]})
                  .sum(axis=1) for block in np.array_split(batches, -(-len(batches) // rows))]
        return np.concatenate(totals)


_TIMES = ("prefill", "decode", "compute_bound")


def _optional(x) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise CorruptEntry(f"a value is {x!r}")
    return float(x)


def _args(symbols, values: dict) -> list:
    check_named(symbols, values)
    return [np.asarray(values[s], dtype=float) for s in symbols]


def serve_curve(model, hw: Hardware, seq: int, gen: int, batches: np.ndarray | None,
                bits: dict) -> ServeCurve:
    """The curve of `model` (compiled): its record, then the same program a cached record
    gives."""
    return ServeProgram(model.serve_record(hw, seq, gen, bits)).curve(hw, seq, gen, batches,
                                                                      bits)


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
