"""Hugging Face config.json -> a .arch file that extends the shipped family definition.

The config is read as JSON data (never executed); each supported `model_type` maps its fields
onto the family's parameters. The output names the field behind every value.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CostDSLError
from ..files import read_user_text


@dataclass(frozen=True)
class Field:
    param: str
    key: str                   # config.json field
    default: object = None     # used when the field is absent or null; None: required
    convert: object = None     # value -> .arch text


def _window(value) -> str:
    return "inf" if value is None else str(int(value))


def _zero_if_null(value) -> str:
    return "0" if value is None else str(int(value))


def _opt_positions(value) -> str:
    return f"{int(value)} + 2"   # OPT's learned positions are offset by 2


LLAMA = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
         Field("heads", "num_attention_heads"),
         Field("kv_heads", "num_key_value_heads", default="heads"),
         Field("ffn", "intermediate_size"), Field("vocab", "vocab_size"),
         Field("head_dim", "head_dim", default="hidden / heads"))

DEEPSEEK = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
            Field("dense_layers", "first_k_dense_replace", default="0"),
            Field("heads", "num_attention_heads"),
            Field("q_lora_rank", "q_lora_rank", default="0", convert=_zero_if_null),
            Field("kv_lora_rank", "kv_lora_rank"), Field("qk_nope_dim", "qk_nope_head_dim"),
            Field("qk_rope_dim", "qk_rope_head_dim"), Field("v_dim", "v_head_dim"),
            Field("ffn", "intermediate_size"), Field("expert_ffn", "moe_intermediate_size"),
            Field("experts", "n_routed_experts"), Field("top_k", "num_experts_per_tok"),
            Field("shared_experts", "n_shared_experts"), Field("vocab", "vocab_size"))

DEEPSEEK_DSA = DEEPSEEK + (Field("index_heads", "index_n_heads"),
                           Field("index_dim", "index_head_dim"), Field("index_topk", "index_topk"))

QWEN3_HEAD_DIM = Field("head_dim", "head_dim", default="128")  # Qwen3Config's default
QWEN3 = LLAMA[:-1] + (QWEN3_HEAD_DIM,)
QWEN3_MOE = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
             Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
             QWEN3_HEAD_DIM,
             Field("ffn", "moe_intermediate_size"), Field("experts", "num_experts"),
             Field("top_k", "num_experts_per_tok"), Field("vocab", "vocab_size"))
GPT_OSS = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
           Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
           Field("head_dim", "head_dim"), Field("ffn", "intermediate_size"),
           Field("experts", "num_local_experts"), Field("top_k", "num_experts_per_tok"),
           Field("sliding_window", "sliding_window"), Field("vocab", "vocab_size"))

QWEN3_5 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
           Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
           Field("head_dim", "head_dim", default="256"),
           Field("linear_k_heads", "linear_num_key_heads"),
           Field("linear_v_heads", "linear_num_value_heads"),
           Field("linear_k_dim", "linear_key_head_dim"),
           Field("linear_v_dim", "linear_value_head_dim"),
           Field("linear_conv", "linear_conv_kernel_dim", default="4"),
           Field("vocab", "vocab_size"))
QWEN3_5_ASSUMED = {"attn_output_gate": True, "full_attention_interval": 4,
                   "mlp_only_layers": [], "attention_bias": False,
                   "partial_rotary_factor": 0.25}
QWEN3_5_LAYERS = ("linear_attention",) * 3 + ("full_attention",)

NEMOTRON_H = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
              Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
              Field("head_dim", "head_dim"), Field("mamba_heads", "mamba_num_heads"),
              Field("mamba_head_dim", "mamba_head_dim"), Field("d_state", "ssm_state_size"),
              Field("groups", "n_groups"), Field("conv", "conv_kernel"),
              Field("chunk", "chunk_size"), Field("ffn", "intermediate_size"),
              Field("expert_ffn", "moe_intermediate_size"),
              Field("shared_ffn", "moe_shared_expert_intermediate_size"),
              Field("experts", "n_routed_experts"), Field("top_k", "num_experts_per_tok"),
              Field("latent", "moe_latent_size", default="0", convert=_zero_if_null),
              Field("vocab", "vocab_size"))
NEMOTRON_H_BLOCKS = {"M": "M", "E": "E", "*": "A", "-": "D"}
"""hybrid_override_pattern's letters -> the blocks of models/nemotron-3-nano-30b-a3b.arch."""

LLAMA4 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
          Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
          Field("head_dim", "head_dim"), Field("chunk", "attention_chunk_size"),
          Field("ffn", "intermediate_size"), Field("dense_ffn", "intermediate_size_mlp"),
          Field("experts", "num_local_experts"), Field("top_k", "num_experts_per_tok"),
          Field("vocab", "vocab_size"))
