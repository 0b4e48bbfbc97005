"""Early exit and layer skipping (survey 4.1): fewer layers per token, the KV cache still filled.

Expected times are composed by hand from the per-op times of the unmodified model on the ideal
A6000 (decode at batch 1, 2,048 cached: every op memory-bound)."""
import re

import pytest

import costdsl
from costdsl import symbols as S
from costdsl.graph.schema import nodes

from conftest import MODELS

LLAMA = MODELS / "llama-2-7b.arch"
KV_PATH = {"layers.attn_norm", "layers.k", "layers.k_rot", "layers.v"}  # feeds the K/V cache


def _ops(model, **kw):
    a = model.analyze("nvidia-a6000", batch=1, seq=2048, stages=("decode",), **kw)
    return {o.name: o for o in a.stages["decode"].ops}, a


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.arch")), ids=lambda p: p.stem)
def test_every_layer_running_is_the_identity(path):
    base = costdsl.load(path)
    for p in ("early_exit(mean_layers=1)", 'early_exit(mean_layers=1, kv="copy")'):
        m = costdsl.load(path, passes=[p])
        for stage in ("prefill", "decode"):
            for a, b in zip(nodes(m.graph(stage)), nodes(base.graph(stage))):
                assert (a.flops, a.bytes, a.share) == (b.flops, b.bytes, 1), (path, p, a.name)


def test_recompute_keeps_the_kv_path_and_halves_the_rest():
    full, _ = _ops(costdsl.load(LLAMA))
    half, a = _ops(costdsl.load(LLAMA, passes=["early_exit(mean_layers=0.5)"]))
    expected = sum(o.total_time_s * (1 if o.repeat == 1 or o.name in KV_PATH else 0.5)
                   for o in full.values())
    assert a.stages["decode"].total.time_s == pytest.approx(expected, rel=1e-12)
    base = costdsl.load(LLAMA).analyze("nvidia-a6000", batch=1, seq=2048)
    assert a.params_total == base.params_total                       # weights are all kept
    assert a.memory.kv_cache_bytes == base.memory.kv_cache_bytes     # every layer's cache


def test_copy_writes_every_cache_entry_from_the_exit_state():
    """kv="copy": k_rot and v read and compute for half the layers, write for all: memory-bound
    time (0.5 reads + writes) / B; the K projection and the norm run for half."""
    full, _ = _ops(costdsl.load(LLAMA))
    half, a = _ops(costdsl.load(LLAMA, passes=['early_exit(mean_layers=0.5, kv="copy")']))
    m = costdsl.load(LLAMA, passes=['early_exit(mean_layers=0.5, kv="copy")'])
    at = {S.batch: 1, S.seq: 2048, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    copied = {n.name: n for n in nodes(m.graph("decode"))}
    plain = {n.name: n for n in nodes(costdsl.load(LLAMA).graph("decode"))}
    for name in ("layers.k_rot", "layers.v"):
        reads = float(sum(copied[name].read_bytes.values()).subs(at))
        writes = float(sum(copied[name].write_bytes.values()).subs(at))
        assert reads == pytest.approx(0.5 * float(sum(plain[name].read_bytes.values()).subs(at)))
        assert writes == pytest.approx(float(sum(plain[name].write_bytes.values()).subs(at)))
        assert half[name].time_s == pytest.approx((reads + writes) / 768e9, rel=1e-12)
    assert half["layers.k"].time_s == pytest.approx(0.5 * full["layers.k"].time_s, rel=1e-12)
    assert half["layers.attn.qk"].time_s == pytest.approx(0.5 * full["layers.attn.qk"].time_s)


def test_layer_skip_is_early_exit_by_the_skipped_share():
    """8:24:2 skips 8 of 32 layers: the same as early_exit(mean_layers=24/32)."""
    a = costdsl.load(LLAMA, passes=['layer_skip(layers="8:24:2")'])
    b = costdsl.load(LLAMA, passes=["early_exit(mean_layers=0.75)"])
    ta = a.analyze("nvidia-a6000", 4, 1024).stages["decode"].total.time_s
    tb = b.analyze("nvidia-a6000", 4, 1024).stages["decode"].total.time_s
    assert ta == pytest.approx(tb, rel=1e-12)


@pytest.mark.parametrize("text, message", [
    ("early_exit(mean_layers=0)", "the fraction is in (0, 1]"),
    ("early_exit(mean_layers=2)", "a fraction must be in [0, 1]"),
    ("early_exit()", "needs mean_layers="),
    ('early_exit(mean_layers=0.5, kv="move")', "expected one of recompute, copy"),
    ('layer_skip(layers="0:40")', "skips all 32 layers"),
    ('layer_skip(layers="a:b")', "expected start:stop"),
])
def test_bad_arguments(text, message):
    with pytest.raises(costdsl.CostDSLError, match=re.escape(message)):
        costdsl.load(LLAMA, passes=[text]).graph("decode")


def test_layer_skip_needs_one_stack(write_arch):
    """Two stacks repeated 2 and 3 times: which indices a slice means is ambiguous."""
    path = write_arch('import "llama.arch"\n'
                      'model "two" extends "llama" {\n'
                      '  params { hidden = 64\n layers = 2\n heads = 4\n ffn = 128\n'
                      '    vocab = 100 }\n'
                      '  embed = embedding(tokens, vocab=vocab, dim=hidden)\n'
                      '  a = llama_layer(embed) repeat 2\n'
                      '  b = llama_layer(a) repeat 3\n}\n')
    with pytest.raises(costdsl.CostDSLError, match="one stack"):
        costdsl.load(path, passes=['layer_skip(layers="0:1")']).graph("decode")
    costdsl.load(path, passes=["early_exit(mean_layers=0.5)"]).graph("decode")  # fine
