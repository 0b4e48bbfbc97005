"""Fitting the efficiency model to measured times, and judging it on rows it has not seen.

The model of one op occurrence is t = max(matrix_s u_c + vector_s u_v, memory_s u_b) + launch,
with u = 1 / efficiency. The parameters: the GEMMs' bandwidth and launch (the top-level
figures, shared by every matrix kind), the compute fraction of each compute type, and for every
other kind in the data (prefill's and decode's attention kernels, each norm, activation,
embedding...) its own bandwidth and launch (attention also its own compute fraction), since
small kernels of different kinds reach very different fractions of the roof. Once every op is
assigned a side of its max, t is linear in (u, launch), so the fit alternates: assign each op
the side that wins under the current parameters, solve the weighted linear least squares
(weights 1 / t_measured: the relative error is minimised), repeat until no assignment changes
(the first assignment is the ideal roofline's; one that never settles keeps its best round).
Bounds are kept by an active set: a parameter that leaves its range is fixed at the bound and
the rest refitted. A parameter no measured op is bound by cannot be identified from the data:
it is reported as such and left out (1: the datasheet figure), never invented. Nor is a kind
measured in fewer rows than it has figures of its own (one time cannot say how much of it is
bandwidth and how much launch): its rows are left out and its ops take the top-level figures.
A collective's time is its link's (the [link] figures, fitted apart by links.py): held fixed.

Occupancy and overlap are choices, not fits: given the chip's SM count, each elementwise family
is fitted again with one thread block per token row (memory_s x max(1, sms / rows)) and keeps it
where the squared relative error drops; prefill's attention likewise with its memory time
added to its compute time (`overlap = false`: t = compute + memory + launch, linear in both).

Standard errors come from the final linear fit: cov(u) = s^2 (A^T W A)^-1, and for an efficiency
e = 1 / u, se(e) = se(u) / u^2.
"""
from __future__ import annotations

from .. import progress

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np

from ..errors import CostDSLError
from ..hardware.efficiency import (ATTENTION_FAMILIES, EXPERT_FAMILIES, FALLBACK, GEMM_FAMILIES,
                                   MAX_FRACTION, WEIGHT_ONLY_GEMMS, Efficiency, KindEfficiency,
                                   Tile)
from .measurements import Measured, predict

MAX_LAUNCH_S = 1e-3   # a launch cost above a millisecond is not a kernel launch
MAX_ROUNDS = 50
INPUT_BYTES = (2, 3, 4, 5, 6, 8, 10, 12, 16)
"""The bytes per input element a narrow GEMM's activation quantisation may move before it
(efficiency input_bytes): a grid the fit chooses from, as it chooses occupancy (3: a static
scale, one 16-bit read and one 8-bit write; 5: a dynamic per-tensor scale, a read for the
maximum before them)."""
SERIAL_CANDIDATES = frozenset({"attention"})
"""Families tried with `overlap = false`: prefill's FlashAttention, whose blocks load their
query tile before the loop over keys and write their output after it (decode's kernels stream
the cache past one query row: nothing of note outside the loop)."""


class CalibrationError(CostDSLError):
    label = "calibration error"


@dataclass(frozen=True)
class Parameter:
    name: str            # "bandwidth", "compute.fp16", "attention.bandwidth", ..., "launch"
    value: float         # an efficiency (fraction), or seconds for launch
    stderr: float | None
    rows: int            # measured rows in which an op is bound by it


@dataclass(frozen=True)
class Fit:
    efficiency: Efficiency
    parameters: tuple[Parameter, ...]
    unidentified: tuple[str, ...]    # parameters no row constrains (left at the datasheet)
    rounds: int
    rows: int
    underdetermined: Mapping[str, int] = field(default_factory=dict)
    """Families measured in fewer rows than they have figures of their own (a bandwidth and a
    launch from one row: any split of its time fits), by rows: not fitted, their rows left out,
    their ops priced by the top-level figures."""


