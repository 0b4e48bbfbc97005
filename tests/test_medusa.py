"""Medusa (Cai et al., ICML 2024): decoding heads on the model's last hidden state, their
candidates verified in one pass of the model itself.

Expected values are derived here from Llama-2-7b's config.json (hidden 4096, vocab 32000, 32
layers, 6,738,415,616 parameters) and the heads' definition: head k is a residual block
SiLU(W1 h + b1) + h with W1 of 4096 x 4096, then a 4096 x 32000 vocabulary projection.
"""
import json

import pytest

import costdsl
from costdsl.cli import main
from costdsl.graph.schema import nodes

from conftest import MODELS

TARGET = costdsl.load(MODELS / "llama-2-7b.arch")
HIDDEN, VOCAB, LLAMA2_7B = 4096, 32000, 6_738_415_616
MEDUSA = "medusa(heads=4, accept=0.7)"


def _ops(model, stage="verify", **values):
    from costdsl import symbols as S
    bind = {getattr(S, k): v for k, v in values.items()}
    return {n.name: n for n in nodes(model.graph(stage)) if n.name.startswith("medusa.")}, bind


def test_the_heads_by_hand_in_a_verification_of_five_tokens():
    """batch 2, 5 tokens verified: every head runs on the 10 rows the LM head runs on. Shared
    LM head: one matmul over 4 x 10 rows reading the LM head's table once."""
    m = TARGET.with_passes(["medusa_heads(heads=4)"])
    ops, bind = _ops(m, batch=2, tokens=5, seq=1024)
    rows = 2 * 5
    block = ops["medusa.block"]
    assert block.repeat == 4
    assert block.flops.subs(bind) == 2 * rows * HIDDEN * HIDDEN + rows * HIDDEN  # + bias
    assert block.params == HIDDEN * HIDDEN + HIDDEN
    assert ops["medusa.act"].flops.subs(bind) == 4 * rows * HIDDEN  # SiLU: 4 per element
    assert ops["medusa.residual"].flops.subs(bind) == rows * HIDDEN
    head = ops["medusa.lm_head"]
    assert head.repeat == 1 and head.params == 0
    assert head.flops.subs(bind) == 2 * 4 * rows * HIDDEN * VOCAB
    weights = [a for a in head.reads if a.cls == "weight"]
    assert [(a.tensor, a.elements) for a in weights] == [("lm_head.weight", HIDDEN * VOCAB)]
    assert [a.elements.subs(bind) for a in head.writes] == [4 * rows * VOCAB]


def test_own_vocabulary_projections_are_parameters():
    """lm_head="own" (the Medusa-1 checkpoints): 4 x (4096^2 + 4096) block parameters and
    4 x 4096 x 32000 projection parameters on top of Llama-2-7b's 6,738,415,616."""
    own = TARGET.with_passes(['medusa_heads(heads=4, lm_head="own")'])
    shared = TARGET.with_passes(["medusa_heads(heads=4, layers=2)"])
    assert own.params() == LLAMA2_7B + 4 * (HIDDEN ** 2 + HIDDEN) + 4 * HIDDEN * VOCAB
    assert shared.params() == LLAMA2_7B + 4 * 2 * (HIDDEN ** 2 + HIDDEN)
    ops, _ = _ops(own)
    assert ops["medusa.lm_head"].repeat == 4


def test_the_heads_run_on_one_row_per_sequence_in_decode():
    ops, bind = _ops(TARGET.with_passes(["medusa_heads(heads=3)"]), "decode", batch=8)
    assert ops["medusa.block"].flops.subs(bind) == 2 * 8 * HIDDEN * HIDDEN + 8 * HIDDEN


