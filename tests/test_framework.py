"""The serving engine around the kernels (issue 26: framework overhead per iteration) and the
closed loop of a benchmark's clients.

`[efficiency.framework]` (hardware/efficiency.py) holds what a served step costs beyond its
kernels timed alone: the per-kernel cost left in a decode iteration run as a CUDA graph, a
per-iteration and a per-sequence time, and a per-request time before the first token. The
expected values here are derived by hand from a file's figures; the shipped figures are judged
against real servers (tests/data/measured/serving-silicon.csv: aiconfigurator-core 0.12.0's
silicon_sample.csv, measured TTFT and TPOT of vLLM, TensorRT-LLM and SGLang)."""
import csv
import json
import importlib.util
import statistics

import numpy as np
import pytest
import tomlkit

import costdsl
from costdsl import symbols as S
from costdsl.cli import main
from costdsl.errors import CostDSLError
from costdsl.hardware import load_hardware
from costdsl.hardware.efficiency import Framework
from costdsl.serving.requests import Stream
from costdsl.serving.simulate import Config

from conftest import DATA, ROOT

LLAMA = ROOT / "models" / "llama-3-8b.arch"
FIGURES = {"graph_launch": "1 us", "step": "0.5 ms", "per_sequence": "20 us",
           "request": "30 ms"}


def _with_framework(tmp_path, table: str = "[efficiency.framework]", figures=FIGURES):
    """The shipped H100 file with the framework table `figures` under `table`."""
    doc = tomlkit.parse((ROOT / "hardware" / "nvidia-h100-sxm.toml").read_text())
    for section in [doc["efficiency"], *doc["stack"].values()]:   # the shipped tables out
        section.pop("framework", None)
    text = tomlkit.dumps(doc)
    body = "".join(f'{k} = "{v}"\n' if isinstance(v, str) else f"{k} = {v}\n"
                   for k, v in figures.items())
    path = tmp_path / "h100.toml"
    path.write_text(text + f"\n{table}\n{body}")
    return path


@pytest.fixture(scope="module")
def llama():
    return costdsl.load(LLAMA, passes=["fuse_serving()"])


def test_the_table_is_read_with_its_units(tmp_path):
    hw = load_hardware(str(_with_framework(tmp_path)))
    assert hw.framework == Framework(1e-6, 5e-4, pytest.approx(2e-5), 0.03)
    assert hw.request_s == 0.03
    assert hw.with_framework(None).framework is None
    assert load_hardware("nvidia-a6000").framework is None   # not fitted: no engine figures
    stacked = load_hardware(str(_with_framework(tmp_path, "[stack.trtllm.framework]",
                                                {"step": "1 ms"})))
    assert stacked.with_stack("trtllm").framework == Framework(None, 1e-3, 0.0, 0.0)


@pytest.mark.parametrize("figures, message", [
    ({"steps": "1 ms"}, "unknown key 'steps' in [efficiency.framework]"),
    ({"step": "fast"}, "framework.step = 'fast': expected a duration"),
    ({"request": "2 s"}, "must be between 0 and 1 s"),
])
def test_a_bad_figure_is_a_located_error(tmp_path, figures, message):
    path = _with_framework(tmp_path, figures=figures)
    with pytest.raises(CostDSLError) as err:
        load_hardware(str(path))
    assert message in str(err.value) and "h100.toml" in str(err.value)


def test_a_decode_iteration_is_its_kernels_at_the_graph_launch_plus_the_engine(tmp_path, llama):
    """By hand: every kernel of the decode step costs graph_launch (1 us) instead of its own
    launch; the step adds 0.5 ms and 20 us per sequence. The same model and file without the
    table gives the kernels alone: the difference is exactly those terms."""
    hw = load_hardware(str(_with_framework(tmp_path)))
    alone = hw.with_framework(None)
    batch, seq = 8, 2048
    with_engine = llama.analyze(hw, batch=batch, seq=seq).stages["decode"]
    kernels = llama.analyze(alone, batch=batch, seq=seq).stages["decode"]
    decode = llama.roofline(alone, "decode")
    launches = sum(float(o.node.repeat) * o.launch for o in decode.ops)
    count = sum(float(o.node.repeat) for o in decode.ops if o.node.engine != "link")
    expected = kernels.total.time_s - launches + count * 1e-6 + 5e-4 + batch * 2e-5
    assert with_engine.total.time_s == pytest.approx(expected, rel=1e-9)
    assert with_engine.total.server_s == pytest.approx(5e-4 + batch * 2e-5)


