"""Roofline numbers checked by hand on one hardware file (RTX A6000: 768 GB/s, fp16 tensor
154.8 TFLOPS, fp32 vector 38.7 TFLOPS; ridge point 154.8e12 / 768e9 = 201.5625 ops/byte)."""
import pytest

import costdsl
from costdsl.hardware import load_hardware

from conftest import MODELS

A6000 = load_hardware("nvidia-a6000")


def _op(analysis, stage, name):
    return next(o for o in analysis.stages[stage].ops if o.name == name)


def test_ridge_point_of_a6000():
    assert A6000.ridge("fp16") == pytest.approx(201.5625)


@pytest.mark.parametrize("batch,intensity,bound,time_s", [
    # batch 1: ops 2*1*4096*4096 = 33,554,432; bytes (fp16) weights 4096*4096*2 = 33,554,432
    # + input 4096*2 + output 4096*2 = 33,570,816; I = 0.99951 < 201.56 -> memory-bound;
    # time = 33,570,816 / 768e9 = 43.712 us.
    (1, 33_554_432 / 33_570_816, "memory", 33_570_816 / 768e9),
    # batch 256: ops 256 * 33,554,432 = 8,589,934,592; bytes 33,554,432 + 256*8192*2
    # = 37,748,736; I = 227.56 > 201.56 -> compute-bound; time = 8.5899e9 / 154.8e12 = 55.49 us.
    (256, 8_589_934_592 / 37_748_736, "compute", 8_589_934_592 / 154.8e12),
])
def test_decode_q_projection_by_hand(batch, intensity, bound, time_s):
    a = costdsl.load(MODELS / "llama-2-7b.arch").analyze(A6000, batch=batch, seq=2048)
    q = _op(a, "decode", "layers.q")
    assert q.intensity == pytest.approx(intensity, rel=1e-12)
    assert q.bound == bound
    assert q.time_s == pytest.approx(time_s, rel=1e-12)
    assert q.attainable == pytest.approx(min(154.8e12, intensity * 768e9), rel=1e-12)
    assert q.compute_type == "fp16"


def test_survey_table_values_for_llama_2_7b_prefill():
    """The survey's Table 1 (Llama-2-7b, A6000, seq 2048, batch 1), recomputed by hand:
    q_proj prefill: 2*2048*4096^2 = 68.72 G ops; bytes 2*(4096^2 + 2*2048*4096) = 67.11 MB;
    intensity 1024, compute-bound, 68.72e9 / 154.8e12 = 443.9 us.
    qk_matmul prefill: 2*32*2048^2*128 = 34.36 G ops; bytes: Q and K 2*2048*4096*2 = 33.55 MB
    + scores 32*2048^2*2 = 268.4 MB -> 302.0 MB; intensity 113.8, memory-bound, 393.2 us.
    softmax: 5*32*2048^2 = 671.1 M ops; 2*268.4 MB = 536.9 MB; 699.1 us."""
    a = costdsl.load(MODELS / "llama-2-7b.arch").analyze(A6000, batch=1, seq=2048)
    q = _op(a, "prefill", "layers.q")
    assert (q.flops, q.bytes, q.intensity, q.bound) == (68_719_476_736, 67_108_864, 1024, "compute")
    assert q.time_s == pytest.approx(68_719_476_736 / 154.8e12)
    qk = _op(a, "prefill", "layers.attn.qk")
    assert qk.flops == 34_359_738_368 and qk.bytes == 33_554_432 + 268_435_456
    assert (qk.bound, qk.time_s) == ("memory", pytest.approx(301_989_888 / 768e9))
    sm = _op(a, "prefill", "layers.attn.softmax")
    assert (sm.flops, sm.bytes) == (671_088_640, 536_870_912)
    assert sm.compute_type == "fp32" and sm.bound == "memory"


def test_decode_attention_intensity_stays_near_one_whatever_the_batch():
    """Decode qk: ops 2 b H Lk d, bytes 2(b H d + b Lk Hkv d + b H Lk): every term grows with b,
    so intensity does not: ~1 op/byte for MHA at fp16, memory-bound at any batch."""
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    for batch in (1, 64, 1024):
        qk = _op(model.analyze(A6000, batch=batch, seq=2048), "decode", "layers.attn.qk")
        assert qk.bound == "memory" and 0.9 < qk.intensity < 1.0


def test_stage_total_is_sum_of_repeated_ops():
    a = costdsl.load(MODELS / "llama-2-7b.arch").analyze(A6000, batch=4, seq=512)
    for stage in a.stages.values():
        assert stage.total.time_s == pytest.approx(sum(o.repeat * o.time_s for o in stage.ops))
        assert stage.total.flops == pytest.approx(sum(o.repeat * o.flops for o in stage.ops))
        assert stage.total.bytes == pytest.approx(sum(o.repeat * o.bytes for o in stage.ops))


def test_decode_weight_bytes_equal_model_bytes_less_unread_embedding():
    """One decode step reads every weight once, except the embedding table, of which it
    gathers one row per token: weights read = 2 * (6,738,415,616 - 32000*4096) + 2*4096 bytes."""
    a = costdsl.load(MODELS / "llama-2-7b.arch").analyze(A6000, batch=1, seq=16)
    expected = 2 * (6_738_415_616 - 32000 * 4096) + 2 * 4096
    assert a.stages["decode"].total.bytes_by_class["weight"] == expected


def test_low_bit_types_follow_the_hardware():
    """W8A8 on the A6000 runs at its int8 rate (309.7 TOPS); W4A16 dequantizes to fp16;
    W4A4 on the H100 (no int4) is promoted to int8."""
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    q = lambda hw, **bits: _op(model.analyze(hw, 1, 128, **bits), "decode", "layers.q")
    assert q(A6000, w_bits=8, a_bits=8).compute_type == "int8"
    assert q(A6000, w_bits=4, a_bits=16).compute_type == "fp16"
    assert q("nvidia-h100-sxm", w_bits=4, a_bits=4).compute_type == "int8"
    # 4-bit weights read half of 8-bit ones: decode q at batch 1 is ~2x faster
    assert q(A6000, w_bits=4).time_s == pytest.approx(q(A6000, w_bits=8).time_s / 2, rel=1e-3)
