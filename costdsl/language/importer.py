"""Hugging Face config.json -> a .arch file that extends the shipped family definition.

The config is read as JSON data (never executed); each supported `model_type` maps its fields
onto the family's parameters. The output names the field behind every value.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
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

# Fields whose value the family file assumes: another value is a different architecture.
ASSUMED = {
    "opt": {"activation_function": "relu", "do_layer_norm_before": True},
    "deepseek_v2": {"moe_layer_freq": 1},
    "deepseek_v3": {"moe_layer_freq": 1},
}

FAMILIES = {
    # model_type: (file to import, base model, fields, fixed parameters)
    "llama": ("llama.arch", "llama", LLAMA, {}),
    "mistral": ("llama.arch", "llama",
                LLAMA + (Field("window", "sliding_window", default="inf", convert=_window),), {}),
    "qwen2": ("llama.arch", "llama", LLAMA, {"qkv_bias": "1"}),
    "mixtral": ("mixtral-8x7b.arch", "Mixtral-8x7B-v0.1",
                LLAMA + (Field("experts", "num_local_experts"),
                         Field("top_k", "num_experts_per_tok"),
                         Field("window", "sliding_window", default="inf", convert=_window)), {}),
    "phi3": ("llama.arch", "llama",
             LLAMA + (Field("window", "sliding_window", default="inf", convert=_window),), {}),
    "opt": ("opt.arch", "opt",
            (Field("hidden", "hidden_size"), Field("layers", "num_hidden_layers"),
             Field("heads", "num_attention_heads"), Field("ffn", "ffn_dim"),
             Field("vocab", "vocab_size"),
             Field("positions", "max_position_embeddings", convert=_opt_positions)), {}),
    "deepseek_v2": ("deepseek.arch", "deepseek", DEEPSEEK, {}),
    "deepseek_v3": ("deepseek.arch", "deepseek", DEEPSEEK, {}),
    "gpt2": ("gpt2.arch", "gpt2",
             (Field("hidden", "n_embd"), Field("layers", "n_layer"), Field("heads", "n_head"),
              Field("ffn", "n_inner", default="4 * hidden"), Field("vocab", "vocab_size"),
              Field("positions", "n_positions")), {}),
}
UNTIED = {"llama", "mistral", "qwen2", "mixtral", "phi3", "deepseek_v2", "deepseek_v3"}  # families whose LM head has its own matrix


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


def to_arch(config: dict, file: str, name: str | None = None) -> str:
    model_type = config.get("model_type")
    if model_type not in FAMILIES:
        raise CostDSLError(f"field 'model_type' is {model_type!r}, which costdsl cannot import "
                           f"yet", file=file, hint="supported: " + ", ".join(sorted(FAMILIES)))
    source, base, fields, fixed = FAMILIES[model_type]
    if model_type in UNTIED and config.get("tie_word_embeddings"):
        raise CostDSLError("field 'tie_word_embeddings' is true, but the shipped "
                           f"{model_type} family has an untied LM head", file=file,
                           hint="write the model by hand with linear(..., tied=embed)")
    for key, wanted in ASSUMED.get(model_type, {}).items():
        if key in config and config[key] != wanted:
            raise CostDSLError(f"field {key!r} is {config[key]!r}; the shipped {model_type} family "
                               f"is written for {wanted!r}", file=file,
                               hint="write the model by hand, starting from the family file")
    if model_type == "opt" and config.get("word_embed_proj_dim", config.get("hidden_size")) \
            != config.get("hidden_size"):
        raise CostDSLError("field 'word_embed_proj_dim' differs from 'hidden_size' (OPT-350m's "
                           "projections); the shipped opt family has none", file=file)
    lines = []
    for f in fields:
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
    for param, text in fixed.items():
        lines.append(f"    {param:14s} = {text:14s}# model_type {model_type}")
    path = Path(file)
    folder_named = path.name == "config.json" and path.parent.name  # models/<name>/config.json
    title = name or config.get("_name_or_path") or folder_named or path.stem
    if not isinstance(title, str) or '"' in title or "\n" in title or not title.strip():
        source_of = "--name" if name else "the field '_name_or_path'"
        raise CostDSLError(f"{source_of} gives the model name {title!r}, which a .arch file "
                           "cannot hold", file=None if name else file,
                           hint="a model name is non-empty text without double quotes or "
                                "line breaks; give one with --name")
    return "\n".join([
        f"# Imported by `costdsl import` from {Path(file).name} (model_type {model_type!r}).",
        f'import "{source}"', "",
        f'model "{title}" extends "{base}" {{', "  params {", *lines, "  }", "}", ""])


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
