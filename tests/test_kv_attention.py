"""Decode attention over a narrow KV cache is a kernel of its own (issue 26: efficiency per
compute type): [efficiency.decode_attention_kv8], fitted to the FP8-cache rows of
aiconfigurator's generation-attention tables, falling back to decode's figures."""
import csv
import json
import re
from dataclasses import replace

import numpy as np
import pytest

import costdsl
from costdsl.hardware import load_hardware
from costdsl.hardware.efficiency import FALLBACK, kv_family
from costdsl.analysis.calibration import fit_efficiency
from costdsl.analysis.measurements import predict, read_measurements, resolve

from conftest import DATA, ROOT

MEASURED = DATA / "measured"
ATTENTION = "layers.attn[qk+softmax+sv]"


def test_the_family_follows_the_cache_bits():
    assert kv_family("decode_attention", 16) == "decode_attention"
    assert kv_family("decode_attention", 8) == "decode_attention_kv8"
    assert kv_family("decode_attention", 4) == "decode_attention_kv4"
    assert kv_family("decode_attention", None) == "decode_attention"
    assert kv_family("attention", 8) == "attention"      # prefill reads the fresh K and V
    assert kv_family("linear", 8) == "linear"
    # a 4-bit cache without figures takes the 8-bit one's, then decode's, then prefill's
    assert FALLBACK["decode_attention_kv4"] == "decode_attention_kv8"
    assert FALLBACK["decode_attention_kv8"] == "decode_attention"


def _measured(stack_file: str, model: str, batch: int, seq: int, kv: int) -> float:
    with open(MEASURED / stack_file, newline="") as f:
        return next(float(r["time_s"]) for r in csv.DictReader(f)
                    if r["model"] == model and r["stage"] == "decode" and
                    int(r["batch"]) == batch and int(r["seq"]) == seq and int(r["kv_bits"]) == kv)


def test_an_fp8_cache_by_hand_on_the_h200_under_sglang():
    """32 query and 8 KV heads of 128 at batch 64 over 4,095 cached tokens on the H200 under
    SGLang (FlashAttention-3): memory-bound, at the FP8 cache's fitted 0.5051 of 4.8 TB/s plus
    13.61 us, the bf16 cache's at 0.8826 plus 10.02 us. Halving the bytes saves 8% of the
    time in SGLang's table (231.4 us against 251.8 us): one figure for both caches priced the
    FP8 one at 0.55 of the bf16 one; its own figures put it within 5% of the measured 0.92."""
    hw = load_hardware("nvidia-h200").with_stack("sglang")
    model = costdsl.load(MEASURED / "attention" / "attn-32x8.arch")
    ops = {}
    for kv, bandwidth, launch in ((8, 0.5051, 13.61e-6), (16, 0.8826, 10.02e-6)):
        a = model.analyze(hw, batch=64, seq=4095, kv_bits=kv, stages=("decode",))
        op = next(o for o in a.stages["decode"].ops if o.name == ATTENTION)
        assert op.bound == "memory"
        assert op.time_s == pytest.approx(op.bytes / (bandwidth * 4.8e12) + launch, rel=1e-4)
        ops[kv] = op
    assert ops[8].bytes_by_class["kv"] == ops[16].bytes_by_class["kv"] / 2
    measured = [_measured("aiconfigurator-attention-h200-sglang.csv", "attention/attn-32x8.arch",
                          64, 4095, kv) for kv in (8, 16)]
    assert measured[0] / measured[1] == pytest.approx(0.919, abs=1e-3)
    assert ops[8].time_s / ops[16].time_s == pytest.approx(measured[0] / measured[1], rel=0.05)
    # a file without the table prices the FP8 cache with decode's figures, as before
    plain = load_hardware("nvidia-a100-80gb")
    assert "decode_attention_kv8" not in plain.efficiency.kinds
    assert plain.bandwidth_for("decode_attention_kv8") == plain.bandwidth_for("decode_attention")
    assert plain.launch_for("decode_attention_kv4") == plain.launch_for("decode_attention")


