"""Models people deploy now (issue 27): Llama 3.2 (tied heads), Qwen3 (QK-norm, MoE) and gpt-oss
(layers cycling between a sliding window and full attention, attention sinks, biased experts,
MXFP4 experts), against published parameter counts and hand derivations of the mechanisms."""
import subprocess
import sys

import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.analysis.memory import kv_cache_bytes
from costdsl.errors import CostDSLError
from costdsl.graph.schema import nodes

from conftest import DATA, MODELS

B = 10 ** 9


def _load(name):
    return costdsl.load(MODELS / f"{name}.arch")


# --- parameter counts -------------------------------------------------------------------------
# Exact figures derived from each config.json by hand (the comments give the sums); the
# published figure is the model card's, to the precision it is printed with.

@pytest.mark.parametrize("name,exact,published,digits", [
    # 128256 x 2048 (tied: once) + 16 x (2048^2 + 2 x 2048 x 512 + 2048^2 + 3 x 2048 x 8192
    # + 2 x 2048) + 2048. Model card (meta-llama/Llama-3.2-1B): 1.23B.
    ("llama-3.2-1b", 1_235_814_400, 1.23, 2),
    # 128256 x 3072 + 28 x (2 x 3072^2 + 2 x 3072 x 1024 + 3 x 3072 x 8192 + 2 x 3072) + 3072.
    # Model card: 3.21B.
    ("llama-3.2-3b", 3_212_749_824, 3.21, 2),
    # 2 x 151936 x 4096 + 36 x (2 x 4096^2 + 2 x 4096 x 1024 + 2 x 128 (QK-norm)
    # + 3 x 4096 x 12288 + 2 x 4096) + 4096. Model card (Qwen/Qwen3-8B): 8.2B.
    ("qwen3-8b", 8_190_735_360, 8.2, 1),
    # Model card (Qwen/Qwen3-32B): 32.8B.
    ("qwen3-32b", 32_762_123_264, 32.8, 1),
    # 2 x 151936 x 2048 + 48 x (2048 x 4096 x 2 + 2 x 2048 x 512 + 256 + 2048 x 128 (router)
    # + 128 x 3 x 2048 x 768 + 2 x 2048) + 2048. Model card (Qwen/Qwen3-30B-A3B): 30.5B.
    ("qwen3-30b-a3b", 30_532_122_624, 30.5, 1),
    # Model card (Qwen/Qwen3-235B-A22B): 235B.
    ("qwen3-235b-a22b", 235_093_634_560, 235, 0),
    # OpenAI's model card, table 1: 20.91B and 116.83B total.
    ("gpt-oss-20b", 20_914_757_184, 20.91, 2),
    ("gpt-oss-120b", 116_829_156_672, 116.83, 2),
])
def test_total_parameters(name, exact, published, digits):
    total = _load(name).params()
    assert total == exact
    assert abs(total / B - published) < 10 ** -digits   # cards round or truncate (1.2358: 1.23)


@pytest.mark.parametrize("name,active,published,digits", [
    # A token visits 8 of 128 experts: the total less 48 x 120 x 3 x 2048 x 768. Model card:
    # 3.3B activated. Our active figure counts the input embedding (a row of it is read).
    ("qwen3-30b-a3b", 3_353_032_704, 3.3, 1),
    ("qwen3-235b-a22b", 22_190_763_520, 22, 0),
])
def test_active_parameters_of_qwen3_moe(name, active, published, digits):
    assert _load(name).active_params() == active
    assert abs(active / B - published) < 10 ** -digits   # the card truncates: 3.35 -> 3.3


@pytest.mark.parametrize("name,active_without_embedding,published", [
    # Per layer: attention 26,550,144 (q, k, v, o with biases and 64 sinks), router
    # 2880 x E + E, 4 experts of (2880 x 5760 + 5760 + 2880 x 2880 + 2880), two norms 5760;
    # plus the LM head 201088 x 2880 and the final norm. OpenAI's table 1 leaves out the
    # input embedding: 3.61B and 5.13B active.
    ("gpt-oss-20b", 3_608_307_264, 3.61),
    ("gpt-oss-120b", 5_132_849_472, 5.13),
])
def test_gpt_oss_active_parameters_as_openai_counts_them(name, active_without_embedding,
                                                         published):
    m = _load(name)
    embedding = 201088 * 2880
    assert m.active_params() - embedding == active_without_embedding
    assert round(active_without_embedding / B, 2) == published


