"""The serving simulation: iteration cost from the compiled graph, schedulers, paged KV.

Expected values: `latency`'s closed form (prefill, then decode steps over a growing cache) for
the static scheduler; the step stage's own numbers for the iteration cost; Little's law
(mean requests in system = arrival rate x mean time in system) for the bookkeeping.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import costdsl
from costdsl.serving.iteration import IterationCost
from costdsl.serving.requests import Stream, read_requests, synthetic
from costdsl.serving.simulate import Config, KVPool, simulate, summarise
from costdsl.cli import main
from costdsl.errors import CostDSLError

from conftest import MODELS

HW = "nvidia-a100-80gb"


@pytest.fixture(scope="module")
def llama():
    return costdsl.load(MODELS / "llama-2-7b.arch")


def fixed_stream(n, prompt, output, arrival=0.0):
    return Stream(np.full(n, arrival, dtype=float), np.full(n, prompt), np.full(n, output), "test")


def test_iteration_cost_is_the_step_stage(llama):
    cost = llama.iteration_cost(HW)
    step = llama.analyze(HW, batch=3, seq=100, stages=["step"], tokens=4).stages["step"]
    # 3 sequences of 4 new tokens over 100 cached: N 3, T 12, sum t^2 48, sum t c 1200, C 300
    assert cost(3, 12, 48, 1200, 300) == pytest.approx(step.total.time_s, rel=1e-9)
    prefill = llama.analyze(HW, batch=2, seq=512, stages=["prefill"]).stages["prefill"]
    assert cost(2, 1024, 2 * 512 ** 2, 0, 0) == pytest.approx(prefill.total.time_s, rel=1e-9)
    assert cost.mean_field_ops == ()       # every Llama op is exact in the five sums


def test_an_mla_prompt_runs_expanded_and_its_decodes_absorbed():
    """DeepSeek-V2-Lite's MLA: the stacks run a prompt's chunk expanded (the cached and new
    latents up-projected: the chunk stage) and a decode absorbed (the step), as two kernels of
    one iteration. On the ideal A100 (no launch): the iteration of sequences all in their
    prompt is the chunk stage's time, the same sums on the decode path the step's. Expanded,
    attention takes 2 (Dn + Dr + Dv) = 640 operations a query-key pair and head, absorbed
    2 (C + Dr + C) = 2,176, and the up-projection 2 C H (Dn + Dv) = 4.19 M a context row: the
    chunk is the cheaper from about 170 new tokens a sequence (4.19 M / (1,536 x 16 heads))."""
    m = costdsl.load(MODELS / "deepseek-v2-lite.arch")
    hw = costdsl.hardware.load_hardware(HW).ideal()
    cost = m.iteration_cost(hw)
    for tokens, cheaper in ((512, "chunk"), (64, "step")):   # 2 sequences over 300 cached
        at = {stage: m.analyze(hw, batch=2, seq=300, tokens=tokens, stages=[stage])
              .stages[stage].total.time_s for stage in ("chunk", "step")}
        sums = (2, 2 * tokens, 2 * tokens ** 2, 2 * tokens * 300, 600)
        assert cost(*sums, prompts=sums) == pytest.approx(at["chunk"], rel=1e-9)
        assert cost(*sums) == pytest.approx(at["step"], rel=1e-9)
        assert min(at, key=at.get) == cheaper
    # one request of 1,024 tokens in chunks of 512: its first token after both chunks
    config = Config(scheduler="chunked", chunk=512, max_batch=4)
    _, summary = m.simulate(hw, fixed_stream(1, 1024, 2), config)
    first = m.analyze(hw, batch=1, seq=512, stages=["prefill"]).stages["prefill"].total.time_s
    second = m.analyze(hw, batch=1, seq=512, tokens=512, stages=["chunk"]) \
        .stages["chunk"].total.time_s
    assert summary.ttft_s["p50"] == pytest.approx(first + second, rel=1e-9)


def test_a_mixed_iterations_mla_decodes_run_decodes_kernels_eagerly():
    """On the H200 under vLLM (decode steps in CUDA graphs, 5.24 us a kernel), the decode part
    of a mixed iteration's MLA runs decode's kernel with its own launch, as every kernel of a
    mixed iteration does (it runs outside the graph); the prompt part, the chunk stage's."""
    from costdsl.analysis.records import Settings
    from costdsl.serving.iteration import _path_ops
    m = costdsl.load(MODELS / "deepseek-v2-lite.arch", passes=["fuse_serving()"])
    hw = costdsl.hardware.load_hardware("nvidia-h200")
    settings = Settings(1, 1)
    step = m._roofline("verify", hw, settings, kernels="step")
    decode = m._roofline("verify", hw, settings, kernels="decode")
    paths = _path_ops(step, decode, m._roofline("chunk", hw, settings))
    assert {name.split(".")[-1] for name in paths} == {"absorb", "attn[qk+softmax+sv]", "v_up"}
    graphed = {op.node.name: op.launch for op in decode.ops}
    for name, (decoding, prompting) in paths.items():
        family = "decode_attention_mla" if decoding.node.kind == "flash_attention" \
            else decoding.node.kind
        assert graphed[name] == pytest.approx(hw.framework.graph_launch_s)
        assert decoding.launch == pytest.approx(hw.launch_for(family))
        assert prompting.node.stage == "chunk"


