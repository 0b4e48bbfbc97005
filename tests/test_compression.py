"""Compression passes (the survey "Faster and Lighter LLMs", 2024): structured pruning, N:M and
unstructured sparsity, low-rank factorisation -- against counts derived by hand from
Llama-2-7b's config.json (hidden 4096, ffn 11008, 32 heads of 128, 32 layers, vocab 32000;
6,738,415,616 parameters) and the NVIDIA datasheets' dense and "with sparsity" rates."""
import math

import pytest

import costdsl
from costdsl import symbols as S
from costdsl.cli import main
from costdsl.graph.schema import nodes

from conftest import MODELS

LLAMA = MODELS / "llama-2-7b.arch"
PARAMS = 6_738_415_616
AT = {S.batch: 4, S.seq: 1024, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}


def _model(*passes):
    return costdsl.load(LLAMA, passes=list(passes))


def _ops(model, stage="decode"):
    return {n.name: n for n in nodes(model.graph(stage))}


@pytest.mark.parametrize("text", ["prune(heads=0, ffn=0, layers=0)", "sparsify(weights=0)"])
def test_identity_settings_reproduce_the_model(text):
    base, m = _model(), _model(text)
    for stage in ("prefill", "decode"):
        for a, b in zip(nodes(m.graph(stage)), nodes(base.graph(stage))):
            assert (a.name, a.flops, a.bytes, a.params, a.repeat) == \
                (b.name, b.flops, b.bytes, b.params, b.repeat)


def test_pruning_half_the_ffn_by_hand():
    """ffn 11008 -> 5504: gate/up/down weights and the activation between them halve; the
    parameter count drops by 32 x 3 x 4096 x 5504."""
    base, m = _ops(_model()), _ops(_model("prune(ffn=0.5)"))
    for name in ("layers.gate", "layers.up", "layers.down"):
        assert m[name].params == base[name].params / 2 == 4096 * 5504
        assert (m[name].flops / base[name].flops).subs(AT) == sympy_half()
    assert m["layers.act"].out_shape[1] == 5504
    assert m["layers.down"].writes == base["layers.down"].writes  # the output keeps hidden
    assert _model("prune(ffn=0.5)").params() == PARAMS - 32 * 3 * 4096 * 5504


def sympy_half():
    import sympy
    return sympy.Rational(1, 2)


def test_pruning_heads_of_multi_head_attention_takes_their_cache():
    """Llama-2-7b has 32 KV heads (MHA): heads=0.3 removes floor(9.6) = 9 heads with their keys
    and values: q, k, v, o lose 9 x 128 of 4096 columns; the KV cache keeps 23 of 32 heads."""
    m = _model("prune(heads=0.3)")
    assert m.params() == PARAMS - 32 * 4 * 4096 * 9 * 128
    base, ops = _ops(_model()), _ops(m)
    kv = lambda n: sum(a.elements for a in n.reads if a.cls == "kv").subs(AT)
    assert kv(ops["layers.attn.qk"]) * 32 == kv(base["layers.attn.qk"]) * 23
    assert ops["layers.attn.qk"].attrs["heads"] == 23


def test_pruning_kv_heads_of_grouped_query_attention():
    """Llama-3-8B: 32 query heads in 8 groups; kv_heads=0.5 removes 4 KV heads and their 16
    query heads: k and v of 4096 x 512, q of 4096 x 2048; heads=0.5 alone keeps every KV head."""
    m = costdsl.load(MODELS / "llama-3-8b.arch", passes=["prune(kv_heads=0.5)"])
    ops = _ops(m)
    assert ops["layers.k"].params == 4096 * 512 and ops["layers.q"].params == 4096 * 2048
    q_only = _ops(costdsl.load(MODELS / "llama-3-8b.arch", passes=["prune(heads=0.5)"]))
    assert q_only["layers.k"].params == 4096 * 1024 and q_only["layers.q"].params == 4096 * 2048


