"""Numbers last: substitute values into a stage's expressions, vectorised with numpy.

One `lambdify` per stage turns every op's operations, bytes (by class) and repeat count into a
numpy function; all derived numbers (intensity, times, bound) are then array arithmetic, so the
same path serves one configuration or a grid of a million.
"""
from __future__ import annotations

import functools
from functools import cached_property
import weakref
from dataclasses import dataclass
from typing import Mapping

import numpy as np
import sympy

from ..errors import EvaluationError
from ..graph.schema import CLASSES
from .. import symbols as S
from .compiled import cached_functions
from .roofline import StageRoofline, compute_seconds, memory_seconds


@dataclass(frozen=True)
class StageNumbers:
    """Numbers of one stage. Per-op arrays have the op on axis 0, then the grid's shape; the
    derived arrays (bytes, times, intensity) are computed once, on first use."""
    stage: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    compute_types: tuple[str | None, ...]
    repeat: np.ndarray
    flops: np.ndarray
    bytes_by_class: Mapping[str, np.ndarray]
    peak: np.ndarray
    bandwidth: np.ndarray | float            # bytes/s, per op (efficiencies differ by family)
    vector_flops: np.ndarray | float = 0.0   # the part of flops run at vector_peak
    vector_peak: np.ndarray | float = np.inf
    fused_from: tuple[tuple[str, ...], ...] = ()
    launch: np.ndarray | float = 0.0         # seconds per occurrence (efficiency model)
    transfer_time: np.ndarray | float = 0.0  # channel time beside the kernel (collectives,
                                             # overlapped host streams)
    serial_time: np.ndarray | float = 0.0    # channel time after it (host, no overlap)
    channels: tuple[str | None, ...] = ()    # the channel of each op's transfers
    schedule: tuple[int, int] = (1, 1)       # (pipeline stages, microbatches)
    occupancy: np.ndarray | float = 1.0      # memory time's stretch when rows leave SMs idle
    overlap: np.ndarray | bool = True        # False: memory time adds to compute (efficiency)
    waves: np.ndarray | float = 1.0          # matrix work's wave quantisation factor (tile)

    @cached_property
    def bytes(self) -> np.ndarray:
        return sum(self.bytes_by_class.values())

    @cached_property
    def intensity(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.bytes > 0, self.flops / np.where(self.bytes > 0, self.bytes, 1),
                            np.inf)

    @cached_property
    def compute_time(self) -> np.ndarray:
        # ops without arithmetic have peak inf: 0 / inf is 0, no warning to silence
        matrix = (self.flops - self.vector_flops) * self.waves
        return compute_seconds(matrix + self.vector_flops, self.vector_flops, self.peak,
                               self.vector_peak)

    @cached_property
    def device_memory_time(self) -> np.ndarray:
        return memory_seconds(self.bytes, self.bandwidth) * self.occupancy

    @cached_property
    def memory_time(self) -> np.ndarray:
        return self.device_memory_time + self.transfer_time

    @cached_property
    def time(self) -> np.ndarray:
        kernel = np.where(self.overlap, np.maximum(self.compute_time, self.memory_time),
                          self.compute_time + self.memory_time)
        return kernel + self.launch + self.serial_time

    @cached_property
    def compute_bound(self) -> np.ndarray:
        return self.compute_time > self.memory_time

    def bounds(self) -> list[str]:
        """What bounds each op (one configuration): "compute", "memory", or the channel its
        transfers take ("link", "network", "host") when they outlast the device memory time."""
        compute, memory = self.compute_time, self.memory_time
        transfer = self.transfer_time + self.serial_time
        device = self.device_memory_time
        serial = np.broadcast_to(self.serial_time, compute.shape)
        transfer = np.broadcast_to(transfer, compute.shape)
        out = []
        for i in range(len(self.names)):
            channel = self.channels[i] if self.channels else None
            if compute[i] > memory[i] and not serial[i]:
                out.append("compute")
            elif channel and transfer[i] > device[i]:
                out.append(channel)
            else:
                out.append("compute" if compute[i] > memory[i] else "memory")
        return out

    @property
    def microbatches(self) -> int:
        return self.schedule[1]

    @property
    def bubble_steps(self) -> int:
        """Stage times a pipeline's fill and drain leave idle: n - 1."""
        return self.schedule[0] - 1

    @property
    def attainable(self) -> np.ndarray:
        return np.minimum(self.peak, self.intensity * self.bandwidth)

    def total(self, per_op: np.ndarray) -> np.ndarray:
        """Sum over all occurrences of every op (every microbatch of a pipeline)."""
        if self.repeat.ndim == 1 and np.ndim(per_op) == 1:   # one configuration
            return self.microbatches * float(self.repeat @ per_op)
        return self.microbatches * (self.repeat * per_op).sum(axis=0)

    def stage_time(self) -> np.ndarray:
        """The step's time: every op's occurrences, and a pipeline's bubble."""
        return self.total(self.time) * (1 + self.bubble_steps / self.microbatches)


