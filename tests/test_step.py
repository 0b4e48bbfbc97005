"""The general step stage: `tokens` new tokens per sequence over `seq` cached ones.

Decode is the step with tokens = 1; prefill is the step with nothing cached (seq = 0) and
tokens = the prompt length. Both are checked symbolically, op by op, on every shipped model and
the shipped example (whose passes include FlashAttention and group-wise quantization), then a
step of 5 tokens over 1024 cached on Llama-2-7b against numbers derived by hand.
"""
import json

import pytest
import sympy

import costdsl
from costdsl.hardware import load_hardware
from costdsl import symbols as S
from costdsl.cli import main
from costdsl.graph.schema import nodes

from conftest import MODELS, ROOT

# The ideal roofline of the datasheet figures: the expected values below are derived from them.
H100 = load_hardware("nvidia-h100-sxm").ideal()

SHIPPED = sorted(MODELS.glob("*.arch")) + sorted((ROOT / "examples").glob("*.arch"))


def _same(a, b) -> bool:
    d = sympy.sympify(a) - sympy.sympify(b)
    return sympy.expand(d) == 0 or sympy.simplify(d) == 0


def _costs(node, accesses):
    """Bytes of each access, keyed by tensor: what the op moves, at its stored bitwidths."""
    return {a.tensor: S.to_bytes(a.elements, node.stored_bits(a.cls)) for a in accesses}


def _assert_ops_equal(step, other, rewrite, skip_reads=(), skip_ops=()):
    """Every op of `step`, rewritten, equals the same op of `other`: flops, vector flops,
    bytes of each read and write, parameters and repeat (but `skip_ops`)."""
    other_ops = {n.name: n for n in nodes(other)}
    assert [n.name for n in nodes(step)] == list(other_ops)
    for n in nodes(step):
        if n.name in skip_ops:
            continue
        o = other_ops[n.name]
        where = f"{step.graph['model']} {n.name}"
        assert _same(rewrite(n.flops), o.flops), where
        assert _same(rewrite(n.vector_flops), o.vector_flops), where
        assert n.params == o.params and n.repeat == o.repeat, where
        for mine, theirs, kind in ((n.reads, o.reads, "reads"), (n.writes, o.writes, "writes")):
            # an access of no elements once rewritten is no access (a chunked kernel's chunk
            # states, none for a one-token step)
            got = {t: e for t, e in _costs(n, mine).items()
                   if not (kind == "reads" and t in skip_reads) and rewrite(e) != 0}
            want = {t: e for t, e in _costs(o, theirs).items() if e != 0}
            assert set(got) == set(want), f"{where} {kind}: {set(got) ^ set(want)}"
            for t in got:
                assert _same(rewrite(got[t]), want[t]), f"{where} {kind} {t}"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_step_of_one_token_is_decode(path):
    model = costdsl.load(path)
    _assert_ops_equal(model.graph("step"), model.graph("decode"),
                      lambda e: sympy.sympify(e).xreplace({S.tokens: 1}))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_step_over_an_empty_cache_is_prefill(path):
    """seq -> 0 (nothing cached), then tokens -> seq (the prompt). A recurrent state (Mamba) is
    the one difference: a step over a cache reads the state, a prefill starts from zeros; the
    extra read must be exactly that state. A dense MLA is the other: a prompt runs expanded, a
    step absorbed (costs.EXPANDED_STAGES); its absorption, QK^T, xV and W_UV ops differ
    (tests/test_costs_mla_mamba.py derives both forms by hand), and only they. A prompt's
    chunk (the chunk stage: the step on the prefill path) over an empty cache is the prefill,
    every op, the MLA's too."""
    model = costdsl.load(path)
    step, prefill = model.graph("step"), model.graph("prefill")
    state_reads = {a.tensor for n in nodes(step) for a in n.reads
                   if a.cls == "kv" and a.tensor.endswith(".state")}
    expanded = {n.name for n in nodes(prefill) if n.attrs.get("expanded") == "true"
                and n.kind in ("mla_absorb", "qk_matmul", "sv_matmul", "mla_v_up")}
    rewrite = lambda e: sympy.sympify(e).xreplace({S.seq: 0}).xreplace({S.tokens: S.seq})
    _assert_ops_equal(step, prefill, rewrite, skip_reads=state_reads, skip_ops=expanded)
    _assert_ops_equal(model.graph("chunk"), prefill, rewrite, skip_reads=state_reads)
    if "mamba" in path.stem:
        assert state_reads, "a Mamba step must read its recurrent state"


