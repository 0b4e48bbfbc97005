"""Decode attention's occupancy (efficiency `rows` on a decode attention family): its kernels
run one thread block per sequence and KV head, and too few blocks stream the cache at a
fraction of the chip's rate: memory time x max(1, rows / (batch x KV heads)). By hand against
aiconfigurator's L40S TensorRT-LLM measurements over an FP8 cache, through every evaluation
path, beside a split regime (which fills the chip: not stretched), and bad input."""
import pytest

import costdsl
from costdsl import symbols as S
from costdsl.analysis.measurements import predict, read_measurements, resolve
from costdsl.hardware import load_hardware

from conftest import ROOT, rejected_section

MEASURED = ROOT / "tests" / "data" / "measured"
ATTENTION = "layers.attn[qk+softmax+sv]"
L40S_GDDR6 = 864e9   # datasheet: 864 GB/s


def _attention(hw, layout: str, batch: int, seq: int, kv_bits: int = 8):
    model = costdsl.load(MEASURED / "attention" / f"attn-{layout}.arch")
    a = model.analyze(hw, batch=batch, seq=seq, kv_bits=kv_bits, stages=["decode"])
    return next(o for o in a.stages["decode"].ops if o.name == ATTENTION)


def _measured_time(path, layout: str, batch: int, seq: int, kv_bits: int = 8) -> float:
    import csv
    with open(path) as f:
        for r in csv.DictReader(f):
            if (r["model"].endswith(f"attn-{layout}.arch") and r["stage"] == "decode"
                    and int(r["batch"]) == batch and int(r["seq"]) == seq
                    and int(r["kv_bits"]) == kv_bits):
                return float(r["time_s"])
    raise LookupError((layout, batch, seq))


def test_few_blocks_by_hand_on_the_l40s_under_tensorrt_llm():
    """TensorRT-LLM's decode kernel over an FP8 cache on the L40S takes as long for 1 block as
    for 4 (8 x 1 heads at batch 1, 2 and 4 over 511 cached tokens: 16.4 us in all three):
    each block streams its sequence's cache alone. The fitted `rows` (32 blocks fill the chip;
    64 while the rows of 1 to 6 MB of K and V, read from the L2, were in) prices 1 block at 32x
    the time its bytes take at the fitted bandwidth, 4 at 8x; at batch 32 of 16 x 2 heads (64
    blocks) nothing is stretched."""
    hw = load_hardware("nvidia-l40s").with_stack("trtllm")
    own = hw.efficiency.kinds["decode_attention_kv8"]
    assert own.rows == 32 and hw.split_for("decode_attention_kv8") is None
    path = MEASURED / "aiconfigurator-attention-l40s-trtllm.csv"
    for batch in (1, 2, 4):
        op = _attention(hw, "8x1-tile64", batch, 511)
        streaming = op.bytes / (own.bandwidth * L40S_GDDR6)
        assert op.time_s == pytest.approx(own.launch_s + streaming * 32 / batch, rel=0.02)
        assert op.time_s == pytest.approx(_measured_time(path, "8x1-tile64", batch, 511),
                                          rel=0.15)
    full = _attention(hw, "16x2-tile64", 32, 16383)
    assert full.time_s == pytest.approx(
        own.launch_s + full.bytes / (own.bandwidth * L40S_GDDR6), rel=0.02)


def test_blocks_and_a_split_are_fitted_together():
    """The stacks split a cache where its blocks are too few, so a split alone, or blocks
    alone, may gain nothing where both do: calibrate walks the blocks a second time with a
    split regime (its joint walk). Planted on the configurations of the L40S's TensorRT-LLM
    16-bit-cache decode rows (68: 64 blocks fill the chip, unsplit 0.55 of the bandwidth after
    4 us, split 0.80 after 9 us; 2% noise, seeded): the fit keeps 64 blocks and a split at 0.77
    after 13 us and prices the rows within 2.5%; without the joint walk it kept neither (one
    line at 0.77 after 12.7 us). With the rows of 1 to 6 MB of K and V in (read from the L2,
    now left out), the measured kernel itself looked like this (64 blocks and a split, 8.1%
    over its rows against 12.5% for one line); without them one line fits it (4.1%)."""
    from dataclasses import replace
    import numpy as np
    from costdsl.analysis.calibration import fit_efficiency
    from costdsl.analysis.measurements import Measured
    from costdsl.analysis.validation import errors
    from costdsl.hardware.efficiency import KindEfficiency
    hw = load_hardware("nvidia-l40s").with_stack("trtllm")
    path = MEASURED / "aiconfigurator-attention-l40s-trtllm.csv"
    rows = [m for m in resolve(read_measurements(path), path, hw, costdsl.load)
            if m.row.stage == "decode" and m.row.bits[2] == 16]
    planted = replace(hw.efficiency, kinds={**hw.efficiency.kinds, "decode_attention":
                      KindEfficiency(bandwidth=0.55, launch_s=4e-6, rows=64,
                                     split_bandwidth=0.8, split_launch_s=9e-6)})
    noise = 1 + 0.02 * np.random.default_rng(1).standard_normal(len(rows))
    synthetic = [Measured(replace(m.row, time_s=float(t)), m.pieces)
                 for m, t in zip(rows, predict(rows, planted) * noise)]
    fitted = fit_efficiency(synthetic, sms=hw.sms).efficiency
    own = fitted.kinds["decode_attention"]
    assert own.rows == 64
    assert fitted.split_for("decode_attention")[0] == pytest.approx(0.8, rel=0.05)
    assert errors(synthetic, predict(synthetic, fitted)).overall_mape < 2.5


