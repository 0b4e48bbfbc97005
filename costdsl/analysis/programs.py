"""A stage as a program: its record (every op's rows as expression trees, and the rates no
value changes: analysis.export) compiled once into one function of the symbols, then run for
each configuration. The function is generated from the trees (analysis.trees), so a program
read back from the cache is the same program, to the bit, as the one just built: no sympy
here, and no second way of computing a number.

Rows per op, in this order (n ops each): repeat, operations, bytes of each class, vector
operations, overlapped transfer time, serial transfer time, occupancy, wave factor, serial work
(a kernel run before it: a narrow GEMM's activation quantisation; a GEMM's epilogue after its
loop).
"""
from __future__ import annotations

from functools import cached_property
from typing import Callable, Mapping

import numpy as np

from ..errors import EvaluationError
from .numbers import LazyMemory, StageNumbers, check_named, memory_totals, server_seconds
from .records import Analysis, Devices, lazy_results
from .trees import CorruptEntry, compile_trees, function_of

RATES = ("peak", "bandwidth", "vector_peak", "launch")
SPLIT_RATES = {"split_launch": "inf", "split_ratio": 1.0, "floor": 0.0}
"""A decode attention kernel's split regime per op (roofline.OpRoofline.split_at: its fixed
cost, its bandwidth ratio), a GEMM's floor (its host time: OpRoofline.device_time), and what an
op without them has (records written before either lack them)."""


def _rate(x) -> float:
    """A rate of the record: a number, or "inf" (JSON has no infinity)."""
    if x == "inf":
        return float("inf")
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise CorruptEntry(f"a rate is {x!r}")
    return float(x)


def _strings(record: dict, key: str, n: int) -> tuple:
    values = record[key]
    if not isinstance(values, list) or len(values) != n or \
            not all(isinstance(v, str) for v in values):
        raise CorruptEntry(f"malformed {key}")
    return tuple(values)


