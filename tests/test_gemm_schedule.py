"""A GEMM's occupancy (`tiles`) and its epilogue (`output_bytes`): by hand against the shipped
H200 figures and aiconfigurator's measurements, through the symbolic roofline and the
measurement path alike, and recovered by the fit from rows made with known figures."""
from dataclasses import replace

import pytest
import sympy

import costdsl
from costdsl.analysis.calibration import fit_efficiency
from costdsl.analysis.measurements import Measured, predict, read_measurements, resolve
from costdsl.analysis.roofline import gemm_tiles
from costdsl.hardware import load_hardware

from conftest import ROOT

MEASURED = ROOT / "tests" / "data" / "measured"
H200_HBM, H200_FP8 = 4.8e12, 1979e12   # datasheet: 4.8 TB/s; 3,958 TFLOPS FP8 with sparsity


def _proj(hw, n: int, k: int, seq: int):
    model = costdsl.load(MEASURED / "gemm" / f"gemm-{n}x{k}.arch")
    a = model.analyze(hw, batch=1, seq=seq, w_bits=8, a_bits=8, stages=["prefill"])
    return next(o for o in a.stages["prefill"].ops if o.name == "proj")


def _measured(hw, *names):
    out = []
    for name in names:
        path = MEASURED / name
        out += resolve(read_measurements(path), path, hw, costdsl.load)
    return out


def test_gemm_tiles_count_whole_tiles_below_one_and_grow_smoothly_above():
    """max(1, M / 128) x max(1, N / 128): a decode GEMM of 512 output columns is 4 tiles at any
    batch up to 128 (one tile row), 8 at 256 tokens; symbolic in the batch where it is one."""
    assert gemm_tiles(1, 512) == 4 and gemm_tiles(128, 512) == 4 and gemm_tiles(256, 512) == 8
    assert gemm_tiles(16384, 4096) == 128 * 32
    b = sympy.Symbol("b", positive=True)
    assert gemm_tiles(b, 512).subs(b, 64) == 4 and gemm_tiles(b, 512).subs(b, 512) == 16


def test_the_walk_of_k_and_the_epilogue_by_hand_on_the_h200_under_vllm():
    """The H200's vLLM 0.24.0 FP8 GEMMs ([efficiency.fp8_gemm]: 0.9442 of 4.8 TB/s, 5.16 us a
    call, input_bytes = 12, output_bytes = 4, k_latency = 0.5463 ns; fp8 0.9856 of 1,979
    TFLOPS). A 512 x 16,384 layer at m = 1 streams its 8 MiB of weights in 1.9 us, but each of
    its 4 output tiles walks the 16,384 elements of k: 9.0 us, + launch = 16.0 us
    (aiconfigurator measured 17.5 us; without the walk 7.1 us). Until the shards were fitted
    (tests/data/measured/aiconfigurator-gemm-tp-h200.csv) the file said it by occupancy
    instead: tiles = 24, its 4 tiles streaming 6 times the chip's time, 19.7 us. A 4,096 x 512
    layer at m = 16,384 is compute-bound (35.2 us) but writes 67M outputs after its short loop
    (k = 512): 4 bytes each at the same bandwidth, and quantises its input first: 122 us
    (measured 206 us; without the epilogue 65 us). An 8,192 x 8,192 layer at m = 8,192: 810 us
    (measured 835)."""
    hw = load_hardware("nvidia-h200")
    own, f = hw.efficiency.kinds["fp8_gemm"], hw.efficiency.compute["fp8"]
    assert (own.bandwidth, own.launch_s, own.input_bytes, own.tiles, own.output_bytes, f) == \
        (0.9442, 5.16e-6, 12, None, 4, 0.9856)
    walk = own.k_latency_s
    assert walk == pytest.approx(0.5463e-9)
    stream = own.bandwidth * H200_HBM
    serial = lambda m, n, k: (12 * m * k + 4 * m * n) / stream   # prologue + epilogue

    narrow = _proj(hw, 512, 16384, 1)
    assert narrow.bound == "memory"
    expected = (16384 * 512 + 16384 + 512) / stream + serial(1, 512, 16384) + own.launch_s \
        + walk * 16384
    assert narrow.time_s == pytest.approx(expected, rel=1e-9)
    assert narrow.time_s == pytest.approx(17.47e-6, rel=0.1)       # aiconfigurator: 17.47 us

    short = _proj(hw, 4096, 512, 16384)
    assert short.bound == "compute"
    expected = 2 * 16384 * 4096 * 512 / (f * H200_FP8) + serial(16384, 4096, 512) \
        + own.launch_s + walk * 512
    assert short.time_s == pytest.approx(expected, rel=1e-9)
    assert short.time_s == pytest.approx(206.41e-6, rel=0.45)      # measured 206.41 us

    square = _proj(hw, 8192, 8192, 8192)
    assert square.time_s == pytest.approx(834.8e-6, rel=0.04)      # measured 834.8 us


