"""Convert the kernel tables the `aiconfigurator-core` package ships to costdsl's measurement CSVs.

    pip install aiconfigurator-core pyarrow        # in a scratch environment
    python bench/convert_aiconfigurator.py [OUT_DIR]
    python bench/convert_aiconfigurator.py --moe   # the MoE kernel tables alone

The package (ai-dynamo/aiconfigurator, Apache-2.0: the licence text is in its wheel's
`licenses/LICENSE`) carries measured kernel times per GPU and serving stack as Parquet under
`aiconfigurator_core/systems/data/<system>/<family>/<stack>/<version>/`. This script reads the
vLLM tables of the chips the shipped files had no measurements for, the H200 SXM, the B200 SXM,
the B300 SXM, the GB200, the GB300, the L40S, the RTX PRO 6000 Blackwell Server Edition and
Intel's Arc Pro B60 (XPU_SYSTEMS: its FP8 GEMMs as weight-only ones, no collectives), and writes
under tests/data/measured/ by default:

- aiconfigurator-gemm-{h200,b200}.csv: bf16 GEMMs (`torch.nn.functional.linear`) of the nine
  LLM shapes the A100 and H100 sets hold (n x k = 4096x4096, 6144x4096, 4096x12288, 12288x4096,
  4096x16384, 16384x4096, 8192x8192, 8192x16384, 10240x8192) at m = 1 to 16,384 (powers of two),
  each as the `proj` of gemm/gemm-NxK.arch (a prefill of batch 1 and seq m).
- aiconfigurator-attention-{h200,b200}.csv: FlashAttention kernels for the five per-GPU head
  layouts of the older sets (query x KV heads 32x8, 64x8, 8x1, 16x2, 32x4; head_dim 128; no
  window): decode ("generation", batch 1 to 256, bf16 and fp8 KV, a context of isl + step
  tokens including the new one, so the decode stage's seq is isl + step - 1 = 127 to 32,767)
  and prefill ("context", batch 1, 4 and 16 of 128 to 16,384 tokens, bf16), from the stack's
  main kernel (the table's most common `kernel_source`: FA3 on Hopper, FlashInfer's TRT-LLM
  kernels on the B200).

- aiconfigurator-gemm-fp8-{h200,b200}.csv (and -{h100,h200,b200}-{trtllm,sglang}): FP8 GEMMs
  (per-tensor scales) of the same shapes as W8A8 rows, m = 1 to 16,384: from m = 1,024 they
  are compute-bound and give the fp8 units' achieved fraction; below, their time carries the
  activation-quantisation kernel and the FP8 kernel's own streaming rate, which the
  [efficiency.fp8_gemm] figures (a bandwidth and a launch of their own) describe.
- aiconfigurator-gemm-fp8-tp-<chip>[-<stack>].csv: the FP8 GEMMs of the shards tensor
  parallelism at 4 and 8 makes of those shapes (n / t or k / t, where the table times it:
  1,024 to 4,096 columns or inputs), m = 1 to 16,384 in six sizes. Narrow layers are where an
  FP8 GEMM's activation quantisation (a cost per input element, whatever the output width)
  weighs most: [efficiency.fp8_gemm] input_bytes is chosen on them.
- aiconfigurator-gemm-tp-<chip>[-<stack>].csv: the bf16 GEMMs of the same shards. The nine
  full shapes alone cannot tell a GEMM's per-call time from its walk of k (n / t outputs over
  the whole k, or all n over k / t): fitted on them, the bf16 figures missed the shards by
  10.7-16.2% (H200, B200; every stack) and the package's whole grid by 9.4-17.7%
  (bench/gemm_grid.py); with the shards [efficiency] k_latency is chosen on them.
- aiconfigurator-gemm-{fp8block,nvfp4}-<chip>[-<stack>].csv: block-scaled GEMMs of the same
  shapes and sizes, each table's main kernel (its most common kernel_source): FP8 with 128 x 128
  weight blocks (DeepGEMM / CUTLASS; Hopper and Blackwell) and NVFP4 (B200 only), as the proj
  of gemm/gemm-NxK-{fp8block,nvfp4}.arch (the GEMM with its quantize pass: scales per block).
- aiconfigurator-mla-<chip>-{sglang,trtllm}.csv: the MLA decode kernels (generation_mla:
  absorbed attention over a bf16 latent cache, DeepSeek-V3's shapes at MLA_HEADS heads a GPU)
  of the HBM chips (MLA_SYSTEMS), as the attn[qk+softmax+sv] of mla/mla-h<heads>.arch; the
  [stack.NAME.decode_attention_mla] figures are fitted to them (bench/fit_experts.py --mla).
- aiconfigurator-mla-kv8-<chip>-{sglang,trtllm}.csv: the same MLA decode kernels over an FP8
  latent cache, for [stack.NAME.decode_attention_mla_kv8] (bench/fit_experts.py --mla-kv8).
- aiconfigurator-mla-context-<chip>-{sglang,trtllm}.csv: the MLA prefill kernels of the same
  chips (context_mla: attention over per-head keys and values up-projected from the latent,
  192 wide keys and 128 wide values, the up-projection not timed), PREFILL_BATCH prompts of
  128 to 32,768 tokens, as the same op of the same models in prefill, every stack's rows as
  the expanded form's work (SGLang's FA3 kernel on Hopper runs the prompt absorbed: its figures
  are its time per expanded operation); [stack.NAME.attention_mla] is fitted to them
  (bench/fit_experts.py --mla-prefill).
- aiconfigurator-gemm-{w4a16,w8a16,int8}-a100-trtllm.csv: TensorRT-LLM 1.0.0's weight-only
  GEMMs (INT4 and INT8 weights, bf16 activations) and SmoothQuant's W8A8 INT8 GEMMs on the A100
  (INT8_FORMATS), the same shapes and sizes, as gemm/gemm-NxK-{w4a16,w8a16,int8}.arch.
- aiconfigurator-{gemm,attention}-{a100,h100,h200,b200}-{trtllm,sglang}.csv: the same
  selections from the TensorRT-LLM and SGLang tables (each the newest version the package has
  for the chip: 1.3.0rc20 and 0.5.14, on the A100 1.0.0 and 0.5.10), for the files'
  [stack.trtllm] and [stack.sglang] figures.
- collectives.csv, the rows of networks aic_h200_sxm and aic_b200_sxm (the rest of the file is
  kept): NCCL all-reduce, all-gather and all-to-all on 2, 4 and 8 GPUs of one node
  (`comm/nccl/<newest version>/nccl_perf.parquet`, fp16, 512 B to 512 MiB: the sizes of the
  A100 and H100 rows), bytes = 2 x the table's fp16 elements.

- allreduce-stacks.csv: each stack's own all-reduce (`comm/<stack>/<version>/
  custom_allreduce_perf.parquet`: vLLM's and SGLang's custom all-reduce captured in CUDA
  graphs, TensorRT-LLM's AllReduce op) on 2, 4 and 8 GPUs, bf16, 256 B to 1 GiB, for the stack
  versions the hardware files' [efficiency] and [stack.NAME] name (STACK_VERSIONS); the median
  of repeated rows. These are the times `[all_reduce.NAME]` in the system files is fitted to.

- aiconfigurator-moe-<chip>[-<stack>].csv (`--moe`: these alone): the routed experts of one MoE
  layer (`moe/moe_perf.parquet`: the fused kernel that permutes the tokens, runs every expert's
  gate/up and down GEMMs with the activation between, and combines them), for the H100, H200
  and B200 under each stack, at its calibrated version where the package has it (MOE_VERSIONS):
  balanced routing, no expert parallelism, one GPU's share of the intermediate width under
  tensor parallelism 1 and 4, the shapes of the MoE models the package names (hidden x
  intermediate, experts, top-k), 1 to 16,384 tokens, bf16, FP8 (per-tensor), block-scaled FP8,
  NVFP4 and INT4 weight-only experts (each the table's main kernel for that format), as `y.gate+y.up+y.act+y.down`
  (the four ops' times summed) of moe/moe-HxF-eEkK[-format].arch (a prefill of batch 1 whose seq is the tokens). The router
  is another kernel, not in these times.

Only numbers are taken (latencies in milliseconds there, seconds here); each row's `source`
names the package version, the table's path inside it and the stack version, and its `stack`
the stack and version alone (what `costdsl calibrate --stack` checks the rows against).
"""
from __future__ import annotations