def test_static_scheduler_reproduces_latency(llama):
    n, prompt, gen = 8, 512, 64
    trace, summary = llama.simulate(HW, fixed_stream(n, prompt, gen),
                                    Config(scheduler="static", max_batch=n))
    closed = llama.latency(HW, batch=n, seq=prompt, gen=gen)
    assert summary.ttft_s["p50"] == pytest.approx(closed.ttft_s, rel=0.01)
    assert summary.tpot_s["p50"] == pytest.approx(closed.tpot_s, rel=0.01)
    assert summary.e2e_s["p99"] == pytest.approx(closed.e2e_s, rel=0.01)


def test_continuous_batching_serves_more_than_static(llama):
    stream = synthetic(3, 300, "lognormal(512, 0.5)", "lognormal(128, 0.8)", seed=3)
    static = llama.simulate(HW, stream, Config(scheduler="static"))[1]
    continuous = llama.simulate(HW, stream, Config(scheduler="continuous"))[1]
    assert continuous.output_tokens_per_s >= static.output_tokens_per_s
    assert continuous.e2e_s["mean"] < static.e2e_s["mean"]


def test_chunked_prefill_bounds_decode_stalls_on_long_prompts(llama):
    # Long prompts (about 4k tokens) arriving while others decode: a whole prefill in one
    # iteration stalls every decode for its length; 512-token chunks stall them less.
    stream = synthetic(1.5, 200, "lognormal(4096, 0.3)", "fixed(128)", seed=5)
    continuous = llama.simulate(HW, stream, Config(scheduler="continuous"))[1]
    chunked = llama.simulate(HW, stream, Config(scheduler="chunked", chunk=512))[1]
    assert chunked.tpot_s["p99"] <= continuous.tpot_s["p99"]


def test_littles_law_on_a_steady_run(llama):
    stream = synthetic(1.0, 2000, "lognormal(512, 0.5)", "lognormal(128, 0.5)", seed=7)
    summary = llama.simulate(HW, stream, Config(scheduler="chunked"))[1]
    assert summary.mean_in_system == pytest.approx(
        summary.arrival_rate * summary.e2e_s["mean"], rel=0.05)


def test_same_seed_same_output(capsys):
    args = ["simulate", str(MODELS / "llama-2-7b.arch"), "--hw", HW, "--rate", "2", "--n", "50",
            "--seed", "9", "--format", "json"]
    assert main(args) == 0
    first = capsys.readouterr().out
    assert main(args) == 0
    assert capsys.readouterr().out == first
    out = json.loads(first)
    assert {"ttft_s", "tpot_s", "e2e_s", "goodput_rps", "p50", "p90", "p99"} <= set(out["summary"])
    assert len(out["requests"]) == 50


