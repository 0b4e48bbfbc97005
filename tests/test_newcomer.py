"""What a newcomer hit (issue 25): crashes, lost output and misleading answers, one test each.

Each test runs the command or call the issue names and checks the answer it should give; the
expected values say where they come from.
"""
import json
from pathlib import Path

import pytest

import costdsl
from costdsl.cli import main
from costdsl.errors import CostDSLError

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- crashes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("hw", ["nvidia-h100-sxm", "nvidia-a100-80gb", "nvidia-a6000"])
def test_offload_crossover_answers_on_calibrated_files_and_ignores_the_norms(hw, capsys):
    code, out, err = run(["crossover", "llama-2-7b", "--hw", hw, "--solve", "offload", "--pass",
                          'offload(weights=1, ops="layers.*")', "--format", "json"], capsys)
    assert code == 0, err
    decode = json.loads(out)["decode"]
    # the norms hold 2 x 4096 of the ~202M weights per layer: left out of the stage's answer
    assert decode["negligible"] == ["layers.attn_norm", "layers.mlp_norm"]
    assert decode["limited_by"] not in decode["negligible"]
    norm = next(o for o in decode["ops"] if o["op"] == "layers.attn_norm")
    assert norm["negligible"] and norm["weight_share"] < 1e-4
    # a linear's f* reaches 1 where its offloaded transfer equals its compute: a finite batch
    assert all(o["all_free_from_batch"] > 1 for o in decode["ops"] if not o["negligible"])


@pytest.mark.parametrize("args, expected", [
    (["--target-time", "30ms"], "already met with no compression (ffn = 0)"),
    (["--target-memory", "100 GB"], "already met with no compression (ffn = 0)"),
    (["--target-time", "1ms"], "out of reach for ffn"),
    (["--target-memory", "5 GB"], "out of reach for ffn"),
])
def test_compression_targets_met_or_out_of_reach_are_answers(args, expected, capsys):
    # Llama-2-7b decodes one token in ~18 ms on an A6000 with 14.6 GB of weights + KV: 30 ms
    # and 100 GB hold with nothing pruned; 1 ms and 5 GB cannot be reached by the MLP alone
    code, out, err = run(["crossover", "llama-2-7b", "--hw", "nvidia-a6000", "--pass",
                          "prune(ffn=0.5)", "--solve", "ffn", *args], capsys)
    assert code == 0, err
    assert expected in out


@pytest.mark.parametrize("solve", ["heads", "kv_heads"])
def test_compression_target_on_other_arguments(solve, capsys):
    code, out, err = run(["crossover", "llama-2-7b", "--hw", "nvidia-a6000", "--pass",
                          "prune(ffn=0.5)", "--solve", solve, "--target-time", "30ms"], capsys)
    assert code in (0, 2) and "internal error" not in err