import sys
from collections import Counter
from statistics import median
from pathlib import Path

from convert_measured import (ATTENTION_BASE, ATTENTION_OP, ROOT, _attention_model, _gemm_row,
                              row, write)

SYSTEMS = {"h200_sxm": ("h200", "nvidia-h200"), "b200_sxm": ("b200", "nvidia-b200"),
           "b300_sxm": ("b300", "nvidia-b300"), "gb200": ("gb200", "nvidia-gb200"),
           "gb300": ("gb300", "nvidia-gb300"), "l40s": ("l40s", "nvidia-l40s"),
           "rtx_pro_6000_server": ("rtxpro6000", "nvidia-rtx-pro-6000")}
XPU_SYSTEMS = {"b60": ("b60", "intel-arc-pro-b60")}
"""Intel's Arc Pro B60 under vLLM (0.26.0, its XPU build): GEMMs and attention, no NCCL table
(its collectives are oneCCL's). Its "fp8" GEMMs are weight-only (FP8_WEIGHT_ONLY)."""
COLLECTIVE_LIBRARIES = {"b60": ("oneccl", "oneccl_perf", "oneCCL")}
"""Systems whose collectives the package times with another library than NCCL, (its folder,
table, name): the B60's oneCCL, on 2 and 4 cards."""
PER_RANK_ALL_GATHER = {"oneccl"}
"""Libraries whose all_gather rows give each rank's input (nccl-tests' give the gathered
output, as collectives.csv does): written as the output, n x the input. Counted so, oneCCL's
all-gathers and all-reduces on 4 B60s move the same bus bandwidth (all_gather of 512 MiB a rank
in 88.0 ms, all_reduce of 512 MiB in 44.0 ms: 18.3 GB/s both)."""
EAGER_ALL_REDUCE = {"b60"}
"""Systems whose stack all-reduce the package times eager only (vLLM's XPU build on the B60: no
graph-captured rows), read as they are."""
FP8_WEIGHT_ONLY = {"b60"}
"""Systems with no FP8 matrix units, whose stack widens FP8 weights to bf16 inside the GEMM
(the package's b60.yaml: "B60 has no native FP8 matrix-compute support"): their fp8 rows are
W8A16 ones. The B60's table says the same: its FP8 8,192 x 8,192 GEMM takes 5.69 ms at m =
4,096 against bf16's 5.79 (both 0.96 of the 16-bit peak) and 158 us at m = 1 against 303 (half
the weight bytes)."""
STACK = "vllm"   # the shipped files' default stack
OTHER_STACKS = ("trtllm", "sglang")   # each a [stack.NAME] of the H100, H200 and B200 files
STACK_SYSTEMS = {"a100_sxm": ("a100", "nvidia-a100-80gb"), "h100_sxm": ("h100", "nvidia-h100-sxm"),
                 **SYSTEMS}
GEMM_SHAPES = {(4096, 4096), (6144, 4096), (4096, 12288), (12288, 4096), (4096, 16384),
               (16384, 4096), (8192, 8192), (8192, 16384), (10240, 8192)}   # (n, k)
GEMM_M = {2 ** i for i in range(15)}                                       # 1 .. 16,384
TP_DEGREES = (4, 8)
TP_M = {1, 16, 128, 1024, 4096, 16384}
"""The FP8 GEMMs tensor parallelism leaves: each shape's output (column-parallel: n / t) or
input (row-parallel: k / t) split t ways, where the table times that shape, at six sizes."""
HEADS = {(32, 8), (64, 8), (8, 1), (16, 2), (32, 4)}
DECODE_BATCH = {1, 2, 4, 8, 16, 32, 64, 128, 256}
DECODE_STEPS = {127, 511, 1023, 2047, 4095, 8191, 16383, 32767}          # isl = 1
PREFILL_BATCH = {1, 4, 16}
PREFILL_HEADS = {(32, 8), (64, 8)}


