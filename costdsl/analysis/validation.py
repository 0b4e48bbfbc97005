"""Judging an efficiency model against measured times: errors by kind, stage and configuration,
and held-out predictions (k-fold, or one model, kind, stage or file left out per fold)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from .. import progress
from ..hardware.efficiency import Tile, operand_format
from .calibration import CalibrationError, fit_efficiency
from .measurements import Measured


@dataclass(frozen=True)
class ErrorTable:
    """Absolute percentage errors of predictions, by op kind and by stage; and of the summed
    time of each configuration whose several ops were measured (a layer's kernels at one
    size: what a step costs, where single small kernels weigh little)."""
    overall_mape: float
    overall_max: float
    by_kind: Mapping[str, tuple[float, float, int]]   # kind -> (mean, max, rows)
    by_stage: Mapping[str, tuple[float, float, int]]
    summed: tuple[float, float, int] | None = None    # (mean, max, configurations)
    by_type: Mapping[str, tuple[float, float, int]] = None  # compute type -> (mean, max, rows)


def errors(measured: list[Measured], predicted: np.ndarray) -> ErrorTable:
    times = np.array([m.row.time_s for m in measured])
    ape = 100 * np.abs(predicted - times) / times

    def table(key):
        groups: dict[str, list[float]] = {}
        for m, a in zip(measured, ape):
            groups.setdefault(key(m), []).append(a)
        return {k: (float(np.mean(v)), float(np.max(v)), len(v)) for k, v in sorted(groups.items())}

    return ErrorTable(float(ape.mean()), float(ape.max()), table(lambda m: m.kind),
                      table(lambda m: m.row.stage), _summed(measured, predicted, times),
                      table(compute_type))


def compute_type(m: Measured) -> str:
    """The row's compute type: that of its matrix work (fp16, fp8, ...), else of its vector
    work, "-" for data movement and collectives (a row of several ops: their types joined);
    with the format of the operands that make a kernel of its own in that type, in brackets:
    an 8-bit KV cache (kv8), 4-bit weights under 16-bit activations (w4a16, w4a16-mx)."""
    types = sorted({p.compute_type for p in m.pieces if p.matrix_s and p.compute_type}) or \
        sorted({p.vector_type for p in m.pieces if p.vector_s and p.vector_type})
    formats = sorted({operand_format(p.family) for p in m.pieces} - {""})
    label = "+".join(types) or "-"
    return f"{label} ({', '.join(formats)})" if formats else label


def _summed(measured: list[Measured], predicted: np.ndarray, times: np.ndarray):
    """Errors of the summed time per configuration (model, stage, sizes, bits) that has two or
    more distinct ops measured; None where none has."""
    groups: dict[tuple, list[int]] = {}
    for i, m in enumerate(measured):
        r = m.row
        if r.op != "total":
            groups.setdefault((r.model, r.stage, r.batch, r.seq, r.tokens, r.bits), []).append(i)
    ape = [100 * abs(predicted[g].sum() / times[g].sum() - 1) for g in groups.values()
           if len({measured[i].row.op for i in g}) > 1]
    return (float(np.mean(ape)), float(np.max(ape)), len(ape)) if ape else None


def cross_validate(measured: list[Measured], folds: int, group: str | None = None,
                   seed: int = 0, sms: int | None = None,
                   tile: Tile | None = None) -> tuple[np.ndarray, int]:
    """Held-out predictions: each row predicted by a fit on the other folds. Folds are random
    (seeded) or, with `group` ("model", "kind", "stage" or "file"), one group of rows per fold,
    so that a model, size or whole measurement source the fit has not seen is predicted.
    Returns (predictions, folds used)."""
    n = len(measured)
    if group:
        keys = [{"model": m.row.model, "kind": m.kind, "stage": m.row.stage,
                 "file": m.row.file}[group] for m in measured]
        labels = sorted(set(keys))
        if len(labels) < 2:
            raise CalibrationError(f"--group {group}: the rows hold one {group} only: nothing "
                                   "to hold out")
        fold_of = np.array([labels.index(k) for k in keys])
        folds = len(labels)
    else:
        if not 2 <= folds <= n:
            raise CalibrationError(f"--folds {folds}: needs 2 to {n} (the number of rows)")
        order = np.random.default_rng(seed).permutation(n)
        fold_of = np.empty(n, int)
        fold_of[order] = np.arange(n) % folds
    out = np.empty(n)
    for f in progress.steps("validate: folds", range(folds)):
        train = [m for m, g in zip(measured, fold_of) if g != f]
        test = [i for i in range(n) if fold_of[i] == f]
        fitted = fit_efficiency(train, sms=sms, tile=tile).efficiency
        out[test] = [measured[i].predict(fitted) for i in test]
    return out, folds

