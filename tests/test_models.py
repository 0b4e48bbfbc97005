"""Shipped models against their published parameter counts."""
import pytest

import costdsl
from costdsl.params import params_by_op

from conftest import MODELS


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
