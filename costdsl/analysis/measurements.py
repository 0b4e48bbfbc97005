"""Measured kernel times in, the roofline's pieces of each measured op out.

A measurement file is CSV with the columns

    hardware,model,stage,batch,seq,tokens,w_bits,a_bits,kv_bits,op,time_s[,source][,stack]

one row per measured kernel (or whole step): `hardware` the hardware file's key (its file name
without .toml) or its `name`; `model` a .arch file (relative to the CSV's folder) or a shipped
model; `stage` prefill, decode or step (`tokens` only for step; empty otherwise); `op` an op
name of the model's graph after its passes, several joined by `+` (their times summed: kernels
timed as one, as a fused MoE's grouped GEMMs and activation), or `total` for the whole step;
`time_s` the
measured seconds of one occurrence (of one layer's op; `total`: the whole step). `source` says
how it was measured; `stack`, where recorded, the serving stack and version whose kernel ran
("trtllm 1.3.0rc20"): `calibrate` refuses rows of another stack or version than the figures it
writes (stack_of_rows), `validate` says when the figures it judges describe another.

For each row the model is compiled and evaluated once at the datasheet figures, and the op's
time is split into the pieces an efficiency model scales: matrix work at peak, vector work at
the vector rate, bytes at bandwidth, and one launch per occurrence. Rows that share a model,
stage and bitwidths are evaluated together in one vectorised call.
"""
from __future__ import annotations

import csv
import io
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sympy

from ..errors import CostDSLError
from ..files import read_user_text
from ..limits import ALL_STAGES, STEP_STAGES
from ..hardware import Hardware
from ..hardware.efficiency import GEMM_FAMILIES, Efficiency, fills_by_rows
from .. import symbols as S
from .evaluate import evaluate
from .records import Settings
from .roofline import (bit_values, blocks_per_row, family_of, gemm_columns, gemm_depth,
                       gemm_tiles, input_elements, kind_of, row_count, wave_factor)

COLUMNS = ("hardware", "model", "stage", "batch", "seq", "tokens", "w_bits", "a_bits",
           "kv_bits", "op", "time_s")
STAGES = ALL_STAGES


class MeasurementError(CostDSLError):
    label = "measurement error"


@dataclass(frozen=True)
class Row:
    hardware: str
    model: str
    stage: str
    batch: int
    seq: int
    tokens: int | None
    bits: tuple[float, float, float]  # w, a, kv
    op: str
    time_s: float
    source: str
    line: int
    file: str = ""        # the measurement file it was read from
    stack: str = ""       # the serving stack and version that ran it ("" : not recorded)


