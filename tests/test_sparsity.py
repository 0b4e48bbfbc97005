"""Contextual sparsity (Deja Vu, survey 4.1.3), against numbers derived by hand on Llama-2-7b
(hidden 4096, ffn 11008, 32 heads of 128, 32 layers, fp16: 2 bytes an element)."""
import pytest

import costdsl
from costdsl import symbols as S
from costdsl.graph.schema import nodes

from conftest import MODELS

LLAMA = MODELS / "llama-2-7b.arch"
AT16 = {S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16, S.seq: 2048}


def _node(model, name, stage="decode"):
    return next(n for n in nodes(model.graph(stage)) if n.name == name)


@pytest.mark.parametrize("name", ["llama-2-7b", "gpt2", "opt-6.7b", "mistral-7b", "phi-3-mini"])
def test_no_sparsity_is_the_identity(name):
    base = costdsl.load(MODELS / f"{name}.arch")
    m = costdsl.load(MODELS / f"{name}.arch", passes=["contextual_sparsity(mlp=0, heads=0)"])
    for stage in ("prefill", "decode"):
        for a, b in zip(nodes(m.graph(stage)), nodes(base.graph(stage))):
            assert (a.flops, a.bytes, a.params) == (b.flops, b.bytes, b.params), a.name


def test_mlp_sparsity_by_hand():
    """mlp=0.8: a token computes 20% of the gate projection; one token reads 20% of its weights,
    64 tokens read the union, 1 - 0.8^64 of them: the intensity grows with batch only through
    the work, so sparsity lowers it at large batch (survey 4.1.4)."""
    m = costdsl.load(LLAMA, passes=["contextual_sparsity(mlp=0.8)"])
    gate = _node(m, "layers.gate")
    weights = 4096 * 11008
    for b in (1, 64):
        at = {**AT16, S.batch: b}
        assert float(gate.flops.subs(at)) == pytest.approx(0.2 * 2 * b * weights)
        assert float(gate.read_bytes["weight"].subs(at)) == pytest.approx(
            (1 - 0.8 ** b) * weights * 2)
        assert float(gate.write_bytes["act"].subs(at)) == pytest.approx(0.2 * b * 11008 * 2)
        assert float(gate.read_bytes["act"].subs(at)) == pytest.approx(b * 4096 * 2)  # input


def test_head_sparsity_reads_the_kept_heads_of_the_cache():
    """heads=0.5 in decode: QK^T reads half of each sequence's cached keys; K and V projections
    stay dense (the cache keeps every head for later tokens)."""
    m = costdsl.load(LLAMA, passes=["contextual_sparsity(heads=0.5)"])
    base = costdsl.load(LLAMA)
    at = {**AT16, S.batch: 8}
    qk, qk0 = _node(m, "layers.attn.qk"), _node(base, "layers.attn.qk")
    assert float(qk.read_bytes["kv"].subs(at)) == pytest.approx(
        0.5 * float(qk0.read_bytes["kv"].subs(at)))
    assert float(qk.flops.subs(at)) == pytest.approx(0.5 * float(qk0.flops.subs(at)))
    assert _node(m, "layers.k").flops == _node(base, "layers.k").flops


def test_predictors_are_real_weights():
    """rank 1024: per layer an MLP predictor (4096 x 1024 + 1024 x 11008) and a head predictor
    (4096 x 1024 + 1024 x 32), 32 layers."""
    m = costdsl.load(LLAMA, passes=["contextual_sparsity(mlp=0.8, heads=0.5, "
                                    "predictor_rank=1024)"])
    added = 32 * (4096 * 1024 + 1024 * 11008 + 4096 * 1024 + 1024 * 32)
    assert m.params() == costdsl.load(LLAMA).params() + added


def test_sparsity_saves_at_batch_one_and_fades_with_batch():
    base = costdsl.load(LLAMA)
    m = costdsl.load(LLAMA, passes=["contextual_sparsity(mlp=0.8)"])
    ratio = lambda b: (m.analyze("nvidia-a6000", b, 512, stages=("decode",)).stages["decode"]
                       .total.time_s / base.analyze("nvidia-a6000", b, 512, stages=("decode",))
                       .stages["decode"].total.time_s)
    assert ratio(1) < 0.6 and ratio(64) > 0.95


