"""Fitting a link's alpha-beta model to measured collective times.

The cost rules price a collective of S bytes over n devices as steps x alpha + sent / B
(graph.costs.collective: a ring all-reduce 2 (n - 1) steps sending 2 (n - 1) S / n bytes, ...).
Given measured times of collectives of several sizes and device counts, alpha and B follow by
least squares on the relative error (a 4 KiB message and a 128 MiB one weigh alike): two
unknowns, linear in (alpha, 1 / B). The fitted B is an effective bandwidth in the ring model;
it may exceed the datasheet's per-direction figure where the switch reduces in the network
(NVLink SHARP on H100 NVSwitch systems moves fewer bytes than a ring).
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy

from ..errors import EvaluationError
from ..graph.costs import all_reduce_terms, collective
from ..hardware.collectives import Algorithm

_KINDS = {"all_reduce": "all_reduce", "all_gather": "all_gather", "alltoall": "all_to_all",
          "all_to_all": "all_to_all", "send_recv": "send_recv", "reduce_scatter": "reduce_scatter"}


@dataclass(frozen=True)
class CollectiveRow:
    network: str
    kind: str           # a costs.COMM_KINDS name
    devices: int
    devices_per_node: int
    bytes: float        # the message S
    time_s: float

    @property
    def within_node(self) -> bool:
        return self.kind == "send_recv" and self.devices_per_node > 1 or \
            self.devices_per_node >= self.devices

    def model_terms(self) -> tuple[float, float]:
        """(message steps, bytes sent per device) of the alpha-beta model."""
        steps, sent = collective(self.kind, sympy.Float(self.bytes), sympy.Integer(self.devices))
        return float(steps), float(sent)


def read_collectives(path: str | Path) -> list[CollectiveRow]:
    """Rows of a CSV with network, collective, devices, devices_per_node, bytes, time_ms
    ('#' lines are comments naming the sources)."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    rows = []
    for r in csv.DictReader(lines):
        kind = _KINDS.get(r["collective"])
        if kind is None:
            raise EvaluationError(f"{path}: unknown collective {r['collective']!r}")
        rows.append(CollectiveRow(r["network"], kind, int(r["devices"]),
                                  int(r["devices_per_node"]), float(r["bytes"]),
                                  float(r["time_ms"]) * 1e-3))
    return rows


@dataclass(frozen=True)
class LinkFit:
    latency_s: float        # alpha, per message step
    bandwidth_Bps: float    # effective B of the ring model
    rows: int
    mape: float             # mean absolute percentage error on the rows fitted
    large_mape: float       # the same on messages of at least 16 MiB (bandwidth-bound)

    def predict(self, row: CollectiveRow) -> float:
        steps, sent = row.model_terms()
        return steps * self.latency_s + sent / self.bandwidth_Bps


LARGE = 16 * 2**20


def fit_link(rows: list[CollectiveRow]) -> LinkFit:
    """alpha and B minimising the relative error of steps x alpha + sent / B over `rows`."""
    rows = [r for r in rows if r.devices > 1]
    if len(rows) < 2:
        raise EvaluationError("fitting a link needs measurements of at least two collectives")
    terms = np.array([r.model_terms() for r in rows])
    t = np.array([r.time_s for r in rows])
    weights = 1 / t
    (alpha, inverse_b), *_ = np.linalg.lstsq(terms * weights[:, None], t * weights, rcond=None)
    if inverse_b <= 0:
        raise EvaluationError("the measured times do not grow with the message size")
    alpha = max(alpha, 0.0)
    fit = LinkFit(alpha, 1 / inverse_b, len(rows), 0.0, 0.0)
    errors = np.array([abs(fit.predict(r) - r.time_s) / r.time_s for r in rows])
    large = np.array([r.bytes >= LARGE for r in rows])
    return LinkFit(alpha, 1 / inverse_b, len(rows), float(errors.mean()),
                   float(errors[large].mean()) if large.any() else float("nan"))


# --- a stack's own all-reduce (hardware.collectives) -------------------------------------------

@dataclass(frozen=True)
class StackAllReduceRow:
    network: str
    stack: str          # "vllm 0.24.0"
    devices: int
    bytes: float        # the message S
    time_s: float


def read_stack_all_reduce(path: str | Path) -> list[StackAllReduceRow]:
    """Rows of a CSV with network, stack, devices, bytes, time_ms ('#' lines name sources)."""
    with open(path, newline="") as f:
        lines = [line for line in f if not line.startswith("#")]
    return [StackAllReduceRow(r["network"], r["stack"], int(r["devices"]), float(r["bytes"]),
                              float(r["time_ms"]) * 1e-3) for r in csv.DictReader(lines)]


