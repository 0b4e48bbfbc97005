"""Achieved fractions of the datasheet figures, and the fixed cost of a kernel launch.

A hardware file may carry an `[efficiency]` section (every figure with its source, as the rest
of the file):

    [efficiency]
    bandwidth = 0.82          # achieved fraction of datasheet bandwidth on streaming reads
    launch = "4 us"           # fixed cost per kernel: per op occurrence, after fusion
    measured_as = "nvidia-a100-80gb"  # optional: the hardware the measurements name
    [efficiency.compute]      # achieved fraction of peak, by compute type
    fp16 = 0.72
    [efficiency.attention]    # the fused attention kernel (FlashAttention)
    bandwidth = 0.88
    compute = 0.60
    launch = "10 us"
    [efficiency.decode_attention]  # optional: decode's attention kernel (FlashDecoding,
    bandwidth = 0.76          # paged attention) when it differs from prefill's; else `attention`
    [efficiency.decode_attention_kv8]  # optional: decode's over an 8-bit (FP8) cache (KV_FAMILIES)
    bandwidth = 0.51
    [efficiency.decode_attention_mla]  # optional: decode's over an MLA latent cache (MLA_DECODE)
    compute = 0.57
    [efficiency.decode_attention_mla_kv8]  # optional: MLA decode's over an FP8 latent (MLA_KV8)
    bandwidth = 0.40
    compute_type = "fp8"      # optional, any family: the type its kernel computes in, where
                              # not its operands' (COMPUTE_TYPE_NOTE)
    [efficiency.attention_mla]  # optional: a prompt's MLA attention (MLA_PREFILL)
    compute = 0.55
    [efficiency.w4a16_expert]  # optional: INT4 weight-only routed experts (WEIGHT_ONLY_GEMMS,
    bandwidth = 0.43          # EXPERT_FAMILIES; w4a16_mx_* for MXFP4 weights)
    compute = 0.11
    [efficiency.rmsnorm]      # any op kind may have its own figures
    bandwidth = 0.31
    rows = 108                # token rows that fill the chip: one thread block per row
    [efficiency.attention]
    overlap = false           # its memory time adds to its compute time (see below)

Time of an op = max(operations / (eta_c peak), bytes / (eta_b bandwidth)) + launch. The
top-level figures are those of the GEMMs (linear layers and the other matrix kinds); an op kind
with a table of its own (or the attention kernels, under `attention`) uses its figures where it
gives them and the top-level ones otherwise; a missing fraction is 1 (the datasheet figure).
Small elementwise kernels really do differ: vidur's A100 profiles show RMSNorm at about a third
of the HBM bandwidth and a residual add near all of it. A fraction above 1 is allowed: a working
set served from on-chip cache beats the off-chip roof.

`rows` models occupancy: vLLM's norm, rotary and activation kernels run one thread block per
token row, so with fewer rows than multiprocessors part of the chip idles and the memory time
is that of `rows` rows: bytes / (eta_b B) x max(1, rows / rows of the op). On vidur's A100
profiles this takes RMSNorm's fitted error from 20% to 9% (a Llama-2-70B norm of one token takes
twice a 7B one, at the same fraction of the roof); `costdsl calibrate` sets it to the SM count
where the data say so.

`[efficiency.tile]` (m, n, and optionally sms: the device's SM count otherwise) models GEMM wave
quantisation: a linear layer's M x N output is cut into ceil(M/m) ceil(N/n) tiles run sms at a
time, and its operations count as whole waves: ops x ceil(tiles / sms) sms m n / (M N). It is
opt-in: on the shipped measurements one fixed tile fits worse than none (cuBLAS picks its tile
and split-K per shape, and a decode GEMV is no tile at all).

`overlap = false` says a kind's traffic does not hide behind its arithmetic: time = compute +
memory + launch instead of the max. FlashAttention is such a kernel in prefill: each block loads
its query tile before its loop over the keys and writes its output after it, and only the loop
streams (with the keys' re-reads served by the L2, what is left of the traffic is exactly the
queries and outputs). On aiconfigurator's prefill kernels this takes the fit from 16% to 5%
(A100) and 12% to 2.4% (H100). The bound an op is reported under still compares the two terms.

`[efficiency.framework]` (or `[stack.NAME.framework]`) is the serving engine around the
kernels, fitted per stack to served requests (bench/serving_silicon.py, on the measured
benchmark runs of tests/data/measured/serving-silicon.csv) rather than to kernels:

    [efficiency.framework]
    graph_launch = "1 us"     # per kernel of a decode iteration, replacing each kernel's launch
    step = "0.3 ms"           # per iteration: scheduling, sampling, the host's sync
    per_sequence = "20 us"    # per sequence of an iteration (its sampling and bookkeeping)
    request = "25 ms"         # per request, before its first token: API server, tokenizer,
                              # the first token's way back to the client

The stacks capture decode iterations in CUDA graphs: their kernels launch back to back without
the host, and the per-kernel cost a kernel timed alone carries (the `launch` figures: event
timing, a quantisation kernel launched separately) is replaced. `graph_launch` is what a kernel
of a served decode iteration costs beyond its roofline time instead, fitted: 0 to 5 us on the
shipped files, below a kernel's own launch where graphs save (the B200 under TensorRT-LLM) and
above some of them where served kernels run slower than timed alone (the H200 under vLLM: 5.2
us against its GEMMs' 4.3 us, though its decode attention's 13.7 us drops to it); without it,
decode kernels keep their own launch. `--engine off` prices the kernels alone. Prefill and
mixed iterations run eagerly (their launches stay). `step` and `per_sequence` add to every
iteration (stage time = kernels + step + per_sequence x batch); `request` to a request's time
to first token (`latency`, `serve-curve`, `plan`, and in `simulate` the time before the
scheduler sees it), not to a stage. Without the table the figures are 0: the kernels alone.
Calibration and validation compare kernels timed alone: they ignore the table.

`input_bytes` (narrow GEMM families only) is the traffic a stack's FP8 or INT8 GEMM moves per
element of its input before the GEMM runs: the activations, bf16 between layers, are quantised
to the GEMM's type first (a dynamic per-tensor scale reads them for the maximum, again to cast,
and writes them narrow: 5 bytes per element from 16 bits). Its time grows with tokens x input
width and not with the output width, so it weighs most on the narrow layers tensor parallelism
leaves: in aiconfigurator's H100 TensorRT-LLM tables an FP8 GEMM of 8,192 x 4,096 takes 111 us
at 256 output columns and 440 us at 8,192 (bf16: 31 and 701 us), a constant of ~99 us that
grows with m x k. The bytes count in the op's activation traffic, at the family's bandwidth;
`costdsl calibrate` chooses the figure per stack from a grid, as it chooses `rows`.

Two figures shape a GEMM family's time where the data say so (`[efficiency.linear]` for the
16-bit GEMMs, `[efficiency.fp8_gemm]` ... for the others; a typed family inherits linear's):
`tiles` is the GEMMs' occupancy, the output tiles of GEMM_TILE x GEMM_TILE that fill the chip:
a GEMM of fewer tiles (a decode GEMM of few output columns: one tile row) streams its weights on
the SMs its tiles occupy, and its memory time is stretched by max(1, tiles / its tiles), its
tiles max(1, M / 128) max(1, N / 128). In aiconfigurator's H200 vLLM tables a 512 x 16,384 FP8
GEMM (4 tiles at m = 1) takes 17.5 us for 8 MB of weights, the 16,384 x 512 one (128 tiles)
12.9 us. `output_bytes` is the traffic a kernel moves per output element after its main loop,
at its family's bandwidth, not hidden behind it: the epilogue of a kernel whose blocks run the
loop and then write (CUTLASS's cooperative schedules, the stacks' FP8 GEMMs at large m); in the
same tables an FP8 GEMM of k = 512 at m = 16,384 takes 206 us where its operations take 35 us at
the FP8 peak and its traffic 33 us. Both are choices from a grid, as `rows` and `input_bytes`;
on the H200's vLLM FP8 GEMMs they take the held-out error from 13.6% to 8.5%.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

ATTENTION_KINDS = frozenset({"flash_attention"})
"""Op kinds timed with the `attention` figures (fused ops count when a member is one): the fused
attention kernel. Unfused attention is a batched GEMM (QK^T), an elementwise kernel (softmax)
and another batched GEMM (xV): each takes its own kind's table ([efficiency.qk_matmul], ...)
or, without one, the top-level figures, not those fitted on fused kernels."""

NARROW_GEMM_TYPES = ("fp8", "int8", "fp4", "int4")
GEMM_FAMILIES = frozenset(f"{t}{block}_gemm" for t in NARROW_GEMM_TYPES
                          for block in ("", "_block"))
"""The linear layers of a narrow compute type run kernels of their own: an FP8 GEMM under
TensorRT-LLM first quantises its activations (13-15 us per call at m <= 16 on Hopper and
Blackwell in aiconfigurator's tables, against 4-5 us for bf16) and streams its weights at
another fraction of the bandwidth. `[efficiency.fp8_gemm]` gives them their own bandwidth and
launch (their compute fraction stays in [efficiency.compute]); without it, the top-level ones.
Block-scaled GEMMs (weights with group-wise scales: FP8 in 128 x 128 blocks, NVFP4 in 16s) are
other kernels again (DeepGEMM, CUTLASS block-scaled): `[efficiency.fp8_block_gemm]`, falling
back to fp8_gemm's figures."""

WEIGHT_ONLY_TYPES = {4: "w4a16", 8: "w8a16"}
"""Weight-only formats by the widest weight bits each covers: narrow weights with 16-bit
activations, widened to the activations' type inside the GEMM (Marlin, Machete, CUTLASS
mixed-input kernels)."""

MICROSCALED = "w4a16_mx"
KERNEL_TYPES = ("fp8", "fp4", "int8", "fp16", "bf16")
"""The tensor types a family's `compute_type` may name (the chip's [peak] must list it)."""
COMPUTE_TYPE_NOTE = """`compute_type` says a kernel computes in a type other than its
operands' widest: TensorRT-LLM's MLA decode over an FP8 latent on Blackwell quantises its
query to FP8 and runs FP8 tensor-core math (priced at the bf16 peak, its fitted fraction is
1.08 of it on the B200: no bf16 kernel does that; at the FP8 peak, 0.54). The op's matrix work
is then timed at that type's peak and fraction, and reported in that type."""
"""4-bit float weights with an 8-bit shared scale per small group (MXFP4: E2M1 with an E8M0
scale per 32, gpt-oss's and Kimi K3's experts; NVFP4 weights) under 16-bit activations: other
kernels than the integer formats' (OpenAI's Triton MXFP4 MoE, FlashInfer's TensorRT-LLM
MXFP4 x bf16, against Marlin for INT4): `[efficiency.w4a16_mx_expert]`, falling back to the
integer W4A16 figures."""

WEIGHT_ONLY_GEMMS = frozenset(f"{t}_gemm" for t in (*WEIGHT_ONLY_TYPES.values(), MICROSCALED))
"""A weight-only linear layer (W4A16: AWQ, GPTQ, INT4 QAT checkpoints) runs in its activations'
16-bit type, but its kernel is not a bf16 GEMM: it streams a quarter of the bytes and
dequantises each weight before the tensor cores see it. `[efficiency.w4a16_gemm]` (and
`w8a16_gemm`) gives it a bandwidth, a compute fraction and a launch of its own; without it,
the top-level figures (the bf16 GEMMs')."""

EXPERT_FAMILIES = frozenset({"expert_linear"} | {f"{t}{block}_expert" for t in NARROW_GEMM_TYPES
                                                  for block in ("", "_block")}
                            | {f"{t}_expert" for t in (*WEIGHT_ONLY_TYPES.values(),
                                                       MICROSCALED)})
"""The routed experts' GEMMs (a fused MoE kernel's grouped GEMMs) are kernels of their own:
`[efficiency.expert_linear]` for bf16 experts, `[efficiency.fp8_expert]`,
`[efficiency.fp8_block_expert]`, `[efficiency.fp4_block_expert]` ... for narrow ones (each a
bandwidth, a compute fraction and a launch: bench/fit_experts.py fits them to the package's MoE
tables; `[efficiency.w4a16_expert]` for INT4 weight-only experts, vLLM's and SGLang's Marlin
MoE). Without them, an expert GEMM is priced as the top-level figures price a GEMM."""

KV_TYPES = {8: "kv8", 4: "kv4"}
"""The narrow KV caches a decode attention kernel may read, by the widest bits each covers."""

KV_FAMILIES = frozenset(f"decode_attention_{t}" for t in KV_TYPES.values())
"""Decode's attention over a narrow KV cache is a kernel of its own: `[efficiency.
decode_attention_kv8]` for an 8-bit (FP8) cache, `_kv4` for a 4-bit one. The stacks read an FP8
cache at their own rate, not at half the bf16 kernel's time: in aiconfigurator's tables SGLang's
FP8-cache decode kernels on the H200 take 0.8 to 0.92 of the bf16 kernel's time where the bytes
say 0.5, TensorRT-LLM's on Hopper less than the bytes say. Without a table of its own, decode's."""

MLA_DECODE = "decode_attention_mla"
"""Decode's attention over a latent cache (MLA, absorbed: DeepSeek-V2/V3, Kimi K2) is a kernel
of its own (FlashMLA, FlashInfer's and TensorRT-LLM's MLA kernels): every query head of a
sequence reads one shared 576-wide latent row per cached token, so it does heads x 1,088
operations a cached token for 1,152 bytes and runs near the compute roof where GQA's kernel
streams. In aiconfigurator's tables SGLang's on the H200 takes 18.3 us for one sequence of
1,023 tokens at 64 heads, which GQA decode's figures priced at 10.3. `[efficiency.
decode_attention_mla]` (any cache width); without it, decode's."""

MLA_KV8 = f"{MLA_DECODE}_kv8"
"""MLA decode over an FP8 latent cache is another kernel again: the stacks convert every
element they read, and in aiconfigurator's tables SGLang's on the H200 takes up to 3x its time
over a bf16 cache (the bf16 figures with half the bytes missed its rows by 67%, TensorRT-LLM's
Blackwell ones by 19-21%). `[efficiency.decode_attention_mla_kv8]` (a cache of 8 bits or
fewer); without it, MLA decode's."""

MLA_PREFILL = "attention_mla"
"""A prompt's attention in a latent attention (MLA) is a kernel of its own too: over per-head
keys and values up-projected from the latent, 192 wide keys and 128 wide values at
DeepSeek-V3's shapes (TensorRT-LLM's context MLA, FlashAttention's varlen kernel in vLLM).
Priced with GQA prefill's figures (head_dim 128), TensorRT-LLM's on the H200 miss by 29% (up to
2x at a few thousand tokens). `[efficiency.attention_mla]`; without it, prefill attention's
(`attention`). The figures are per operation of the expanded form, whatever the kernel runs:
SGLang's FA3 MLA on Hopper runs the prompt over the latent (absorbed, 3.4x the operations at
0.6 of the peak), fitted as 0.21 of the peak on the expanded form's, so that a model written
as the stacks' default is priced as each stack runs it."""

FALLBACK = {"decode_attention": "attention", "decode_attention_kv8": "decode_attention",
            MLA_DECODE: "decode_attention", MLA_KV8: MLA_DECODE, MLA_PREFILL: "attention",
            "decode_attention_kv4": "decode_attention_kv8",
            **{f"{t}_gemm": "linear" for t in NARROW_GEMM_TYPES},
            **{f"{t}_block_gemm": f"{t}_gemm" for t in NARROW_GEMM_TYPES},
            **{f"{t}{block}_expert": "expert_linear" for t in NARROW_GEMM_TYPES
               for block in ("", "_block")},
            **{f"{t}_gemm": "linear" for t in WEIGHT_ONLY_TYPES.values()},
            **{f"{t}_expert": "expert_linear" for t in WEIGHT_ONLY_TYPES.values()},
            f"{MICROSCALED}_gemm": "w4a16_gemm", f"{MICROSCALED}_expert": "w4a16_expert"}
"""A family whose figures, where the file gives none of its own, are those of another."""

def lineage(family: str):
    """`family`, then the families whose figures it takes where it gives none (FALLBACK)."""
    while family:
        yield family
        family = FALLBACK.get(family, "")


ATTENTION_FAMILIES = frozenset({"attention", "decode_attention", MLA_DECODE, MLA_KV8,
                                MLA_PREFILL}) | KV_FAMILIES
"""The attention kernels' efficiency tables (prefill's and decode's, decode's by KV cache type):
families of several op kinds, not op kinds themselves."""

GEMM_TILE = 128
"""The side of the output tile a GEMM's occupancy (`tiles`) counts in: the 128 x 128 tile of the
stacks' Hopper and Blackwell GEMMs at large m (CUTLASS's and cuBLAS's default shape)."""

TILE_FAMILIES = frozenset({"linear"}) | GEMM_FAMILIES | WEIGHT_ONLY_GEMMS
"""The families that may give `tiles` and `output_bytes`: the dense GEMMs (not the routed
experts', whose grouped kernels tile by expert)."""

SPLIT_FAMILIES = frozenset({"decode_attention", MLA_DECODE, MLA_KV8}) | KV_FAMILIES
"""The kernels that may give `split_bandwidth` and `split_launch`: decode's attention, which the
stacks run unsplit (one block per sequence and KV head streaming the cache) or split over the
cache with a reduction after (multi-block, split-KV), whichever their heuristics expect faster:
time = launch + min(bytes / (bandwidth B), split_launch + bytes / (split_bandwidth B)). In
aiconfigurator's tables TensorRT-LLM's XQA on the H200 streams a small cache at 0.57 of HBM and
a large one at 0.95 after an 11 us reduction: one line misses both by 13%, the two 9%."""


def fills_by_rows(engine: str, family: str) -> bool:
    """Whether a kernel's occupancy is its efficiency `rows`: an elementwise kernel's (one thread
    block per token row) or decode attention's (one per sequence and KV head)."""
    return engine == "vector" or family in SPLIT_FAMILIES


def split_owner(family: str, splits, blocks) -> str | None:
    """The family whose split regime a decode attention kernel of `family` runs: the first of
    its lineage in `splits` (the families with split figures), unless one in `blocks` (with
    thread blocks of their own) comes first: its blocks describe its own kernel's schedule
    (TensorRT-LLM's FP8-cache kernel on the L40S streams each block alone where its 16-bit one
    splits); None: no split."""
    for f in lineage(family):
        if f in splits:
            return f
        if f in blocks:
            return None
    return None

FLOOR_NOTE = """A GEMM family's `floor`: the per-call time of a stack whose call is bound by its
host work where no CUDA graph captures it (vLLM 0.24's block-FP8 path: 85 us on the H200, 190
to 330 us on Blackwell). The GPU's work runs under it, so the kernel takes the larger of its
roofline time and the floor (time = max(compute, memory, floor) + its serial work), not their
sum; the family's launch is 0 beside it. A decode step in CUDA graphs pays no floor (the
graph's launch instead)."""

ONE_ROW_NOTE = """A GEMM family's `one_row`: the time a call of a single output row (a decode of one
sequence) takes beyond the roofline's, added to it. vLLM 0.24's per-tensor FP8 GEMM on the
Blackwell chips takes 13 to 18 us more at m = 1 than at m = 2 on every shape aiconfigurator
times (B200 4,096 x 4,096: 25 us, then 9 us from m = 2 to 64), in CUDA graphs (the package's
collector replays a captured graph): device time, so a graphed decode pays it too. A family
with a floor is timed outside graphs (FLOOR_NOTE): its one_row is host time like its floor
(vLLM's block-FP8 path on the GB200: 230 us more at m = 1), and a graphed decode pays neither."""

K_LATENCY_NOTE = """A GEMM family's `k_latency`: seconds per element of the reduction (k, the input
width) added to a call's time. Each output tile walks k in sequence, so a narrow-output GEMM
over a long k (a tensor-parallel shard of a projection) takes longer than its bytes say, and a
wide one over a short k less: in aiconfigurator's whole bf16 GEMM grid on the H200 under
TensorRT-LLM (n, k >= 512, m <= 64), launch + bytes / bandwidth misses by 10.2% and with k x
0.28 ns by 7.0%; 512 x 4,096 (n x k) takes 5.9 us at m = 1 and 4,096 x 512, the same 4 MB,
3.6 us. The family's own figure (a narrower family runs another kernel), chosen by the fit
where it lowers the error (bench/gemm_grid.py judges it over the grid)."""

SPLIT_K_NOTE = """A GEMM family's `split_k` and `split_depth`: the time a call adds where its
kernel splits k, and the depth that makes it split. With few output tiles over a deep k (a
decode's narrow shard of a projection: 4 tiles of 128 columns over k = 4,096) a GEMM library
cuts k among more blocks and reduces their partial sums after (split-K: a second pass, or
blocks that wait their turn to add), a fixed cost on top of the loop. The call splits where
its k per output tile is over `split_depth` (k / tiles > split_depth, its tiles counted as
`tiles` counts them: max(1, m / 128) max(1, n / 128)), so a decode's narrow GEMM pays it and
the same shape at a prefill's thousands of rows, whose tiles fill the chip, does not. In
aiconfigurator's B200 bf16 tables under TensorRT-LLM, 512 x 4,096 (n x k) takes 5.9 us from m
= 1 to 16 and 4,096 x 512, the same 4 MB and operations, 2.6 us at m = 16; its fitted split
(1.73 us above 64 elements of k a tile) takes the bf16 GEMMs' held-out error over the nine
shapes and their TP-4/8 shards from 8.4 to 7.7%. The family's own figures, as k_latency's;
split_depth a choice from a grid (as tiles), split_k fitted. In sympy the cost is a Piecewise in the rows: a step
where the tiles reach k / split_depth."""

GEMM_CHOICES = ("input_bytes", "tiles", "output_bytes")
"""A GEMM family's chosen figures beside its fractions (listed in as_dict only where given)."""

MAX_FRACTION = 4.0
"""The largest efficiency accepted: above 1 means on-chip reuse; 4x the datasheet is a typo."""


@dataclass(frozen=True)
class KindEfficiency:
    """One op kind's own figures; None: the top-level one."""
    bandwidth: float | None = None
    compute: float | None = None
    launch_s: float | None = None
    rows: float | None = None      # token rows that fill the chip (None: occupancy not modelled)
    overlap: bool | None = None    # False: memory time adds to compute time (None: inherit, True)
    input_bytes: float | None = None   # bytes moved per input element before the GEMM (its
                                       # activation quantisation); None: inherit, else 0
    tiles: float | None = None         # GEMM output tiles that fill the chip (None: inherit)
    output_bytes: float | None = None  # bytes moved per output element after the main loop
                                       # (its epilogue, serial); None: inherit, else 0
    split_bandwidth: float | None = None  # decode attention split over more blocks: its
    split_launch_s: float | None = None   # bandwidth fraction and fixed cost (None: inherit)
    floor_s: float | None = None   # a call's host time the kernel runs under (no CUDA graph):
                                   # its time is at least this (None: none)
    one_row_s: float | None = None   # seconds a call of one output row adds (ONE_ROW_NOTE)
    compute_type: str | None = None  # the type the kernel computes in, where not its
                                     # operands' (COMPUTE_TYPE_NOTE); None: inherit, theirs
    k_latency_s: float | None = None   # seconds per element of a GEMM's k (K_LATENCY_NOTE)
    split_k_s: float | None = None     # seconds a call adds where it splits k, and the k per
    split_depth: float | None = None   # output tile above which it does (SPLIT_K_NOTE)


@dataclass(frozen=True)
class Tile:
    """GEMM wave quantisation: a GEMM's output is cut into m x n tiles, one thread block each,
    run in waves of `sms` blocks; a partial wave takes as long as a full one."""
    m: int
    n: int
    sms: int | None = None     # blocks per wave; None: the device's SM count


@dataclass(frozen=True)
class Framework:
    """The serving engine around the kernels ([efficiency.framework]), in seconds."""
    graph_launch_s: float | None = None   # per decode kernel in a CUDA graph; None: no graphs
    step_s: float = 0.0                   # per iteration
    per_sequence_s: float = 0.0           # per sequence of an iteration
    request_s: float = 0.0                # per request, before its first token

    def as_dict(self) -> dict:
        return {"graph_launch_s": self.graph_launch_s, "step_s": self.step_s,
                "per_sequence_s": self.per_sequence_s, "request_s": self.request_s}


FRAMEWORK_KEYS = {"graph_launch": "graph_launch_s", "step": "step_s",
                  "per_sequence": "per_sequence_s", "request": "request_s"}


class Figures(NamedTuple):
    """The figures a kernel of one family runs at, its lineage resolved (Efficiency.figures)."""
    bandwidth: float
    compute: float | None        # the family's own fraction; None: its compute type's
    compute_type: str | None     # the type it computes in, where not its operands'
    launch_s: float
    rows: float
    input_bytes: float
    tiles: float
    output_bytes: float
    floor_s: float
    one_row_s: float
    k_latency_s: float
    split_k: tuple[float, float] | None   # (split_depth, split_k seconds); None: no split
    split: tuple[float, float] | None     # decode attention's (bandwidth, seconds) split
    overlaps: bool


@dataclass(frozen=True)
class Efficiency:
    bandwidth: float = 1.0
    compute: Mapping[str, float] = field(default_factory=dict)
    launch_s: float = 0.0
    kinds: Mapping[str, KindEfficiency] = field(default_factory=dict)
    source: str = ""  # where the figures come from (the comment calibrate writes)
    stack: str = ""  # the serving stack (and version) whose kernels were measured
    measured_as: str = ""  # the hardware key the measurements name (a calibrated copy's origin)
    tile: Tile | None = None  # GEMM wave quantisation ([efficiency.tile]); None: none
    framework: Framework | None = None  # the serving engine around the kernels; None: none

    def __post_init__(self):
        # figures already resolved, by family and by compute type: the fit prices each of a
        # table's thousand rows a hundred times, and a lineage walked per row per figure was
        # most of its time (an Efficiency never changes once built)
        object.__setattr__(self, "_figures", {})
        object.__setattr__(self, "_fitted_types", {})

    def figures(self, kind: str) -> Figures:
        """The figures a kernel of `kind` runs at, its lineage (FALLBACK) resolved."""
        known = self._figures
        if kind not in known:
            known[kind] = self._resolve(kind)
        return known[kind]

    def _resolve(self, kind: str) -> Figures:
        def inherited(what):   # the first of the lineage that gives it
            return next((value for value in (getattr(self.kinds.get(f), what, None)
                                             for f in lineage(kind))
                         if value is not None), None)

        def own(what):   # the family's own table only: a narrower family runs another kernel
            return getattr(self.kinds.get(kind), what, None) or 0.0

        bandwidth, launch, overlap = (inherited(w) for w in ("bandwidth", "launch_s", "overlap"))
        depth, split_k = own("split_depth"), own("split_k_s")
        return Figures(bandwidth=self.bandwidth if bandwidth is None else bandwidth,
                       compute=inherited("compute"), compute_type=inherited("compute_type"),
                       launch_s=self.launch_s if launch is None else launch,
                       rows=inherited("rows") or 0.0,
                       input_bytes=inherited("input_bytes") or 0.0,
                       tiles=inherited("tiles") or 0.0,
                       output_bytes=inherited("output_bytes") or 0.0,
                       floor_s=self._floor(kind), one_row_s=own("one_row_s"),
                       k_latency_s=own("k_latency_s"),
                       split_k=(depth, split_k) if depth and split_k else None,
                       split=self._split(kind), overlaps=True if overlap is None else overlap)

    def _floor(self, kind: str) -> float:
        # it goes with the launch: the floor of the first family in the lineage that gives a
        # launch or a floor (a family with a launch of its own does not take its fallback's)
        owner = next((own for own in map(self.kinds.get, lineage(kind))
                      if own is not None
                      and (own.launch_s is not None or own.floor_s is not None)), None)
        return (owner.floor_s or 0.0) if owner is not None else 0.0

    def _split(self, kind: str) -> tuple[float, float] | None:
        splits = {f for f, own in self.kinds.items()
                  if own.split_bandwidth is not None and own.split_launch_s is not None}
        owner = split_owner(kind, splits,
                            {f for f, own in self.kinds.items() if own.rows is not None})
        if owner is None:
            return None
        return self.kinds[owner].split_bandwidth, self.kinds[owner].split_launch_s

    def bandwidth_for(self, kind: str) -> float:
        return self.figures(kind).bandwidth

    def compute_for(self, ctype: str, kind: str) -> float:
        own = self.figures(kind).compute
        if own is not None:
            return own
        fitted = self.fitted_type(ctype)
        return self.compute[fitted] if fitted else 1.0

    def fitted_type(self, ctype: str) -> str | None:
        """The compute type whose fitted fraction `ctype` takes: its own, else that of the
        nearest wider tensor type fitted (an unmeasured fp8 or int8 GEMM is priced at the
        fp16/bf16 fraction, not at 100% of its peak); None: no figure (the datasheet's)."""
        known = self._fitted_types
        if ctype not in known:
            known[ctype] = next((c for c in (ctype,) + UNFITTED_FALLBACK.get(ctype, ())
                                 if c in self.compute), None)
        return known[ctype]

    def borrowed(self, ctypes) -> dict[str, str]:
        """{type: the type whose fraction it borrows} for the types of `ctypes` not fitted."""
        out = {}
        for c in ctypes:
            fitted = self.fitted_type(c)
            if fitted and fitted != c:
                out[c] = fitted
        return out

    def borrowed_family(self, family: str) -> str | None:
        """The family whose figures `family` takes where the file gives it none of its own
        ("linear": the top-level figures, the GEMMs'); None where it has its own."""
        if family in self.kinds:
            return None
        source = FALLBACK.get(family, "")
        while source and source not in self.kinds:
            source = FALLBACK.get(source, "")
        return source or "linear"

    def kernel_type(self, ctype: str, kind: str) -> str:
        """The compute type a kernel of `kind` runs its matrix work in: the one its family
        declares (COMPUTE_TYPE_NOTE), else its operands' `ctype`."""
        return self.figures(kind).compute_type or ctype

    def launch_for(self, kind: str) -> float:
        return self.figures(kind).launch_s

    def rows_for(self, kind: str) -> float:
        """Token rows a kernel of `kind` needs to fill the chip (0: occupancy not modelled)."""
        return self.figures(kind).rows

    def input_bytes_for(self, kind: str) -> float:
        """Bytes a kernel of `kind` moves per element of its input before it runs: the
        quantisation of its activations to its compute type (0: none modelled)."""
        return self.figures(kind).input_bytes

    def tiles_for(self, kind: str) -> float:
        """GEMM output tiles a kernel of `kind` needs to fill the chip (0: not modelled)."""
        return self.figures(kind).tiles

    def output_bytes_for(self, kind: str) -> float:
        """Bytes a kernel of `kind` moves per output element after its main loop, serial to
        it (its epilogue; 0: none modelled)."""
        return self.figures(kind).output_bytes

    def floor_for(self, kind: str) -> float:
        """Seconds a call of `kind` takes at least, its host time (FLOOR_NOTE); 0: none."""
        return self.figures(kind).floor_s

    def one_row_for(self, kind: str) -> float:
        """Seconds a call of `kind` with one output row takes beyond its roofline time
        (ONE_ROW_NOTE); 0: none. The family's own figure: a narrower family (fp8_block_gemm
        beside fp8_gemm) runs another kernel and does not inherit it."""
        return self.figures(kind).one_row_s

    def k_latency_for(self, kind: str) -> float:
        """Seconds per element of the reduction a GEMM of `kind` walks in each output tile
        (K_LATENCY_NOTE); 0: none. The family's own figure, as one_row's."""
        return self.figures(kind).k_latency_s

    def split_k_for(self, kind: str) -> tuple[float, float] | None:
        """(k per output tile above which a GEMM of `kind` splits its k, seconds the split
        adds) (SPLIT_K_NOTE); None: it never splits. The family's own figures, as one_row's."""
        return self.figures(kind).split_k

    def split_for(self, kind: str) -> tuple[float, float] | None:
        """(bandwidth fraction, seconds) of a decode attention kernel's split regime (its
        cache split over more blocks and reduced after); None where the file gives none, or
        where a family with blocks of its own comes first (split_owner)."""
        return self.figures(kind).split

    def overlaps(self, kind: str) -> bool:
        """Whether a kernel of `kind` hides its memory traffic behind its compute (the max)."""
        return self.figures(kind).overlaps

    def as_dict(self) -> dict:
        return {"bandwidth": self.bandwidth, "launch_s": self.launch_s,
                "compute": dict(self.compute),
                "tile": None if self.tile is None else {"m": self.tile.m, "n": self.tile.n,
                                                        "sms": self.tile.sms},
                "kinds": {k: {"bandwidth": v.bandwidth, "compute": v.compute,
                              "launch_s": v.launch_s, "rows": v.rows, "overlap": v.overlap,
                              **{key: getattr(v, key)
                                 for key in (*GEMM_CHOICES, "split_bandwidth", "split_launch_s",
                                             "floor_s", "one_row_s", "compute_type",
                                             "k_latency_s", "split_k_s", "split_depth")
                                 if getattr(v, key) is not None}}
                          for k, v in self.kinds.items()},
                **({"framework": self.framework.as_dict()} if self.framework else {})}


UNFITTED_FALLBACK = {
    "fp4": ("fp8", "fp16", "bf16"), "int4": ("int8", "fp8", "fp16", "bf16"),
    "fp8": ("fp16", "bf16"), "int8": ("fp8", "fp16", "bf16"),
    "fp16": ("bf16",), "bf16": ("fp16",), "tf32": ("fp16", "bf16")}
"""Where a tensor compute type has no fitted fraction, the nearest wider type's is used: the
kernels of one stack reach similar shares of their peaks, and a narrower type's GEMMs fall
short of its peak at least as much (measured FP8 GEMMs: 46 to 64% against bf16's 71 to 81%)."""


def efficiency_kind(kind: str, fused_kinds=(), stage: str = "") -> str:
    """The name an op's figures are looked up under: "attention" for the fused attention kernel
    ("decode_attention" in the decode stage, which runs a kernel of its own: one query row per
    sequence, split over the KV length), a fused op's kind when all its members share it
    (q+k+v: linear), else the op's own kind (unfused QK^T is "qk_matmul")."""
    members = set(fused_kinds) or {kind}
    if kind in ATTENTION_KINDS or members & ATTENTION_KINDS:
        return "decode_attention" if stage == "decode" else "attention"
    return members.pop() if len(members) == 1 else kind


def typed_family(family: str, engine: str, ctype: str | None, blocked: bool = False) -> str:
    """The family a linear layer's figures are looked up under in its compute type: fp8_gemm
    for an FP8 one (NARROW_GEMM_TYPES; a GEMM fused with its norm, activation or residual add
    too: the GEMM is the kernel), fp8_block_gemm where its weights carry group-wise scales
    (`blocked`), fp8_expert / fp8_block_expert for a routed expert's (EXPERT_FAMILIES), its
    own family otherwise."""
    if family in ("linear", "fused") and engine == "matrix" and ctype in NARROW_GEMM_TYPES:
        return f"{ctype}_block_gemm" if blocked else f"{ctype}_gemm"
    if family == "expert_linear" and ctype in NARROW_GEMM_TYPES:
        return f"{ctype}_block_expert" if blocked else f"{ctype}_expert"
    return family


def weight_only_family(family: str, ctype: str | None, weight_bits: float | None,
                       scale_bits: float | None = None) -> str:
    """A 16-bit linear layer's (or routed expert's) family where its weights are 8 bits or
    fewer: w4a16_gemm / w8a16_gemm (w4a16_expert, ...: WEIGHT_ONLY_TYPES), w4a16_mx_* for 4-bit
    weights whose group scales are 8 bits or fewer (MICROSCALED); else unchanged."""
    if family not in ("linear", "fused", "expert_linear") or ctype not in ("fp16", "bf16") \
            or weight_bits is None:
        return family
    suffix = "_expert" if family == "expert_linear" else "_gemm"
    for bits, name in sorted(WEIGHT_ONLY_TYPES.items()):
        if weight_bits <= bits:
            micro = bits == 4 and scale_bits is not None and scale_bits <= 8
            return (MICROSCALED if micro else name) + suffix
    return family


def operand_format(family: str) -> str:
    """The operand format a family names beyond its compute type: kv8 / kv4 (decode attention
    over a narrow cache), w4a16 / w8a16 / w4a16-mx (weight-only GEMMs and experts); "" else."""
    if family in KV_FAMILIES:
        return family.rpartition("_")[2]
    head, _, tail = family.rpartition("_")
    if tail in ("gemm", "expert") and f"{head}_gemm" in WEIGHT_ONLY_GEMMS:
        return head.replace("_", "-")
    return ""


def latent_family(family: str, latent: bool) -> str:
    """The attention family of a latent attention's (MLA's) kernel: MLA_DECODE in decode,
    MLA_PREFILL in prefill; any other family, or attention without a latent, unchanged."""
    if not latent:
        return family
    return {"decode_attention": MLA_DECODE, "attention": MLA_PREFILL}.get(family, family)


def kv_family(family: str, kv_bits: float | None) -> str:
    """Decode's attention family for a cache of `kv_bits` (decode_attention_kv8 for 8 bits or
    fewer, _kv4 for 4 or fewer; KV_FAMILIES; MLA decode's: MLA_KV8 for 8 or fewer); any other
    family, or a 16-bit cache, unchanged."""
    if family == MLA_DECODE and kv_bits is not None and kv_bits <= 8:
        return MLA_KV8
    if family != "decode_attention" or kv_bits is None:
        return family
    for bits, name in sorted(KV_TYPES.items()):
        if kv_bits <= bits:
            return f"{family}_{name}"
    return family


def parse_efficiency(table: dict, fail, parse_quantity, kinds: set[str],
                     row_kinds: set[str] = frozenset()) -> Efficiency:
    """The [efficiency] table of a hardware file. `fail(message, key)` makes the located error;
    `parse_quantity` reads "4 us"; `kinds` are the op kinds a sub-table may name, `row_kinds`
    those that may give `rows` (elementwise kernels: a GEMM or attention kernel tiles its
    work otherwise, and a `rows` there would be ignored without a word)."""
    def number(value, key, low: float, high: float, expected: str, above: bool = False):
        """`value` as a float where it is a number in [low, high] ((low, high] where `above`),
        else the located error saying what was expected."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value > high \
                or (value <= low if above else value < low):
            raise fail(f"efficiency {key} = {value!r}: expected {expected}", f"efficiency.{key}")
        return float(value)

    def fraction(value, key):
        return number(value, key, 0, MAX_FRACTION, f"a fraction in (0, {MAX_FRACTION:g}] of the "
                      "datasheet figure", above=True)

    def rows(value, key):
        return number(value, key, 1, 1e6, "the number of token rows (1 to 1e6) that fill the "
                      "chip, e.g. its SM count")

    def per_element(value, key):
        if key.endswith("output_bytes"):
            return number(value, key, 0, 64, "bytes per output element (0 to 64), e.g. 3 for "
                          "an epilogue slower than the stream")
        return number(value, key, 0, 64, "bytes per input element (0 to 64), e.g. 5 for a "
                      "dynamic per-tensor quantisation from 16 bits")

    def tiles(value, key):
        return number(value, key, 1, 1e6, f"the number of GEMM output tiles of {GEMM_TILE} x "
                      f"{GEMM_TILE} (1 to 1e6) that fill the chip")

    def depth(value, key):
        return number(value, key, 1, 1e6, f"the elements of k per GEMM output tile of "
                      f"{GEMM_TILE} x {GEMM_TILE} (1 to 1e6) above which a call splits its k")

    def launch(value, key):
        try:
            return parse_quantity(value, "seconds", f"efficiency.{key}")
        except ValueError as err:
            raise fail(str(err), f"efficiency.{key}") from None

    top, own = {}, {}
    with_rows = set(row_kinds) | SPLIT_FAMILIES   # the kinds whose occupancy is `rows`
    for key, value in table.items():
        if key in ("bandwidth", "launch", "source", "compute", "measured_as", "tile", "stack",
                   "framework"):
            top[key] = value
        elif key in kinds or key in ATTENTION_FAMILIES or key in GEMM_FAMILIES \
                or key in EXPERT_FAMILIES or key in WEIGHT_ONLY_GEMMS:
            if not isinstance(value, dict):
                raise fail(f"[efficiency.{key}] must be a table", f"efficiency.{key}")
            extra = set(value) - {"bandwidth", "compute", "launch", "rows", "overlap",
                                  *GEMM_CHOICES, "split_bandwidth", "split_launch", "floor",
                                  "one_row", "compute_type", "k_latency", "split_k",
                                  "split_depth"}
            if extra:
                raise fail(f"unknown key {sorted(extra)[0]!r} in [efficiency.{key}]",
                           f"efficiency.{key}.{sorted(extra)[0]}",
                           "keys: bandwidth, compute, launch, rows, overlap, input_bytes, "
                           "tiles, output_bytes, split_bandwidth, split_launch, floor, "
                           "one_row, compute_type, k_latency, split_k, split_depth")
            kernel_type = value.get("compute_type")
            if kernel_type is not None and kernel_type not in KERNEL_TYPES:
                raise fail(f"efficiency {key}.compute_type = {kernel_type!r}: expected the "
                           "type the kernel computes in, one of " + ", ".join(KERNEL_TYPES),
                           f"efficiency.{key}.compute_type")
            for split_key in ("split_bandwidth", "split_launch"):
                if split_key in value and key not in SPLIT_FAMILIES:
                    raise fail(f"efficiency {key}.{split_key}: decode attention's split regime; "
                               f"{key} is not a decode attention kernel",
                               f"efficiency.{key}.{split_key}",
                               f"{split_key} applies to " + ", ".join(sorted(SPLIT_FAMILIES)))
            for gemm_key in ("tiles", "output_bytes", "floor", "one_row", "k_latency", "split_k",
                             "split_depth"):
                if gemm_key in value and key not in TILE_FAMILIES:
                    raise fail(f"efficiency {key}.{gemm_key}: a dense GEMM's figure; {key} is "
                               "not a GEMM family", f"efficiency.{key}.{gemm_key}",
                               f"{gemm_key} applies to " + ", ".join(sorted(TILE_FAMILIES)))
            if "input_bytes" in value and key not in GEMM_FAMILIES:
                raise fail(f"efficiency {key}.input_bytes: the traffic of an activation "
                           f"quantisation before a narrow GEMM; {key} is not one",
                           f"efficiency.{key}.input_bytes",
                           "input_bytes applies to " + ", ".join(sorted(GEMM_FAMILIES)))
            overlap = value.get("overlap")
            if overlap is not None and not isinstance(overlap, bool):
                raise fail(f"efficiency {key}.overlap = {overlap!r}: expected true or false "
                           "(false: the kernel's memory time adds to its compute time)",
                           f"efficiency.{key}.overlap")
            if "rows" in value and key not in with_rows:
                raise fail(f"efficiency {key}.rows: rows models one thread block per token row "
                           f"of an elementwise kernel (per sequence and KV head of decode's "
                           f"attention); {key} is neither",
                           f"efficiency.{key}.rows",
                           "rows applies to " + ", ".join(sorted(with_rows)))
            own[key] = KindEfficiency(
                fraction(value["bandwidth"], f"{key}.bandwidth") if "bandwidth" in value else None,
                fraction(value["compute"], f"{key}.compute") if "compute" in value else None,
                launch(value["launch"], f"{key}.launch") if "launch" in value else None,
                rows(value["rows"], f"{key}.rows") if "rows" in value else None, overlap,
                per_element(value["input_bytes"], f"{key}.input_bytes")
                if "input_bytes" in value else None,
                tiles(value["tiles"], f"{key}.tiles") if "tiles" in value else None,
                per_element(value["output_bytes"], f"{key}.output_bytes")
                if "output_bytes" in value else None,
                fraction(value["split_bandwidth"], f"{key}.split_bandwidth")
                if "split_bandwidth" in value else None,
                launch(value["split_launch"], f"{key}.split_launch")
                if "split_launch" in value else None,
                launch(value["floor"], f"{key}.floor") if "floor" in value else None,
                launch(value["one_row"], f"{key}.one_row") if "one_row" in value else None,
                kernel_type,
                launch(value["k_latency"], f"{key}.k_latency") if "k_latency" in value else None,
                launch(value["split_k"], f"{key}.split_k") if "split_k" in value else None,
                depth(value["split_depth"], f"{key}.split_depth")
                if "split_depth" in value else None)
            split_k = {"split_k", "split_depth"} & set(value)
            if len(split_k) == 1:   # one alone would be dropped without a word (split_k_for)
                given = split_k.pop()
                raise fail(f"efficiency {key}.{given} without its pair: a split of k is a fixed "
                           "cost and the k per output tile above which it is paid, split_k and "
                           "split_depth", f"efficiency.{key}.{given}", "give both, or neither")
            split = {"split_bandwidth", "split_launch"} & set(value)
            if len(split) == 1:   # one alone would be dropped without a word (Efficiency.split_for)
                given = split.pop()
                raise fail(f"efficiency {key}.{given} without its pair: the split regime is a "
                           "rate and a fixed cost, split_bandwidth and split_launch",
                           f"efficiency.{key}.{given}", "give both, or neither")
        else:
            raise fail(f"unknown key {key!r} in [efficiency]", f"efficiency.{key}",
                       "keys: bandwidth, launch, source, measured_as, stack, "
                       "[efficiency.compute], [efficiency.tile], "
                       "[efficiency.framework], and a table per op kind ([efficiency.attention], "
                       "[efficiency.decode_attention], [efficiency.rmsnorm], ...), narrow "
                       "GEMM type ([efficiency.fp8_gemm], ...), KV cache "
                       "([efficiency.decode_attention_kv8], _kv4, _mla, _mla_kv8), a prompt's "
                       "latent attention ([efficiency.attention_mla]), weight-only format "
                       "([efficiency.w4a16_gemm], w4a16_expert, w4a16_mx_*, w8a16_*) or routed "
                       "experts' kernel ([efficiency.expert_linear], fp8_expert, ...)")
    compute = top.get("compute", {})
    if not isinstance(compute, dict):
        raise fail("[efficiency.compute] must be a table", "efficiency.compute")
    return Efficiency(
        bandwidth=fraction(top.get("bandwidth", 1.0), "bandwidth"),
        compute={c: fraction(v, f"compute.{c}") for c, v in compute.items()},
        launch_s=launch(top["launch"], "launch") if "launch" in top else 0.0,
        kinds=own, source=str(top.get("source", "")),
        measured_as=str(top.get("measured_as", "")), stack=_text(top, "stack", fail),
        tile=_tile(top["tile"], fail) if "tile" in top else None,
        framework=_framework(top["framework"], fail, launch) if "framework" in top else None)


def _framework(table, fail, seconds) -> Framework:
    """[efficiency.framework]: graph_launch, step, per_sequence, request (durations)."""
    if not isinstance(table, dict):
        raise fail("[efficiency.framework] must be a table", "efficiency.framework")
    extra = set(table) - set(FRAMEWORK_KEYS)
    if extra:
        raise fail(f"unknown key {sorted(extra)[0]!r} in [efficiency.framework]",
                   f"efficiency.framework.{sorted(extra)[0]}",
                   "keys: " + ", ".join(FRAMEWORK_KEYS))
    return Framework(**{FRAMEWORK_KEYS[k]: seconds(v, f"framework.{k}")
                        for k, v in table.items()})


def _text(top: dict, key: str, fail) -> str:
    value = top.get(key, "")
    if not isinstance(value, str):
        raise fail(f"efficiency {key} = {value!r}: expected text, e.g. \"vllm 0.24.0\"",
                   f"efficiency.{key}")
    return value


def _tile(table, fail) -> Tile:
    """[efficiency.tile]: m and n (the output tile of one thread block), sms (optional)."""
    if not isinstance(table, dict):
        raise fail("[efficiency.tile] must be a table", "efficiency.tile")
    extra = set(table) - {"m", "n", "sms"}
    if extra:
        raise fail(f"unknown key {sorted(extra)[0]!r} in [efficiency.tile]",
                   f"efficiency.tile.{sorted(extra)[0]}", "keys: m, n, sms")
    for key in ("m", "n"):
        if key not in table:
            raise fail(f"[efficiency.tile] needs {key}: the rows (m) and columns (n) of the "
                       "output tile one thread block computes, e.g. m = 128, n = 128",
                       "efficiency.tile")
    values = {}
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65536:
            raise fail(f"efficiency tile.{key} = {value!r}: expected a whole number from 1 to "
                       "65536", f"efficiency.tile.{key}")
        values[key] = value
    return Tile(values["m"], values["n"], values.get("sms"))
