"""Kimi K3 (issue 27): Kimi Delta Attention, Block Attention Residuals and Stable LatentMoE,
against its config.json (tests/data/configs/kimi-k3.json: huggingface.co/moonshotai/Kimi-K3, as
aiconfigurator-core 0.12.0 bundles it) and hand derivations."""
import subprocess
import sys

import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.analysis.memory import kv_cache_bytes
from costdsl.graph.costs import attn_res_sources

from conftest import DATA, MODELS, error_of

D, V, H, HD = 7168, 163840, 96, 128


def _k3():
    return costdsl.load(MODELS / "kimi-k3.arch")


def _decode(model, name, batch=1, seq=4096):
    a = model.analyze("nvidia-h100-sxm", batch=batch, seq=seq, stages=("decode",))
    return next(o for o in a.stages["decode"].ops if o.name == name)


def test_total_parameters_by_hand():
    """Per KDA layer: q, k, v 3 x 96 x 128 x 7168, the full-rank gate and o_proj 2 x 12288 x
    7168, f_a fused with b 7168 x (128 + 96), f_b 128 x 12288, the conv 3 x 12288 x 4 (no bias),
    A_log 96 and dt_bias 12288, the gated norm 128: 443,740,384. Per MLA layer: q_a 7168 x
    1536 + its norm 1536, q_b 1536 x 96 x 192, kv_a 7168 x 576 + the latent's norm 512, kv_b
    512 x 96 x 256, o and the output gate 2 x 12288 x 7168: 232,196,096. Per MoE layer: router
    7168 x 896, latent down and up 2 x 7168 x 3584 + the latent norm 3584, 896 experts of 3 x
    3584 x 3072, 2 shared of 3 x 7168 x 3072: 29,784,935,936. Every layer: two Attention
    Residuals modules (a pseudo-query and a key gain, 2 x 7168 each) and two norms. Embedding
    and head 2 x 163840 x 7168, the dense MLP 3 x 7168 x 33792, the output's aggregation and
    the final norm. AIConfigurator's model note: 2.8T."""
    kda = 3 * H * HD * D + 2 * H * HD * D + D * (HD + H) + HD * H * HD + 3 * H * HD * 4 \
        + H + H * HD + HD
    mla = D * 1536 + 1536 + 1536 * H * 192 + D * 576 + 512 + 512 * H * 256 + 2 * H * HD * D
    moe = D * 896 + 2 * D * 3584 + 3584 + 896 * 3 * 3584 * 3072 + 3 * D * 6144
    assert (kda, mla, moe) == (443_740_384, 232_196_096, 29_784_935_936)
    total = 2 * V * D + 93 * 6 * D + 69 * kda + 24 * mla + 3 * D * 33792 + 92 * moe + 3 * D
    m = _k3()
    assert m.params() == total == 2_779_484_393_568
    assert abs(total / 1e12 - 2.8) < 0.05
    # a token visits 16 of the 896 routed experts (and the 2 shared)
    active = total - 92 * (896 - 16) * 3 * 3584 * 3072
    assert m.active_params() == active == 105_363_935_328


