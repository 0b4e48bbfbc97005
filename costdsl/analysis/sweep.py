"""Grid sweeps: each stage's time, bound mix and memory lambdified once per (hardware,
bitwidths) and evaluated with numpy over the whole batch x seq (x tokens) grid in one call.

Ranges: `1:1000` every integer from 1 to 1000; `128:32768:log16` 16 log-spaced integers
(duplicates after rounding dropped); `1,2,4,8` a list. Bitwidth lists may hold fractions
(`4.125`).
"""
from __future__ import annotations

import itertools
import math
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

MAX_POINTS = 4_000_000  # beyond this a CSV is gigabytes: ask for log spacing instead


def parse_range(text: str, name: str, integer: bool = True,
                notes: list[str] | None = None) -> np.ndarray:
    """`a:b`, `a:b:logN` or `v1,v2,...` -> sorted unique values (see the module doc). Where
    rounding or repeats leave fewer values than asked, a line saying so goes to `notes`."""
    def number(t: str) -> float:
        try:
            v = float(t)
        except ValueError:
            raise CostDSLError(f"--{name} {text!r}: {t!r} is not a number") from None
        if not math.isfinite(v):
            raise CostDSLError(f"--{name} {text!r}: {t!r} is not a finite number")
        if integer and not v.is_integer():
            raise CostDSLError(f"--{name} {text!r}: {t!r} is not an integer")
        if v <= 0:
            raise CostDSLError(f"--{name} {text!r}: values must be positive")
        if v > S.MAX_SIZE:
            raise CostDSLError(f"--{name} {text!r}: {t} is more than {S.MAX_SIZE:.0e}, the "
                               f"largest size costdsl accepts")
        return v

    def count(n: float) -> int:  # checked from the range's arithmetic, before building it
        if n > MAX_POINTS:
            raise CostDSLError(f"--{name} {text!r} has {n:,.0f} values (more than "
                               f"{MAX_POINTS:,})", hint="use log spacing, e.g. 1:1e6:log64")
        return int(n)

    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise CostDSLError(f"--{name} {text!r}: expected a:b, a:b:logN or a list a,b,c")
        low, high = number(parts[0]), number(parts[1])
        if high < low:
            raise CostDSLError(f"--{name} {text!r}: the range is empty ({high:g} < {low:g})")
        if len(parts) == 2:
            if not integer:
                raise CostDSLError(f"--{name} {text!r}: a bitwidth range needs :logN or a list")
            values = np.arange(low, low + count(high - low + 1))
        else:
            step = parts[2]
            if not (step.startswith("log") and step[3:].isdigit() and int(step[3:]) >= 2):
                raise CostDSLError(f"--{name} {text!r}: the step must be logN with N >= 2, "
                                   f"e.g. {parts[0]}:{parts[1]}:log16")
            values = np.geomspace(low, high, count(int(step[3:])))
            if integer:
                values = np.round(values)
    else:
        items = [t for t in text.split(",") if t.strip()]
        values = np.array([number(t) for t in items[:count(len(items))]])
        if not len(values):
            raise CostDSLError(f"--{name}: no values given")
    unique = np.unique(values.astype(np.int64) if integer else values)
    if notes is not None and len(unique) < len(values):
        notes.append(f"--{name} {text}: {len(unique):,} distinct values of the {len(values):,} "
                     f"asked ({len(values) - len(unique):,} "
                     + ("rounded onto the same integer" if ":" in text else "repeated") + ")")
    return unique


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
