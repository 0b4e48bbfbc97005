"""Shipped models against their published parameter counts."""
import pytest

import costdsl
from costdsl.hardware import load_hardware
from costdsl.analysis.params import params_by_op

from conftest import MODELS

# The ideal roofline of the datasheet figures: the expected values below are derived from them.
H100 = load_hardware("nvidia-h100-sxm").ideal()


@pytest.mark.parametrize("file,expected,source", [
    # Sum of tensor sizes of meta-llama/Llama-2-7b-hf (the figure the model card rounds to
    # 6.74B; also the required value).
    ("llama-2-7b.arch", 6_738_415_616, "meta-llama/Llama-2-7b-hf"),
    # Sum of tensor sizes of meta-llama/Meta-Llama-3-8B (model card: 8B; HF lists 8.03B).
    ("llama-3-8b.arch", 8_030_261_248, "meta-llama/Meta-Llama-3-8B"),
    # Sums of tensor sizes of the Hugging Face checkpoints (model cards round to 13B, 70B,
    # 70B and 405B; the exact totals are those the checkpoints' safetensors metadata report).
    ("llama-2-13b.arch", 13_015_864_320, "meta-llama/Llama-2-13b-hf"),
    ("llama-2-70b.arch", 68_976_648_192, "meta-llama/Llama-2-70b-hf"),
    ("llama-3-70b.arch", 70_553_706_496, "meta-llama/Meta-Llama-3-70B"),
    ("llama-3.1-405b.arch", 405_853_388_800, "meta-llama/Llama-3.1-405B"),
    # Llama 3.1 keeps Llama 3's shapes (config.json) and so its tensor sizes: the checkpoints'
    # safetensors metadata report the same totals (model cards: 8B, 70B).
    ("llama-3.1-8b.arch", 8_030_261_248, "meta-llama/Llama-3.1-8B"),
    ("llama-3.1-70b.arch", 70_553_706_496, "meta-llama/Llama-3.1-70B"),
    # Qwen/Qwen2.5-7B: 7,615,616,512 (model card: 7.61B); QKV biases included.
    ("qwen2.5-7b.arch", 7_615_616_512, "Qwen/Qwen2.5-7B"),
    # openai-community/gpt2: 124,439,808 (model card: 124M); the tied LM head counted once.
    ("gpt2.arch", 124_439_808, "openai-community/gpt2"),
    # TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T: 1,100,048,384 (model card: 1.1B):
    # 2 x 32000 x 2048 + 2048 + 22 (2 x 2048^2 + 2 x 2048 x 256 + 3 x 2048 x 5632 + 2 x 2048).
    ("tinyllama-1.1b.arch", 1_100_048_384, "TinyLlama/TinyLlama-1.1B"),
    # JackFram/llama-68m (model card: 68M): 2 x 32000 x 768 + 2 (4 x 768^2 + 3 x 768 x 3072
    # + 2 x 768) + 768 = 68,030,208.
    ("llama-68m.arch", 68_030_208, "JackFram/llama-68m"),
    # mistralai/Mistral-7B-v0.1: 7,241,732,096 (model card: 7.3B).
    ("mistral-7b.arch", 7_241_732_096, "mistralai/Mistral-7B-v0.1"),
    # mistralai/Mixtral-8x7B-v0.1: 46,702,792,704 (paper: 46.7B).
    ("mixtral-8x7b.arch", 46_702_792_704, "mistralai/Mixtral-8x7B-v0.1"),
    # microsoft/Phi-3-mini-4k-instruct: 3,821,079,552 (Keras-Hub's preset metadata "params";
    # model card: 3.8B): 2 x 32064 x 3072 + 3072 + 32 (4 x 3072^2 + 3 x 3072 x 8192 + 2 x 3072).
    ("phi-3-mini.arch", 3_821_079_552, "microsoft/Phi-3-mini-4k-instruct"),
    # facebook/opt-6.7b (paper: 6.7B). Tensor sizes: embed_tokens 50272 x 4096, embed_positions
    # 2050 x 4096, 32 x (q, k, v, out_proj with biases 4 x (4096^2 + 4096), fc1 4096 x 16384
    # + 16384, fc2 16384 x 4096 + 4096, two LayerNorms 4 x 4096), final LayerNorm 2 x 4096;
    # lm_head tied: 205,914,112 + 8,396,800 + 6,444,154,880 + 8,192 = 6,658,473,984.
    ("opt-6.7b.arch", 6_658_473_984, "facebook/opt-6.7b"),
    # state-spaces/mamba-2.8b-hf (name: 2.8B; the Hub lists 2.77B). Per layer: in_proj
    # 2560 x 10240, conv1d 5120 x 4 + 5120, x_proj 5120 x 192, dt_proj 160 x 5120 + 5120,
    # A_log 5120 x 16, D 5120, out_proj 5120 x 2560, norm 2560 = 41,244,160; x 64, plus the
    # embedding 50280 x 2560 (tied head) and norm_f 2560 = 2,768,345,600.
    ("mamba-2.8b.arch", 2_768_345_600, "state-spaces/mamba-2.8b-hf"),
])
def test_published_parameter_count(file, expected, source):
    assert costdsl.load(MODELS / file).params() == expected, source


