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
    # 2 x 154880 x 6144 + 78 x (165,022,208 latent attention + 9,371,904 indexer + 2 x 6144)
    # + 3 x 3 x 6144 x 12288 (dense MLPs) + 75 x (257 x 3 x 6144 x 2048 + 256 x 6144 router)
    # + 6144. GLM-5 technical report, table 1: 744B (without its MTP layer).
    ("glm-5", 743_911_199_232, 744, 0),
    # 2 x 163840 x 7168 + 61 x (101,124,096 + 2 x 7168) + 3 x 7168 x 18432 + 60 x (385 x 3 x
    # 7168 x 2048 + 384 x 7168) + 7168. Kimi K2's model card (the same decoder): 1T, i.e.
    # 1.0T to the tenth (digits -2: within 100B).
    ("kimi-k2.5", 1_026_408_209_408, 1000, -2),
    # 2 x 202048 x 5120 + 48 x (62,914,560 attention + 2 x 5120 + 5120 x 16 router
    # + 17 x 3 x 5120 x 8192 experts and shared expert) + 5120 (the QK-norm holds no gain).
    # Model card: 109B with the vision encoder (not modelled, ~0.9B): 107.8B here.
    ("llama-4-scout", 107_769_861_120, 108, 0),
    # 24 dense layers (62,914,560 + 2 x 5120 + 3 x 5120 x 16384) and 24 MoE layers
    # (62,914,560 + 2 x 5120 + 5120 x 128 + 129 x 3 x 5120 x 8192) + 2 x 202048 x 5120 + 5120.
    # Model card: 400B.
    ("llama-4-maverick", 400_711_848_960, 400, 0),
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


@pytest.mark.parametrize("name,active,embedding,published,with_embedding", [
    # 8 of 256 routed experts and the shared one: the total less 75 x 248 x 3 x 6144 x 2048.
    # GLM-5 technical report: 40B activated, which is our figure less the input embedding
    # (154880 x 6144), truncated (40.83B).
    ("glm-5", 41_784_709_632, 154880 * 6144, 40, False),
    # 8 of 384 and the shared one: the total less 60 x 376 x 3 x 7168 x 2048. Kimi K2's card:
    # 32B activated: our figure with the embedding's row counted, truncated (32.86B; 31.69B
    # without the table).
    ("kimi-k2.5", 32_861_477_888, 163840 * 7168, 32, True),
    # one routed expert and the shared one per MoE layer; Meta's cards: 17B activated (ours
    # with the embedding's row: 17.17B and 17.18B)
    ("llama-4-scout", 17_172_894_720, 202048 * 5120, 17, True),
    ("llama-4-maverick", 17_184_691_200, 202048 * 5120, 17, True),
])
def test_active_parameters_of_deepseek_layouts(name, active, embedding, published,
                                               with_embedding):
    assert _load(name).active_params() == active
    counted = active if with_embedding else active - embedding
    assert int(counted / B) == published


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


def test_llama_4_chunked_layers_hold_a_chunk_and_the_nope_layers_the_context():
    """Llama 4 Scout's KV cache at context c: 12 NoPE layers x 2 (K, V) x 8 heads x 128 x 2
    bytes x c, and 36 chunked layers x the same x min(c, 8192)."""
    kv = kv_cache_bytes(_load("llama-4-scout").graph("decode"), S.seq).subs(S.kv_bits, 16)
    per_layer = 2 * 8 * 128 * 2
    expected = S.batch * (12 * per_layer * S.seq + 36 * per_layer * sympy.Min(S.seq, 8192))
    assert sympy.simplify(kv - expected) == 0


def test_llama_4_layers_as_the_config_says():
    """Scout: RoPE, L2 QK-norm (3 operations per element, no gain) and an 8,192-token chunk
    on layers 0-2 of every 4, none of them on layer 3; Maverick: no QK-norm, dense MLPs
    (16,384 wide) on even layers, 128 experts on odd ones."""
    scout = _load("llama-4-scout").graph("decode")
    names = set(scout.nodes)
    assert "layers.chunked_moe.q_norm" in names and "layers.chunked_moe.q_rot" in names
    assert {n for n in names if n.startswith("layers.global_moe.") and ("_rot" in n or
                                                                        "q_norm" in n)} == set()
    norm = scout.nodes["layers.chunked_moe.q_norm"]["op"]
    assert norm.params == 0 and norm.flops == 3 * 40 * 128 * S.batch   # 40 heads x 128 a token
    assert norm.repeat == 36 and scout.nodes["layers.global_moe.attn.qk"]["op"].repeat == 12
    maverick = _load("llama-4-maverick")
    kinds = {n.split(".")[1] for n in maverick.graph("decode").nodes if n.startswith("layers.")}
    assert kinds == {"chunked_dense", "chunked_moe_plain", "global_moe"}
    dense = maverick.graph("decode").nodes["layers.chunked_dense.gate"]["op"]
    assert dense.params == 5120 * 16384
    assert maverick.graph("decode").nodes["layers.chunked_dense.gate"]["op"].repeat == 24


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

NEW = ["llama-3.2-1b", "llama-3.2-3b", "qwen3-8b", "qwen3-32b", "qwen3-30b-a3b", "qwen3.5-27b",
       "qwen3.5-35b-a3b", "qwen3.5-397b-a17b",
       "qwen3-235b-a22b", "gpt-oss-20b", "gpt-oss-120b", "nemotron-3-nano-30b-a3b",
       "deepseek-v3.2", "glm-5", "kimi-k2.5", "llama-4-scout", "llama-4-maverick",
       "nemotron-3-super-120b-a12b", "gemma-4-31b", "gemma-4-26b-a4b", "deepseek-v4-flash",
       "deepseek-v4-pro", "minimax-m3", "kimi-k3", "step-3.7-flash"]