def test_qk_norm_holds_one_head_width_gain():
    """Qwen3's q_norm and k_norm are RMSNorm(head_dim): 128 parameters each, shared by the
    heads, though they normalise the whole 4096-wide query (32 heads)."""
    by_op = {o.name: o for o in _load("qwen3-8b").params_by_op()}
    assert by_op["layers.q_norm"].params == by_op["layers.k_norm"].params == 128
    node = _load("qwen3-8b").graph("decode").nodes["layers.q_norm"]["op"]
    assert node.flops == 4 * S.batch * 32 * 128          # 4 operations per element, all heads


def test_tied_llama_reads_the_embedding_table_in_its_head():
    head = _load("llama-3.2-1b").graph("decode").nodes["lm_head"]["op"]
    assert head.params == 0
    assert [a.tensor for a in head.reads if a.cls == "weight"] == ["embed.weight"]


# --- layer patterns: cycle() ------------------------------------------------------------------

def test_gpt_oss_alternates_sliding_and_full_layers():
    """layer_types of gpt-oss-20b: 24 layers, sliding_attention at the even indices."""
    graph = _load("gpt-oss-20b").graph("decode")
    repeats = {n.name: n.repeat for n in nodes(graph)}
    assert repeats["layers.sliding_attention.q"] == repeats["layers.full_attention.q"] == 12
    windows = {n.name: n.attrs.get("window") for n in nodes(graph) if n.kind == "qk_matmul"}
    assert windows == {"layers.sliding_attention.attn.qk": 128,
                       "layers.full_attention.attn.qk": sympy.oo}


PATTERN = """
block mlp(x) {
  n = rmsnorm(x)
  up = linear(n, out=8)
  down = linear(up, out=4)
  out = add(x, down)
  return out
}
block local(x) {
  out = mlp(x) inline
  return out
}
block global(x) {
  out = mlp(x) inline
  return out
}
model "m" {
  params { layers = 62 }
  e = embedding(tokens, vocab=10, dim=4)
  layers = cycle(e, local=5, global=1) repeat layers
}
"""


def test_a_pattern_that_does_not_divide_the_layers_cycles_from_layer_zero(write_arch):
    """Gemma 3's 5:1 over 62 layers: layer i is global when i mod 6 = 5, so 10 global layers
    (5, 11, ..., 59) and 52 local ones."""
    graph = costdsl.load(write_arch(PATTERN)).graph("decode")
    repeats = {n.name: n.repeat for n in nodes(graph)}
    assert repeats["layers.local.up"] == 52 and repeats["layers.global.up"] == 10


def test_a_pattern_longer_than_the_stack_drops_the_blocks_it_never_reaches(write_arch):
    graph = costdsl.load(write_arch(PATTERN.replace("layers = 62", "layers = 3"))).graph("decode")
    names = {n.name for n in nodes(graph)}
    assert "layers.local.up" in names and not any(".global." in n for n in names)


@pytest.mark.parametrize("statement,message,column", [
    ("layers = cycle(e, local, global)", "cycle() needs `repeat N`", 12),
    ("layers = cycle(e, local, rmsnorm) repeat layers", "'rmsnorm' is not a block", 28),
    ("layers = cycle(e, local, global=1) repeat layers", "not both", 12),
    ("layers = cycle(e, local=0) repeat layers", "positive whole number", 21),
    ("layers = cycle(e) repeat layers", "at least one block", 12),
])
def test_cycle_errors_name_the_place(write_arch, statement, message, column):
    text = PATTERN.replace("layers = cycle(e, local=5, global=1) repeat layers", statement)
    with pytest.raises(CostDSLError) as info:
        costdsl.load(write_arch(text)).graph("decode")
    err = info.value
    assert message in str(err)
    assert (err.line, err.column) == (20, column)


# --- sliding windows and sinks: decode traffic by hand ------------------------------------------

def _decode_op(model, name, seq, batch=1):
    a = model.analyze("nvidia-h100-sxm", batch=batch, seq=seq, stages=("decode",))
    return next(o for o in a.stages["decode"].ops if o.name == name)