@pytest.mark.parametrize("text, message", [
    ("contextual_sparsity(mlp=1)", "a token must keep some"),
    ("contextual_sparsity(mlp=-0.5)", "a fraction must be in [0, 1]"),
    ("contextual_sparsity(heads=0.5, predictor_rank=0)", "positive integer"),
])
def test_bad_arguments(text, message):
    with pytest.raises(costdsl.CostDSLError) as err:
        costdsl.load(LLAMA, passes=[text]).graph("decode")
    assert message in str(err.value)


# --- when it pays: `crossover --solve sparsity` ------------------------------------------------

DEJA_VU = "contextual_sparsity(mlp=0.8, predictor_rank=1024)"


def _decode_time(passes, batch, seq=1024):
    m = costdsl.load(LLAMA, passes=passes)
    return m.analyze("nvidia-a6000", batch, seq, stages=("decode",)).stages["decode"].total.time_s


def _answers(passes=(DEJA_VU,), batch=1, **kw):
    m = costdsl.load(LLAMA, passes=list(passes))
    return {(a.group, a.question): a for a in m.sparsity_answers("nvidia-a6000", batch, 1024,
                                                                 **kw)}


def test_the_sparsity_where_the_predictor_eats_the_saving():
    """Predictor 4096 x 1024 + 1024 x 11008 against the MLP's 3 x 4096 x 11008 weights: P / W =
    15,466,496 / 135,266,304 = 59/516; at batch b the balance is (59/516)^(1/b). The exact value
    (the whole time model, activations included) substitutes back to equal times."""
    for batch in (1, 4):
        a = _answers(batch=batch)[("mlp", "break_even_sparsity")]
        assert a.closed_value == pytest.approx((59 / 516) ** (1 / batch), rel=1e-12)
        assert a.value == pytest.approx(a.closed_value, rel=0.01)  # weights dominate at 1024
        sparse = _decode_time([f"contextual_sparsity(mlp={a.value!r}, predictor_rank=1024)"],
                              batch)
        assert sparse == pytest.approx(_decode_time([], batch), rel=1e-9)


def test_the_batch_above_which_sparsity_stops_paying():
    """At mlp=0.8: ln(59/516) / ln(0.8) = 9.72 by the weights; the exact root lies between the
    batches where the sparse model is faster and slower than the dense one."""
    import math
    a = _answers()[("mlp", "stop_paying_batch")]
    assert a.closed_value == pytest.approx(math.log(59 / 516) / math.log(0.8), rel=1e-12)
    below, above = math.floor(a.value), math.ceil(a.value)
    assert _decode_time([DEJA_VU], below) < _decode_time([], below)
    assert _decode_time([DEJA_VU], above) > _decode_time([], above)


def test_the_batch_where_the_union_is_dense():
    """1 - 0.8^b = 0.95 at b = ln 0.05 / ln 0.8 = 13.43; at 0.99, ln 0.01 / ln 0.8 = 20.64."""
    import math
    assert _answers()[("mlp", "dense_batch")].value == pytest.approx(
        math.log(0.05) / math.log(0.8), rel=1e-12)
    assert _answers(dense_fraction=0.99)[("mlp", "dense_batch")].value == pytest.approx(
        math.log(0.01) / math.log(0.8), rel=1e-12)


def test_heads_sparsity_keeps_paying_through_the_kv_cache(capsys):
    """Skipped heads also skip their cache reads (1024 positions each), a saving the weights-
    only balance leaves out: the exact break-even is below it, and no batch stops it paying."""
    from costdsl.cli import main
    a = _answers(["contextual_sparsity(heads=0.5, predictor_rank=1024)"])
    assert a[("heads", "break_even_sparsity")].value < a[("heads",
                                                          "break_even_sparsity")].closed_value
    assert a[("heads", "stop_paying_batch")].value is None
    assert ("mlp", "break_even_sparsity") not in a  # mlp=0: that group is not sparsified
    assert main(["crossover", str(LLAMA), "--hw", "nvidia-a6000", "--solve", "sparsity",
                 "--pass", "contextual_sparsity(heads=0.5, predictor_rank=1024)"]) == 0
    assert "KV-cache reads" in capsys.readouterr().out


def test_solving_sparsity_needs_the_pass(capsys):
    from costdsl.cli import main
    assert main(["crossover", str(LLAMA), "--hw", "nvidia-a6000", "--solve", "sparsity"]) == 2
    assert "no contextual_sparsity pass" in capsys.readouterr().err
    assert main(["crossover", str(LLAMA), "--hw", "nvidia-a6000", "--solve", "sparsity",
                 "--pass", DEJA_VU, "--dense", "1.5"]) == 2
    assert "dense fraction" in capsys.readouterr().err