# --- hand derivation: Llama-2-7b, one step of t = 5 new tokens over c = 1024 cached ---------------
# hidden 4096, 32 heads of d = 128, 32 KV heads (MHA), fp16 everywhere (2 bytes), batch b = 1.
# n = b t = 5 rows; attention Lq = t = 5, Lk = c + t = 1029 (cache plus the new block, the
# causal half of the new block not subtracted, as in prefill).
AT = {S.batch: 1, S.seq: 1024, S.tokens: 5, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
HAND = {
    # q: 2 n in out = 2*5*4096*4096; reads x (5*4096) + W (4096^2), writes 5*4096; x 2 bytes
    "layers.q": (167_772_160, (5 * 4096 + 4096**2) * 2, 5 * 4096 * 2),
    # qk: 2 b H Lq Lk d = 2*32*5*1029*128; reads Q (5*32*128) + cached K (1029*32*128);
    # writes the scores b H Lq Lk = 32*5*1029
    "layers.attn.qk": (42_147_840, (5 * 32 * 128 + 1029 * 32 * 128) * 2, 32 * 5 * 1029 * 2),
    # sv: same operations; reads P (32*5*1029) + cached V (1029*32*128); writes O (5*4096)
    "layers.attn.sv": (42_147_840, (32 * 5 * 1029 + 1029 * 32 * 128) * 2, 5 * 4096 * 2),
}


def test_step_of_five_over_1024_by_hand():
    graph = costdsl.load(MODELS / "llama-2-7b.arch").graph("step")
    ops = {n.name: n for n in nodes(graph)}
    for name, (flops, read_bytes, write_bytes) in HAND.items():
        n = ops[name]
        assert n.flops.subs(AT) == flops, name
        assert sum(n.read_bytes.values()).subs(AT) == read_bytes, name
        assert sum(n.write_bytes.values()).subs(AT) == write_bytes, name
    # the KV-cache write: k after RoPE is stored for the t = 5 new positions, b t x 4096
    kv_written = sum(a.elements for n in ops.values() for a in n.writes if a.cls == "kv")
    assert kv_written.subs(AT) == 2 * 5 * 4096  # K and V


def test_crossover_in_tokens_is_the_batch_crossover_shared_out():
    """The q projection turns compute-bound at b t = 2048 P / (2048 B - P) rows (n = P d /
    (d B - 2 P) with d = 4096, from 2 n d^2 B = P 2 (d^2 + 2 n d)); at batch 4 that is a quarter
    of the decode batch crossover, in tokens per sequence."""
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    by_batch = model.crossover("batch", H100, "decode", seq=1024)
    by_tokens = model.crossover("tokens", H100, "step", batch=4, seq=1024)
    q_batch = next(c for c in by_batch.ops if c.op == "layers.q")
    q_tokens = next(c for c in by_tokens.ops if c.op == "layers.q")
    assert q_tokens.value == pytest.approx(q_batch.value / 4, rel=1e-12)
    peak, bandwidth = 989.5e12, 3.35e12  # H100 SXM dense fp16 and HBM3, as in the hardware file
    assert q_batch.value == pytest.approx(2048 * peak / (2048 * bandwidth - peak), rel=1e-9)


def test_formulas_of_the_step_at_one_token_are_decode():
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    step, decode = model.formulas("step", tokens=1), model.formulas("decode")
    for a, b in zip(step.rows, decode.rows):
        assert a.op == b.op and all(_same(x, y) for x, y in zip(a.cells, b.cells)), a.op


def test_step_json_has_the_stage_keys_and_tokens(capsys):
    code = main(["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000",
                 "--stage", "step", "--tokens", "5", "--seq", "1024", "--format", "json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["settings"]["tokens"] == 5 and list(out["stages"]) == ["step"]
    main(["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--stage",
          "decode", "--format", "json"])
    decode = json.loads(capsys.readouterr().out)
    assert "tokens" not in decode["settings"]
    assert set(out["stages"]["step"]) == set(decode["stages"]["decode"])
    assert set(out["stages"]["step"]["ops"][0]) == set(decode["stages"]["decode"]["ops"][0])


def test_step_of_one_token_gives_decode_numbers():
    model = costdsl.load(MODELS / "mixtral-8x7b.arch")
    step = model.analyze(H100, batch=8, seq=4096, stages=("step",), tokens=1)
    decode = model.analyze(H100, batch=8, seq=4096, stages=("decode",))
    assert step.stages["step"].total.time_s == pytest.approx(
        decode.stages["decode"].total.time_s, rel=1e-12)
    assert step.memory.total_bytes == pytest.approx(decode.memory.total_bytes, rel=1e-12)


def test_sweep_over_tokens(tmp_path, capsys):
    out = tmp_path / "s.json"
    assert main(["sweep", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--stage",
                 "step", "--tokens", "1,8", "--batch", "1,2", "--seq", "1024", "--out",
                 str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["batch"], r["tokens"]) for r in rows] == [(1, 1), (1, 8), (2, 1), (2, 8)]
    for r in rows:  # tokens/s counts every new token of every sequence
        assert r["step_tokens_per_s"] == pytest.approx(r["batch"] * r["tokens"] /
                                                       r["step_time_s"])


@pytest.mark.parametrize("argv, message", [
    (["analyze", "--stage", "step"], "needs the number of new tokens"),
    (["analyze", "--stage", "decode", "--tokens", "4"], "applies to the step stage only"),
    (["analyze", "--tokens", "4"], "applies to the step stage only"),
    (["crossover", "--solve", "tokens"], "--stage step"),
    (["sweep", "--stage", "step"], "needs the number of new tokens"),
    (["formulas", "--stage", "decode", "--tokens", "2"], "applies to the step stage only"),
])
def test_tokens_and_the_step_stage_go_together(argv, message, capsys):
    hw = [] if argv[0] == "formulas" else ["--hw", "nvidia-a6000"]
    code = main([argv[0], str(MODELS / "llama-2-7b.arch"), *hw, *argv[1:]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
