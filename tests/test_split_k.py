"""A GEMM family's split of k: `split_k` seconds a call adds where its k per output tile is over
`split_depth` (efficiency.SPLIT_K_NOTE). A decode's narrow GEMM over a deep k splits it among
more blocks and reduces the partial sums after: the B200's TensorRT-LLM table times 512 x
4,096 (n x k) at 5.9 us from m = 1 to 16 and 4,096 x 512, the same 4 MiB, at 2.6 us at m = 16.
By hand against the shipped B200 figures and the package's table, through the symbolic
roofline, the measurement path and the stage's closed form alike; recovered by the fit from
rows made with a known figure; bad input."""
from dataclasses import replace

import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.analysis.crossover import stage_crossover
from costdsl.hardware import load_hardware

from conftest import (BF16, MEASURED, NARROW, SHORT, analyze_gemm_text,
                      assert_rows_priced_as_analyze, gemm_proj, gemm_times, refit,
                      rejected_section)

SHARDS = "aiconfigurator-gemm-tp-b200-trtllm.csv"


def _hw(split: tuple[float, float] | None = ()):
    """The B200 under TensorRT-LLM, its bf16 GEMMs' (split_depth, split_k) replaced where
    given (None: no split)."""
    hw = load_hardware("nvidia-b200").with_stack("trtllm")
    if split == ():
        return hw
    depth, seconds = split if split else (None, None)
    e = hw.efficiency
    linear = replace(e.kinds["linear"], split_depth=depth, split_k_s=seconds)
    return replace(hw, efficiency=replace(e, kinds={**e.kinds, "linear": linear}))


def _proj(hw, shape: str, seq: int = 1):
    return gemm_proj(hw, shape, seq, **BF16)


def test_split_k_by_hand_on_the_b200_under_trtllm():
    """512 x 4,096 at m = 16 has 4 output tiles of 128 x 128 (16 rows count as one tile row):
    1,024 elements of k a tile, over the shipped depth, so the call pays split_k; 4,096 x 512
    has 32 tiles of 16 each, under it, and does not; at m = 16,384 the narrow one's 512 tiles
    have 8 each and it does not either. Priced with the figure the two 4 MiB GEMMs are within
    15% of the package's times at m = 16; without it the narrow one misses by more than 25%."""
    hw = _hw()
    depth, seconds = hw.split_k_for("linear")
    assert 16 < depth < 1024 and 0.5e-6 < seconds < 5e-6
    flat = _hw(None)
    for shape, m, splits in ((NARROW, 16, True), (SHORT, 16, False), (NARROW, 16384, False)):
        added = _proj(hw, shape, m).time_s - _proj(flat, shape, m).time_s
        assert added == pytest.approx(seconds if splits else 0.0, rel=1e-9, abs=1e-15)
    table = gemm_times(SHARDS)
    for shape in (NARROW, SHORT):
        assert _proj(hw, shape, 16).time_s == pytest.approx(table[shape, 16], rel=0.15)
    assert abs(_proj(flat, NARROW, 16).time_s / table[NARROW, 16] - 1) > 0.25


def test_the_measurement_path_and_the_roofline_price_it_alike():
    """`calibrate` and `validate` price a row (measurements.Piece.time) as `analyze` prices
    the op (the symbolic roofline through the compiled numbers), every m of both shapes."""
    assert_rows_priced_as_analyze(_hw(), SHARDS, (NARROW, SHORT), 12, **BF16)


def test_the_stage_closed_form_steps_where_the_tiles_reach_k_over_the_depth():
    """The narrow GEMM's prefill time in seq is a Piecewise whose step is where its split
    stops: 4,096 > depth x 4 max(128, m) / 128 holds below m = 131,072 / depth (2,048 at a
    depth of 64, by hand; the piece ends at 2,047.5, seq being a whole number: m = 2,047
    splits, 2,048 does not). The closed form equals `analyze` either side, and the step is
    the figure."""
    hw = _hw((64.0, 3e-6))
    model = costdsl.load(MEASURED / "gemm" / NARROW)
    stage = model.roofline(hw, "prefill", **BF16, kv_bits=16)
    values = {S.batch: 1, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    closed = stage_crossover(stage, hw, S.seq, values).time
    edge = 131072 / 64 - 0.5
    assert any(isinstance(c, sympy.core.relational.Relational) and float(c.rhs) == edge
               for _, c in closed.args)
    for m in (1, 100, 2047, 2048, 2049, 5000):
        total = model.analyze(hw, batch=1, seq=m, stages=["prefill"], **BF16)
        assert float(closed.subs(S.seq, m)) == pytest.approx(
            total.stages["prefill"].total.time_s, rel=1e-9)
    step = float(closed.subs(S.seq, 2047.499) - closed.subs(S.seq, 2047.501))
    assert step == pytest.approx(3e-6, rel=1e-3)


def test_the_fit_recovers_a_planted_split():
    """Rows of the nine shapes and their shards priced by the B200's TensorRT-LLM figures with
    the bf16 GEMMs' split at 3 us above 48 elements of k a tile (not the shipped one) are
    fitted back to it: the depth chosen from the grid, the seconds fitted."""
    fitted = refit(_hw(), _hw((48.0, 3e-6)).efficiency, "aiconfigurator-gemm-b200-trtllm.csv",
                   SHARDS)
    depth, seconds = fitted.split_k_for("linear")
    assert depth == 48 and seconds == pytest.approx(3e-6, rel=0.02)


@pytest.mark.parametrize("section, message", [
    ("[efficiency.rmsnorm]\nsplit_k = \"1 us\"\nsplit_depth = 64\n",
     "rmsnorm is not a GEMM family"),
    ("[efficiency.linear]\nsplit_k = \"1 us\"\n", "split_k without its pair"),
    ("[efficiency.linear]\nsplit_depth = 64\n", "split_depth without its pair"),
    ("[efficiency.linear]\nsplit_k = \"1 us\"\nsplit_depth = 0\n", "linear.split_depth"),
])
def test_bad_split_k(section, message, tmp_path, capsys):
    assert message in rejected_section(section, tmp_path, capsys)


def test_the_time_model_line_names_it(capsys):
    """`analyze` says which GEMM family splits its k, at what cost and depth."""
    out = analyze_gemm_text(capsys, NARROW, "--hw", "nvidia-b200", "--stack", "trtllm",
                            "--batch", "1", "--seq", "1")
    depth, seconds = load_hardware("nvidia-b200").with_stack("trtllm").split_k_for("linear")
    assert f"linear {seconds * 1e6:.3g} us more where k is over {depth:g} a tile" in out