@pytest.mark.parametrize("block,layers", [(12, 93), (12, 96), (1, 2), (4, 13), (5, 5)])
def test_attention_residual_sources_are_the_mean_over_the_modules(block, layers):
    """Counted module by module (the report's Eq. 10): block n's first module attends the
    embedding and the n sealed blocks, every later one the running partial sum too; the
    output's aggregation the embedding and every block."""
    counts = []
    for i in range(layers):
        n, first = divmod(i, block)[0], i % block == 0
        counts += [n + 1 if first else n + 2, n + 2]     # attention module, then feed-forward
    assert attn_res_sources(block, layers, False) == sympy.Rational(sum(counts), len(counts))
    assert attn_res_sources(block, layers, True) == -(-layers // block) + 1


def test_k3_averages_under_the_report_figures():
    """8 blocks of 12 layers (the last of 9), at most 9 sources (the K3 report): 994 sources
    over 186 modules, and the output's 9."""
    assert attn_res_sources(12, 93, False) == sympy.Rational(994, 186)
    assert attn_res_sources(12, 93, True) == 9


def test_an_attention_residual_reads_its_sources():
    """Decode, batch 4: a module reads 4 x 994/186 x 7168 activations (bf16) and its 2 x 7168
    parameters, and does 4 x 994/186 x (7 x 7168 + 5) operations."""
    op = _decode(_k3(), "layers.kda_layer.attn_in", batch=4)
    s = sympy.Rational(994, 186)
    assert op.bytes_by_class["act"] == pytest.approx(float(4 * s * D * 2 + 4 * D * 2))
    assert op.bytes_by_class["weight"] == 2 * D * 2
    assert op.flops == pytest.approx(float(4 * s * (7 * D + 5)))


def test_a_kda_decode_step_reads_and_writes_its_state():
    """Batch 1: per head the recurrent step 7 x 128^2 + 2 x 128, the channel-wise decay 7 x 128
    and b's sigmoid 3, the q/k norms 6 x 128: 96 x (7 x 16384 + 256 + 896 + 3) + 6 x 96 x 128
    = 11,194,656 at any context; the 96 x 128 x 128 state (bf16) read and written."""
    m = _k3()
    for seq in (1024, 262144):
        rule = _decode(m, "layers.kda_layer.attn.rule", seq=seq)
        assert rule.flops == 96 * (7 * 16384 + 256 + 896 + 3) + 6 * 96 * 128 == 11_194_656
        assert rule.bytes_by_class["kv"] == 2 * 96 * 128 * 128 * 2


def test_memory_holds_the_mla_latents_and_the_kda_states():
    """Per sequence: 24 MLA layers x 576 latent elements x 2 bytes = 27,648 bytes per token;
    69 KDA layers' states (96 x 128^2 + the conv's 3 x 12288 x 3) x 2 bytes = 232,316,928 bytes
    whatever the context."""
    kv = kv_cache_bytes(_k3().graph("decode"), S.seq).subs(S.kv_bits, 16)
    fixed = 69 * (96 * 128 * 128 + 3 * 12288 * 3) * 2
    assert fixed == 232_316_928
    assert sympy.expand(kv - S.batch * (27648 * S.seq + fixed)) == 0


def test_routed_experts_are_mxfp4_as_released():
    """The shipped model's passes quantize the routed experts to 4 bits with an 8-bit scale
    per 32 (4.25 bits): 92 x 896 x 33,030,144 parameters x 4.25 / 8 bytes, the rest bf16."""
    m = _k3()
    experts = 92 * 896 * 3 * 3584 * 3072
    weights = m.memory("decode").weights
    expected = experts * sympy.Rational(425, 800) + (m.params() - experts) * 2
    assert sympy.nsimplify(weights.subs(S.w_bits, 16)) == expected


def test_tensor_parallel_splits_the_gated_mla_and_kda_by_heads():
    """TP 8: the MLA output gate's projection, sigmoid and product an eighth with the heads,
    its o_proj reading an eighth; KDA's projections and state an eighth; the attention
    residuals replicated."""
    base = _k3()
    g0 = base.graph("decode")
    g1 = base.with_passes(["tensor_parallel(n=8)"]).graph("decode")
    ratio = lambda name: sympy.simplify(g1.nodes[name]["op"].flops / g0.nodes[name]["op"].flops)
    for name in ("layers.mla_layer.gate", "layers.mla_layer.gate_act", "layers.mla_layer.gated",
                 "layers.mla_layer.o", "layers.kda_layer.attn.qkv", "layers.kda_layer.attn.rule"):
        assert ratio(name) == sympy.Rational(1, 8), name
    assert ratio("layers.kda_layer.attn_in") == 1
    reduced = {n for n in g1.nodes if g1.nodes[n]["op"].kind == "all_reduce"}
    assert "layers.mla_layer.o.all_reduce" in reduced
    assert "layers.kda_layer.attn.out_proj.all_reduce" in reduced


def test_import_writes_the_shipped_model(tmp_path):
    out = tmp_path / "k3.arch"
    result = subprocess.run([sys.executable, "-m", "costdsl", "import",
                             str(DATA / "configs" / "kimi-k3.json"), "-o", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported, shipped = costdsl.load(out), _k3()
    assert imported.params() == shipped.params()
    assert imported.active_params() == shipped.active_params()
    assert imported.memory("decode").weights == shipped.memory("decode").weights


@pytest.mark.parametrize("edit,message", [
    (lambda t: t["linear_attn_config"]["kda_layers"].pop(),
     "must name each of the 93 layers"),
    (lambda t: t.update(mla_use_output_gate=False), "'mla_use_output_gate' is False"),
    (lambda t: t.pop("attn_res_block_size"), "missing field 'attn_res_block_size'"),
])
def test_import_refuses_what_the_family_cannot_write(tmp_path, edit, message):
    import json
    config = json.loads((DATA / "configs" / "kimi-k3.json").read_text())
    edit(config["text_config"])
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([sys.executable, "-m", "costdsl", "import", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("statement,message", [
    ("y = moe(x, experts=8, top_k=2, ffn=64, latent_norm=true)",
     "latent_norm=true needs latent="),
    ("y = attn_res(x, block=0, layers=4)", "block= must be a positive integer"),
    ("y = kda(x, heads=4, head_dim=16, gate_rank=-1)", "gate_rank= must be a positive integer"),
])
def test_bad_attributes_are_located(write_arch, statement, message):
    err = error_of(write_arch, statement)
    assert message in str(err) and err.line == 4