def test_pruning_layers_and_rounding():
    """layers=0.25 removes 8 of 32 layers: each repeated op occurs 24 times."""
    ops = _ops(_model("prune(layers=0.25)"))
    assert ops["layers.q"].repeat == 24 and ops["lm_head"].repeat == 1
    per_layer = (PARAMS - 131_072_000 * 2 - 4096) // 32
    assert _model("prune(layers=0.25)").params() == PARAMS - 8 * per_layer


def test_two_four_sparsity_stores_nine_bits_per_fp16_weight():
    """2:4: half the values at 16 bits and a 2-bit index per kept value = 9 bits per original
    weight; the work runs at the datasheet's sparse rate (A100: 624 against 312 TFLOPS)."""
    m = _model('sparsify(pattern="2:4")')
    gate = _ops(m)["layers.gate"]
    dense = _ops(_model())["layers.gate"]
    w = lambda n: sum(a.elements * n.stored_bits("weight") for a in n.reads
                      if a.cls == "weight").subs(AT)
    assert w(gate) / w(dense) == pytest.approx(9 / 16, rel=1e-12)
    a = m.analyze(load_ideal("nvidia-a100-80gb"), 4096, 1024, stages=("prefill",))
    op = next(o for o in a.stages["prefill"].ops if o.name == "layers.gate")
    assert op.attainable == pytest.approx(624e12, rel=1e-9)  # compute-bound at 4096 x 1024


def load_ideal(name):
    from costdsl.hardware import load_hardware
    return load_hardware(name).ideal()


def test_two_four_decode_speedup_is_the_byte_ratio_then_the_rate_ratio():
    """A linear's time: memory-bound the byte ratio 16/9 = 1.78x, compute-bound 2x; the switch
    is where the sparse op turns compute-bound (crossover --solve batch on it)."""
    hw = load_ideal("nvidia-h100-sxm")
    sparse, dense = _model('sparsify(pattern="2:4")'), _model()
    def gate(model, b):
        a = model.analyze(hw, b, 1024, stages=("decode",))
        return next(o for o in a.stages["decode"].ops if o.name == "layers.gate").time_s
    assert gate(dense, 1) / gate(sparse, 1) == pytest.approx(16 / 9, rel=2e-3)
    assert gate(dense, 65536) / gate(sparse, 65536) == pytest.approx(2, rel=1e-2)
    cross = sparse.crossover("batch", hw, "decode", seq=1024)
    assert any(c.op == "layers.gate" and c.value is not None for c in cross.ops)


def test_unstructured_formats():
    """weights=0.5: bitmap = 8 value bits + 1 bit per original weight = 9 bits; csr = 0.5 x (16
    + 16) = 16 bits (no saving at 50% with 16-bit indices); no sparse rate for unstructured."""
    dense = _ops(_model())["layers.gate"]
    for text, bits in (("sparsify(weights=0.5)", 9), ('sparsify(weights=0.5, format="csr")', 16)):
        gate = _ops(_model(text))["layers.gate"]
        assert float((gate.bytes - dense.bytes).subs(AT)) == pytest.approx(
            4096 * 11008 * (bits - 16) / 8, rel=1e-12)
        assert "sparse_nm" not in gate.attrs


def test_low_rank_by_hand():
    """rank 1024 on q (4096 x 4096): two linears, 2 x 4096 x 1024 parameters, an r-wide
    intermediate; r* = 4096 x 4096 / 8192 = 2048."""
    m = _model('low_rank(rank=1024, ops="layers.q")')
    ops = _ops(m)
    assert "layers.q" not in ops
    assert ops["layers.q.a"].params + ops["layers.q.b"].params == 2 * 4096 * 1024
    assert ops["layers.q.b"].output == "layers.q"
    assert m.params() == PARAMS - 32 * (4096 * 4096 - 2 * 4096 * 1024)
    answers = {(a.op, a.question): a for a in m.compression_answers(
        "rank", "nvidia-a100-80gb", 1, 1024)}
    assert answers[("layers.q", "weights_rank")].closed_value == 2048
    # memory-bound balance, 2 bytes a weight and an activation, n = 1 row:
    # r = w in out / (w (in + out) + 2 a n) = 2 x 4096^2 / (2 x 8192 + 4) = 2047.5
    assert answers[("layers.q", "time_rank")].closed_value == pytest.approx(
        2 * 4096 ** 2 / (2 * 8192 + 4), rel=1e-12)


