"""Closed-form crossovers, piecewise stage time, quantization crossovers, latency, sensitivity.

Hand derivations use Llama-2-7b (hidden h = 4096, heads 32, head_dim 128) on the H100 SXM
(P = 989.5e12 fp16 ops/s, B = 3.35e12 bytes/s; fp32 vector 67e12) at fp16."""
import functools
import json
import math
import subprocess
from dataclasses import replace
import sys

import pytest
import sympy
from hypothesis import given, settings, strategies as st

import costdsl
from costdsl.hardware import load_hardware
from costdsl.hardware.efficiency import KindEfficiency
from costdsl import symbols as S
from costdsl.analysis.records import Settings, stage_result
from costdsl.analysis.latency import decode_sum, stepwise_decode_total

from conftest import MODELS

# The ideal roofline of the datasheet figures: the expected values below are derived from them.
H100 = load_hardware("nvidia-h100-sxm").ideal()

P, B = 989.5e12, 3.35e12
MODEL = costdsl.load(MODELS / "llama-2-7b.arch")


def _op(answer, name):
    return next(c for c in answer.ops if c.op == name)


@pytest.fixture(scope="module")
def decode_batch():
    return MODEL.crossover("batch", H100, stage="decode", seq=2048)


def test_decode_projection_crossover_by_hand(decode_batch):
    """q: operations 2 b h^2; bytes 2 h^2 (weights) + 4 b h (input and output), at fp16.
    2 b h^2 B = P (2 h^2 + 4 b h)  =>  b = h P / (h B - 2 P) = 2048 P / (2048 B - P)
    = 345.15 on the H100: memory-bound below, compute-bound above."""
    q = _op(decode_batch, "layers.q")
    assert sympy.simplify(q.expression - 2048 * S.peak / (2048 * S.bandwidth - S.peak)) == 0
    assert q.value == pytest.approx(4096 * P / (4096 * B - 2 * P))
    assert q.rounded == (345, 346)
    assert q.direction == "memory->compute"
    assert "frac" in q.latex


def test_decode_attention_has_no_batch_crossover_and_says_why(decode_batch):
    qk = _op(decode_batch, "layers.attn.qk")
    assert qk.expression is None and qk.value is None
    assert "does not depend on batch" in qk.reason


def test_first_op_to_turn_compute_bound_is_the_lowest_crossover(decode_batch):
    """The LM head (vocab 32000 wide, bytes dominated by its weights) turns first:
    2 b h V B = P (2 h V + 2 b h + 2 b V) => b = h V P / (h V B - (h + V) P) = 321.5."""
    first = decode_batch.summary.first_compute_bound
    assert first.op == "lm_head"
    assert first.value == pytest.approx(4096 * 32000 * P / (4096 * 32000 * B - 36096 * P))


def test_prefill_attention_intensity_limit_is_head_dim():
    """Unfused prefill qk: 2 b H s^2 d ops over 2 (2 b s H d + b H s^2) bytes -> d = 128 as s
    grows: below the fp16 ridge (295.4), so memory-bound at every seq."""
    answer = MODEL.crossover("seq", H100, stage="prefill", batch=1)
    qk = _op(answer, "layers.attn.qk")
    assert qk.value is None and qk.limit == 128
    assert "tends to 128.0" in qk.reason


def test_free_symbol_stays_in_the_expression():
    """With hidden left free, the decode q crossover is hidden P / (hidden B - 2 P)."""
    family = costdsl.load(MODELS / "llama.arch", set={"layers": 32, "heads": 32, "ffn": 11008,
                                                     "vocab": 32000})
    q = _op(family.crossover("batch", H100, seq=2048), "layers.q")
    hidden = S.model_param("hidden")
    assert sympy.simplify(q.expression - hidden * S.peak / (hidden * S.bandwidth - 2 * S.peak)) == 0
    assert q.value is None


def test_bitwidth_crossover_runs_the_other_way():
    """At batch 64, q: 2 b h^2 B = P (h^2 w/8 + 4 b h)  =>  w = 8 b (2 h B - 4 P) / (h P)
    = 2.967 bits, in the fp16 region (a_bits = 16): fewer weight bits make it compute-bound."""
    answer = MODEL.crossover("w_bits", H100, batch=64, seq=2048)
    q = [c for c in answer.ops if c.op == "layers.q" and c.compute_type == "fp16"][0]
    assert q.value == pytest.approx(8 * 64 * (2 * 4096 * B - 4 * P) / (4096 * P))
    assert q.direction == "compute->memory"


