"""A GEMM family's `floor`: the per-call host time of vLLM 0.24's block-FP8 path (DeepGEMM
behind a Python wrapper), under which the GPU's work runs: time = max(compute, memory, floor)
+ serial work. By hand against the shipped H200 figures and aiconfigurator's measurements,
through the symbolic roofline, the measurement path and the compiled numbers alike; absent in
CUDA graphs; recovered by the fit from rows made with a known floor; bad input."""
from dataclasses import replace

import pytest

import costdsl
from costdsl.analysis.calibration import fit_efficiency
from costdsl.analysis.measurements import Measured, predict, read_measurements, resolve
from costdsl.hardware import load_hardware

from conftest import MEASURED, analyze_gemm_text, rejected_section

H200_HBM, H200_FP8 = 4.8e12, 1979e12   # datasheet: 4.8 TB/s; 3,958 TFLOPS FP8 with sparsity
BLOCK = "gemm-4096x4096-fp8block.arch"


def _proj(hw, seq: int, stage: str = "prefill", batch: int = 1):
    model = costdsl.load(MEASURED / "gemm" / BLOCK)
    a = model.analyze(hw, batch=batch, seq=seq, stages=[stage])
    return next(o for o in a.stages[stage].ops if o.name == "proj")


def _rows(hw):
    path = MEASURED / "aiconfigurator-gemm-fp8block-h200.csv"
    return resolve(read_measurements(path), path, hw, costdsl.load)


def test_the_floor_by_hand_on_the_h200_under_vllm():
    """The H200's vLLM block-FP8 GEMM (n = k = 4,096): at m = 32 its kernel (1 us of
    arithmetic, 3 us of weights) runs under the 84.6 us floor, then its input's quantisation
    (8 bytes per element) and its epilogue (4 bytes per output, fp8_gemm's): 84.9 us against
    84.9 us measured; at m = 16,384 the arithmetic at the fitted 0.69 of the fp8 peak (403 us)
    and the serial work (148 us): 551 us against 536 us measured. Before the floor, an
    additive 60 us launch and a compute fraction of 0.996 (the fit trading the one for the
    other)."""
    hw = load_hardware("nvidia-h200")
    own = hw.efficiency.kinds["fp8_block_gemm"]
    assert own.floor_s == pytest.approx(84.62e-6, rel=1e-3) and own.launch_s == 0
    bandwidth, compute = own.bandwidth * H200_HBM, own.compute * H200_FP8
    epilogue = hw.efficiency.output_bytes_for("fp8_block_gemm")   # fp8_gemm's: 4 bytes
    assert epilogue == 4 and own.output_bytes is None
    quantise = lambda m: (own.input_bytes + epilogue) * m * 4096 / bandwidth   # n = k
    small = own.floor_s + quantise(32)
    assert 2 * 32 * 4096 ** 2 / compute < 4096 ** 2 / bandwidth < own.floor_s
    assert _proj(hw, 32).time_s == pytest.approx(small, rel=1e-3)
    assert small == pytest.approx(84.85e-6, rel=0.005)         # measured (the package's table)
    large = 2 * 16384 * 4096 ** 2 / compute + quantise(16384)
    assert _proj(hw, 16384).time_s == pytest.approx(large, rel=1e-3)
    assert large == pytest.approx(536e-6, rel=0.04)            # measured: 1.027 of it


def test_the_measurement_path_and_the_roofline_price_the_floor_alike():
    """`calibrate` and `validate` price a row (measurements.Piece.time) as `analyze` prices the
    op (the symbolic roofline, evaluated through the compiled numbers): every size of the
    shape, at the floor and above it."""
    hw = load_hardware("nvidia-h200")
    rows = [m for m in _rows(hw) if m.row.model.endswith(BLOCK)]
    priced = predict(rows, hw.efficiency)
    for m, t in zip(rows, priced):
        assert t == pytest.approx(_proj(hw, m.row.seq).time_s, rel=1e-9)
    own = hw.efficiency.kinds["fp8_block_gemm"]
    epilogue = hw.efficiency.output_bytes_for("fp8_block_gemm")   # fp8_gemm's
    serial = [m.pieces[0].serial_s(own.input_bytes, epilogue) / own.bandwidth for m in rows]
    at_floor = {m.row.seq for m, t, w in zip(rows, priced, serial)
                if t - w == pytest.approx(own.floor_s, rel=1e-9)}
    assert at_floor == {m.row.seq for m in rows if m.row.seq <= 2048}