def test_slo_goodput_and_rate_sweep(llama, capsys):
    stream = synthetic(2, 200, "lognormal(512, 0.5)", "lognormal(128, 0.5)", seed=2)
    trace, s = llama.simulate(HW, stream, Config(scheduler="chunked"), slo={"ttft": 1.0,
                                                                             "tpot": 0.05})
    ttft = trace.first_token - trace.arrival
    tpot = (trace.finish - trace.first_token) / np.maximum(trace.output - 1, 1)
    met = ((ttft <= 1.0) & ((tpot <= 0.05) | (trace.output == 1))).sum()
    assert s.goodput_rps == pytest.approx(met / s.duration_s)
    assert main(["simulate", str(MODELS / "llama-2-7b.arch"), "--hw", HW, "--sweep-rate",
                 "1:8:3", "--n", "60", "--slo", "ttft=2s,tpot=100ms", "--scheduler",
                 "chunked"]) == 0
    assert "largest rate with 90% of requests meeting the SLO" in capsys.readouterr().out


# --- KV accounting, on random small streams with a toy cost -------------------------------------

TOY = IterationCost(None, lambda n, t, tt, tc, c, l, *prompts: 1e-3 + 1e-5 * t + 1e-8 * (tc + c),
                    ())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 5), st.integers(1, 60), st.integers(1, 40)),
                min_size=1, max_size=25),
       st.sampled_from(["static", "continuous", "chunked", "disaggregated"]),
       st.sampled_from(["recompute", "swap"]), st.integers(6, 40), st.integers(1, 8))
def test_kv_blocks_and_tokens_are_accounted(requests, scheduler, preempt, blocks, kv_block):
    requests.sort()
    arrival = np.array([r[0] for r in requests])
    prompt, output = np.array([r[1] for r in requests]), np.array([r[2] for r in requests])
    need = max(-(-(p + o) // kv_block) for p, o in zip(prompt, output))
    pool = KVPool(max(blocks, need), 1e6, 0, 1e9, link_Bps=1e10, link_latency_s=1e-5)
    config = Config(scheduler=scheduler, chunk=16, max_batch=6, max_tokens=64, kv_block=kv_block,
                    preempt=preempt, prefill_instances=1, decode_instances=2)
    trace = simulate(Stream(arrival, prompt, output, "hypothesis"), TOY, pool, config)
    assert trace.max_blocks_used <= pool.blocks
    assert not np.isnan(trace.finish).any()                   # every request finished
    assert (trace.generated == output).all()                   # with exactly its tokens
    assert (trace.first_token >= arrival).all() and (trace.finish >= trace.first_token).all()
    s = summarise(trace)
    assert s.requests == len(requests)


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("time,prompt\n1,2\n", "missing columns"),
    ("arrival_s,prompt_tokens,output_tokens\n0,-5,3\n", "whole number of tokens"),
    ("arrival_s,prompt_tokens,output_tokens\n0,5,x\n", "is not a number"),
    ("arrival_s,prompt_tokens,output_tokens\n-1,5,3\n", "at least 0 s"),
])
def test_bad_request_files(tmp_path, text, message):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(CostDSLError, match=message):
        read_requests(str(path))


def test_unsorted_arrivals_are_sorted_and_said(tmp_path, llama, capsys):
    path = tmp_path / "r.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n2,10,5\n0,20,5\n1,30,5\n")
    s = read_requests(str(path))
    assert list(s.arrival_s) == [0, 1, 2] and list(s.prompt) == [20, 30, 10]
    assert s.reordered == 3
    assert main(["simulate", str(MODELS / "llama-2-7b.arch"), "--hw", HW, "--requests",
                 str(path)]) == 0
    assert "out of arrival order; sorted" in capsys.readouterr().out


def test_azure_trace_columns(tmp_path):
    path = tmp_path / "azure.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                    "2023-11-16 18:15:46.6805900,374,44\n2023-11-16 18:15:50.9951690,396,109\n")
    s = read_requests(str(path))
    assert s.arrival_s[0] == 0 and s.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)
    assert list(s.prompt) == [374, 396] and list(s.output) == [44, 109]


def test_a_request_the_pool_can_never_hold(llama):
    with pytest.raises(CostDSLError, match="request 0 .* needs .* KV blocks"):
        llama.simulate(HW, fixed_stream(1, 5_000_000, 10), Config())


@pytest.mark.parametrize("rate, dist, message", [
    (0, "fixed(10)", "positive number"), (-1, "fixed(10)", "positive number"),
    (1, "poisson(3)", "unknown distribution"), (1, "lognormal(10)", "takes 2")])