def test_stage_balance_of_prefill_in_batch():
    """Compute and memory totals of prefill are both linear in batch with no constant term
    except weights; the balance is where they meet, and it is a real crossover."""
    answer = MODEL.crossover("batch", H100, stage="prefill", seq=128)
    s = answer.summary
    assert s.balance_value is not None and s.balance_value > 0
    numbers = stage_result(MODEL.roofline(H100, "prefill"),
                           Settings(1, 128))  # sanity: the equation holds at the root
    compute_minus_memory = (sum(op.node.repeat * (op.compute_time - op.memory_time)
                                for op in MODEL.roofline(H100, "prefill").ops))
    residual = compute_minus_memory.subs({**Settings(1, 128).values(), S.batch: s.balance_value})
    assert abs(float(residual)) < 1e-9 * numbers.total.time_s


@settings(max_examples=30, deadline=None)
@given(batch=st.floats(1, 2000))
def test_piecewise_stage_time_equals_numeric_evaluation(decode_batch, batch):
    """The Piecewise in batch must agree with max(compute, memory) summed op by op."""
    piecewise = float(decode_batch.summary.time.subs(S.batch, batch))
    symbolic = MODEL.roofline(H100, "decode")
    exact = float(symbolic.time.subs({**Settings(1, 2048).values(), S.batch: batch}))
    assert math.isclose(piecewise, exact, rel_tol=1e-9)


def test_quantization_crossover_4_to_2_bits():
    """Survey: at large batch 2-bit weights gain nothing over 4-bit. Both run at fp16 (W4A16,
    W2A16), so the saving vanishes where the 4-bit op turns compute-bound:
    2 b h^2 B = P (h^2/2 + 4 b h)  =>  b = h P / (4 (h B - 2 P)) = 86.29 for q."""
    answer = MODEL.crossover("batch", H100, seq=2048, w_bits=4,
                             versus={"w_bits": 2})
    q = next(x for x in answer.quantization if x.op == "layers.q")
    assert q.value == pytest.approx(4096 * P / (4 * (4096 * B - 2 * P)))
    # and numerically: below it 2-bit is faster, above it they are equal
    def time(bits, batch):
        a = MODEL.analyze(H100, batch=batch, seq=2048, w_bits=bits)
        return next(o.time_s for o in a.stages["decode"].ops if o.name == "layers.q")
    assert time(2, 80) < time(4, 80)
    assert time(2, 90) == pytest.approx(time(4, 90))
    softmax = next(x for x in answer.quantization if x.op == "layers.attn.softmax")
    assert "no saving" in softmax.reason


@pytest.mark.parametrize("batch,gen", [(1, 1), (1, 2), (16, 300), (512, 64)])
def test_latency_closed_form_equals_step_by_step_sum(batch, gen):
    latency = MODEL.latency("nvidia-a6000", batch=batch, seq=1024, gen=gen)
    decode = MODEL.roofline("nvidia-a6000", "decode")
    explicit = stepwise_decode_total(decode, Settings(batch, 1024), gen)
    assert latency.e2e_s - latency.ttft_s == pytest.approx(explicit, rel=1e-12, abs=1e-15)
    assert latency.ttft_s == pytest.approx(
        MODEL.analyze("nvidia-a6000", batch=batch, seq=1024).stages["prefill"].total.time_s)


def test_decode_sum_splits_at_breakpoints():
    """A synthetic step time, c below 10.5 and 2c above, summed from 8: the closed form in
    gen must equal the brute-force sum on both sides of the breakpoint."""
    step = sympy.Piecewise((S.seq, S.seq < 10.5), (2 * S.seq, True))
    total = decode_sum(step, 8)
    for gen in range(1, 12):
        brute = sum(c if c < 10.5 else 2 * c for c in range(8, 8 + gen - 1))
        assert total.subs(S.gen, gen) == brute