class StageProgram:
    """One stage's numbers for any configuration. `scalar` and `grid` may be given (compiled
    another way, for expressions the tree form lacks); otherwise they are compiled from the
    record's trees when first used."""

    def __init__(self, record: dict, scalar: Callable | None = None,
                 grid: Callable | None = None):
        self.stage = record["stage"]
        self.symbols = _strings(record, "symbols", len(record["symbols"]))
        self.classes = _strings(record, "classes", len(record["classes"]))
        self.names = _strings(record, "names", len(record["names"]))
        n = len(self.names)
        self.kinds = _strings(record, "kinds", n)
        self.compute_types = tuple(t or None for t in _strings(record, "compute_types", n))
        self.channels = tuple(c or None for c in _strings(record, "channels", n))
        self.rates = {k: np.array([_rate(v) for v in record[k]], dtype=float) for k in RATES}
        self.rates.update({k: np.array([_rate(v) for v in record.get(k, [none] * n)], dtype=float)
                           for k, none in SPLIT_RATES.items()})
        self.overlap = np.array([bool(v) for v in record["overlap"]], dtype=bool)
        self.fused_from = tuple(_strings({"group": f}, "group", len(f)) for f in
                                record["fused_from"])
        stages, micro = record["schedule"]
        self.schedule = (int(stages), int(micro))
        step, per_sequence = record.get("server", (0.0, 0.0))
        self.server = (float(step), float(per_sequence))
        self._trees = record.get("rows")
        if any(len(v) != n for v in (*self.rates.values(), self.overlap, self.fused_from)):
            raise CorruptEntry("the ops' columns differ in length")
        if self._trees is not None and len(self._trees) != (8 + len(self.classes)) * n:
            raise CorruptEntry("a row is missing")
        if scalar is not None:
            self.__dict__["scalar"] = scalar
        if grid is not None:
            self.__dict__["grid"] = grid

    @cached_property
    def scalar(self) -> Callable:
        """The rows at one point: floats in, a tuple of floats out."""
        return compile_trees(self._trees, self.symbols, scalar=True)

    @cached_property
    def grid(self) -> Callable:
        """The rows over a grid: numpy arrays in, one array (or number) per row out."""
        return compile_trees(self._trees, self.symbols)

    def compile(self) -> "StageProgram":
        """Compile now (a stored record is checked node by node as it compiles)."""
        self.scalar
        return self

    def table(self, values: Mapping[str, object]) -> tuple[np.ndarray, tuple[int, ...]]:
        """Every row at `values` (by symbol name; numbers, or arrays broadcast together)."""
        check_named(self.symbols, values)
        args = [values[s] for s in self.symbols]
        if all(isinstance(a, (int, float)) for a in args):
            return np.array(self.scalar(*(float(a) for a in args)), dtype=float), ()
        arrays = [np.asarray(a, dtype=float) for a in args]
        shape = np.broadcast_shapes(*(a.shape for a in arrays)) if arrays else ()
        out = self.grid(*arrays)
        return np.array([np.broadcast_to(np.asarray(v, dtype=float), shape)
                         for v in out]), shape

    def numbers(self, values: Mapping[str, object]) -> StageNumbers:
        """The stage's numbers at `values` (by symbol name)."""
        return self._numbers_of(*self.table(values), values)

    def result(self, values: Mapping[str, object]):
        """The stage's records at one point (records.StageResult): its time at once, from the
        rows in plain floats; the per-op numbers when first read."""
        args = _bound(self.symbols, values)
        rows = self.scalar(*args)
        time_s = self.stage_time(rows, float(self._schedule(values)[1])) + \
            server_seconds(self.server, values)
        return lazy_results(self.stage, lambda: self._numbers_of(
            np.array(rows, dtype=float), (), values), time_s, len(self.names))

    @cached_property
    def stage_time(self) -> Callable:
        """(rows, microbatches used) -> the stage's time: every op's occurrences and a
        pipeline's bubble, each op as analysis.numbers.StageNumbers computes it, in floats.
        Rows that are 0 or 1 whatever the values (no transfer, no wave model) are left out of
        the source: adding 0.0 or multiplying by 1.0 changes no float."""
        n, k = len(self.names), len(self.classes)
        r = lambda row, i: f"r[{row * n + i}]"
        rate = lambda x: "_inf" if x == float("inf") else repr(float(x))
        zero = lambda row, i: self._constant(row * n + i) == 0
        one = lambda row, i: self._constant(row * n + i) == 1
        terms = []
        for i in range(n):
            flops, vector = r(1, i), r(2 + k, i)
            classes = [r(2 + j, i) for j in range(k) if not zero(2 + j, i)] or ["0.0"]
            nbytes = "(" + " + ".join(classes) + ")"
            matrix = flops if zero(2 + k, i) else f"({flops} - {vector})"
            if not one(6 + k, i):
                matrix = f"{matrix} * {r(6 + k, i)}"
            if zero(2 + k, i):   # no vector work: the matrix work alone at the peak
                compute = f"({matrix}) / {rate(self.rates['peak'][i])}"
            else:
                compute = (f"(({matrix} + {vector}) - {vector}) / {rate(self.rates['peak'][i])}"
                           f" + {vector} / {rate(self.rates['vector_peak'][i])}")
            memory = f"{nbytes} / {rate(self.rates['bandwidth'][i])}"
            split = self.rates["split_launch"][i]
            if split != float("inf"):   # the faster of unsplit (stretched) and split, which
                memory = f"(_d := {memory})"   # fills the chip (OpRoofline.split_at)
            if not one(5 + k, i):
                memory += f" * {r(5 + k, i)}"
            if split != float("inf"):
                memory = (f"min({memory}, {rate(split)} + "
                          f"{rate(self.rates['split_ratio'][i])} * _d)")
            if self.rates["floor"][i]:   # the call's host time: at least (OpRoofline.device_time)
                memory = f"max({memory}, {rate(self.rates['floor'][i])})"
            if not zero(3 + k, i):
                memory += f" + {r(3 + k, i)}"
            # the larger of the two, as numpy's maximum, without a call per op
            kernel = f"(_c if (_c := {compute}) > (_m := {memory}) else _m)" \
                if self.overlap[i] else f"({compute}) + ({memory})"
            extra = "".join(f" + {r(row, i)}" for row in (4 + k, 7 + k) if not zero(row, i))
            terms.append(f"{r(0, i)} * ({kernel} + {rate(self.rates['launch'][i])}{extra})")
        bubble = self.schedule[0] - 1
        total = "(" + " + ".join(terms or ["0.0"]) + ")"
        return function_of(f"def _f(r, mb):\n    return mb * {total} * (1 + {bubble} / mb)\n")

    def _constant(self, row: int) -> float | None:
        """The value of a row that no symbol changes (a whole number), else None."""
        tree = self._trees[row] if self._trees is not None else None
        if isinstance(tree, list) and len(tree) == 2 and tree[0] == "q" and \
                isinstance(tree[1], str) and tree[1].lstrip("-").isdigit():
            return int(tree[1])
        return None

    def _numbers_of(self, table: np.ndarray, shape: tuple, values) -> StageNumbers:
        n = len(self.names)
        extra = (1,) * len(shape)
        rates = {k: v.reshape((n,) + extra) if extra else v for k, v in
                 {**self.rates, "overlap": self.overlap}.items()}
        k = len(self.classes)
        row = lambda i: table[i * n:(i + 1) * n]
        return StageNumbers(
            stage=self.stage, names=self.names, kinds=self.kinds,
            compute_types=self.compute_types, repeat=row(0), flops=row(1),
            bytes_by_class={c: row(2 + i) for i, c in enumerate(self.classes)},
            peak=rates["peak"], bandwidth=rates["bandwidth"], vector_flops=row(2 + k),
            vector_peak=rates["vector_peak"], fused_from=self.fused_from,
            launch=rates["launch"], overlap=rates["overlap"], transfer_time=row(3 + k),
            split_launch=rates["split_launch"], split_ratio=rates["split_ratio"],
            floor=rates["floor"],
            serial_time=row(4 + k), occupancy=row(5 + k), waves=row(6 + k),
            serial_work=row(7 + k),
            channels=self.channels, schedule=self._schedule(values),
            server=server_seconds(self.server, values))

    def _schedule(self, values) -> tuple:
        """(stages, microbatches used): at most one microbatch per sequence of the batch."""
        stages, microbatches = self.schedule
        if microbatches > 1 and "batch" in values:
            return stages, np.minimum(microbatches, np.asarray(values["batch"], dtype=float))
        return self.schedule