def algorithm_seconds(a: Algorithm, message: float, n: int, bandwidth: float) -> float:
    """The time hardware.collectives prices one all-reduce at by algorithm `a` (numbers)."""
    steps, sent = all_reduce_terms(a.name, message, n)
    return a.latency_s + float(steps) * a.step_latency_s + float(sent) / (a.efficiency * bandwidth)


def predict_all_reduce(algorithms: tuple[Algorithm, ...], message: float, n: int,
                       bandwidth: float) -> float:
    for a in algorithms:
        if a.up_to_bytes is None or message <= a.up_to_bytes:
            return algorithm_seconds(a, message, n, bandwidth)
    raise EvaluationError("no algorithm covers the message (the last needs no up_to)")


@dataclass(frozen=True)
class AllReduceFit:
    devices: int
    algorithms: tuple[Algorithm, ...]   # one_shot, two_shot (each with up_to), ring above
    rows: int
    mape: float

    def predict(self, message: float, bandwidth: float) -> float:
        return predict_all_reduce(self.algorithms, message, self.devices, bandwidth)


REGIMES = ("one_shot", "two_shot", "ring")
MIN_ROWS = 3   # per regime: a latency and an efficiency, and one row to spare


def fit_stack_all_reduce(rows: list[StackAllReduceRow], bandwidth: float) -> AllReduceFit:
    """One group size's algorithms: the switch sizes (among the measured ones) and each
    regime's latency and efficiency minimising the mean relative error, one-shot below the
    first switch, two-shot up to the second and a ring above (the stack's NCCL fallback)."""
    devices = {r.devices for r in rows}
    if len(devices) != 1:
        raise EvaluationError("fit one group size at a time")
    n = devices.pop()
    rows = sorted(rows, key=lambda r: r.bytes)
    sizes = sorted({r.bytes for r in rows})
    best = None
    for i, low in enumerate(sizes):
        for high in sizes[i + 1:]:
            parts = ([r for r in rows if r.bytes <= low],
                     [r for r in rows if low < r.bytes <= high],
                     [r for r in rows if r.bytes > high])
            fits = [_regime(name, part, n, bandwidth, up_to)
                    for name, part, up_to in zip(REGIMES, parts, (low, high, None))]
            if any(f is None for f in fits):
                continue
            error = sum(e for _, e in fits) / len(rows)
            if best is None or error < best[0]:
                best = (error, tuple(a for a, _ in fits))
    if best is None:
        raise EvaluationError(f"too few all-reduce sizes to fit three regimes over {n} devices "
                              f"({len(sizes)} sizes; at least {3 * MIN_ROWS} needed)")
    return AllReduceFit(n, best[1], len(rows), best[0])


def held_out_all_reduce(rows: list[StackAllReduceRow], bandwidth: float,
                        folds: int = 5) -> list[tuple[StackAllReduceRow, float]]:
    """Each row of one group with its relative error as predicted by a fit that did not see it:
    the sizes in ascending order, every `folds`-th left out in turn (switches refitted)."""
    rows = sorted(rows, key=lambda r: r.bytes)
    out = []
    for k in range(folds):
        fit = fit_stack_all_reduce([r for i, r in enumerate(rows) if i % folds != k], bandwidth)
        out += [(r, abs(fit.predict(r.bytes, bandwidth) / r.time_s - 1)) for r in rows[k::folds]]
    return out


def _regime(name: str, rows: list[StackAllReduceRow], n: int, bandwidth: float,
            up_to: float | None) -> tuple[Algorithm, float] | None:
    """(the algorithm, its summed relative error) fitted to `rows`; None where it cannot be."""
    if len(rows) < MIN_ROWS:
        return None
    sent = np.array([float(all_reduce_terms(name, r.bytes, n)[1]) / bandwidth for r in rows])
    t = np.array([r.time_s for r in rows])
    terms = np.stack([np.ones_like(sent), sent], axis=1) / t[:, None]
    (latency, inverse), *_ = np.linalg.lstsq(terms, np.ones_like(t), rcond=None)
    if latency < 0 or inverse <= 0 or 1 / inverse > 4:
        return None
    predicted = latency + sent * inverse
    return (Algorithm(name, up_to, float(latency), float(1 / inverse)),
            float(np.sum(np.abs(predicted - t) / t)))
