"""Sliding-window attention (Mistral-7B-v0.1, window W = 4096, 8 KV heads of 128)."""
import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.analysis.records import Settings
from costdsl.analysis.latency import stepwise_decode_total

from conftest import MODELS

MISTRAL = costdsl.load(MODELS / "mistral-7b.arch")


def _qk(seq, stage="decode"):
    a = MISTRAL.analyze("nvidia-a6000", batch=1, seq=seq, stages=(stage,))
    return next(o for o in a.stages[stage].ops if o.name == "layers.attn.qk")


def test_decode_reads_at_most_the_window_of_cached_keys():
    """K read per step: b x min(seq + 1, W) x 8 x 128 x 2 bytes: 1000 cached -> 1001 positions
    (2,050,048 B); 20,000 cached -> 4096 positions (8,388,608 B), the same as at 4095."""
    assert _qk(1000).bytes_by_class["kv"] == 1001 * 8 * 128 * 2
    assert _qk(4095).bytes_by_class["kv"] == _qk(20000).bytes_by_class["kv"] == 4096 * 1024 * 2


def test_prefill_scores_are_banded():
    """Prefill qk: 2 b H s min(s, W) d operations: at s = 8192, 2 x 32 x 8192 x 4096 x 128."""
    assert _qk(8192, "prefill").flops == 2 * 32 * 8192 * 4096 * 128


def test_windowless_models_are_unchanged():
    """window = inf in the family: Min(seq + 1, oo) is seq + 1, no trace of a window."""
    node = costdsl.load(MODELS / "llama-2-7b.arch").graph("decode").nodes["layers.attn.qk"]["op"]
    assert not node.flops.atoms(sympy.Min)


def test_step_time_flattens_past_the_window_and_latency_sums_across_it():
    answer = MISTRAL.crossover("seq", "nvidia-a6000", stage="decode", batch=4)
    step = answer.summary.time
    assert step.subs(S.seq, 5000) == step.subs(S.seq, 30000)
    latency = MISTRAL.latency("nvidia-a6000", batch=4, seq=3000, gen=3000)
    explicit = stepwise_decode_total(MISTRAL.roofline("nvidia-a6000", "decode"),
                                     Settings(4, 3000), 3000)
    assert latency.e2e_s - latency.ttft_s == pytest.approx(explicit, rel=1e-12)