def test_sensitivity_of_memory_bound_decode():
    """Batch-1 decode: every op memory-bound, so time scales as 1/bandwidth (elasticity -1),
    peak does not matter (0); elasticities of bandwidth and peak always sum to -1."""
    s = MODEL.sensitivity(H100, batch=1, seq=2048, stage="decode")
    assert s.elasticity["bandwidth"] == pytest.approx(-1)
    assert s.elasticity["peak"] == pytest.approx(0)
    assert s.time_s == pytest.approx(
        MODEL.analyze(H100, 1, 2048).stages["decode"].total.time_s)
    pre = MODEL.sensitivity(H100, batch=4, seq=2048, stage="prefill")
    assert pre.elasticity["bandwidth"] + pre.elasticity["peak"] == pytest.approx(-1)
    assert pre.elasticity["peak"] < -0.5  # prefill at this size is mostly compute-bound


def test_crossover_json_contract():
    out = subprocess.run([sys.executable, "-m", "costdsl", "crossover",
                          str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-h100-sxm", "--ideal",
                          "--solve", "batch", "--stage", "decode", "--seq", "2048",
                          "--format", "json"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["solve"] == "batch"
    for c in data["crossovers"]:
        assert {"op", "expression", "latex", "value", "direction", "reason"} <= set(c)
        assert (c["value"] is None) == (c["reason"] is not None)
    assert data["stage"]["first_compute_bound"]["op"] == "lm_head"


def test_solving_for_an_unknown_symbol_is_an_error():
    with pytest.raises(costdsl.CostDSLError, match="cannot solve for 'hidden'"):
        MODEL.crossover("hidden", H100)


@functools.cache
def _w_bits_answer():
    return MODEL.crossover("w_bits", "nvidia-a6000", batch=256, seq=512, a_bits=8)


@settings(max_examples=25, deadline=None)
@given(w_bits=st.floats(1, 32))
def test_piecewise_in_weight_bits_follows_the_compute_type(w_bits):
    """Solving for w_bits on the A6000 at W?A8: below 8 bits the linear layers run as int8,
    above as fp16; the Piecewise must agree with a fresh analysis at every bitwidth."""
    answer = _w_bits_answer()
    piecewise = float(answer.summary.time.subs(S.w_bits, w_bits))
    symbolic = MODEL.roofline("nvidia-a6000", "decode", w_bits=w_bits, a_bits=8)
    exact = float(symbolic.time.subs({**Settings(256, 512, w_bits, 8).values()}))
    assert math.isclose(piecewise, exact, rel_tol=1e-9)


def test_free_symbol_in_crossover_leaves_the_stage_time_open():
    answer = MODEL.crossover("batch", H100, stage="decode", free=["seq"])
    assert answer.summary.time is None
    q = _op(answer, "layers.q")
    assert q.value == pytest.approx(4096 * P / (4096 * B - 2 * P))  # q does not depend on seq


def test_a_family_with_its_own_compute_fraction_turns_where_analyze_says():
    """Qwen3-8B's projections in block-scaled FP8 on the H200 under TensorRT-LLM run at the
    fp8_block_gemm family's compute fraction (0.665 of the 1,979 TFLOPS FP8 peak), not the
    top-level FP8 one (0.794): the crossover in the prompt's length is solved at the family's
    peak (its ridge says so), and `analyze` calls the op memory-bound 0.5% below it and
    compute-bound 0.5% above. (Solved at the top-level peak it read 245 tokens for q, where
    `analyze` already had it compute-bound from 195.)"""
    hw = load_hardware("nvidia-h200").with_stack("trtllm")
    model = costdsl.load(MODELS / "qwen3-8b.arch", passes=[
        "quantize(weights=8, acts=8, group=16384, scale_bits=32)"])
    answer = model.crossover("seq", hw, stage="prefill", batch=1, w_bits=8, a_bits=8)
    family_peak = hw.peak_for("fp8", "fp8_block_gemm")
    assert family_peak == pytest.approx(0.6649 * 1979e12, rel=1e-3)
    assert family_peak < hw.peak_for("fp8", "linear")
    for name in ("layers.q", "layers.k", "layers.gate"):
        c = _op(answer, name)
        assert c.ridge == pytest.approx(family_peak / hw.bandwidth_for("fp8_block_gemm"))

        def bound(seq):
            stage = model.analyze(hw, batch=1, seq=seq, w_bits=8, a_bits=8,
                                  stages=["prefill"]).stages["prefill"]
            return next(o for o in stage.ops if o.name == name).bound
        assert (bound(int(c.value * 0.995)), bound(int(c.value * 1.005) + 1)) == \
            ("memory", "compute")


def test_solving_for_a_bitwidth_uses_each_range_of_bits_family():
    """Llama-3-8B decode at batch 256 on the H200 (vLLM's figures), FP8 weights, solved in the
    activations' bits: between 4 and 8 bits the projections run as FP8 GEMMs, at that
    family's peak (0.986 of 1,979 TFLOPS) and bandwidth (4.53 TB/s, against the 16-bit
    family's 4.12 the stage was built with). Solved with the 16-bit family's bandwidth, q
    turned memory-bound at a_bits = 32,768 B / P - 64 = 6.05, where `analyze` has it
    compute-bound (4.40 against 4.05 us); with its own, q stays compute-bound in every range
    of bits and says so, and every switch found agrees with `analyze` 1% either side."""
    hw = load_hardware("nvidia-h200")
    assert hw.bandwidth_for("fp8_gemm") == pytest.approx(4.53216e12)
    assert hw.bandwidth_for("linear") == pytest.approx(4.11696e12)
    model = costdsl.load(MODELS / "llama-3-8b.arch")
    answer = model.crossover("a_bits", hw, stage="decode", batch=256, seq=1024, w_bits=8)
    q = _op(answer, "layers.q")
    assert q.value is None and q.reason.startswith("compute-bound at every a_bits")

    def bound(name, bits):
        stage = model.analyze(hw, batch=256, seq=1024, w_bits=8, a_bits=bits,
                              stages=["decode"]).stages["decode"]
        return next(o for o in stage.ops if o.name == name).bound
    assert bound("layers.q", 6) == bound("layers.q", 6.2) == "compute"
    switches = [c for c in answer.ops if c.value is not None and 1 < c.value < 16]
    assert switches
    for c in switches:
        sides = (bound(c.op, c.value * 0.99), bound(c.op, c.value * 1.01))
        assert sides == (("memory", "compute") if c.direction == "memory->compute"
                         else ("compute", "memory")), c.op


def test_quantization_crossover_meets_the_bent_memory_time():
    """Where too few output tiles stretch a GEMM's memory time (efficiency `tiles`: planted
    here, 528 on the H100's linear family), the lower bitwidth stops saving where the higher
    one's compute meets that stretched time, as `analyze` prices it, not at its bare
    intensity. By hand for q (h = 4,096, W16A16 against W8A16, both fp16 compute; batch b >=
    128: tiles = b/128 x h/128, the bytes stretched by 528 / tiles = 2,112 / b):
    2 b h^2 / P = (2 h^2 + 4 b h) (2112 / b) / B, a quadratic in b. Before, it answered at the
    bare intensity's switch (301.6 against 892.9 where the two times meet)."""
    hw = load_hardware("nvidia-h100-sxm")
    linear = hw.efficiency.kinds.get("linear", KindEfficiency())
    planted = replace(hw, efficiency=replace(
        hw.efficiency, kinds={**hw.efficiency.kinds, "linear": replace(linear, tiles=528.0)}))
    answer = MODEL.crossover("batch", planted, seq=2048, w_bits=16, versus={"w_bits": 8})
    q = next(c for c in answer.quantization if c.op == "layers.q")
    op = next(o for o in MODEL.roofline(planted, "decode").ops if o.node.name == "layers.q")
    P, B, h = float(op.peak), float(op.bandwidth), 4096
    a, b, c = 2 * h * h * B, -2112 * 4 * h * P, -2112 * 2 * h * h * P
    assert q.value == pytest.approx((-b + math.sqrt(b * b - 4 * a * c)) / (2 * a), rel=1e-9)
    assert q.value == pytest.approx(next(c.value for c in answer.ops if c.op == "layers.q"))

    def time(bits, batch):
        a = MODEL.analyze(planted, batch=batch, seq=2048, w_bits=bits, stages=["decode"])
        return next(o.time_s for o in a.stages["decode"].ops if o.name == "layers.q")
    below, above = math.floor(q.value * 0.95), math.ceil(q.value * 1.05)
    assert time(8, below) < time(16, below) and time(8, above) == pytest.approx(time(16, above))
