"""Weight-only formats are kernels of their own (issue 26: "int4 weight-only with its
dequantisation"): a 16-bit linear layer or routed expert whose weights are 8 bits or fewer is
looked up under w4a16_gemm / w4a16_expert (w8a16_*), fitted where measured: vLLM's and SGLang's
Marlin MoE over Kimi-K2.5's INT4 experts in aiconfigurator's tables."""
import csv

import pytest

import costdsl
from costdsl.hardware import load_hardware
from costdsl.hardware.efficiency import FALLBACK, weight_only_family

from conftest import DATA, ROOT

MEASURED = DATA / "measured"
KIMI_INT4 = "moe/moe-7168x2048-e384k8-int4wo.arch"
EXPERTS = ("y.gate", "y.up", "y.act", "y.down")


def test_the_family_follows_the_weight_bits():
    assert weight_only_family("linear", "fp16", 4) == "w4a16_gemm"
    assert weight_only_family("fused", "bf16", 8) == "w8a16_gemm"
    assert weight_only_family("expert_linear", "fp16", 4) == "w4a16_expert"
    assert weight_only_family("linear", "fp16", 16) == "linear"
    assert weight_only_family("linear", "fp8", 4) == "linear"   # W4A8 runs on the FP8 units
    assert weight_only_family("rmsnorm", "fp16", 4) == "rmsnorm"
    # 4-bit weights with an 8-bit shared scale (MXFP4, NVFP4 weights) are other kernels
    assert weight_only_family("expert_linear", "bf16", 4, 8) == "w4a16_mx_expert"
    assert weight_only_family("linear", "bf16", 4, 16) == "w4a16_gemm"
    assert weight_only_family("linear", "bf16", 8, 8) == "w8a16_gemm"
    assert FALLBACK["w4a16_mx_expert"] == "w4a16_expert"
    assert FALLBACK["w4a16_expert"] == "expert_linear" and FALLBACK["w4a16_gemm"] == "linear"


def _ops(model, hw, seq):
    a = model.analyze(hw, batch=1, seq=seq, stages=("prefill",))
    return {o.name: o for o in a.stages["prefill"].ops}


def _measured(seq: int) -> float:
    with open(MEASURED / "aiconfigurator-moe-b200.csv", newline="") as f:
        return next(float(r["time_s"]) for r in csv.DictReader(f)
                    if r["model"] == KIMI_INT4 and int(r["seq"]) == seq
                    and "moe_tp 1)" in r["source"])


def test_int4_experts_by_hand_on_the_b200_under_vllm():
    """Kimi-K2.5's routed experts (384 of 7,168 x 2,048, top 8) in INT4 with a bf16 scale per
    32 weights, one GPU, vLLM's Marlin MoE. At 16 tokens the gate GEMM streams the weights of
    the experts touched at the fitted w4a16_expert bandwidth (0.431 of 8 TB/s) plus 9.05 us;
    the four ops sum within 5% of the 0.814 ms measured, where bf16 experts' figures gave half
    of it (0.41 ms). At 16,384 tokens the dequantising GEMMs are compute-bound at 0.109 of the
    bf16 peak: 47.5 ms for 43.0 ms measured (bf16 experts' figures: 12.3 ms)."""
    hw = load_hardware("nvidia-b200")
    model = costdsl.load(MEASURED / KIMI_INT4)
    ops = _ops(model, hw, 16)
    gate = ops["y.gate"]
    assert gate.bound == "memory"
    assert gate.time_s == pytest.approx(gate.bytes / (0.431 * 8e12) + 9.046e-6, rel=1e-3)
    total = sum(ops[n].time_s for n in EXPERTS)
    assert total == pytest.approx(_measured(16), rel=0.05)
    big = _ops(model, hw, 16384)
    assert big["y.gate"].bound == "compute"
    assert big["y.gate"].time_s == pytest.approx(
        big["y.gate"].flops / (0.109 * 2.25e15) + 9.046e-6, rel=1e-3)
    assert sum(big[n].time_s for n in EXPERTS) == pytest.approx(_measured(16384), rel=0.15)
    # the same experts priced as bf16 experts (a file without the table): 2x and 3.5x fast
    assert hw.bandwidth_for("w4a16_expert") < 0.6 * hw.bandwidth_for("expert_linear")
    l40s = load_hardware("nvidia-l40s")   # a file without the experts' tables
    assert l40s.bandwidth_for("w4a16_expert") == l40s.bandwidth_for("linear")


def test_a_weight_only_dense_layer_takes_its_own_figures(tmp_path):
    """A W4A16 linear layer (AWQ/GPTQ) is w4a16_gemm; a file's [efficiency.w4a16_gemm] prices
    it, and without one it is priced as the bf16 GEMMs are (the top-level figures)."""
    source = (ROOT / "hardware" / "nvidia-h100-sxm.toml").read_text()
    text = source.replace("[efficiency.compute]", "[efficiency.w4a16_gemm]\nbandwidth = 0.5\n"
                          "compute = 0.3\nlaunch = \"20 us\"\n\n[efficiency.compute]", 1)
    path = tmp_path / "nvidia-h100-sxm.toml"
    path.write_text(text)
    passes = ['quantize(weights=4, group=128, scale_bits=16, ops="layers.q")']
    model = costdsl.load("llama-2-7b", passes=passes)
    # a prefill of 16 tokens: memory-bound, run eagerly (each kernel its own launch)
    a = model.analyze(load_hardware(str(path)), batch=1, seq=16, stages=("prefill",))
    q = next(o for o in a.stages["prefill"].ops if o.name == "layers.q")
    assert q.compute_type == "fp16" and q.bound == "memory"
    assert q.time_s == pytest.approx(q.bytes / (0.5 * 3.35e12) + 20e-6, rel=1e-6)
    h100 = load_hardware("nvidia-h100-sxm")
    plain = model.analyze(h100, batch=1, seq=16, stages=("prefill",))
    q0 = next(o for o in plain.stages["prefill"].ops if o.name == "layers.q")
    k = next(o for o in plain.stages["prefill"].ops if o.name == "layers.k")
    assert q0.time_s == pytest.approx(q0.bytes / (h100.efficiency.bandwidth * 3.35e12)
                                      + h100.launch_for("linear"), rel=1e-6)
    assert k.bytes > 3.5 * q0.bytes   # the bf16 K projection moves 3.5x the bytes and more