def test_bad_synthetic_streams(rate, dist, message):
    with pytest.raises(CostDSLError, match=message):
        synthetic(rate, 10, dist, "fixed(5)")


def test_a_bare_length_is_a_fixed_one():
    """`--prompt 512` is what a user of `search --isl 512` types: the same stream as fixed(512);
    a bare length keeps the lengths' limits."""
    plain, fixed = (synthetic(2, 20, p, o, seed=3) for p, o in (("512", " 64 "),
                                                                   ("fixed(512)", "fixed(64)")))
    assert list(plain.prompt) == list(fixed.prompt) == [512] * 20
    assert list(plain.output) == [64] * 20
    assert list(plain.arrival_s) == list(fixed.arrival_s)
    for bad in ("0", "-5"):
        with pytest.raises(CostDSLError, match="lengths must be from 1"):
            synthetic(1, 10, bad, "fixed(5)")


def test_no_room_for_a_cache_says_what_took_the_memory():
    """Llama-3-8B's weights, 8,030,261,248 x 2 bytes = 16.1 GB, and an unfused prefill of 16,384
    tokens, whose attention scores alone are 32 heads x 16,384^2 x 2 bytes = 17.2 GB, outgrow
    the RTX 4090's 24 GiB (25.8 GB): the message gives the figures and the hint the way out
    the stacks take (FlashAttention), which leaves room for thousands of blocks."""
    m = costdsl.load(MODELS / "llama-3-8b.arch")
    with pytest.raises(CostDSLError, match=r"weights \(16.1 GB\) and the activation peak of an "
                                           r"iteration of 16,384 tokens .* its 25.8 GB") as e:
        m.kv_pool("nvidia-rtx4090", Config(max_tokens=16384))
    assert "fuse_serving()" in e.value.hint and "--max-tokens" in e.value.hint
    assert m.with_passes(["fuse_serving()"]).kv_pool(
        "nvidia-rtx4090", Config(max_tokens=16384)).blocks > 1000


def test_swap_needs_a_host_link(llama):
    with pytest.raises(CostDSLError, match="no \\[host\\] section"):
        costdsl.load(MODELS / "tinyllama-1.1b.arch").simulate(
            "google-tpu-v5e", fixed_stream(2, 10, 10), Config(preempt="swap"))


def test_bad_slo_is_refused(capsys):
    assert main(["simulate", str(MODELS / "llama-2-7b.arch"), "--hw", HW, "--rate", "1",
                 "--n", "5", "--slo", "ttft=fast"]) == 2
    assert "expected ttft=" in capsys.readouterr().err


def test_rate_and_timeline_plots(tmp_path):
    model = str(MODELS / "llama-2-7b.arch")
    rate, timeline = tmp_path / "rate.png", tmp_path / "timeline.svg"
    assert main(["plot", "rate", model, "--hw", HW, "--sweep-rate", "1,3", "--n", "40",
                 "--slo", "ttft=2s,tpot=100ms", "--out", str(rate)]) == 0
    assert main(["plot", "timeline", model, "--hw", HW, "--rate", "2", "--n", "40",
                 "--out", str(timeline)]) == 0
    assert rate.stat().st_size > 10_000 and "<svg" in timeline.read_text()[:400]


def test_simulating_a_parallel_layout_uses_one_devices_graph():
    # Llama-2-70b does not fit one A100; with TP=8 on a DGX A100 each device holds 1/8
    m = costdsl.load(MODELS / "llama-2-70b.arch", passes=["tensor_parallel(n=8)"])
    trace, s = m.simulate("nvidia-dgx-a100", fixed_stream(4, 256, 16), Config())
    assert s.requests == 4 and s.kv_pool_blocks > 1000
    with pytest.raises(CostDSLError, match="no memory for a KV cache"):
        costdsl.load(MODELS / "llama-2-70b.arch").simulate(HW, fixed_stream(1, 256, 16))


