"""Vision encoders (issue 27): Qwen3.5's ViT and merger as the model "<name>-Vision", priced over
image patches (patch_embed, linear(..., merge=k)), and a multimodal request end to end (latency
--image-tokens), against its config.json's vision_config and hand derivations."""
import json

import pytest

import costdsl
from costdsl.cli import main
from costdsl.errors import EvaluationError
from costdsl.language.elaborate import merged_rows

from conftest import MODELS, error_of

W, F, L = 1152, 4304, 27     # vision_config: hidden_size, intermediate_size, depth


def _vision():
    return costdsl.load(MODELS / "qwen3.5-27b.arch").vision_module()


def _encoder_params(out_hidden):
    """patch_embed 1536 x 1152 + 1152; positions 2304 x 1152; per layer two LayerNorms
    (2 x 2 x 1152), q, k, v and o 4 x (1152^2 + 1152), fc1 1152 x 4304 + 4304, fc2 4304 x 1152
    + 1152; the merger's LayerNorm 2 x 1152, fc1 4608^2 + 4608, fc2 4608 x out + out."""
    layer = 4 * W + 4 * (W * W + W) + (W * F + F) + (F * W + W)
    return (1536 * W + W) + 2304 * W + L * layer + 2 * W + (4608 * 4608 + 4608) \
        + (4608 * out_hidden + out_hidden)


@pytest.mark.parametrize("size,name,out_hidden", [
    ("27b", "Qwen3.5-27B", 5120), ("35b-a3b", "Qwen3.5-35B-A3B", 2048),
    ("397b-a17b", "Qwen3.5-397B-A17B", 4096)])
def test_encoder_parameters_by_hand(size, name, out_hidden):
    model = costdsl.load(MODELS / f"qwen3.5-{size}.arch")
    vision = model.vision_module()
    assert vision.name == f"{name}-Vision"
    assert vision.params() == _encoder_params(out_hidden)
    assert _encoder_params(5120) == 460_730_096


def test_the_397b_with_its_encoder_is_the_cards_397b():
    """Qwen3.5-397B-A17B's card counts the vision encoder: 396.35B + 0.45B."""
    model = costdsl.load(MODELS / "qwen3.5-397b-a17b.arch")
    assert round(int(model.params() + model.vision_module().params()) / 1e9) == 397


def test_the_merger_reads_four_patches_as_one_row():
    """Prefill of one 1024 x 1024 image (4,096 patches of 16 x 16), batch 1: the merger's fc1 runs
    on 1,024 rows of 4 x 1152: 2 x 1024 x 4608 x 4608 operations, reading the 4,096 x 1152
    normed patches and writing 1,024 x 4608; fc2 writes the 1,024 image tokens at 5,120."""
    a = _vision().analyze("nvidia-h100-sxm", batch=1, seq=4096, stages=("prefill",))
    ops = {o.name: o for o in a.stages["prefill"].ops}
    fc1 = ops["vision.merge_fc1"]
    assert fc1.flops == 2 * 1024 * 4608 * 4608 + 1024 * 4608
    assert fc1.bytes_by_class["act"] == (4096 * W + 1024 * 4608) * 2
    assert ops["vision.merge_fc2"].bytes_by_class["act"] == (1024 * 4608 + 1024 * 5120) * 2


def test_the_encoder_attends_every_patch_both_ways():
    """16 heads of 72 over the image's 4,096 patches, no causal mask: 2 x 16 x 4096^2 x 72."""
    a = _vision().analyze("nvidia-h100-sxm", batch=1, seq=4096, stages=("prefill",))
    qk = next(o for o in a.stages["prefill"].ops if o.name == "vision.blocks.attn.qk")
    assert qk.flops == 2 * 16 * 4096 * 4096 * 72


def test_merged_rows_compose():
    assert merged_rows("all", 4) == "all/4"
    assert merged_rows("all/4", 2) == "all/8"


def test_a_request_with_an_image_waits_for_the_encoder():
    """TTFT with 1,024 of the 2,048 prompt tokens from an image = TTFT without + the encoder's
    prefill kernels over 4 x 1,024 patches (the engine's per-iteration time counted once, in
    the prompt's prefill)."""
    model = costdsl.load(MODELS / "qwen3.5-27b.arch")
    plain = model.latency("nvidia-h100-sxm", 2, 2048, 16)
    with_image = model.latency("nvidia-h100-sxm", 2, 2048, 16, image_tokens=1024)
    encoder = model.vision_module().analyze("nvidia-h100-sxm", batch=2, seq=4096,
                                            stages=("prefill",)).stages["prefill"].total
    assert with_image.encoder.patches == 4096
    assert with_image.encoder.time_s == pytest.approx(encoder.time_s - encoder.server_s)
    assert with_image.ttft_s == pytest.approx(plain.ttft_s + with_image.encoder.time_s)
    assert with_image.tpot_s == pytest.approx(plain.tpot_s)
    assert encoder.server_s > 0      # the H100's engine figures: counted in the prefill only


def test_latency_cli_reports_the_encoder(capsys):
    path = str(MODELS / "qwen3.5-27b.arch")
    args = ["latency", path, "--hw", "nvidia-h100-sxm", "--seq", "2048", "--gen", "8",
            "--image-tokens", "256"]
    assert main(args) == 0
    assert "vision encoder 'Qwen3.5-27B-Vision'" in capsys.readouterr().out
    assert main(args + ["--format", "json"]) == 0
    encoder = json.loads(capsys.readouterr().out)["encoder"]
    assert encoder["patches"] == 1024 and encoder["time_s"] > 0
    assert main(["params", path]) == 0
    assert "its vision encoder 'Qwen3.5-27B-Vision': 460,730,096" in capsys.readouterr().out


@pytest.mark.parametrize("model,tokens,message", [
    ("llama-3-8b", 16, "has no vision encoder"),
    ("qwen3.5-27b", 4096, "from 1 to the prompt's 2048 tokens"),
])
def test_image_token_errors(model, tokens, message):
    with pytest.raises(EvaluationError, match=message):
        costdsl.load(MODELS / f"{model}.arch").latency("nvidia-h100-sxm", 1, 2048, 8,
                                                       image_tokens=tokens)


@pytest.mark.parametrize("lines,message,line", [
    (["y = patch_embed(x, pixels=12, dim=8)"], "patch_embed reads the model input", 4),
    (["m = linear(x, out=32, merge=4)", "y = attention(m, m, m, heads=4)"],
     "attention over merged rows", 5),
    (["l = linear(x, out=8, tokens=last)", "y = linear(l, out=8, merge=2)"],
     "merge= needs every position's rows", 5),
])
def test_bad_vision_statements_are_located(write_arch, lines, message, line):
    err = error_of(write_arch, *lines)
    assert message in str(err) and err.line == line