def _attention(piece) -> bool:
    return piece.family in ATTENTION_FAMILIES


def _own(piece) -> bool:
    """Whether a piece's kind gets figures of its own (everything but the matrix kinds, and of
    those the narrow GEMMs: a bandwidth and a launch, their compute in [efficiency.compute];
    and the routed experts' GEMMs)."""
    return _attention(piece) or piece.engine != "matrix" or piece.family in GEMM_FAMILIES \
        or piece.family in EXPERT_FAMILIES or piece.family in WEIGHT_ONLY_GEMMS


def _own_compute(piece) -> bool:
    """Whether a piece's family has a compute fraction of its own: the attention kernels, the
    block-scaled GEMMs (DeepGEMM's FP8 is not the per-tensor FP8 kernel) and the experts'
    grouped GEMMs."""
    return _attention(piece) or piece.family.endswith("_block_gemm") \
        or piece.family in EXPERT_FAMILIES or piece.family in WEIGHT_ONLY_GEMMS


def _key(piece, side: str, part: str = "matrix") -> str:
    """The parameter that scales one part of a piece on the given side of its max."""
    if side == "memory":
        return f"{piece.family}.bandwidth" if _own(piece) else "bandwidth"
    if _attention(piece) or (_own_compute(piece) and part == "matrix"):
        return f"{piece.family}.compute"
    return f"compute.{piece.compute_type if part == 'matrix' else piece.vector_type}"


def _launch_key(piece) -> str:
    return f"{piece.family}.launch" if _own(piece) else "launch"


@dataclass(frozen=True)
class Choices:
    """The model's discrete choices, held fixed while its parameters are fitted: the rows that
    fill the chip by family (occupancy), the families whose traffic adds to their compute
    (overlap = false), the bytes a narrow GEMM moves per input element before it runs (its
    activation quantisation), and the GEMMs' tile model (the file's own, never chosen by the
    fit)."""
    fill: Mapping[str, float] = field(default_factory=dict)
    serial: frozenset = frozenset()
    tile: Tile | None = None
    input_bytes: Mapping[str, float] = field(default_factory=dict)

    def overlap(self, kind: str) -> bool | None:
        """A family's `overlap`: False where its traffic adds to its compute, True where it
        would otherwise inherit a False from its fallback (decode's attention from prefill's)."""
        if kind in self.serial:
            return False
        return True if FALLBACK.get(kind) in self.serial else None


def _efficiency(u: Mapping[str, float], launches: Mapping[str, float],
                source: str = "", choices: Choices = Choices()) -> Efficiency:
    compute = {k.split(".", 1)[1]: 1 / v for k, v in u.items() if k.startswith("compute.")}
    kinds = {}
    for key in list(u) + list(launches):
        kind, _, what = key.rpartition(".")
        if kind and kind != "compute":
            kinds.setdefault(kind, {})
    for kind in kinds:
        kinds[kind] = KindEfficiency(
            1 / u[f"{kind}.bandwidth"] if f"{kind}.bandwidth" in u else None,
            1 / u[f"{kind}.compute"] if f"{kind}.compute" in u else None,
            launches.get(f"{kind}.launch"), choices.fill.get(kind), choices.overlap(kind),
            choices.input_bytes.get(kind))
    return Efficiency(bandwidth=1 / u.get("bandwidth", 1.0), compute=compute,
                      launch_s=launches.get("launch", 0.0), kinds=kinds, source=source,
                      tile=choices.tile)


def _is_launch(name: str) -> bool:
    return name == "launch" or name.endswith(".launch")