def test_a_local_layer_reads_the_window_not_the_context():
    """gpt-oss decode at seq 32k: a sliding layer's QK^T reads 128 cached keys of 8 heads x 64
    (128 x 512 x 2 bytes), a full layer's 32,769 of them."""
    m = _load("gpt-oss-20b")
    local = _decode_op(m, "layers.sliding_attention.attn.qk", 32768)
    full = _decode_op(m, "layers.full_attention.attn.qk", 32768)
    assert local.bytes_by_class["kv"] == 128 * 8 * 64 * 2
    assert full.bytes_by_class["kv"] == 32769 * 8 * 64 * 2


def test_the_sink_adds_one_logit_per_head():
    """softmax over 128 scores and the sink: 5 x 64 heads x 129 operations per token, reading
    the 64 sinks (bf16) beside the scores; the sinks are 64 parameters per layer."""
    m = _load("gpt-oss-20b")
    soft = _decode_op(m, "layers.sliding_attention.attn.softmax", 32768)
    assert soft.flops == 5 * 64 * 129
    assert soft.bytes_by_class["weight"] == 64 * 2
    by_op = {o.name: o.params for o in m.params_by_op()}
    assert by_op["layers.sliding_attention.attn.softmax"] == 64
    fused = m.with_passes(["flash_attention()"])
    flash = _decode_op(fused, "layers.sliding_attention.attn[qk+softmax+sv]", 32768)
    assert flash.flops == 2 * 64 * 128 * 128 + 5 * 64 * 129


def test_gpt_oss_kv_cache_grows_with_the_full_layers_only():
    """KV bytes per sequence at context c: 18 full layers x 2 (K, V) x 8 heads x 64 x 2 bytes x c, plus 18
    sliding layers x the same x min(c, 128): 36,864 c + 36,864 min(c, 128)."""
    decode = _load("gpt-oss-120b").graph("decode")
    kv = kv_cache_bytes(decode, S.seq).subs(S.kv_bits, 16)
    expected = S.batch * (36864 * S.seq + 36864 * sympy.Min(S.seq, 128))
    assert sympy.simplify(kv - expected) == 0


def test_mxfp4_experts_take_four_and_a_quarter_bits():
    """The shipped gpt-oss files quantize the experts to MXFP4: 4 bits + an 8-bit scale per 32.
    Weights: experts 36 x 3 x 128 x 2880^2 (+ biases) at 4.25 bits, the rest at 16."""
    m = _load("gpt-oss-120b")
    by_op = {o.name: o.params for o in m.params_by_op()}
    experts = sum(v for k, v in by_op.items() if k.split(".")[-1] in ("gate", "up", "down"))
    weights = m.memory("decode").weights
    expected = sympy.Rational(425, 800) * experts * 18 + 2 * (m.params() - experts * 18)
    assert sympy.simplify(weights.subs(S.w_bits, 16) - expected) == 0
    assert 64e9 < float(weights.subs(S.w_bits, 16)) < 66e9    # the checkpoint: about 65 GB


def test_moe_biases_count_in_params_and_flops():
    """gpt-oss's experts carry biases: gate and up 2880 each, down 2880; the router 32."""
    by_op = {o.name: o.params for o in _load("gpt-oss-20b").params_by_op()}
    assert by_op["layers.full_attention.moe.gate"] == 32 * (2880 * 2880 + 2880)
    assert by_op["layers.full_attention.moe.router"] == 2880 * 32 + 32


# --- symbolic answers -------------------------------------------------------------------------

def test_crossover_in_seq_says_the_window_flattens_a_local_layer():
    answer = _load("gpt-oss-20b").crossover("seq", "nvidia-h100-sxm", stage="decode", batch=8)
    local = next(c for c in answer.ops if c.op == "layers.sliding_attention.attn.qk")
    assert "flat beyond seq = 127" in local.reason and "sliding window" in local.reason


def test_fit_on_an_h100_counts_only_the_full_layers_growing():
    """gpt-oss-120b, MXFP4 experts, FlashAttention, batch 1 on one H100: one sequence of s
    tokens holds 36,864 s bytes of full-layer cache, 36,864 x 128 of sliding-layer cache (the
    window) and, at the prefill's activation peak, 13 x 2880 x 2 = 74,880 s bytes (the routed
    gate, up and activation rows, 4 x 2880 each, beside the residual): the longest context is
    the largest s with 111,744 s + 4,718,592 <= capacity - weights."""
    m = _load("gpt-oss-120b").with_passes(["flash_attention()"])
    fit = m.fit("nvidia-h100-sxm", seq=2048, batch=1)
    free = fit.capacity_bytes - fit.weights_bytes
    s = fit.max_seq
    assert 111744 * s + 4718592 <= free < 111744 * (s + 1) + 4718592
    assert s > 100_000