def test_the_measurement_path_prices_tiles_and_epilogue_as_the_roofline_does():
    """calibrate and validate price a measured row from its pieces (analysis.measurements);
    `analyze` from the symbolic roofline: the same seconds for GEMMs the stretch and the
    epilogue both reach (the H200's FP8 rows of aiconfigurator's table)."""
    hw = load_hardware("nvidia-h200")
    measured = _measured(hw, "aiconfigurator-gemm-fp8-h200.csv")
    priced = predict(measured, hw.efficiency)
    seen = 0
    for m, seconds in zip(measured, priced):
        n, k = (int(x) for x in m.row.model.split("gemm-")[1].split(".")[0].split("x"))
        if (n, m.row.seq) in ((512, 1), (4096, 16384), (8192, 128), (16384, 4096)) and k >= 512:
            assert seconds == pytest.approx(_proj(hw, n, k, m.row.seq).time_s, rel=1e-9)
            seen += 1
    assert seen >= 4


def _without_walks(e):
    """`e` with no family's k_latency or split of k: rows made from it ask the fit for neither
    (the nine shapes alone cannot tell a walk of k from a call's time: tests/test_k_latency.py;
    a split of k is tests/test_split_k.py's)."""
    return replace(e, kinds={k: replace(v, k_latency_s=None, split_k_s=None, split_depth=None)
                             for k, v in e.kinds.items()})


def test_the_fit_recovers_planted_tiles_and_epilogue():
    """Rows priced by known figures (the H200's vLLM figures with the FP8 GEMMs' tiles = 16 and
    output_bytes = 2, not the shipped none and 4, and no walk or split of k) are fitted back to
    those choices and figures: the grid walk finds both, the linear fit the fractions."""
    hw = load_hardware("nvidia-h200")
    e = _without_walks(hw.efficiency)
    planted = replace(e, kinds={**e.kinds, "fp8_gemm": replace(e.kinds["fp8_gemm"], tiles=16.0,
                                                                output_bytes=2.0)})
    measured = _measured(hw, "aiconfigurator-gemm-h200.csv", "aiconfigurator-gemm-fp8-h200.csv",
                         "aiconfigurator-gemm-fp8-tp-h200.csv")
    times = predict(measured, planted)
    made = [Measured(replace(m.row, time_s=float(t)), m.pieces) for m, t in zip(measured, times)]
    fitted = fit_efficiency(made, sms=hw.sms).efficiency
    own = fitted.kinds["fp8_gemm"]
    assert (own.tiles, own.output_bytes, own.input_bytes) == (16, 2, 12)
    assert own.bandwidth == pytest.approx(0.9442, rel=1e-3)
    assert fitted.compute["fp8"] == pytest.approx(0.9856, rel=1e-3)
    assert "linear" not in fitted.kinds    # the bf16 GEMMs were made without either


def test_the_grid_walk_crosses_a_flat_stretch_to_the_valley():
    """`tiles` changes nothing until it passes the fewest tiles of a row's GEMM: an objective
    flat from 1 to 32 and lowest at 64 (by construction) is walked to 64, not left at the
    start; a rise still stops the walk (96 and 128 are not tried)."""
    from costdsl.analysis.calibration import TILES, _descend
    error = {1: 5, 4: 5, 8: 5, 12: 5, 16: 5, 24: 5, 32: 5, 48: 3, 64: 1, 96: 2, 128: 4}
    tried = []
    _descend(lambda x: tried.append(x) or error[x], TILES, 24)
    assert min(tried, key=error.get) == 64
    assert 128 not in tried


def test_the_fit_finds_nvfp4_tiles_beyond_a_flat_stretch():
    """TensorRT-LLM's NVFP4 GEMMs on the B200 (aiconfigurator's table: no GEMM there has fewer
    than 32 tiles, so tiles from 1 to 32 price them alike) made with tiles = 64 (and no walk or
    split of k) are fitted back to 64 and to their fractions: before the walk crossed flat
    stretches it stopped at 32 and kept no tiles (13.7% held out on the real rows)."""
    hw = load_hardware("nvidia-b200").with_stack("trtllm")
    assert hw.efficiency.kinds["fp4_block_gemm"].tiles == 96          # the shipped fit's choice
    e = _without_walks(hw.efficiency)
    planted = replace(e, kinds={**e.kinds, "fp4_block_gemm": replace(
        e.kinds["fp4_block_gemm"], tiles=64.0)})
    measured = _measured(hw, "aiconfigurator-gemm-b200-trtllm.csv",
                         "aiconfigurator-gemm-nvfp4-b200-trtllm.csv")
    times = predict(measured, planted)
    made = [Measured(replace(m.row, time_s=float(t)), m.pieces) for m, t in zip(measured, times)]
    own = fit_efficiency(made, sms=hw.sms).efficiency.kinds["fp4_block_gemm"]
    assert own.tiles == 64
    assert own.bandwidth == pytest.approx(e.kinds["fp4_block_gemm"].bandwidth, rel=1e-3)
    assert own.compute == pytest.approx(e.kinds["fp4_block_gemm"].compute, rel=1e-3)