def test_a_family_with_blocks_of_its_own_inherits_no_split():
    """Efficiency.split_for: a decode family without figures of its own runs its fallback's
    split; one with its own `rows` and no split runs none; its own split wins over both."""
    from costdsl.hardware.efficiency import Efficiency, KindEfficiency
    parent = KindEfficiency(bandwidth=0.8, split_bandwidth=0.9, split_launch_s=5e-6)
    def split_of(child: KindEfficiency | None):
        kinds = {"decode_attention": parent}
        if child is not None:
            kinds["decode_attention_kv8"] = child
        return Efficiency(kinds=kinds).split_for("decode_attention_kv8")
    assert split_of(None) == (0.9, 5e-6)
    assert split_of(KindEfficiency(bandwidth=0.7)) == (0.9, 5e-6)
    assert split_of(KindEfficiency(rows=64)) is None
    assert split_of(KindEfficiency(rows=64, split_bandwidth=0.5, split_launch_s=1e-6)) == \
        (0.5, 1e-6)


def test_the_measurement_path_and_the_roofline_price_it_alike():
    """`calibrate` and `validate` price a row (measurements.Piece.time, its blocks the rows
    times the KV heads) as `analyze` prices the op, for every FP8-cache decode row of a
    layout."""
    hw = load_hardware("nvidia-l40s").with_stack("trtllm")
    path = MEASURED / "aiconfigurator-attention-l40s-trtllm.csv"
    rows = [m for m in resolve(read_measurements(path), path, hw, costdsl.load)
            if m.row.model.endswith("attn-32x4-tile64.arch") and m.row.stage == "decode"
            and m.row.bits[2] == 8]
    assert len(rows) >= 8
    for m, t in zip(rows, predict(rows, hw.efficiency)):
        assert t == pytest.approx(_attention(hw, "32x4-tile64", m.row.batch, m.row.seq).time_s,
                                  rel=1e-9)


def test_every_evaluation_path_prices_it_alike_beside_a_split():
    """Occupancy beside a split regime (planted: the H100's TensorRT-LLM decode kernel over a
    bf16 cache, which splits, with 128 blocks to fill the chip): the split branch is not
    stretched (splitting is what fills the chip). The stage time as one sympy expression, the
    sweeps' vectorised path and `analyze` agree, and by hand."""
    import numpy as np
    from dataclasses import replace
    from costdsl.analysis.evaluate import stage_time
    shipped = load_hardware("nvidia-h100-sxm").with_stack("trtllm").with_framework(None)
    e = shipped.efficiency
    hw = replace(shipped, efficiency=replace(e, kinds={**e.kinds, "decode_attention": replace(
        e.kinds["decode_attention"], rows=128)}))
    own = hw.efficiency.kinds["decode_attention"]
    assert hw.split_for("decode_attention") is not None
    model = costdsl.load(MEASURED / "attention" / "attn-32x8.arch")
    roof = model.roofline(hw, "decode", kv_bits=16)
    cases = [(1, 1023), (4, 8191), (16, 1023), (64, 4095)]
    bits = {S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    grid = stage_time(roof, {S.batch: np.array([b for b, _ in cases], float),
                             S.seq: np.array([s for _, s in cases], float), **bits})
    split = hw.split_for("decode_attention")
    for (batch, seq), vectorised in zip(cases, grid):
        analyzed = model.analyze(hw, batch=batch, seq=seq, stages=["decode"])
        symbolic = float(roof.time.subs({S.batch: batch, S.seq: seq, **bits}))
        assert vectorised == pytest.approx(analyzed.stages["decode"].total.time_s, rel=1e-9)
        assert symbolic == pytest.approx(vectorised, rel=1e-9)
        op = next(o for o in analyzed.stages["decode"].ops if o.name == ATTENTION)
        streaming = op.bytes / (own.bandwidth * 3.35e12)   # H100 SXM: 3.35 TB/s
        unsplit = streaming * max(1.0, own.rows / (batch * 8))
        split_time = split[1] + op.bytes / split[0]
        assert op.time_s == pytest.approx(own.launch_s + min(unsplit, split_time), rel=0.01)


@pytest.mark.parametrize("section, message", [
    ("[efficiency.attention]\nrows = 64\n", "attention is neither"),
    ("[efficiency.decode_attention_kv8]\nrows = 0\n", "token rows (1 to 1e6) that fill the chip"),
])
def test_bad_blocks(section, message, tmp_path, capsys):
    assert message in rejected_section(section, tmp_path, capsys)