def check_bound(symbols, values: Mapping[sympy.Symbol, object]) -> None:
    """EvaluationError naming every symbol of `symbols` that `values` leaves free."""
    missing = [s for s in symbols if s not in values]
    if missing:
        names = ", ".join(s.name for s in missing)
        raise EvaluationError(f"parameter {names} is still free at evaluation",
                              hint=f"bind it with --set {missing[0].name}=VALUE")


def bound_args(symbols, values: Mapping[sympy.Symbol, object]):
    """The values of `symbols` as float arrays, and the shape they broadcast to."""
    check_bound(symbols, values)
    scalars = [values[s] for s in symbols]
    if all(isinstance(v, (int, float)) for v in scalars):   # one configuration: no arrays
        return [float(v) for v in scalars], ()
    args = [np.asarray(values[s], dtype=float) for s in symbols]
    return args, (np.broadcast_shapes(*(a.shape for a in args)) if args else ())


@functools.lru_cache(maxsize=64)
def stage_rows(stage: StageRoofline):
    """Per stage: the symbols and the rows [repeat..., flops..., bytes by class...,
    vector flops..., transfers..., occupancy..., waves...] of every op."""
    rows = [o.node.repeat for o in stage.ops] + [o.flops for o in stage.ops]
    for cls in CLASSES:
        rows += [o.bytes_by_class[cls] for o in stage.ops]
    rows += [o.vector_flops for o in stage.ops]
    rows += [o.overlapped_transfer for o in stage.ops] + [o.serial_transfer for o in stage.ops]
    rows += [o.occupancy for o in stage.ops] + [o.waves for o in stage.ops]
    rows = [sympy.sympify(r) for r in rows]
    symbols = sorted(set().union(*(r.free_symbols for r in rows)), key=lambda s: s.name)
    return symbols, rows


@functools.lru_cache(maxsize=64)
def _compiled(stage: StageRoofline):
    symbols, rows = stage_rows(stage)
    return sympy.lambdify(symbols, rows, modules="numpy")


@functools.lru_cache(maxsize=64)
def _compiled_scalar(stage: StageRoofline):
    """The rows for one configuration: plain floats, no array overhead per operation."""
    symbols, rows = stage_rows(stage)
    return sympy.lambdify(symbols, rows, modules="math")


_SEEN: "weakref.WeakSet[StageRoofline]" = weakref.WeakSet()


def _table(stage: StageRoofline, values) -> tuple[np.ndarray, tuple[int, ...]]:
    symbols, rows = stage_rows(stage)
    args, shape = bound_args(symbols, values)
    if not shape and stage not in _SEEN:
        # one configuration, first time: substituting is cheaper than compiling (lambdify
        # prints and compiles code); a stage evaluated again is compiled and reused
        _SEEN.add(stage)
        numbers = {s: sympy.Float(float(a)) for s, a in zip(symbols, args)}
        return np.array([float(r.xreplace(numbers)) for r in rows]), shape
    if not shape:   # one configuration: Python floats through the math module's functions
        return np.array(_compiled_scalar(stage)(*(float(a) for a in args)), dtype=float), shape
    out = _compiled(stage)(*args)
    return np.array([np.broadcast_to(np.asarray(v, dtype=float), shape) for v in out]), shape


@functools.lru_cache(maxsize=64)
def static_numbers(stage: StageRoofline) -> dict:
    """What of a stage's numbers no value changes: names, kinds, and the hardware's rates."""
    ops = stage.ops
    return dict(names=tuple(o.node.name for o in ops), kinds=tuple(o.node.kind for o in ops),
                compute_types=tuple(o.compute_type for o in ops),
                peak=np.array([o.peak for o in ops]), bandwidth=np.array([o.bandwidth for o in ops]),
                vector_peak=np.array([o.vector_peak for o in ops]),
                launch=np.array([o.launch for o in ops]),
                overlap=np.array([o.overlap for o in ops]),
                fused_from=tuple(o.node.fused_from for o in ops),
                channels=tuple(o.channel for o in ops))