def test_a_decode_in_cuda_graphs_pays_no_floor():
    """The floor is the call's host time: a decode step captured in a CUDA graph (the H200 vLLM
    figures' framework has graph_launch) runs the same GEMM of 32 rows at its kernel time and
    the graph's launch (4.1 us of weights and 0.3 us of serial work beside 5.2 us), far below
    the 84.8 us it takes eagerly in a prefill of 32 tokens."""
    hw = load_hardware("nvidia-h200")
    graph_launch = hw.efficiency.framework.graph_launch_s
    own = hw.efficiency.kinds["fp8_block_gemm"]
    eager, graphed = _proj(hw, 32), _proj(hw, 1024, "decode", batch=32)
    assert eager.time_s > own.floor_s
    epilogue = hw.efficiency.output_bytes_for("fp8_block_gemm")   # fp8_gemm's
    streamed = graphed.time_s - graph_launch - (own.input_bytes + epilogue) * 32 * 4096 / (
        own.bandwidth * H200_HBM)
    # 8-bit weights and a 32-bit scale a block; the 32 rows' activations in and out add 1.6%
    assert streamed == pytest.approx(4096 ** 2 * (1 + 4 / 128 ** 2) / (own.bandwidth * H200_HBM),
                                     rel=0.02)
    assert graphed.time_s < eager.time_s / 8


def test_the_fit_recovers_a_planted_floor():
    """Rows priced by known figures (the H200's with the block-FP8 floor at 120 us, not the
    shipped 84.6) are fitted back to that floor and (within 2%) the same compute fraction.
    Its bandwidth and input_bytes are not identified: every memory-bound row of the table is
    under the floor, and the serial work shows only beside large-m arithmetic it trades with."""
    hw = load_hardware("nvidia-h200")
    e = hw.efficiency
    planted = replace(e, kinds={**e.kinds, "fp8_block_gemm": replace(
        e.kinds["fp8_block_gemm"], floor_s=120e-6)})
    measured = []
    for name in ("aiconfigurator-gemm-h200.csv", "aiconfigurator-gemm-tp-h200.csv",
                 "aiconfigurator-gemm-fp8-h200.csv", "aiconfigurator-gemm-fp8-tp-h200.csv",
                 "aiconfigurator-gemm-fp8block-h200.csv"):
        path = MEASURED / name
        measured += resolve(read_measurements(path), path, hw, costdsl.load)
    times = predict(measured, planted)
    made = [Measured(replace(m.row, time_s=float(t)), m.pieces) for m, t in zip(measured, times)]
    own = fit_efficiency(made, sms=hw.sms).efficiency.kinds["fp8_block_gemm"]
    assert own.floor_s == pytest.approx(120e-6, rel=5e-3) and own.launch_s == 0   # 120.4
    shipped = e.kinds["fp8_block_gemm"]
    assert own.compute == pytest.approx(shipped.compute, rel=0.02)   # 0.670; additive: 0.99



@pytest.mark.parametrize("section, message", [
    ("[efficiency.rmsnorm]\nfloor = \"80 us\"\n", "rmsnorm is not a GEMM family"),
    ("[efficiency.fp8_block_gemm]\nfloor = \"slow\"\n", "fp8_block_gemm.floor"),
])
def test_bad_floor(section, message, tmp_path, capsys):
    assert message in rejected_section(section, tmp_path, capsys)


def test_every_evaluation_path_prices_the_floor_alike():
    """The stage time as one sympy expression, the sweeps' vectorised path (stage_time over a
    grid of token counts) and `analyze` (the compiled per-op numbers) agree on a block-FP8
    prefill on the H200 under vLLM, at the floor and above it."""
    import numpy as np
    from costdsl import symbols as S
    from costdsl.analysis.evaluate import stage_time
    hw = load_hardware("nvidia-h200")
    model = costdsl.load(MEASURED / "gemm" / BLOCK)
    roof = model.roofline(hw, "prefill")
    seqs = [32, 512, 2048, 4096, 16384]
    bits = {S.w_bits: 16, S.a_bits: 16}   # the file's quantize pass sets the GEMM's own
    grid = stage_time(roof, {S.batch: np.ones(len(seqs)), S.seq: np.array(seqs, dtype=float),
                             **bits})
    for seq, vectorised in zip(seqs, grid):
        analyzed = model.analyze(hw, batch=1, seq=seq, stages=["prefill"])
        symbolic = float(roof.time.subs({S.batch: 1, S.seq: seq, **bits}))
        assert vectorised == pytest.approx(analyzed.stages["prefill"].total.time_s, rel=1e-9)
        assert symbolic == pytest.approx(vectorised, rel=1e-9)


