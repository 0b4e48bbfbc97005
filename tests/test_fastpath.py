"""The per-call path (rows compiled once with the math module, then one call per
configuration) equals the symbolic roofline op by op: each op's time substituted by sympy."""
import pytest
import sympy
from hypothesis import given, settings, strategies as st

import costdsl
from costdsl import symbols as S
from costdsl.api import _hardware

from conftest import MODELS

CASES = [("llama-2-7b.arch", ["quantize(weights=4, group=128)", "fuse_all()"]),
         ("mistral-7b.arch", []),            # a sliding window: min(context, window)
         ("mixtral-8x7b.arch", []),          # routed experts: E (1 - (1 - k/E)^n)
         ("deepseek-v2-lite.arch", []),      # latent attention
         ("llama-2-70b.arch", ["tensor_parallel(n=8)", "pipeline_parallel(n=2, microbatches=2)"])]
HW = {"llama-2-70b.arch": "nvidia-dgx-h100-2node"}   # 16 devices: tp spans one node


@pytest.fixture(scope="module")
def models():
    return {name: costdsl.load(MODELS / name, passes=passes) for name, passes in CASES}


@settings(max_examples=25, deadline=None)
@given(st.sampled_from([c[0] for c in CASES]), st.integers(1, 512), st.integers(1, 32768))
def test_per_call_numbers_equal_the_symbolic_roofline(models, name, batch, seq):
    model = models[name]
    hw = _hardware(HW.get(name, "nvidia-a100-80gb"))
    model.analyze(hw, batch=1, seq=7)            # the first call substitutes; later ones are compiled
    a = model.analyze(hw, batch=batch, seq=seq)
    values = {S.batch: batch, S.seq: seq, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    for stage in ("prefill", "decode"):
        symbolic = model._roofline(stage, hw, a.settings)
        for op, record in zip(symbolic.ops, a.stages[stage].ops):
            expected = float(sympy.sympify(op.time).xreplace(
                {k: sympy.Float(v) for k, v in values.items()}))
            assert record.time_s == pytest.approx(expected, rel=1e-9, abs=1e-15), record.name


def test_lazy_op_records_behave_as_a_tuple():
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    a = model.analyze("nvidia-a100-80gb", batch=2, seq=64)
    ops = a.stages["decode"].ops
    as_tuple = tuple(ops)
    assert len(ops) == len(as_tuple) and ops[-1] is as_tuple[-1] and ops[1:3] == as_tuple[1:3]
    assert ops == as_tuple and ops + a.stages["prefill"].ops == as_tuple + tuple(
        a.stages["prefill"].ops)
    with pytest.raises(IndexError):
        ops[len(ops)]
    # the records add up to the stage's total, as the eager ones did
    assert sum(o.total_time_s for o in ops) == pytest.approx(a.stages["decode"].total.time_s)


@pytest.mark.parametrize("name, hw, passes, stack, bits", [
    ("llama-2-70b.arch", "nvidia-dgx-h100-2node",            # pipeline bubble, all-reduces
     ["tensor_parallel(n=8)", "pipeline_parallel(n=2, microbatches=2)"], None, 16),
    ("llama-3-70b.arch", "nvidia-dgx-h100", ["tensor_parallel(n=8)", "fuse_serving()"],
     "trtllm", 8),                                           # FP8 GEMMs' quantisation prologue
    ("mixtral-8x7b.arch", "nvidia-h100-sxm", ["offload(weights=0.5, overlap=false)"],
     None, 16),                                              # serial host transfers
    ("qwen3.5-35b-a3b.arch", "nvidia-h200", [], "sglang", 16),
])
def test_the_stage_time_in_floats_is_the_per_op_numbers_total(name, hw, passes, stack, bits):
    """A stage's time comes from one generated float function of its rows (the per-call
    path); the per-op numbers, computed when read, add up to it to rounding."""
    from costdsl.hardware import load_hardware
    h = load_hardware(hw)
    h = h.with_stack(stack) if stack else h
    model = costdsl.load(MODELS / name, passes=passes)
    for batch, seq in ((1, 100), (7, 3000), (64, 8192)):
        a = model.analyze(h, batch=batch, seq=seq, w_bits=bits, a_bits=bits)
        for stage in a.stages.values():
            numbers = stage.total._n
            assert stage.total.time_s == pytest.approx(float(numbers.stage_time()), rel=1e-12)