@dataclass(frozen=True)
class Piece:
    """One op's share of a measured row at the datasheet figures (efficiency 1)."""
    kind: str             # the op's kind
    family: str           # the kind its efficiencies are looked up under (efficiency_kind)
    engine: str           # matrix, vector or memory
    compute_type: str | None
    vector_type: str
    count: float          # occurrences in the row (the repeat count for `total`, else 1)
    matrix_s: float       # matrix operations / peak
    vector_s: float       # vector operations / vector rate
    memory_s: float       # bytes / bandwidth
    rows: float = 1.0     # rows of its output (tokens; x KV heads for attention): thread blocks
    cols: float = 0.0     # a GEMM's output columns (0: not a GEMM): its tiles under a tile model
    sms: int | None = None   # the device's SM count (a tile model's wave, unless it gives one)
    transfer_s: float = 0.0        # a collective's time on its channel at the file's [link]
    ideal_transfer_s: float = 0.0  # ... and at the datasheet link (what --ideal prices)
    input_s: float = 0.0  # a narrow GEMM's input elements / bandwidth: the seconds of one byte
                          # per element moved before it (efficiency input_bytes: its prologue)
    output_s: float = 0.0  # a GEMM's output elements / bandwidth: one byte per element after
                           # its main loop (efficiency output_bytes: its epilogue)
    ideal_matrix_s: float | None = None  # matrix_s at the operands' type's peak, where the file
                                         # says the kernel computes in another (what --ideal
                                         # prices: COMPUTE_TYPE_NOTE); None: matrix_s
    depth: float = 0.0    # a GEMM's k, the reduction its tiles walk (efficiency k_latency)

    @property
    def collective(self) -> bool:
        """A communication op: priced by its link's alpha-beta figures ([link], fitted apart
        from [efficiency] by links.py), with no kernel figures of its own to fit."""
        return self.engine == "link"

    def stretch(self, fill_rows: float) -> float:
        """The memory time's factor when `fill_rows` rows fill the chip (roofline.occupancy)."""
        if not fill_rows or not fills_by_rows(self.engine, self.family):
            return 1.0
        return max(1.0, fill_rows / self.rows)

    def tile_stretch(self, fill_tiles: float) -> float:
        """The memory time's factor when `fill_tiles` GEMM output tiles fill the chip
        (roofline.occupancy_at, gemm_tiles); 1 for any other op."""
        if not fill_tiles or not self.cols:
            return 1.0
        return max(1.0, fill_tiles / float(gemm_tiles(self.rows, self.cols)))

    def splits_k(self, depth: float) -> bool:
        """Whether a GEMM call splits its k where it does above `depth` elements of k per
        output tile (efficiency split_depth; OpRoofline.k_split)."""
        return bool(self.cols) and self.depth > depth * float(gemm_tiles(self.rows, self.cols))

    @property
    def single_row(self) -> bool:
        """A GEMM call of one output row (efficiency one_row: its extra time)."""
        return bool(self.cols) and self.rows < 2

    def serial_s(self, input_bytes: float, output_bytes: float) -> float:
        """Seconds at the datasheet bandwidth of the traffic outside the kernel's loop: its
        prologue's and its epilogue's (roofline.serial_work)."""
        return input_bytes * self.input_s + output_bytes * self.output_s

    def waves(self, e: Efficiency | None) -> float:
        """The matrix work's factor under `e`'s tile model (roofline.wave_factor); 1 without."""
        if e is None or e.tile is None or not self.cols or not (e.tile.sms or self.sms):
            return 1.0
        return float(wave_factor(self.rows, self.cols, e.tile.m, e.tile.n,
                                 e.tile.sms or self.sms, ceil=math.ceil))

    def time(self, e: Efficiency | None) -> float:
        """Seconds of the piece's occurrences under efficiency `e` (None: ideal)."""
        if self.collective:
            return self.count * (self.ideal_transfer_s if e is None else self.transfer_s)
        if e is None:
            matrix = self.matrix_s if self.ideal_matrix_s is None else self.ideal_matrix_s
            return self.count * max(matrix + self.vector_s, self.memory_s)
        f = e.figures(self.family)
        compute = (self.matrix_s * self.waves(e)
                   / e.compute_for(self.compute_type or "", self.family)
                   + self.vector_s / e.compute_for(self.vector_type, self.family))
        streamed = self.memory_s * self.tile_stretch(f.tiles)
        memory = streamed * self.stretch(f.rows) / f.bandwidth
        if f.split is not None:   # the faster of unsplit and split, which fills the chip: not
            # stretched (OpRoofline.split_at)
            memory = min(memory, f.split[1] + streamed / f.split[0])
        if self.cols:   # a GEMM's host time, the least a call takes (OpRoofline.device_time)
            memory = max(memory, f.floor_s)
        kernel = max(compute, memory) if f.overlaps else compute + memory
        serial = self.serial_s(f.input_bytes, f.output_bytes) / f.bandwidth
        if self.single_row:   # a call of one row's extra time (OpRoofline.single_row)
            serial += f.one_row_s
        serial += self.depth * f.k_latency_s   # OpRoofline.reduction
        if f.split_k is not None and self.splits_k(f.split_k[0]):   # OpRoofline.k_split
            serial += f.split_k[1]
        return self.count * (kernel + f.launch_s + serial)


@dataclass(frozen=True)
class Measured:
    row: Row
    pieces: tuple[Piece, ...]

    @property
    def kind(self) -> str:
        return self.pieces[0].kind if self.row.op != "total" else "total"

    def predict(self, e: Efficiency | None) -> float:
        return sum(p.time(e) for p in self.pieces)