def test_low_rank_time_rank_substitutes_back():
    m = _model('low_rank(rank=1024, ops="layers.gate")')
    a = next(a for a in m.compression_answers("rank", "nvidia-h100-sxm", 8, 1024)
             if a.question == "time_rank")
    def gate_time(model):
        return sum(o.time_s for o in model.analyze("nvidia-h100-sxm", 8, 1024, stages=(
            "decode",)).stages["decode"].ops if o.name.startswith("layers.gate"))
    dense = gate_time(_model())
    below, above = math.floor(a.value), math.ceil(a.value)
    assert gate_time(_model(f'low_rank(rank={below}, ops="layers.gate")')) < dense
    assert gate_time(_model(f'low_rank(rank={above}, ops="layers.gate")')) > dense


def test_pruned_fraction_for_a_target(capsys):
    """The fraction of the FFN to prune for a decode step of 10 ms (A100, batch 1, 1,024
    cached) and for 10 GB of weights + KV cache: substituted back, they reach the targets."""
    m = _model("prune(ffn=0.5)")
    answers = {a.question: a for a in m.compression_answers(
        "ffn", "nvidia-a100-80gb", 1, 1024, target_time=0.010, target_memory=10e9)}
    f = answers["target_time"].value
    t = _model(f"prune(ffn={f!r})").analyze("nvidia-a100-80gb", 1, 1024, stages=("decode",))
    # the pass rounds to whole channels (one of 11,008 is 1e-4 of the MLP)
    assert t.stages["decode"].total.time_s == pytest.approx(0.010, rel=1e-4)
    g = answers["target_memory"].value
    mem = _model(f"prune(ffn={g!r})").analyze("nvidia-a100-80gb", 1, 1024).memory
    assert mem.weights_bytes + mem.kv_cache_bytes == pytest.approx(10e9, rel=1e-4)
    assert main(["crossover", str(LLAMA), "--hw", "nvidia-a100-80gb", "--pass",
                 "prune(ffn=0.5)", "--solve", "ffn", "--target-time", "1ms"]) == 0
    assert "out of reach" in capsys.readouterr().out


@pytest.mark.parametrize("text, message", [
    ("prune(ffn=1)", "removes a fraction in [0, 1)"),
    ("prune(heads=1.5)", "a fraction must be in [0, 1]"),
    ('prune(heads=0.5, ops="layers.nope")', "matches no op"),
    ('sparsify(pattern="4:2")', "0 < N < M"),
    ('sparsify(pattern="dense")', "0 < N < M"),
    ("sparsify()", "needs weights="),
    ('sparsify(weights=0.3, pattern="2:4")', "contradicts"),
    ('sparsify(weights=0.5, format="coo")', "format="),
    ("low_rank(rank=5000)", "does not compress"),
    ("low_rank(rank=0)", "positive integer"),
    ("low_rank()", "needs rank="),
    ("fuse_all(); low_rank(rank=64)", "selected no linear"),  # every linear fused
])
def test_bad_input(text, message):
    with pytest.raises(costdsl.CostDSLError) as err:
        _model(text).graph("decode")
    assert message in str(err.value)


def test_solving_needs_the_pass_and_a_target(capsys):
    for argv, message in (
            (["--solve", "ffn", "--target-time", "1ms"], "go with --solve"),
            (["--pass", "prune(ffn=0.5)", "--solve", "ffn"], "needs a target"),
            (["--pass", "prune(ffn=0.5)", "--solve", "ffn", "--target-time", "soon"],
             "expected a duration"),
            (["--solve", "batch", "--target-memory", "1 GB"], "go with --solve")):
        assert main(["crossover", str(LLAMA), "--hw", "nvidia-a100-80gb"] + argv) == 2
        assert message in capsys.readouterr().err
