"""Speculative decoding (Leviathan et al. 2023), in closed form in the acceptance rate.

Expected values are computed here from the per-op figures of `analyze` (the draft's decode step,
the target's verification of k + 1 tokens, the target's plain decode step) and the formula
E = (1 - a^(k+1)) / (1 - a), tokens per target step.
"""
import json

import pytest
import sympy

import costdsl
from costdsl.analysis.speculative import ACCEPT
from costdsl.cli import main
from costdsl.graph.schema import nodes
from costdsl import symbols as S

from conftest import MODELS

TARGET = costdsl.load(MODELS / "llama-2-7b.arch")
DRAFT = costdsl.load(MODELS / "tinyllama-1.1b.arch")
SPEC = 'speculative(draft="tinyllama-1.1b", k=4, accept=0.8)'


def _stage_time(model, stage, **kw):
    a = model.analyze("nvidia-a6000", batch=1, seq=1024, stages=(stage,), **kw)
    return a.stages[stage].total.time_s


def test_llama2_with_tinyllama_by_hand():
    """A6000, batch 1, 1,024 cached: E = (1 - 0.8^5) / 0.2 = 3.3616; time per token
    (4 T_draft + T_verify(5 tokens)) / E; speedup T_decode / that."""
    s = TARGET.speculate("nvidia-a6000", SPEC, batch=1, seq=1024)
    e = (1 - 0.8 ** 5) / (1 - 0.8)
    t_draft = _stage_time(DRAFT, "decode")
    t_verify = _stage_time(TARGET, "verify", tokens=5)
    t_decode = _stage_time(TARGET, "decode")
    assert s.tokens_per_step == pytest.approx(e, rel=1e-12)
    assert (s.draft_step_s, s.verify_s, s.decode_s) == pytest.approx(
        (t_draft, t_verify, t_decode), rel=1e-9)
    assert s.time_per_token_s == pytest.approx((4 * t_draft + t_verify) / e, rel=1e-9)
    assert s.speedup == pytest.approx(t_decode * e / (4 * t_draft + t_verify), rel=1e-9)
    assert 1.9 < s.speedup < 2.3  # memory-bound at batch 1: verifying 5 tokens costs one step


def test_acceptance_limits():
    """accept -> 1: E -> k + 1; accept = 0: E = 1 and speculation is a slowdown."""
    s = TARGET.speculate("nvidia-a6000", SPEC, batch=1, seq=1024)
    assert float(sympy.expand(s.speedup_expr / s.speedup_expr.subs(ACCEPT, 0)).subs(ACCEPT, 1)) \
        == pytest.approx(5, rel=1e-12)
    one = TARGET.speculate("nvidia-a6000", SPEC.replace("0.8", "1"), batch=1, seq=1024)
    zero = TARGET.speculate("nvidia-a6000", SPEC.replace("0.8", "0"), batch=1, seq=1024)
    assert one.tokens_per_step == 5 and zero.tokens_per_step == 1
    assert zero.speedup < 1


def test_break_even_acceptance_substitutes_back_to_one():
    for k in (1, 2, 4, 7):
        s = TARGET.speculate("nvidia-a6000", SPEC.replace("k=4", f"k={k}"), batch=1, seq=1024)
        assert s.break_even is not None
        assert float(s.speedup_expr.subs(ACCEPT, s.break_even)) == pytest.approx(1, abs=1e-9)
        assert s.break_even_closed == (k <= 2)  # radicals up to degree 2, nroots above


def test_batch_where_speculation_stops_paying():
    """Mistral-7B (GQA) at 128 cached on an H100: the verification's linear layers turn
    compute-bound first; at the root the two sides are equal."""
    m = costdsl.load(MODELS / "mistral-7b.arch")
    limit = m.speculation_batch_limit("nvidia-h100-sxm", SPEC, seq=128)
    assert limit is not None and 1 < limit < 10_000
    below = m.speculate("nvidia-h100-sxm", SPEC, batch=int(limit), seq=128)
    above = m.speculate("nvidia-h100-sxm", SPEC, batch=int(limit) + 2, seq=128)
    assert below.speedup > 1 > above.speedup