def test_prefill_keeps_its_launches_and_ttft_counts_the_request(tmp_path, llama):
    """Prefill runs eagerly: its kernels keep their launch; the iteration adds step and per
    sequence, and the request's 30 ms is in TTFT (latency), not in the stage."""
    hw = load_hardware(str(_with_framework(tmp_path)))
    alone = hw.with_framework(None)
    batch, seq = 4, 1024
    prefill = llama.analyze(hw, batch=batch, seq=seq).stages["prefill"].total.time_s
    kernels = llama.analyze(alone, batch=batch, seq=seq).stages["prefill"].total.time_s
    assert prefill == pytest.approx(kernels + 5e-4 + batch * 2e-5, rel=1e-9)
    lat = llama.latency(hw, batch=batch, seq=seq, gen=32)
    assert lat.ttft_s == pytest.approx(prefill + 0.03, rel=1e-9)


def test_the_closed_forms_carry_the_engine(tmp_path, llama):
    """latency's decode step as a Piecewise in seq and the request total in gen agree with the
    numbers (which evaluate every step) once the engine's terms are in."""
    hw = load_hardware(str(_with_framework(tmp_path)))
    lat = llama.latency(hw, batch=8, seq=1024, gen=64)
    assert float(lat.step_time.subs(S.seq, 1050)) == pytest.approx(
        llama.analyze(hw, batch=8, seq=1050).stages["decode"].total.time_s, rel=1e-9)
    assert float(lat.request_total.subs(S.gen, 64)) == pytest.approx(lat.e2e_s, rel=1e-9)


def test_the_report_says_what_the_engine_adds(tmp_path, capsys):
    path = _with_framework(tmp_path)
    assert main(["analyze", str(LLAMA), "--hw", str(path), "--batch", "8", "--seq", "1024",
                 "--stage", "decode"]) == 0
    out = capsys.readouterr().out
    assert ("serving engine: decode in CUDA graphs at 1 us per kernel, 500 us per iteration, "
            "20 us per sequence, 30 ms per request before its first token") in out
    assert "serving engine 660 us" in out   # 0.5 ms + 8 x 20 us, in the stage's summary


def test_engine_off_prices_the_kernels_alone(tmp_path, capsys):
    path = _with_framework(tmp_path)
    answers = {}
    for engine in ("on", "off"):
        assert main(["latency", str(LLAMA), "--hw", str(path), "--batch", "8", "--seq", "1024",
                     "--gen", "16", "--engine", engine, "--format", "json"]) == 0
        answers[engine] = json.loads(capsys.readouterr().out)
    hw = load_hardware(str(path))
    kernels = costdsl.load(LLAMA).latency(hw.with_framework(None), batch=8, seq=1024, gen=16)
    assert answers["off"]["ttft_s"] == pytest.approx(kernels.ttft_s, rel=1e-12)
    assert answers["off"]["framework"] is None
    assert answers["on"]["framework"]["request_s"] == 0.03
    assert answers["on"]["ttft_s"] > answers["off"]["ttft_s"] + 0.03


def test_calibration_ignores_the_engine(tmp_path):
    """Kernels timed alone are compared with kernels priced alone: the framework table changes
    no validated figure (the shipped H100 file has one)."""
    from costdsl.analysis.measurements import predict, read_measurements, resolve
    path = DATA / "measured" / "aiconfigurator-attention-h100.csv"
    rows = read_measurements(path)
    hw = load_hardware("nvidia-h100-sxm")
    assert hw.framework is not None
    with_table = predict(resolve(rows, path, hw, costdsl.load), hw.efficiency)
    alone = hw.with_framework(None)
    without = predict(resolve(rows, path, alone, costdsl.load), alone.efficiency)
    assert np.array_equal(with_table, without)


# --- the closed loop: at most C requests in flight -----------------------------------------

