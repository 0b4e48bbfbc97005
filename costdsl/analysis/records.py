"""Analysis results as plain records: what the reports format. Built from a stage's numbers
(analysis.numbers), whether those came from the symbolic roofline or from a program read back
from the cache: this module loads no sympy until a symbolic stage is handed to it."""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from collections.abc import Sequence
from typing import TYPE_CHECKING, Callable, Mapping


import numpy as np

from ..errors import EvaluationError
from ..hardware import Hardware
from ..limits import ALL_STAGES, BITS_RANGE, MAX_SIZE, STEP_STAGES, is_bitwidth
from .numbers import MemoryNumbers, StageNumbers

if TYPE_CHECKING:
    import sympy
    from .roofline import StageRoofline

STAGE_DESCRIPTIONS = {
    "prefill": "the prompt: seq tokens of each of batch sequences",
    "decode": "one decode step: one new token per sequence, seq tokens already in the KV cache",
    "step": "one forward step: tokens new tokens per sequence over seq already in the KV cache",
    "chunk": "a prompt chunk: tokens new tokens per sequence over seq cached, as a prefill "
             "path runs it (a dense MLA up-projects its latents)",
    "verify": "a speculative verification: tokens new tokens per sequence over seq cached, "
              "with logits for each",
}


@dataclass(frozen=True)
class Settings:
    batch: int
    seq: int
    w_bits: float = 16
    a_bits: float = 16
    kv_bits: float = 16
    tokens: int | None = None  # new tokens per sequence of the general step; None: not asked

    def bits(self) -> dict[str, float]:
        return {"w_bits": self.w_bits, "a_bits": self.a_bits, "kv_bits": self.kv_bits}

    def named(self) -> dict[str, float]:
        """The values by symbol name: batch, seq, the bitwidths, and tokens where asked."""
        values = {"batch": self.batch, "seq": self.seq, **self.bits()}
        return values if self.tokens is None else {**values, "tokens": self.tokens}

    def values(self) -> dict["sympy.Symbol", float]:
        from .. import symbols as S
        return {S.RUNTIME[name]: v for name, v in self.named().items()}

    def validate(self) -> "Settings":
        for name in ("batch", "seq") + (() if self.tokens is None else ("tokens",)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise EvaluationError(f"{name} must be a positive integer, got {value!r}")
            if value > MAX_SIZE:
                raise EvaluationError(f"{name} = {value} is more than {MAX_SIZE:.0e}, the "
                                      f"largest size costdsl accepts")
        for name in ("w_bits", "a_bits", "kv_bits"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not is_bitwidth(value):
                raise EvaluationError(f"{name} must be a bitwidth in {BITS_RANGE}, got "
                                      f"{value!r}")
        return self


def check_stages(tokens, stages: tuple[str, ...], needed: bool = True) -> None:
    """`tokens` belongs to the step stage: needed there (unless solved for or kept free), and
    an error elsewhere rather than a value silently ignored."""
    unknown = [s for s in stages if s not in ALL_STAGES]
    if unknown:
        raise EvaluationError(f"unknown stage {unknown[0]!r}",
                              hint="stages: " + ", ".join(ALL_STAGES))
    if set(stages) & set(STEP_STAGES) and tokens is None and needed:
        raise EvaluationError("the step stage needs the number of new tokens per sequence",
                              hint="give --tokens T (decode is the step with --tokens 1)")
    if tokens is not None and not set(stages) & set(STEP_STAGES):
        raise EvaluationError(f"tokens={tokens} applies to the step stage only, not to "
                              f"{', '.join(stages)}", hint="add --stage step")


@dataclass(frozen=True)
class OpResult:
    """One op; every number is for one occurrence except total_time_s (all occurrences)."""
    name: str
    kind: str
    repeat: int
    compute_type: str | None
    flops: float
    bytes: float
    bytes_by_class: Mapping[str, float]
    intensity: float
    attainable: float          # ops/s
    bound: str                 # "memory", "compute", or "link" / "network" / "host"
    time_s: float
    total_time_s: float
    share: float               # fraction of the stage's time
    fused_from: tuple[str, ...] = ()   # the ops a fusion pass merged into this one


class StageTotal:
    """A stage's totals over every occurrence of every op. `time_s` is computed at once; the
    rest when first read (a loop over configurations that reads the time pays for nothing
    else)."""
    FIELDS = ("flops", "bytes", "bytes_by_class", "time_s", "compute_time_s", "memory_time_s",
              "bubble_s", "transfer_time_s")

    def __init__(self, n: "StageNumbers | Callable[[], StageNumbers]", time_s: float):
        self._numbers = once(n)
        self.time_s = time_s

    @property
    def _n(self) -> StageNumbers:
        return self._numbers()

    @cached_property
    def flops(self) -> float:
        return float(self._n.total(self._n.flops))

    @cached_property
    def bytes(self) -> float:
        return float(self._n.total(self._n.bytes))

    @cached_property
    def bytes_by_class(self) -> Mapping[str, float]:
        return {c: float(self._n.total(v)) for c, v in self._n.bytes_by_class.items()}

    @cached_property
    def compute_time_s(self) -> float:
        """If every op were compute-bound."""
        return float(self._n.total(self._n.compute_time))

    @cached_property
    def memory_time_s(self) -> float:
        """If every op were memory-bound."""
        return float(self._n.total(self._n.memory_time))

    @cached_property
    def bubble_s(self) -> float:
        """A pipeline's idle fill and drain (0 without one)."""
        n = self._n
        return float(n.total(n.time)) * n.bubble_steps / n.microbatches if n.bubble_steps else 0.0

    @cached_property
    def transfer_time_s(self) -> float:
        """Time on links, network and host link not hidden."""
        return float(self._n.total(self._n.transfer_time + self._n.serial_time))

    @property
    def server_s(self) -> float:
        """The serving engine's time around the kernels (hardware efficiency.Framework: per
        iteration and per sequence; its time per request is TTFT's, not a stage's); 0 without
        its figures."""
        return float(self._n.server)

    def _fields(self) -> tuple:
        return tuple(getattr(self, f) for f in self.FIELDS)

    def __eq__(self, other):
        return isinstance(other, StageTotal) and self._fields() == other._fields()

    def __hash__(self):
        return hash(self.time_s)

    def __repr__(self) -> str:
        return "StageTotal(" + ", ".join(f"{f}={getattr(self, f)!r}" for f in self.FIELDS) + ")"


@dataclass(frozen=True)
class StageResult:
    stage: str
    description: str
    ops: Sequence[OpResult]     # an OpResults: records built when read
    total: StageTotal


@dataclass(frozen=True)
class Analysis:
    model: str
    file: str
    hardware: Hardware
    settings: Settings
    params: Mapping[str, float]        # model parameter values used
    params_total: int
    stages: Mapping[str, StageResult]
    params_active: int | None = None  # parameters one token uses (MoE: fewer than total)
    passes: tuple[str, ...] = ()      # the passes applied, in order, as written
    memory: "MemoryNumbers | None" = None
    devices: "Devices | None" = None


@dataclass(frozen=True)
class Devices:
    """How the analysis spreads over devices: every other figure of the Analysis (times,
    memory, params) is one device's."""
    count: int                 # devices of the hardware (a system: several)
    used: int                  # devices the parallel layout occupies (tp x pp x ep)
    layout: Mapping[str, int]  # {"tp": n, "pp": n, "ep": n}, 1 where not parallel
    nodes: int = 1
    microbatches: int = 1

    def record(self) -> dict:
        """As data (a cached record keeps it)."""
        return {"count": self.count, "used": self.used, "layout": dict(self.layout),
                "nodes": self.nodes, "microbatches": self.microbatches}

    @classmethod
    def of_record(cls, d: dict) -> "Devices":
        layout = {str(g): n if isinstance(n, str) else int(n) for g, n in d["layout"].items()}
        return cls(int(d["count"]), int(d["used"]), layout, int(d["nodes"]),
                   int(d["microbatches"]))


def devices_of(graph, count: int, nodes: int = 1) -> Devices:
    """The graph's parallel layout on a hardware of `count` devices over `nodes` nodes."""
    layout = {g: graph.graph.get("parallel", {}).get(g, 1) for g in ("tp", "pp", "ep")}
    import sympy
    layout = {g: int(v) if sympy.sympify(v).is_number else str(v) for g, v in layout.items()}
    numbers = [v for v in layout.values() if isinstance(v, int)]
    used = int(np.prod(numbers)) if len(numbers) == len(layout) else count
    return Devices(count, used, layout, nodes, graph.graph.get("pipeline", (1, 1))[1])


def stage_result(symbolic: "StageRoofline", settings: Settings,
                 extra: "Mapping[sympy.Symbol, float] | None" = None) -> StageResult:
    from .evaluate import evaluate
    return results_of(evaluate(symbolic, {**settings.values(), **(extra or {})}))


class OpResults(Sequence):
    """A stage's ops as OpResult records, each built from the stage's number arrays when first
    read: a loop over configurations that reads only totals never pays for per-op objects
    (the per-call path's cost); reading the ops gives the same records a tuple would."""

    def __init__(self, n: "StageNumbers | Callable[[], StageNumbers]", stage_time: float,
                 count: int | None = None):
        self._numbers, self._stage_time = once(n), stage_time
        self._built: list[OpResult | None] = [None] * (len(n.names) if count is None else count)
        self._columns = None

    @property
    def _n(self) -> StageNumbers:
        return self._numbers()

    def __len__(self) -> int:
        return len(self._built)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return tuple(self[j] for j in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if self._built[i] is None:
            self._built[i] = self._record(i)
        return self._built[i]

    def _record(self, i: int) -> OpResult:
        if self._columns is None:
            self._columns = _op_columns(self._n)
        c, n, total = self._columns, self._n, self._columns["total"][i]
        return OpResult(n.names[i], n.kinds[i], int(c["repeat"][i]), n.compute_types[i],
                        c["flops"][i], c["bytes"][i],
                        {k: v[i] for k, v in c["classes"].items()}, c["intensity"][i],
                        c["attainable"][i], c["bounds"][i], c["time"][i], total,
                        total / self._stage_time if self._stage_time else 0.0,
                        n.fused_from[i] if n.fused_from else ())

    def __add__(self, other):
        return tuple(self) + tuple(other)

    def __eq__(self, other):
        return isinstance(other, (tuple, OpResults)) and tuple(self) == tuple(other)

    def __hash__(self):
        return hash(tuple(self))

    def __repr__(self) -> str:
        return repr(tuple(self))


def _op_columns(n: StageNumbers) -> dict:
    """The per-op numbers of a stage as lists, computed once for all its records."""
    bounds = n.bounds()
    attainable = n.attainable.astype(float)
    for i, b in enumerate(bounds):
        if b in ("host", "link", "network"):  # operations over the transfer's time
            attainable[i] = n.flops[i] / n.memory_time[i] if n.memory_time[i] else 0.0
    return {"repeat": n.repeat.tolist(), "flops": n.flops.tolist(), "bytes": n.bytes.tolist(),
            "classes": {c: v.tolist() for c, v in n.bytes_by_class.items()},
            "intensity": n.intensity.tolist(), "attainable": attainable.tolist(),
            "bounds": bounds, "time": n.time.tolist(),
            "total": (n.microbatches * n.repeat * n.time).tolist()}


def results_of(n: StageNumbers) -> StageResult:
    """A stage's records from its numbers (one configuration)."""
    stage_time = float(n.stage_time())
    return StageResult(n.stage, STAGE_DESCRIPTIONS[n.stage], OpResults(n, stage_time),
                       StageTotal(n, stage_time))


def lazy_results(stage: str, numbers: "Callable[[], StageNumbers]", stage_time: float,
                 count: int) -> StageResult:
    """A stage's records whose time is known already; its `count` ops' numbers are computed
    by `numbers()` when first read, once for the ops and the totals together."""
    numbers = once(numbers)
    return StageResult(stage, STAGE_DESCRIPTIONS[stage], OpResults(numbers, stage_time, count),
                       StageTotal(numbers, stage_time))


def once(n) -> "Callable[[], StageNumbers]":
    """A function giving the stage's numbers: `n` itself, or `n()` computed on first call."""
    if isinstance(n, StageNumbers):
        return lambda: n
    if getattr(n, "_once", False):
        return n
    kept: list = []

    def get():
        if not kept:
            kept.append(n())
        return kept[0]
    get._once = True
    return get