def _assign(measured: list[Measured], e: Efficiency | None, launch: bool = True,
            choices: Choices = Choices()):
    """Per row: the coefficient of each parameter (seconds at efficiency 1 for a fraction's
    inverse, occurrences for a launch cost), with each op on the side of its max that wins
    under `e` (None: the ideal roofline), or on both for a family in `choices.serial`."""
    waves = Efficiency(tile=choices.tile)
    rows = []
    for m in measured:
        coef: dict[str, float] = {}
        for p in m.pieces:
            if p.collective:    # its link's fixed time: nothing here to fit (_fixed_s)
                continue
            memory_s = p.memory_s * p.stretch(choices.fill.get(p.family, 0.0))
            matrix_s = p.matrix_s * p.waves(waves)
            if e is None:
                compute_wins = matrix_s + p.vector_s > memory_s
            else:
                c = (matrix_s / e.compute_for(p.compute_type or "", p.family)
                     + p.vector_s / e.compute_for(p.vector_type, p.family))
                compute_wins = c > memory_s / e.bandwidth_for(p.family)
            if compute_wins or p.family in choices.serial:
                for part, seconds in (("matrix", matrix_s), ("vector", p.vector_s)):
                    if seconds:
                        k = _key(p, "compute", part)
                        coef[k] = coef.get(k, 0.0) + p.count * seconds
            if memory_s and (not compute_wins or p.family in choices.serial):
                k = _key(p, "memory")
                coef[k] = coef.get(k, 0.0) + p.count * memory_s
            prologue = choices.input_bytes.get(p.family, 0.0) * p.input_s
            if prologue:   # a kernel before it, at its bandwidth, whichever side wins
                k = _key(p, "memory")
                coef[k] = coef.get(k, 0.0) + p.count * prologue
            if launch:
                k = _launch_key(p)
                coef[k] = coef.get(k, 0.0) + p.count
        rows.append(coef)
    return rows


def _fixed_s(measured: list[Measured]) -> np.ndarray:
    """Seconds of each row no efficiency scales: its collectives' time on their link."""
    return np.array([sum(p.count * p.transfer_s for p in m.pieces if p.collective)
                     for m in measured])


def _solve(assigned: list[dict], times: np.ndarray, names: list[str],
           fixed_s: np.ndarray | float = 0.0):
    """Bounded weighted least squares by an active set: (values by name, standard errors).
    Inverse fractions stay within [1 / MAX_FRACTION, 1000], launch costs within
    [0, MAX_LAUNCH_S]. `fixed_s`: each row's time that no parameter scales."""
    weights = 1 / times
    A = np.array([[coef.get(n, 0.0) for n in names] for coef in assigned]) * weights[:, None]
    b = (times - fixed_s) * weights  # 1 less the fixed share: the relative error is minimised
    lower = {n: 0.0 if _is_launch(n) else 1 / MAX_FRACTION for n in names}
    upper = {n: MAX_LAUNCH_S if _is_launch(n) else 1e3 for n in names}
    fixed: dict[str, float] = {}
    values: dict[str, float] = {}
    for _ in range(len(names) + 1):
        free = [i for i, c in enumerate(names) if c not in fixed]
        rhs = b - sum((A[:, i] * fixed[c] for i, c in enumerate(names) if c in fixed),
                      np.zeros_like(b))
        sol = np.linalg.lstsq(A[:, free], rhs, rcond=None)[0] if free else []
        values = dict(fixed)
        values.update({names[i]: float(v) for i, v in zip(free, sol)})
        out = [c for c in names if c not in fixed and not lower[c] <= values[c] <= upper[c]]
        if not out:
            break
        for c in out:
            fixed[c] = min(max(values[c], lower[c]), upper[c])
    residual = A @ np.array([values[c] for c in names]) - b
    free = [i for i, c in enumerate(names) if c not in fixed]
    dof = len(b) - len(free)
    stderr: dict[str, float] = {}
    if dof > 0 and free:
        s2 = float(residual @ residual) / dof
        try:
            inv = np.linalg.inv(A[:, free].T @ A[:, free])
            stderr = {names[i]: float(np.sqrt(max(s2 * inv[k, k], 0.0)))
                      for k, i in enumerate(free)}
        except np.linalg.LinAlgError:
            stderr = {}
    return values, stderr