def _bound(symbols, values: Mapping[str, object]) -> list[float]:
    """The values of `symbols` at one point; a free one is the error analysis gives."""
    check_named(symbols, values)
    return [float(values[s]) for s in symbols]


class AnalysisProgram:
    """Everything `analyze` reports, as a program: each stage's (StageProgram), each stage's
    memory rows (weights, KV cache, activation peak, host bytes), and the figures no value
    changes (parameters, passes, the parallel layout). Built from a record (api's
    `Model.analysis_record`), fresh or read back from the cache: the same numbers either way."""

    def __init__(self, record: dict):
        self.model, self.file = str(record["model"]), str(record["file"])
        self.stages = {name: StageProgram(r) for name, r in record["stages"].items()}
        memory = record["memory"]
        self._memory = {name: (_strings(m, "symbols", len(m["symbols"])), m["rows"])
                        for name, m in memory.items()}
        if any(len(rows) != 4 for _, rows in self._memory.values()):
            raise CorruptEntry("a memory row is missing")
        self.params = dict(record["params"])
        self.params_total, self.params_active = record["params_total"], record["params_active"]
        self.params_free = _strings(record, "params_free", len(record["params_free"]))
        self.passes = _strings(record, "passes", len(record["passes"]))
        self.devices = Devices.of_record(record["devices"])

    def compile(self) -> "AnalysisProgram":
        """Compile every function now (a stored record is checked node by node)."""
        for program in self.stages.values():
            program.compile()
        self._memory_function
        return self

    @cached_property
    def _memory_function(self) -> dict[str, tuple[tuple[str, ...], Callable]]:
        return {name: (symbols, compile_trees(rows, symbols, scalar=True))
                for name, (symbols, rows) in self._memory.items()}

    def memory_rows(self, values: Mapping[str, object]) -> dict[str, tuple[float, ...]]:
        """Each stage's (weights, KV cache, activation peak, host) bytes at one point."""
        return {name: tuple(float(x) for x in f(*_bound(symbols, values)))
                for name, (symbols, f) in self._memory_function.items()}

    def analysis(self, hw, settings):
        """The Analysis record at `settings` on `hw` (the hardware the record was built for)."""
        values = settings.named()
        results = {name: p.result(values) for name, p in self.stages.items()}
        if self.params_free:
            raise EvaluationError(f"parameter {', '.join(self.params_free)} is still free at "
                                  "evaluation", hint="bind it with --set NAME=VALUE")
        memory = LazyMemory(lambda: memory_totals(
            self.memory_rows(values), hw.memory_bytes, hw.host.memory_bytes if hw.host else None))
        return Analysis(self.model, self.file, hw, settings, self.params, int(self.params_total),
                        results, int(self.params_active), self.passes, memory, self.devices)
