"""The data behind the curve plots, computed from the compiled expressions: stage time and
throughput against batch or seq with the crossovers to mark, and the memory breakdown against
seq. Plain records; plots.py only draws them."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .records import Settings
from .evaluate import stage_time, tokens_processed
from .memory import evaluate_memory
from .. import symbols as S


@dataclass(frozen=True)
class StageCurve:
    model: str
    hardware: str
    stage: str
    symbol: str                    # "batch" or "seq"
    fixed: dict                    # the other of the two, with its value
    x: np.ndarray
    time_s: np.ndarray
    tokens_per_s: np.ndarray
    first_op: str | None           # the first op to turn compute-bound, and where
    first_value: float | None
    balance_value: float | None    # where the stage's compute time equals its memory time


@dataclass(frozen=True)
class MemoryCurve:
    model: str
    hardware: str
    capacity_bytes: float
    batch: int
    seq: np.ndarray
    weights: np.ndarray            # bytes, at each seq, in the stage whose total is larger
    kv_cache: np.ndarray
    activations: np.ndarray
    kv_equals_weights: float | None   # seq where the KV cache outweighs the weights

    @property
    def first_out_of_memory(self) -> float | None:
        over = np.nonzero(self.weights + self.kv_cache + self.activations > self.capacity_bytes)[0]
        return float(self.seq[over[0]]) if len(over) else None


def stage_curve(model, hw, stage: str, symbol: str, values: np.ndarray, fixed: dict,
                bits: dict) -> StageCurve:
    settings = Settings(1, 1, **bits).validate()
    x = values.astype(float)
    grid = {**settings.values(), **{getattr(S, k): v for k, v in fixed.items()},
            getattr(S, symbol): x}
    t = stage_time(model.roofline(hw, stage, **settings.bits()), grid)
    tokens = tokens_processed(stage, grid[S.batch], grid[S.seq], grid.get(S.tokens, 1)) * \
        np.ones_like(x)
    summary = model.crossover(symbol, hw, stage, **{k: int(v) for k, v in fixed.items()},
                              **bits).summary
    first = summary.first_compute_bound
    return StageCurve(model.name, hw.name, stage, symbol, dict(fixed), x, t, tokens / t,
                      first.op if first else None, first.value if first else None,
                      summary.balance_value)


def memory_curve(model, hw, batch: int, seqs: np.ndarray, bits: dict) -> MemoryCurve:
    base = Settings(batch, 1, **bits).validate().values()
    x = seqs.astype(float)
    parts = [evaluate_memory(model.memory(stage), {**base, S.seq: x})[:3]
             for stage in ("prefill", "decode")]
    larger = np.argmax([sum(p) for p in parts], axis=0)
    w, kv, act = (np.choose(larger, [parts[0][i], parts[1][i]]) for i in range(3))
    crossing = model.fit(hw, seq=int(x[-1]), batch=batch, **bits).kv_crossover_value
    return MemoryCurve(model.name, hw.name, hw.memory_bytes, batch, x, w, kv, act, crossing)


@dataclass(frozen=True)
class SpeculativeCurves:
    """Speedup of speculative decoding against the acceptance rate (one curve per draft length
    k) at one batch, and against batch at the given rate and k."""
    model: str
    hardware: str
    drafter: str                   # "draft <model>", or "Medusa heads"
    batch: int
    seq: int
    k: int
    accept: float
    accept_grid: np.ndarray
    by_k: dict                     # k -> speedup over accept_grid
    break_even: dict               # k -> acceptance rate where speedup = 1 (or None)
    batches: np.ndarray
    speedup_by_batch: np.ndarray   # at `accept` and `k`
    stop_batch: float | None       # where speculation stops paying (None: not in reach)


def speculative_curves(model, hw, decoding, batch: int, seq: int, bits: dict,
                       batches: np.ndarray, ks=range(1, 9)) -> SpeculativeCurves:
    import sympy
    from dataclasses import replace
    from .speculative import ACCEPT
    grid = np.linspace(0.0, 1.0, 101)
    by_k, even = {}, {}
    if decoding.medusa:  # k heads' candidates, each count with its own heads in the graph
        heads, layers, lm_head = decoding.medusa
        ks = range(1, heads + 1)
    for k in ks:
        chain = replace(decoding, k=k, tree=None)
        if decoding.medusa:
            chain = replace(chain, medusa=(k, layers, lm_head))
        s = model.speculate(hw, chain, batch, seq, **bits)
        by_k[k] = np.asarray(sympy.lambdify(ACCEPT, s.speedup_expr, "numpy")(grid)) * \
            np.ones_like(grid)
        even[k] = s.break_even
    at_batch = np.array([model.speculate(hw, decoding, int(b), seq, **bits).speedup
                         for b in batches])
    stop = model.speculation_batch_limit(hw, decoding, seq, **bits)
    drafter = "Medusa heads" if decoding.medusa else f"draft {decoding.draft}"
    return SpeculativeCurves(model.name, hw.name, drafter, batch, seq, decoding.k,
                             decoding.accept, grid, by_k, even, batches.astype(float), at_batch,
                             stop)