def test_the_time_model_line_names_the_floor(capsys):
    """`analyze` says which GEMM family has a floor and where it applies, beside the rest of
    the file's figures: a user reading 84.9 us for a 17 MB GEMM sees why."""
    out = analyze_gemm_text(capsys, BLOCK, "--hw", "nvidia-h200", "--batch", "1", "--seq", "32")
    assert "fp8_block_gemm at least 84.6 us a call outside CUDA graphs" in out


def test_the_closed_form_in_seq_breaks_where_the_arithmetic_passes_the_floor():
    """The prefill's time as a Piecewise in seq (crossover's closed form) switches where the
    GEMM's arithmetic passes the 84.6 us floor (by hand: 2 x 4,096^2 s / (0.6895 x 1,979
    TFLOPS) = 84.6 us at s = 3,441), not at its intensity crossover (s = 270): between the two
    it priced the GEMM at its arithmetic, 14 us at s = 271 against the 85 us it takes. It
    agrees with `analyze` on both sides."""
    import sympy
    from costdsl import symbols as S
    from costdsl.analysis.crossover import stage_crossover
    hw = load_hardware("nvidia-h200")
    own = hw.efficiency.kinds["fp8_block_gemm"]
    switch = own.floor_s * own.compute * H200_FP8 / (2 * 4096 ** 2)
    assert switch == pytest.approx(3441.1, rel=1e-4)
    model = costdsl.load(MEASURED / "gemm" / BLOCK)
    stage = model.roofline(hw, "prefill")
    values = {S.batch: 1, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    closed = stage_crossover(stage, hw, S.seq, values).time
    ends = [float(c.rhs) for _, c in closed.args if c is not sympy.true
            for c in (c.args if isinstance(c, sympy.Or) else (c,))]
    assert any(e == pytest.approx(switch, rel=1e-6) for e in ends)
    for seq in (271, 1000, 3000, 4000, 16384):
        analyzed = model.analyze(hw, batch=1, seq=seq, stages=["prefill"])
        assert float(closed.subs(S.seq, seq)) == pytest.approx(
            analyzed.stages["prefill"].total.time_s, rel=1e-6)


def test_a_floor_must_price_a_tenth_of_its_family():
    """A floor is what every small call of a family waits for (calibration.MIN_REGIME_SHARE):
    the L40S's vLLM FP8 GEMMs once fitted one of 25.6 us that priced 6 of their 228 rows (its
    shards at m = 1,024, 40 to 77 us for 11 to 19 us of work), which the share refuses; the
    H200's block-FP8 GEMMs keep theirs (at the floor in most of their rows)."""
    from costdsl.analysis.calibration import MIN_REGIME_SHARE
    hw = load_hardware("nvidia-l40s")
    measured = []
    for name in ("aiconfigurator-gemm-fp8-l40s.csv", "aiconfigurator-gemm-fp8-tp-l40s.csv"):
        path = MEASURED / name
        measured += resolve(read_measurements(path), path, hw, costdsl.load)
    assert len(measured) == 228
    assert fit_efficiency(measured, sms=hw.sms).efficiency.floor_for("fp8_gemm") == 0
    assert hw.efficiency.floor_for("fp8_gemm") == 0
    h200 = load_hardware("nvidia-h200")
    own = h200.efficiency.kinds["fp8_block_gemm"]
    rows = _rows(h200)
    at_floor = sum(1 for m, t in zip(rows, predict(rows, h200.efficiency))
                   if t >= own.floor_s * 0.999 and t < own.floor_s * 1.1)
    assert at_floor / len(rows) > MIN_REGIME_SHARE
