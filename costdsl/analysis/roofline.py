"""Roofline analysis, symbolic first.

For each op: intensity I = operations / bytes; attainable performance P = min(peak, I x B);
time t = max(operations / peak, bytes / B), and the op is compute-bound when the first term is
the larger (Williams, Waterman, Patterson, "Roofline", CACM 2009). B is the memory bandwidth and
peak the rate of the op's compute type on the hardware. With an [efficiency] section in the
hardware file, peak and B are the achieved fractions of the datasheet figures (eta_c peak,
eta_b B) and every op occurrence adds a fixed launch cost: t = max(...) + launch (or compute +
memory + launch for a kind whose table says `overlap = false`). Crossovers
then read in the achieved figures; the launch term shifts both sides of the max equally, so it
moves no crossover.

The compute type follows the operands: a matrix op runs in the type of its wider operand (a
weight-only quantized linear dequantizes to the activation type), promoted to the nearest type
the chip has; elementwise ops run on the vector units at the fp32 rate (norms, softmax and
activations compute in fp32); a gather has no arithmetic.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Mapping

import networkx as nx
import sympy

from ..errors import CostDSLError, EvaluationError
from ..graph.schema import Node, nodes
from ..hardware import Hardware
from ..hardware.collectives import AllReduce
from ..hardware.efficiency import (GEMM_FAMILIES, GEMM_TILE, SPLIT_FAMILIES, TILE_FAMILIES,
                                   WEIGHT_ONLY_GEMMS, efficiency_kind, fills_by_rows, kv_family,
                                   latent_family, typed_family, weight_only_family)
from .. import symbols as S
from .allreduce import all_reduce_time
from .numbers import compute_seconds, memory_seconds
from ..symbols import BITS_BY_CLASS, exact


class NotApplicableError(CostDSLError):
    """A pass asked for something this hardware cannot do (a fusion that needs more on-chip
    memory than it has)."""
    label = "not applicable"

# The type an operand of `bits` bits asks for, and what to fall back to when the chip lacks it.
# fp64 closes every chain: a wider type always holds the operands (a chip listing only fp64,
# an HPC part, runs everything there). 8-bit operands run on the chip's FP8 units where it has
# them (the W8A8 GEMMs vLLM, TensorRT-LLM and SGLang run on Hopper and Blackwell are FP8; every
# shipped chip lists its int8 and fp8 rates equal), else on its int8 units (Ampere, Ada's int8).
_PROMOTION = {
    "int4": ("int4", "fp4", "int8", "fp8", "fp16", "bf16", "fp32", "fp64"),
    "int8": ("fp8", "int8", "fp16", "bf16", "fp32", "fp64"),
    "fp16": ("fp16", "bf16", "fp32", "fp64"),
    "fp32": ("fp32", "tf32", "fp16", "bf16", "fp64"),  # a TPU has no fp32 figure: its bf16
}


def _operand_type(bits: float) -> str:
    if bits <= 4:
        return "int4"
    if bits <= 8:
        return "int8"
    if bits <= 16:
        return "fp16"
    return "fp32"


def _numeric_bits(node: Node, cls: str, bits: Mapping[sympy.Symbol, float]) -> float:
    value = sympy.sympify(node.bits[cls]).subs(bits)
    if not value.is_number:
        raise EvaluationError(f"the bitwidth of {cls} tensors of {node.name!r} is not set "
                              f"({value}); the compute type depends on it")
    return float(value)


def compute_type(node: Node, hw: Hardware, bits: Mapping[sympy.Symbol, float]) -> str | None:
    """The hardware compute type whose peak bounds this op, or None for ops without arithmetic."""
    if node.engine in ("memory", "link"):  # a gather, a collective: no arithmetic
        return None
    if node.engine == "vector":
        wanted = "fp32"
    else:
        wanted = _operand_type(max(_numeric_bits(node, c, bits) for c in node.operands))
    for ctype in _PROMOTION[wanted]:
        if ctype in hw.peak:
            return ctype
    raise EvaluationError(f"{hw.name} has no rate for {node.name!r} ({node.kind}): it needs "
                          f"{wanted} or a wider type, and the hardware file lists only "
                          f"{', '.join(hw.peak)}", file=hw.source or None,
                          hint="add the [peak] figure the chip has for " + " or ".join(
                              _PROMOTION[wanted]) + ", or quantize the op to a type it has")


def kernel_type(node: Node, hw: Hardware, bits: Mapping[sympy.Symbol, float],
                kernels: str | None = None) -> tuple[str | None, str]:
    """(the compute type the op's kernel runs in, the family its figures are looked up under):
    its operands' type (compute_type), or the one its family declares (a kernel that
    quantises its operands further: efficiency COMPUTE_TYPE_NOTE)."""
    operands = compute_type(node, hw, bits)
    kind = family_of(node, operands, kernels, bits)
    return hw.kernel_type(operands, kind), kind


def matrix_peak(node: Node, hw: Hardware, ctype: str, kind: str | None = None) -> float:
    """The rate of the op's matrix work in `ctype`: the N:M-sparse rate for weights a
    `sparsify(pattern="N:M")` pass pruned (where the hardware file gives one), else dense."""
    kind = kind or kind_of(node)
    if node.attrs.get("sparse_nm"):
        return hw.sparse_peak_for(ctype, kind)
    return hw.peak_for(ctype, kind)


def larger(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """max(a, b), unevaluated unless one side is 0 or both are numbers: sympy's own Max
    compares its arguments symbolically, which dominates compile time on large models and
    changes no value."""
    if a == 0:
        return b
    if b == 0:
        return a
    if a.is_number and b.is_number:
        return sympy.Max(a, b)
    return sympy.Max(a, b, evaluate=False)


def wave_factor(rows, cols, tile_m: int, tile_n: int, sms: int, ceil=sympy.ceiling):
    """The factor on a GEMM's matrix work when its rows x cols output is cut into tile_m x
    tile_n tiles, one thread block each, run `sms` at a time: whole waves of whole tiles,
    ceil(ceil(rows / m) ceil(cols / n) / sms) sms m n, over rows x cols. 1 where the output
    fills its waves exactly; ceil is sympy's (symbolic) or numpy's (measured rows)."""
    tiles = ceil(rows / tile_m) * ceil(cols / tile_n)
    return ceil(tiles / sms) * (sms * tile_m * tile_n) / (rows * cols)


def gemm_tile(node: Node, hw: Hardware, kind: str) -> tuple | None:
    """(m, n, sms, output columns) of a linear layer (or a fused group of them) under the
    hardware's tile model; None for any other op or without one. The output's columns are the
    elements it writes per row (a fused q+k+v writes all three: one GEMM over the concatenated
    weights)."""
    tile = hw.efficiency.tile if hw.efficiency else None
    if tile is None or kind not in ("linear", *GEMM_FAMILIES, *WEIGHT_ONLY_GEMMS) or \
            node.engine != "matrix":
        return None
    sms = tile.sms or hw.sms
    if not sms:
        raise EvaluationError(f"[efficiency.tile] of {hw.name} gives no sms and the file no SM "
                              "count: the tiles of a wave are unknown", file=hw.source or None,
                              hint="add sms = N to [efficiency.tile] or to the hardware file")
    return tile.m, tile.n, sms, gemm_columns(node)


def output_elements(node: Node) -> sympy.Expr:
    """Elements an op writes (a fused group's every output)."""
    return sympy.Add(*(a.elements for a in node.writes))


def gemm_columns(node: Node) -> sympy.Expr:
    """The output columns of a linear layer (or a fused group of them): the elements it writes
    per row (a fused q+k+v writes all three: one GEMM over the concatenated weights)."""
    return output_elements(node) / row_count(node)


def gemm_depth(node: Node) -> sympy.Expr:
    """The reduction (k) of a linear layer: the input elements it reads per row (a fused
    group's shared input once)."""
    return input_elements(node) / row_count(node)


def is_gemm(node: Node, kind: str) -> bool:
    """Whether an op is a dense GEMM of a family that may give `tiles` and `output_bytes`."""
    return kind in TILE_FAMILIES and node.engine == "matrix"


def gemm_tiles(rows, cols, tile: int = GEMM_TILE):
    """Output tiles of a rows x cols GEMM counted as max(1, rows / tile) max(1, cols / tile):
    continuous above one tile (a closed form the crossovers can solve through), whole below.
    Written max(tile, x) / tile: see occupancy_at."""
    return (sympy.Max(tile, rows) if isinstance(rows, sympy.Basic) else max(tile, rows)) * \
        (sympy.Max(tile, cols) if isinstance(cols, sympy.Basic) else max(tile, cols)) / tile ** 2


def input_elements(node: Node) -> sympy.Expr:
    """Elements of the activations a GEMM reads (its input; a fused group's shared input once:
    fusion keeps one read of it)."""
    return sympy.Add(*(a.elements for a in node.reads if a.cls == "act"))


def kernel_time(compute: sympy.Expr, memory: sympy.Expr, overlap: bool = True) -> sympy.Expr:
    """A kernel's time before its launch cost: the larger of its compute and memory times when
    its traffic hides behind its arithmetic (the roofline), their sum when it does not (an
    efficiency table's `overlap = false`)."""
    return larger(compute, memory) if overlap else compute + memory


@dataclass(frozen=True)
class OpRoofline:
    """One op's roofline, as expressions in the runtime symbols (batch, seq, bitwidths).

    A fused op may run part of its operations (`node.vector_flops`: a softmax or activation
    inside the kernel) on the vector units: its compute time is the sum of both parts at their
    own rates (they share the SM's issue slots; no overlap is assumed)."""
    node: Node
    compute_type: str | None
    peak: float                 # ops/s of compute_type (inf when the op has no arithmetic)
    bandwidth: float            # bytes/s
    vector_peak: float = float("inf")     # ops/s of the vector units (fp32)
    hardware_values: Mapping[sympy.Symbol, float] | None = None  # e.g. sram per block
    launch: float = 0.0         # seconds per occurrence: a kernel's fixed cost (efficiency)
    channel: str | None = None  # where its transfers go: "link", "network" or "host"
    channel_bandwidth: float = float("inf")   # bytes/s of that channel
    channel_latency: float = 0.0              # seconds per message step (alpha)
    hidden: sympy.Expr = sympy.Integer(0)     # compute time its transfer overlaps
    serial: bool = False        # its transfer adds to the kernel (offload without overlap)
    fill_rows: float = 0.0      # token rows that fill the chip (efficiency `rows`; 0: none)
    overlap: bool = True        # False: the memory time adds to the compute time (efficiency)
    tile: tuple | None = None   # GEMM wave quantisation: (m, n, sms, output columns); None: none
    floor: float = 0.0          # seconds a call takes at least: its host time (efficiency floor)
    all_reduce: AllReduce | None = None  # the stack's all-reduce algorithms (None: the ring)
    link_bandwidth: float = float("inf")  # the link's datasheet bytes/s: their fractions' base
    input_bytes: float = 0.0    # bytes per input element a kernel before it moves (prologue)
    fill_tiles: float = 0.0     # GEMM output tiles that fill the chip (efficiency `tiles`; 0: none)
    output_bytes: float = 0.0   # bytes per output element moved after the main loop (epilogue)
    split: tuple[float, float] | None = None  # decode attention's split regime: (seconds,
                                              # bandwidth / its bandwidth); None: none
    one_row: float = 0.0        # seconds a call of one output row adds (efficiency one_row)
    k_latency: float = 0.0      # seconds per element of a GEMM's k (efficiency k_latency)
    split_k: tuple[float, float] | None = None  # a GEMM's split of k: (k per output tile above
                                                # which it splits, seconds); None: never
    eager_launch: float | None = None  # a graphed kernel's own launch, where it runs outside
                                       # the graph (a mixed iteration); None: `launch`

    @property
    def flops(self) -> sympy.Expr:
        """Operations of one occurrence, times the share of occurrences that run."""
        return self.node.flops * self.node.share

    @property
    def vector_flops(self) -> sympy.Expr:
        return self.node.vector_flops * self.node.share

    def waves_at(self, rows: sympy.Expr) -> sympy.Expr:
        """The factor on the matrix work of a GEMM of `rows` output rows under the tile model
        (wave_factor); 1 without one."""
        if self.tile is None:
            return sympy.Integer(1)
        m, n, sms, cols = self.tile
        return wave_factor(rows, cols, m, n, sms)

    @property
    def waves(self) -> sympy.Expr:
        return self.waves_at(row_count(self.node))

    @property
    def matrix_flops(self) -> sympy.Expr:
        """Operations the matrix units spend: the op's matrix work, rounded up to whole waves of
        tiles under a tile model (the idle blocks of a partial wave count)."""
        return (self.flops - self.vector_flops) * self.waves

    @property
    def matrix_time(self) -> sympy.Expr:
        """The matrix work at the peak, before wave quantisation (0 without arithmetic)."""
        if not self.compute_type:
            return sympy.Integer(0)
        return (self.flops - self.vector_flops) / self.peak

    @property
    def vector_time(self) -> sympy.Expr:
        if not self.compute_type:
            return sympy.Integer(0)
        return self.vector_flops / exact(self.vector_peak)

    @property
    def effective_flops(self) -> sympy.Expr:
        """Operations counted at the op's peak: vector operations weigh peak / vector_peak."""
        vector = self.vector_flops
        if (vector == 0 and self.waves == 1) or not self.compute_type:
            return self.flops
        return self.matrix_flops + vector * exact(self.peak / self.vector_peak)

    @property
    def bytes_by_class(self) -> dict[str, sympy.Expr]:
        out = self.node.bytes_of(self.node.reads + self.node.writes)
        if self.node.share != 1:
            out = {c: e * self.node.share for c, e in out.items()}
        if self.hardware_values:
            out = {c: sympy.sympify(e).subs(self.hardware_values) for c, e in out.items()}
        return out

    @property
    def bytes(self) -> sympy.Expr:
        return sum(self.bytes_by_class.values(), sympy.Integer(0))

    @property
    def intensity(self) -> sympy.Expr:
        return self.flops / self.bytes

    @cached_property
    def compute_time(self) -> sympy.Expr:
        if not self.compute_type:
            return sympy.Integer(0)
        return compute_seconds(self.matrix_flops + self.vector_flops, self.vector_flops,
                               self.peak, exact(self.vector_peak))

    @property
    def transfer_bytes(self) -> sympy.Expr:
        """Bytes one occurrence moves over its channel (collective, host stream)."""
        moved = [e for xs in self.node.transfers.values() for e in self.node.bytes_of(xs).values()]
        return sum(moved, sympy.Integer(0)) * self.node.share

    @property
    def transfer_time(self) -> sympy.Expr:
        """Time on the channel not hidden behind compute: messages x alpha + bytes / B_channel
        (costs.collective), less the compute it overlaps (at least 0)."""
        if not self.node.transfers:
            return sympy.Integer(0)
        share = self.node.share
        sent = self.transfer_bytes / share if share != 1 else self.transfer_bytes
        time = self.node.messages * exact(self.channel_latency) + sent / self.channel_bandwidth
        if self.all_reduce is not None:   # the stack's own kernels below their switch sizes
            time = all_reduce_time(self.all_reduce, self.message_bytes, self.node.attrs["devices"],
                                   self.link_bandwidth, time)
        raw = share * time
        return sympy.Max(raw - self.hidden, 0) if self.hidden != 0 else raw

    @property
    def message_bytes(self) -> sympy.Expr:
        """The message S of an all-reduce, one occurrence: the ring sends 2 (n - 1) S / n."""
        n = sympy.sympify(self.node.attrs["devices"])
        return self.transfer_bytes / self.node.share * n / (2 * (n - 1))

    @property
    def overlapped_transfer(self) -> sympy.Expr:
        """The part of the transfer time that runs beside the kernel (inside the max)."""
        return sympy.Integer(0) if self.serial else self.transfer_time

    @property
    def serial_transfer(self) -> sympy.Expr:
        """The part that adds to the kernel's time."""
        return self.transfer_time if self.serial else sympy.Integer(0)

    def occupancy_at(self, rows: sympy.Expr) -> sympy.Expr:
        """The factor by which too few rows stretch the memory time: max(1, fill_rows / rows),
        with one thread block per row; for a GEMM, max(1, fill_tiles / its output tiles)
        (gemm_tiles); 1 when the hardware models no occupancy."""
        if self.fill_tiles:
            tiles = gemm_tiles(rows, gemm_columns(self.node))
            return sympy.Max(exact(self.fill_tiles), tiles) / tiles
        if not self.fill_rows:
            return sympy.Integer(1)
        blocks = rows * blocks_per_row(self.node)
        # written max(R, rows) / rows: sympy 1.14 folds Max(1, 108/(batch*seq)) to its second
        # argument for integer symbols, which is wrong at batch*seq > 108
        return sympy.Max(exact(self.fill_rows), blocks) / blocks

    @property
    def occupancy(self) -> sympy.Expr:
        return self.occupancy_at(row_count(self.node))

    @property
    def streaming_time(self) -> sympy.Expr:
        """Bytes over the achieved bandwidth, before the occupancy stretch."""
        return memory_seconds(self.bytes, self.bandwidth)

    def split_at(self, streaming: sympy.Expr,
                 occupancy: sympy.Expr = sympy.Integer(1)) -> sympy.Expr:
        """A decode attention kernel's memory time from its unsplit streaming time: the faster
        of streaming unsplit (stretched by too few blocks: `occupancy`) and split over more
        blocks (a fixed cost, then the same bytes at the split regime's bandwidth: efficiency
        split_launch, split_bandwidth; splitting the cache is what fills the chip, so that
        branch is not stretched); the stretched streaming time without a split regime."""
        if self.split is None:
            return streaming * occupancy
        fixed, ratio = self.split
        return sympy.Min(streaming * occupancy, sympy.Float(fixed, 15) + exact(ratio) * streaming)

    def device_time(self, streaming: sympy.Expr,
                    occupancy: sympy.Expr = sympy.Integer(1)) -> sympy.Expr:
        """The kernel's memory side from its streaming time and its occupancy stretch: the
        split regime's where faster (split_at), at least the call's floor (its host time,
        efficiency floor: the GPU's work runs under it, so the time is max(compute, memory,
        floor))."""
        memory = self.split_at(streaming, occupancy)
        return sympy.Max(memory, sympy.Float(self.floor, 15)) if self.floor else memory

    @cached_property
    def memory_time(self) -> sympy.Expr:
        """Device memory time, and the transfers that overlap it (they share the step)."""
        return self.device_time(self.streaming_time, self.occupancy) + self.overlapped_transfer

    @property
    def effective_bytes(self) -> sympy.Expr:
        """Bytes at the device bandwidth that take as long as `memory_time`: the denominator of
        the intensity crossovers solve against (transfers weigh B / B_channel per byte; too
        few rows or tiles stretch the bytes, kept exact: bytes x max(T, tiles) / tiles, so the
        closed forms read in whole numbers; a floor or a split regime through the time)."""
        if self.node.transfers or self.floor or self.split:
            return self.memory_time * self.bandwidth
        return self.bytes * self.occupancy

    def _traffic(self, per_element: float, elements: sympy.Expr) -> sympy.Expr:
        """Seconds of `per_element` bytes for each of `elements` (this device's share) at the
        op's bandwidth; 0 where it moves none."""
        if not per_element:
            return sympy.Integer(0)
        return memory_seconds(exact(per_element) * elements * self.node.share, self.bandwidth)

    @property
    def prologue(self) -> sympy.Expr:
        """A kernel run before this one, on its own: a narrow GEMM's activation quantisation
        (efficiency input_bytes per input element, at the GEMM family's bandwidth); 0 else."""
        return self._traffic(self.input_bytes, input_elements(self.node))

    @property
    def epilogue(self) -> sympy.Expr:
        """A GEMM's output traffic after its main loop, not hidden behind it (efficiency
        output_bytes per output element, at the family's bandwidth); 0 else."""
        return self._traffic(self.output_bytes, output_elements(self.node))

    @property
    def single_row(self) -> sympy.Expr:
        """What a call of one output row adds (efficiency one_row): the figure times
        max(0, 2 - rows), 1 at one row and 0 from two (rows are whole numbers)."""
        if not self.one_row:
            return sympy.Integer(0)
        return sympy.Float(self.one_row, 15) * sympy.Max(0, 2 - row_count(self.node))

    @property
    def reduction(self) -> sympy.Expr:
        """The serial walk of a GEMM's k in each output tile (efficiency k_latency): the
        figure times k, whatever the rows (K_LATENCY_NOTE)."""
        if not self.k_latency:
            return sympy.Integer(0)
        return sympy.Float(self.k_latency, 15) * gemm_depth(self.node)

    @property
    def k_split(self) -> sympy.Expr:
        """What a GEMM's split of k adds (efficiency split_k, SPLIT_K_NOTE): the figure where
        its k per output tile is over split_depth, k > depth x tiles, else 0; a Piecewise in
        the rows where they are symbols (the step where the tiles reach k / depth)."""
        if self.split_k is None:
            return sympy.Integer(0)
        depth, seconds = self.split_k
        tiles = gemm_tiles(row_count(self.node), gemm_columns(self.node))
        deep = sympy.StrictGreaterThan(gemm_depth(self.node), exact(depth) * tiles)
        return sympy.Piecewise((sympy.Float(seconds, 15), deep), (sympy.Integer(0), True))

    @property
    def serial_work(self) -> sympy.Expr:
        """The kernel time that adds to its loop's instead of hiding in the max: the prologue
        (a kernel before it), the epilogue (its blocks' writes after the loop), a single
        row's extra time, the walk of its k and its split."""
        return self.prologue + self.epilogue + self.single_row + self.reduction + self.k_split

    @cached_property
    def time(self) -> sympy.Expr:
        return kernel_time(self.compute_time, self.memory_time, self.overlap) + self.launch \
            + self.serial_transfer + self.serial_work

    @property
    def attainable(self) -> sympy.Expr:
        return sympy.Min(self.peak, self.intensity * self.bandwidth)

    @property
    def ridge(self) -> float:
        """The intensity at which this op would turn compute-bound on this hardware."""
        return self.peak / self.bandwidth


@dataclass(frozen=True, eq=False)  # compared by identity: evaluation caches per instance
class StageRoofline:
    stage: str
    ops: tuple[OpRoofline, ...]
    schedule: tuple[int, int] = (1, 1)   # (pipeline stages, microbatches)
    cache_key: tuple | None = None       # what it was built from (the persistent cache's key)
    server: tuple[float, float] = (0.0, 0.0)
    """The serving engine's time around the kernels (hardware efficiency.Framework): seconds
    per iteration and per sequence of it."""

    @property
    def server_time(self) -> sympy.Expr:
        """The engine's time of one iteration: step + per_sequence x batch."""
        step, per_sequence = self.server
        time = sympy.Float(step, 15) if step else sympy.Integer(0)
        return time + sympy.Float(per_sequence, 15) * S.batch if per_sequence else time

    @property
    def steps(self) -> sympy.Expr:
        """Slowest-stage times a step takes: m + n - 1 (GPipe; 1 without a pipeline), m the
        microbatches the batch allows (at most one per sequence: min(m, batch))."""
        stages, microbatches = self.schedule
        used = sympy.Min(microbatches, S.batch) if microbatches > 1 else microbatches
        return used + stages - 1

    @property
    def time(self) -> sympy.Expr:
        """Total stage time: sum over ops of repeat x time (ops run one after another), times
        the pipeline's steps (each op's time is that of one microbatch)."""
        return self.steps * sympy.Add(*(o.node.repeat * o.time for o in self.ops)) + \
            self.server_time


def roofline(graph: nx.DiGraph, hw: Hardware, bits: Mapping[str, float],
             kernels: str | None = None) -> StageRoofline:
    """`bits` maps w_bits/a_bits/kv_bits to numbers: the compute type of each op depends on them.
    They stay symbols in the byte expressions, substituted when evaluated. `kernels`: the stage
    whose kernels' efficiencies apply (default the graph's own; a serving iteration of only
    decodes runs decode's attention kernel on the step graph)."""
    values = bit_values(bits)
    vector_type = hw.vector_type
    layout = check_devices(graph, hw)
    stage = graph.graph["stage"]
    graph_launch = _graph_launch(hw, kernels or stage)
    ops = []
    for node in nodes(graph):
        hardware_values = _hardware_values(node, hw, values)
        ctype, kind = kernel_type(node, hw, values, kernels)
        peak = matrix_peak(node, hw, ctype, kind) if ctype else float("inf")
        channel = _channel(node, hw, layout)
        gemm = is_gemm(node, kind)
        ops.append(OpRoofline(
            node, ctype, peak, hw.bandwidth_for(kind), hw.peak_for(vector_type, kind),
            hardware_values, 0.0 if node.engine == "link" else
            hw.launch_for(kind) if graph_launch is None else graph_launch, channel,
            hw.channel_bandwidth(channel) if channel else float("inf"),
            hw.channel(channel).latency_s if channel else 0.0,
            serial=channel == "host" and not node.attrs.get("overlap", True),
            fill_rows=hw.rows_for(kind) if fills_by_rows(node.engine, kind) else 0.0,
            overlap=node.engine == "link" or hw.overlaps(kind),
            tile=gemm_tile(node, hw, kind),
            input_bytes=hw.input_bytes_for(kind) if kind in GEMM_FAMILIES else 0.0,
            fill_tiles=hw.tiles_for(kind) if gemm else 0.0,
            output_bytes=hw.output_bytes_for(kind) if gemm else 0.0,
            split=_split(hw, kind),
            floor=hw.floor_for(kind) if gemm and graph_launch is None else 0.0,
            one_row=_one_row(hw, kind, graph_launch is not None) if gemm else 0.0,
            k_latency=hw.k_latency_for(kind) if gemm else 0.0,
            split_k=hw.split_k_for(kind) if gemm else None,
            eager_launch=None if graph_launch is None or node.engine == "link"
            else hw.launch_for(kind), **_stack_all_reduce(node, hw, channel)))
    return StageRoofline(stage, _with_overlap(ops), tuple(graph.graph.get("pipeline", (1, 1))),
                         server=_server(hw))


def _one_row(hw: Hardware, kind: str, graphed: bool) -> float:
    """What a GEMM call of one row adds (efficiency one_row): device time, paid in a CUDA graph
    too, except for a family with a floor, whose calls the tables time outside graphs: its
    extra is host time like its floor, and a graphed stage pays neither (ONE_ROW_NOTE)."""
    return 0.0 if graphed and hw.floor_for(kind) else hw.one_row_for(kind)


def _split(hw: Hardware, kind: str) -> tuple[float, float] | None:
    """(seconds, bandwidth ratio) of a decode attention kernel's split regime, None else."""
    split = hw.split_for(kind) if kind in SPLIT_FAMILIES else None
    return None if split is None else (split[1], hw.bandwidth_for(kind) / split[0])


GRAPH_STAGES = ("decode", "verify")
"""The iterations the stacks capture in CUDA graphs: decodes, and the verification of drafted
tokens (a decode batch of k + 1 tokens per sequence); prefills and mixed steps run eagerly."""


def _graph_launch(hw: Hardware, kernels: str) -> float | None:
    """The per-kernel cost of an iteration the stack runs as a CUDA graph (None: each kernel's
    own launch: an eager stage, or a stack without graphs)."""
    framework = hw.framework
    return (framework.graph_launch_s if framework is not None and kernels in GRAPH_STAGES
            else None)


def _server(hw: Hardware) -> tuple[float, float]:
    """(seconds per iteration, per sequence) the serving engine adds to every stage (its cost
    per request, before the first token, is the request's: latency and the simulation add
    it)."""
    f = hw.framework
    return (0.0, 0.0) if f is None else (f.step_s, f.per_sequence_s)


def _stack_all_reduce(node: Node, hw: Hardware, channel: str | None) -> dict:
    """The stack's all-reduce algorithms for an all-reduce inside a node, where the hardware
    file has them for the stack that prices it."""
    if node.kind != "all_reduce" or channel != "link" or hw.all_reduce is None:
        return {}
    return {"all_reduce": hw.all_reduce, "link_bandwidth": hw.link.bandwidth_Bps}


def _with_overlap(ops: list[OpRoofline]) -> tuple[OpRoofline, ...]:
    """A collective marked `overlap` hides behind the compute of the ops run since the previous
    collective (the attention block before its all-reduce, the MLP before its own)."""
    if not any(op.node.attrs.get("overlap") and op.node.engine == "link" for op in ops):
        return tuple(ops)
    out, window = [], []
    for op in ops:
        if op.node.engine == "link":
            if op.node.attrs.get("overlap"):
                op = replace(op, hidden=sympy.Add(*window))
            window = []
        else:
            window.append(op.time)
        out.append(op)
    return tuple(out)


SPAN = {"tp": ("tp",), "ep": ("tp", "ep"), "pp": ("tp", "ep", "pp")}
"""The parallel degrees a collective of each group spans (tp innermost, then ep, then pp)."""


def check_devices(graph: nx.DiGraph, hw: Hardware) -> dict:
    """The graph's parallel layout, checked against the hardware's device count."""
    layout = graph.graph.get("parallel", {})
    degrees = [sympy.sympify(v) for v in layout.values()]
    if all(d.is_number for d in degrees):
        needed = int(sympy.Mul(*degrees)) if degrees else 1
        if needed > hw.count:
            shown = " x ".join(f"{k}={v}" for k, v in layout.items())
            raise EvaluationError(
                f"the layout {shown} needs {needed} devices; {hw.name} has {hw.count}",
                file=hw.source or None,
                hint="choose a system file with enough devices (`costdsl hardware` lists them) "
                     "or smaller degrees")
    return layout


def _channel(node: Node, hw: Hardware, layout: dict) -> str | None:
    """Where a node's transfers go: the host link, or for a collective the link when the
    devices it spans sit in one node and the network otherwise."""
    if not node.transfers:
        return None
    if "host" in node.transfers:
        if hw.host is None:
            raise EvaluationError(f"{node.name} is offloaded to host memory, but {hw.name} has "
                                  "no [host] section", file=hw.source or None,
                                  hint="add [host] with the host link's bandwidth to the "
                                       "hardware file")
        return "host"
    span = sympy.Mul(*[sympy.sympify(layout.get(g, 1)) for g in SPAN[node.attrs["group"]]])
    channel = "network" if span.is_number and span > hw.per_node else "link"
    if hw.channel(channel) is None:
        raise EvaluationError(
            f"{node.name} ({node.kind} over {node.attrs['devices']} devices) needs a "
            f"[{channel}] in the hardware file; {hw.name} has none", file=hw.source or None,
            hint="use a system file (`costdsl hardware` lists them) or add "
                 f"[{channel}] with its bandwidth per device")
    return channel


def kind_of(node: Node, kernels: str | None = None) -> str:
    """The name the op's efficiencies are looked up under (hardware.efficiency)."""
    return efficiency_kind(node.kind, node.attrs.get("kinds", ()), kernels or node.stage)


def family_of(node: Node, ctype: str | None, kernels: str | None = None,
              bits: Mapping[sympy.Symbol, float] | None = None) -> str:
    """The name the op's figures are looked up under in its compute type: kind_of, with a
    narrow GEMM's own (fp8_gemm; fp8_block_gemm where its weights carry group-wise scales) and,
    given the bitwidths' values, decode attention's over a narrow KV cache (kv_family)."""
    family = latent_family(typed_family(kind_of(node, kernels), node.engine, ctype,
                                        bool(node.scale_bits.get("weight"))),
                           bool(node.attrs.get("latent")))
    if bits is None:
        return family
    if node.engine == "matrix" and "weight" in node.operands:
        family = weight_only_family(family, ctype, _numeric_bits(node, "weight", bits),
                                    node.attrs.get("weight_scale_bits"))
    if any(a.cls == "kv" for a in node.reads):
        family = kv_family(family, _numeric_bits(node, "kv", bits))
    return family


def bit_values(bits: Mapping[str, float]) -> dict[sympy.Symbol, float]:
    """{bitwidth symbol: value} from w_bits / a_bits / kv_bits keywords."""
    return {BITS_BY_CLASS[c]: v for c, v in _by_class(bits).items()}


def blocks_per_row(node: Node) -> int:
    """Thread blocks a kernel runs per output row (efficiency `rows` counts blocks): one per KV
    head for fused attention (decode's kernels stream a sequence's cache per KV head), one
    else."""
    return int(node.attrs.get("kv_heads", 1)) if node.kind == "flash_attention" else 1


def row_count(node: Node) -> sympy.Expr:
    """Rows of an op's output: every dimension but the last (tokens, or tokens x heads)."""
    return sympy.Mul(*node.out_shape[:-1]) if len(node.out_shape) > 1 else sympy.Integer(1)


def _hardware_values(node: Node, hw: Hardware, bits) -> dict | None:
    """The hardware figures the op's costs refer to (on-chip memory), checked against what the
    op needs: a fusion whose smallest tile does not fit is not applicable on this hardware."""
    needed = node.attrs.get("sram_needed")
    if needed is None:
        return None
    needed = sympy.sympify(needed).subs(bits)
    if hw.sram_per_block is None:
        raise NotApplicableError(
            f"{node.name}: {node.kind} is not applicable on {hw.key}: the hardware file gives no "
            f"on-chip memory per block (sram_per_block)",
            hint="drop the flash_attention pass, or add sram_per_block to the hardware file")
    if needed.is_number and float(needed) > hw.sram_per_block:
        rows = node.attrs.get("block_rows")
        per_row = float(needed) / rows if rows else None
        fits = int(hw.sram_per_block // per_row) if per_row else 0
        call = node.origin
        where = dict(file=call.pos.file, line=call.pos.line, column=call.pos.column) if call \
            else {}
        raise NotApplicableError(
            f"{call.text if call else node.kind}: {node.name} is not applicable on {hw.key}: "
            f"a block of {rows} query rows needs {float(needed) / 1024:g} KiB of on-chip "
            f"memory, the hardware has {hw.sram_per_block / 1024:g} KiB per block",
            hint=(f"block={fits} or fewer fits on {hw.key}" if fits >= 16 else
                  f"not even the smallest block (16 rows) fits on {hw.key}")
            + "; or choose hardware with more on-chip memory per block", **where)
    return {S.sram: hw.sram_per_block, S.l2: hw.l2_bytes or 0}


def _by_class(bits: Mapping[str, float]) -> dict[str, float]:
    names = {"w_bits": "weight", "a_bits": "act", "kv_bits": "kv"}
    return {names[k]: v for k, v in bits.items() if k in names}
