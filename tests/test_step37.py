"""Step-3.7-Flash (issue 27): sliding layers with more query heads than the full ones, a sigmoid
gate per head, per-kind rotary widths, dense then MoE layers with a shared expert; against its
config.json (tests/data/configs/step-3.7-flash.json: aiconfigurator-core 0.12.0's abridged copy)
and hand derivations."""
import json
import subprocess
import sys

import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.analysis.memory import kv_cache_bytes

from conftest import DATA, MODELS, error_of

D, V = 4096, 128896
CONFIG = DATA / "configs" / "step-3.7-flash.json"


def _step():
    return costdsl.load(MODELS / "step-3.7-flash.arch")


def _decode(model, name, batch=1, seq=4096):
    a = model.analyze("nvidia-h100-sxm", batch=batch, seq=seq, stages=("decode",))
    return next(o for o in a.stages["decode"].ops if o.name == name)


def _attention(heads):
    """q and o (heads x 128 x 4096 each), k and v (8 x 128 x 4096 each), the head gate
    (4096 x heads), the QK-norms (128 each) and the layer's two norms (4096 each)."""
    return 2 * heads * 128 * D + 2 * 8 * 128 * D + D * heads + 2 * 128 + 2 * D


def test_total_and_active_parameters_by_hand():
    """12 full layers of 64 heads, 33 sliding of 96; 3 dense SwiGLU MLPs 3 x 4096 x 11264; 42 MoE
    layers of a router 4096 x 288, 288 experts and one shared of 3 x 4096 x 1280; embedding and
    head 2 x 128896 x 4096, the final norm. Step-3.5-Flash's card (the same trunk): 196B total,
    11B active; a token visits 8 of the 288 experts."""
    moe = D * 288 + 289 * 3 * D * 1280
    total = 2 * V * D + 12 * _attention(64) + 33 * _attention(96) + 3 * 3 * D * 11264 \
        + 42 * moe + D
    m = _step()
    assert m.params() == total == 196_956_118_272
    assert int(total / 1e9) == 196
    active = total - 42 * 280 * 3 * D * 1280
    assert m.active_params() == active == 11_987_311_872
    assert int((active - V * D) / 1e9) == 11


def test_the_head_gate_scales_each_head():
    """A sliding layer's decode at batch 2: sigmoid(g_proj(x)) is 96 wide, the product with the
    96 x 128 attention output one operation per element of it, reading both (bf16)."""
    gated = _decode(_step(), "layers.sliding_moe.gated", batch=2)
    assert gated.flops == 2 * 96 * 128
    assert gated.bytes_by_class["act"] == 2 * (96 * 128 + 96 + 96 * 128) * 2
    gate = _decode(_step(), "layers.sliding_moe.head_gate", batch=2)
    assert gate.flops == 2 * 2 * D * 96


def test_full_and_sliding_layers_rotate_their_own_width():
    """partial_rotary_factors: half of a full layer's 128-wide head, all of a sliding one's."""
    full = _decode(_step(), "layers.full_moe.q_rot")
    sliding = _decode(_step(), "layers.sliding_moe.q_rot")
    assert sliding.flops / full.flops == (96 * 128) / (64 * 64)


def test_only_the_full_layers_cache_grows():
    """12 full layers x 2 x 8 x 128 x 2 bytes = 49,152 bytes per token; the 33 sliding layers
    hold at most 512 positions (33 x 512 x 4,096 bytes) once the context passes the window."""
    kv = kv_cache_bytes(_step().graph("decode"), S.seq).subs(S.kv_bits, 16)
    at = lambda seq: kv.subs({S.batch: 1, S.seq: seq})
    assert at(8192) - at(4096) == 49152 * 4096
    assert at(4096) == 49152 * 4096 + 33 * 512 * 4096
    assert at(256) == (12 + 33) * 4096 * 256


def test_tensor_parallel_splits_the_head_gate_with_the_heads():
    base, tp = _step(), _step().with_passes(["tensor_parallel(n=8)"])
    g0, g1 = base.graph("decode"), tp.graph("decode")
    ratio = lambda n: sympy.simplify(g1.nodes[n]["op"].flops / g0.nodes[n]["op"].flops)
    for name in ("layers.sliding_moe.head_gate", "layers.sliding_moe.gate_act",
                 "layers.sliding_moe.gated", "layers.sliding_moe.q", "layers.full_moe.o"):
        assert ratio(name) == sympy.Rational(1, 8), name


def _import(tmp_path, config: dict):
    src, out = tmp_path / "config.json", tmp_path / "imported.arch"
    src.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "costdsl", "import", str(src), "-o", str(out)],
                            capture_output=True, text=True, timeout=60)
    return result, out


def test_the_abridged_config_imports_as_it_reads(tmp_path):
    """aiconfigurator's copy has no attention_other_setting: its sliding layers keep the full
    layers' 64 heads, 33 x 32 heads' q, o and gate (2 x 32 x 128 x 4096 + 4096 x 32) fewer."""
    result, out = _import(tmp_path, json.loads(CONFIG.read_text()))
    assert result.returncode == 0, result.stderr
    fewer = 33 * (2 * 32 * 128 * D + D * 32)
    assert costdsl.load(out).params() == _step().params() - fewer == 195_844_496_640


def test_the_checkpoints_fields_import_as_the_shipped_model(tmp_path):
    """With the three fields the checkpoint's text_config adds (as vLLM's Step3p5 code reads
    them): the shipped model exactly."""
    config = json.loads(CONFIG.read_text())
    config["attention_other_setting"] = {"attention_type": "sliding_attention",
                                         "num_attention_heads": 96, "num_attention_groups": 8,
                                         "head_dim": 128}
    config["use_head_wise_attn_gate"] = True
    config["partial_rotary_factors"] = [0.5 if t == "full_attention" else 1.0
                                        for t in config["layer_types"]]
    result, out = _import(tmp_path, config)
    assert result.returncode == 0, result.stderr
    imported, shipped = costdsl.load(out), _step()
    assert imported.params() == shipped.params()
    assert imported.active_params() == shipped.active_params()
    assert kv_cache_bytes(imported.graph("decode"), S.seq) == \
        kv_cache_bytes(shipped.graph("decode"), S.seq)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(attention_other_setting={"num_attention_heads": 96,
                                                 "num_attention_groups": 4}),
     "another num_attention_groups"),
    (lambda c: c.update(use_head_wise_attn_gate=False), "'use_head_wise_attn_gate' is False"),
    (lambda c: c.update(layer_types=c["layer_types"][:10]), "must name each of the 45 layers"),
])
def test_import_refuses_what_the_family_cannot_write(tmp_path, edit, message):
    config = json.loads(CONFIG.read_text())
    edit(config)
    result, _ = _import(tmp_path, config)
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("statement,message", [
    ("y = mul(x, g, heads=4)", "is not one factor per head"),
    ("y = mul(x, h, heads=5)", "heads=5 does not divide"),
])
def test_a_head_wise_product_checks_its_widths(write_arch, statement, message):
    err = error_of(write_arch, "g = linear(x, out=8)", "h = linear(x, out=5)", statement)
    assert message in str(err) and err.line == 6