def evaluate(stage: StageRoofline, values: Mapping[sympy.Symbol, object]) -> StageNumbers:
    """Substitute `values` (numbers or numpy arrays, broadcast together) into every op."""
    table, shape = _table(stage, values)
    n = len(stage.ops)
    extra = (1,) * len(shape)
    fixed = static_numbers(stage)
    rates = {k: fixed[k].reshape((n,) + extra) if extra else fixed[k]
             for k in ("peak", "bandwidth", "vector_peak", "launch", "overlap")}
    k = len(CLASSES)
    return StageNumbers(
        stage=stage.stage, names=fixed["names"], kinds=fixed["kinds"],
        compute_types=fixed["compute_types"],
        repeat=table[:n],
        flops=table[n:2 * n],
        bytes_by_class={c: table[(2 + i) * n:(3 + i) * n] for i, c in enumerate(CLASSES)},
        peak=rates["peak"], bandwidth=rates["bandwidth"],
        vector_flops=table[(2 + k) * n:(3 + k) * n],
        vector_peak=rates["vector_peak"],
        fused_from=fixed["fused_from"],
        launch=rates["launch"], overlap=rates["overlap"],
        transfer_time=table[(3 + k) * n:(4 + k) * n],
        serial_time=table[(4 + k) * n:(5 + k) * n],
        occupancy=table[(5 + k) * n:(6 + k) * n],
        waves=table[(6 + k) * n:(7 + k) * n],
        channels=fixed["channels"], schedule=_schedule(stage.schedule, values))


def _schedule(schedule: tuple[int, int], values) -> tuple:
    """(stages, microbatches used): at most one microbatch per sequence of the batch."""
    stages, microbatches = schedule
    if microbatches > 1 and S.batch in values:
        return stages, np.minimum(microbatches, np.asarray(values[S.batch], dtype=float))
    return schedule


def _compute_bound_time(stage: StageRoofline) -> sympy.Expr:
    """Time spent in ops that are compute-bound: sum of repeat x compute time where it wins."""
    return stage.steps * sympy.Add(*(o.node.repeat * sympy.Piecewise(
        (o.compute_time + o.launch + (0 if o.overlap else o.memory_time),
         o.compute_time > o.memory_time), (0, True))
        for o in stage.ops if o.compute_type))


_EXPRESSIONS = {"time": lambda st: st.time, "compute_bound_time": _compute_bound_time}


def total_expression(stage: StageRoofline, what: str) -> sympy.Expr:
    """The stage's "time" or "compute_bound_time" as one expression."""
    return _EXPRESSIONS[what](stage)


class GridFunctions:
    """A stage's grid functions (analysis.compiled): time, compute-bound time and the memory
    rows, each a numpy function of the named symbols; None when compiled the sympy way."""

    def __init__(self, compiled):
        self.available = compiled is not None
        self.names, self.functions = compiled if compiled else ([], [])

    def __call__(self, i: int, values: Mapping[sympy.Symbol, object]) -> np.ndarray:
        by_name = {s.name: v for s, v in values.items()}
        missing = [n for n in self.names if n not in by_name]
        if missing:
            raise EvaluationError(f"parameter {missing[0]} is still free at evaluation",
                                  hint=f"bind it with --set {missing[0]}=VALUE")
        args = [np.asarray(by_name[n], dtype=float) for n in self.names]
        shape = np.broadcast_shapes(*(a.shape for a in args)) if args else ()
        return np.broadcast_to(np.asarray(self.functions[i](*args), dtype=float), shape)


@functools.lru_cache(maxsize=128)
def _compiled_total(stage: StageRoofline, what: str) -> GridFunctions:
    """The stage's `what` as a grid function: from the persistent cache where the stage carries
    the key of its inputs (Model's rooflines do), else compiled with sympy."""
    def build():
        expr = _EXPRESSIONS[what](stage)
        return sorted(s.name for s in sympy.sympify(expr).free_symbols), [expr]
    if stage.cache_key is not None:
        cached = cached_functions(stage.cache_key + (what,), build)
        if cached is not None:
            return GridFunctions(cached)
    names, (expr,) = build()
    symbols = sorted(sympy.sympify(expr).free_symbols, key=lambda s: s.name)
    return GridFunctions((names, [sympy.lambdify(symbols, expr, modules="numpy")]))


def _grid_total(stage: StageRoofline, what: str, values) -> np.ndarray:
    return _compiled_total(stage, what)(0, values)


def tokens_processed(stage: str, batch, seq, tokens=1):
    """Tokens a stage handles: every prompt position in prefill, one per sequence in decode,
    `tokens` per sequence in the general step."""
    if stage == "prefill":
        return batch * seq
    return batch * tokens if stage in ("step", "verify") else batch


def stage_time(stage: StageRoofline, values: Mapping[sympy.Symbol, object]) -> np.ndarray:
    """The stage's total time over a grid, without per-op arrays: one lambdified expression
    (sum of repeat x max(compute, memory) time), so memory stays that of a few grid arrays.
    The path for sweeps; `evaluate` gives the per-op numbers that tables need."""
    return _grid_total(stage, "time", values)


def compute_bound_share(stage: StageRoofline, values: Mapping[sympy.Symbol, object],
                        total: np.ndarray | None = None) -> np.ndarray:
    """The fraction of the stage's time spent in compute-bound ops, over a grid (the bound
    mix: 0 all memory-bound, 1 all compute-bound). `total`: the stage time over the same grid,
    where the caller has it already."""
    total = stage_time(stage, values) if total is None else total
    return _grid_total(stage, "compute_bound_time", values) / total
