"""costdsl import: Hugging Face config.json files (tests/data/configs, copied from the model
repositories' config.json with the fields that matter) become .arch files whose parameter
counts equal the shipped models'."""
import subprocess
import sys

import pytest

import costdsl
from costdsl.errors import CostDSLError
from costdsl.importer import read_config, to_arch

from conftest import DATA, MODELS

CONFIGS = DATA / "configs"


@pytest.mark.parametrize("config,shipped", [
    ("llama-2-7b.json", "llama-2-7b.arch"),
    ("mistral-7b.json", "mistral-7b.arch"),
    ("qwen2.5-7b.json", "qwen2.5-7b.arch"),
    ("mixtral-8x7b.json", "mixtral-8x7b.arch"),
    ("gpt2.json", "gpt2.arch"),
])
def test_imported_model_matches_shipped(tmp_path, config, shipped):
    path = CONFIGS / config
    out = tmp_path / "imported.arch"
    result = subprocess.run([sys.executable, "-m", "costdsl", "import", str(path), "-o", str(out)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    imported, reference = costdsl.load(out), costdsl.load(MODELS / shipped)
    assert imported.params() == reference.params()
    assert imported.active_params() == reference.active_params()
    assert dict(imported.design.params) == dict(reference.design.params)


def _error(config: dict):
    with pytest.raises(CostDSLError) as info:
        to_arch(config, "config.json")
    return str(info.value)


def test_unknown_model_type_and_missing_field_are_named():
    assert "'model_type' is 'rwkv'" in _error({"model_type": "rwkv"})
    assert "missing field 'intermediate_size'" in _error(
        {"model_type": "llama", "hidden_size": 8, "num_hidden_layers": 1,
         "num_attention_heads": 2, "vocab_size": 10})
    assert "must be a number" in _error(
        {"model_type": "gpt2", "n_embd": "768", "n_layer": 1, "n_head": 1, "vocab_size": 1,
         "n_positions": 1})
    assert "tie_word_embeddings" in _error({"model_type": "llama", "tie_word_embeddings": True})


def test_malformed_json_has_line_and_column(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text('{\n  "model_type": "llama",\n  "hidden_size": 4096,,\n}\n')
    with pytest.raises(CostDSLError) as info:
        read_config(bad)
    assert (info.value.line, info.value.column) == (3, 23)  # the second comma