LLAMA4_LAYOUTS = {   # (use_qk_norm, interleave_moe_layer_step) -> the body; None: the family's
    (True, 1): None,                                              # Scout
    (False, 2): ["  embed      = embedding(tokens, vocab=vocab, dim=hidden)",   # Maverick
                 "  layers     = cycle(embed, chunked_dense, chunked_moe_plain, chunked_dense, "
                 "global_moe) repeat layers",
                 "  final_norm = rmsnorm(layers)",
                 "  lm_head    = linear(final_norm, out=vocab, tokens=last)"]}
"""The layer layouts the shipped llama4 family writes: Scout's QK-normed chunked layers, all
MoE; Maverick's plain chunked layers with dense and MoE MLPs alternating."""

GEMMA4 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
          Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
          Field("global_kv_heads", "num_global_key_value_heads"),
          Field("head_dim", "head_dim"), Field("global_head_dim", "global_head_dim"),
          Field("sliding_window", "sliding_window"), Field("ffn", "intermediate_size"),
          Field("vocab", "vocab_size"))
GEMMA4_MOE = GEMMA4 + (Field("expert_ffn", "moe_intermediate_size"),
                       Field("experts", "num_experts"), Field("top_k", "top_k_experts"))
GEMMA4_ASSUMED = {"attention_k_eq_v": True, "attention_bias": False,
                  "hidden_activation": "gelu_pytorch_tanh", "hidden_size_per_layer_input": 0,
                  "num_kv_shared_layers": 0, "use_double_wide_mlp": False,
                  "tie_word_embeddings": True, "partial_rotary_factor": 0.25}
"""What models/gemma4.arch is written for: the 26B A4B and 31B layouts (the E2B/E4B sizes'
per-layer embeddings and shared KV layers are another architecture)."""
GEMMA4_LAYERS = ("sliding_attention",) * 5 + ("full_attention",)

DEEPSEEK_V4 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
               Field("heads", "num_attention_heads"), Field("head_dim", "head_dim"),
               Field("rope_dim", "qk_rope_head_dim"), Field("q_lora_rank", "q_lora_rank"),
               Field("o_groups", "o_groups"), Field("o_lora_rank", "o_lora_rank"),
               Field("window", "sliding_window"), Field("index_heads", "index_n_heads"),
               Field("index_dim", "index_head_dim"), Field("index_topk", "index_topk"),
               Field("hc_mult", "hc_mult"), Field("sinkhorn_iters", "hc_sinkhorn_iters"),
               Field("expert_ffn", "moe_intermediate_size"),
               Field("experts", "n_routed_experts"), Field("top_k", "num_experts_per_tok"),
               Field("vocab", "vocab_size"))
DEEPSEEK_V4_LAYERS = {0: "window_layer", 4: "csa_layer", 128: "hca_layer"}
"""compress_ratios entries -> the blocks of models/deepseek-v4.arch."""

MINIMAX_M3 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
              Field("dense_layers", "first_k_dense_replace"),
              Field("heads", "num_attention_heads"), Field("kv_heads", "num_key_value_heads"),
              Field("head_dim", "head_dim"), Field("rotary_dim", "rotary_dim"),
              Field("index_heads", "sparse_num_index_heads"),
              Field("index_dim", "sparse_index_dim"),
              Field("topk_blocks", "sparse_topk_blocks"), Field("block_size", "sparse_block_size"),
              Field("dense_ffn", "dense_intermediate_size"),
              Field("expert_ffn", "moe_intermediate_size"),
              Field("shared_ffn", "shared_intermediate_size"),
              Field("experts", "num_local_experts"), Field("top_k", "num_experts_per_tok"),
              Field("vocab", "vocab_size"))
"""MiniMax-M3's text_config, its sparse_attention_config's fields read as if top-level."""

KIMI_K3 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
           Field("heads", "num_attention_heads"),
           Field("q_lora_rank", "q_lora_rank", default="0", convert=_zero_if_null),
           Field("kv_lora_rank", "kv_lora_rank"), Field("qk_nope_dim", "qk_nope_head_dim"),
           Field("qk_rope_dim", "qk_rope_head_dim"), Field("v_dim", "v_head_dim"),
           Field("linear_heads", "num_heads"), Field("linear_head_dim", "head_dim"),
           Field("linear_conv", "short_conv_kernel_size", default="4"),
           Field("ffn", "intermediate_size"), Field("expert_ffn", "moe_intermediate_size"),
           Field("experts", "num_experts"), Field("top_k", "num_experts_per_token"),
           Field("shared_experts", "num_shared_experts"),
           Field("latent", "routed_expert_hidden_size"),
           Field("attn_res_block", "attn_res_block_size"), Field("vocab", "vocab_size"))
"""Kimi K3's text_config (model_type kimi_linear), its linear_attn_config's fields read as if
top-level."""
STEP3P5 = (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
           Field("heads", "num_attention_heads"),
           Field("sliding_heads", "attention_other_setting.num_attention_heads",
                 default="heads"),
           Field("kv_heads", "num_attention_groups"), Field("head_dim", "head_dim"),
           Field("full_rotary", "partial_rotary_factors.full_attention", default="head_dim"),
           Field("sliding_rotary", "partial_rotary_factors.sliding_attention",
                 default="head_dim"),
           Field("sliding_window", "sliding_window"), Field("ffn", "intermediate_size"),
           Field("expert_ffn", "moe_intermediate_size"), Field("shared_ffn", "share_expert_dim"),
           Field("experts", "moe_num_experts"), Field("top_k", "moe_top_k"),
           Field("vocab", "vocab_size"))