def test_llama_3_kv_projections_shrink_with_gqa():
    """8 KV heads of 128: k and v project 4096 -> 1024, holding 4,194,304 parameters each,
    while q and o hold 4096^2 = 16,777,216."""
    by_name = {name: p for name, _, p, _ in params_by_op(
        costdsl.load(MODELS / "llama-3-8b.arch").graph("prefill"))}
    assert by_name["layers.k"] == by_name["layers.v"] == 4096 * 1024
    assert by_name["layers.q"] == by_name["layers.o"] == 4096 * 4096


def test_family_file_counts_parameters_symbolically():
    """Llama family with free dims: 2 h V (embedding + head) + h (final norm)
    + L (4 h^2 + 3 h f + 2 h) with kv_heads = heads."""
    import sympy
    from costdsl.symbols import model_param as p
    h, L, f, V = p("hidden"), p("layers"), p("ffn"), p("vocab")
    total = costdsl.load(MODELS / "llama.arch").params()
    assert sympy.expand(total - (2 * h * V + h + L * (4 * h**2 + 3 * h * f + 2 * h))) == 0


def test_tied_lm_head_reads_the_table_but_holds_no_parameters():
    """GPT-2: the LM head's W is wte (50257 x 768): one decode step reads all of it
    (38,597,376 elements) under the embedding's tensor name, and it adds no parameters."""
    graph = costdsl.load(MODELS / "gpt2.arch").graph("decode")
    head = graph.nodes["lm_head"]["op"]
    assert head.params == 0
    weights = [a for a in head.reads if a.cls == "weight"]
    assert [(a.tensor, a.elements) for a in weights] == [("wte.weight", 50257 * 768)]


def test_qkv_bias_switch_follows_the_parameter():
    """Qwen2.5-7B's k projection: 3584 x 512 weights plus a 512 bias; Llama-3-8B's has none."""
    by_name = lambda f: {n: p for n, _, p, _ in params_by_op(
        costdsl.load(MODELS / f).graph("prefill"))}
    assert by_name("qwen2.5-7b.arch")["layers.k"] == 3584 * 512 + 512
    assert by_name("llama-3-8b.arch")["layers.k"] == 4096 * 1024