def test_best_draft_length_is_the_minimum_over_k():
    k, t = TARGET.best_draft_length("nvidia-a6000", SPEC, batch=1, seq=1024)
    times = {j: TARGET.speculate("nvidia-a6000", SPEC.replace("k=4", f"k={j}"), batch=1,
                                 seq=1024).time_per_token_s for j in range(1, 17)}
    assert k == min(times, key=times.get) and t == pytest.approx(times[k], rel=1e-12)


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.arch")), ids=lambda p: p.stem)
def test_verify_of_one_token_is_decode(path):
    model = costdsl.load(path)
    verify, decode = model.graph("verify"), model.graph("decode")
    ops = {n.name: n for n in nodes(decode)}
    for n in nodes(verify):
        d = ops[n.name]
        one = {S.tokens: 1}
        assert sympy.simplify(sympy.sympify(n.flops).xreplace(one) - d.flops) == 0, n.name
        assert sympy.simplify(sympy.sympify(n.bytes).xreplace(one) - d.bytes) == 0, n.name


def test_verification_computes_logits_for_every_new_token():
    """The LM head of a step runs on the last position only; of a verification, on all k + 1:
    2 x b x (k+1) x 4096 x 32000 operations."""
    at = {S.batch: 2, S.seq: 100, S.tokens: 5}
    head = lambda stage: next(n for n in nodes(TARGET.graph(stage)) if n.name == "lm_head")
    assert head("verify").flops.subs(at) == 2 * 2 * 5 * 4096 * 32000
    assert head("step").flops.subs(at) == 2 * 2 * 1 * 4096 * 32000


def test_latency_json_gains_decoding(capsys):
    assert main(["latency", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--seq",
                 "1024", "--gen", "65", "--decoding", SPEC, "--format", "json"]) == 0
    d = json.loads(capsys.readouterr().out)["decoding"]
    assert d["strategy"] == "speculative" and d["params"]["k"] == 4
    assert d["seq"] == 1024 + 32  # the mean cache length of the request
    assert d["speedup"] == pytest.approx(d["plain_decode_step_s"] / d["time_per_token_s"])


def test_crossover_json_carries_expression_latex_value(capsys):
    assert main(["crossover", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000",
                 "--seq", "1024", "--decoding", SPEC.replace("k=4", "k=2"), "--solve",
                 "accept", "--format", "json"]) == 0
    c = json.loads(capsys.readouterr().out)["crossovers"][0]
    assert c["closed_form"] and c["latex"] and 0 < c["value"] < 1
    assert float(sympy.sympify(c["expression"])) == pytest.approx(c["value"])


@pytest.mark.parametrize("decoding, message", [
    ('speculative(draft="llama-68m", k=4, accept=0.8)', None),  # same vocabulary: fine
    ('speculative(draft="llama-3-8b", k=4, accept=0.8)', "needs a shared tokenizer"),
    ('speculative(draft="tinyllama-1.1b", k=0, accept=0.8)', "k= must be an integer from 1"),
    ('speculative(draft="tinyllama-1.1b", k=1.5, accept=0.8)', "k= must be an integer"),
    ('speculative(draft="tinyllama-1.1b", k=4, accept=1.2)', "probability in [0, 1]"),
    ('speculative(draft="tinyllama-1.1b", k=4, accept=-0.1)', "probability in [0, 1]"),
    ('speculative(draft="tinyllama-1.1b", k=4)', "needs accept="),
    ('speculative(draft=4, k=4, accept=0.5)', "quoted model name"),
    ('medusa(heads=4)', "needs accept="),
    ('medusa(heads=0, accept=0.5)', "heads= must be an integer from 1"),
    ('medusa(heads=2, tree=[4, 2, 1], accept=0.5)', "3 levels but there are 2 heads"),
    ('medusa(heads=4, accept=0.5, lm_head="tied")', "lm_head= takes"),
    ('medusa(heads=4, accept=0.5, lm_head=1)', "lm_head= takes"),
    ('medusa(heads=4, accept=1.5)', "probability in [0, 1]"),
    ('medusa(heads=4, draft="llama-68m", accept=0.5)', "takes no argument 'draft'"),
    ('jacobi(window=4)', "unknown decoding strategy"),
    ('speculative(draft="nope", k=4, accept=0.5)', "no such file or shipped model"),
    ('speculative(draft="tinyllama-1.1b", tree=[4, 0], accept=0.5)', "positive integers"),
    ('speculative(draft="tinyllama-1.1b", tree=4, accept=0.5)', "takes a list"),
    ('speculative(draft="tinyllama-1.1b", tree=[4, 2], k=3, accept=0.5)', "the tree has 2 levels"),
    ('speculative(draft="tinyllama-1.1b", tree=[64, 64, 64], accept=0.5)', "more than 4096"),
    ('speculative(draft="tinyllama-1.1b", k=[4], accept=0.5)', "takes a number"),
    ("lookahead(window=5, ngram=1, guesses=5, accept_per_step=1)", "from 2 to 4096"),
    ("lookahead(window=5, ngram=4, guesses=5, accept_per_step=5)", "from 1 (none"),
    ("lookahead(window=5, ngram=4, accept_per_step=2)", "needs guesses="),
    ("lookahead(window=500, ngram=40, guesses=5, accept_per_step=2)", "more than 4096"),
])
def test_bad_decoding_input(decoding, message, capsys):
    code = main(["latency", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--gen",
                 "8", "--decoding", decoding])
    err = capsys.readouterr().err
    if message is None:
        assert code == 0, err
    else:
        assert code == 2 and message in err and "Traceback" not in err, err


