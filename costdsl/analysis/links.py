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
from ..graph.costs import collective

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