def _stream(n, prompt=512, output=16, arrival=None):
    return Stream(np.zeros(n) if arrival is None else np.asarray(arrival, dtype=float),
                  np.full(n, prompt), np.full(n, output), "test")


def test_one_client_sends_each_request_when_the_last_finishes(llama):
    hw = load_hardware("nvidia-a100-80gb")
    trace, _ = llama.simulate(hw, _stream(4), Config("chunked", concurrency=1))
    assert trace.arrival[0] == 0
    assert np.array_equal(trace.arrival[1:], trace.finish[:-1])
    # alone on the server, each request takes the same time
    e2e = trace.finish - trace.arrival
    assert np.allclose(e2e, e2e[0], rtol=1e-12)


def test_a_request_is_not_sent_before_its_time(llama):
    """With a rate as well (vllm bench serve --request-rate R --max-concurrency C): request k is
    sent at max(its time, the finish that frees a slot)."""
    hw = load_hardware("nvidia-a100-80gb")
    late = [0.0, 0.0, 100.0, 100.0]
    trace, _ = llama.simulate(hw, _stream(4, arrival=late), Config("chunked", concurrency=1))
    assert trace.arrival[1] == trace.finish[0] < 100
    assert trace.arrival[2] == 100.0 and trace.arrival[3] == trace.finish[2]


def test_the_simulated_request_waits_the_engines_time(tmp_path, llama):
    """One request alone: its TTFT is the prefill iteration plus the 30 ms before the scheduler
    sees it; the engine's step and per-sequence time are in every iteration."""
    hw = load_hardware(str(_with_framework(tmp_path)))
    trace, summary = llama.simulate(hw, _stream(1, prompt=1024), Config("chunked", chunk=2048))
    first = trace.iteration_time[0]
    assert trace.first_token[0] - trace.arrival[0] == pytest.approx(0.03 + first, rel=1e-12)
    step = llama.iteration_cost(hw)
    alone = llama.iteration_cost(hw.with_framework(None))
    assert step(1, 1024, 1024 ** 2, 0, 0) == pytest.approx(
        alone(1, 1024, 1024 ** 2, 0, 0) + 5e-4 + 2e-5, rel=1e-9)


def test_bad_closed_loops_are_refused(llama, capsys):
    with pytest.raises(CostDSLError, match="concurrency must be a whole number"):
        Config(concurrency=-1).validate()
    with pytest.raises(CostDSLError, match="closed loop"):
        Config("disaggregated", prefill_instances=1, decode_instances=1,
               concurrency=4).validate()
    assert main(["simulate", str(LLAMA), "--hw", "nvidia-dgx-h100", "--concurrency", "4",
                 "--replicas", "2"]) == 2
    assert "--concurrency drives one instance" in capsys.readouterr().err


def test_the_cli_runs_a_closed_loop(capsys):
    assert main(["simulate", str(LLAMA), "--hw", "nvidia-a100-80gb", "--concurrency", "8",
                 "--n", "32", "--prompt", "fixed(256)", "--output", "fixed(32)",
                 "--scheduler", "chunked"]) == 0
    out = capsys.readouterr().out
    assert "all at once, prompt fixed(256), output fixed(32), seed 1, at most 8 in flight" in out
    assert "mean batch 8.0" in out or "mean batch 7." in out


# --- the shipped figures against real servers ------------------------------------------------

