"""The efficiency model, its calibration from measurements and its validation.

Expected values: the identity (efficiency 1, launch 0) is the ideal roofline op by op; the
synthetic measurements are generated from the model itself with known parameters; the crossover
with efficiencies is derived by hand from the ideal one; the shipped A100 and H100 files are
judged on public measurements (tests/data/measured/, converted by bench/convert_measured.py from
vidur, aiconfigurator and LLMCompass, sources in each CSV row).
"""
import csv
import json
import sys
from dataclasses import replace

import numpy as np
import pytest

import costdsl
from costdsl.analysis.calibration import fit_efficiency
from costdsl.analysis.validation import cross_validate, errors
from costdsl.analysis.measurements import predict
from costdsl.analysis.latency import stepwise_decode_total
from costdsl.serving.iteration import NO_PROMPTS
from costdsl.analysis.measurements import read_measurements, resolve
from costdsl.analysis.records import Settings
from costdsl.cli import main
from costdsl.hardware import load_hardware
from costdsl.hardware.device import OP_KINDS, ROW_KINDS
from costdsl.hardware.efficiency import Efficiency, KindEfficiency, Tile
from costdsl.language.ops import SIGNATURES

from conftest import DATA, MODELS, ROOT, gemm_rows, judged

MEASURED = DATA / "measured"
A6000 = (ROOT / "hardware" / "nvidia-a6000.toml").read_text()


def _hw_file(tmp_path, efficiency: str, name="eff.toml"):
    path = tmp_path / name
    path.write_text(A6000 + "\n" + efficiency)
    return path


def test_efficiency_one_and_no_launch_is_the_ideal_roofline(tmp_path):
    path = _hw_file(tmp_path, '[efficiency]\nbandwidth = 1.0\nlaunch = "0 us"\n'
                              '[efficiency.compute]\nfp16 = 1.0\n[efficiency.rmsnorm]\n'
                              'bandwidth = 1.0\n')
    m = costdsl.load(MODELS / "mixtral-8x7b.arch", passes=["fuse_all()"])
    a = m.analyze(load_hardware(str(path)), batch=8, seq=1024)
    b = m.analyze("nvidia-a6000", batch=8, seq=1024)
    for stage in ("prefill", "decode"):
        for x, y in zip(a.stages[stage].ops, b.stages[stage].ops):
            assert (x.name, x.bound) == (y.name, y.bound)
            assert x.time_s == pytest.approx(y.time_s, rel=1e-12)


def test_an_op_time_is_the_achieved_roofline_plus_launch(tmp_path):
    """layers.q of Llama-2-7b in decode at batch 1 (memory-bound): bytes / (0.8 B) + 4 us."""
    path = _hw_file(tmp_path, '[efficiency]\nbandwidth = 0.8\nlaunch = "4 us"\n'
                              '[efficiency.compute]\nfp16 = 0.7\n')
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    hw = load_hardware(str(path))
    q = next(o for o in m.analyze(hw, 1, 2048, stages=("decode",)).stages["decode"].ops
             if o.name == "layers.q")
    ideal = next(o for o in m.analyze(hw.ideal(), 1, 2048, stages=("decode",))
                 .stages["decode"].ops if o.name == "layers.q")
    assert q.time_s == pytest.approx(ideal.bytes / (0.8 * 768e9) + 4e-6, rel=1e-12)


def test_crossover_with_efficiencies_by_hand(tmp_path):
    """The decode q projection's batch crossover, 2048 P / (2048 B - P) on the ideal roofline
    (d = 4096: 2 n d^2 B = P (2 d^2 + 4 n d)), becomes 2048 (eta_c P) / (2048 (eta_b B) -
    eta_c P): the roofline with the achieved figures. Launch moves no crossover."""
    path = _hw_file(tmp_path, '[efficiency]\nbandwidth = 0.8\nlaunch = "4 us"\n'
                              '[efficiency.compute]\nfp16 = 0.7\n')
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    q = next(c for c in m.crossover("batch", load_hardware(str(path)), seq=2048).ops
             if c.op == "layers.q")
    P, B = 0.7 * 154.8e12, 0.8 * 768e9   # A6000 datasheet fp16 peak and bandwidth, scaled
    assert q.value == pytest.approx(2048 * P / (2048 * B - P), rel=1e-9)


def test_occupancy_stretches_a_norm_with_fewer_rows_than_sms(tmp_path):
    """One thread block per token row: an RMSNorm of 8 rows on a chip that needs 108 to fill
    takes 108/8 times its streaming time; from 108 rows on (prefill 2 x 512) it streams at the
    achieved bandwidth. By hand: bytes / (0.4 x 768 GB/s) x max(1, 108 / rows) + 3 us."""
    path = _hw_file(tmp_path, '[efficiency.rmsnorm]\nbandwidth = 0.4\nlaunch = "3 us"\n'
                              'rows = 108\n')
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    hw = load_hardware(str(path))
    for stage, batch, seq, rows in (("decode", 8, 2048, 8), ("prefill", 2, 512, 1024)):
        norm = next(o for o in m.analyze(hw, batch, seq, stages=(stage,)).stages[stage].ops
                    if o.name == "layers.attn_norm")
        want = norm.bytes / (0.4 * 768e9) * max(1, 108 / rows) + 3e-6
        assert norm.time_s == pytest.approx(want, rel=1e-12), stage
    # the symbolic time is max(108, rows) / rows: at rows 1024 it is 1 (sympy 1.14 would fold
    # Max(1, 108/(batch*seq)) into 108/(batch*seq))
    op = next(o for o in m.roofline(hw, "prefill").ops if o.node.name == "layers.attn_norm")
    assert float(op.occupancy.subs({costdsl.symbols.batch: 2, costdsl.symbols.seq: 512})) == 1


def test_decode_attention_has_its_own_figures_and_falls_back(tmp_path):
    """[efficiency.decode_attention] prices decode's attention kernel; prefill keeps
    [efficiency.attention]; without a decode table decode uses the attention one."""
    m = costdsl.load(MODELS / "llama-2-7b.arch", passes=["flash_attention()"])

    def attention(hw, stage):
        a = m.analyze(hw, 4, 1024, stages=(stage,)).stages[stage]
        ideal = m.analyze(hw.ideal(), 4, 1024, stages=(stage,)).stages[stage]
        return [(o, i) for o, i in zip(a.ops, ideal.ops) if o.kind == "flash_attention"][0]

    both = load_hardware(str(_hw_file(tmp_path, '[efficiency.attention]\nbandwidth = 0.5\n'
                                                 'compute = 0.5\n[efficiency.decode_attention]\n'
                                                 'bandwidth = 0.8\nlaunch = "10 us"\n', "a.toml")))
    op, ideal = attention(both, "decode")
    assert ideal.bound == "memory"
    assert op.time_s == pytest.approx(ideal.bytes / (0.8 * 768e9) + 10e-6, rel=1e-9)
    op, ideal = attention(both, "prefill")
    assert op.time_s == pytest.approx(ideal.time_s / 0.5, rel=1e-9)   # both sides at 0.5
    only = load_hardware(str(_hw_file(tmp_path, '[efficiency.attention]\nbandwidth = 0.5\n',
                                      "b.toml")))
    op, ideal = attention(only, "decode")
    assert op.time_s == pytest.approx(ideal.bytes / (0.5 * 768e9), rel=1e-9)