def test_medusa_speedup_by_hand():
    """A6000, batch 1, 1,024 cached, 4 heads at acceptance 0.7: E = 1 + 0.7 + ... + 0.7^4 =
    2.7731; no draft; one step verifies 5 tokens through the model with its heads; speedup =
    E T_decode(plain) / T_verify(with heads)."""
    s = TARGET.speculate("nvidia-a6000", MEDUSA, batch=1, seq=1024)
    with_heads = TARGET.with_passes(["medusa_heads(heads=4)"])
    t_verify = with_heads.analyze("nvidia-a6000", 1, 1024, stages=("verify",),
                                  tokens=5).stages["verify"].total.time_s
    t_decode = TARGET.analyze("nvidia-a6000", 1, 1024,
                              stages=("decode",)).stages["decode"].total.time_s
    e = sum(0.7 ** i for i in range(5))
    assert s.tokens_per_step == pytest.approx(e, rel=1e-12) and s.draft_step_s == 0
    assert (s.verify_s, s.decode_s) == pytest.approx((t_verify, t_decode), rel=1e-9)
    assert s.speedup == pytest.approx(e * t_decode / t_verify, rel=1e-9)
    # the heads cost something: the verification outweighs the same step without them
    bare = TARGET.analyze("nvidia-a6000", 1, 1024, stages=("verify",),
                          tokens=5).stages["verify"].total.time_s
    assert t_verify > bare


def test_a_tree_over_the_heads_and_the_break_even():
    """tree=[4, 2] over 4 heads: 1 + 4 + 8 = 13 tokens verified, E = 1 + (1 - 0.3^4) +
    (1 - 0.3^4)(1 - 0.3^2); the break-even acceptance substitutes back to speedup 1."""
    import sympy
    from costdsl.analysis.speculative import ACCEPT
    s = TARGET.speculate("nvidia-a6000", "medusa(heads=4, accept=0.7, tree=[4, 2])", 1, 1024)
    first, second = 1 - 0.3 ** 4, 1 - 0.3 ** 2
    assert s.verified == 13 and s.k == 2
    assert s.tokens_per_step == pytest.approx(1 + first + first * second, rel=1e-12)
    assert float(s.speedup_expr.subs(ACCEPT, s.break_even)) == pytest.approx(1, abs=1e-9)
    assert isinstance(s.speedup_expr, sympy.Expr)


def test_best_number_of_heads_is_the_minimum():
    k, t = TARGET.best_draft_length("nvidia-a6000", "medusa(heads=5, accept=0.5)", 1, 1024)
    times = {h: TARGET.speculate("nvidia-a6000", f"medusa(heads={h}, accept=0.5)", 1,
                                 1024).time_per_token_s for h in range(1, 6)}
    assert k == min(times, key=times.get) and t == pytest.approx(times[k], rel=1e-12)


def test_the_models_passes_apply_to_the_heads():
    """Heads are added first, so the file's (and --pass) quantization covers them."""
    m = TARGET.with_passes(["quantize(weights=4)"])._with_medusa_heads(4, 1, "shared")
    assert {n.bits["weight"] for n in nodes(m.graph("verify"))
            if n.name.startswith("medusa.") and n.params} == {4}


def test_crossover_and_latency_json_name_the_heads(capsys):
    assert main(["crossover", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--seq",
                 "1024", "--solve", "accept", "--decoding", MEDUSA, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decoding"]["strategy"] == "medusa"
    assert out["decoding"]["params"] == {"heads": 4, "layers": 1, "lm_head": "shared", "k": 4,
                                         "accept": 0.7}
    assert 0 < out["crossovers"][0]["value"] < 0.7


def test_plot_speculative_with_medusa(tmp_path, capsys):
    out = tmp_path / "medusa.svg"
    assert main(["plot", "speculative", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000",
                 "--decoding", "medusa(heads=3, accept=0.6)", "--range", "1,16", "--out",
                 str(out)]) == 0, capsys.readouterr().err
    text = out.read_text()
    assert "Medusa heads" in text and "k = 3" in text


def test_a_model_without_an_lm_head_is_refused(write_arch, capsys):
    path = write_arch('model "enc" {\n  params { hidden = 64 }\n'
                      '  x = embedding(tokens, vocab=100, dim=hidden)\n  y = rmsnorm(x)\n}\n')
    assert main(["analyze", str(path), "--hw", "nvidia-a6000", "--pass",
                 "medusa_heads(heads=2)"]) == 2
    assert "needs the model's LM head" in capsys.readouterr().err