# --- every new model through the commands -------------------------------------------------------

NEW = ["llama-3.2-1b", "llama-3.2-3b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b",
       "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b"]


@pytest.mark.parametrize("name", NEW)
def test_every_new_model_runs_through_the_commands(name):
    path = str(MODELS / f"{name}.arch")
    for args in (["check", path], ["params", path],
                 ["analyze", path, "--hw", "nvidia-h100-sxm", "--batch", "4", "--seq", "1024"],
                 ["formulas", path, "--stage", "decode"],
                 ["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "batch"]):
        result = subprocess.run([sys.executable, "-m", "costdsl", *args], capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, (args, result.stderr)
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("name", ["qwen3-8b", "qwen3-30b-a3b", "gpt-oss-120b"])
def test_serving_passes_and_tensor_parallel_compose(name):
    m = _load(name).with_passes(["tensor_parallel(n=4)", "fuse_serving()"])
    a = m.analyze("nvidia-dgx-h100", batch=8, seq=2048)
    assert a.stages["decode"].total.time_s > 0


# --- import -----------------------------------------------------------------------------------

@pytest.mark.parametrize("config,shipped", [
    ("llama-3.2-1b.json", "llama-3.2-1b.arch"),
    ("qwen3-8b.json", "qwen3-8b.arch"),
    ("qwen3-32b.json", "qwen3-32b.arch"),
    ("qwen3-30b-a3b.json", "qwen3-30b-a3b.arch"),
    ("qwen3-235b-a22b.json", "qwen3-235b-a22b.arch"),
    ("gpt-oss-20b.json", "gpt-oss-20b.arch"),
    ("gpt-oss-120b.json", "gpt-oss-120b.arch"),
])
def test_imported_config_matches_the_shipped_model(tmp_path, config, shipped):
    out = tmp_path / "imported.arch"
    result = subprocess.run([sys.executable, "-m", "costdsl", "import",
                             str(DATA / "configs" / config), "-o", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported, reference = costdsl.load(out), costdsl.load(MODELS / shipped)
    assert imported.params() == reference.params()
    assert imported.active_params() == reference.active_params()
    assert imported.memory("decode").weights == reference.memory("decode").weights


def test_tied_qwen3_imports_with_its_head_counted_once():
    """Qwen/Qwen3-0.6B (tie_word_embeddings: true): 151936 x 1024 + 28 x (1024 x 2048 x 2
    + 2 x 1024 x 1024 + 256 + 3 x 1024 x 3072 + 2048) + 1024 = 596,049,920; model card 0.6B,
    0.44B without the embedding."""
    from costdsl.language.importer import read_config, to_arch
    text = to_arch(read_config(DATA / "configs" / "qwen3-0.6b.json"), "qwen3-0.6b.json")
    assert 'extends "qwen3_tied"' in text
    m = costdsl.load(MODELS / "imported-qwen3.arch", text=text)
    assert m.params() == 596_049_920
    assert round(int(m.params() - 151936 * 1024) / B, 2) == 0.44


def test_import_refuses_what_the_families_do_not_say():
    from costdsl.language.importer import to_arch
    oss = {"model_type": "gpt_oss", "layer_types": ["full_attention", "sliding_attention"]}
    with pytest.raises(CostDSLError, match="layer 0 is 'full_attention'"):
        to_arch(oss, "config.json")
    with pytest.raises(CostDSLError, match="'mlp_only_layers' is \\[0\\]"):
        to_arch({"model_type": "qwen3_moe", "mlp_only_layers": [0]}, "config.json")
    with pytest.raises(CostDSLError, match="'use_sliding_window' is True"):
        to_arch({"model_type": "qwen3", "use_sliding_window": True}, "config.json")
    with pytest.raises(CostDSLError, match="untied LM head"):
        to_arch({"model_type": "mixtral", "tie_word_embeddings": True}, "config.json")