def test_a_decode_only_iteration_runs_decode_kernels():
    """The serving iteration of 4 sequences each decoding over 1,024 cached tokens costs the
    decode stage's time on the calibrated A100 (decode's attention figures), and a mixed one
    does not use them (FlashAttention: the kernel the attention figures describe)."""
    m = costdsl.load(MODELS / "llama-2-7b.arch", passes=["flash_attention()"])
    hw = load_hardware("nvidia-a100-80gb")
    assert "decode_attention" in hw.efficiency.kinds
    cost = m.iteration_cost(hw)
    decode = m.analyze(hw, 4, 1024, stages=("decode",)).stages["decode"].total.time_s
    assert cost(4, 4, 4, 4 * 1024, 4 * 1024) == pytest.approx(decode, rel=1e-9)
    assert cost.decode_function is not None and \
        cost.function(4, 4, 4, 4096, 4096, 4, *NO_PROMPTS) != pytest.approx(decode, rel=1e-3)


def test_latency_closed_form_counts_the_launches():
    """The request latency's Piecewise (sum over decode steps) equals the step-by-step sum with
    the calibrated A100 file's efficiencies and launch costs."""
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    hw = load_hardware("nvidia-a100-80gb")
    assert hw.efficiency is not None
    lat = m.latency(hw, batch=4, seq=512, gen=64)
    decode = m.roofline(hw, "decode")
    stepwise = stepwise_decode_total(decode, Settings(4, 512).validate(), 64)
    assert lat.tpot_s * 63 == pytest.approx(stepwise, rel=1e-9)


def test_every_op_kind_may_have_efficiency_figures():
    """The hardware stage keeps its own list of op kinds; it must match the vocabulary, and
    its elementwise kinds (those that may give `rows`) the vector engine's."""
    from costdsl.language.ops import COMPOSITE_KINDS
    assert set(SIGNATURES) - set(COMPOSITE_KINDS) <= OP_KINDS
    vector = {k for k, sig in SIGNATURES.items() if sig.engine == "vector"}
    assert ROW_KINDS == vector | {"fused"}


def test_unfused_attention_takes_the_gemm_figures_not_the_fused_kernels(tmp_path):
    """QK^T and xV unfused are batched GEMMs: with only [efficiency.attention] (the fused
    kernel's figures) in the file they run at the top-level ones, and a table of their own
    ([efficiency.qk_matmul]) applies to them alone."""
    path = _hw_file(tmp_path, '[efficiency]\nbandwidth = 0.8\n[efficiency.attention]\n'
                              'bandwidth = 0.2\noverlap = false\n[efficiency.qk_matmul]\n'
                              'bandwidth = 0.4\n')
    hw = load_hardware(str(path))
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    ops = {o.name: o for o in m.analyze(hw, 1, 2048, stages=("decode",)).stages["decode"].ops}
    ideal = {o.name: o for o in m.analyze(hw.ideal(), 1, 2048, stages=("decode",))
             .stages["decode"].ops}
    for name, fraction in (("layers.attn.qk", 0.4), ("layers.attn.sv", 0.8)):
        assert ideal[name].bound == "memory"
        assert ops[name].time_s == pytest.approx(ideal[name].time_s / fraction, rel=1e-9)


# --- calibration ------------------------------------------------------------------------------

TRUE = Efficiency(bandwidth=0.8, compute={"fp16": 0.7}, launch_s=4e-6,
                  kinds={"rmsnorm": KindEfficiency(bandwidth=0.4, launch_s=3e-6)})