TILE_64 = {"l40s", "rtx_pro_6000_server", "b60"}
"""Chips whose on-chip memory per block holds 64 query rows of a tile, not 128 (99 KiB of shared
memory per block on the L40S and the RTX PRO 6000, 64 KiB of shared local memory per
work-group on the B60): their attention models extend TILE_64_BASE (attention/tile64.arch says
why), not ATTENTION_BASE."""
TILE_64_BASE = ("tile64.arch", "attention-tile64")
L2_RESIDENT = {"l40s": (96 * 2**20, 3, 864e9), "rtx_pro_6000_server": (128 * 2**20, 3, 1.792e12),
               "b200_sxm": (126.5 * 2**20, 1, 8e12), "b300_sxm": (126.5 * 2**20, 1, 7.75e12),
               "gb200": (126.5 * 2**20, 1, 8e12), "gb300": (126.5 * 2**20, 1, 8e12)}
"""(L2 bytes, the multiple of it up to which a decode row's K and V are read from it, the DRAM's
bytes per second) for the chips whose tables show it (their hardware files name the figures'
sources; tests/test_stacks.py holds the two equal). Decode kernels are
timed re-run on one cache, which stays in the L2 when it is small enough: the L40S's reads 1/8
to 1 L2 of K and V at 0.9 to 2.5x its GDDR6's datasheet rate, the RTX PRO 6000's up to 2 L2 at
up to 1.5x, then drops to 0.7-0.85 beyond (3 L2: past the slope's end). On the Blackwell
datacenter chips, whose 126.5 MB L2 is the largest beside their HBM, the rows with 1/2 to 1 L2
of K and V take 1.17 to 1.37x less than a fit to the others prices them (the B200's, all three
stacks; SGLang's 32x4 layout at batch 16: 12 us for 67 MB, 28 us for 134 MB, a launch of 9 us
in both): fitted without the rows between L2/16 and one L2, the B200's decode attention misses
those past one L2 by 2.3 to 3.6%, not 8.6 to 9.6%. A served decode step never finds a layer's
cache in the L2 (the other layers' weights pass through it between two steps), so these rows
are left out; the launch-bound ones (LAUNCH_BOUND_S) and those past the bound are kept. Hopper's
50 MB L2 shows it weakly (1.12x on the H200 under vLLM and SGLang) and leaving its rows out
fits the rest no better: all kept, as on the A100. GEMM weights stay in the L2 on the GDDR
chips too (RESIDENT_WEIGHTS)."""
LAUNCH_BOUND_S = 1e-6
"""The rows kept below the L2 are those whose K and V stream from DRAM, at the datasheet rate,
in under this time (and under the L2's sixteenth): launch-bound (the kernels' launch is 5 to 14
us), so where their cache sits matters little. On the Blackwell datacenter chips that is about
the L2's sixteenth (8 TB/s: 8 MB; their files keep the same rows as with the sixteenth alone);
on the GDDR chips less (the L40S's 864 GB/s: 0.86 MB, not 6 MB): their rows of 1 to 6 MB were
read from the L2 too (SGLang's kernel over 4 MB at 64 to 128 blocks takes 7 us on the L40S, a
DRAM fit prices it 1.4 to 1.5x; measured over priced rises with the blocks, as an L2's would)."""
RESIDENT_WEIGHTS = {("l40s", "trtllm"): 1, ("rtx_pro_6000_server", "trtllm"): 1,
                    ("l40s", "vllm"): 6, ("rtx_pro_6000_server", "vllm"): 6,
                    ("l40s", "sglang"): 5, ("rtx_pro_6000_server", "sglang"): 5}
"""Per (chip, stack) GEMM table of the GDDR chips: the copies of a GEMM's weights its collector
cycles through, whose memory-bound rows (m < 512) re-read weights from the L2 when the copies
fit in it. aiconfigurator's vLLM collector runs six instances of the layer "for L2 cache flush"
(outside_loop_count = 6), SGLang's five; TensorRT-LLM's tables behave as one copy. On the
RTX PRO 6000 an 8,192 x 8,192 bf16 GEMM at m = 2 to 64 takes 42 to 57 us under TensorRT-LLM
(2.4 to 3.2 TB/s of its 1.79 TB/s GDDR7), 95 us under vLLM, whose six copies (805 MB) do not
fit; on the L40S vLLM's FP8 GEMMs at m = 16 read their weights at up to 1.65x the GDDR6's
864 GB/s where six copies fit in its 96 MB L2, at 0.62 to 0.71x where they take more than 1.3
of it. A served step never re-reads a layer's weights from the L2 (every layer's pass through
it between two steps), so those rows are left out. On the HBM chips a GEMM that small is
launch-bound (0.03 to 0.3 of the bandwidth at m = 16): none left out."""
COLLECTIVES = {"all_reduce", "all_gather", "alltoall"}
BLOCK_FORMATS = {   # aiconfigurator's gemm_dtype: (file name, bits, the quantize pass it is)
    "fp8_block": ("fp8block", 8, 'quantize(weights=8, acts=8, group=16384, scale_bits=32, '
                                 'ops="proj")'),
    "nvfp4": ("nvfp4", 4, 'quantize(weights=4, acts=4, group=16, scale_bits=8, ops="proj")')}
WEIGHT_ONLY_FORMATS = {   # gemm_dtype: (file name, weight bits, the quantize pass it is)
    "int4_wo": ("w4a16", 4, 'quantize(weights=4, ops="proj")'),
    "int8_wo": ("w8a16", 8, 'quantize(weights=8, ops="proj")')}
"""TensorRT-LLM's weight-only GEMMs (its WeightOnlyQuantMatmul plugin: INT4 or INT8 weights with
one scale per output channel, bf16 activations, widened inside the kernel): the A100's tables."""
INT8_FORMATS = {   # gemm_dtype: (file name, the quantize pass it is)
    "sq": ("int8", 'quantize(weights=8, acts=8, ops="proj")')}