def test_params_command_json_and_text():
    """costdsl params: {"total", "active", "ops": [...]}; the ops' totals sum to the total."""
    import json
    import subprocess
    import sys
    run = lambda *a: subprocess.run([sys.executable, "-m", "costdsl", "params", *a],
                                    capture_output=True, text=True, timeout=60)
    out = run(str(MODELS / "llama-3-8b.arch"), "--format", "json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["total"] == data["active"] == 8_030_261_248
    assert sum(o["total"] for o in data["ops"]) == data["total"]
    text = run(str(MODELS / "gpt2.arch")).stdout
    assert "124,439,808 parameters" in text and "wte" in text
    assert "lm_head" not in text  # tied: it holds no parameters of its own


def test_mixtral_total_and_active_parameters():
    """Mixtral-8x7B: 46,702,792,704 total; a token visits 2 of 8 experts: 12,879,925,248 active
    (the paper's 46.7B and 12.9B). Per layer the experts hold 8 x 3 x 4096 x 14336."""
    m = costdsl.load(MODELS / "mixtral-8x7b.arch")
    assert m.params() == 46_702_792_704
    assert m.active_params() == 12_879_925_248


def test_mixtral_decode_reads_only_the_experts_a_batch_touches():
    """Batch 1: the one token visits 2 experts: expert weight bytes 2 x 4096 x 14336 x 2 per
    expert linear. Batch 64: 8 (1 - (3/4)^64) = 7.99999... experts, i.e. all 8 to 1e-7."""
    m = costdsl.load(MODELS / "mixtral-8x7b.arch")
    gate = lambda b: next(o for o in m.analyze(H100, b, 128).stages["decode"].ops
                          if o.name == "layers.moe.gate").bytes_by_class["weight"]
    assert gate(1) == pytest.approx(2 * 4096 * 14336 * 2)
    assert gate(64) == pytest.approx(8 * 4096 * 14336 * 2, rel=1e-7)


def test_mixtral_expert_crossover_is_numeric_and_right():
    """Once every expert is touched, expert gate: 2 n k h F B = P (2 E h F + 2 n k (h + F)) =>
    n = E h F P / (k (h F B - P (h + F))) = 1302.2 on the H100; (3/4)^n is then ~1e-163, so the
    numeric root must agree to many digits. No closed form: n sits in an exponent."""
    m = costdsl.load(MODELS / "mixtral-8x7b.arch")
    answer = m.crossover("batch", H100, stage="decode", seq=2048)
    gate = next(c for c in answer.ops if c.op == "layers.moe.gate")
    h, f, p, b = 4096, 14336, 989.5e12, 3.35e12
    assert gate.value == pytest.approx(8 * h * f * p / (2 * (h * f * b - p * (h + f))), rel=1e-9)
    assert gate.closed_form is False and gate.direction == "memory->compute"


def test_deepseek_v2_lite_total_and_active_parameters():
    """deepseek-ai/DeepSeek-V2-Lite, model card: "15.7B parameters in total, 2.4B activated".
    Exact total from config.json: MLA per layer q 2048 x 3072, kv_a 2048 x 576, kv_a norm 512,
    kv_b 512 x 16 x 256, o 2048 x 2048 = 13,763,072; layer 0 dense MLP 3 x 2048 x 10944;
    layers 1-26 MoE: 64 experts x 3 x 2048 x 1408, 2 shared of the same, router 64 x 2048;
    two norms of 2048 per layer; embedding and head 102400 x 2048 each; final norm 2048.
    Active: 6 of the 64 routed experts per token. The card's activated figure leaves out the
    embedding table (a lookup, no arithmetic): 2,661,150,208 - 209,715,200 = 2.45B, which the
    card writes as 2.4B."""
    m = costdsl.load(MODELS / "deepseek-v2-lite.arch")
    mla = 2048 * 3072 + 2048 * 576 + 512 + 512 * 16 * 256 + 2048 * 2048
    expert = 3 * 2048 * 1408
    moe_layer = mla + 64 * expert + 2 * expert + 64 * 2048 + 2 * 2048
    dense_layer = mla + 3 * 2048 * 10944 + 2 * 2048
    total = dense_layer + 26 * moe_layer + 2 * 102400 * 2048 + 2048
    assert m.params() == total == 15_706_484_224
    assert round(total / 1e9, 1) == 15.7
    active = total - 26 * (64 - 6) * expert
    assert m.active_params() == active == 2_661_150_208
    assert 2.4e9 <= active - 102400 * 2048 < 2.5e9


def test_mla_caches_the_latent_not_keys_and_values():
    """DeepSeek-V2-Lite decode: the cache per token and layer is kv_lora_rank + qk_rope_dim =
    576 elements, against 2 x 16 heads x 128 = 4096 for the same model with multi-head
    attention: 27 layers x 576 x 2 bytes = 31,104 bytes per token."""
    m = costdsl.load(MODELS / "deepseek-v2-lite.arch")
    a = m.analyze(H100, batch=1, seq=4095, stages=["decode"])
    assert a.memory.kv_cache_bytes == 4096 * 27 * 576 * 2
    qk = next(o for o in a.stages["decode"].ops if o.name == "layers.attn.qk")
    # all 16 heads read the one latent: 2 x 16 x 4096 x 576 operations over 4096 x 576 x 2
    # bytes of cache, plus the query (16 x 576 x 2) and the scores written (16 x 4096 x 2)
    assert qk.flops == 2 * 16 * 4096 * 576
    assert qk.bytes_by_class["kv"] == 4096 * 576 * 2
    assert qk.bytes == 4096 * 576 * 2 + 16 * 576 * 2 + 16 * 4096 * 2


def test_mla_flash_attention_reads_the_latent_once():
    """Fused, the latent serves as keys and values: one read of 4096 x 576 x 2 bytes per step;
    operations 2 x 16 x 4096 x (576 + 512) + 5 x 16 x 4096."""
    m = costdsl.load(MODELS / "deepseek-v2-lite.arch", passes=["flash_attention()"])
    a = m.analyze(H100, batch=1, seq=4095, stages=["decode"])
    fa = next(o for o in a.stages["decode"].ops if o.kind == "flash_attention")
    assert fa.bytes_by_class["kv"] == 4096 * 576 * 2
    assert fa.flops == 2 * 16 * 4096 * (576 + 512) + 5 * 16 * 4096


def test_mamba_state_replaces_the_kv_cache_and_does_not_grow():
    """Mamba-2.8B: per layer and sequence the conv window (5120 x 3) and the SSM state
    (5120 x 16) at 16 bits: 64 x 97,280 x 2 = 12,451,840 bytes, at any context. A decode step
    reads and writes it; the scan does 5120 x (8 x 16 + 10) operations per token and layer."""
    m = costdsl.load(MODELS / "mamba-2.8b.arch")
    short = m.analyze("nvidia-a6000", batch=1, seq=128, stages=["decode"])
    long = m.analyze("nvidia-a6000", batch=1, seq=100_000, stages=["decode"])
    assert short.memory.kv_cache_bytes == long.memory.kv_cache_bytes == 12_451_840
    ops = {o.name: o for o in long.stages["decode"].ops}
    assert ops["layers.mixer.scan"].flops == 5120 * (8 * 16 + 10)
    assert ops["layers.mixer.scan"].bytes_by_class["kv"] == 2 * 5120 * 16 * 2
    assert long.stages["decode"].total.time_s == short.stages["decode"].total.time_s
    f = m.fit("nvidia-a6000", seq=2048)
    assert f.kv_crossover is None and "stops growing" in f.kv_crossover_reason