def _synthetic(tmp_path, rows, noise=0.02, seed=1, efficiency=None, hardware="nvidia-a6000",
               model="llama-2-7b"):
    """Measurements generated from the model itself with TRUE, plus relative noise."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "synthetic.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["hardware", "model", "stage", "batch", "seq", "tokens", "w_bits", "a_bits",
                    "kv_bits", "op", "time_s"])
        for stage, batch, seq, op in rows:
            w.writerow([hardware, model, stage, batch, seq, "", 16, 16, 16, op, 1])
    hw = load_hardware(hardware)
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    times = predict(measured, efficiency or TRUE) * (1 + noise *
                                                     rng.standard_normal(len(measured)))
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0]] + [l.rsplit(",", 1)[0] + f",{t:.9g}"
                                            for l, t in zip(lines[1:], times)]) + "\n")
    return path, hw


ROWS = [("prefill", 1, t, op) for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
        for op in ("layers.q", "layers.gate", "layers.down", "layers.attn_norm")]


def test_synthetic_parameters_are_recovered_within_two_percent(tmp_path):
    path, hw = _synthetic(tmp_path, ROWS)
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    fit = fit_efficiency(measured)
    got = {p.name: p for p in fit.parameters}
    assert got["bandwidth"].value == pytest.approx(0.8, rel=0.02)
    assert got["compute.fp16"].value == pytest.approx(0.7, rel=0.02)
    assert got["rmsnorm.bandwidth"].value == pytest.approx(0.4, rel=0.02)
    # A launch of microseconds under 2% noise on kernels of tens of microseconds and more is
    # known to its standard error, not to 2%: the fit must say so honestly.
    for name, true in (("launch", 4e-6), ("rmsnorm.launch", 3e-6)):
        p = got[name]
        assert abs(p.value - true) < 3 * p.stderr and p.stderr < 0.25 * true, (name, p)
    assert all(p.stderr is not None and p.stderr > 0 for p in fit.parameters)


def test_occupancy_is_chosen_where_the_data_show_it(tmp_path):
    """Measurements generated with one thread block per row for RMSNorm (rows = the A6000's 84
    SMs) are fitted with rows = 84 and the bandwidth
    recovered; the same data fitted without an SM count cannot say so and fit worse."""
    true = Efficiency(bandwidth=0.8, compute={"fp16": 0.7}, launch_s=4e-6,
                      kinds={"rmsnorm": KindEfficiency(bandwidth=0.4, launch_s=3e-6, rows=84)})
    path, hw = _synthetic(tmp_path, ROWS, efficiency=true)
    assert hw.sms == 84
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    fit = fit_efficiency(measured, sms=hw.sms)
    got = {p.name: p for p in fit.parameters}
    assert got["rmsnorm.rows"].value == 84 and fit.efficiency.rows_for("rmsnorm") == 84
    assert got["rmsnorm.bandwidth"].value == pytest.approx(0.4, rel=0.03)
    assert fit.efficiency.rows_for("linear") == 0     # GEMMs are never given rows
    blind = fit_efficiency(measured)
    assert "rmsnorm.rows" not in {p.name for p in blind.parameters}
    assert errors(measured, predict(measured, blind.efficiency)).overall_mape > \
        2 * errors(measured, predict(measured, fit.efficiency)).overall_mape


def test_overlap_is_chosen_for_prefill_attention_where_the_data_show_it(tmp_path):
    """Prefill FlashAttention generated with its memory time added to its compute time
    (overlap = false: the query tiles loaded before each block's loop, the outputs written
    after it) is fitted with overlap = false and its compute fraction recovered; decode's
    kernel keeps the max (overlap = true, written out since it would inherit prefill's)."""
    attention = "layers.attn[qk+softmax+sv]"
    true = Efficiency(kinds={
        "attention": KindEfficiency(bandwidth=0.4, compute=0.75, launch_s=10e-6, overlap=False),
        "decode_attention": KindEfficiency(bandwidth=0.8, launch_s=12e-6, overlap=True)})
    rows = [("prefill", b, s, attention) for b in (1, 4, 16) for s in (128, 512, 2048, 8192)]
    rows += [("decode", b, s, attention) for b in (1, 8, 64) for s in (512, 4096)]
    path, hw = _synthetic(tmp_path, rows, efficiency=true, hardware="nvidia-a100-80gb",
                          model=str(MEASURED / "attention" / "attn-32x8.arch"))
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    fit = fit_efficiency(measured, sms=hw.sms)
    got = {p.name: p for p in fit.parameters}
    assert "attention.overlap" in got and "decode_attention.overlap" not in got
    assert not fit.efficiency.overlaps("attention") and fit.efficiency.overlaps("decode_attention")
    assert got["attention.compute"].value == pytest.approx(0.75, rel=0.03)
    assert got["decode_attention.bandwidth"].value == pytest.approx(0.8, rel=0.03)
    p = got["attention.bandwidth"]     # the queries and outputs: a small share of the time
    assert abs(p.value - 0.4) < 3 * p.stderr, p
    max_only = {k: v for k, v in true.kinds.items()}
    max_only["attention"] = KindEfficiency(bandwidth=0.4, compute=0.75, launch_s=10e-6)
    # the same data priced with the max instead: the sum is what generated them
    assert errors(measured, predict(measured, Efficiency(kinds=max_only))).overall_mape > 1
    assert errors(measured, predict(measured, fit.efficiency)).overall_mape < 2


def test_overlap_false_adds_memory_to_compute_by_hand(tmp_path):
    """Llama-2-7b prefill attention (FlashAttention, causal) on the A6000 at batch 1, seq 2048:
    time = compute / 0.5 + bytes / (0.25 B) + 10 us with overlap = false, and the max of the
    two (+ 10 us) without; a value other than true or false is a located error. Compute: the
    QK^T and xV products at the fp16 peak (154.8 TFLOPS) and the softmax's 5 operations per
    score at the fp32 rate (38.7 TFLOPS), 4 d + 5 = 517 operations per score in all."""
    m = costdsl.load(MODELS / "llama-2-7b.arch", passes=["flash_attention()"])
    table = '[efficiency.attention]\nbandwidth = 0.25\ncompute = 0.5\nlaunch = "10 us"\n'
    hw = load_hardware(str(_hw_file(tmp_path, table + "overlap = false\n", "s.toml")))
    ideal = next(o for o in m.analyze(hw.ideal(), 1, 2048, stages=("prefill",))
                 .stages["prefill"].ops if o.kind == "flash_attention")
    scores = ideal.flops / 517
    compute = (512 * scores / 154.8e12 + 5 * scores / 38.7e12) / 0.5
    memory = ideal.bytes / (0.25 * 768e9)
    op = next(o for o in m.analyze(hw, 1, 2048, stages=("prefill",)).stages["prefill"].ops
              if o.kind == "flash_attention")
    assert op.time_s == pytest.approx(compute + memory + 10e-6, rel=1e-9)
    overlapped = load_hardware(str(_hw_file(tmp_path, table, "o.toml")))
    op = next(o for o in m.analyze(overlapped, 1, 2048, stages=("prefill",)).stages["prefill"]
              .ops if o.kind == "flash_attention")
    assert op.time_s == pytest.approx(max(compute, memory) + 10e-6, rel=1e-9)
    bad = _hw_file(tmp_path, table + 'overlap = "no"\n', "bad.toml")
    assert main(["analyze", "llama-2-7b", "--hw", str(bad)]) == 2


TILE = '[efficiency]\nmeasured_as = "nvidia-a6000"\n[efficiency.tile]\nm = 16\nn = 128\n'


def test_a_tile_model_rounds_a_gemm_up_to_whole_waves_by_hand(tmp_path):
    """Llama-2-7b's q projection in prefill, batch 1 x 200 tokens, on the A6000 (84 SMs) with
    128 x 128 tiles: ceil(200/128) x ceil(4096/128) = 64 tiles, one wave of 84 blocks, so its
    matrix work counts 84 x 128 x 128 / (200 x 4096) = 1.68 times: 2 x 200 x 4096^2 x 1.68 /
    154.8 TFLOPS = 72.8 us, compute-bound. Without the tile it is memory-bound: (4096^2 +
    2 x 200 x 4096) x 2 bytes / 768 GB/s = 48.0 us."""
    hw = load_hardware(str(_hw_file(tmp_path, "[efficiency]\n[efficiency.tile]\nm = 128\n"
                                              "n = 128\n")))
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    q = next(o for o in m.analyze(hw, 1, 200, stages=("prefill",)).stages["prefill"].ops
             if o.name == "layers.q")
    assert q.bound == "compute"
    assert q.time_s == pytest.approx(2 * 200 * 4096**2 * 1.68 / 154.8e12, rel=1e-12)
    assert q.flops == 2 * 200 * 4096**2           # operations are counted as they are
    ideal = next(o for o in m.analyze(hw.ideal(), 1, 200, stages=("prefill",))
                 .stages["prefill"].ops if o.name == "layers.q")
    assert ideal.bound == "memory"
    assert ideal.time_s == pytest.approx((4096**2 + 2 * 200 * 4096) * 2 / 768e9, rel=1e-12)


def test_a_tile_model_turns_a_crossover_into_a_step(tmp_path):
    """Decode q projection of Llama-2-7b at seq 1024 on the A6000 with 16 x 128 tiles: its
    compute time is a staircase, waves x 2 x 4096 x 84 x 16 x 128 / P (ceil(ceil(b/16) x 32 /
    84) waves; 9.10 us each), its memory time (4096^2 x 2 + 16384 b) / B. Five waves (b =
    161..208) stay below the memory time (45.5 < 47.1 us at 161); the sixth starts at b = 209
    (54.6 us > 48.1): the op turns compute-bound there, a step, where the smooth model's root
    is 2048 P / (2048 B - P) = 223.6."""
    hw = load_hardware(str(_hw_file(tmp_path, TILE)))
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    q = next(c for c in m.crossover("batch", hw, seq=1024).ops if c.op == "layers.q")
    P, B = 154.8e12, 768e9
    assert q.unquantised == pytest.approx(2048 * P / (2048 * B - P), rel=1e-9)
    assert q.value == 209 and q.direction == "memory->compute"
    bounds = {b: next(o.bound for o in m.analyze(hw, b, 1024, stages=("decode",))
                      .stages["decode"].ops if o.name == "layers.q") for b in (208, 209)}
    assert bounds == {208: "memory", 209: "compute"}
    answer = m.crossover("batch", hw, seq=1024)
    assert "wave quantisation" in answer.summary.note


@pytest.mark.parametrize("section, message", [
    ("[efficiency.tile]\nm = 128\n", "needs n"),
    ("[efficiency.tile]\nm = 128\nn = 0\n", "tile.n = 0"),
    ("[efficiency.tile]\nm = 128\nn = 128\nk = 32\n", "unknown key 'k'"),
    ("[efficiency.tile]\nm = 1.5\nn = 128\n", "tile.m = 1.5")])
def test_bad_tile_sections(section, message, tmp_path, capsys):
    path = _hw_file(tmp_path, "[efficiency]\n" + section)
    assert main(["analyze", "llama-2-7b", "--hw", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_calibrating_under_a_tile_model_keeps_it(tmp_path, capsys):
    """Measurements generated with 16 x 128 tiles: a hardware file with that tile is fitted
    under it (the fractions recovered) and the written file carries the tile."""
    true = replace(TRUE, tile=Tile(16, 128))
    path, _ = _synthetic(tmp_path, ROWS, efficiency=true)
    out = tmp_path / "cal.toml"
    assert main(["calibrate", str(path), "--hw", str(_hw_file(tmp_path, TILE, "t.toml")),
                 "-o", str(out)]) == 0
    e = load_hardware(str(out)).efficiency
    assert e.tile == Tile(16, 128)
    assert e.compute["fp16"] == pytest.approx(0.7, rel=0.02)
    assert e.bandwidth == pytest.approx(0.8, rel=0.02)


def test_without_noise_the_fit_is_exact(tmp_path):
    path, hw = _synthetic(tmp_path, ROWS, noise=0.0)
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    fit = fit_efficiency(measured)
    assert errors(measured, predict(measured, fit.efficiency)).overall_max < 1e-6


def test_a_collective_row_is_priced_by_its_link_by_hand():
    """A measured all-reduce is predicted by its link, not as a kernel of no bytes (it used to
    predict 0 s). GPT-3 175B at TP 4, prefill of 8 x 2048 tokens: S = 8 x 2048 x 12288 x 2
    bytes, above every switch size of vLLM's all-reduce on the DGX A100 file, so its NCCL
    ring entry prices it: latency + 2 (n - 1) / n x S / (efficiency x B), with the file's
    [all_reduce.vllm.4] ring figures (62.16 us, 0.726 of 300 GB/s). Without the stack's
    table the link's own ring: 2 (n - 1) alpha + 2 (n - 1) / n x S / B, alpha = 2.00 us and
    B = 0.591 x 300 GB/s (fitted to NCCL, the file's [link]); ideal, B = 300 GB/s (the
    datasheet). LLMCompass measured 2.89 ms."""
    hw = load_hardware("nvidia-dgx-a100")
    measured = resolve(read_measurements(MEASURED / "llmcompass-a100.csv"),
                       MEASURED / "llmcompass-a100.csv", hw, costdsl.load)
    row = next(m for m in measured if m.row.op == "layers.proj.all_reduce")
    S, n = 8 * 2048 * 12288 * 2, 4
    assert row.predict(hw.efficiency) == pytest.approx(
        62.16e-6 + 2 * (n - 1) / n * S / (0.726 * 300e9), rel=1e-6)
    assert row.predict(None) == pytest.approx(2 * (n - 1) / n * S / 300e9, rel=0.01)
    assert row.kind == "all_reduce" and abs(row.predict(hw.efficiency) / row.row.time_s - 1) < 0.05
    link_only = replace(hw, all_reduces={})
    measured = resolve(read_measurements(MEASURED / "llmcompass-a100.csv"),
                       MEASURED / "llmcompass-a100.csv", link_only, costdsl.load)
    row = next(m for m in measured if m.row.op == "layers.proj.all_reduce")
    assert row.predict(link_only.efficiency) == pytest.approx(
        2 * (n - 1) * 2.00e-6 + 2 * (n - 1) / n * S / (0.591 * 300e9), rel=1e-6)


def test_collectives_in_a_step_are_fixed_time_in_the_fit(tmp_path):
    """Whole prefill steps of Llama-2-7B at TP 2 over PCIe (nvidia-a6000-4x), generated from
    the model with known efficiencies and no noise: each step holds 65 collectives priced by
    the link. The fit subtracts their time instead of fitting kernel figures to it, so the
    parameters come back exactly and no `all_reduce` parameter is invented."""
    (tmp_path / "tp2.arch").write_text('import "llama-2-7b.arch"\nmodel "tp2" extends '
                                       '"Llama-2-7b" {\n  passes {\n    tensor_parallel(n=2)\n'
                                       '  }\n}\n')
    rows = ROWS + [("prefill", 1, t, "total") for t in (1, 16, 256, 4096)] + \
        [("prefill", 1, t, "layers.o.all_reduce") for t in (1, 4096)]
    path, hw = _synthetic(tmp_path, rows, noise=0.0, hardware="nvidia-a6000-4x",
                          model="tp2.arch")
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    total = next(m for m in measured if m.row.op == "total" and m.row.seq == 4096)
    links = [p for p in total.pieces if p.collective]
    assert sum(p.count for p in links) == 65   # 2 all-reduces a layer, the logits' all-gather
    assert sum(p.time(TRUE) for p in links) > 0.05 * total.predict(TRUE)
    fit = fit_efficiency(measured)
    assert not any("all_reduce" in p.name or "all_gather" in p.name for p in fit.parameters)
    assert not any("all_reduce" in name for name in fit.unidentified)
    assert errors(measured, predict(measured, fit.efficiency)).overall_max < 1e-6


def test_an_unidentifiable_parameter_is_said_not_invented(tmp_path, capsys):
    """Decode at batch 1 and 2: every GEMM is memory-bound, so nothing constrains fp16 compute."""
    rows = [("decode", b, s, op) for b in (1, 2) for s in (128, 512, 2048, 8192)
            for op in ("layers.q", "layers.down", "layers.gate")]
    path, hw = _synthetic(tmp_path, rows)
    out = tmp_path / "cal.toml"
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "compute.fp16" in text and "not identifiable" in text
    written = out.read_text()
    assert "[efficiency]" in written and "fp16 = 0." not in written.split("[efficiency]")[1]
    assert load_hardware(str(out)).efficiency.compute == {}  # the datasheet figure stays


def test_a_kind_measured_once_is_not_fitted_from_one_row(tmp_path, capsys):
    """One SwiGLU row beside the synthetic rows: its own bandwidth and launch cannot both come
    from one time (any split fits it; the fit used to put the bandwidth at its bound, 4x the
    datasheet, and the rest in the launch, and predicted held-out rows 59x too slow). It is
    said, left out, and priced by the top-level figures; the other figures are exact."""
    path, hw = _synthetic(tmp_path, ROWS + [("prefill", 1, 512, "layers.act")], noise=0.0)
    measured = resolve(read_measurements(path), path, hw, costdsl.load)
    fit = fit_efficiency(measured)
    assert fit.underdetermined == {"swiglu": 1} and fit.rows == len(ROWS)
    assert not any(p.name.startswith("swiglu.") for p in fit.parameters)
    assert "swiglu" not in fit.efficiency.kinds
    got = {p.name: p.value for p in fit.parameters}
    assert got["bandwidth"] == pytest.approx(0.8, rel=1e-6)
    assert got["rmsnorm.bandwidth"] == pytest.approx(0.4, rel=1e-6)
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["underdetermined"] == {"swiglu": 1}
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000"]) == 0
    assert "swiglu.*" in capsys.readouterr().out


def test_calibrated_file_round_trips(tmp_path, capsys):
    path, _ = _synthetic(tmp_path, ROWS)
    out = tmp_path / "cal.toml"
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000", "-o", str(out),
                 "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    hw = load_hardware(str(out))
    assert hw.efficiency.bandwidth == pytest.approx(report["parameters"]["bandwidth"]["value"],
                                                    rel=1e-3)
    assert report["errors"]["calibrated"]["mape_percent"] < 3
    assert main(["validate", str(path), "--hw", str(out), "--folds", "4"]) == 0
    text = capsys.readouterr().out
    assert "calibrated" in text and "4-fold held-out" in text


# --- the shipped calibration, judged on held-out public measurements ---------------------------

A100_FILES = ["vidur-linear-a100.csv", "aiconfigurator-gemm-a100.csv",
              "aiconfigurator-attention-a100.csv"]
H100_FILES = ["vidur-linear-h100.csv", "aiconfigurator-gemm-h100.csv",
              "aiconfigurator-attention-h100.csv"]


def _shipped(key, files):
    hw = load_hardware(key)
    measured = []
    for name in files:
        measured += resolve(read_measurements(MEASURED / name), MEASURED / name, hw,
                            costdsl.load)
    return hw, measured


@pytest.fixture(scope="module")
def a100():
    return _shipped("nvidia-a100-80gb", A100_FILES)


@pytest.fixture(scope="module")
def h100():
    return _shipped("nvidia-h100-sxm", H100_FILES)


@pytest.mark.parametrize("key, chip, limits", [
    # measured (all rows, bf16 GEMMs, FP8 GEMMs at the full shapes and the shards tensor
    # parallelism at 4 and 8 makes; 5-fold held out for the H200 and B200, the fit's own rows
    # for the rest; the test judges all on their own rows unless COSTDSL_HELD_OUT=all): H200 7.9%, 5.7%, 8.5%; B200 10.3%, 6.1%, 18.3% (the B200's vLLM FP8 GEMMs
    # vary by shape and from one m to the next, 18 to 52 us at n = k = 8,192 and m <= 256, and
    # at m = 1 take 1.5 to 3x their time at m = 2: more than any one figure says); B300 9.5%,
    # 6.4%, 14.9%; GB200 9.8%, 9.6%, 15.4%; GB300 9.9%, 6.2%, 15.3% (before the FP8 GEMMs'
    # tiles and epilogue, and the Blackwell decode rows read from the L2 were left out: 12.2 to
    # 12.9% on all rows, FP8 GEMMs 13.6% to 24.8%)
    # With the bf16 shards (gemm-tp) and the GEMMs' walk of k (k_latency), the bf16 column is
    # the nine shapes and their shards: H200 7.4%, 7.1%, 8.2%; B200 8.9%, 8.0%, 15.0%; B300
    # 7.2%, 8.8%, 6.7%; GB200 7.1%, 10.0%, 7.1%; GB300 6.8%, 7.5%, 6.5%.
    ("nvidia-h200", "h200", (8.5, 7.5, 9.5)), ("nvidia-b200", "b200", (11, 8.5, 19.5)),
    ("nvidia-b300", "b300", (10.5, 9.5, 16)), ("nvidia-gb200", "gb200", (10.5, 10.5, 16.5)),
    ("nvidia-gb300", "gb300", (10.5, 8, 16.5))])
def test_h200_and_b200_are_calibrated_from_aiconfigurators_vllm_kernels(key, chip, limits):
    """The H200, B200, B300, GB200 and GB300 files' [efficiency] is the fit of aiconfigurator-core 0.12.0's vLLM
    0.24.0 tables (bench/convert_aiconfigurator.py): 135 bf16 GEMMs, 315 FP8 GEMMs (135 at the
    full shapes, 180 at their tensor-parallel shards; with their own small-m figures and input
    quantisation, [efficiency.fp8_gemm]), FP8 128 x 128-block GEMMs (90 on the H200,
    135 on the B200, with NVFP4's 135 there) and 694 attention kernels each (430 on the
    Blackwell chips: their decode rows read from the L2 left out). The file is that
    fit (refitting gives its figures), and it predicts rows it did not see within `limits` and over 4x better than the ideal roofline (the later Blackwell files: on their own rows unless
    COSTDSL_HELD_OUT=all, conftest.judged)."""
    hw, measured = _shipped(key, [f"aiconfigurator-gemm-{chip}.csv",
                                  f"aiconfigurator-gemm-tp-{chip}.csv",
                                  f"aiconfigurator-gemm-fp8-{chip}.csv",
                                  f"aiconfigurator-gemm-fp8-tp-{chip}.csv",
                                  f"aiconfigurator-gemm-fp8block-{chip}.csv",
                                  f"aiconfigurator-attention-{chip}.csv"]
                            + ([f"aiconfigurator-gemm-nvfp4-{chip}.csv"]
                               if chip != "h200" else []))
    assert len(measured) == {"h200": 1414}.get(chip, 1330)
    fitted = fit_efficiency(measured, sms=hw.sms).efficiency
    assert hw.efficiency.bandwidth == pytest.approx(fitted.bandwidth, abs=6e-5)
    for ctype in ("fp16", "fp8"):
        assert hw.efficiency.compute[ctype] == pytest.approx(fitted.compute[ctype], abs=6e-5)
    assert hw.efficiency.kinds["fp8_gemm"].launch_s == pytest.approx(
        fitted.kinds["fp8_gemm"].launch_s, abs=6e-9)
    assert hw.efficiency.kinds["decode_attention"].bandwidth == pytest.approx(
        fitted.kinds["decode_attention"].bandwidth, abs=6e-5)
    table, mape = judged(measured, hw, chip)
    rows = gemm_rows(measured)
    assert table.overall_mape < limits[0] and mape(rows["bf16"]) < limits[1] and \
        mape(rows["fp8"]) < limits[2]
    assert table.overall_mape < errors(measured, predict(measured, None)).overall_mape / 4


def test_the_ideal_roofline_is_optimistic_on_real_kernels(a100):
    """All but a handful of measured kernels are slower than the ideal roofline predicts (one
    residual add at 1,024 tokens is timed at 12 us, vidur's times being rounded to the
    microsecond, against 12.3 us ideal); the median kernel is over 1.3x slower."""
    hw, measured = a100
    ideal = predict(measured, None)
    times = np.array([m.row.time_s for m in measured])
    assert np.mean(ideal < times) > 0.99
    assert np.median(times / ideal) > 1.3


@pytest.mark.parametrize("shipped, limit", [("a100", 10), ("h100", 9)])
def test_held_out_error_of_the_calibration(shipped, limit, request):
    """5-fold cross-validation on 717 A100 and 1,011 H100 kernels: figures reported in the
    README (9.3% and 8.5% when measured; the H100 9.2% before its FP8-cache decode kernel
    had figures of its own). The GEMMs (linear, fused q+k+v and gate+up: 230 and
    239 rows) within 8% held out; all kinds within `limit`; at least 4x better than the ideal
    roofline; prefill's attention (overlap = false, re-reads from the L2) within 10%."""
    hw, measured = request.getfixturevalue(shipped)
    held, _ = cross_validate(measured, 5, sms=hw.sms)
    table = errors(measured, held)
    gemm = [i for i, m in enumerate(measured) if m.kind == "linear" or (
        m.kind == "fused" and ("q+k+v" in m.row.op or "gate+up" in m.row.op))]
    gemm_mape = 100 * np.mean([abs(held[i] / measured[i].row.time_s - 1) for i in gemm])
    # measured: 8.02% (A100) and 6.7% (H100); the A100's GEMMs sit at the 8% target, not under
    # it: vidur's and aiconfigurator's stacks differ by about 20% at large m (one compute
    # fraction for both)
    assert len(gemm) in (230, 239) and gemm_mape < (8.1 if shipped == "a100" else 7)
    prefill = [i for i, m in enumerate(measured)
               if m.kind == "flash_attention" and m.row.stage == "prefill"]
    assert len(prefill) == 46
    assert 100 * np.mean([abs(held[i] / measured[i].row.time_s - 1) for i in prefill]) < 10
    assert table.overall_mape < limit
    assert table.overall_mape < errors(measured, predict(measured, None)).overall_mape / 4
    # a layer's ten kernels at one token count (vidur: 2 models x 13 sizes), summed: the
    # error a step inherits, where microsecond kernels weigh what they cost
    mean, _, configurations = table.summed
    assert configurations == 26 and mean < 8


@pytest.mark.parametrize("system, csv_name, per_op, summed", [
    ("nvidia-dgx-a100", "vidur-linear-tp-a100.csv", 13, 8),
    ("nvidia-dgx-h100", "vidur-linear-tp-h100.csv", 15.5, 8)])
def test_calibration_holds_on_tensor_parallel_shapes_it_never_saw(system, csv_name, per_op,
                                                                   summed):
    """vidur's kernels of one GPU at tensor parallelism 2, 4 and 8 (780 rows per chip; the
    calibration saw TP 1 only), through the tensor_parallel pass on the DGX system files, which
    carry their device's efficiencies: per op 11.9% (A100) and 14.2% (H100) when measured, a
    layer's kernels summed 6.6% and 6.2%."""
    hw, measured = _shipped(system, [csv_name])
    table = errors(measured, predict(measured, hw.efficiency))
    assert table.overall_mape < per_op
    assert table.summed[2] == 78 and table.summed[0] < summed
    assert table.overall_mape < errors(measured, predict(measured, None)).overall_mape / 4


def test_a_whole_decode_layer_within_ten_percent():
    """Llama-2-70B's decoder layer on one of two A100s in decode, batch 1-128 x cache 32-4096
    (56 configurations), assembled from vidur's TP 2 kernels and its decode attention kernel:
    the layer's summed kernel time within 10% on average (6.6% when measured; the ideal
    roofline: 31%), through tensor_parallel and FlashAttention on the DGX A100 file."""
    hw, measured = _shipped("nvidia-dgx-a100", ["vidur-decode-layer-a100.csv"])
    table = errors(measured, predict(measured, hw.efficiency))
    mean, worst, configurations = table.summed
    assert configurations == 56 and mean < 8 and worst < 25
    assert errors(measured, predict(measured, None)).summed[0] > 25


def test_an_older_attention_kernel_is_slower_than_the_shipped_stack(a100):
    """The shipped A100 attention figures are those of aiconfigurator's vLLM 0.14 kernels.
    vidur's FlashAttention profile (an older vLLM) of the same kind of geometry runs slower:
    its prefill chunks take over 1.2x the calibrated prediction at the median, its decode is
    within 20% on average; the ideal roofline is worse on both."""
    hw, _ = a100
    _, vidur = _shipped("nvidia-a100-80gb", ["vidur-attention-a100.csv"])
    predicted, ideal = predict(vidur, hw.efficiency), predict(vidur, None)
    times = np.array([m.row.time_s for m in vidur])
    chunks = np.array([m.row.stage != "decode" for m in vidur])
    assert np.median(times[chunks] / predicted[chunks]) > 1.2
    decode = errors([m for m, c in zip(vidur, chunks) if not c], predicted[~chunks])
    assert decode.overall_mape < 20
    assert errors(vidur, predicted).overall_mape < errors(vidur, ideal).overall_mape / 2


def test_a_third_stack_a_gpt3_layer_at_tp4_and_big_gemms():
    """LLMCompass's PyTorch timings on an A100 80GB (llmcompass-a100.csv: wall clock, a stack
    the shipped file was not fitted on), through the DGX A100 file. A prefill layer of GPT-3
    175B on one of four GPUs (8 x 2048 tokens: 10 kernels and 2 measured all-reduces) summed:
    10.3% over when measured (the ideal roofline: 16% under). Its GEMMs of a teraflop and more
    run 14 to 20% faster than the file predicts: they reach 0.89 to 0.94 of peak, the file's fp16
    fraction is 0.78, fitted on vidur's GEMMs (0.71 alone) and aiconfigurator's (0.85 alone).
    Its small kernels carry the wall clock's tens of microseconds: not judged here."""
    hw = load_hardware("nvidia-dgx-a100")
    measured = resolve(read_measurements(MEASURED / "llmcompass-a100.csv"),
                       MEASURED / "llmcompass-a100.csv", hw, costdsl.load)
    predicted, ideal = predict(measured, hw.efficiency), predict(measured, None)
    times = np.array([m.row.time_s for m in measured])
    layer = [i for i, m in enumerate(measured) if m.row.model.startswith("gpt-3")
             and m.row.stage == "prefill"]
    assert len(layer) == 12
    ratio = predicted[layer].sum() / times[layer].sum()
    assert 1.0 < ratio < 1.12 and 0.8 < ideal[layer].sum() / times[layer].sum() < 0.9
    big = [i for i, m in enumerate(measured) if m.row.op == "proj" and
           m.pieces[0].matrix_s * hw.peak["fp16"] >= 1e12]
    assert len(big) == 7
    assert np.all((predicted[big] / times[big] > 1.13) & (predicted[big] / times[big] < 1.21))
    assert 0.885 < np.min(ideal[big] / times[big]) and np.max(ideal[big] / times[big]) < 0.95


def test_summed_error_by_hand():
    """Two configurations of two ops each, and a lone op: measured 1+3 and 2+2 s, predicted
    2+2 (sum exact) and 3+3 (6 vs 4: 50%); the lone op is not a configuration."""
    from costdsl.analysis.measurements import Measured, Piece, Row
    piece = Piece("linear", "linear", "matrix", "fp16", "fp32", 1.0, 0.0, 0.0, 1.0)

    def row(batch, op, t):
        return Measured(Row("h", "m", "decode", batch, 1, None, (16, 16, 16), op, t, "", 0),
                        (piece,))
    rows = [row(1, "a", 1.0), row(1, "b", 3.0), row(2, "a", 2.0), row(2, "b", 2.0),
            row(3, "a", 1.0)]
    table = errors(rows, np.array([2.0, 2.0, 3.0, 3.0, 1.0]))
    assert table.summed == pytest.approx((25.0, 50.0, 2))


@pytest.mark.parametrize("shipped", ["a100", "h100"])
def test_shipped_files_carry_the_fit(shipped, request):
    hw, measured = request.getfixturevalue(shipped)
    fit = fit_efficiency(measured, sms=hw.sms)
    e = hw.efficiency
    assert e.bandwidth == pytest.approx(fit.efficiency.bandwidth, rel=1e-3)
    assert e.compute["fp16"] == pytest.approx(fit.efficiency.compute["fp16"], rel=1e-3)
    for kind in ("rmsnorm", "rope", "swiglu"):   # one block per token row: the SM count
        assert e.rows_for(kind) == fit.efficiency.rows_for(kind) == hw.sms
    assert e.rows_for("add") == 0                # a flat elementwise kernel
    for family in ("attention", "decode_attention"):
        assert e.bandwidth_for(family) == pytest.approx(fit.efficiency.bandwidth_for(family),
                                                        rel=1e-3)
        assert e.launch_for(family) == pytest.approx(fit.efficiency.launch_for(family),
                                                     rel=1e-3)


# --- bad input ---------------------------------------------------------------------------------

HEADER = "hardware,model,stage,batch,seq,tokens,w_bits,a_bits,kv_bits,op,time_s\n"


@pytest.mark.parametrize("body, message", [
    ("nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.qq,1e-4\n"
     "nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.zz,1e-4\n",
     "unknown op name(s) for Llama-2-7b (decode): layers.qq, layers.zz"),
    ("nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.q,0\n", "must be positive"),
    ("nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.q,-1\n", "must be positive"),
    ("nvidia-h100-sxm,llama-2-7b,decode,1,128,,16,16,16,layers.q,1e-4\n",
     "but the hardware given is 'nvidia-a6000'"),
    ("nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.q,1e-4\n", "cannot fit"),
    ("nvidia-a6000,llama-2-7b,draft,1,128,,16,16,16,layers.q,1e-4\n", "expected one of"),
    ("nvidia-a6000,llama-2-7b,decode,1,128,5,16,16,16,layers.q,1e-4\n", "contradicts the decode stage"),
])
def test_bad_measurements(body, message, tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + body)
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000"]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_too_few_rows_says_how_many(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.q,1e-4\n")
    main(["calibrate", str(path), "--hw", "nvidia-a6000"])
    assert "give at least 3 rows" in capsys.readouterr().err
    # a lone norm is also a kind with fewer rows than figures: still said as too few rows
    path.write_text(HEADER + "nvidia-a6000,llama-2-7b,prefill,1,64,,16,16,16,layers.attn_norm,"
                             "5e-6\n")
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000"]) == 2
    assert "1 measured rows cannot fit 2 parameters" in capsys.readouterr().err


def test_missing_columns(tmp_path, capsys):
    path = tmp_path / "m.csv"
    path.write_text("hardware,model,op\nx,y,z\n")
    assert main(["validate", str(path), "--hw", "nvidia-a6000"]) == 2
    assert "m.csv:1: measurement error: missing column(s) stage" in capsys.readouterr().err


@pytest.mark.parametrize("section, message", [
    ("[efficiency]\nbandwidth = 0\n", "expected a fraction in (0, 4]"),
    ("[efficiency]\nbandwidth = 9\n", "expected a fraction"),
    ('[efficiency]\nlaunch = "4 parsecs"\n', "expected a duration"),
    ("[efficiency]\nspeed = 1\n", "unknown key 'speed' in [efficiency]"),
    ("[efficiency.compute]\nfp99 = 0.5\n", "which [peak] does not list"),
    ("[efficiency.rmsnorm]\nwidth = 0.5\n", "unknown key 'width' in [efficiency.rmsnorm]"),
    ("[efficiency.rmsnorm]\nrows = 0\n", "token rows (1 to 1e6) that fill the chip"),
    ("[efficiency.rmsnorm]\nrows = true\n", "rmsnorm.rows = True"),
    ("[efficiency.linear]\nrows = 108\n", "linear is neither"),
    ("[efficiency.attention]\nrows = 108\n", "attention is neither"),
    ("[efficiency.rmsnorm]\ntiles = 24\n", "rmsnorm is not a GEMM family"),
    ("[efficiency.expert_linear]\noutput_bytes = 2\n", "expert_linear is not a GEMM family"),
    ("[efficiency.fp8_gemm]\ntiles = 0\n", "GEMM output tiles of 128 x 128 (1 to 1e6)"),
    ("[efficiency.linear]\noutput_bytes = -1\n", "bytes per output element (0 to 64)"),
])
def test_bad_efficiency_sections(section, message, tmp_path, capsys):
    path = _hw_file(tmp_path, section)
    assert main(["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", str(path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "eff.toml:" in err, err


def test_ideal_flag_ignores_the_efficiency(capsys):
    argv = ["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-h100-sxm", "--format",
            "json", "--stage", "decode"]
    main(argv)
    calibrated = json.loads(capsys.readouterr().out)
    main(argv + ["--ideal"])
    ideal = json.loads(capsys.readouterr().out)
    assert calibrated["hardware"]["time_model"] == "efficiency"
    assert ideal["hardware"]["time_model"] == "ideal" and ideal["hardware"]["efficiency"] is None
    assert calibrated["stages"]["decode"]["total"]["time_s"] > \
        1.1 * ideal["stages"]["decode"]["total"]["time_s"]


def test_measure_script_takes_its_shapes_from_the_graph():
    """bench/measure.py needs a GPU to time kernels; the shapes it times come from the graph
    and are checked here by hand: Llama-2-7b decode, batch 4 over 1,024 cached tokens."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("measure", ROOT / "bench" / "measure.py")
    measure = importlib.util.module_from_spec(spec)
    sys.modules["measure"] = measure  # dataclasses look their module up while being built
    spec.loader.exec_module(measure)  # imports no torch: only main() does
    model = costdsl.load(MODELS / "llama-2-7b.arch", passes=["flash_attention()"])
    specs, skipped = measure.kernel_specs(model, "decode", 4, 1024)
    by = {s.op: s for s in specs}
    assert by["layers.q"].shape == {"m": 4, "k": 4096, "n": 4096}
    assert by["layers.down"].shape == {"m": 4, "k": 11008, "n": 4096}
    assert by["lm_head"].shape == {"m": 4, "k": 4096, "n": 32000}
    attention = by["layers.attn[qk+softmax+sv]"].shape
    assert (attention["heads"], attention["kv_heads"], attention["head_dim"],
            attention["q_len"], attention["kv_len"]) == (32, 32, 128, 1, 1025)
    assert by["layers.act"].shape == {"rows": 4, "width": 11008}
    assert skipped == []
    prefill, _ = measure.kernel_specs(model, "prefill", 2, 512)
    assert {s.op: s for s in prefill}["lm_head"].shape["m"] == 2  # tokens=last


def test_repeated_rows_are_one_equation(tmp_path, capsys):
    """Found by the fuzz suite: six timings of one embedding at one size and one activation row
    made a fit whose bound assignment oscillated, and ten identical rows drove the bandwidth to
    its 4.0 cap (issue 25). Repeats of a configuration are one equation: two distinct rows
    cannot fit the four figures (embedding and act bandwidth and launch), and it is said."""
    rows = ["nvidia-a100-80gb,llama-2-7b-vidur.arch,prefill,1,1,,16,16,16,embed,3e-06"] * 6 + \
        ["nvidia-a100-80gb,llama-2-7b-vidur.arch,prefill,1,2,,16,5,16,layers.act,7e-06"]
    path = tmp_path / "m.csv"
    path.write_text(HEADER + "\n".join(rows) + "\n")
    (tmp_path / "llama-2-7b-vidur.arch").write_text(
        (MEASURED / "llama-2-7b-vidur.arch").read_text())
    assert main(["calibrate", str(path), "--hw", "nvidia-a100-80gb"]) == 2
    assert "7 rows, 2 distinct" in capsys.readouterr().err
    path.write_text(HEADER + "nvidia-a6000,llama-2-7b,decode,1,128,,16,16,16,layers.q,5e-5\n"
                    * 10)
    assert main(["calibrate", str(path), "--hw", "nvidia-a6000"]) == 2
    assert "10 rows, 1 distinct" in capsys.readouterr().err


def test_a_whole_measurement_file_can_be_held_out(capsys):
    """--group file: each CSV predicted by a fit on the others (here the H100's GEMM sweep by a
    fit on vidur's layers and the attention kernels, and so on)."""
    files = [str(MEASURED / name) for name in H100_FILES]
    assert main(["validate", *files, "--hw", "nvidia-h100-sxm", "--group", "file",
                 "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["folds"] == 3 and out["group"] == "file"
    held = out["models"]["by file held-out"]
    # the GEMM sweep, never seen, is still predicted within 10%; the kinds only one file
    # measures (attention) have nothing to learn from and fall back to the datasheet
    assert held["by_kind"]["linear"]["mape_percent"] < 10
    assert held["by_kind"]["flash_attention"]["mape_percent"] > \
        out["models"]["calibrated"]["by_kind"]["flash_attention"]["mape_percent"]


def test_a_system_file_is_calibrated_and_loads_back(tmp_path, capsys):
    """Kernels measured under tensor parallelism need a system to evaluate on (tp=2 needs two
    devices): calibrate writes the system file with its own [efficiency], which replaces its
    device's and loads back, the devices' count and links kept."""
    out = tmp_path / "dgx-calibrated.toml"
    assert main(["calibrate", str(MEASURED / "vidur-linear-tp-a100.csv"), "--hw",
                 "nvidia-dgx-a100", "-o", str(out), "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    hw = load_hardware(str(out))
    assert hw.is_system and hw.count == 8 and hw.link is not None
    assert hw.efficiency.bandwidth == pytest.approx(report["parameters"]["bandwidth"]["value"],
                                                    rel=1e-3)
    assert hw.efficiency.bandwidth != load_hardware("nvidia-dgx-a100").efficiency.bandwidth
    bad = tmp_path / "bad.toml"
    bad.write_text(out.read_text().replace("[efficiency.compute]", "[efficiency.compute]\n"
                                           "fp99 = 0.5"))
    assert main(["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", str(bad)]) == 2
    assert "fp99" in capsys.readouterr().err


def _data_floor():
    import importlib.util
    spec = importlib.util.spec_from_file_location("data_floor", ROOT / "bench" / "data_floor.py")
    floor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(floor)
    return floor


def test_the_best_monotone_fit_of_a_series_by_hand():
    """bench/data_floor.py: the least mean relative error of any non-decreasing sequence. For
    times 1, 3, 2: f = 1, 2, 2 misses the 3 by 1/3 (f = 1, 3, 3 misses the 2 by 1/2), so the
    floor is 1/3; a non-decreasing series has none; and vLLM's FP8 GEMMs on the B200 (a kernel
    at 64 tokens slower than at 128 and 256) cannot be fitted within 8% by any model that
    grows with m: 9.0% over the 315 rows. Most of that is their 13-18 us more at m = 1 than at
    m = 2 (efficiency one_row): with each series' first row free, 2.8% (B300: 7.3 -> 0.2%)."""
    floor = _data_floor()
    assert floor.monotone_floor([1.0, 3.0, 2.0]) == pytest.approx(1 / 3)
    assert floor.monotone_floor([1.0, 2.0, 2.0, 5.0]) == 0.0
    parts = [floor.floor(DATA / "measured" / f"aiconfigurator-gemm-{f}-b200.csv")
             for f in ("fp8", "fp8-tp")]
    rows = sum(n for n, _ in parts)
    assert rows == 315 and 8.5 < sum(n * m for n, m in parts) / rows < 9.5
    for chip, low, high in (("b200", 2.5, 3.1), ("b300", 0.1, 0.4)):
        parts = [floor.floor(DATA / "measured" / f"aiconfigurator-gemm-{f}-{chip}.csv",
                             first_free=True) for f in ("fp8", "fp8-tp")]
        assert low < sum(n * m for n, m in parts) / rows < high


def test_the_roofline_per_shape_by_hand():
    """bench/data_floor.py's third column: t = c + max(A, B m) fitted to each series alone. A
    series that is one (c = 3 us on the launch grid, A = 9 us, B = 0.1 us per row) is fitted
    exactly; one kernel twice as slow at m = 64 costs it that row's miss alone (12 us against
    24: 0.5 of the series' summed error; the other rows keep their fit). It grows with m,
    so it never beats the best monotone fit; on SGLang's FP8 GEMMs on the H200 it is 6.0%
    where the monotone one is 0.8%: per-shape figures leave 6%, the rest of the calibrated
    model's 11.3% held out is efficiency that one figure per family does not say."""
    floor = _data_floor()
    sizes = [2 ** i for i in range(16)]
    times = [3 + max(9, 0.1 * m) for m in sizes]
    assert floor.roofline_floor(sizes, times) == pytest.approx(0, abs=1e-12)
    slow = [2 * t if m == 64 else t for m, t in zip(sizes, times)]
    assert floor.roofline_floor(sizes, slow) == pytest.approx(0.5, abs=1e-12)
    for path in (DATA / "measured").glob("aiconfigurator-gemm-*-h100-sglang.csv"):
        for points in floor.series(path).values():
            m, t = zip(*sorted(points))
            assert floor.roofline_floor(list(m), list(t)) >= floor.monotone_floor(list(t)) - 1e-12
    rows, mape = floor.floor(DATA / "measured" / "aiconfigurator-gemm-fp8-h200-sglang.csv",
                             first_free=True, roofline=True)
    assert rows == 135 and 5.5 < mape < 6.5
    assert floor.cell_of(DATA / "measured" / "aiconfigurator-gemm-fp8-tp-h200-sglang.csv") == \
        ("h200", "sglang", "fp8")
    assert floor.cell_of(DATA / "measured" / "aiconfigurator-gemm-b200.csv") == \
        ("b200", "vllm", "bf16")


def test_equal_choices_have_one_key():
    """calibrate makes each fit once (the joint walk of decode attention's blocks reaches the
    plain walk's trials again): Choices.key is the same for equal choices filled in another
    order, and differs where one choice does."""
    from costdsl.analysis.calibration import Choices
    from costdsl.hardware.efficiency import Tile
    a = Choices(fill={"decode_attention": 64.0, "rmsnorm": 108.0},
                split=frozenset({"decode_attention", "decode_attention_kv8"}), tile=Tile(128, 128))
    b = Choices(fill={"rmsnorm": 108.0, "decode_attention": 64.0},
                split=frozenset({"decode_attention_kv8", "decode_attention"}), tile=Tile(128, 128))
    assert a.key() == b.key() and hash(a.key()) == hash(b.key())
    assert a.key() != Choices(fill={"decode_attention": 32.0, "rmsnorm": 108.0},
                              split=a.split, tile=a.tile).key()
    assert a.key() != Choices(fill=a.fill, split=frozenset({"decode_attention"}),
                              tile=a.tile).key()