def test_speculative_decoding_in_the_server_matches_speculate(llama):
    """accept = 1: every iteration emits k + 1 = 5 tokens, so one request's time per output
    token is the draft's 4 steps plus the target's 5-token verification, over 5: what
    `speculate` gives at the request's mean cache length (within 2%)."""
    decoding = 'speculative(draft="tinyllama-1.1b", k=4, accept=1)'
    prompt, output = 512, 81                   # 1 + 16 iterations x 5 tokens
    trace, s = llama.simulate(HW, fixed_stream(1, prompt, output), Config(scheduler="static"),
                              decoding=decoding)
    expected = llama.speculate(HW, decoding, batch=1, seq=prompt + output // 2)
    assert s.tpot_s["p50"] == pytest.approx(expected.time_per_token_s, rel=0.02)
    plain = llama.simulate(HW, fixed_stream(1, prompt, output), Config(scheduler="static"))[1]
    assert s.tpot_s["p50"] < plain.tpot_s["p50"]


def test_accepted_tokens_follow_the_geometric_model():
    from costdsl.serving.simulate import Speculative, Server
    run = Server([], TOY, KVPool(10, 1.0), Config(), Speculative(4, 0.7, TOY, seed=3))
    mean = np.mean([run._emitted() for _ in range(20000)])
    assert mean == pytest.approx((1 - 0.7 ** 5) / (1 - 0.7), rel=0.02)   # 2.77 tokens


def test_only_draft_chains_are_simulated(llama):
    with pytest.raises(CostDSLError, match="not simulated"):
        llama.simulate(HW, fixed_stream(2, 10, 10), decoding="medusa(heads=3, accept=0.6)")


def test_disaggregated_request_by_hand():
    """One request on a prefill and a decode instance of a DGX A100 (ideal): the prompt's
    prefill, then its KV cache over NVLink (alpha + bytes / B), then a decode step per token at
    caches 512, 513, ...: the sum of `analyze`'s own stage times."""
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    hw = costdsl.api._hardware("nvidia-dgx-a100").ideal()
    prompt, output = 512, 9
    config = Config(scheduler="disaggregated", prefill_instances=1, decode_instances=1)
    trace, s = m.simulate(hw, fixed_stream(1, prompt, output), config)
    prefill = m.analyze(hw, batch=1, seq=prompt, stages=["prefill"]).stages["prefill"]
    kv_per_token = 32 * 2 * 4096 * 2            # layers x (K, V) x hidden x fp16 bytes
    transfer = hw.link.latency_s + prompt * kv_per_token / hw.link.bandwidth_Bps
    decode = sum(m.analyze(hw, batch=1, seq=c, stages=["decode"]).stages["decode"].total.time_s
                 for c in range(prompt, prompt + output - 1))
    assert s.ttft_s["p50"] == pytest.approx(prefill.total.time_s, rel=1e-9)
    assert s.e2e_s["p50"] == pytest.approx(prefill.total.time_s + transfer + decode, rel=1e-9)


def test_disaggregated_needs_the_devices():
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    config = Config(scheduler="disaggregated", prefill_instances=4, decode_instances=5)
    with pytest.raises(CostDSLError, match="needs 9 instances of 1 device: 9; NVIDIA DGX A100 has 8"):
        m.simulate("nvidia-dgx-a100", fixed_stream(2, 10, 10), config)
    tp = costdsl.load(MODELS / "llama-2-7b.arch", passes=["tensor_parallel(n=4)"])
    with pytest.raises(CostDSLError, match="needs 3 instances of 4 devices: 12"):
        tp.simulate("nvidia-dgx-a100", fixed_stream(2, 10, 10),
                    Config(scheduler="disaggregated", prefill_instances=1, decode_instances=2))



def test_disaggregated_on_the_command_line(capsys):
    model = str(MODELS / "llama-2-7b.arch")
    assert main(["simulate", model, "--hw", "nvidia-dgx-a100", "--rate", "3", "--n", "60",
                 "--scheduler", "disaggregated(prefill=1, decode=2)"]) == 0
    assert "disaggregated(1 prefill, 2 decode)" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:   # argparse's own usage error: status 2
        main(["simulate", model, "--hw", "nvidia-dgx-a100", "--rate", "3", "--n", "6",
              "--scheduler", "disaggregated(prefill=1)"])
    assert exit.value.code == 2
    assert "disaggregated(prefill=P, decode=D)" in capsys.readouterr().err


@pytest.mark.parametrize("scheduler, memory, model", [
    ("continuous", 0.9, "llama-2-7b.arch"), ("chunked", 0.9, "llama-2-7b.arch"),
    ("static", 0.9, "llama-2-7b.arch"), ("continuous", 0.02, "llama-2-7b.arch"),
    ("continuous", 0.9, "mamba-2.8b.arch")])
def test_repeated_decode_iterations_run_in_one_go_with_the_same_numbers(
        scheduler, memory, model, monkeypatch):
    """The fast path over iterations that repeat the same decoding batch (_decode_run) gives
    the trace iterating one by one gives, to the bit: clocks, blocks, per-iteration records and
    the in-system area (the 0.02 pool pre-empts; Mamba keeps a state, no growing blocks)."""
    from costdsl.serving import simulate as sim
    m = costdsl.load(MODELS / model)
    stream = synthetic(4, 150, "lognormal(400, 0.6)", "lognormal(200, 0.8)", seed=5)
    config = Config(scheduler=scheduler, kv_memory=memory, chunk=256)
    fast, fast_summary = m.simulate(HW, stream, config)
    monkeypatch.setattr(sim.Server, "_decode_run", lambda self, *a: None)
    slow, slow_summary = m.simulate(HW, stream, config)
    assert len(fast.iteration_time) == len(slow.iteration_time) > 1000
    for name in ("first_token", "finish", "preemptions", "generated"):
        assert np.array_equal(getattr(fast, name), getattr(slow, name)), name
    for name in ("iteration_end", "iteration_time", "iteration_batch", "iteration_blocks"):
        assert getattr(fast, name) == getattr(slow, name), name
    assert fast.in_system_area == slow.in_system_area
    assert fast.max_blocks_used == slow.max_blocks_used
    assert fast_summary == slow_summary
    if memory < 0.1:
        assert fast_summary.preemptions > 0


def test_a_rate_sweep_is_the_same_on_any_workers_and_brackets_its_answer(llama):
    """The rounds of a sweep run their rates together on a local pool: the same rows and the
    same largest rate as serially; at that rate 90% of requests meet the SLO."""
    slo = {"ttft": 1.0, "tpot": 0.05}
    args = (HW, [10.0, 25.0, 40.0], 80, "lognormal(512, 0.5)", "lognormal(128, 0.5)", 3,
            Config(scheduler="chunked"), slo)
    serial_rows, serial = llama.rate_sweep(*args, workers=1)
    pooled_rows, pooled = llama.rate_sweep(*args, workers=2)
    assert serial == pooled and serial is not None
    assert [(r, s) for r, s in serial_rows] == [(r, s) for r, s in pooled_rows]
    good = [r for r, s in serial_rows if s.slo_attainment >= 0.9]
    low, high = max(good), min(r for r, _ in serial_rows if r > max(good))
    assert low <= serial < high
    at = lambda rate: llama.simulate(HW, synthetic(rate, 80, "lognormal(512, 0.5)",
                                                   "lognormal(128, 0.5)", 3),
                                     Config(scheduler="chunked"), slo)[1].slo_attainment
    assert at(serial) >= 0.9


def test_a_rate_sweep_narrows_until_the_bracket_is_within_its_resolution():
    """With an SLO met up to 26.9 requests/s and not above, the grid 10, 25, 40 brackets it
    in (25, 40); rounds of two rates cutting it in three stop once the bracket is within 0.5%
    of its lower end: the answer is within 0.5% below 26.9, after 5 rounds (15 / 3^4 = 0.19
    is more than 0.005 x 26.85 = 0.13; 15 / 3^5 = 0.06 is not), not the 7 that 3^-7 of the
    bracket would take."""
    from types import SimpleNamespace
    from costdsl.serving.ratesweep import RESOLUTION, largest_rate
    calls = []

    def simulate_many(rates):
        calls.append(list(rates))
        return [SimpleNamespace(slo_attainment=1.0 if r <= 26.9 else 0.0) for r in rates]

    rows, answer = largest_rate(simulate_many, [10.0, 25.0, 40.0], 0.9)
    assert 26.9 * (1 - RESOLUTION) <= answer <= 26.9
    assert len(calls) == 1 + 5