def _split(values: Mapping[str, float], source: str, choices: Choices = Choices()) -> Efficiency:
    u = {k: v for k, v in values.items() if not _is_launch(k)}
    launches = {k: v for k, v in values.items() if _is_launch(k)}
    return _efficiency(u, launches, source, choices)


@dataclass(frozen=True)
class _Solved:
    efficiency: Efficiency
    values: Mapping[str, float]
    stderr: Mapping[str, float]
    assigned: list
    rounds: int
    objective: float      # sum of squared relative residuals


def _fit(measured: list[Measured], times: np.ndarray, source: str, launch: bool,
         choices: Choices) -> _Solved:
    """The alternating fit with the model's discrete `choices` held fixed. An assignment that
    never settles (ops near their ridge can flip back and forth) keeps the round whose
    parameters fit best under the model itself, max and all."""
    assigned = _assign(measured, None, launch, choices)
    fixed_s = _fixed_s(measured)
    best = None
    for rounds in progress.steps("calibrate: rounds", range(1, MAX_ROUNDS + 1)):
        names = sorted({k for coef in assigned for k in coef})
        values, stderr = _solve(assigned, times, names, fixed_s)
        e = _split(values, source, choices)
        residual = predict(measured, e) / times - 1
        solved = _Solved(e, values, stderr, assigned, rounds, float(residual @ residual))
        if best is None or solved.objective < best.objective:
            best = solved
        again = _assign(measured, e, launch, choices)
        if again == assigned:
            break
        assigned = again
    return replace(best, rounds=rounds)


def _descend(objective: Callable[[float], float]) -> None:
    """Walk INPUT_BYTES from 5 towards whichever side lowers `objective`, while it does: the
    error is one valley over the grid, so a few fits find what all of them would."""
    start = INPUT_BYTES.index(5)
    at = {start: objective(INPUT_BYTES[start])}
    for step in (1, -1):
        i = start
        while 0 <= i + step < len(INPUT_BYTES):
            at[i + step] = objective(INPUT_BYTES[i + step])
            if at[i + step] >= at[i]:
                break
            i += step
        if i != start:   # it went this way: the other side is uphill
            return


def _row_parallel_families(measured: list[Measured]) -> list[str]:
    """Families whose kernels may run one thread block per row: the elementwise kinds."""
    return sorted({p.family for m in measured for p in m.pieces
                   if p.engine == "vector" and not _attention(p)})