"""TensorRT-LLM's SmoothQuant GEMMs (its SmoothQuantGemm plugin: INT8 weights with one scale per
output channel, INT8 activations with one per token, on the INT8 tensor cores; Xiao et al.,
"SmoothQuant", ICML 2023): the A100's tables, which the A100, without FP8 units, runs as its
8-bit GEMMs. At m = 4,096 an 8,192 x 8,192 one takes 1,031 us against bf16's 2,116 us: 533
TOPS, 0.85 of the 624 dense INT8 TOPS."""
BLOCK_NOTES = {
    "fp8block": "DeepSeek-V3's FP8 recipe: one fp32 scale per 128 x 128 weight block, the "
                "activations scaled per 1 x 128",
    "nvfp4": "NVIDIA's NVFP4: E2M1 values with one FP8 E4M3 scale per 16, 4.5 bits per "
             "weight"}
STACK_VERSIONS = {   # (system, stack): the version the shipped files' kernels were fitted on
    ("a100_sxm", "vllm"): "0.14.0", ("h100_sxm", "vllm"): "0.19.0",
    ("h200_sxm", "vllm"): "0.24.0", ("b200_sxm", "vllm"): "0.24.0",
    ("b300_sxm", "vllm"): "0.24.0", ("gb200", "vllm"): "0.24.0", ("gb300", "vllm"): "0.24.0",
    **{(system, "trtllm"): "1.3.0rc20" for system in STACK_SYSTEMS},
    **{(system, "sglang"): "0.5.14" for system in STACK_SYSTEMS},
    ("l40s", "vllm"): "0.24.0", ("rtx_pro_6000_server", "vllm"): "0.24.0",
    ("a100_sxm", "trtllm"): "1.0.0", ("a100_sxm", "sglang"): "0.5.10"}   # the A100's newest
ALL_REDUCE_VERSIONS = {**STACK_VERSIONS, ("l40s", "vllm"): "0.22.0", ("b60", "vllm"): "0.26.0"}
"""The stack versions whose all-reduce tables are read: the kernels' own, but for the L40S,
whose newest vLLM all-reduce table is 0.22.0's (its rows say 0.14.0: the package reuses them),
and the B60's vLLM 0.26.0 (EAGER_ALL_REDUCE)."""


MOE_SYSTEMS = {"h100_sxm": ("h100", "nvidia-h100-sxm"), "h200_sxm": ("h200", "nvidia-h200"),
               "b200_sxm": ("b200", "nvidia-b200"), "b300_sxm": ("b300", "nvidia-b300"),
               "gb200": ("gb200", "nvidia-gb200"), "gb300": ("gb300", "nvidia-gb300"),
               "a100_sxm": ("a100", "nvidia-a100-80gb")}
MOE_VERSIONS = {("h100_sxm", "vllm"): "0.24.0", ("h100_sxm", "sglang"): "0.5.14",
                ("h100_sxm", "trtllm"): "1.3.0rc20",
                ("h200_sxm", "vllm"): "0.24.0", ("b200_sxm", "vllm"): "0.24.0",
                ("h200_sxm", "sglang"): "0.5.14", ("b200_sxm", "sglang"): "0.5.14",
                ("h200_sxm", "trtllm"): "1.3.0rc20",
                **{(system, stack): version for system in ("b300_sxm", "gb200", "gb300")
                   for stack, version in (("vllm", "0.24.0"), ("sglang", "0.5.14"))},
                ("a100_sxm", "sglang"): "0.5.10"}
"""The MoE tables read: the versions the files' kernels were fitted on (the H100's only vLLM MoE
table is 0.24.0's, its GEMMs and attention 0.19's; the A100's balanced-routing table is SGLang
0.5.10's alone: its vLLM 0.14.0 and TensorRT-LLM 1.0.0 ones time skewed routing only).
TensorRT-LLM's MoE tables are read on the Hopper chips alone: its fits there put a compute
fraction above the peak (bench/fit_experts.py reports them and writes none), so the Blackwell
ones would be rows no figure uses. The GDDR chips' (L40S, RTX PRO 6000) are not read: fitted,
the L40S's vLLM rows pin every launch at 0 and the FP8 experts' fraction at 1 and get worse
held out (21.8% -> 25.7%), its SGLang rows reach 31.5%. The L2, the dense GEMMs' trap
(RESIDENT_WEIGHTS), is not why: the rows whose active experts' copies fit in it are 7 of the
L40S's 896."""
MOE_SKIP = {("h100_sxm", "vllm", "fp8"), ("h200_sxm", "vllm", "fp8")}
"""Tables left out: vLLM's only per-tensor FP8 MoE kernel on Hopper is FlashInfer's CUTLASS
MoE (built for Blackwell), which runs 64 tokens slower than 4,096 (H200: 8.95 ms against
6.01 ms at 4,096 x 2,048, 256 experts, top 8; H100: 9.77 ms against 7.54 ms): not the kernel
vLLM serves FP8 MoE with on Hopper."""
MOE_TOKENS = {1, 4, 16, 64, 256, 1024, 4096, 16384}
MOE_TP = {1, 4}
MOE_FORMATS = {   # aiconfigurator's moe_dtype: (file suffix, the quantize pass of the experts)
    "bfloat16": ("", ""),
    "fp8": ("fp8", 'quantize(weights=8, acts=8, ops="y.gate,y.up,y.down")'),
    "fp8_block": ("fp8block", 'quantize(weights=8, acts=8, group=16384, scale_bits=32, '
                              'ops="y.gate,y.up,y.down")'),
    "nvfp4": ("nvfp4", 'quantize(weights=4, acts=4, group=16, scale_bits=8, '
                       'ops="y.gate,y.up,y.down")'),
    # INT4 weight-only (Marlin MoE): 4-bit weights, a bf16 scale per 32 (Kimi-K2.5's
    # compressed-tensors checkpoint, the one shape the package times), bf16 activations
    "int4_wo": ("int4wo", 'quantize(weights=4, group=32, scale_bits=16, '
                          'ops="y.gate,y.up,y.down")'),
    # MXFP4 weights (E2M1, an 8-bit power-of-two scale per 32), bf16 activations: gpt-oss's
    # experts as its checkpoint ships them (quantization_config: quant_method mxfp4)
    "w4a16_mxfp4": ("mxfp4", 'quantize(weights=4, group=32, scale_bits=8, '
                             'ops="y.gate,y.up,y.down")')}