def test_simulate_writes_plot_csv_and_json_together(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n0,200,20\n0,50,5\n")
    plot, rows = tmp_path / "t.png", tmp_path / "requests.csv"
    code, out, err = run(["simulate", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--requests",
                          str(trace), "--plot", str(plot), "--out", str(rows), "--format",
                          "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert plot.stat().st_size > 0 and len(rows.read_text().splitlines()) == 4
    # every request arrives at once (an offline batch): no arrival rate, not infinity
    assert data["summary"]["arrival_rate"] is None and len(data["requests"]) == 3


def test_epoch_arrivals_keep_their_latencies(tmp_path, capsys):
    """The same two requests given at 0 s and 0.5 s, and at epoch 1.7e9 s and in epoch
    nanoseconds (1.7e18) as seconds: the clock runs from the first arrival, so TTFT is the same
    (a float at 1.7e18 s resolves 256 s: the old clock returned 0 s)."""
    answers = []
    for first, second in ((0, 0.5), (1.7e9, 1.7e9 + 0.5), (1.7e18, 1.7e18 + 0.5)):
        trace = tmp_path / "t.csv"
        trace.write_text(f"arrival_s,prompt_tokens,output_tokens\n{first!r},100,10\n"
                         f"{second!r},200,20\n")
        code, out, err = run(["simulate", "llama-2-7b", "--hw", "nvidia-a100-80gb",
                              "--requests", str(trace), "--format", "json"], capsys)
        assert code == 0, err
        answers.append(json.loads(out)["summary"]["ttft_s"]["mean"])
    assert answers[0] > 0 and answers[1] == pytest.approx(answers[0], rel=1e-6)
    # 1.7e18 + 0.5 is 1.7e18 in float64: the two arrive together, and each still has a TTFT
    assert answers[2] > 0


def test_arrivals_spanning_more_than_a_float_clock_resolves(tmp_path, capsys):
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1.7e18,200,20\n")
    code, out, err = run(["simulate", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--requests",
                          str(trace)], capsys)
    assert code == 2 and "span" in err and "nanoseconds" in err


def test_naive_azure_timestamps_are_utc(tmp_path, monkeypatch):
    """A naive TIMESTAMP is read as UTC: across New York's 2024 daylight-saving change (02:00
    local on 10 March), two requests an hour apart in UTC stay an hour apart."""
    import time
    from costdsl.serving.requests import read_requests
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        trace = tmp_path / "azure.csv"
        trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                         "2024-03-10 06:30:00,100,10\n2024-03-10 07:30:00,100,10\n")
        assert list(read_requests(str(trace)).arrival_s) == [0.0, 3600.0]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


@pytest.mark.parametrize("rate", ["1e-300", "1e-320", "0"])
def test_rates_a_clock_cannot_hold_are_refused(rate, capsys):
    code, out, err = run(["simulate", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--rate", rate,
                          "--n", "3"], capsys)
    assert code == 2 and "arrival rate" in err


def test_plan_with_fusion_keeps_tensor_parallel_layouts(capsys):
    code, out, err = run(["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--pass", "fuse_all()",
                          "--w-bits", "16", "--format", "json"], capsys)
    assert code == 0, err
    data = json.loads(out)
    assert not data.get("skipped"), data.get("skipped")
    assert {p["tp"] for p in data["plans"]} == {1, 2, 4, 8}


def test_microbatches_are_at_most_the_batch():
    """pipeline_parallel(n=4, microbatches=m) at batch 1 runs one microbatch whatever m: the
    time equals m = 1's (4 stage times, no fraction of a sequence), and m = 1e9 is not 1e10 s."""
    hw = "nvidia-dgx-a100"
    times = [costdsl.load("llama-2-70b", passes=[f"pipeline_parallel(n=4, microbatches={m})"])
             .latency(hw, batch=1, seq=1024, gen=8) for m in (1, 4, 10**9)]
    assert times[1].ttft_s == pytest.approx(times[0].ttft_s, rel=1e-12)
    assert times[2].ttft_s == pytest.approx(times[0].ttft_s, rel=1e-12)
    # at batch 6 with 4 microbatches: 4 microbatches of ceil(6/4) = 2 sequences, as batch 8
    m = costdsl.load("llama-2-70b", passes=["pipeline_parallel(n=4, microbatches=4)"])
    six, eight = (m.analyze(hw, batch=b, seq=256, stages=("decode",)).stages["decode"]
                  for b in (6, 8))
    assert six.total.time_s == pytest.approx(eight.total.time_s, rel=1e-12)


def test_max_batch_of_a_moe_falls_back_to_a_search_and_says_so():
    fit = costdsl.load("mixtral-8x7b", passes=["expert_parallel(n=8)"]).fit(
        "nvidia-dgx-a100", seq=2048)
    assert fit.per_sequence is None and "numeric search" in fit.max_batch_method
    # the search's answer is the largest batch that fits: one more does not (analyze's own
    # memory account, weights + KV + activation peak, judges both)
    m = costdsl.load("mixtral-8x7b", passes=["expert_parallel(n=8)"])
    fits = lambda b: m.analyze("nvidia-dgx-a100", batch=b, seq=2048).memory.fits
    assert fits(fit.max_batch) and not fits(fit.max_batch + 1)


@pytest.mark.parametrize("argv", [
    ["analyze", "llama-2-7b", "--hw", "nvidia-a6000", "--kv-bits", "1e-300"],
    ["analyze", "llama-2-7b", "--hw", "nvidia-a6000", "--w-bits", "0.5"],
    ["analyze", "llama-2-7b", "--hw", "nvidia-a6000", "--a-bits", "65"],
    ["sweep", "llama-2-7b", "--hw", "nvidia-a6000", "--w-bits", "1e-300"],
    ["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--w-bits", "0.5"],
])
def test_bitwidths_are_from_1_to_64(argv, capsys):
    with pytest.raises(SystemExit) if argv[0] == "analyze" else _nothing():
        code, out, err = run(argv, capsys)
        assert code == 2 and "[1, 64]" in err


def test_fractional_bitwidths_stay_legal(capsys):
    code, out, err = run(["analyze", "llama-2-7b", "--hw", "nvidia-a6000", "--kv-bits", "4.25"],
                         capsys)
    assert code == 0 and "kv_bits=4.25" in out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_a_chip_with_only_fp64_runs_everything_in_fp64(tmp_path, capsys):
    toml = tmp_path / "hpc.toml"
    toml.write_text('name = "An fp64 part"\nbandwidth = "1 TB/s"  # made up for the test\n'
                    'memory = "80 GB"\n[peak]\nfp64 = "20 TFLOPS"\n')
    code, out, err = run(["analyze", "llama-2-7b", "--hw", str(toml), "--stage", "decode",
                          "--format", "json"], capsys)
    assert code == 0, err
    types = {o["compute_type"] for o in json.loads(out)["stages"]["decode"]["ops"]}
    assert types <= {"fp64", None}


def test_an_imported_file_is_checked_whole(tmp_path, capsys):
    (tmp_path / "lib.arch").write_text(
        'model "Unused" {\n  params { hidden = 64 }\n  embed = embedding(tokens, vocab=10, '
        'dim=hidden)\n  x = linaer(embed, out=hidden)\n}\n'
        'model "Used" {\n  params { hidden = 64 }\n  embed = embedding(tokens, vocab=10, '
        'dim=hidden)\n  x = linear(embed, out=hidden)\n}\n')
    (tmp_path / "main.arch").write_text('import "lib.arch"\nmodel "Mine" extends "Used" { }\n')
    code, out, err = run(["check", str(tmp_path / "main.arch")], capsys)
    assert code == 2 and "lib.arch:4:7" in err and "unknown op 'linaer'" in err
    assert "did you mean 'linear'" in err


def test_a_long_sum_is_refused_quickly_with_its_place(tmp_path, capsys):
    import time
    path = tmp_path / "sum.arch"
    path.write_text('model "S" {\n  params { hidden = ' + "+".join(["1"] * 100_000) + " }\n"
                    "  x = embedding(tokens, vocab=10, dim=hidden)\n}\n")
    start = time.perf_counter()
    code, out, err = run(["check", str(path)], capsys)
    assert time.perf_counter() - start < 2.0
    assert code == 2 and "more than 20,000 tokens" in err and "sum.arch:2:" in err
    assert max(len(line) for line in err.splitlines()) < 200   # the line is quoted clipped


# --- misleading output --------------------------------------------------------------------------

def test_latency_headline_is_the_strategys(capsys):
    code, out, err = run(["latency", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--batch", "1",
                          "--seq", "1024", "--gen", "128", "--decoding",
                          'speculative(draft="tinyllama-1.1b", k=4, accept=0.8)'], capsys)
    assert code == 0, err
    lines = out.splitlines()
    tpot = next(l for l in lines if l.startswith("time per output token"))
    assert "plain" in tpot and lines.index(tpot) < 5
    code, out, err = run(["latency", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--batch", "1",
                          "--seq", "1024", "--gen", "128", "--format", "json", "--decoding",
                          'speculative(draft="tinyllama-1.1b", k=4, accept=0.8)'], capsys)
    data = json.loads(out)
    request = data["decoding"]["request"]
    # e2e = TTFT + (gen - 1) x the strategy's time per token
    assert request["e2e_s"] == pytest.approx(data["ttft_s"] + 127 * request["tpot_s"])
    assert request["tpot_s"] < data["tpot_s"]


def test_fit_on_a_system_says_it_is_one_device(capsys):
    code, out, err = run(["fit", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--seq", "4096"],
                         capsys)
    assert code == 0 and "per device" in out and "one of the 8 devices" in out
    code, out, err = run(["fit", "llama-2-70b", "--hw", "nvidia-dgx-a100", "--seq", "4096",
                          "--pass", "tensor_parallel(n=8)"], capsys)
    assert "8 of 8 (tp=8)" in out


def test_fit_names_the_unfused_score_matrix():
    """Llama-3-8B at 8k on an H100: the unfused scores (batch x 32 heads x 8192^2 x 2 bytes =
    4.3 GB per sequence) cap the batch at 7; FlashAttention keeps none of them."""
    fit = costdsl.load("llama-3-8b").fit("nvidia-h100-sxm", seq=8192)
    fused = costdsl.load("llama-3-8b", passes=["flash_attention()"]).fit("nvidia-h100-sxm",
                                                                           seq=8192)
    assert fit.max_batch == 7 and fit.fused_max_batch == fused.max_batch > 4 * fit.max_batch


def test_bitwidth_crossovers_name_their_compute_type(capsys):
    code, out, err = run(["crossover", "llama-2-7b", "--hw", "nvidia-a6000", "--solve", "w_bits",
                          "--batch", "64"], capsys)
    rows = [l for l in out.splitlines() if l.strip().startswith("layers.q ")]
    assert len(rows) == 2 and len({r.split("(peak of ")[1] for r in rows}) == 2


def test_no_crossover_below_a_batch_of_one(capsys):
    answer = costdsl.load("llama-2-7b").crossover("batch", hw="nvidia-a6000", stage="prefill",
                                                  seq=2048)
    q = next(c for c in answer.ops if c.op == "layers.q")
    # prefill's q projection at 2048 tokens: intensity ~ 2048 b / (1 + b) > ridge for b >= 1
    assert q.value is None and "below 1: compute-bound for every batch" in q.reason


def test_sweep_says_how_many_values_rounding_dropped(tmp_path, capsys):
    code, out, err = run(["sweep", "llama-2-7b", "--hw", "nvidia-a6000", "--batch",
                          "1:1000:log991", "--stage", "decode", "-o", str(tmp_path / "s.csv")],
                         capsys)
    distinct = len((tmp_path / "s.csv").read_text().splitlines()) - 1
    assert code == 0 and f"{distinct} distinct values of the 991 asked" in err


def test_memory_bytes_is_a_float_in_every_sweep():
    from costdsl.analysis.sweep import sweep
    import numpy as np
    from costdsl.hardware import load_hardware
    table = sweep(costdsl.load("mamba-2.8b"), [load_hardware("nvidia-a6000")], np.array([1, 2]),
                  np.array([128]), [(16, 16, 16)], ("decode",))
    assert table.columns["memory_bytes"].dtype == np.float64


# --- one CLI ------------------------------------------------------------------------------------

def test_old_spellings_still_work(tmp_path, capsys):
    assert run(["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--bits", "16"], capsys)[0] == 0
    assert run(["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--max-batch"], capsys)[0] == 0
    code, out, err = run(["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--w-bits", "16",
                          "--max-batch", "32", "--format", "json"], capsys)
    assert code == 0 and max(p["batch"] for p in json.loads(out)["plans"]) == 32
    assert run(["sweep", "llama-2-7b", "--hw", "nvidia-a6000", "-o", str(tmp_path / "a.csv")],
               capsys)[0] == 0


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    out = capsys.readouterr().out
    assert "--seq SEQ" in out and "(default: 2048)" in out and "(default: text)" in out


def test_solve_help_lists_every_question(capsys):
    with pytest.raises(SystemExit):
        main(["crossover", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name in ("sparsity", "offload", "rank", "ffn", "kv_heads", "accept", "w_bits"):
        assert name in out


@pytest.mark.parametrize("argv, guess", [
    (["analyze", "llama-2-7b", "--hw", "a6000"], "'nvidia-a6000'"),
    (["analyze", "llama-2-7b", "--hw", "nvidia-h100"], "'nvidia-h100-sxm'"),
    (["check", "llama2-7b"], "'llama-2-7b'"),
])
def test_did_you_mean_for_hardware_and_models(argv, guess, capsys):
    code, out, err = run(argv, capsys)
    assert code == 2 and f"did you mean {guess}" in err


def test_solve_accept_needs_no_accept(capsys):
    code, out, err = run(["crossover", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--solve",
                          "accept", "--decoding", 'speculative(draft="tinyllama-1.1b", k=4)'],
                         capsys)
    assert code == 0, err
    assert "accept solved for" in out and "nan" not in out
    with_accept = main(["crossover", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--solve",
                        "accept", "--decoding",
                        'speculative(draft="tinyllama-1.1b", k=4, accept=0.3)'])
    assert with_accept == 0
    # the break-even does not depend on the accept given
    assert out.splitlines()[-1] == capsys.readouterr().out.splitlines()[-1]


def test_calibrate_takes_a_tokens_column_that_agrees(tmp_path):
    from costdsl.analysis.measurements import read_measurements
    header = "hardware,model,stage,batch,seq,tokens,w_bits,a_bits,kv_bits,op,time_s\n"
    path = tmp_path / "m.csv"
    path.write_text(header + "nvidia-a6000,llama-2-7b,decode,1,128,1,16,16,16,layers.q,1e-4\n"
                             "nvidia-a6000,llama-2-7b,prefill,1,128,128,16,16,16,layers.q,1e-4\n")
    rows = read_measurements(str(path))
    assert [r.tokens for r in rows] == [None, None]
    path.write_text(header + "nvidia-a6000,llama-2-7b,prefill,1,128,64,16,16,16,layers.q,1e-4\n")
    with pytest.raises(CostDSLError, match="contradicts the prefill stage"):
        read_measurements(str(path))


def test_records_print_short():
    m = costdsl.load("llama-2-7b")
    a = m.analyze("nvidia-a6000", batch=1, seq=128)
    assert len(repr(a)) < 200 and repr(a).startswith("<Analysis: Llama-2-7b on")
    assert str(a).startswith("Llama-2-7b on NVIDIA RTX A6000") and "decode" in str(a)
    assert len(repr(m.latency("nvidia-a6000", 1, 128, 16))) < 200


def test_progress_only_on_a_terminal(capsys):
    # stderr is not a terminal under pytest: a long command prints no progress line
    assert run(["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--w-bits", "16"],
               capsys)[2] == ""
    from costdsl import progress
    progress.enable(True)
    try:
        assert list(progress.steps("x", range(3))) == [0, 1, 2]
        assert "x: 0/3" in capsys.readouterr().err
    finally:
        progress.enable(False)


# --- oracles over the new input surfaces --------------------------------------------------------

def test_plain_and_azure_traces_of_the_same_requests_agree(tmp_path, capsys):
    plain, azure = tmp_path / "plain.csv", tmp_path / "azure.csv"
    plain.write_text("arrival_s,prompt_tokens,output_tokens\n0,300,20\n0.25,120,40\n1.5,800,8\n")
    azure.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n"
                     "2023-11-16 18:15:46.000000,300,20\n2023-11-16 18:15:46.250000,120,40\n"
                     "2023-11-16 18:15:47.500000,800,8\n")
    outs = []
    for trace in (plain, azure):
        code, out, err = run(["simulate", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--requests",
                              str(trace), "--format", "json"], capsys)
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0]["summary"] == outs[1]["summary"]
    assert outs[0]["requests"] == outs[1]["requests"]


def test_a_sweep_equals_itself_without_the_cache(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COSTDSL_CACHE", str(tmp_path / "cache"))
    argv = ["sweep", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--batch", "1:64:log5", "--seq",
            "128,4096", "--w-bits", "4,16"]
    first = run(argv, capsys)[1]      # builds the entries
    second = run(argv, capsys)[1]     # reads them
    plain = run(["--no-cache"] + argv, capsys)[1]
    assert first == second == plain and len(first.splitlines()) == 21


@pytest.mark.parametrize("efficiency", [
    "[efficiency]  # an earlier fit\nbandwidth = 0.9\n[efficiency.rmsnorm]  # its own\n"
    "bandwidth = 0.5\n",
    "[efficiency]\nbandwidth = 0.9\n[efficiency.tile]  # kept\nm = 128\nn = 128\n",
    "efficiency = { bandwidth = 0.9, launch = \"2 us\" }\n",
])
def test_a_written_calibration_loads_back_and_predicts_the_same(efficiency, tmp_path, capsys):
    source = (ROOT / "hardware" / "nvidia-h100-sxm.toml").read_text()
    start = source.find("\n[efficiency")
    device = source if start < 0 else source[:start] + "\n"
    if efficiency.startswith("efficiency ="):   # an inline table belongs before the sections
        device = efficiency + device
    else:
        device = device + efficiency
    hw = tmp_path / "nvidia-h100-sxm.toml"   # the name the measurement rows give
    hw.write_text(device)
    measured = ROOT / "tests" / "data" / "measured" / "aiconfigurator-gemm-h100.csv"
    out = tmp_path / "fitted.toml"
    code, text, err = run(["calibrate", str(measured), "--hw", str(hw), "-o", str(out),
                           "--format", "json"], capsys)
    assert code == 0, err
    fitted = json.loads(text)
    code, text, err = run(["validate", str(measured), "--hw", str(out), "--format", "json"],
                          capsys)
    assert code == 0, err
    judged = json.loads(text)
    # the file rounds the fractions to 4 digits: the same error to within 0.01 points
    assert judged["models"]["calibrated"]["mape_percent"] == pytest.approx(
        fitted["errors"]["calibrated"]["mape_percent"], abs=0.01)


@pytest.mark.parametrize("hw", ["nvidia-a100-80gb", "nvidia-h100-sxm"])
def test_a_crossover_with_a_symbol_left_free_on_a_calibrated_chip(hw, capsys):
    """`crossover --solve batch --free seq` of prefill on a calibrated file stopped with an
    internal error (a min/max of the free seq reached float(), then sympy's limit): each op
    is still answered, and the stage balance says why it has no closed form."""
    assert main(["crossover", str(MODELS / "llama-2-7b.arch"), "--hw", hw, "--stage",
                 "prefill", "--solve", "batch", "--free", "seq"]) == 0
    out = capsys.readouterr().out
    assert "internal error" not in out
    assert "stage balance: total compute time equals total memory time at no batch found in " \
           "closed form while seq stays free" in out


@pytest.mark.parametrize("args", [
    ["search", "--slo", "ttft=1s,tpot=1s", "--rate", "1", "--isl", "8", "--osl", "8"],
    ["report", "--live", "-o", "never.html"],
    ["sweep", "--batch", "1:4:2"]])
def test_a_hw_list_that_names_nothing(args, capsys, tmp_path, monkeypatch):
    """`--hw ,` named no hardware: report stopped with an internal IndexError; every command
    that takes a list of hardware now says so in one line."""
    monkeypatch.chdir(tmp_path)
    assert main([args[0], str(MODELS / "llama-2-7b.arch"), "--hw", ","] + args[1:]) == 2
    err = capsys.readouterr().err
    assert "--hw ',': no hardware named" in err and "internal error" not in err
    assert not (tmp_path / "never.html").exists()