"""Step-3.5 / 3.7's text_config (model_type step3p5), as `_step_fields` reads it: the sliding
layers' heads from attention_other_setting, the rotary widths from partial_rotary_factors (a
factor per layer) times head_dim."""
STEP_ALIASES = {"num_attention_groups": "num_key_value_heads", "moe_num_experts": "num_experts",
                "moe_top_k": "num_experts_per_tok"}
"""Step's field -> the name a flat step3p7 config (aiconfigurator's copy) gives it."""
STEP_LAYERS = {("full_attention", False): "full_dense", ("sliding_attention", False):
               "sliding_dense", ("full_attention", True): "full_moe",
               ("sliding_attention", True): "sliding_moe"}
"""The shipped block of a Step layer by its layer_types entry and whether moe_layers_enum
lists it."""

KIMI_LAYERS = {("kda", False): "kda_layer", ("mla", False): "mla_layer",
               ("kda", True): "kda_dense_layer", ("mla", True): "mla_dense_layer"}
"""The shipped block of a Kimi K3 layer by its mixer (kda_layers or full_attn_layers) and
whether it is one of the first_k_dense_replace dense layers."""

_NO_SLIDING = {"use_sliding_window": False}   # Qwen's per-layer window switch, off in release


@dataclass(frozen=True)
class Family:
    source: str                       # the file to import
    base: str                         # the model it defines, extended by the import
    fields: tuple[Field, ...]
    fixed: dict = field(default_factory=dict)     # parameters the model_type implies
    tied: str | None = None           # the base with the LM head tied to the embedding;
                                      # None: the family has only an untied head
    assumed: dict = field(default_factory=dict)   # fields whose value the family is written
                                                  # for: another value is another architecture
    layer_types: tuple[str, ...] | None = None    # the cycle() of the family, as layer_types
                                                  # lists it from layer 0
    pattern: str | None = None        # a field spelling the layers one letter each: the
                                      # import writes the model's body with that cycle()


FAMILIES = {
    "llama": Family("llama.arch", "llama", LLAMA, tied="llama_tied"),
    "mistral": Family("llama.arch", "llama", LLAMA + (
        Field("window", "sliding_window", default="inf", convert=_window),), tied="llama_tied"),
    "qwen2": Family("llama.arch", "llama", LLAMA, {"qkv_bias": "1"}, tied="llama_tied",
                    assumed=_NO_SLIDING),
    "mixtral": Family("mixtral-8x7b.arch", "Mixtral-8x7B-v0.1", LLAMA + (
        Field("experts", "num_local_experts"), Field("top_k", "num_experts_per_tok"),
        Field("window", "sliding_window", default="inf", convert=_window))),
    "phi3": Family("llama.arch", "llama", LLAMA + (
        Field("window", "sliding_window", default="inf", convert=_window),), tied="llama_tied"),
    "opt": Family("opt.arch", "opt", (
        Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
        Field("heads", "num_attention_heads"), Field("ffn", "ffn_dim"),
        Field("vocab", "vocab_size"),
        Field("positions", "max_position_embeddings", convert=_opt_positions)),
        tied="opt", assumed={"activation_function": "relu", "do_layer_norm_before": True}),
    "deepseek_v2": Family("deepseek.arch", "deepseek", DEEPSEEK,
                          assumed={"moe_layer_freq": 1}),
    "deepseek_v3": Family("deepseek.arch", "deepseek", DEEPSEEK,
                          assumed={"moe_layer_freq": 1}),
    "deepseek_v32": Family("deepseek.arch", "deepseek", DEEPSEEK_DSA,
                           assumed={"moe_layer_freq": 1}),
    # Kimi K2 / K2.5's decoder: DeepseekV3ForCausalLM (its config's `architectures`)
    "kimi_k2": Family("deepseek.arch", "deepseek", DEEPSEEK, assumed={"moe_layer_freq": 1}),
    # GLM-5 (GlmMoeDsaForCausalLM): MLA with DeepSeek Sparse Attention's indexer and
    # DeepSeek-V3's MoE (GLM-5 technical report, arXiv:2602.15763, table 1)
    "glm_moe_dsa": Family("deepseek.arch", "deepseek", DEEPSEEK_DSA,
                          assumed={"moe_layer_freq": 1, "attention_bias": False}),
    "gpt2": Family("gpt2.arch", "gpt2", (
        Field("hidden", "n_embd"), Field("layers", "n_layer"), Field("heads", "n_head"),
        Field("ffn", "n_inner", default="4 * hidden"), Field("vocab", "vocab_size"),
        Field("positions", "n_positions")), tied="gpt2"),
    "qwen3": Family("qwen3.arch", "qwen3", QWEN3, tied="qwen3_tied",
                    assumed={"attention_bias": False, **_NO_SLIDING}),
    "qwen3_moe": Family("qwen3.arch", "qwen3_moe", QWEN3_MOE,
                        assumed={"attention_bias": False, "mlp_only_layers": [],
                                 "decoder_sparse_step": 1, **_NO_SLIDING}),
    "gpt_oss": Family("gpt-oss.arch", "gpt-oss", GPT_OSS, assumed={"attention_bias": True},
                      layer_types=("sliding_attention", "full_attention")),
    "qwen3_5_text": Family("qwen3.5.arch", "qwen3_5",
                           QWEN3_5 + (Field("ffn", "intermediate_size"),),
                           assumed=QWEN3_5_ASSUMED, layer_types=QWEN3_5_LAYERS),
    "qwen3_5_moe_text": Family("qwen3.5.arch", "qwen3_5_moe", QWEN3_5 + (
        Field("ffn", "moe_intermediate_size"),
        Field("shared_ffn", "shared_expert_intermediate_size"),
        Field("experts", "num_experts"), Field("top_k", "num_experts_per_tok")),
        assumed=QWEN3_5_ASSUMED, layer_types=QWEN3_5_LAYERS),
}
FAMILIES["nemotron_h"] = Family(
    "nemotron-3-nano-30b-a3b.arch", "NVIDIA-Nemotron-3-Nano-30B-A3B", NEMOTRON_H,
    assumed={"n_shared_experts": 1, "mlp_hidden_act": "relu2", "mamba_hidden_act": "silu",
             "use_bias": False, "mamba_proj_bias": False, "use_conv_bias": True,
             "attention_bias": False, "mlp_bias": False},
    pattern="hybrid_override_pattern")