MOE_EVERY_TOKEN = {"int4_wo", "w4a16_mxfp4"}
"""Formats timed at one shape only (INT4 weight-only: Kimi-K2.5's 7,168 x 2,048, 384 experts,
top 8), whose every token count (27, 1 to 16,384) is kept rather than MOE_TOKENS."""
MOE_OP = "y.gate+y.up+y.act+y.down"


def _package() -> tuple[Path, str]:
    try:
        import aiconfigurator_core
    except ImportError:
        sys.exit("convert_aiconfigurator: the aiconfigurator-core package is not installed here "
                 "(pip install aiconfigurator-core pyarrow, in a scratch environment)")
    from importlib.metadata import version
    return Path(aiconfigurator_core.__file__).parent, version("aiconfigurator-core")


def _table(data: Path, system: str, family: str, name: str, stack: str = STACK):
    """(rows as dicts, the stack version, the path inside the package) of the newest version
    of `family`'s table `name` for `stack` (a serving stack's kernels; NCCL's collectives)."""
    import pyarrow.parquet as pq
    versions = sorted((data / system / family / stack).iterdir(),
                      key=lambda p: tuple(int(x) if x.isdigit() else 0
                                          for x in p.name.split(".")))
    path = versions[-1] / f"{name}.parquet"
    return pq.read_table(path).to_pylist(), versions[-1].name, path.relative_to(data.parents[1])


def _suffix(stack: str) -> str:
    return "" if stack == STACK else f"-{stack}"


def gemm(data: Path, out_dir: Path, release: str, stack: str = STACK,
         systems: dict = SYSTEMS) -> dict[str, list[dict]]:
    out = {}
    for system, (short, hw) in systems.items():
        records, version, path = _table(data, system, "gemm", "gemm_perf", stack)
        source = f"aiconfigurator-core {release} {path} ({stack} {version})"
        label = f"{stack} {version}"
        rows = [_gemm_row(out_dir, hw, r["m"], r["n"], r["k"], r["latency"], source,
                          stack=label)
                for r in records if r["gemm_dtype"] == "bfloat16"
                and (r["n"], r["k"]) in GEMM_SHAPES and r["m"] in GEMM_M
                and not _weights_resident(system, stack, r, 16)]
        out[short + _suffix(stack)] = sorted(rows, key=lambda r: (r["model"], int(r["seq"])))
        weight_only = {**WEIGHT_ONLY_FORMATS,
                       **({"fp8": WEIGHT_ONLY_FORMATS["int8_wo"]}
                          if system in FP8_WEIGHT_ONLY else {})}
        fp8 = [_gemm_row(out_dir, hw, r["m"], r["n"], r["k"], r["latency"], source, 8, label)
               for r in records if r["gemm_dtype"] == "fp8" and "fp8" not in weight_only
               and (r["n"], r["k"]) in GEMM_SHAPES and r["m"] in GEMM_M
               and not _weights_resident(system, stack, r, 8)]
        out["fp8-" + short + _suffix(stack)] = sorted(fp8, key=lambda r: (r["model"],
                                                                          int(r["seq"])))
        sharded = _tp_shapes()
        for dtype, bits, prefix in (("bfloat16", 16, "tp-"), ("fp8", 8, "fp8-tp-")):
            shards = [_gemm_row(out_dir, hw, r["m"], r["n"], r["k"], r["latency"], source, bits,
                                label)
                      for r in records if r["gemm_dtype"] == dtype and dtype not in weight_only
                      and (r["n"], r["k"]) in sharded
                      and r["m"] in TP_M and not _weights_resident(system, stack, r, bits)]
            if shards:
                out[prefix + short + _suffix(stack)] = sorted(
                    shards, key=lambda r: (r["model"], int(r["seq"])))
        for dtype, (name, bits, quantize) in BLOCK_FORMATS.items():
            chosen = [r for r in records if r["gemm_dtype"] == dtype
                      and (r["n"], r["k"]) in GEMM_SHAPES and r["m"] in GEMM_M
                      and not _weights_resident(system, stack, r, bits)]
            if not chosen:
                continue
            main = Counter(r["kernel_source"] for r in chosen).most_common(1)[0][0]
            rows = [_variant_row(out_dir, hw, r, name, quantize, f"{source}, {main}",
                                 f"{name} weights and activations ({BLOCK_NOTES[name]})",
                                 bits, bits, label)
                    for r in chosen if r["kernel_source"] == main]
            out[f"{name}-{short}{_suffix(stack)}"] = sorted(
                rows, key=lambda r: (r["model"], int(r["seq"])))
        variants = [(dtype, name, quantize, f"{bits}-bit weights (one scale per output channel) "
                     "and bf16 activations: a weight-only GEMM", bits, 16)
                    for dtype, (name, bits, quantize) in weight_only.items()]
        variants += [(dtype, name, quantize, "INT8 weights (one scale per output channel) and "
                      "INT8 activations (one per token): SmoothQuant's W8A8 GEMM", 8, 8)
                     for dtype, (name, quantize) in INT8_FORMATS.items()]
        for dtype, name, quantize, what, w_bits, a_bits in variants:
            rows = [_variant_row(out_dir, hw, r, name, quantize, source, what, w_bits, a_bits,
                                 label)
                    for r in records if r["gemm_dtype"] == dtype
                    and (r["n"], r["k"]) in GEMM_SHAPES and r["m"] in GEMM_M]
            if rows:
                out[f"{name}-{short}{_suffix(stack)}"] = sorted(
                    rows, key=lambda r: (r["model"], int(r["seq"])))
    return out


def _weights_resident(system: str, stack: str, r: dict, bits: float) -> bool:
    """Whether a memory-bound GEMM row's weights were read from the chip's L2: the copies its
    collector cycles through fit there (RESIDENT_WEIGHTS, L2_RESIDENT)."""
    copies = RESIDENT_WEIGHTS.get((system, stack))
    if copies is None:
        return False
    l2 = L2_RESIDENT[system][0]
    return r["m"] < 512 and copies * r["n"] * r["k"] * bits / 8 <= l2