def test_mxfp4_experts_take_their_own_figures():
    """gpt-oss-120b's experts (128 of 2,880 x 2,880, top 4) as released, MXFP4 (an 8-bit scale
    per 32 weights), on the H200 under vLLM (OpenAI's Triton MXFP4 MoE): their own family, within
    15% of the package's times at 64 and 16,384 tokens; priced with the INT4 Marlin figures they
    were 0.75 and 1.2x (the kernels differ)."""
    hw = load_hardware("nvidia-h200")
    model = costdsl.load(MEASURED / "moe" / "moe-2880x2880-e128k4-mxfp4.arch")
    from costdsl.analysis.roofline import family_of, bit_values
    node = model.graph("prefill").nodes["y.gate"]["op"]
    assert family_of(node, "fp16", bits=bit_values({"w_bits": 16, "a_bits": 16})) == \
        "w4a16_mx_expert"
    with open(MEASURED / "aiconfigurator-moe-h200.csv", newline="") as f:
        measured = {int(r["seq"]): float(r["time_s"]) for r in csv.DictReader(f)
                    if r["model"] == "moe/moe-2880x2880-e128k4-mxfp4.arch"
                    and "moe_tp 1)" in r["source"]}
    for seq in (64, 16384):
        ops = _ops(model, hw, seq)
        assert sum(ops[n].time_s for n in EXPERTS) == pytest.approx(measured[seq], rel=0.15)
    assert hw.bandwidth_for("w4a16_mx_expert") != hw.bandwidth_for("w4a16_expert")


def test_a_weight_only_gemm_by_hand_on_the_a100_under_tensorrt_llm():
    """TensorRT-LLM 1.0's weight-only plugin on the A100 (aiconfigurator's int4_wo table:
    INT4 weights, one scale per output channel, bf16 activations), an 8,192 x 8,192 layer: at
    one token it streams 33.6 MB of INT4 weights at the fitted 0.8477 of 2.04 TB/s plus 19.86 us
    (39.3 us for 37.9 us measured; priced as a bf16 GEMM it moved 4x the bytes); at 4,096 tokens
    it is compute-bound at 0.7695 of 312 TFLOPS: 2.31 ms for 2.14 ms measured."""
    hw = load_hardware("nvidia-a100-80gb").with_stack("trtllm")
    model = costdsl.load(MEASURED / "gemm" / "gemm-8192x8192-w4a16.arch")
    one = _ops(model, hw, 1)["proj"]
    assert one.bound == "memory" and one.bytes == pytest.approx(8192 * 8192 / 2 + 2 * 2 * 8192,
                                                                rel=1e-3)
    assert one.time_s == pytest.approx(one.bytes / (0.8477 * 2.039e12) + 19.86e-6, rel=2e-3)
    assert one.time_s == pytest.approx(37.888e-6, rel=0.05)
    big = _ops(model, hw, 4096)["proj"]
    assert big.bound == "compute"
    assert big.time_s == pytest.approx(2 * 4096 * 8192 * 8192 / (0.7695 * 312e12) + 19.86e-6,
                                       rel=2e-3)
    assert big.time_s == pytest.approx(2.14016e-3, rel=0.1)


def test_a_smoothquant_int8_gemm_by_hand_on_the_a100_under_tensorrt_llm():
    """TensorRT-LLM 1.0's SmoothQuant plugin on the A100 (aiconfigurator's sq table: INT8 weights
    and activations), an 8,192 x 8,192 layer at 4,096 tokens: compute-bound at the fitted 0.9357
    of 624 INT8 TOPS (941.5 us), plus the activations' quantisation before it, 8 bytes an input
    element at int8_gemm's 0.8842 of 2.039 TB/s (148.9 us), plus 13.19 us: 1.104 ms for 1.031 ms
    measured (the bf16 GEMM: 2.116 ms). Priced as the W8A16 kernel it would be 2.18 ms: the
    INT8 units are what SmoothQuant buys."""
    hw = load_hardware("nvidia-a100-80gb").with_stack("trtllm")
    model = costdsl.load(MEASURED / "gemm" / "gemm-8192x8192-int8.arch")
    big = _ops(model, hw, 4096)["proj"]
    assert big.bound == "compute" and big.compute_type == "int8"
    compute = 2 * 4096 * 8192 * 8192 / (0.9357 * 624e12)
    quantise = 8 * 4096 * 8192 / (0.8842 * 2.039e12)
    assert big.time_s == pytest.approx(compute + quantise + 13.19e-6, rel=2e-3)
    assert big.time_s == pytest.approx(1.0312e-3, rel=0.08)
