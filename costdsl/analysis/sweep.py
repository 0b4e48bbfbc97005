"""Grid sweeps: each stage's time, bound mix and memory lambdified once per (hardware,
bitwidths) and evaluated with numpy over the whole batch x seq (x tokens) grid in one call.
The ranges a sweep takes: costdsl.ranges.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from .records import Settings, check_stages
from ..errors import CostDSLError
from .evaluate import compute_bound_share, stage_time, tokens_processed
from ..hardware import Hardware
from .memory import evaluate_memory
from .. import progress
from .. import symbols as S

from ..ranges import MAX_POINTS, parse_range


@dataclass(frozen=True)
class SweepTable:
    """Column arrays, one entry per grid point."""
    columns: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.columns.values())))


def sweep(model, hardware: Sequence[Hardware], batches: np.ndarray, seqs: np.ndarray,
          bits: Iterable[tuple[float, float, float]], stages: Sequence[str],
          tokens: np.ndarray | None = None, decoding=None) -> SweepTable:
    """Every combination of hardware x bitwidths x batch x seq (x tokens, for the step stage).
    Per stage: time, tokens/s, share of time in compute-bound ops; with a decoding strategy its
    time per token and speedup over plain decoding (cache = seq); and the memory peak over the
    stages with `fits`."""
    bits = list(bits)
    check_stages(None if tokens is None else int(tokens[0]), tuple(stages))
    sizes = [batches, seqs] + ([] if tokens is None else [tokens])
    points = len(hardware) * len(bits) * int(np.prod([len(v) for v in sizes]))
    if points > MAX_POINTS:
        raise CostDSLError(f"the sweep has {points:,} points (more than {MAX_POINTS:,})",
                           hint="use log spacing, e.g. --seq 128:32768:log32")
    grid = [g.ravel() for g in np.meshgrid(*(v.astype(float) for v in sizes), indexing="ij")]
    b, s = grid[0], grid[1]
    t_new = grid[2] if tokens is not None else None
    blocks = []
    for hw, (w, a, kv) in progress.steps("sweep: hardware x bitwidths",
                                         list(itertools.product(hardware, bits))):
        settings = Settings(1, 1, w, a, kv).validate()
        values = {**settings.values(), S.batch: b, S.seq: s,
                  **({} if t_new is None else {S.tokens: t_new})}
        cols = {"hardware": np.full(len(b), hw.key, dtype=object), "batch": b.astype(np.int64),
                "seq": s.astype(np.int64),
                **({} if t_new is None else {"tokens": t_new.astype(np.int64)}),
                "w_bits": np.full(len(b), float(w)),
                "a_bits": np.full(len(b), float(a)), "kv_bits": np.full(len(b), float(kv))}
        memory = 0.0
        for stage in stages:
            grid = model.grid_functions(hw, stage, settings)
            if grid.available:   # compiled from the cache's trees (or stored in it now)
                t = grid(0, values)
                share = grid(1, values) / t
                held = grid(2, values) + grid(3, values) + grid(4, values)
            else:
                symbolic = model.roofline(hw, stage, **settings.bits())
                t = stage_time(symbolic, values)
                share = compute_bound_share(symbolic, values, t)
                held = sum(evaluate_memory(model.memory(stage), values)[:3])
            cols[f"{stage}_time_s"] = t
            cols[f"{stage}_tokens_per_s"] = tokens_processed(stage, b, s, t_new) / t
            cols[f"{stage}_compute_share"] = share
            memory = np.maximum(memory, held)
        if decoding is not None:  # the strategy's time per token at each (batch, seq)
            per_token, speedup = model.speculation_grid(hw, decoding, values)
            cols["decoding_time_per_token_s"] = np.broadcast_to(per_token, b.shape)
            cols["decoding_speedup"] = np.broadcast_to(speedup, b.shape)
        # bytes as float64 in every sweep (a model whose memory does not vary would give ints)
        cols["memory_bytes"] = np.broadcast_to(np.asarray(memory, dtype=float), b.shape)
        cols["fits"] = cols["memory_bytes"] <= hw.memory_bytes
        blocks.append(cols)
    if len(blocks) == 1:   # one hardware and bitwidth: the columns as they are
        return SweepTable({k: np.ascontiguousarray(v) for k, v in blocks[0].items()})
    return SweepTable({k: np.concatenate([c[k] for c in blocks]) for k in blocks[0]})


def bit_combinations(w: str, a: str, kv: str) -> list[tuple[float, float, float]]:
    lists = [parse_range(t, n, integer=False) for t, n in ((w, "w-bits"), (a, "a-bits"),
                                                            (kv, "kv-bits"))]
    for values, name in zip(lists, ("w-bits", "a-bits", "kv-bits")):
        bad = [v for v in values if not S.is_bitwidth(v)]
        if bad:
            raise CostDSLError(f"--{name}: a bitwidth must be in {S.BITS_RANGE}, got {bad[0]:g}")
    return [tuple(float(x) for x in c) for c in itertools.product(*lists)]