def test_the_cache_type_splits_the_fit_and_the_error():
    """SGLang's decode rows on the B200 (179 per cache type, those read from the L2 left out):
    one bandwidth and launch for both caches (the refit with the FP8 rows priced as bf16 ones)
    misses the FP8 ones by 20% (the bytes halve, the time does not); a figure per cache type
    takes them under 5% (measured on the development machine: 19.6% -> 4.0%; the bf16 ones
    11.8% -> 3.7%; with the L2 rows, 25.1% -> 8.6% and 15.0% -> 12.7%)."""
    hw = load_hardware("nvidia-b200").with_stack("sglang")
    path = MEASURED / "aiconfigurator-attention-b200-sglang.csv"
    measured = resolve([r for r in read_measurements(path) if r.stage == "decode"], path, hw,
                       costdsl.load)
    assert {p.family for m in measured for p in m.pieces} == {"decode_attention",
                                                             "decode_attention_kv8"}
    times = np.array([m.row.time_s for m in measured])
    fp8 = np.array([m.row.bits[2] == 8 for m in measured])
    own = np.abs(predict(measured, fit_efficiency(measured, sms=hw.sms).efficiency) / times - 1)
    as_one = [replace(m, pieces=tuple(replace(p, family="decode_attention") for p in m.pieces))
              for m in measured]
    one = np.abs(predict(as_one, fit_efficiency(as_one, sms=hw.sms).efficiency) / times - 1)
    assert len(measured) == 2 * 179
    assert own[fp8].mean() < 0.05 < 0.15 < one[fp8].mean()
    assert own[~fp8].mean() < 0.05 < 0.10 < one[~fp8].mean()


def test_calibrate_keeps_the_tables_other_fits_wrote(tmp_path, capsys):
    """Rewriting a stack's kernel figures keeps its serving engine's table (fitted to served
    runs) and its experts' (fitted to MoE kernels), and the default section's account stays
    above [efficiency], where TOML parsers would have carried it off with the table above."""
    from costdsl.cli import main
    source = (ROOT / "hardware" / "nvidia-h200.toml").read_text()
    hw = tmp_path / "nvidia-h200.toml"
    hw.write_text(source)
    files = [str(MEASURED / f"aiconfigurator-{f}-h200-sglang.csv")
             for f in ("gemm", "gemm-fp8", "gemm-fp8-tp", "gemm-fp8block", "attention")]
    code = main(["calibrate", *files, "--hw", str(hw), "--stack", "sglang 0.5.14", "-o",
                 str(hw)])
    assert code == 0, capsys.readouterr().err
    shipped = load_hardware("nvidia-h200").with_stack("sglang").efficiency
    again = load_hardware(str(hw)).with_stack("sglang").efficiency
    for kind in ("expert_linear", "expert_act", "fp8_block_expert", "decode_attention_kv8"):
        assert again.kinds[kind] == shipped.kinds[kind]
    assert again.framework == shipped.framework
    lines = hw.read_text().splitlines()
    at = lines.index("[efficiency]")
    assert lines[at - 2].startswith("# Calibrated by `costdsl calibrate` from ")
    assert "aiconfigurator-gemm-h200.csv" in lines[at - 2]
    assert hw.read_text().count("# Calibrated by `costdsl calibrate`") == 3
    # the rewritten stack stays where it stood (it used to move to the end of the file)
    order = lambda text: [l for l in text.splitlines() if re.fullmatch(r"\[stack\.\w+\]", l)]
    assert order(hw.read_text()) == order(source)


def test_validate_reports_the_cache_type(capsys):
    """validate's table by compute type names the operand format that makes a kernel of its
    own: the H200's decode rows over an FP8 cache as "fp16 (kv8)", apart from the bf16 ones."""
    from costdsl.cli import main
    path = MEASURED / "aiconfigurator-attention-h200.csv"
    assert main(["validate", str(path), "--hw", "nvidia-h200", "--format", "json"]) == 0
    by_type = json.loads(capsys.readouterr().out)["models"]["calibrated"]["by_compute_type"]
    assert by_type["fp16 (kv8)"]["rows"] == 311 and by_type["fp16"]["rows"] == 311 + 72
    assert main(["validate", str(path), "--hw", "nvidia-h200"]) == 0
    assert "    fp16 (kv8) (311) " in capsys.readouterr().out


def test_a_kernel_without_figures_of_its_own_says_whose_it_takes(capsys):
    """The time-model line names the kernels the settings ask for that the file has no
    figures for, and whose they take: an FP8 cache on the A100 (no FP8-cache rows) decodes at
    the bf16 cache's figures; on the H200 it has its own; a W4A16 layer there takes the GEMMs'."""
    from costdsl.cli import main

    def line(*args):
        assert main(["analyze", "llama-3-8b", "--stage", "decode", *args]) == 0
        return next(l for l in capsys.readouterr().out.splitlines()
                    if l.startswith("time model:"))
    assert "decode_attention_kv8 at decode_attention's" in line("--hw", "nvidia-a100-80gb",
                                                                "--kv-bits", "8")
    h200 = line("--hw", "nvidia-h200", "--kv-bits", "8", "--w-bits", "4")
    assert "decode_attention_kv8 at" not in h200 and "w4a16_gemm at the GEMMs'" in h200
    assert "w4a16_gemm at" not in line("--hw", "nvidia-h200")