FAMILIES["qwen3_5"] = FAMILIES["qwen3_5_text"]          # the multimodal config: its text_config
FAMILIES["qwen3_5_moe"] = FAMILIES["qwen3_5_moe_text"]
FAMILIES["kimi_k25"] = FAMILIES["kimi_k2"]              # Kimi K2.5: its text_config is kimi_k2
FAMILIES["llama4_text"] = Family("llama4.arch", "llama4", LLAMA4,
                                 assumed={"attention_bias": False, "no_rope_layers": None,
                                          "nope_layer_interval": 4, "moe_layers": None})
FAMILIES["llama4"] = FAMILIES["llama4_text"]            # the multimodal config: its text_config
FAMILIES["deepseek_v4"] = Family(
    "deepseek-v4.arch", "deepseek-v4", DEEPSEEK_V4,
    assumed={"num_key_value_heads": 1, "n_shared_experts": 1, "hidden_act": "silu",
             "attention_bias": False, "tie_word_embeddings": False},
    pattern="compress_ratios")
FAMILIES["minimax_m3"] = Family(
    "minimax-m3.arch", "MiniMax-M3", MINIMAX_M3,
    assumed={"attention_output_gate": False, "use_qk_norm": True, "qk_norm_type": "per_head",
             "n_shared_experts": 1, "tie_word_embeddings": False, "use_sparse_attention": True,
             "sparse_init_block": 0, "sparse_local_block": 1, "sparse_score_type": "max"})
FAMILIES["kimi_linear"] = Family(
    "kimi-k3.arch", "kimi_k3", KIMI_K3,
    assumed={"moe_layer_freq": 1, "mla_use_output_gate": True, "latent_moe_use_norm": True,
             "use_full_rank_gate": True, "tie_word_embeddings": False},
    pattern="kda_layers")
FAMILIES["kimi_k3"] = FAMILIES["kimi_linear"]           # the multimodal config: its text_config
FAMILIES["step3p5"] = Family(
    "step-3.7-flash.arch", "step3p5", STEP3P5,
    assumed={"use_head_wise_attn_gate": True, "attention_other_setting.attention_type":
             "sliding_attention", "n_shared_experts": 1, "tie_word_embeddings": False,
             "attention_bias": False},
    pattern="layer_types")
FAMILIES["step3p7"] = FAMILIES["step3p5"]               # the multimodal config: its text_config
FAMILIES["gemma4_text"] = Family("gemma4.arch", "gemma4", GEMMA4, tied="gemma4",
                                 assumed={**GEMMA4_ASSUMED, "enable_moe_block": False},
                                 layer_types=GEMMA4_LAYERS)
FAMILIES["gemma4"] = FAMILIES["gemma4_text"]            # the multimodal config: its text_config
GEMMA4_MOE_FAMILY = Family("gemma4.arch", "gemma4_moe", GEMMA4_MOE, tied="gemma4_moe",
                           assumed=GEMMA4_ASSUMED, layer_types=GEMMA4_LAYERS)
