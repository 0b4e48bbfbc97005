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
A narrow GEMM's input traffic before it (`input_bytes`), and a dense GEMM family's occupancy in
output tiles (`tiles`) and epilogue (`output_bytes`) are chosen from grids the same way (the
last two only where they remove MIN_GAIN of the error). A GEMM's compute fraction is bounded by
1: no matrix kernel beats its datasheet peak.

Standard errors come from the final linear fit: cov(u) = s^2 (A^T W A)^-1, and for an efficiency
e = 1 / u, se(e) = se(u) / u^2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Callable, Mapping, NamedTuple

import numpy as np

from .. import progress
from ..errors import CostDSLError
from ..hardware.efficiency import (ATTENTION_FAMILIES, EXPERT_FAMILIES, FALLBACK, GEMM_FAMILIES,
                                   MAX_FRACTION, MLA_PREFILL, SPLIT_FAMILIES, TILE_FAMILIES,
                                   WEIGHT_ONLY_GEMMS, Efficiency, KindEfficiency, Tile, lineage,
                                   split_owner)
from .measurements import Measured, Piece, predict

MAX_LAUNCH_S = 1e-3   # a launch cost above a millisecond is not a kernel launch
MAX_ROUNDS = 50
INPUT_BYTES = (2, 3, 4, 5, 6, 8, 10, 12, 16)
"""The bytes per input element a narrow GEMM's activation quantisation may move before it
(efficiency input_bytes): a grid the fit chooses from, as it chooses occupancy (3: a static
scale, one 16-bit read and one 8-bit write; 5: a dynamic per-tensor scale, a read for the
maximum before them)."""
TILES = (1, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
"""The GEMM output tiles (128 x 128) that may fill the chip (efficiency `tiles`): a grid the fit
chooses from per GEMM family (on aiconfigurator's tables 12 to 32 on Hopper and Blackwell:
a few tiles per SM pair stream at the chip's rate; 1: no stretch, for a typed family that
would otherwise inherit linear's)."""
OUTPUT_BYTES = (0, 0.5, 1, 1.5, 2, 3, 4, 5, 6, 8)
"""The bytes per output element a GEMM's epilogue may move after its main loop, not hidden
(efficiency output_bytes): a grid the fit chooses from (2: a 16-bit output written once at the
kernel's bandwidth; more where the write is slower than the stream; 0: none, for a typed
family that would otherwise inherit linear's)."""

SPLIT_DEPTHS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""The k per GEMM output tile above which a call splits its k (efficiency split_depth,
SPLIT_K_NOTE): a grid the fit chooses from, as it chooses tiles, with the split's fixed cost
fitted beside it."""

SPLIT_GAIN = 0.005
"""The share of a section's squared error a split of k must remove to be kept: less than
MIN_GAIN, as the rows that split are a decode's narrow GEMMs, a small part of a section's (116
of the H200's 1,459 TensorRT-LLM rows); held out, the H200's sections confirm it (bf16 GEMMs
vLLM / TensorRT-LLM / SGLang 7.0 / 5.8 / 8.8 -> 5.8 / 4.9 / 8.2%, where at MIN_GAIN only
vLLM's kept one)."""

MIN_SPLIT_SHAPES = 3
"""The GEMM shapes (n x k) a split of k must be paid by to be kept (calibration's choice)."""

OWN_CHOICES = ("split_depth",)
"""Choices a family does not inherit along its lineage (a narrower family runs another
kernel: its split is its own, as its one_row and k_latency)."""

MIN_GAIN = 0.03
"""The share of the squared relative error a GEMM's `tiles` or `output_bytes` must remove to be
kept: they are schedules some stacks' kernels run and others do not, not a traffic every
narrow GEMM has (input_bytes, kept on any gain); below it (0.9% for an A100 bf16 epilogue of
6 bytes) a choice fits noise."""
BLOCKS = (8, 16, 32, 64, 128, 256, 512)
"""The thread blocks (one per sequence and KV head) that fill the chip, tried for decode's
attention (efficiency `rows`): TensorRT-LLM's kernel over an FP8 cache on the L40S streams each
block's cache alone, 25 us for 1,024 tokens whether 2 or 16 blocks run (at 8 and 32 kv heads)."""
BLOCKS_GAIN = 0.05
"""The share of the mean relative error decode attention's `rows` must remove beside MIN_GAIN of
the squared one: where its kernels stream each block alone the mean falls by a third
(TensorRT-LLM's over an FP8 cache on the GDDR chips: 14.0 -> 9.9%, 12.6 -> 7.5%); on the
H100's TensorRT-LLM figures the squared error fell by a tenth and the mean not at all (6.5%),
fitting a few rows: held out 9.2 -> 9.4% on decode attention, served 13.2 -> 13.8%."""
MIN_REGIME_SHARE = 0.1
"""The least share of a family's rows a second regime must price: a GEMM's `floor` (a host time
is what every small call of the family waits for: vLLM's block-FP8 GEMMs, 113 of the B200's 135
rows, not a patch for a handful of slow rows: the L40S's FP8 shards at m = 1,024, 6 of 231),
and decode attention's split (a split no row runs is no regime: the L40S's TensorRT-LLM FP8
cache would keep one at 4% of the bandwidth only to refuse the one it inherits)."""
SERIAL_CANDIDATES = frozenset({"attention", MLA_PREFILL})
"""Families tried with `overlap = false`: prefill's FlashAttention (a latent attention's
too), whose blocks load their query tile before the loop over keys and write their output
after it (decode's kernels stream the cache past one query row: nothing of note outside the
loop)."""


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
    tiles: Mapping[str, float] = field(default_factory=dict)
    output_bytes: Mapping[str, float] = field(default_factory=dict)
    split: frozenset = frozenset()   # decode attention families with a split regime
    floor: frozenset = frozenset()   # GEMM families whose call has a host time (a floor)
    one_row: frozenset = frozenset()   # GEMM families whose call of one row costs more
    k_latency: frozenset = frozenset()   # GEMM families whose tiles' walk of k costs time
    split_depth: Mapping[str, float] = field(default_factory=dict)   # GEMM families that split
                                         # their k above this k per output tile (SPLIT_K_NOTE)

    def __post_init__(self):
        # figures already looked up, by (what, family): a fit asks per row per round (as
        # Efficiency.figures); choices never change once made
        object.__setattr__(self, "_looked_up", {})

    def key(self) -> tuple:
        """The choices as a hashable value: equal choices, equal keys (whatever the order the
        tables were filled in)."""
        return tuple(tuple(sorted(v.items())) if isinstance(v, Mapping) else
                     tuple(sorted(v)) if isinstance(v, frozenset) else v
                     for v in (getattr(self, f.name) for f in fields(self)))

    def gemm(self, what: str, family: str) -> float:
        """A family's chosen `what` (a GEMM's input_bytes, tiles, output_bytes; the rows or
        blocks that fill the chip), or the one it inherits (FALLBACK: fp8_block_gemm from
        fp8_gemm, decode_attention_kv8 from decode_attention), as the efficiency built from the
        choices prices it; 0: none."""
        known, key = self._looked_up, (what, family)
        if key not in known:
            chosen = getattr(self, what)
            known[key] = (chosen.get(family, 0.0) if what in OWN_CHOICES else
                          next((chosen[f] for f in lineage(family) if f in chosen), 0.0))
        return known[key]

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
    for kind in [*choices.tiles, *choices.output_bytes]:   # the GEMMs' (linear's) own table
        kinds.setdefault(kind, {})
    for kind in kinds:
        kinds[kind] = KindEfficiency(
            1 / u[f"{kind}.bandwidth"] if f"{kind}.bandwidth" in u else None,
            1 / u[f"{kind}.compute"] if f"{kind}.compute" in u else None,
            # a floor's family launches nothing beside it (not its fallback's launch)
            launches.get(f"{kind}.launch", 0.0 if kind in choices.floor else None),
            choices.fill.get(kind), choices.overlap(kind),
            choices.input_bytes.get(kind), choices.tiles.get(kind),
            choices.output_bytes.get(kind),
            1 / u[f"{kind}.split_bandwidth"] if f"{kind}.split_bandwidth" in u else None,
            launches.get(f"{kind}.split_launch"), launches.get(f"{kind}.floor"),
            launches.get(f"{kind}.one_row"), k_latency_s=launches.get(f"{kind}.k_latency"),
            split_k_s=launches.get(f"{kind}.split_k"),
            split_depth=choices.split_depth.get(kind) if f"{kind}.split_k" in launches else None)
    return Efficiency(bandwidth=1 / u.get("bandwidth", 1.0), compute=compute,
                      launch_s=launches.get("launch", 0.0), kinds=kinds, source=source,
                      tile=choices.tile)


def is_duration(name: str) -> bool:
    """Whether a parameter is a duration (a launch, a split's or a floor's fixed cost, a
    single row's extra time, a GEMM's time per element of k), not the inverse of a fraction."""
    return name.rpartition(".")[2] in ("launch", "split_launch", "floor", "one_row",
                                       "k_latency", "split_k")


class _Terms(NamedTuple):
    """A piece's parts that the choices fix and no round's efficiency moves (_terms)."""
    piece: Piece
    matrix_s: float      # its matrix seconds at the peak, waves and all
    memory_s: float      # its streaming seconds at the datasheet, stretched by its occupancy
    streamed: float      # the same unstretched (a split fills the chip)
    floored: bool        # a GEMM of a family with a floor
    fixed: tuple         # (parameter, coefficient) of its serial terms, whichever side wins
    serial: bool         # a family whose traffic adds to its compute (choices.serial)
    owner: str | None    # the family whose split regime it runs (_split_owner)
    compute: tuple       # (parameter, seconds) of its matrix and vector parts
    memory: str          # the parameter of its streaming
    launch: str          # the parameter of its launch


def _terms(measured: list[Measured], choices: Choices) -> list[list[_Terms]]:
    """Per row, its pieces' terms under `choices` (collectives apart: their link's time)."""
    waves = Efficiency(tile=choices.tile)
    return [[_piece_terms(p, choices, waves) for p in m.pieces if not p.collective]
            for m in measured]


def _piece_terms(p: Piece, choices: Choices, waves: Efficiency) -> _Terms:
    streamed = p.memory_s * p.tile_stretch(choices.gemm("tiles", p.family))
    fixed = []
    serial = p.serial_s(choices.gemm("input_bytes", p.family),
                        choices.gemm("output_bytes", p.family))
    if serial:   # before and after its loop, at its bandwidth, whichever side wins
        fixed.append((_key(p, "memory"), p.count * serial))
    if p.single_row and p.family in choices.one_row:   # ONE_ROW_NOTE
        fixed.append((f"{p.family}.one_row", p.count))
    if p.depth and p.family in choices.k_latency:   # K_LATENCY_NOTE
        fixed.append((f"{p.family}.k_latency", p.count * p.depth))
    depth = choices.split_depth.get(p.family)
    if depth and p.splits_k(depth):   # SPLIT_K_NOTE
        fixed.append((f"{p.family}.split_k", p.count))
    matrix_s = p.matrix_s * p.waves(waves)
    return _Terms(p, matrix_s, streamed * p.stretch(choices.gemm("fill", p.family)), streamed,
                  bool(p.cols) and p.family in choices.floor, tuple(fixed),
                  p.family in choices.serial, _split_owner(p.family, choices),
                  tuple((_key(p, "compute", part), seconds) for part, seconds
                        in (("matrix", matrix_s), ("vector", p.vector_s)) if seconds),
                  _key(p, "memory"), _launch_key(p))


def _assign(measured: list[Measured], e: Efficiency | None, launch: bool = True,
            choices: Choices = Choices(), terms: list[list[_Terms]] | None = None):
    """Per row: the coefficient of each parameter (seconds at efficiency 1 for a fraction's
    inverse, occurrences for a launch cost), with each op on the side of its max that wins
    under `e` (None: the ideal roofline), or on both for a family in `choices.serial`.
    `terms`: _terms(measured, choices), where a fit already has them."""
    terms = _terms(measured, choices) if terms is None else terms
    splits = _median_start(measured, choices.split, lambda p: p.memory_s)
    floors = _median_start(measured, choices.floor,
                           lambda p: max(p.matrix_s + p.vector_s, p.memory_s))
    rows = []
    for row in terms:
        coef: dict[str, float] = {}
        for t in row:
            p = t.piece
            if e is None:
                compute_wins = t.matrix_s + p.vector_s > t.memory_s
                kernel = max(t.matrix_s + p.vector_s, t.memory_s)
            else:
                c = (t.matrix_s / e.compute_for(p.compute_type or "", p.family)
                     + p.vector_s / e.compute_for(p.vector_type, p.family))
                memory = t.memory_s / e.bandwidth_for(p.family)
                compute_wins, kernel = c > memory, max(c, memory)
            if t.floored and (kernel < floors[p.family] if e is None
                              else e.floor_for(p.family) > kernel):
                # the call's host time, the GPU's work under it: neither side of the max counts
                coef[f"{p.family}.floor"] = coef.get(f"{p.family}.floor", 0.0) + p.count
            else:
                _kernel_sides(coef, t, compute_wins, e, splits)
            for k, c in t.fixed:
                coef[k] = coef.get(k, 0.0) + c
            if launch and not t.floored:   # a floor's call launches nothing beside it
                coef[t.launch] = coef.get(t.launch, 0.0) + p.count
        rows.append(coef)
    return rows


def _kernel_sides(coef: dict, t: _Terms, compute_wins: bool, e: Efficiency | None,
                  splits: Mapping[str, float]) -> None:
    """Add to a row's coefficients a piece's kernel on the side of its max that wins (both
    for a family in `choices.serial`), its memory side in the split regime where it runs
    split (a split fills the chip: its streaming is not stretched)."""
    p = t.piece
    if compute_wins or t.serial:
        for k, seconds in t.compute:
            coef[k] = coef.get(k, 0.0) + p.count * seconds
    if t.memory_s and (not compute_wins or t.serial):
        if t.owner and _splits(p, t.memory_s, t.streamed, e, splits[t.owner]):
            for k, c in ((f"{t.owner}.split_bandwidth", t.streamed),
                         (f"{t.owner}.split_launch", 1.0)):
                coef[k] = coef.get(k, 0.0) + p.count * c
        else:
            coef[t.memory] = coef.get(t.memory, 0.0) + p.count * t.memory_s


def _median_start(measured: list[Measured], families, seconds) -> dict[str, float]:
    """Per family, the median of `seconds(piece)` over its pieces: where its rows start in a
    regime before any figures say which holds (the split regime from the median streaming
    time up: the stacks split the larger caches; the floor below the median ideal kernel
    time: the floor is what the small GEMMs of a table share)."""
    return {f: float(np.median([seconds(p) for m in measured for p in m.pieces
                                if p.family == f])) for f in families}


def _split_owner(family: str, choices: Choices) -> str | None:
    """The family whose split regime `family` runs under `choices`, as the efficiency built
    from them prices it (split_owner, as Efficiency.split_for); None: no split."""
    return split_owner(family, choices.split, choices.fill)


def _splits(piece, memory_s: float, streamed: float, e: Efficiency | None,
            start: float) -> bool:
    """Whether a decode attention piece runs split under `e` (the faster of its two regimes:
    unsplit `memory_s` seconds at efficiency 1, stretched by its occupancy; split, `streamed`),
    or, where `e` has no split figures yet, whether it starts split (from `start` on)."""
    split = e.split_for(piece.family) if e is not None else None
    if split is None:
        return streamed >= start
    return split[1] + streamed / split[0] < memory_s / e.bandwidth_for(piece.family)


def _fixed_s(measured: list[Measured]) -> np.ndarray:
    """Seconds of each row no efficiency scales: its collectives' time on their link."""
    return np.array([sum(p.count * p.transfer_s for p in m.pieces if p.collective)
                     for m in measured])


def _lowest_inverse(name: str) -> float:
    """The least value of a parameter: 0 for a launch cost; 1 for a GEMM's compute fraction's
    inverse (no matrix kernel beats its datasheet peak: a fraction above 1 would be the fit
    trading a serial term for an impossible loop; on the H200's vLLM FP8 GEMMs it reached 1.06
    beside the epilogue); 1 / MAX_FRACTION for the rest (a bandwidth above the datasheet's is
    on-chip reuse; attention's operations count masked blocks a kernel may skip)."""
    if is_duration(name):
        return 0.0
    if name.endswith("compute") and not name.startswith(tuple(ATTENTION_FAMILIES)) \
            or name.startswith("compute."):
        return 1.0
    return 1 / MAX_FRACTION


def _solve(assigned: list[dict], times: np.ndarray, names: list[str],
           fixed_s: np.ndarray | float = 0.0):
    """Bounded weighted least squares by an active set: (values by name, standard errors).
    Inverse fractions stay within [1 / MAX_FRACTION, 1000] (a GEMM's compute fraction within
    (0, 1]: _lowest_inverse), launch costs within
    [0, MAX_LAUNCH_S]. `fixed_s`: each row's time that no parameter scales."""
    weights = 1 / times
    column = {n: i for i, n in enumerate(names)}
    A = np.zeros((len(assigned), len(names)))
    for i, coef in enumerate(assigned):
        for n, c in coef.items():
            A[i, column[n]] = c
    A *= weights[:, None]
    b = (times - fixed_s) * weights  # 1 less the fixed share: the relative error is minimised
    lower = {n: _lowest_inverse(n) for n in names}
    upper = {n: MAX_LAUNCH_S if is_duration(n) else 1e3 for n in names}
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
    u = {k: v for k, v in values.items() if not is_duration(k)}
    launches = {k: v for k, v in values.items() if is_duration(k)}
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
    terms = _terms(measured, choices)
    assigned = _assign(measured, None, launch, choices, terms)
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
        again = _assign(measured, e, launch, choices, terms)
        if again == assigned:
            break
        assigned = again
    return replace(best, rounds=rounds)


def _descend(objective: Callable[[float], float], grid: tuple = INPUT_BYTES,
             start: float = 5) -> None:
    """Walk `grid` from `start` towards whichever side lowers `objective`, while it does not
    rise: the error is one valley over the grid, so a few fits find what all of them would.
    A flat stretch is walked through, not taken for the valley's floor: `tiles` changes
    nothing until it passes the fewest tiles a row's GEMM has (an NVFP4 table whose smallest
    GEMM has 32 tiles is flat from 1 to 32 and falls by 75% at 128)."""
    start = grid.index(start)
    at = {start: objective(grid[start])}
    for step in (1, -1):
        i = start
        while 0 <= i + step < len(grid):
            at[i + step] = objective(grid[i + step])
            if at[i + step] > at[i]:
                break
            i += step
        if at[i] < at[start]:   # it went down this way: the other side is uphill
            return


def _mean_error(solved: _Solved, measured: list[Measured], times: np.ndarray) -> float:
    """The mean |predicted / measured - 1| of `solved`'s figures over the rows."""
    return float(np.mean(np.abs(predict(measured, solved.efficiency) / times - 1)))


def _regime_share(solved: _Solved, measured: list[Measured], family: str, regime: str) -> float:
    """The share of `family`'s rows that `solved` prices in its `regime` ("floor": at the
    floor; "split_launch": split)."""
    rows = [i for i, m in enumerate(measured) if any(p.family == family for p in m.pieces)]
    at = sum(1 for i in rows if f"{family}.{regime}" in solved.assigned[i])
    return at / len(rows) if rows else 0.0


def _significant_split(solved: _Solved, measured: list[Measured], family: str) -> bool:
    """Whether `family`'s split of k in a fit is paid by MIN_SPLIT_SHAPES shapes (n x k) at
    least and its seconds are twice their standard error: a split one shape pays is that
    shape's own time (the Arc Pro B60's W8A16 4,096 x 12,288, 2.3x its bytes' time at every m,
    took 147 us over its 9 rows), and one its rows cannot tell from none is none (the H200's
    vLLM block-FP8 GEMMs, under a host floor: 4.1 +- 2.6 us)."""
    split = solved.efficiency.split_k_for(family)
    if split is None:
        return False
    shapes = {(p.cols, p.depth) for m in measured for p in m.pieces
              if p.family == family and p.splits_k(split[0])}
    error = solved.stderr.get(f"{family}.split_k", math.inf)
    return len(shapes) >= MIN_SPLIT_SHAPES and split[1] > 2 * error


def _gemm_families(measured: list[Measured]) -> tuple[list[str], bool]:
    """The dense GEMM families in the data that may give `tiles` and `output_bytes`: the typed
    ones (fp8_gemm, ...), whose choices are made first, on their own rows, and whether linear
    (the 16-bit GEMMs) is among them: its choice comes after (what a typed family chose is its
    own, not linear's), and where it chose, the typed families that chose nothing inherit it
    and are tried again (they may refuse it: tiles = 1, output_bytes = 0)."""
    found = {p.family for m in measured for p in m.pieces if p.cols and p.family in TILE_FAMILIES}
    return sorted(found - {"linear"}), "linear" in found


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
    measured = sorted((m for m in measured if not {p.family for p in m.pieces} & set(under)),
                      key=_content)
    times = np.array([m.row.time_s for m in measured])
    choices = Choices(tile=tile)
    fits: dict[tuple, _Solved] = {}
    def fit(trial: Choices) -> _Solved:
        """The fit under `trial`, made once: the walks reach the same choices again (the joint
        walk of blocks repeats the plain one's trials without a split)."""
        key = trial.key()
        if key not in fits:
            fits[key] = _fit(measured, times, source, launch, trial)
        return fits[key]
    best = fit(choices)
    def combined(trial: Choices) -> Choices:
        return replace(choices, fill={**choices.fill, **trial.fill},
                       serial=choices.serial | trial.serial,
                       input_bytes={**choices.input_bytes, **trial.input_bytes},
                       tiles={**choices.tiles, **trial.tiles},
                       output_bytes={**choices.output_bytes, **trial.output_bytes},
                       split=choices.split | trial.split, floor=choices.floor | trial.floor,
                       one_row=choices.one_row | trial.one_row,
                       k_latency=choices.k_latency | trial.k_latency,
                       split_depth={**choices.split_depth, **trial.split_depth})

    def attempt(trial: Choices, gain: float = 0.0,
                accept: Callable[[_Solved], bool] = lambda solved: True) -> None:
        """Fit with `trial` added to the choices kept so far; keep it if it lowers the error
        by more than the fraction `gain` and the fit passes `accept`."""
        nonlocal choices, best
        tried = combined(trial)
        solved = fit(tried)
        if solved.objective < best.objective * (1 - gain) and accept(solved):
            choices, best = tried, solved

    def trial_of(what: str, family: str, x: float,
                 split: frozenset = frozenset()) -> tuple[Choices, _Solved]:
        """The choices with `family`'s `what` set to x (and the families in `split` given a
        split regime), and their fit."""
        trial = combined(Choices(**{what: {family: x}}, split=split))
        return trial, fit(trial)

    def choose(what: str, family: str, grid: tuple, start: float, gain: float,
               accept: Callable[[_Solved], bool] = lambda solved: True,
               tried: dict | None = None, split: frozenset = frozenset()) -> bool:
        """The value of a grid choice for one family that fits best (_descend), kept if it
        lowers the error by more than the fraction `gain` and passes `accept`; whether it was
        kept. `tried`: fits already made, by value (not made again); `split`: families given
        a split regime with every value tried."""
        nonlocal choices, best
        tried = dict(tried or {})
        now = None if split else choices.gemm(what, family)
        def objective(x: float) -> float:
            if x == now:   # what the family has (or inherits) already: no refit
                return best.objective
            if x not in tried:
                tried[x] = trial_of(what, family, x, split)
            return tried[x][1].objective
        _descend(objective, grid, start)
        if not tried:
            return False
        x = min(tried, key=lambda v: tried[v][1].objective)
        if tried[x][1].objective >= best.objective * (1 - gain) or not accept(tried[x][1]):
            return False
        choices, best = tried[x]
        return True

    for family in (_row_parallel_families(measured) if sms else ()):
        attempt(Choices(fill={family: float(sms)}))
    narrow = sorted({p.family for m in measured for p in m.pieces if p.input_s})
    for family in narrow:
        choose("input_bytes", family, INPUT_BYTES, 5, 0.0)
    def schedule(family: str) -> bool:
        """A GEMM family's tiles and epilogue, each from what it has or inherits (else the
        grid's middle); whether either was kept."""
        kept = [choose("tiles", family, TILES, choices.gemm("tiles", family) or 24, MIN_GAIN),
                choose("output_bytes", family, OUTPUT_BYTES,
                       choices.gemm("output_bytes", family) or 2, MIN_GAIN)]
        return any(kept)

    typed, linear = _gemm_families(measured)
    def streams_within(family: str) -> Callable[[_Solved], bool]:
        """Whether a fit streams `family`'s weights at no more than the datasheet bandwidth
        (within the 10% a figure's error allows): a walk of k grows with the weights of a
        shape's rows, and a fit may trade the two (the A100's INT4 weight-only GEMM at 1.4x
        its HBM beside 1.3 ns an element of k)."""
        return lambda solved: solved.efficiency.bandwidth_for(family) <= 1.1
    for family in typed + ["linear"] * linear:   # a call of one row's extra time
        attempt(Choices(one_row=frozenset({family})), MIN_GAIN)   # before the tiles it skews
    for family in typed + ["linear"] * linear:   # the tiles' walk of k (K_LATENCY_NOTE)
        attempt(Choices(k_latency=frozenset({family})), MIN_GAIN, streams_within(family))
    def splits_shapes(family: str) -> Callable[[_Solved], bool]:
        """Whether a fit's split of k is one (_significant_split) and `family` still streams
        within the datasheet (streams_within)."""
        return lambda solved: _significant_split(solved, measured, family) and \
            streams_within(family)(solved)
    for family in typed:
        schedule(family)
    if linear and schedule("linear"):
        for family in typed:   # those that chose nothing now inherit linear's: keep or refuse
            schedule(family)
    # a split of a deep k (SPLIT_K_NOTE), after the tiles: where too few tiles already price a
    # narrow GEMM, a split is kept only for what they leave
    for family in typed + ["linear"] * linear:
        choose("split_depth", family, SPLIT_DEPTHS, 96, SPLIT_GAIN, splits_shapes(family))
    for family in narrow:   # again, beside the epilogue now chosen
        if family in choices.input_bytes:
            choose("input_bytes", family, INPUT_BYTES, choices.input_bytes[family], 0.0)
    families = {p.family for m in measured for p in m.pieces}
    decode = sorted(families & SPLIT_FAMILIES)
    def prices(family: str, regime: str) -> Callable[[_Solved], bool]:
        """Whether a fit prices MIN_REGIME_SHARE of `family`'s rows in its second `regime`."""
        return lambda solved: _regime_share(solved, measured, family, regime) >= \
            MIN_REGIME_SHARE
    for family in decode:
        attempt(Choices(split=frozenset({family})), MIN_GAIN, prices(family, "split_launch"))
    def walk_blocks(joint: bool) -> None:
        """Too few (sequence, KV head) blocks per decode family: walked only where the grid's
        middle gains at all (one fit, not three, for the families that keep none), kept where
        the mean gains too. `joint`: with a split regime too where the family has none, own or
        inherited (the stacks split a cache exactly where its blocks are too few, so a split
        alone may gain nothing without them)."""
        for family in decode:
            splits = {frozenset()}
            if joint and _split_owner(family, choices) is None:
                splits.add(frozenset({family}))
            fits = {split: trial_of("fill", family, 64, split) for split in splits}
            split, middle = min(fits.items(), key=lambda kv: kv[1][1].objective)
            mean = _mean_error(best, measured, times)
            def accept(solved: _Solved) -> bool:
                return _mean_error(solved, measured, times) < mean * (1 - BLOCKS_GAIN) and \
                    (not split or prices(family, "split_launch")(solved))
            if middle[1].objective < best.objective * (1 - MIN_GAIN):
                choose("fill", family, BLOCKS, 64, MIN_GAIN, accept, tried={64: middle},
                       split=split)

    # both ways from the same start, the joint one kept where the mean falls by BLOCKS_GAIN at
    # the end: a split one family keeps is its fallback's too (decode_attention_kv8 would run
    # decode_attention's), which the family-by-family check does not see
    start = choices, best
    walk_blocks(joint=False)
    plain = choices, best
    choices, best = start
    walk_blocks(joint=True)
    if not _mean_error(best, measured, times) < \
            _mean_error(plain[1], measured, times) * (1 - BLOCKS_GAIN):
        choices, best = plain
    for family in typed:   # a call bound by its host time (FLOOR_NOTE)
        attempt(Choices(floor=frozenset({family})), MIN_GAIN, prices(family, "floor"))
    for family in sorted(families & SERIAL_CANDIDATES):
        attempt(Choices(serial=frozenset({family})))
    for family in sorted(choices.split_depth):   # again, beside what was chosen after it (a
        if not _significant_split(best, measured, family):   # floor takes what it priced)
            choices = replace(choices, split_depth={f: x for f, x in choices.split_depth.items()
                                                    if f != family})
            best = fit(choices)
    assigned, values, stderr = best.assigned, best.values, best.stderr
    used = {k for coef in assigned for k in coef}  # the assignment the values were solved on
    params = []
    for n in sorted(used, key=lambda n: (is_duration(n), n)):
        se = stderr.get(n)
        if is_duration(n):
            params.append(Parameter(n, values[n], se, sum(1 for c in assigned if n in c)))
        else:  # report fractions, not their inverses
            params.append(Parameter(n, 1 / values[n], se / values[n] ** 2 if se else se,
                                    sum(1 for c in assigned if n in c)))
    for family, rows in sorted(choices.fill.items()):
        params.append(Parameter(f"{family}.rows", rows, None,
                                sum(1 for m in measured for p in m.pieces
                                    if p.family == family and p.rows < rows)))
    for what in ("input_bytes", "tiles", "output_bytes"):
        for family, x in sorted(getattr(choices, what).items()):
            params.append(Parameter(f"{family}.{what}", x, None,
                                    sum(1 for m in measured for p in m.pieces
                                        if p.family == family)))
    for family, x in sorted(choices.split_depth.items()):   # the rows that split
        params.append(Parameter(f"{family}.split_depth", x, None,
                                sum(1 for m in measured for p in m.pieces
                                    if p.family == family and p.splits_k(x))))
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


def _content(m: Measured) -> tuple:
    """A row by what it says, not where it was read: the fit is made over the rows in this
    order, so that the files' order (or a row's line) cannot decide between two choices whose
    errors differ by rounding."""
    r = m.row
    return (r.hardware, r.model, r.stage, r.batch, r.seq, r.tokens or 0, r.bits, r.op, r.time_s)


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