def fit_efficiency(measured: list[Measured], source: str = "", launch: bool = True,
                   sms: int | None = None, tile: Tile | None = None) -> Fit:
    """Least-squares efficiencies (and launch costs) for the measured rows. With the chip's
    multiprocessor count `sms`, each elementwise family is also tried with occupancy (one
    thread block per row, `rows = sms`), kept where it lowers the squared relative error:
    a choice between two physical models, not a fitted number; prefill's attention likewise
    with overlap = false. A `tile` model (the hardware file's) is kept and fitted under."""
    names = sorted({k for coef in _assign(measured, None, launch) for k in coef})
    distinct = len({_configuration(m) for m in measured})
    if distinct < len(names) + 1:
        repeats = (f" ({len(measured)} rows, {distinct} distinct: a repeated measurement of one "
                   "configuration is one equation)" if distinct < len(measured) else "")
        raise CalibrationError(f"{distinct} measured rows cannot fit {len(names)} "
                               f"parameters ({', '.join(names)}){repeats}",
                               hint=f"give at least {len(names) + 1} rows, spread over sizes "
                                    "where different ops are memory- and compute-bound")
    # leaving out a family's k rows drops its f > k figures: enough rows remain for the rest
    under = _underdetermined(measured, launch)
    measured = [m for m in measured if not {p.family for p in m.pieces} & set(under)]
    times = np.array([m.row.time_s for m in measured])
    choices = Choices(tile=tile)
    best = _fit(measured, times, source, launch, choices)
    def attempt(trial: Choices) -> float:
        """Fit with `trial` added to the choices kept so far; keep it if it fits better."""
        nonlocal choices, best
        tried = replace(choices, fill={**choices.fill, **trial.fill},
                        serial=choices.serial | trial.serial,
                        input_bytes={**choices.input_bytes, **trial.input_bytes})
        solved = _fit(measured, times, source, launch, tried)
        if solved.objective < best.objective:
            choices, best = tried, solved
        return solved.objective

    for family in (_row_parallel_families(measured) if sms else ()):
        attempt(Choices(fill={family: float(sms)}))
    for family in sorted({p.family for m in measured for p in m.pieces if p.input_s}):
        _descend(lambda x: attempt(Choices(input_bytes={family: x})))
    for family in sorted({p.family for m in measured for p in m.pieces} & SERIAL_CANDIDATES):
        attempt(Choices(serial=frozenset({family})))
    assigned, values, stderr = best.assigned, best.values, best.stderr
    used = {k for coef in assigned for k in coef}  # the assignment the values were solved on
    params = []
    for n in sorted(used, key=lambda n: (_is_launch(n), n)):
        se = stderr.get(n)
        if _is_launch(n):
            params.append(Parameter(n, values[n], se, sum(1 for c in assigned if n in c)))
        else:  # report fractions, not their inverses
            params.append(Parameter(n, 1 / values[n], se / values[n] ** 2 if se else se,
                                    sum(1 for c in assigned if n in c)))
    for family, rows in sorted(choices.fill.items()):
        params.append(Parameter(f"{family}.rows", rows, None,
                                sum(1 for m in measured for p in m.pieces
                                    if p.family == family and p.rows < rows)))
    for family, x in sorted(choices.input_bytes.items()):
        params.append(Parameter(f"{family}.input_bytes", x, None,
                                sum(1 for m in measured for p in m.pieces if p.family == family)))
    for family in sorted(choices.serial):
        params.append(Parameter(f"{family}.overlap", 0.0, None,
                                sum(1 for m in measured for p in m.pieces if p.family == family)))
    every = _all_parameters(measured) | ({_launch_key(p) for m in measured for p in m.pieces
                                          if not p.collective} if launch else set())
    return Fit(best.efficiency, tuple(params), tuple(sorted(every - used)), best.rounds,
               len(measured), under)


def _own_figures(piece, launch: bool) -> set[str]:
    """The parameters a piece's family has of its own (none for the GEMMs and collectives)."""
    if not _own(piece) or piece.collective:
        return set()
    own = {_key(piece, "memory")} if piece.memory_s else set()
    if _own_compute(piece) and (piece.matrix_s or piece.vector_s):
        own.add(_key(piece, "compute"))
    return own | ({_launch_key(piece)} if launch else set())


def _configuration(m: Measured) -> tuple:
    """What a row measures: the same op at the same sizes measured again adds no equation."""
    r = m.row
    return (r.model, r.stage, r.batch, r.seq, r.tokens, r.bits, r.op)


def _underdetermined(measured: list[Measured], launch: bool) -> dict[str, int]:
    """Families with fewer distinct measured configurations than figures of their own, by
    distinct configurations (ten timings of one kernel at one size pin one equation: a
    bandwidth and a launch cannot both come from it)."""
    seen: dict[str, set[tuple]] = {}
    figures: dict[str, set[str]] = {}
    for m in measured:
        for family in {p.family for p in m.pieces if _own_figures(p, launch)}:
            seen.setdefault(family, set()).add(_configuration(m))
        for p in m.pieces:
            figures.setdefault(p.family, set()).update(_own_figures(p, launch))
    return {f: len(c) for f, c in sorted(seen.items()) if len(c) < len(figures[f])}


def _all_parameters(measured: list[Measured]) -> set[str]:
    """Every parameter the measured ops could be bound by, on either side."""
    out = set()
    for m in measured:
        for p in m.pieces:
            if p.memory_s:
                out.add(_key(p, "memory"))
            if p.matrix_s:
                out.add(_key(p, "compute", "matrix"))
            if p.vector_s:
                out.add(_key(p, "compute", "vector"))
    return out