"""Gemma 4 with enable_moe_block true (26B A4B): the same model_type, another family file model."""
"""model_type -> the shipped family its config.json fills in. A family ties its head when
`tie_word_embeddings` is true; gpt2's and opt's files always tie it (their `tied` is the base)."""

MXFP4_EXPERTS = ('quantize(weights=4, group=32, scale_bits=8, '
                 'ops="layers.*.moe.gate,layers.*.moe.up,layers.*.moe.down")')
"""gpt-oss's released quantization (quantization_config.quant_method "mxfp4"): the experts'
weights as 4-bit values with one 8-bit scale per 32, the rest bf16."""


def read_config(path: str | Path) -> dict:
    path = Path(path)
    text = read_user_text(path, "config file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CostDSLError(f"not valid JSON: {err.msg}", file=str(path), line=err.lineno,
                           column=err.colno) from None
    except RecursionError:
        raise CostDSLError("the JSON nests too deeply to read (a config.json is a flat object "
                           "of fields)", file=str(path)) from None
    if not isinstance(data, dict):
        raise CostDSLError("a config.json holds one JSON object", file=str(path))
    return data


def _number(value, key: str, file: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CostDSLError(f"field {key!r} must be a number, got {value!r}", file=file)
    if isinstance(value, float) and not value.is_integer():
        raise CostDSLError(f"field {key!r} must be an integer, got {value!r}", file=file)
    return str(int(value))


def _check_assumed(config: dict, family: Family, model_type: str, file: str) -> None:
    for key, wanted in family.assumed.items():
        if key in config and config[key] is not None and config[key] != wanted:
            raise CostDSLError(f"field {key!r} is {config[key]!r}; the shipped {model_type} family "
                               f"is written for {wanted!r}", file=file,
                               hint="write the model by hand, starting from the family file")
    if model_type == "opt" and config.get("word_embed_proj_dim", config.get("hidden_size")) \
            != config.get("hidden_size"):
        raise CostDSLError("field 'word_embed_proj_dim' differs from 'hidden_size' (OPT-350m's "
                           "projections); the shipped opt family has none", file=file)
    if family.layer_types is not None:
        _check_layer_types(config.get("layer_types"), family.layer_types, model_type, file)
    if model_type == "minimax_m3":
        _check_minimax_layers(config, file)


def _check_minimax_layers(config: dict, file: str) -> None:
    """The shipped MiniMax-M3 file writes first_k_dense_replace dense layers, then sparse MoE
    ones: the per-layer lists must say the same."""
    dense, layers = config.get("first_k_dense_replace"), config.get("num_hidden_layers")
    if not isinstance(dense, int) or not isinstance(layers, int):
        return
    wanted = [0] * dense + [1] * (layers - dense)
    for key in ("sparse_attention_freq", "moe_layer_freq", "sparse_disable_index_value"):
        value = config.get(key)
        if value is not None and [int(bool(v)) for v in value] != wanted:
            raise CostDSLError(f"field {key!r} is not {dense} zeros then ones (first_k_dense_"
                               f"replace {dense}); the shipped minimax_m3 family is written for "
                               "that layout", file=file,
                               hint="write the model by hand from models/minimax-m3.arch")


def _check_layer_types(layer_types, pattern: tuple[str, ...], model_type: str, file: str):
    """A family's cycle() runs `pattern` from layer 0: layer_types must say the same."""
    if layer_types is None:
        return
    if not isinstance(layer_types, list):
        raise CostDSLError("field 'layer_types' must be a list of layer kinds", file=file)
    for i, kind in enumerate(layer_types):
        wanted = pattern[i % len(pattern)]
        if kind != wanted:
            raise CostDSLError(f"field 'layer_types': layer {i} is {kind!r}; the shipped "
                               f"{model_type} family cycles {', '.join(pattern)} from layer 0, "
                               f"so layer {i} is {wanted!r}", file=file,
                               hint="write the model by hand with another cycle()")


def text_config(config: dict) -> dict:
    """The decoder's fields of a multimodal config (Qwen3.5's `text_config`; the vision
    encoder's are not read), with the rotary factor lifted out of `rope_parameters`; a plain
    config as it is."""
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {"tie_word_embeddings": config.get("tie_word_embeddings"), **text}
    rope = config.get("rope_parameters")
    sparse = config.get("sparse_attention_config")
    if config.get("model_type") == "minimax_m3" and isinstance(sparse, dict):
        config = {**config, **sparse}     # its sparse_* fields, read as the others
    if config.get("model_type") in ("step3p5", "step3p7"):
        config = _step_fields(config)
    linear = config.get("linear_attn_config")
    if config.get("model_type") == "kimi_linear" and isinstance(linear, dict):
        config = {**config, **linear}     # Kimi K3's KDA fields, read as the others
    if isinstance(rope, dict) and isinstance(rope.get("full_attention"), dict):
        rope = rope["full_attention"]     # Gemma 4: per layer type; the global layers' factor
    if isinstance(rope, dict) and "partial_rotary_factor" in rope:
        config = {**config, "partial_rotary_factor": rope["partial_rotary_factor"]}
    return config


def _step_fields(config: dict) -> dict:
    """A Step-3.5 / 3.7 text config with its nested and per-layer fields read as single values:
    the flat spellings where the Step ones are absent (STEP_ALIASES), the sliding layers' heads
    and attention type from attention_other_setting (absent: the full layers' heads), and the
    rotary width of each layer kind (partial_rotary_factors, per layer; absent: the whole
    head). Absent, a field is left to the family's default (the full layers' heads, the whole
    head); a factor that differs within a kind is left out too."""
    config = dict(config)
    for key, flat in STEP_ALIASES.items():
        config.setdefault(key, config.get(flat))
    other = config.get("attention_other_setting")
    other = other if isinstance(other, dict) else {}
    for key in ("num_attention_heads", "attention_type"):
        if key in other:
            config[f"attention_other_setting.{key}"] = other[key]
    for key in ("num_attention_groups", "head_dim"):
        if key in other and other[key] != config.get(key):
            config[f"attention_other_setting.{key}"] = other[key]   # refused by _step_body
    factors, kinds = config.get("partial_rotary_factors"), config.get("layer_types")
    head = config.get("head_dim")
    for kind in ("full_attention", "sliding_attention"):
        values = {f for f, k in zip(factors or [], kinds or []) if k == kind}
        if len(values) == 1 and isinstance(head, int):
            config[f"partial_rotary_factors.{kind}"] = int(values.pop() * head)
    return config


def _base(config: dict, family: Family, model_type: str, file: str) -> str:
    if not config.get("tie_word_embeddings"):
        return family.base
    if family.tied is None:
        raise CostDSLError("field 'tie_word_embeddings' is true, but the shipped "
                           f"{model_type} family has an untied LM head", file=file,
                           hint="write the model by hand with linear(..., tied=embed)")
    return family.tied


def _body(config: dict, family: Family, file: str) -> list[str]:
    """The model's statements where the config spells its layer pattern (Nemotron-H,
    DeepSeek-V4) or picks one of the family's layouts (Llama 4)."""
    if family.source == "llama4.arch":
        return _llama4_body(config, file)
    if family.source == "deepseek-v4.arch":
        return _deepseek_v4_body(config, file)
    if family.source == "kimi-k3.arch":
        return _kimi_body(config, file)
    if family.source == "step-3.7-flash.arch":
        return _step_body(config, file)
    if family.pattern is None:
        return []
    pattern = config.get(family.pattern)
    if not isinstance(pattern, str) or not pattern:
        raise CostDSLError(f"missing field {family.pattern!r} (the layer pattern)", file=file)
    names = _block_names(pattern, NEMOTRON_H_BLOCKS, family.pattern, file)
    if len(pattern) != config.get("num_hidden_layers"):
        raise CostDSLError(f"field {family.pattern!r} has {len(pattern)} letters for "
                           f"{config.get('num_hidden_layers')} layers (num_hidden_layers)",
                           file=file)
    return _cycle_body(f"{family.pattern} {pattern!r}", names, 16)


def _cycle_body(comment: str, names: list[str], per_row: int,
                before_norm: tuple[str, ...] = ()) -> list[str]:
    """The statements of a model whose layers are one block each (`names`, a cycle() as long
    as the stack), under `comment`; `before_norm` statements between the layers and the final
    norm, which reads the last of them (the layers where there are none)."""
    last = before_norm[-1].split("=")[0].strip() if before_norm else "layers"
    return ["  embed      = embedding(tokens, vocab=vocab, dim=hidden)",
            f"  # {comment}",
            f"  layers     = cycle(embed, {_cycle_rows(names, per_row, 22)}) repeat layers",
            *before_norm,
            f"  final_norm = rmsnorm({last})",
            "  lm_head    = linear(final_norm, out=vocab, tokens=last)"]


def _deepseek_v4_body(config: dict, file: str) -> list[str]:
    """One block per layer as compress_ratios lists them (its entries past num_hidden_layers
    are the MTP layers')."""
    ratios, layers = config.get("compress_ratios"), config.get("num_hidden_layers")
    if not isinstance(ratios, list) or not isinstance(layers, int) or len(ratios) < layers:
        raise CostDSLError("field 'compress_ratios' must list a ratio for each of the "
                           f"{layers} layers (num_hidden_layers)", file=file)
    names = _block_names(ratios, DEEPSEEK_V4_LAYERS, "compress_ratios", file)[:layers]
    blocks = _cycle_rows(names, 6, 19)
    return ["  embed   = embedding(tokens, vocab=vocab, dim=hidden)",
            "  streams = hc_expand(embed, hc=hc_mult)",
            "  # compress_ratios, one block per layer",
            f"  layers  = cycle(streams, {blocks}) repeat layers",
            "  logits  = v4_head(layers) inline"]


def _kimi_body(config: dict, file: str) -> list[str]:
    """One block per layer: KDA where linear_attn_config.kda_layers lists its number (from 1),
    MLA where full_attn_layers does, dense below first_k_dense_replace; the output's
    aggregation over the Attention Residuals blocks before the final norm."""
    layers = config.get("num_hidden_layers")
    kda, full = config.get("kda_layers"), config.get("full_attn_layers")
    if not isinstance(kda, list) or not isinstance(full, list) or not isinstance(layers, int):
        raise CostDSLError("fields 'kda_layers' and 'full_attn_layers' (linear_attn_config) must "
                           "list the layers' numbers", file=file)
    if sorted(kda + full) != list(range(1, layers + 1)):
        raise CostDSLError("fields 'kda_layers' and 'full_attn_layers' must name each of the "
                           f"{layers} layers (num_hidden_layers, numbered from 1) once", file=file)
    dense = config.get("first_k_dense_replace") or 0
    names = [KIMI_LAYERS["kda" if i + 1 in kda else "mla", i < dense] for i in range(layers)]
    return _cycle_body(
        "linear_attn_config: kda_layers and full_attn_layers, one block per layer", names, 6,
        ("  res_out    = attn_res(layers, block=attn_res_block, layers=layers, output=true)",))


def _step_body(config: dict, file: str) -> list[str]:
    """One block per layer: its layer_types entry (the list may run past num_hidden_layers into
    the MTP layers) and whether moe_layers_enum (or, in a flat config, first_k_dense_replace)
    makes it a MoE layer."""
    for key in ("num_attention_groups", "head_dim"):
        if f"attention_other_setting.{key}" in config:
            raise CostDSLError(f"field 'attention_other_setting' gives the sliding layers another "
                               f"{key}; the shipped step3p5 family shares it", file=file,
                               hint="write the model by hand, starting from the family file")
    layers, kinds = config.get("num_hidden_layers"), config.get("layer_types")
    if not isinstance(kinds, list) or not isinstance(layers, int) or len(kinds) < layers:
        raise CostDSLError(f"field 'layer_types' must name each of the {layers} layers "
                           "(num_hidden_layers)", file=file)
    enum = config.get("moe_layers_enum")
    if isinstance(enum, str):
        moe = {int(x) for x in enum.split(",") if x.strip()}
    elif isinstance(enum, list):
        moe = set(enum)
    else:
        moe = set(range(config.get("first_k_dense_replace") or 0, layers))
    names = _block_names([(k, i in moe) for i, k in enumerate(kinds[:layers])], STEP_LAYERS,
                         "layer_types", file)
    return _cycle_body("layer_types and moe_layers_enum, one block per layer", names, 5)


def _block_names(entries, blocks: dict, field: str, file: str) -> list[str]:
    """The block each entry of a per-layer field names (a letter of Nemotron-H's pattern, a
    ratio of DeepSeek-V4's compress_ratios); an entry with no shipped block is an error."""
    unknown = sorted(set(entries) - set(blocks))
    if unknown:
        raise CostDSLError(f"field {field!r} holds {unknown[0]!r}; the shipped blocks are "
                           + ", ".join(f"{k} ({v})" for k, v in blocks.items()), file=file)
    return [blocks[e] for e in entries]


def _cycle_rows(names: list[str], per_row: int, indent: int) -> str:
    """A cycle()'s block names, `per_row` to a line, continuation lines indented to match."""
    rows = [", ".join(names[i:i + per_row]) for i in range(0, len(names), per_row)]
    return (",\n" + " " * indent).join(rows)


def _llama4_body(config: dict, file: str) -> list[str]:
    layout = (bool(config.get("use_qk_norm", True)), config.get("interleave_moe_layer_step", 1))
    if layout not in LLAMA4_LAYOUTS:
        raise CostDSLError(f"fields 'use_qk_norm' and 'interleave_moe_layer_step' are "
                           f"{layout[0]} and {layout[1]}; the shipped llama4 family writes "
                           "Scout's (true, 1) and Maverick's (false, 2)", file=file,
                           hint="write the model by hand with another cycle()")
    return LLAMA4_LAYOUTS[layout] or []


MTP_BLOCKS = {"deepseek": "deepseek_mtp", "NVIDIA-Nemotron-3-Nano-30B-A3B": "nemotron_mtp",
              "deepseek-v4": "v4_mtp", "qwen3_5": "qwen35_mtp", "qwen3_5_moe": "qwen35_mtp_moe"}
"""The shipped multi-token-prediction module (a block) of each family model an import extends."""
NEMOTRON_MTP_PATTERN = "*E"   # the layers of the shipped nemotron_mtp block


def _mtp_model(config: dict, family: Family, title: str) -> list[str]:
    """The model "<title>-MTP" (written before the main model, which stays the file's last)
    where the config has multi-token-prediction layers the family's module describes; a comment
    where it has layers the family cannot write."""
    count = config.get("num_nextn_predict_layers", config.get("mtp_num_hidden_layers"))
    if not isinstance(count, int) or isinstance(count, bool) or count < 1 \
            or family.base not in MTP_BLOCKS:
        return []
    pattern = config.get("mtp_hybrid_override_pattern")
    if family.source.startswith("nemotron") and pattern != NEMOTRON_MTP_PATTERN:
        return [f"# num_nextn_predict_layers {count} with mtp_hybrid_override_pattern "
                f"{pattern!r}: not written (the shipped module is {NEMOTRON_MTP_PATTERN!r})", ""]
    ratios = config.get("compress_ratios") or []
    if family.source == "deepseek-v4.arch" and ratios[config["num_hidden_layers"]:][:1] != [0]:
        return [f"# num_nextn_predict_layers {count}: its layer's compress ratio is not 0; "
                "not written (the shipped module has a window-only layer)", ""]
    more = (f"; {count} modules of this shape are trained, a draft step runs one"
            if count > 1 else "")
    field = "num_nextn_predict_layers" if "num_nextn_predict_layers" in config else \
        "mtp_num_hidden_layers"
    return [f'model "{title}-MTP" extends "{title}" {{   # {field}: {count}'
            f"{more}",
            f"  mtp = {MTP_BLOCKS[family.base]}(tokens)", "}", ""]


MXFP4_RELEASES = {"gpt_oss": ("quant_method", "mxfp4"),
                  "kimi_linear": ("format", "mxfp4-pack-quantized")}
"""The families whose released quantization_config (this field, this value) is MXFP4 routed
experts: MXFP4_EXPERTS."""


def _passes(config: dict, model_type: str) -> list[str]:
    quant = config.get("quantization_config")
    key, value = MXFP4_RELEASES.get(model_type, (None, None))
    if key is not None and isinstance(quant, dict) and quant.get(key) == value:
        return [f"  passes {{                    # quantization_config: {key} {value}",
                f"    {MXFP4_EXPERTS}", "  }"]
    return []


def to_arch(config: dict, file: str, name: str | None = None) -> str:
    top = config
    config = text_config(config)
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise CostDSLError(f"field 'model_type' is {model_type!r}, which costdsl cannot import "
                           f"yet", file=file, hint="supported: " + ", ".join(sorted(FAMILIES)))
    family = FAMILIES[model_type]
    if family.source == "gemma4.arch" and config.get("enable_moe_block") is True:
        family = GEMMA4_MOE_FAMILY
    base = _base(config, family, model_type, file)
    _check_assumed(config, family, model_type, file)
    lines = []
    for f in family.fields:
        value = config.get(f.key)
        if value is None:
            if f.default is None:
                raise CostDSLError(f"missing field {f.key!r} (the {f.param} parameter)",
                                   file=file)
            if f.convert is None and f.key not in config:
                continue  # absent: the family's own default (e.g. head_dim = hidden / heads)
            text = f.convert(value) if f.convert else str(f.default)
        else:
            text = f.convert(value) if f.convert else _number(value, f.key, file)
        lines.append(f"    {f.param:14s} = {text:14s}# {f.key}")
    for param, text in family.fixed.items():
        lines.append(f"    {param:14s} = {text:14s}# model_type {model_type}")
    path = Path(file)
    folder_named = path.name == "config.json" and path.parent.name  # models/<name>/config.json
    title = name or top.get("_name_or_path") or folder_named or path.stem
    if not isinstance(title, str) or '"' in title or "\n" in title or not title.strip():
        source_of = "--name" if name else "the field '_name_or_path'"
        raise CostDSLError(f"{source_of} gives the model name {title!r}, which a .arch file "
                           "cannot hold", file=None if name else file,
                           hint="a model name is non-empty text without double quotes or "
                                "line breaks; give one with --name")
    return "\n".join([
        f"# Imported by `costdsl import` from {Path(file).name} (model_type {model_type!r})"
        + ("; its text_config: the vision encoder is not imported." if top is not config
           and "text_config" in top else "."),
        f'import "{family.source}"', "", *_mtp_model(config, family, title),
        f'model "{title}" extends "{base}" {{', "  params {", *lines, "  }",
        *_body(config, family, file), *_passes(config, model_type), "}", ""])


def check_imported(text: str, config_file: str) -> None:
    """Compile the text `to_arch` wrote; an error in it is reported at the config.json field
    the offending line came from (each generated line names its field in a comment)."""
    from .elaborate import elaborate  # the importer is the one language module that elaborates
    from .library import load_library
    virtual = f"<import of {config_file}>"
    try:
        elaborate(load_library(virtual, text))
    except CostDSLError as err:
        if err.file != virtual or err.line is None:
            raise
        line = text.splitlines()[err.line - 1]
        key = line.split("# ", 1)[1].strip() if "# " in line else None
        raw = read_user_text(config_file, "config file")
        at_line = next((i for i, l in enumerate(raw.splitlines(), 1) if f'"{key}"' in l), None)
        raise CostDSLError(f"field {key!r}: {err.message}" if key else err.message,
                           file=config_file, line=at_line, column=1 if at_line else None,
                           hint=err.hint) from None