def read_measurements(path: str | Path) -> list[Row]:
    """The rows of a measurement CSV, each checked; errors name the file and line."""
    path = Path(path)
    text = read_user_text(path, "measurement file", MeasurementError)
    reader = csv.DictReader(io.StringIO(text))
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
    if missing:
        raise MeasurementError(f"missing column(s) {', '.join(missing)}", file=str(path), line=1,
                               hint="columns: " + ",".join(COLUMNS) + "[,source][,stack]")
    rows = []
    for line, record in enumerate(reader, 2):
        rows.append(_row(record, str(path), line))
    if not rows:
        raise MeasurementError("the file holds no measurements", file=str(path))
    return rows


def _row(record: dict, file: str, line: int) -> Row:
    def fail(message):
        return MeasurementError(message, file=file, line=line)

    def number(key, integer=False, optional=False):
        text = (record.get(key) or "").strip()
        if not text and optional:
            return None
        try:
            value = float(text)
        except ValueError:
            raise fail(f"{key} = {text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise fail(f"{key} = {text!r} must be positive and finite")
        if integer and not value.is_integer():
            raise fail(f"{key} = {text!r} must be an integer")
        if integer and value > S.MAX_SIZE:
            raise fail(f"{key} = {text!r} is more than {S.MAX_SIZE:.0e}")
        return int(value) if integer else value

    stage = (record.get("stage") or "").strip()
    if stage not in STAGES:
        raise fail(f"stage = {stage!r}: expected one of {', '.join(STAGES)}")
    tokens = number("tokens", integer=True, optional=True)
    if stage in STEP_STAGES and tokens is None:
        raise fail(f"the {stage} stage needs tokens (the new tokens per sequence)")
    if stage in ("prefill", "decode") and tokens is not None:
        # a tokens column that agrees with the stage is fine: decode is the step of 1 new
        # token, prefill that of seq tokens; only a contradicting one is refused
        agrees = 1 if stage == "decode" else number("seq", True)
        if tokens != agrees:
            raise fail(f"tokens = {tokens} contradicts the {stage} stage (it has {agrees} new "
                       "tokens per sequence); use stage = step for other counts")
        tokens = None
    op = (record.get("op") or "").strip()
    if not op:
        raise fail("op is empty: an op name of the model, or total")
    bits = tuple(number(k) for k in ("w_bits", "a_bits", "kv_bits"))
    for key, value in zip(("w_bits", "a_bits", "kv_bits"), bits):
        if not S.is_bitwidth(value):
            raise fail(f"{key} = {value:g} is not a bitwidth in {S.BITS_RANGE}")
    time_s = number("time_s")
    if not MIN_TIME_S <= time_s <= MAX_TIME_S:
        raise fail(f"time_s = {time_s:g} is outside {MIN_TIME_S:g} to {MAX_TIME_S:g} s: no "
                   "kernel or step is timed that finely or that long (a unit mistake?)")
    stack = " ".join((record.get("stack") or "").split())
    if stack and not STACK_LABEL.fullmatch(stack):
        raise fail(f"stack = {stack!r}: expected the stack's name and version, e.g. "
                   "'vllm 0.24.0'")
    return Row((record.get("hardware") or "").strip(), (record.get("model") or "").strip(),
               stage, number("batch", True), number("seq", True), tokens, bits, op,
               time_s, (record.get("source") or "").strip(), line, file, stack)


STACK_LABEL = re.compile(r"[A-Za-z][\w.-]* \S+")
"""A stack column's value: a name and a version."""


def stack_of_rows(rows: list[Row], asked: str) -> str:
    """The stack and version the rows were measured under, checked against `asked` (the name,
    or name and version, of the figures they will calibrate): `asked` itself where no row
    records a stack, completed with the rows' version where it names none. A row of another
    stack, of another version than `asked` names, or of another version than the rows before
    it is an error at its line."""
    name, _, version = asked.partition(" ")
    seen: Row | None = None
    for r in (r for r in rows if r.stack):
        r_name, _, r_version = r.stack.partition(" ")
        if name and r_name.lower() != name.lower():
            raise MeasurementError(f"this row was measured under {r.stack}, not {name}",
                                   file=r.file, line=r.line,
                                   hint=f"calibrate each stack's rows apart: --stack "
                                        f"\"{r.stack}\"")
        if version and r_version != version:
            raise MeasurementError(f"this row was measured under {r.stack}; the figures are "
                                   f"for {asked}", file=r.file, line=r.line,
                                   hint=f"--stack \"{r.stack}\" labels them as measured")
        if seen is not None and r.stack != seen.stack:
            raise MeasurementError(f"this row was measured under {r.stack}, the row at "
                                   f"{seen.file}:{seen.line} under {seen.stack}: one "
                                   "calibration describes one stack version", file=r.file,
                                   line=r.line)
        seen = seen or r
    if seen is None or version:
        return asked
    return f"{name or seen.stack.partition(' ')[0]} {seen.stack.partition(' ')[2]}"


MIN_TIME_S, MAX_TIME_S = 1e-9, 1e6
"""Measured times a row may hold: a nanosecond (below any kernel launch) to ~12 days."""


def resolve(rows: list[Row], csv_file: str | Path, hw: Hardware, load_model) -> list[Measured]:
    if not rows:
        return []
    """Each row with its pieces at `hw`'s datasheet figures. `load_model(spec)` compiles a model
    (a path relative to the CSV's folder, or a shipped name)."""
    base = hw.ideal()
    names = {hw.key, hw.name} | ({hw.efficiency.measured_as} if hw.efficiency else set())
    wrong_hw = [r for r in rows if r.hardware not in names]
    if wrong_hw:
        r = wrong_hw[0]
        raise MeasurementError(f"hardware = {r.hardware!r}, but the hardware given is "
                               f"{hw.key!r} ({hw.name})", file=str(csv_file), line=r.line,
                               hint=f"{len(wrong_hw)} row(s) name other hardware: give their "
                                    "file with --hw, or filter them out")
    groups: dict[tuple, list[Row]] = {}
    for r in rows:
        groups.setdefault((r.model, r.stage, r.bits), []).append(r)
    models, out = {}, {}
    for (spec, stage, bits), members in groups.items():
        local = Path(csv_file).parent / spec
        key = str(local) if local.suffix == ".arch" and local.exists() else spec
        if key not in models:
            try:
                models[key] = load_model(key)
            except MeasurementError:
                raise
            except CostDSLError as err:  # the model's own error, located at the row naming it
                line = min(r.line for r in members)
                raise MeasurementError(f"model = {spec!r}: {err.message}", file=str(csv_file),
                                       line=line, hint=err.hint) from None
        out.update(_pieces(models[key], stage, bits, members, base, str(csv_file), hw))
    return [Measured(r, out[r.line]) for r in rows]


def _pieces(model, stage, bits, rows, hw: Hardware, file: str,
            linked: Hardware) -> dict[int, tuple[Piece, ...]]:
    """The pieces of every row at `hw` (the datasheet figures); a collective's channel time
    also at `linked` (the file as given: its fitted [link] figures)."""
    w, a, kv = bits
    settings = Settings(1, 1, w, a, kv).validate()
    symbolic = model.roofline(hw, stage, **settings.bits())
    names = [o.node.name for o in symbolic.ops]
    unknown = sorted({part for r in rows for part in op_parts(r.op)} - set(names) - {"total"})
    if unknown:
        raise MeasurementError(f"unknown op name(s) for {model.name} ({stage}): "
                               f"{', '.join(unknown)}", file=file,
                               line=min(r.line for r in rows
                                        if set(op_parts(r.op)) & set(unknown)),
                               hint="ops: " + ", ".join(names))
    values = {**settings.values(), S.batch: np.array([r.batch for r in rows], float),
              S.seq: np.array([r.seq for r in rows], float)}
    if stage in STEP_STAGES:
        values[S.tokens] = np.array([r.tokens for r in rows], float)
    n = evaluate(symbolic, values)
    with np.errstate(divide="ignore", invalid="ignore"):
        matrix = np.nan_to_num((n.flops - n.vector_flops) / n.peak)
        vector = np.nan_to_num(n.vector_flops / n.vector_peak)
    memory = n.bytes / n.bandwidth
    counts = _row_counts(symbolic, values, len(rows))
    columns = _per_gemm(symbolic, values, len(rows), gemm_columns)
    depths = _per_gemm(symbolic, values, len(rows), gemm_depth)
    bit_of = bit_values(settings.bits())
    families = [family_of(o.node, c, bits=bit_of) for o, c in zip(symbolic.ops, n.compute_types)]
    # a family the file says computes in another type (COMPUTE_TYPE_NOTE): its matrix work at
    # that type's datasheet peak, so that its fitted fraction is of that peak
    types = [linked.kernel_type(c, f) for c, f in zip(n.compute_types, families)]
    operands_matrix = matrix
    matrix = matrix * np.reshape([hw.peak[c] / hw.peak[t] if c and t != c else 1.0
                                  for c, t in zip(n.compute_types, types)], (-1, 1))
    inputs = _per_op([input_elements(o.node) if f in GEMM_FAMILIES
                      else sympy.Integer(0) for o, f in zip(symbolic.ops, families)],
                     values, len(rows)) / np.reshape(n.bandwidth, (-1, 1))
    outputs = counts * columns / np.reshape(n.bandwidth, (-1, 1))   # 0 but for GEMMs
    ideal_transfer = n.transfer_time + n.serial_time
    transfer = _transfer_times(model, stage, settings, linked, values, symbolic, names, rows)
    vector_type = hw.vector_type
    out = {}
    for j, r in enumerate(rows):
        chosen = range(len(names)) if r.op == "total" else \
            [names.index(part) for part in op_parts(r.op)]
        out[r.line] = tuple(
            Piece(n.kinds[i], families[i],
                  symbolic.ops[i].node.engine, types[i], vector_type,
                  float(n.repeat[i][j]) if r.op == "total" else 1.0,
                  float(matrix[i][j]) if n.compute_types[i] else 0.0,
                  float(vector[i][j]) if n.compute_types[i] else 0.0, float(memory[i][j]),
                  float(counts[i][j]) * blocks_per_row(symbolic.ops[i].node),
                  float(columns[i][j]), hw.sms,
                  float(transfer[i][j]), float(ideal_transfer[i][j]), float(inputs[i][j]),
                  float(outputs[i][j]), float(operands_matrix[i][j])
                  if types[i] != n.compute_types[i] else None, float(depths[i][j]))
            for i in chosen)
    return out


def op_parts(op: str) -> list[str]:
    """The op names a row's `op` sums: split at each `+` outside brackets (a fused op's own name,
    `layers.attn[qk+softmax+sv]`, is one)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(op):
        depth += (ch == "[") - (ch == "]")
        if ch == "+" and depth == 0:
            parts.append(op[start:i])
            start = i + 1
    return parts + [op[start:]]


def _transfer_times(model, stage, settings, linked: Hardware, values, symbolic, names, rows):
    """Every op's channel time at `linked`'s own link figures: evaluated again only when a row
    names a collective (or is a whole step that holds one); zeros otherwise."""
    links = {i for i, o in enumerate(symbolic.ops) if o.node.engine == "link"}
    if not any(r.op == "total" or any(names.index(p) in links for p in op_parts(r.op))
               for r in rows) or not links:
        return np.zeros((len(names), len(rows)))
    n = evaluate(model.roofline(linked, stage, **settings.bits()), values)
    return np.broadcast_to(n.transfer_time + n.serial_time, (len(names), len(rows)))


def _row_counts(symbolic, values, n: int) -> np.ndarray:
    """Output rows of every op at every measured row (ops on axis 0)."""
    return _per_op([row_count(o.node) for o in symbolic.ops], values, n)


def _per_gemm(symbolic, values, n: int, measure) -> np.ndarray:
    """`measure` of every GEMM (a linear layer or a fused group of them) at every measured
    row, 0 for every other op: its output columns (gemm_columns) or its k (gemm_depth)."""
    return _per_op([measure(o.node)
                    if kind_of(o.node) == "linear" and o.node.engine == "matrix"
                    else sympy.Integer(0) for o in symbolic.ops], values, n)


def _per_op(exprs, values, n: int) -> np.ndarray:
    """Expressions (one per op) at every measured row (ops on axis 0)."""
    symbols = sorted(set().union(*(sympy.sympify(e).free_symbols for e in exprs)),
                     key=lambda s: s.name)
    f = sympy.lambdify(symbols, exprs, modules="numpy")
    return np.array([np.broadcast_to(np.asarray(v, float), (n,))
                     for v in f(*(values[s] for s in symbols))])


def predict(measured: list[Measured], e: Efficiency | None) -> np.ndarray:
    """Each row's predicted seconds under `e` (None: the ideal roofline)."""
    return np.array([m.predict(e) for m in measured])
