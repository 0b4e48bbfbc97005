"""A kernel that computes in another type than its operands' (efficiency COMPUTE_TYPE_NOTE).

TensorRT-LLM's MLA decode over an FP8 latent cache on Blackwell quantises its query to FP8 and
runs FP8 tensor-core math: its family declares `compute_type = "fp8"` in the B200 file's
[stack.trtllm.decode_attention_mla_kv8], and its matrix work is timed at the FP8 peak (the
B200 datasheet: 4.5 PFLOPS dense) times the fraction the section gives for FP8. Expected values
below come from those datasheet figures and the file's own fractions.
"""
import pytest

import costdsl
from costdsl.hardware import load_hardware

from conftest import rejected_section

FP8_PEAK = 4.5e15    # NVIDIA B200 datasheet: FP8 tensor 9 PFLOPS with sparsity, 4.5 dense
BF16_PEAK = 2.25e15  # FP16/BF16 tensor 4.5 PFLOPS with sparsity, 2.25 dense


@pytest.fixture(scope="module")
def mla():
    return costdsl.load("deepseek-v2-lite", passes=["fuse_serving()"])


def _attention(model, hw, kv_bits):
    stage = model.roofline(hw, "decode", kv_bits=kv_bits)
    return next(op for op in stage.ops if op.node.kind == "flash_attention")


def test_an_mla_decode_over_an_fp8_cache_computes_in_fp8_under_trtllm_on_the_b200(mla):
    hw = load_hardware("nvidia-b200").with_stack("trtllm")
    fraction = hw.efficiency.compute_for("fp8", "decode_attention_mla_kv8")
    op = _attention(mla, hw, 8)
    assert op.compute_type == "fp8"
    assert op.peak == pytest.approx(FP8_PEAK * fraction, rel=1e-12)
    # a bf16 cache: the bf16 kernel, at the bf16 peak and MLA decode's fraction
    op = _attention(mla, hw, 16)
    assert op.compute_type in ("fp16", "bf16")
    assert op.peak == pytest.approx(
        BF16_PEAK * hw.efficiency.compute_for(op.compute_type, "decode_attention_mla"), rel=1e-12)


def test_the_declaration_is_the_stacks_and_the_ideal_roofline_keeps_the_operands(mla):
    """SGLang's FP8-cache MLA kernel on the B200 and the datasheet roofline (--ideal) compute
    in the operands' type."""
    for hw in (load_hardware("nvidia-b200").with_stack("sglang"),
               load_hardware("nvidia-b200").with_stack("trtllm").ideal()):
        op = _attention(mla, hw, 8)
        assert op.compute_type in ("fp16", "bf16")


def test_the_analysis_reports_the_kernels_type(mla, capsys):
    from costdsl.cli import main
    assert main(["analyze", "deepseek-v2-lite", "--pass", "fuse_serving()", "--hw",
                 "nvidia-b200", "--stack", "trtllm", "--kv-bits", "8", "--batch", "64",
                 "--seq", "4096", "--format", "json"]) == 0
    import json
    ops = json.loads(capsys.readouterr().out)["stages"]["decode"]["ops"]
    attention = next(o for o in ops if o["kind"] == "flash_attention")
    assert attention["compute_type"] == "fp8"


@pytest.mark.parametrize("section, message", [
    ("[efficiency.decode_attention_mla_kv8]\ncompute_type = \"fp6\"\n",
     "expected the type the kernel computes in, one of fp8, fp4, int8, fp16, bf16"),
    ("[efficiency.decode_attention_mla_kv8]\ncompute_type = 8\n",
     "expected the type the kernel computes in"),
    # the A6000 (Ampere) has no FP8 units: its [peak] lists no fp8
    ("[efficiency.decode_attention_mla_kv8]\ncompute_type = \"fp8\"\n",
     "which [peak] does not list: the chip has no rate for it"),
])
def test_bad_compute_types(section, message, tmp_path, capsys):
    assert message in rejected_section(section, tmp_path, capsys)


def test_measured_rows_fit_the_kernels_type_and_the_ideal_keeps_the_operands():
    """The B200's FP8-cache MLA rows under TensorRT-LLM: each row's matrix work is at the FP8
    peak for the fit (4.5 PFLOPS), and at the bf16 peak (2.25) for the ideal roofline, twice
    the seconds, as `analyze --ideal` prices it."""
    from conftest import DATA
    from costdsl.analysis.measurements import read_measurements, resolve
    hw = load_hardware("nvidia-b200").with_stack("trtllm")
    path = DATA / "measured" / "aiconfigurator-mla-kv8-b200-trtllm.csv"
    pieces = [p for m in resolve(read_measurements(path), path, hw, costdsl.load)
              for p in m.pieces]
    assert {p.compute_type for p in pieces} == {"fp8"}
    for p in pieces:
        assert p.ideal_matrix_s == pytest.approx(p.matrix_s * FP8_PEAK / BF16_PEAK, rel=1e-12)