def _bench():
    spec = importlib.util.spec_from_file_location("serving_silicon",
                                                  ROOT / "bench" / "serving_silicon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_served_tpot_on_the_h100_under_vllm_matches_real_servers():
    """vLLM on H100 (every 12th of the 138 runs: Llama-3.1-8B/70B and Qwen3-32B, bf16 and FP8,
    TP 1-8, concurrency 4-128, prompts of 1k-8k): costdsl's simulation of each benchmark with
    the shipped figures against the measured mean TPOT. The fit over all 138 is 9.7% held out
    (bench/serving_silicon.py); here 7.2% served against 9.0% for the kernels alone."""
    with open(DATA / "measured" / "serving-silicon.csv", newline="") as f:
        runs = [r for r in csv.DictReader(f) if r["system"] == "h100" and r["stack"] == "vllm"]
    runs = runs[::12]
    assert len(runs) == 12
    bench = _bench()
    served = [bench.simulate(r) for r in runs]
    alone = [bench.simulate(r, None) for r in runs]
    error = lambda results: statistics.fmean(abs(r["sim_tpot_s"] / float(r["tpot_s"]) - 1)
                                             for r in results)
    assert error(served) < 0.08
    assert error(served) < error(alone) - 0.01


def test_served_tpot_of_moe_models_against_real_servers():
    """The MoE runs (bench/convert_silicon.py --moe: DeepSeek-R1/V3, GLM-5, Qwen3-235B-A22B,
    Qwen3.5-397B-A17B, Kimi-K2.5 and gpt-oss-120b over one tensor-parallel group on H100, H200,
    B200 and B300, the experts split by width or spread whole, 986 runs), judged with the
    engine's figures fitted to the dense runs (and the experts' kernels fitted to the MoE
    tables): every 40th (25 runs) priced, those the server admitted as the benchmark sent them
    (16: measured TTFT under 5x the simulated, the bench's OVERLOADED, which counts the others
    apart, such as the H100 gpt-oss runs at concurrency 512 that waited 20 s and more for their
    first token and report a third of the TPOT the same layout has at 64) within a mean |TPOT ratio - 1| of 25% (20.2% when written) and a
    median of 0.85 to 1.15 (0.96). The block-scaled FP8 checkpoints run as fp8_block; gpt-oss-120b as released
    (MXFP4 experts, no quantize pass), under vLLM only."""
    with open(DATA / "measured" / "serving-silicon-moe.csv", newline="") as f:
        runs = list(csv.DictReader(f))
    assert len(runs) == 986 and sum(r["experts"] == "ep" for r in runs) == 273
    assert {(r["format"], r["stack"]) for r in runs if r["model"] == "gpt-oss-120b"} == \
        {("mxfp4", "vllm")}
    block = {"deepseek-v3.2", "glm-5", "qwen3-235b-a22b"}
    assert not any(r["model"] in block and "fp8" in r["format"].replace("fp8_block", "")
                   for r in runs)
    results = [_bench().simulate(r) for r in runs[::40]]
    assert not [r for r in results if "error" in r]
    queued = _bench().OVERLOADED
    admitted = [r for r in results if float(r["ttft_s"]) < queued * r["sim_ttft_s"]]
    assert len(admitted) >= 15
    ratios = [r["sim_tpot_s"] / float(r["tpot_s"]) for r in admitted]
    assert statistics.fmean(abs(x - 1) for x in ratios) < 0.25
    assert 0.85 < statistics.median(ratios) < 1.15


def test_moe_runs_quantise_what_their_checkpoints_do():
    """bench/serving_silicon.py prices each MoE run in its checkpoint's formats: Kimi-K2.5's
    INT4 QAT quantises the routed experts alone (its config.json ignores self_attn, the shared
    experts and the dense layer's MLP: EXPERTS_ONLY), NVIDIA's NVFP4 checkpoints the MLPs'
    linears and the experts, never attention (MLP_ONLY)."""
    import re
    from costdsl.graph.schema import nodes
    bench = _bench()
    def named(path, fmt):
        graph = costdsl.load(path).graph("decode")
        kinds = {n.name: n.kind for n in nodes(graph)}
        return [(p.split(",")[0], {kinds[name] for name in
                                   re.search(r'ops="([^"]*)"', p).group(1).split(",")},
                 re.search(r'ops="([^"]*)"', p).group(1))
                for p in bench._moe_passes(path, "", fmt)]
    kimi = named(ROOT / "models" / "kimi-k2.5.arch", "int4_wo")
    assert [(head, kinds) for head, kinds, _ in kimi] == \
        [("quantize(weights=4", {"expert_linear"})]
    deepseek = named(ROOT / "models" / "deepseek-v3.2.arch", "nvfp4")
    assert [kinds for _, kinds, _ in deepseek] == [{"linear"}, {"expert_linear"}]
    linears = deepseek[0][2].split(",")
    assert linears and all(n.rpartition(".")[2] in bench.MLP_LINEARS for n in linears)
