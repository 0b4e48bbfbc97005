"""Symbolic and numeric paths must agree: sympy substitution vs lambdify + numpy."""
import math

import numpy as np
from hypothesis import given, settings, strategies as st

import costdsl
from costdsl import symbols as S
from costdsl.analysis.records import Settings, stage_result
from costdsl.analysis.evaluate import evaluate
from costdsl.hardware import load_hardware

from conftest import MODELS

MODEL = costdsl.load(MODELS / "llama-3-8b.arch")
HW = load_hardware("nvidia-h100-sxm")
ROOFLINES = {s: MODEL.roofline(HW, s) for s in ("prefill", "decode")}


@settings(max_examples=25, deadline=None)
@given(batch=st.integers(1, 4096), seq=st.integers(1, 131072),
       stage=st.sampled_from(["prefill", "decode"]))
def test_stage_time_expression_equals_numeric_evaluation(batch, seq, stage):
    symbolic = ROOFLINES[stage]
    values = {S.batch: batch, S.seq: seq, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    exact = float(symbolic.time.subs(values))
    numeric = stage_result(symbolic, Settings(batch, seq)).total.time_s
    assert math.isclose(exact, numeric, rel_tol=1e-9)


@settings(max_examples=10, deadline=None)
@given(batches=st.lists(st.integers(1, 2048), min_size=1, max_size=8))
def test_vectorised_evaluation_equals_one_at_a_time(batches):
    symbolic = ROOFLINES["decode"]
    grid = evaluate(symbolic, {S.batch: np.array(batches), S.seq: 1024, S.w_bits: 16,
                               S.a_bits: 16, S.kv_bits: 16})
    totals = grid.stage_time()   # the ops' occurrences and the serving engine's time
    for i, b in enumerate(batches):
        one = stage_result(symbolic, Settings(b, 1024)).total.time_s
        assert math.isclose(totals[i], one, rel_tol=1e-12)


def test_stage_time_sweep_equals_per_op_evaluation():
    from costdsl.analysis.evaluate import stage_time
    symbolic = ROOFLINES["decode"]
    values = {S.batch: np.array([[1], [7], [300]]), S.seq: np.array([[128, 4096, 32768]]),
              S.w_bits: 16, S.a_bits: 16, S.kv_bits: 8}
    per_op = evaluate(symbolic, values)
    assert np.allclose(stage_time(symbolic, values), per_op.stage_time(), rtol=1e-12)
    # the ops' own times sum to the stage's less the serving engine's (step + per sequence)
    step, per_sequence = symbolic.server
    assert step > 0 and np.allclose(per_op.total(per_op.time) + step
                                    + per_sequence * values[S.batch], per_op.stage_time(),
                                    rtol=1e-12)