@pytest.mark.parametrize("name", NEW)
def test_every_new_model_runs_through_the_commands(name, capsys):
    from costdsl.cli import main
    path = str(MODELS / f"{name}.arch")
    for args in (["check", path], ["params", path],
                 ["analyze", path, "--hw", "nvidia-h100-sxm", "--batch", "4", "--seq", "1024"],
                 ["formulas", path, "--stage", "decode"],
                 ["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "batch"]):
        assert main(args) == 0, args
        out, err = capsys.readouterr()
        assert out and "Traceback" not in err


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
    ("deepseek-v3.2.json", "deepseek-v3.2.arch"),
    ("glm-5.json", "glm-5.arch"),              # model_type glm_moe_dsa
    ("kimi-k2.5.json", "kimi-k2.5.arch"),      # kimi_k25: its text_config, kimi_k2
    ("llama-4-scout.json", "llama-4-scout.arch"),         # llama4: its text_config
    ("llama-4-maverick.json", "llama-4-maverick.arch"),   # the dense/MoE alternation
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


# --- Qwen3.5: Gated DeltaNet beside gated full attention ----------------------------------------

def test_qwen3_5_text_decoder_parameters():
    """Qwen3.5-27B's text decoder, from its config.json: embedding and head 2 x 248320 x 5120;
    48 DeltaNet layers of qkv 5120 x (2 x 16 x 128 + 48 x 128), z 5120 x 6144, a/b 5120 x 96,
    conv 10240 x 4, A_log and dt_bias 2 x 48, gated norm 128, out_proj 6144 x 5120; 16 gated
    attention layers of q and its gate 2 x 5120 x 6144, k and v 2 x 5120 x 1024, QK-norm 2 x 256,
    o 6144 x 5120; 64 SwiGLU MLPs 3 x 5120 x 17408 and 2 x 5120 norms; the final norm 5120:
    26,895,998,464. The name says 27B (the card's figure includes the vision encoder, which is
    not modelled, and not the MTP layer)."""
    assert _load("qwen3.5-27b").params() == 26_895_998_464
    assert round(int(_load("qwen3.5-35b-a3b").params()) / B) == 35
    assert round(int(_load("qwen3.5-35b-a3b").active_params()) / B) == 3
    assert round(int(_load("qwen3.5-397b-a17b").params()) / B) == 396   # 397 with the vision
    assert round(int(_load("qwen3.5-397b-a17b").active_params()) / B) == 17


def test_a_deltanet_decode_step_reads_and_writes_its_state():
    """Qwen3.5-27B, batch 1, decode: the delta rule does, per value head, 7 dk dv + 2 dv + 9
    operations (decay, k^T S, correction, rank-1 update, readout; gates) and 6 Hk dk for the
    L2-norms of q and k: 48 (7 x 128^2 + 2 x 128 + 9) + 6 x 16 x 128 = 5,530,032 at any context;
    it reads and writes the 48 x 128 x 128 state (bf16): 2 x 1,572,864 bytes."""
    m = _load("qwen3.5-27b")
    for seq in (1024, 131072):
        rule = _decode_op(m, "layers.linear_attention.attn.rule", seq)
        assert rule.flops == 5_530_032
        assert rule.bytes_by_class["kv"] == 2 * 48 * 128 * 128 * 2


def test_a_deltanet_prefill_runs_the_chunkwise_form():
    """Prefill of 4,096 tokens, batch 1, chunks of 64: per token and value head 6 dk dv +
    64 (6 dk + 4 dv + 2) + 64^2 / 3, plus the gates and the q/k norms; the state written once
    (48 x 128^2 x 2 bytes) and each of the 64 chunk boundaries' states written and read back."""
    m = _load("qwen3.5-27b")
    a = m.analyze("nvidia-h100-sxm", batch=1, seq=4096, stages=("prefill",))
    rule = next(o for o in a.stages["prefill"].ops if o.name == "layers.linear_attention.attn.rule")
    per_token = 48 * (6 * 128 * 128 + 64 * (6 * 128 + 4 * 128 + 2) + sympy.Rational(64 ** 2, 3)) \
        + 6 * 16 * 128 + 9 * 48
    assert rule.flops == pytest.approx(float(4096 * per_token), rel=1e-12)
    state = 48 * 128 * 128 * 2
    assert rule.bytes_by_class["kv"] == state
    assert rule.bytes_by_class["act"] == 4096 * (10240 + 96 + 6144) * 2 + 2 * 64 * state


def test_qwen3_5_memory_holds_the_full_layers_cache_and_fixed_states():
    """Per sequence: 16 full layers x 2 x 4 KV heads x 256 x 2 bytes = 65,536 bytes per token,
    and 48 DeltaNet layers' fixed state: (48 x 128 x 128 + 10240 x 3 of the conv) x 2 bytes =
    78,446,592 bytes whatever the context."""
    kv = kv_cache_bytes(_load("qwen3.5-27b").graph("decode"), S.seq).subs(S.kv_bits, 16)
    assert sympy.expand(kv - S.batch * (65536 * S.seq + 78_446_592)) == 0


def test_tensor_parallel_splits_deltanet_and_gated_attention_by_heads():
    """TP 4 on Qwen3.5-27B: every projection, the conv, the delta rule and its state a quarter;
    the gated norm's and QK-norm's shared gains kept whole; the attention's output gate split
    with its heads; an all-reduce after each out_proj, o and down."""
    base = _load("qwen3.5-27b")
    tp = base.with_passes(["tensor_parallel(n=4)"])
    g0, g1 = base.graph("decode"), tp.graph("decode")
    ratio = lambda name, field: sympy.simplify(getattr(g1.nodes[name]["op"], field)
                                               / getattr(g0.nodes[name]["op"], field))
    for name in ("layers.linear_attention.attn.qkv", "layers.linear_attention.attn.rule",
                 "layers.linear_attention.attn.conv", "layers.linear_attention.attn.out_proj",
                 "layers.full_attention.attn_gate", "layers.full_attention.gate_act",
                 "layers.full_attention.gated", "layers.full_attention.attn.qk"):
        assert ratio(name, "flops") == sympy.Rational(1, 4), name
    for name in ("layers.linear_attention.attn.norm", "layers.full_attention.q_norm"):
        assert ratio(name, "params") == 1, name
    rule = g1.nodes["layers.linear_attention.attn.rule"]["op"]
    assert sum(a.elements for a in rule.writes if a.cls == "kv") == S.batch * 12 * 128 * 128
    reduced = sorted(n for n in g1.nodes if g1.nodes[n]["op"].kind == "all_reduce")
    assert reduced == ["layers.full_attention.down.all_reduce",
                       "layers.full_attention.o.all_reduce",
                       "layers.linear_attention.attn.out_proj.all_reduce",
                       "layers.linear_attention.down.all_reduce"]


def test_tensor_parallel_splits_qwen3_attention_behind_its_qk_norm():
    """The query projection sits behind QK-norm and RoPE: the layout finds it through them
    (it used to leave the attention whole on every device)."""
    base = _load("qwen3-8b")
    g0 = base.graph("decode")
    g1 = base.with_passes(["tensor_parallel(n=4)"]).graph("decode")
    for name in ("layers.q", "layers.attn.qk", "layers.q_norm", "layers.k_rot"):
        assert sympy.simplify(g1.nodes[name]["op"].flops / g0.nodes[name]["op"].flops) \
            == sympy.Rational(1, 4), name
    assert g1.nodes["layers.q_norm"]["op"].params == 128


def test_tensor_parallel_refuses_an_attention_it_cannot_split(write_arch):
    """A query that reaches attention through an op the layout has no rule for is an error,
    not an attention left whole on every device."""
    path = write_arch("""
model "odd" {
  params { hidden = 64 }
  e    = embedding(tokens, vocab=10, dim=hidden)
  q    = linear(e, out=hidden)
  qa   = silu(q)
  k    = linear(e, out=hidden)
  v    = linear(e, out=hidden)
  attn = attention(qa, k, v, heads=4)
  o    = linear(attn, out=hidden)
}
""")
    with pytest.raises(CostDSLError, match="cannot split attn.qk"):
        costdsl.load(path, passes=["tensor_parallel(n=2)"]).graph("decode")


def test_qwen3_5_imports_from_its_multimodal_config(tmp_path):
    for config, shipped in (("qwen3.5-27b.json", "qwen3.5-27b.arch"),
                            ("qwen3.5-35b-a3b.json", "qwen3.5-35b-a3b.arch"),
                            ("qwen3.5-397b-a17b.json", "qwen3.5-397b-a17b.arch")):
        from costdsl.language.importer import read_config, to_arch
        text = to_arch(read_config(DATA / "configs" / config), config)
        assert "vision encoder is not imported" in text
        imported = costdsl.load(tmp_path / "q.arch", text=text)
        reference = costdsl.load(MODELS / shipped)
        assert imported.params() == reference.params()
        assert imported.active_params() == reference.active_params()


def test_qwen3_5_import_checks_the_pattern_and_the_gate():
    from costdsl.language.importer import to_arch
    text = {"model_type": "qwen3_5", "text_config": {
        "model_type": "qwen3_5_text", "layer_types": ["linear_attention", "full_attention"]}}
    with pytest.raises(CostDSLError, match="layer 1 is 'full_attention'.*'linear_attention'"):
        to_arch(text, "config.json")
    with pytest.raises(CostDSLError, match="'attn_output_gate' is False"):
        to_arch({"model_type": "qwen3_5_text", "attn_output_gate": False}, "config.json")


# --- Nemotron 3: Mamba-2 beside attention and squared-ReLU experts ------------------------------

def test_nemotron_3_nano_parameters():
    """NVIDIA-Nemotron-3-Nano-30B-A3B, its config.json: 23 Mamba-2 layers of z 2688 x 4096,
    x/B/C/dt 2688 x (4096 + 2 x 8 x 128 + 64), conv 6144 x 4 + 6144, A_log, D, dt_bias 3 x 64,
    gated norm 4096, out_proj 4096 x 2688; 23 MoE layers of router 2688 x 128, 128 experts of
    2 x 2688 x 1856 (squared ReLU: no gate), a shared expert 2 x 2688 x 3712; 6 attention
    layers of q and o 2 x 2688 x 4096, k and v 2 x 2688 x 256; a norm per layer, the final norm,
    embedding and head 2 x 131072 x 2688: 31,577,937,344. Model card: 31.6B total, 3.2B active
    (3.6B with the embeddings): 6 of 128 experts."""
    m = _load("nemotron-3-nano-30b-a3b")
    assert m.params() == 31_577_937_344
    active = int(m.active_params())
    assert active == 3_580_073_408
    assert round(active / B, 1) == 3.6
    assert round((active - 131072 * 2688) / B, 1) == 3.2


def test_nemotron_layers_follow_the_hybrid_override_pattern():
    graph = _load("nemotron-3-nano-30b-a3b").graph("decode")
    repeats = {n.name: n.repeat for n in nodes(graph)}
    assert (repeats["layers.M.mixer.scan"], repeats["layers.E.moe.router"],
            repeats["layers.A.attn.qk"]) == (23, 23, 6)


def test_a_mamba2_decode_step_by_hand():
    """toy3's Mamba-2 layer (H 4 heads of P 2, N 3, G 2), batch 1 decode: per head the decay
    (2), dt x (P), the update 3 P N and the readout 2 P N, plus dt's softplus (3) and the D skip
    (2 P): 4 (5 x 2 x 3 + 2 + 2 + 3 + 4) = 164 operations; it reads and writes the 4 x 2 x 3
    state, and reads x, B, C (8 + 12) and dt (4) of its inputs."""
    m = costdsl.load(DATA / "toy3.arch")
    a = m.analyze("nvidia-h100-sxm", batch=1, seq=64, stages=("decode",))
    scan = next(o for o in a.stages["decode"].ops if o.name == "layers.ssm_layer.m.scan")
    assert scan.flops == 164
    assert scan.bytes_by_class["kv"] == 2 * 24 * 2
    assert scan.bytes_by_class["act"] == (20 + 4 + 8) * 2      # reads u and dt, writes y


def test_a_mamba2_prefill_by_hand():
    """toy3, prefill of 16 tokens (chunks of 4): per token 4 heads x (4 P N + 2 q P + 2 q +
    2 P N / q) + 2 q N G + 4 (3 + 2 P) = 4 (24 + 16 + 8 + 3) + 48 + 28 = 280; the state written
    once, and each of the 4 chunks' states written and read back (4 x 24 each way)."""
    m = costdsl.load(DATA / "toy3.arch")
    a = m.analyze("nvidia-h100-sxm", batch=1, seq=16, stages=("prefill",))
    scan = next(o for o in a.stages["prefill"].ops if o.name == "layers.ssm_layer.m.scan")
    assert scan.flops == 16 * 280
    assert scan.bytes_by_class["kv"] == 24 * 2
    assert scan.bytes_by_class["act"] == (16 * (20 + 4 + 8) + 2 * 4 * 24) * 2


def test_nemotron_memory_by_hand():
    """Per sequence: 6 attention layers x 2 x 2 KV heads x 128 x 2 bytes = 6,144 bytes per
    token, and 23 Mamba-2 layers' fixed state (64 x 64 x 128 + 6144 x 3 of the conv) x 2 bytes
    = 24,965,120 bytes."""
    kv = kv_cache_bytes(_load("nemotron-3-nano-30b-a3b").graph("decode"), S.seq)
    assert sympy.expand(kv.subs(S.kv_bits, 16) - S.batch * (6144 * S.seq + 24_965_120)) == 0


def test_nemotron_imports_its_pattern_and_latent_experts(tmp_path):
    from costdsl.language.importer import read_config, to_arch
    for name in ("nemotron-3-nano-30b-a3b", "nemotron-3-super-120b-a12b"):
        config = read_config(DATA / "configs" / f"{name}.json")
        imported = costdsl.load(tmp_path / "n.arch", text=to_arch(config, "n.json", "N"))
        reference = _load(name)
        assert imported.params() == reference.params(), name
        assert imported.active_params() == reference.active_params(), name
        module = reference.mtp_module()
        assert (imported.mtp_module() is None) == (module is None), name
        if module is not None:
            assert imported.mtp_module().params() == module.params()
    other = to_arch({**config, "mtp_hybrid_override_pattern": "*-"}, "n.json")
    assert "'*-': not written" in other and "-MTP" not in other
    config = read_config(DATA / "configs" / "nemotron-3-nano-30b-a3b.json")
    with pytest.raises(CostDSLError, match="holds 'X'"):
        to_arch({**config, "hybrid_override_pattern": "X" * 52}, "n.json")
    with pytest.raises(CostDSLError, match="has 3 letters for 52 layers"):
        to_arch({**config, "hybrid_override_pattern": "MEM"}, "n.json")


def test_nemotron_3_super_parameters():
    """NVIDIA-Nemotron-3-Super-120B-A12B, its config.json. 40 Mamba-2 layers: z 4096 x 8192,
    x/B/C/dt 4096 x (8192 + 2 x 8 x 128 + 128), conv 10240 x 4 + 10240, A_log/D/dt_bias 3 x 128,
    gated norm 8192, out_proj 8192 x 4096, norm 4096: 109,640,064 each. 40 LatentMoE layers:
    norm 4096, router 4096 x 512, fc1/fc2_latent_proj 2 x 4096 x 1024, 512 experts of
    2 x 1024 x 2688 (squared ReLU: no gate), shared expert 2 x 4096 x 5376: 2,873,102,336 each.
    8 attention layers: norm, q and o 4096^2, k and v 4096 x 256: 35,655,680 each. Embedding and
    head 2 x 131072 x 4096, final norm. Active: 22 of 512 experts (22 x 2 x 1024 x 2688 per
    layer). Published (NVIDIA's page and card): 120B total, 12B active."""
    m = _load("nemotron-3-super-120b-a12b")
    mamba, moe, attn = 109_640_064, 2_873_102_336, 35_655_680
    assert m.params() == 40 * mamba + 40 * moe + 8 * attn + 2 * 131072 * 4096 + 4096 \
        == 120_668_687_360
    routed = 512 * 2 * 1024 * 2688
    active = m.params() - 40 * routed + 40 * 22 * 2 * 1024 * 2688
    assert m.active_params() == active == 12_770_216_960
    assert int(m.params() / B) == 120 and int((active - 131072 * 4096) / B) == 12


def test_latent_experts_decode_step_by_hand():
    """Nemotron 3 Super, one decode token (batch 1): the router reads the 4096-wide input
    (2 x 4096 x 512 operations), fc1_latent_proj takes it to 1024 (2 x 4096 x 1024), each of the
    22 experts it visits runs 1024 -> 2688 -> 1024 (2 x 22 x 1024 x 2688 per linear, reading
    22 x 1024 activations into `up`), the weighted sum of the 22 results (2 x 22 x 1024 more),
    and fc2_latent_proj back to 4096; the shared expert works at 4096."""
    a = _load("nemotron-3-super-120b-a12b").analyze("nvidia-h100-sxm", batch=1, seq=1024,
                                                    stages=("decode",))
    ops = {o.name: o for o in a.stages["decode"].ops}
    assert ops["layers.E.moe.router"].flops == 2 * 4096 * 512
    assert ops["layers.E.moe.latent_down"].flops == 2 * 4096 * 1024
    assert ops["layers.E.moe.up"].flops == 2 * 22 * 1024 * 2688
    assert ops["layers.E.moe.up"].bytes_by_class["act"] == 2 * (22 * 1024 + 22 * 2688)
    assert ops["layers.E.moe.up"].bytes_by_class["weight"] == 2 * 22 * 1024 * 2688
    assert ops["layers.E.moe.down"].flops == 2 * 22 * 2688 * 1024 + 2 * 22 * 1024
    assert ops["layers.E.moe.latent_up"].flops == 2 * 1024 * 4096
    assert ops["layers.E.moe.shared_up"].flops == 2 * 4096 * 5376


# --- Gemma 4: 5 sliding layers per global one, K = V on the global layers ------------------------

def test_gemma_4_parameters():
    """From the config.json text_configs. 31B: 50 sliding layers of q 5376 x 8192, k and v
    5376 x 4096, o 8192 x 5376, q/k norms 2 x 256; 10 global layers of q 5376 x 16384, k
    5376 x 2048 (no v_proj: K = V), o 16384 x 5376, q/k norms 2 x 512; every layer a GeGLU MLP
    3 x 5376 x 21504 and four norms of 5376; the tied embedding 262144 x 5376 once; the final
    norm. Card: 30.7B. 26B A4B: 25 sliding + 5 global layers at hidden 2816 (16 heads; 8 x 256
    and 2 x 512 KV heads), each with the dense MLP 3 x 2816 x 2112, seven norms, the router
    2816 x 128 and 128 experts of 3 x 2816 x 704. Card: 25.2B total, 3.8B active (8 experts;
    the embedding counted, as the card does: 3.1B without it)."""
    m = _load("gemma-4-31b")
    sliding = 2 * 5376 * 8192 + 2 * 5376 * 4096 + 2 * 256
    full = 2 * 5376 * 16384 + 5376 * 2048 + 2 * 512
    layer = 3 * 5376 * 21504 + 4 * 5376
    assert m.params() == 50 * sliding + 10 * full + 60 * layer + 262144 * 5376 + 5376 \
        == 30_697_345_280
    assert round(int(m.params()) / B, 1) == 30.7
    moe = _load("gemma-4-26b-a4b")
    sliding = 2 * 2816 * 4096 + 2 * 2816 * 2048 + 2 * 256
    full = 2 * 2816 * 8192 + 2816 * 1024 + 2 * 512
    experts = 128 * 3 * 2816 * 704
    layer = 3 * 2816 * 2112 + 7 * 2816 + 2816 * 128 + experts
    total = 25 * sliding + 5 * full + 30 * layer + 262144 * 2816 + 2816
    assert moe.params() == total == 25_233_053_440
    active = total - 30 * experts + 30 * 8 * 3 * 2816 * 704
    assert moe.active_params() == active
    assert round(total / B, 1) == 25.2 and round(int(active) / B, 1) == 3.8


def test_gemma_4_caches_by_hand():
    """Per sequence, 26B A4B at 16 bits: the 5 global layers cache K and V (2 heads x 512
    each: K = V shares the projection, but K is normed and rotated, V normed without a gain, so
    both are kept) for every token: 5 x 2 x 2 x 512 x 2 = 20,480 bytes per token; the 25
    sliding layers 2 x 8 x 256 x 2 = 8,192 bytes per token and layer for at most 1,024 tokens."""
    kv = kv_cache_bytes(_load("gemma-4-26b-a4b").graph("decode"), S.seq)
    want = S.batch * (20480 * S.seq + 25 * 8192 * sympy.Min(1024, S.seq))
    assert sympy.simplify(kv.subs(S.kv_bits, 16) - want) == 0


def test_gemma_4_sliding_decode_reads_the_window_not_the_context():
    """Decode at 32,768 cached tokens, batch 1, 31B: a sliding layer's scores read 1,024 cached
    keys of 16 heads x 256 (2 bytes each); a global layer's 32,769 keys of 4 x 512."""
    a = _load("gemma-4-31b").analyze("nvidia-h100-sxm", batch=1, seq=32768, stages=("decode",))
    ops = {o.name: o for o in a.stages["decode"].ops}
    assert ops["layers.sliding_attention.attn.qk"].bytes_by_class["kv"] == 1024 * 16 * 256 * 2
    assert ops["layers.full_attention.attn.qk"].bytes_by_class["kv"] == 32769 * 4 * 512 * 2


def test_gemma_4_imports(tmp_path):
    from costdsl.language.importer import read_config, to_arch
    for name in ("gemma-4-31b", "gemma-4-26b-a4b"):
        config = read_config(DATA / "configs" / f"{name}.json")
        imported = costdsl.load(tmp_path / "g.arch", text=to_arch(config, "g.json"))
        assert imported.params() == _load(name).params(), name
        assert imported.active_params() == _load(name).active_params(), name
    text = {**config["text_config"], "hidden_size_per_layer_input": 256}
    with pytest.raises(CostDSLError, match="'hidden_size_per_layer_input' is 256"):
        to_arch({**config, "text_config": text}, "g.json")
    text = {**config["text_config"], "layer_types": ["sliding_attention"] * 30}
    with pytest.raises(CostDSLError, match="layer 5 is 'sliding_attention'"):
        to_arch({**config, "text_config": text}, "g.json")


# --- DeepSeek-V4: compressed attention, hyper-connections, grouped output projection -------------

V4_FLASH_LAYER = {  # DeepSeek-V4-Flash, per layer, from inference/model.py's tensor shapes
    "attention": 64 + 4096 * 1024 + 1024 + 1024 * 64 * 512 + 4096 * 512 + 512
                 + 8 * 1024 * (64 * 512 // 8) + 8 * 1024 * 4096,
    # attn_sink, wq_a, q_norm, wq_b, wkv, kv_norm, wo_a (8 groups of 1024 x 4096), wo_b
    "ratio4": 2 * 4096 * 2 * 512 + 4 * 2 * 512 + 512                  # Compressor (overlap)
              + 1024 * 64 * 128 + 4096 * 64                            # indexer wq_b, weights
              + 2 * 4096 * 2 * 128 + 4 * 2 * 128 + 128,                # indexer's Compressor
    "ratio128": 2 * 4096 * 512 + 128 * 512 + 512,
    "rest": 2 * 4096 + 2 * (24 * 16384 + 24 + 3)                       # norms, hc_attn/ffn
            + 4096 * 256 + 3 * 4096 * 2048,                             # gate, shared expert
    "experts": 256 * 3 * 4096 * 2048}


def test_deepseek_v4_flash_parameters():
    """43 layers: 2 window-only, 21 ratio-4 (with the indexer), 20 ratio-128 (the config's
    compress_ratios); every layer the attention, hyper-connection mixes (24 x 16384 + 24 + 3
    twice) and the MoE; the embedding and head 2 x 129280 x 4096, the final norm and the head's
    mix (4 x 16384 + 4 + 1). Model card: 284B total, 13B activated (6 of 256 experts; without
    the embedding)."""
    p = V4_FLASH_LAYER
    layer = p["attention"] + p["rest"] + p["experts"]
    total = (43 * layer + 21 * p["ratio4"] + 20 * p["ratio128"] + 2 * 129280 * 4096 + 4096
             + 4 * 16384 + 4 + 1)
    m = _load("deepseek-v4-flash")
    assert m.params() == total == 284_332_230_231
    active = total - 43 * p["experts"] + 43 * 6 * 3 * 4096 * 2048
    assert m.active_params() == active
    assert round(total / B) == 284 and round((active - 129280 * 4096) / B) == 13


def test_deepseek_v4_pro_parameters():
    """61 layers (2 ratio-128, then 30 ratio-4 and 29 ratio-128 in turn) at hidden 7168, 128
    heads, 384 experts of 3072 (top 6), 16 output groups. Model card: 1.6T total, 49B
    activated (without the embedding)."""
    m = _load("deepseek-v4-pro")
    assert round(int(m.params()) / 10 ** 12, 1) == 1.6
    assert round(int(m.active_params() - 129280 * 7168) / B) == 49


def test_deepseek_v4_cache_by_hand():
    """Per sequence and token at 16 bits (DeepSeek-V4-Flash): every layer keeps its last 128
    tokens' 512-wide entries (43 x 512 x 2 bytes, bounded); a ratio-4 layer adds a 512-wide
    entry and a 128-wide index key per 4 tokens, a ratio-128 layer a 512-wide entry per 128:
    2 (21 (512 + 128) / 4 + 20 x 512 / 128) = 6,880 bytes per token (DeepSeek-V3.2: 61 x
    (576 + 128) x 2 = 85,888)."""
    kv = kv_cache_bytes(_load("deepseek-v4-flash").graph("decode"), S.seq)
    want = S.batch * (6880 * S.seq + 43 * 512 * 2 * sympy.Min(128, S.seq))
    assert sympy.simplify(kv.subs(S.kv_bits, 16) - want) == 0


def test_deepseek_v4_decode_attention_by_hand():
    """Decode at 131,072 cached tokens, batch 1: a window-only layer's kernel attends 128
    entries, a ratio-4 layer 128 + 512 (its index_topk of 32,768 compressed), a ratio-128 layer
    128 + 131,073 / 128; each entry 512 wide, read once per sequence (one KV head for the 64
    query heads), 4 x 64 x 512 operations per entry on the matrix units and 5 x 64 per logit
    (one more: the sink) on the vector units. The ratio-4 indexer scores the 32,768.25 entries
    with 64 heads of 128."""
    a = _load("deepseek-v4-flash").analyze("nvidia-h200", batch=1, seq=131072,
                                           stages=("decode",))
    ops = {o.name: o for o in a.stages["decode"].ops}
    for name, entries in (("first", 128), ("middle.csa_layer", 640),
                          ("middle.hca_layer", 128 + 131073 / 128)):
        kernel = ops[f"{name}.attn.attn"]
        assert kernel.flops == pytest.approx(4 * 64 * 512 * entries + 5 * 64 * (entries + 1))
        assert kernel.bytes_by_class["kv"] == pytest.approx(entries * 512 * 2)
    indexer = ops["middle.csa_layer.attn.indexer"]
    assert indexer.flops == pytest.approx(131073 / 4 * (2 * 64 * 128 + 3 * 64 + 1))


def test_hyper_connections_by_hand():
    """One decode token (Flash): hc_pre reads the 4 x 4096 streams and does 2 x 16384 x 24
    (the 24 mixing logits) + 3 x 16384 (RMS) + 4 x 24 + 20 x 4 x 16 (Sinkhorn) + 2 x 16384
    (the weighted sum) operations; hc_post 2 x 4 x 4096 + 2 x 16 x 4096 and writes the 16384
    streams; the grouped wo_a 2 x 8 x 1024 x 4096."""
    a = _load("deepseek-v4-flash").analyze("nvidia-h200", batch=1, seq=1024,
                                           stages=("decode",))
    ops = {o.name: o for o in a.stages["decode"].ops}
    assert ops["first.a_in"].flops == 2 * 16384 * 24 + 3 * 16384 + 4 * 24 + 20 * 4 * 16 \
        + 2 * 16384
    assert ops["first.a_out"].flops == 2 * 4 * 4096 + 2 * 16 * 4096
    assert ops["first.o_a"].flops == 2 * 8 * 1024 * 4096


def test_deepseek_v4_tensor_parallel_splits_heads_and_groups():
    """TP 8: wq_b, the kernel (its heads; the one KV head's entries read whole) and wo_a (a
    group per device) an eighth each, wo_b by rows with an all-reduce after it; 16 devices do
    not split 8 output groups."""
    base = _load("deepseek-v4-flash")
    g0, g1 = base.graph("decode"), base.with_passes(["tensor_parallel(n=8)"]).graph("decode")
    for name in ("middle.csa_layer.attn.q", "middle.csa_layer.attn.attn", "middle.csa_layer.o_a",
                 "middle.csa_layer.o"):
        a, b = g0.nodes[name]["op"], g1.nodes[name]["op"]
        assert sympy.simplify(b.flops / a.flops) == sympy.Rational(1, 8), name
    kernel0, kernel1 = g0.nodes["middle.csa_layer.attn.attn"]["op"], \
        g1.nodes["middle.csa_layer.attn.attn"]["op"]
    kv = lambda node: sum(a.elements for a in node.reads if a.cls == "kv")
    assert sympy.simplify(kv(kernel1) - kv(kernel0)) == 0
    assert "middle.csa_layer.o.all_reduce" in g1.nodes
    with pytest.raises(CostDSLError, match="8 output groups"):
        base.with_passes(["tensor_parallel(n=16)"]).graph("decode")


def test_deepseek_v4_imports_and_its_mtp(tmp_path):
    from costdsl.language.importer import read_config, to_arch
    for name in ("deepseek-v4-flash", "deepseek-v4-pro"):
        config = read_config(DATA / "configs" / f"{name}.json")
        imported = costdsl.load(tmp_path / "v4.arch", text=to_arch(config, "v4.json", "V"))
        assert imported.params() == _load(name).params(), name
        assert imported.mtp_module().params() == _load(name).mtp_module().params(), name
    with pytest.raises(CostDSLError, match="'compress_ratios' holds 16"):
        to_arch({**config, "compress_ratios": [16] * 62}, "v4.json")
    s = _load("deepseek-v4-flash").speculate("nvidia-h200", "mtp(depth=1, accept=0.9)",
                                             batch=8, seq=8192)
    assert s.draft == "DeepSeek-V4-Flash-MTP" and s.speedup > 1


# --- MiniMax-M3: block-sparse attention -----------------------------------------------------------

def test_minimax_m3_parameters():
    """From the config.json: every layer q and o 6144 x 8192, k and v 6144 x 512, QK-norms
    2 x 128, two norms; 57 sparse layers add the index query 6144 x (4 x 128) and key
    6144 x 128 and a MoE (router 6144 x 128, 128 experts of 3 x 6144 x 3072, a shared one);
    3 dense layers a 3 x 6144 x 12288 MLP; embedding and head 2 x 200064 x 6144, the final
    norm. Release: 428B total (with the vision encoder and MTP modules), 23B activated."""
    attention = 2 * 6144 * 8192 + 2 * 6144 * 512 + 2 * 128 + 2 * 6144
    index = 6144 * 512 + 6144 * 128
    expert = 3 * 6144 * 3072
    moe = 6144 * 128 + 128 * expert + expert
    total = (60 * attention + 57 * (index + moe) + 3 * 3 * 6144 * 12288
             + 2 * 200064 * 6144 + 6144)
    m = _load("minimax-m3")
    assert m.params() == total == 426_174_551_040
    active = total - 57 * 124 * expert
    assert m.active_params() == active
    assert round((active - 2 * 200064 * 6144) / B, 1) == 23.5


def test_minimax_m3_block_sparse_decode_by_hand():
    """Decode at 131,072 cached tokens, batch 1: the block selector scores all 131,073 index
    keys (4 heads of 128: 2 x 4 x 128 + 3 x 4 + 1 = 1,037 operations each, reading the
    128-wide keys) and keeps 16 blocks; the attention reads 16 x 128 = 2,048 tokens of its 4
    KV heads of 128 (2 bytes each), not the 131,073; the cache holds every token's keys,
    values and index key."""
    a = _load("minimax-m3").analyze("nvidia-h200", batch=1, seq=131072, stages=("decode",))
    ops = {o.name: o for o in a.stages["decode"].ops}
    blocks = ops["layers.blocks"]
    assert blocks.flops == 131073 * 1037
    assert blocks.bytes_by_class["kv"] == 131073 * 128 * 2
    assert ops["layers.attn.qk"].bytes_by_class["kv"] == 2048 * 4 * 128 * 2
    kv = kv_cache_bytes(_load("minimax-m3").graph("decode"), S.seq).subs(S.kv_bits, 16)
    assert sympy.expand(kv - S.batch * S.seq * (60 * 2 * 512 + 57 * 128) * 2) == 0


def test_minimax_m3_imports_and_refuses_another_layout(tmp_path):
    from costdsl.language.importer import read_config, to_arch
    config = read_config(DATA / "configs" / "minimax-m3.json")
    imported = costdsl.load(tmp_path / "m3.arch", text=to_arch(config, "m3.json"))
    assert imported.params() == _load("minimax-m3").params()
    sparse = {**config["sparse_attention_config"], "sparse_attention_freq": [1] * 60}
    with pytest.raises(CostDSLError, match="'sparse_attention_freq' is not 3 zeros"):
        to_arch({**config, "sparse_attention_config": sparse}, "m3.json")


# --- multi-token prediction --------------------------------------------------------------------

def test_mtp_modules_by_hand():
    """DeepSeek-V3's module (the checkpoint's layer 61): its own embedding and head
    (2 x 129280 x 7168), enorm, hnorm and the head's norm (3 x 7168), eh_proj 14336 x 7168, and
    one decoder layer like the main model's MoE layers. DeepSeek-V3.2: 671.9B + 13.5B = 685B,
    the model card's total "with the MTP module". Nemotron 3 Super's module: embedding and head
    (2 x 131072 x 4096), three norms, eh_proj 8192 x 4096, one attention and one LatentMoE layer
    (as above)."""
    m = _load("deepseek-v3.2")
    by_op = {o.name: o for o in m.params_by_op()}
    layer = sum(o.params for name, o in by_op.items() if name.startswith("layers."))
    module = m.mtp_module()
    assert module.name == "DeepSeek-V3.2-MTP"
    assert module.params() == 2 * 129280 * 7168 + 3 * 7168 + 2 * 7168 * 7168 + layer
    assert round((m.params() + module.params()) / B) == 685
    super_ = _load("nemotron-3-super-120b-a12b").mtp_module()
    assert super_.params() == (2 * 131072 * 4096 + 3 * 4096 + 2 * 4096 * 4096 + 35_655_680
                               + 2_873_102_336)
    assert _load("llama-3-8b").mtp_module() is None


def test_mtp_decoding_runs_the_module_as_the_draft():
    """mtp(depth=2, accept=0.8): each target step runs the module twice (one decode step of the
    module model each) and verifies 3 tokens; E = 1 + 0.8 + 0.64; the speedup
    E T_decode / (2 T_module + T_verify(3))."""
    m = _load("deepseek-v3.2")
    s = m.speculate("nvidia-h200", "mtp(depth=2, accept=0.8)", batch=4, seq=4096)
    module = m.mtp_module().analyze("nvidia-h200", batch=4, seq=4096, stages=("decode",))
    decode = m.analyze("nvidia-h200", batch=4, seq=4096, stages=("decode",))
    assert s.draft == "DeepSeek-V3.2-MTP" and s.verified == 3
    assert s.draft_step_s == pytest.approx(module.stages["decode"].total.time_s, rel=1e-12)
    assert s.decode_s == pytest.approx(decode.stages["decode"].total.time_s, rel=1e-12)
    assert s.tokens_per_step == pytest.approx(2.44)
    assert s.speedup == pytest.approx(2.44 * s.decode_s / (2 * s.draft_step_s + s.verify_s))
    tree = m.speculate("nvidia-h200", "mtp(tree=[2, 1], accept=0.8)", batch=4, seq=4096)
    assert tree.k == 2 and tree.verified == 1 + 2 + 2


def test_serve_curve_names_the_mtp_module_it_resolved(capsys):
    from costdsl.cli import main
    assert main(["serve-curve", "qwen3.5-27b", "--hw", "nvidia-h200", "--seq", "2048", "--gen",
                 "64", "--batch", "1,8", "--decoding", "mtp(depth=1, accept=0.8)"]) == 0
    out = capsys.readouterr().out
    assert "mtp decoding: module=Qwen3.5-27B-MTP, depth=1, accept=0.8" in out


def test_mtp_decoding_errors_name_the_module(capsys):
    from costdsl.cli import main
    cases = [("llama-3-8b", "mtp(accept=0.8)", 'no model \'Llama-3-8B-MTP\''),
             ("deepseek-v3.2", 'mtp(accept=0.8, module="X")', "modules here: DeepSeek-V3.2-MTP"),
             ("deepseek-v3.2", "mtp(depth=0, accept=0.8)", "depth= must be an integer"),
             ("deepseek-v3.2", "mtp(depth=3, tree=[2], accept=0.8)", "the tree has 1 levels")]
    for name, decoding, message in cases:
        assert main(["latency", name, "--hw", "nvidia-h200", "--gen", "8",
                     "--decoding", decoding]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (decoding, err)


def test_params_reports_the_mtp_module_beside_the_count(capsys):
    from costdsl.cli import main
    import json
    assert main(["params", "glm-5", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["mtp"]["model"] == "GLM-5-MTP"
    assert out["total"] == _load("glm-5").params()      # the report's 744B: no module
    assert main(["params", "glm-5"]) == 0
    assert "'GLM-5-MTP': 11,856,085,760 parameters more, not counted above" \
        in capsys.readouterr().out


def test_qwen3_5_mtp_module_by_hand():
    """Qwen3.5-27B's module: the embedding (248320 x 5120; the main model's, counted here), the
    two input norms and the final one (3 x 5120), fc 10240 x 5120, one gated full-attention
    layer with its MLP (as the main model's); the head is tied to the embedding (read, not
    held). mtp(depth=2) drafts with it."""
    m = _load("qwen3.5-27b")
    layer = sum(o.params for o in m.params_by_op() if o.name.startswith("layers.full_attention."))
    module = m.mtp_module()
    assert module.params() == 248320 * 5120 + 3 * 5120 + 2 * 5120 * 5120 + layer
    s = m.speculate("nvidia-h200", "mtp(depth=2, accept=0.8)", batch=1, seq=4096)
    assert s.draft == "Qwen3.5-27B-MTP" and s.speedup > 1


def test_imported_deepseek_configs_write_their_mtp_module(tmp_path):
    from costdsl.language.importer import read_config, to_arch
    for name in ("deepseek-v3.2", "glm-5", "qwen3.5-27b", "qwen3.5-35b-a3b"):
        config = read_config(DATA / "configs" / f"{name}.json")
        imported = costdsl.load(tmp_path / "x.arch", text=to_arch(config, "x.json", "X"))
        assert imported.mtp_module().params() == _load(name).mtp_module().params(), name
    kimi = read_config(DATA / "configs" / "kimi-k2.5.json")    # num_nextn_predict_layers 0
    assert "-MTP" not in to_arch(kimi, "k.json")


def test_a_one_token_step_of_a_linear_attention_is_a_decode_step():
    """The step site with tokens = 1 prices the recurrent form, as decode does."""
    for name in ("qwen3.5-27b", "nemotron-3-nano-30b-a3b"):
        m = _load(name)
        step, decode = m.graph("step"), m.graph("decode")
        for op in ("layers.linear_attention.attn.rule", "layers.M.mixer.scan"):
            if op in decode.nodes:
                s, d = step.nodes[op]["op"], decode.nodes[op]["op"]
                assert sympy.simplify(s.flops.subs(S.tokens, 1) - d.flops) == 0


def test_tensor_parallel_splits_mamba2_by_heads_and_groups():
    """TP 4 on Nemotron 3 Nano: z, x/B/C/dt, the conv, the scan with its 64 x 64 x 128 state
    and the per-channel norm gain a quarter each; out_proj by rows with an all-reduce after it.
    8 groups do not split over 16 devices: an error naming them."""
    base = _load("nemotron-3-nano-30b-a3b")
    g0 = base.graph("decode")
    g1 = base.with_passes(["tensor_parallel(n=4)"]).graph("decode")
    for name in ("layers.M.mixer.z", "layers.M.mixer.in_proj", "layers.M.mixer.conv",
                 "layers.M.mixer.scan", "layers.M.mixer.norm", "layers.M.mixer.out_proj"):
        a, b = g0.nodes[name]["op"], g1.nodes[name]["op"]
        assert sympy.simplify(b.flops / a.flops) == sympy.Rational(1, 4), name
        assert b.params * 4 == a.params, name
    scan = g1.nodes["layers.M.mixer.scan"]["op"]
    assert sum(a.elements for a in scan.writes if a.cls == "kv") == S.batch * 16 * 64 * 128
    assert "layers.M.mixer.out_proj.all_reduce" in g1.nodes
    with pytest.raises(CostDSLError, match="8 groups do not split over n=16"):
        base.with_passes(["tensor_parallel(n=16)"]).graph("decode")


# --- DeepSeek Sparse Attention (DeepSeek-V3.2) --------------------------------------------------

def test_deepseek_v3_2_adds_the_indexer_to_v3():
    """Per layer the indexer holds wq_b 1536 x (64 x 128), wk 7168 x 128, its key's LayerNorm
    2 x 128 and weights_proj 7168 x 64: 13,959,424; x 61 on top of DeepSeek-V3's main model
    (the imported config: tests/test_import.py)."""
    from costdsl.language.importer import read_config, to_arch
    v3 = costdsl.load(MODELS / "v3.arch",
                      text=to_arch(read_config(DATA / "configs" / "deepseek-v3.json"), "v3.json"))
    assert _load("deepseek-v3.2").params() - v3.params() == 61 * 13_959_424


def test_sparse_attention_decode_by_hand():
    """Decode at 131,072 cached tokens, batch 1: the indexer scores all 131,073 positions
    (64 heads x 128: 2 x 64 x 128 + 3 x 64 + 1 = 16,577 operations each) reading their 128-wide
    keys (2 bytes); the latent attention reads only the 2,048 selected latents (576 wide):
    QK^T 2 x 128 x 2048 x 576 operations."""
    m = _load("deepseek-v3.2")
    indexer = _decode_op(m, "layers.attn.indexer", 131072)
    assert indexer.flops == 131073 * 16577
    assert indexer.bytes_by_class["kv"] == 131073 * 128 * 2
    qk = _decode_op(m, "layers.attn.qk", 131072)
    assert qk.flops == 2 * 128 * 2048 * 576
    assert qk.bytes_by_class["kv"] == 2048 * 576 * 2


def test_sparse_attention_caches_every_latent_and_index_key():
    """The selection bounds what is read, not what is held: per token and layer the 576-wide
    latent and the 128-wide index key, 61 layers, 2 bytes: 86,192 bytes per token."""
    kv = kv_cache_bytes(_load("deepseek-v3.2").graph("decode"), S.seq).subs(S.kv_bits, 16)
    assert sympy.expand(kv - S.batch * S.seq * 61 * (576 + 128) * 2) == 0


def test_where_sparse_attention_beats_dense_in_closed_form():
    """DeepSeek-V3.2 against itself with index_heads=0 (dense MLA): the stage times are equal
    where their difference, a Piecewise in seq, has its root; above it the sparse model is
    faster, and both sides of the root say so by the times themselves."""
    m = _load("deepseek-v3.2")
    answer = m.crossover("seq", "nvidia-h100-sxm", stage="decode", batch=8,
                         variant={"index_heads": 0})
    (crossing,) = answer.variant_crossings
    assert crossing.faster_above == "model" and "this model is faster" in answer.variant_note
    dense = m.with_parameters({"index_heads": 0})
    time = lambda model, s: model.analyze("nvidia-h100-sxm", batch=8, seq=s,
                                          stages=("decode",)).stages["decode"].total.time_s
    below, above = int(crossing.value * 0.8), int(crossing.value * 1.25)
    assert time(m, below) > time(dense, below) and time(m, above) < time(dense, above)


def test_variant_flag_in_text_and_json(capsys):
    from costdsl.cli import main
    path = str(MODELS / "deepseek-v3.2.arch")
    assert main(["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "seq",
                 "--variant", "index_heads=0", "--format", "json"]) == 0
    import json
    variant = json.loads(capsys.readouterr().out)["stages"]["decode"]["variant"]
    assert variant["set"] == {"index_heads": "0"} and variant["crossings"][0]["value"] > 0
    assert main(["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "seq",
                 "--variant", "index_heads=0"]) == 0
    assert "against the variant with index_heads=0" in capsys.readouterr().out
    assert main(["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "seq",
                 "--variant", "index_heads"]) == 2
    assert "expected PARAM=VALUE" in capsys.readouterr().err
    assert main(["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "seq",
                 "--variant", "index_head=0"]) == 2
    err = capsys.readouterr().err
    assert "--variant index_head: the model has no parameter" in err and "index_heads" in err
    assert main(["crossover", path, "--hw", "nvidia-h100-sxm", "--solve", "seq",
                 "--variant", "index_heads=-1"]) == 2
    err = capsys.readouterr().err   # located at the flag that gave the value, not at --set
    assert err.startswith("costdsl: --variant index_heads:1:1: error: index_heads= must be a "
                          "positive integer, got -1") and "Traceback" not in err