def test_a_decoding_section_in_a_model_file(write_arch, capsys):
    """The issue's example: the same numbers as the flag; a draft named by file resolves beside
    the model file or among the shipped models; a model extending it inherits the section."""
    path = write_arch('import "llama-2-7b.arch"\n'
                      'model "Llama-2-7b-spec" extends "Llama-2-7b" {\n'
                      '  decoding { speculative(draft="tinyllama-1.1b.arch", k=4, accept=0.8) }\n'
                      '}\n'
                      'model "child" extends "Llama-2-7b-spec" { }\n', "spec.arch")
    flag = TARGET.speculate("nvidia-a6000", SPEC, batch=1, seq=1024)
    for name in ("Llama-2-7b-spec", "child"):
        m = costdsl.load(path, model=name)
        s = m.speculate("nvidia-a6000", batch=1, seq=1024)
        assert s.speedup == pytest.approx(flag.speedup, rel=1e-12)
    # the flag replaces the file's strategy
    assert main(["crossover", str(path), "--hw", "nvidia-a6000", "--seq", "1024", "--solve",
                 "accept", "--decoding", SPEC.replace("0.8", "0.6"), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["decoding"]["params"]["accept"] == 0.6


def test_a_bad_decoding_section_is_reported_at_its_line(write_arch, capsys):
    path = write_arch('import "llama-2-7b.arch"\n'
                      'model "s" extends "Llama-2-7b" {\n'
                      '  decoding { speculative(draft="tinyllama-1.1b", k=4, accept=2) }\n}\n')
    assert main(["latency", str(path), "--hw", "nvidia-a6000", "--gen", "4"]) == 2
    err = capsys.readouterr().err
    assert "m.arch:3:" in err and "probability in [0, 1]" in err


def test_serve_curve_reports_the_strategy_per_batch(capsys):
    argv = ["serve-curve", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--seq",
            "1024", "--gen", "65", "--batch", "1,8", "--decoding", SPEC, "--format", "json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["decoding"] == {"strategy": "speculative", "draft": "tinyllama-1.1b", "k": 4,
                               "accept": 0.8}
    first = out["points"][0]["decoding"]
    direct = TARGET.speculate("nvidia-a6000", SPEC, batch=1, seq=1024 + 32)
    assert first["tpot_s"] == pytest.approx(direct.time_per_token_s, rel=1e-12)
    assert first["speedup"] == pytest.approx(direct.speedup, rel=1e-12)


def test_a_token_tree_by_hand():
    """tree=[4, 2, 1] (SpecInfer): level l is reached when one of its w_l candidates is accepted,
    so E = 1 + (1 - 0.4^4) (1 + (1 - 0.4^2) (1 + 0.6)) at accept 0.6; the target verifies
    1 + 4 + 8 + 8 = 21 tokens; the draft runs three passes, over 1, 4 and 8 tokens."""
    tree = 'speculative(draft="tinyllama-1.1b", tree=[4, 2, 1], accept=0.6)'
    s = TARGET.speculate("nvidia-a6000", tree, batch=1, seq=1024)
    e = 1 + (1 - 0.4 ** 4) * (1 + (1 - 0.4 ** 2) * (1 + 0.6))
    assert s.tokens_per_step == pytest.approx(e, rel=1e-12) and s.verified == 21
    drafting = sum(DRAFT.analyze("nvidia-a6000", batch=1, seq=1024, stages=("verify",),
                                 tokens=f).stages["verify"].total.time_s for f in (1, 4, 8))
    assert s.verify_s == pytest.approx(_stage_time(TARGET, "verify", tokens=21), rel=1e-9)
    assert s.time_per_token_s == pytest.approx((drafting + s.verify_s) / e, rel=1e-9)


def test_a_chain_tree_is_plain_speculation():
    chain = TARGET.speculate("nvidia-a6000", 'speculative(draft="tinyllama-1.1b", '
                             'tree=[1, 1, 1, 1], accept=0.8)', batch=2, seq=512)
    plain = TARGET.speculate("nvidia-a6000", SPEC, batch=2, seq=512)
    assert chain.speedup == pytest.approx(plain.speedup, rel=1e-12)
    assert chain.break_even == pytest.approx(plain.break_even, rel=1e-9)


def test_solving_k_with_a_tree_is_refused(capsys):
    assert main(["crossover", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000",
                 "--solve", "k", "--decoding",
                 'speculative(draft="tinyllama-1.1b", tree=[2, 2], accept=0.5)']) == 2
    assert "the tree or the lookahead sizes fix it" in capsys.readouterr().err


LOOKAHEAD = "lookahead(window=5, ngram=4, guesses=5, accept_per_step=2.5)"


def test_lookahead_by_hand():
    """Fu et al. 2024: W (N - 1) + G (N - 1) tokens ride with the current one: 1 + 10 x 3 = 31
    through the target per step; 2.5 accepted: time per token T_verify(31) / 2.5; it breaks even
    at T_verify / T_decode tokens per step."""
    s = TARGET.speculate("nvidia-a6000", LOOKAHEAD, batch=1, seq=1024)
    t_verify = _stage_time(TARGET, "verify", tokens=31)
    t_decode = _stage_time(TARGET, "decode")
    assert s.verified == 31 and s.strategy == "lookahead"
    assert s.time_per_token_s == pytest.approx(t_verify / 2.5, rel=1e-9)
    assert s.break_even == pytest.approx(t_verify / t_decode, rel=1e-9)
    assert float(s.speedup_expr.subs(ACCEPT, s.break_even)) == pytest.approx(1, abs=1e-9)


def test_lookahead_stops_paying_where_its_step_outgrows_the_yield():
    m = costdsl.load(MODELS / "mistral-7b.arch")
    limit = m.speculation_batch_limit("nvidia-h100-sxm", LOOKAHEAD, seq=128)
    below = m.speculate("nvidia-h100-sxm", LOOKAHEAD, batch=int(limit), seq=128)
    above = m.speculate("nvidia-h100-sxm", LOOKAHEAD, batch=int(limit) + 2, seq=128)
    assert below.speedup > 1 > above.speedup


@pytest.mark.parametrize("decoding", [SPEC, LOOKAHEAD,
                                      'speculative(draft="llama-68m", tree=[2, 2], accept=0.7)'])
def test_sweep_columns_equal_the_single_configuration_path(decoding, tmp_path):
    out = tmp_path / "s.json"
    assert main(["sweep", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--stage",
                 "decode", "--batch", "1,8,64", "--seq", "256,2048", "--decoding", decoding,
                 "--out", str(out)]) == 0
    for row in json.loads(out.read_text())["rows"]:
        s = TARGET.speculate("nvidia-a6000", decoding, batch=row["batch"], seq=row["seq"])
        assert row["decoding_time_per_token_s"] == pytest.approx(s.time_per_token_s, rel=1e-9)
        assert row["decoding_speedup"] == pytest.approx(s.speedup, rel=1e-9)


def test_compare_a_strategy_against_none(capsys):
    argv = ["compare", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--seq",
            "1024", "--decoding", SPEC, "--format", "json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)["decoding"]
    assert d["speedup"] == pytest.approx(TARGET.speculate("nvidia-a6000", SPEC, 1, 1024).speedup)
    assert main(argv + ["--pass", "quantize(weights=4)", "--stage", "decode"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert "stages" in out and "decoding" in out


def test_lookahead_through_serve_curve_and_the_plot(tmp_path, capsys):
    argv = ["serve-curve", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--seq",
            "128", "--gen", "8", "--batch", "1,4", "--decoding", LOOKAHEAD]
    assert main(argv) == 0
    assert "lookahead decoding: window=5" in capsys.readouterr().out
    assert main(["plot", "speculative", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000",
                 "--decoding", LOOKAHEAD, "--out", str(tmp_path / "x.png")]) == 2
    assert "lookahead has no draft length" in capsys.readouterr().err
