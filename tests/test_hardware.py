"""Shipped hardware files: every figure carries its source, the listing shows them all, and
the compute-type rules pick what each chip has."""
import re

import pytest

import costdsl
from costdsl.cli import main
from costdsl.hardware import load_hardware, shipped_names
from costdsl.analysis.roofline import NotApplicableError

from conftest import MODELS

HARDWARE = MODELS.parent / "hardware"
ISSUE_3 = ["nvidia-h100-pcie", "nvidia-l40s", "nvidia-b200", "amd-mi300x", "google-tpu-v5e",
           "apple-m2-ultra", "intel-xeon-8480", "nvidia-jetson-agx-orin"]


@pytest.mark.parametrize("name", shipped_names())
def test_every_figure_names_its_source(name):
    text = (HARDWARE / f"{name}.toml").read_text()
    assert text.startswith("#") and re.search(r"^# Sources?:", text, re.M)
    for line in text.splitlines():
        if re.match(r"\s*[a-z0-9_]+\s*=", line) and not line.startswith("name"):
            assert "#" in line, f"{name}: no source comment on {line!r}"
    load_hardware(name)


def test_issue_3_devices_are_shipped_and_listed(capsys):
    assert set(ISSUE_3) <= set(shipped_names())
    assert main(["hardware"]) == 0
    out = capsys.readouterr().out
    for name in ISSUE_3:
        assert name in out
    # ridge = fp16 (or bf16) peak / bandwidth, from the datasheet lines:
    # H100 PCIe 756.5 T / 2 T = 378.2; MI300X 1307.4 T / 5.3 T = 246.7; TPU v5e bf16
    # 197 T / 819 G = 240.5; Xeon 8480+ AMX bf16 114.688 T / 307.2 G = 373.3
    for name, ridge in [("nvidia-h100-pcie", "378.2"), ("amd-mi300x", "246.7"),
                        ("google-tpu-v5e", "240.5"), ("intel-xeon-8480", "373.3")]:
        assert re.search(rf"{name}\s.*\s{re.escape(ridge)}\s", out, re.M), name
    # the SM count (whitepapers), which time model a file gives and its stacks (issue 26),
    # the compute types with a fitted fraction, the MoE experts' formats with their own and
    # the KV caches decode's attention has its own figures for (an FP8 MLA latent: mla-fp8);
    # the A100: TensorRT-LLM's weight-only and SmoothQuant GEMMs, SGLang's bf16 and Marlin INT4
    # experts
    assert re.search(r"^nvidia-a100-80gb\s.*\s108\s+calibrated\s+vllm, sglang, trtllm\s+fp16, "
                     r"int8, w4a16, w8a16\s+bf16, w4a16\s+bf16, mla, mla-fp8$", out, re.M)
    assert re.search(r"^nvidia-h200\s.*\s132\s+calibrated\s+vllm, sglang, trtllm\s+"
                     r"fp16, fp8, fp8-block\s+bf16, fp8-block, w4a16, w4a16-mx\s+"
                     r"bf16, fp8, mla, mla-fp8$", out, re.M)
    assert re.search(r"^nvidia-b200\s.*\s148\s+calibrated\s+vllm, sglang, trtllm\s+"
                     r"fp16, fp8, fp4-block, fp8-block\s+"
                     r"bf16, fp4-block, fp8-block, fp8, w4a16, w4a16-mx\s+"
                     r"bf16, fp8, mla, mla-fp8$", out, re.M)   # NVFP4: fp4-block; MXFP4: w4a16-mx
    # Intel's Arc Pro B60: 98.3 TFLOPS 16-bit XMX / 456 GB/s = 215.6; vLLM's XPU build alone,
    # its FP8 GEMMs weight-only (no FP8 matrix units)
    # its 24 GB are binary, as GDDR6 chips are sized (b60.yaml: mem_capacity 25,769,803,776)
    assert re.search(r"^intel-arc-pro-b60\s.*\s456 GB/s\s+25\.8 GB\s", out, re.M)
    assert re.search(r"^intel-arc-pro-b60\s.*\s215\.6\s+20\s+calibrated\s+vllm\s+"
                     r"fp16, w8a16\s+-\s+bf16, fp8$", out, re.M)
    assert re.search(r"^nvidia-a6000\s.*\s84\s+ideal\s+-\s+-\s+-\s+-$", out, re.M)
    assert re.search(r"^amd-mi300x\s.*\s-\s+ideal\s+-\s+-\s+-\s+-$", out, re.M)


def _ctype(hw, passes, op="layers.q"):
    a = costdsl.load(MODELS / "llama-2-7b.arch", passes=passes).analyze(
        hw, batch=1, seq=64, stages=["decode"])
    return next(o for o in a.stages["decode"].ops if o.name == op).compute_type


def test_compute_types_follow_each_chip():
    assert _ctype("nvidia-b200", ["quantize(weights=4, acts=4)"]) == "fp4"  # no INT4 path
    assert _ctype("nvidia-l40s", ["quantize(weights=4, acts=4)"]) == "int4"
    assert _ctype("intel-xeon-8480", []) == "bf16"              # AMX: BF16, no FP16
    assert _ctype("intel-xeon-8480", ["quantize(weights=8, acts=8)"]) == "int8"
    assert _ctype("google-tpu-v5e", [], "layers.attn_norm") == "bf16"  # no fp32 figure
    assert _ctype("apple-m2-ultra", []) == "fp16"


def test_flash_attention_needs_on_chip_memory_figures():
    m = costdsl.load(MODELS / "llama-2-7b.arch", passes=["flash_attention()"])
    with pytest.raises(NotApplicableError, match="google-tpu-v5e"):
        m.analyze("google-tpu-v5e", batch=1, seq=128)
    # Apple's 32 KB of threadgroup memory holds a 16-row block of 128-wide heads (16 KiB at
    # 16 bits), the MI300X's 64 KB LDS too
    m.analyze("apple-m2-ultra", batch=1, seq=128)
    m.analyze("amd-mi300x", batch=1, seq=128)


def test_a_hardware_file_changed_on_disk_is_read_again(tmp_path, monkeypatch):
    """Hardware asked for by name is answered from memory while its file is unchanged, and read
    again once it changes (here: the bandwidth doubled, and a file of a shipped name appearing
    in the working directory takes precedence, as it does on a first load)."""
    text = (HARDWARE / "nvidia-a6000.toml").read_text()
    path = tmp_path / "chip.toml"
    path.write_text(text)
    first = load_hardware(str(path))
    assert load_hardware(str(path)) is first
    path.write_text(text.replace('bandwidth = "768 GB/s"', 'bandwidth = "1536 GB/s"'))
    assert load_hardware(str(path)).bandwidth_Bps == 2 * first.bandwidth_Bps
    shipped = load_hardware("nvidia-l4")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nvidia-l4").write_text(text)
    assert load_hardware("nvidia-l4").name == first.name != shipped.name