def _tp_shapes() -> set[tuple[int, int]]:
    """(n, k) of every shard TP_DEGREES make of GEMM_SHAPES (not the full shapes themselves)."""
    return {shard for n, k in GEMM_SHAPES for t in TP_DEGREES
            for shard in ((n // t, k), (n, k // t))} - GEMM_SHAPES


def _variant_row(out_dir: Path, hw: str, r: dict, name: str, quantize: str, source: str,
                 what: str, w_bits: int, a_bits: int, stack: str) -> dict:
    """A GEMM in another format as the `proj` of gemm/gemm-NxK-<name>.arch: the plain GEMM with
    the format's quantize pass (`what` says what it is, in the file's first line)."""
    n, k = r["n"], r["k"]
    base = _gemm_row(out_dir, hw, r["m"], n, k, r["latency"], source, stack=stack)
    base["w_bits"], base["a_bits"] = w_bits, a_bits
    path = out_dir / "gemm" / f"gemm-{n}x{k}-{name}.arch"
    path.write_text(f"# gemm-{n}x{k} with {what}\n"
                    f'import "gemm-{n}x{k}.arch"\n'
                    f'model "gemm-{n}x{k}-{name}" extends "gemm-{n}x{k}" {{\n'
                    f"  passes {{\n    {quantize}\n  }}\n}}\n")
    base["model"] = f"gemm/{path.name}"
    return base


def attention(data: Path, out_dir: Path, release: str, stack: str = STACK,
              systems: dict = SYSTEMS) -> dict[str, list[dict]]:
    out = {}
    for system, (short, hw) in systems.items():
        rows = out.setdefault(short + _suffix(stack), [])
        for table, stage in (("generation_attention_perf", "decode"),
                             ("context_attention_perf", "prefill")):
            records, version, path = _table(data, system, "attention", table, stack)
            # one kernel per table: the stack's main backend (the most rows), not a mix with
            # the fallbacks it also times (Triton, FlashInfer beside FA3 or TRT-LLM's MHA)
            main = Counter(r["kernel_source"] for r in records).most_common(1)[0][0]
            source = (f"aiconfigurator-core {release} {path} ({stack} {version}, kernel "
                      f"{main})")
            for r in records:
                if r["kernel_source"] != main:
                    continue
                layout = (r["num_heads"], r["num_key_value_heads"])
                if r["head_dim"] != 128 or r.get("window_size", 0) != 0 or \
                        r.get("beam_width", 1) != 1:   # the A100's older tables lack both
                    continue
                tiled = system in TILE_64
                model = f"attention/attn-{layout[0]}x{layout[1]}{'-tile64' if tiled else ''}.arch"
                if stage == "decode":
                    if layout not in HEADS or r["batch_size"] not in DECODE_BATCH or \
                            r["isl"] != 1 or r["step"] not in DECODE_STEPS:
                        continue
                    if _l2_resident(system, r, layout[1]):
                        continue
                    line = row(hw, model, stage, r["batch_size"], r["isl"] + r["step"] - 1,
                               ATTENTION_OP, r["latency"], source, stack=f"{stack} {version}")
                    line["kv_bits"] = {"bfloat16": 16, "fp8": 8}[r["kv_cache_dtype"]]
                else:
                    if layout not in PREFILL_HEADS or r["batch_size"] not in PREFILL_BATCH or \
                            r["kv_cache_dtype"] != "bfloat16" or r["isl"] < 128:
                        continue
                    line = row(hw, model, stage, r["batch_size"], r["isl"], ATTENTION_OP,
                               r["latency"], source, stack=f"{stack} {version}")
                _attention_model(out_dir / model, layout[0], layout[1], 128,
                                 TILE_64_BASE if tiled else ATTENTION_BASE)
                rows.append(line)
        rows.sort(key=lambda r: (r["stage"], r["model"], r["kv_bits"], int(r["batch"]),
                                 int(r["seq"])))
    return out


def _l2_resident(system: str, r: dict, kv_heads: int) -> bool:
    """Whether a decode row's K and V (the batch's, head_dim 128) would be read from the L2
    and take long enough from DRAM for it to show (LAUNCH_BOUND_S)."""
    return _cache_in_l2(system, r, kv_heads * 128 * 2)


def _cache_in_l2(system: str, r: dict, per_token: int) -> bool:
    """Whether a decode row's cache (`per_token` elements a cached token) would be read from the
    L2 and take long enough from DRAM for it to show (LAUNCH_BOUND_S)."""
    if system not in L2_RESIDENT:
        return False
    l2, bound, dram = L2_RESIDENT[system]
    width = {"bfloat16": 2, "fp8": 1}[r["kv_cache_dtype"]]
    cache = r["batch_size"] * (r["isl"] + r["step"]) * per_token * width
    return min(l2 / 16, dram * LAUNCH_BOUND_S) < cache < bound * l2


MLA_SYSTEMS = {system: names for system, names in STACK_SYSTEMS.items()
               if system not in {chip for chip, _ in RESIDENT_WEIGHTS}}
"""The chips whose MLA decode kernels are read: the HBM ones (the GDDR chips' 96-128 MB L2
holds the latent cache of tens of thousands of tokens, 1,152 bytes each)."""
MLA_HEADS = (8, 16, 32, 64, 128)
"""Query heads a GPU runs in the tables' MLA rows (DeepSeek-V3's 128 under TP 1 to 16): the
ones served; 1 to 4 (TP 32 to 128) launch and reduce more than they compute."""
MLA_LATENT = 512 + 64
"""A cached token's latent row: kv_lora_rank 512 and the rotary key's 64 (DeepSeek-V3)."""
MLA_OP = "attn[qk+softmax+sv]"   # the fused attention of mla/mla-h<heads>.arch


def mla(data: Path, out_dir: Path, release: str, stack: str, stage: str = "decode",
        cache: str = "bfloat16") -> dict[str, list[dict]]:
    """By file: the MLA kernels of each chip under `stack`, the median of repeated rows, as the
    `attn[qk+softmax+sv]` of mla/mla-h<heads>.arch: decode's (generation_mla: absorbed
    attention over a latent cache of `cache`, bf16 or fp8) or, stage "prefill", the prompt's
    (context_mla: the expanded form, per-head keys and values up-projected from the latent,
    without that up-projection; PREFILL_BATCH sequences of 128 tokens or more)."""
    table = {"decode": "generation_mla_perf", "prefill": "context_mla_perf"}[stage]
    out = {}
    for system, (short, hw) in MLA_SYSTEMS.items():
        try:
            records, version, path = _table(data, system, "mla", table, stack)
        except FileNotFoundError:   # no MLA tables, or a version of module tables alone
            continue
        if version != STACK_VERSIONS[system, stack]:
            continue   # not the kernels the section's other figures are
        times: dict[tuple, list[float]] = {}
        for r in records:
            if r["kv_cache_dtype"] == cache and r["mla_dtype"] == "bfloat16" and \
                    r["num_heads"] in MLA_HEADS and _mla_row(system, r, stage):
                length = r["step"] if stage == "decode" else r["isl"]
                key = (r["num_heads"], r["batch_size"], length, r["kernel_source"])
                times.setdefault(key, []).append(r["latency"])
        rows = []
        for (heads, batch, length, kernel), latencies in sorted(times.items()):
            line = row(hw, _mla_model(out_dir, heads), stage, batch, length, MLA_OP,
                       median(latencies), f"aiconfigurator-core {release} {path} ({stack} "
                       f"{version}, kernel {kernel})", stack=f"{stack} {version}")
            line["kv_bits"] = {"bfloat16": 16, "fp8": 8}[cache]
            rows.append(line)
        if rows:
            out[short + _suffix(stack)] = rows
    return out


def _mla_row(system: str, r: dict, stage: str) -> bool:
    """Whether a row of an MLA table is one the files keep: decode's batches and cache lengths
    (the cache not in the L2), the prompts' batches and lengths of 128 tokens or more."""
    if stage == "decode":
        return r["batch_size"] in DECODE_BATCH and r["isl"] == 1 and \
            r["step"] in DECODE_STEPS and not _cache_in_l2(system, r, MLA_LATENT)
    return r["batch_size"] in PREFILL_BATCH and r["isl"] >= 128 and r["step"] == 0


def _write_new(path: Path, text) -> None:
    """Write `path` (its folder made) with text() where it does not exist yet: a model file
    the rows name, shared by every table that times the same shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(text())


def _mla_model(out_dir: Path, heads: int) -> str:
    """mla/mla-h<heads>.arch, written if new; the path relative to out_dir."""
    path = out_dir / "mla" / f"mla-h{heads}.arch"
    _write_new(path, lambda: (
        "# One GPU's MLA attention as aiconfigurator times it (bench/"
        "convert_aiconfigurator.py):\n"
        "# DeepSeek-V3's latent attention (config.json: kv_lora_rank 512, qk_rope_head_dim "
        "64,\n# qk_nope_head_dim 128, v_head_dim 128, q_lora_rank 1536, hidden 7168) with "
        f"{heads} query heads\n# on the GPU (128 / TP {128 // heads}). Only the fused "
        "attention is measured (decode's over the\n# latent cache, the prompt's over keys "
        "and values up-projected from it);\n"
        "# the rest is here to make a model.\n"
        f'model "{path.stem}" {{\n  params {{ hidden = 7168 }}\n'
        "  x    = embedding(tokens, vocab=16, dim=hidden)\n"
        f"  attn = mla(x, heads={heads}, q_lora_rank=1536, kv_lora_rank=512, "
        "qk_nope_dim=128,\n             qk_rope_dim=64, v_dim=128)\n"
        "  passes {\n    flash_attention()\n  }\n}\n"))
    return f"mla/{path.name}"


def collectives(data: Path, path: Path, release: str) -> int:
    """Rewrite the rows of SYSTEMS' networks (aic_<system>) in collectives.csv, every other line
    kept byte for byte (the file's own line endings); the number of rows written."""
    systems = {**SYSTEMS, **XPU_SYSTEMS}
    networks = {f"aic_{system}" for system in systems}
    lines = [l for l in path.open(newline="").read().splitlines(keepends=True)
             if l.split(",", 1)[0] not in networks]
    end = "\r\n" if lines[-1].endswith("\r\n") else "\n"
    added = []
    for system in systems:
        folder, table, library = COLLECTIVE_LIBRARIES.get(system, ("nccl", "nccl_perf", "NCCL"))
        records, version, where = _table(data, system, "comm", table, folder)  # the library's own
        note = f"; aic_{system}: aiconfigurator-core {release} {where} ({library} {version})"
        if f"aic_{system}:" not in lines[0]:
            head = lines[0].rstrip("\r\n")
            lines[0] = head + note + lines[0][len(head):]
        for r in sorted(records, key=lambda r: (r["op_name"], r["num_gpus"], r["message_size"])):
            if r["op_name"] in COLLECTIVES and r["nccl_dtype"] == "half" and \
                    r["num_gpus"] in (2, 4, 8) and r["message_size"] <= 2 ** 28:
                ranks = r["num_gpus"] if folder in PER_RANK_ALL_GATHER and \
                    r["op_name"] == "all_gather" else 1
                added.append(f"aic_{system},{r['op_name']},{r['num_gpus']},{r['num_gpus']},"
                             f"{2 * r['message_size'] * ranks},{r['latency']:.6g}{end}")
    with path.open("w", newline="") as f:
        f.write("".join(lines + added))
    print(f"wrote {path}: {len(added)} rows of " + ", ".join(sorted(networks)))
    return len(added)


def stack_all_reduce(data: Path, path: Path, release: str) -> int:
    """Write allreduce-stacks.csv: each (system, stack) of STACK_VERSIONS, graph-captured
    kernels only (how the stacks serve decode), the median of repeated rows."""
    from statistics import median

    import pyarrow.parquet as pq
    lines, sources = [], []
    for (system, stack), version in sorted(ALL_REDUCE_VERSIONS.items()):
        where = data / system / "comm" / stack / version / "custom_allreduce_perf.parquet"
        times: dict[tuple[int, int], list[float]] = {}
        for r in pq.read_table(where).to_pylist():
            eager = "eager" in r["kernel_source"].lower() and system not in EAGER_ALL_REDUCE
            if eager or r["allreduce_dtype"] != "bfloat16":
                continue
            times.setdefault((r["num_gpus"], 2 * r["message_size"]), []).append(r["latency"])
        sources.append(f"aic_{system} {stack}: {where.relative_to(data.parents[1])}")
        for (gpus, size), ts in sorted(times.items()):
            lines.append(f"aic_{system},{stack} {version},{gpus},{size},{median(ts):.6g}\n")
    head = (f"# Each serving stack's own all-reduce (bf16, CUDA graphs; aic_b60's eager, the only "
            f"rows its XPU build has), numbers only: "
            f"aiconfigurator-core {release} (Apache-2.0), systems/data/<system>/comm/<stack>/"
            f"<version>/custom_allreduce_perf.parquet; bytes = 2 x its bf16 elements; the median "
            f"of repeated rows\n# " + "; ".join(sources) + "\n"
            "network,stack,devices,bytes,time_ms\n")
    path.write_text(head + "".join(lines))
    print(f"wrote {path}: {len(lines)} rows")
    return len(lines)


def _moe_model(out_dir: Path, hidden: int, ffn: int, experts: int, top_k: int,
               fmt: str) -> str:
    """moe/moe-HxF-eEkK.arch (and its format's variant, with the experts' quantize pass),
    written if new; returns the path relative to out_dir."""
    name = f"moe-{hidden}x{ffn}-e{experts}k{top_k}"
    folder = out_dir / "moe"
    base = folder / f"{name}.arch"
    _write_new(base, lambda: (
        "# One MoE layer's routed experts as aiconfigurator times them (bench/"
        "convert_aiconfigurator.py):\n"
        f"# hidden {hidden}, {experts} experts of {ffn} (one GPU's share), top {top_k}, "
        "SwiGLU. Only y's\n# gate, up, act and down are measured (the router is another "
        "kernel).\n"
        f'model "{name}" {{\n  params {{ hidden = {hidden} }}\n'
        "  x = embedding(tokens, vocab=16, dim=hidden)\n"
        f"  y = moe(x, experts={experts}, top_k={top_k}, ffn={ffn})\n}}\n"))
    suffix, quantize = MOE_FORMATS[fmt]
    if not suffix:
        return f"moe/{base.name}"
    path = folder / f"{name}-{suffix}.arch"
    path.write_text(f'import "{base.name}"\nmodel "{name}-{suffix}" extends "{name}" {{\n'
                    f"  passes {{\n    {quantize}\n  }}\n}}\n")
    return f"moe/{path.name}"


def moe(data: Path, out_dir: Path, release: str) -> dict[str, list[dict]]:
    """By file: the MoE kernel rows of each chip and stack (MOE_VERSIONS), each format's main
    kernel (its most common kernel_source)."""
    import pyarrow.parquet as pq
    out: dict[str, list[dict]] = {}
    for (system, stack), version in MOE_VERSIONS.items():
        device, hw = MOE_SYSTEMS[system]
        path = data / system / "moe" / stack / version / "moe_perf.parquet"
        table = [r for r in pq.read_table(path).to_pylist()
                 if r["moe_ep_size"] == 1 and r["distribution"] == "balanced"
                 and r["moe_dtype"] in MOE_FORMATS and r["moe_tp_size"] in MOE_TP
                 and (r["num_tokens"] in MOE_TOKENS or r["moe_dtype"] in MOE_EVERY_TOKEN)
                 and r["inter_size"] % r["moe_tp_size"] == 0
                 and (system, stack, r["moe_dtype"]) not in MOE_SKIP]
        main_kernel = {fmt: Counter(r["kernel_source"] for r in table
                                    if r["moe_dtype"] == fmt).most_common(1)[0][0]
                       for fmt in {r["moe_dtype"] for r in table}}
        source = f"aiconfigurator-core {release} {path.relative_to(data.parents[1])}"
        rows = []
        for r in table:
            if r["kernel_source"] != main_kernel[r["moe_dtype"]]:
                continue
            model = _moe_model(out_dir, r["hidden_size"], r["inter_size"] // r["moe_tp_size"],
                               r["num_experts"], r["topk"], r["moe_dtype"])
            rows.append(row(hw, model, "prefill", 1, r["num_tokens"], MOE_OP, r["latency"],
                            f"{source} ({stack} {version}, kernel {r['kernel_source']}, "
                            f"moe_tp {r['moe_tp_size']})", stack=f"{stack} {version}"))
        rows.sort(key=lambda x: (x["model"], int(x["seq"])))
        out[f"{device}{_suffix(stack)}"] = rows
    return out


def main(argv: list[str]) -> None:
    out = Path(argv[0]) if argv and argv[0] != "--moe" else ROOT / "tests" / "data" / "measured"
    package, release = _package()
    data = package / "systems" / "data"
    if "--moe" in argv:
        for name, rows in moe(data, out, release).items():
            write(out / f"aiconfigurator-moe-{name}.csv", rows)
        return
    for stack, systems in [(STACK, SYSTEMS), (STACK, XPU_SYSTEMS)] + \
            [(s, STACK_SYSTEMS) for s in OTHER_STACKS]:
        for device, rows in gemm(data, out, release, stack, systems).items():
            if rows:   # the A100 has no FP8
                write(out / f"aiconfigurator-gemm-{device}.csv", rows)
        for device, rows in attention(data, out, release, stack, systems).items():
            write(out / f"aiconfigurator-attention-{device}.csv", rows)
        if stack in OTHER_STACKS:   # vLLM's tables time whole MLA modules, not the kernel
            for device, rows in mla(data, out, release, stack).items():
                write(out / f"aiconfigurator-mla-{device}.csv", rows)
            for device, rows in mla(data, out, release, stack, "prefill").items():
                write(out / f"aiconfigurator-mla-context-{device}.csv", rows)
            for device, rows in mla(data, out, release, stack, cache="fp8").items():
                write(out / f"aiconfigurator-mla-kv8-{device}.csv", rows)
    collectives(data, out / "collectives.csv", release)
    stack_all_reduce(data, out / "allreduce-stacks.csv", release)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main(sys.argv[1:])
