"""The deployment search (serving.search): closed-form bounds, trials, sizing, the frontier,
the executors, and what a user gets wrong.

Expected values: the closed forms come from the same model's `analyze` and `fit` (the bounds
must be those numbers, not approximations of them); a trial's rate is checked by simulating
the record's own stream just below and above it; replicas and pools are ceil(target / rate)
by hand; the executors must agree to the bit.
"""
import json
import math
import time

import numpy as np
import pytest

import costdsl
from costdsl.cli import main
from costdsl.errors import CostDSLError
from costdsl.hardware import load_hardware
from costdsl.serving import search as S
from costdsl.serving.requests import synthetic
from costdsl.serving.simulate import Config
from costdsl.serving.trial import run_trial

from conftest import MODELS

SYSTEM = "nvidia-dgx-a100"
SLO = S.SLO(0.5, 0.03, 0.9)
SMALL = dict(modes=("aggregated",), schedulers=("continuous",))


@pytest.fixture(scope="module")
def llama():
    return costdsl.load(MODELS / "llama-2-7b.arch")


def workload(rate=20.0, n=60, isl=1024, osl=128, concurrency=None):
    stream = synthetic(1.0, n, f"fixed({isl})", f"fixed({osl})", seed=1)
    return S.Workload.from_stream(stream, rate if concurrency is None else None, concurrency)


@pytest.fixture(scope="module")
def result(llama):
    return llama.search(SYSTEM, SLO, workload(), workers=1, **SMALL)


def test_closed_form_bounds_are_the_models_own_numbers(llama):
    """fits = fit's largest batch; the first decode step and one prompt's prefill = analyze;
    the TPOT root is the last batch whose step meets the target."""
    hw = load_hardware(SYSTEM)
    bits = {"w_bits": 16, "a_bits": 16, "kv_bits": 16}
    lay = S._prepare(llama, hw, (2, 1, 1), bits, workload())
    two = llama.with_layout(["tensor_parallel(n=2)"])
    sub = lay.hw
    assert sub.count == 2
    assert lay.fits == two.max_batch(sub, seq=1024 + 128)
    analysis = two.analyze(sub, batch=1, seq=1024)
    assert lay.steps[0] == pytest.approx(analysis.stages["decode"].total.time_s, rel=1e-9)
    assert lay.prefill_one == pytest.approx(analysis.stages["prefill"].total.time_s, rel=1e-9)
    at = two.analyze(sub, batch=37, seq=1024, stages=["decode"]).stages["decode"].total.time_s
    assert lay.steps[36] == pytest.approx(at, rel=1e-9)
    root = lay.tpot_root(0.02)
    assert lay.steps[root - 1] <= 0.02 < lay.steps[root]
    assert lay.tpot_root(1e-9) == 0 and lay.tpot_root(None) == len(lay.steps)


def test_a_trial_finds_the_largest_rate_meeting_the_slo(llama, result):
    """Re-simulating the trial's own record: at its rate the p90s meet the SLO; 10% above,
    they do not (the bisection stops within 1/64 of the ceiling)."""
    candidates, records = _records(llama)
    record = records[0]
    answer = run_trial(json.loads(json.dumps(record)))      # plain data, round trip
    assert answer == run_trial(record)
    assert answer["rate"] > 0 and answer["simulations"] >= 3
    assert answer["ttft_s"] <= SLO.ttft_s and answer["tpot_s"] <= SLO.tpot_s
    above = dict(record, ceiling=answer["rate"] * 1.1)
    from costdsl.serving.trial import _judge
    from costdsl.serving.simulate import simulate, KVPool
    from costdsl.serving.iteration import cost_from_record
    from costdsl.serving.requests import Stream
    shape = record["stream"]
    stream = Stream(np.cumsum(np.array(shape["gaps"]) / above["ceiling"]),
                    np.array(shape["prompt"]), np.array(shape["output"]), "t")
    trace = simulate(stream, cost_from_record(record["cost"]), KVPool(**record["pool"]),
                     Config(**record["config"]))
    assert not _judge(above["ceiling"], trace, "aggregated", record["slo"], 0.0)["met"]


def _records(llama, **space):
    hw = load_hardware(SYSTEM)
    space = S.Space((hw,), **{**SMALL, **space})
    pruned, near = {}, []
    w = workload()
    prepared = S._layouts(llama, space, w, pruned, near)
    candidates = S._candidates(prepared, space, SLO, w, pruned, near)
    shape = w.as_record()
    return candidates, [S._trial_record(*c, SLO, shape) for c in candidates[:2]]


def test_records_are_plain_data(llama):
    """What travels to a worker is JSON: no function, no pickle."""
    _, records = _records(llama)
    for record in records:
        assert json.loads(json.dumps(record)) == record


def test_replicas_and_headroom_by_hand(result):
    """replicas = ceil(20 / rate per replica), GPUs = replicas x tp x pp x ep, headroom =
    replicas x rate / 20 - 1, tokens/s per GPU = rate x 128 / GPUs of a replica."""
    assert result.deployments
    for d in result.deployments:
        g = d.layout["tp"] * d.layout["pp"] * d.layout["ep"]
        assert d.replicas == math.ceil(20 / d.rate_per_replica)
        assert d.gpus == d.replicas * g
        assert d.headroom == pytest.approx(d.replicas * d.rate_per_replica / 20 - 1)
        assert d.tokens_per_s_per_gpu == pytest.approx(d.rate_per_replica * 128 / g)
        assert d.ttft_s <= SLO.ttft_s and d.tpot_s <= SLO.tpot_s
    best = result.recommendation
    assert best.gpus == min(d.gpus for d in result.deployments)
    assert best.binding in ("ttft", "tpot", "memory", "rate")


def test_disaggregated_pools_are_sized_apart(llama):
    """x = ceil(R / prefill rate), y = ceil(R / decode rate): the deployment's capacity is the
    smaller pool's, its TTFT the prefill pool's and its TPOT the decode pool's."""
    r = llama.search(SYSTEM, SLO, workload(rate=30.0), workers=1, modes=("disaggregated",))
    assert r.recommendation.mode == "disaggregated" and r.runner_up is None
    for d in r.deployments:
        p, q = d.prefill, d.decode
        gp = p["layout"]["tp"] * p["layout"]["pp"]
        gd = q["layout"]["tp"] * q["layout"]["pp"]
        assert d.gpus == p["instances"] * gp + q["instances"] * gd
        assert d.rate_per_replica >= 30 and d.headroom >= 0


def test_the_frontier_is_not_dominated(result):
    front = result.frontier
    assert front
    for a in front:
        for b in result.deployments:
            assert not (b.tokens_per_s_per_gpu > a.tokens_per_s_per_gpu and
                        b.tokens_per_s_per_user > a.tokens_per_s_per_user)
    users = [d.tokens_per_s_per_user for d in front]
    assert users == sorted(users)


def test_closed_forms_prune_before_simulating(llama):
    """A TTFT below one prompt's prefill leaves nothing to simulate, and the error names the
    closest layout and by how much it misses."""
    with pytest.raises(CostDSLError, match=r"closest is .*one prompt's prefill takes .* over "
                                           r"the target"):
        llama.search(SYSTEM, S.SLO(0.001, 0.03), workload(), workers=1, **SMALL)


def test_a_concurrency_target_sizes_by_littles_law(llama):
    r = llama.search(SYSTEM, SLO, workload(concurrency=64), workers=1, **SMALL)
    assert r.concurrency == 64 and r.rate is None
    best = r.recommendation
    assert best.replicas >= 1 and best.gpus >= 1


def test_prices_give_cost(llama):
    r = llama.search(SYSTEM, SLO, workload(), workers=1, prices={SYSTEM: 2.0},
                     objective="cost", **SMALL)
    best = r.recommendation
    assert best.cost_per_hour == pytest.approx(2.0 * best.gpus)
    # $/hour over the output tokens an hour at the target rate (20 requests/s x 128 tokens)
    assert best.cost_per_million_tokens == pytest.approx(
        best.cost_per_hour / (20 * 128 * 3600) * 1e6)


def _same(a, b):
    from costdsl.report.search import search_dict
    da, db = search_dict(a), search_dict(b)
    da.pop("executor"), db.pop("executor")
    assert da == db


def test_a_local_pool_gives_the_serial_answer(llama, result):
    pooled = llama.search(SYSTEM, SLO, workload(), workers=2, **SMALL)
    assert pooled.executor == "2 local workers"
    _same(result, pooled)


def test_a_dask_cluster_gives_the_serial_answer(llama, result):
    """A local Dask cluster with worker processes (started here): the same records, the same
    answers, to the bit."""
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        clustered = llama.search(SYSTEM, SLO, workload(), cluster=cluster.scheduler_address,
                                 **SMALL)
    assert clustered.executor.startswith("Dask cluster at tcp://")
    _same(result, clustered)


def test_an_unreachable_cluster_fails_within_ten_seconds(llama, tmp_path, capsys):
    pytest.importorskip("distributed")
    start = time.monotonic()
    out = tmp_path / "f.csv"
    code = main(["search", str(MODELS / "llama-2-7b.arch"), "--hw", SYSTEM, "--slo",
                 "ttft=1s,tpot=50ms", "--rate", "1", "--isl", "128", "--osl", "16",
                 "--cluster", "tcp://127.0.0.1:9", "--out", str(out)])
    assert code == 2 and time.monotonic() - start < 15
    err = capsys.readouterr().err
    assert "no Dask scheduler answered" in err and "Traceback" not in err
    assert not out.exists()


def test_cli_text_json_csv_and_plot(tmp_path, capsys):
    args = ["search", str(MODELS / "llama-2-7b.arch"), "--hw", SYSTEM, "--slo",
            "ttft=500ms,tpot=30ms,quantile=p90", "--rate", "20", "--isl", "1024", "--osl",
            "128", "--n", "60", "--mode", "aggregated", "--schedulers", "continuous",
            "--workers", "1"]
    assert main(args + ["--out", str(tmp_path / "f.csv"), "--plot",
                        str(tmp_path / "p.png")]) == 0
    text = capsys.readouterr().out
    assert "recommended: aggregated:" in text and "Pareto frontier" in text
    assert (tmp_path / "p.png").stat().st_size > 1000
    rows = (tmp_path / "f.csv").read_text().splitlines()
    assert rows[0].startswith("mode,hardware,tp,pp,ep") and len(rows) >= 2
    assert main(args + ["--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rec = data["recommendation"]
    for key in ("hardware", "mode", "layout", "replicas", "gpus", "w_bits", "kv_bits",
                "scheduler", "max_batch", "rate_per_replica", "tokens_per_s_per_gpu",
                "tokens_per_s_per_user", "ttft_s", "tpot_s", "cost_per_hour",
                "cost_per_million_tokens", "binding"):
        assert key in rec, key
    assert set(rec["layout"]) == {"tp", "pp", "ep", "experts"}   # experts: "split" or "ep"
    assert set(data["candidates"]) >= {"total", "pruned_by", "simulated"}
    assert data["frontier"] and data["runner_up"] is None


@pytest.mark.parametrize("extra, message", [
    (["--slo", "ttft=1s,tpot=1s,quantile=p100", "--rate", "1"], "quantile must be in (0, 1)"),
    (["--slo", "ttft=1s,tpot=1s,quantile=x", "--rate", "1"], "quantile must be pNN"),
    (["--slo", "ttft=1s,tpot=1s", "--rate", "0"], "--rate must be a positive number"),
    (["--slo", "ttft=1s,tpot=1s", "--rate", "1", "--gpus", "0"], "--gpus"),
    (["--slo", "ttft=1s,tpot=1s", "--rate", "1", "--price", "nvidia-h100-sxm=2"],
     "--price names 'nvidia-h100-sxm', not among the systems searched"),
    (["--slo", "ttft=1s,tpot=1s", "--rate", "1", "--price", "nvidia-dgx-a100=free"],
     "expected HARDWARE=DOLLARS_PER_GPU_HOUR"),
    (["--slo", "ttft=1s,tpot=1s", "--rate", "1", "--objective", "cost"],
     "--objective cost needs a price for nvidia-dgx-a100"),
    (["--slo", "ttft=1s,tpot=1s", "--rate", "1", "--mode", "fleet"],
     "expected some of aggregated"),
    (["--slo", "e2e=1s", "--rate", "1"], "search takes ttft= and tpot="),
    (["--slo", "tpot=50ms", "--rate", "1"], "needs both a TTFT and a TPOT target"),
])
def test_bad_input_is_a_clear_error(extra, message, capsys):
    args = ["search", str(MODELS / "llama-2-7b.arch"), "--hw", SYSTEM, "--isl", "128",
            "--osl", "16", "--n", "20", "--workers", "1"] + extra
    try:
        code = main(args)
    except SystemExit as exit:   # argparse's own check of a flag's type
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_too_few_gpus_says_so(capsys):
    """Llama-2-70B in 16 bits needs more than one 80 GB A100."""
    assert main(["search", str(MODELS / "llama-2-70b.arch"), "--hw", SYSTEM, "--isl", "128",
                 "--osl", "16", "--slo", "ttft=1s,tpot=1s", "--rate", "1", "--gpus", "1",
                 "--workers", "1"]) == 2
    assert "no layout of the model fits in 1 GPU" in capsys.readouterr().err


def test_lengths_come_from_one_place(capsys, tmp_path):
    path = tmp_path / "r.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens\n0,100,10\n1,200,20\n")
    base = ["search", str(MODELS / "llama-2-7b.arch"), "--hw", SYSTEM, "--slo", "ttft=1s,tpot=1s",
            "--rate", "1", "--workers", "1"]
    assert main(base + ["--requests", str(path), "--isl", "5"]) == 2
    assert "--requests gives the lengths" in capsys.readouterr().err
    assert main(base) == 2
    assert "give the request lengths" in capsys.readouterr().err


def test_a_price_in_the_hardware_file(llama, tmp_path):
    """`price_per_hour` in a system file prices the deployment without --price; --price
    overrides it."""
    source = (load_hardware(SYSTEM).source)
    text = open(source).read().replace("count = 8", "count = 8\nprice_per_hour = 1.5", 1)
    path = tmp_path / "priced-dgx.toml"
    path.write_text(text)
    hw = load_hardware(str(path))
    r = llama.search(hw, SLO, workload(), workers=1, objective="cost", **SMALL)
    assert r.recommendation.cost_per_hour == pytest.approx(1.5 * r.recommendation.gpus)
    r = llama.search(hw, SLO, workload(), workers=1, prices={"priced-dgx": 3.0}, **SMALL)
    assert r.recommendation.cost_per_hour == pytest.approx(3.0 * r.recommendation.gpus)


def test_shared_prefixes_raise_the_rate_a_replica_serves(llama):
    """A trace whose requests share most of their prompt (hash_ids): the trials' prefix cache
    skips it, so one replica serves more requests/s than the same lengths without prefixes."""
    from costdsl.serving.requests import Stream
    n, prompt = 60, 1024
    shared = tuple(range(1, 57))               # 896 tokens in common
    hashes = tuple(shared + tuple(1000 * (i + 1) + j for j in range(8)) for i in range(n))
    stream = Stream(np.zeros(n), np.full(n, prompt), np.full(n, 128), "t", hashes=hashes)
    slo = S.SLO(0.1, 0.03)
    plain = S.Workload.from_stream(Stream(np.zeros(n), stream.prompt, stream.output, "t"),
                                   20.0, None)
    cached = S.Workload.from_stream(stream, 20.0, None)
    assert "prefixes" in cached.as_record() and "prefixes" not in plain.as_record()
    one = dict(SMALL, w_bits=(16,))
    without = llama.search(SYSTEM, slo, plain, workers=1, **one).recommendation
    with_prefix = llama.search(SYSTEM, slo, cached, workers=1, **one).recommendation
    # measured: 4 GPUs (one tp=4 replica) without, a single GPU with
    assert with_prefix.gpus < without.gpus


def test_prefill_and_decode_pools_may_sit_on_different_systems(llama):
    """With two systems, a disaggregated deployment may prefill on one and decode on the
    other: every pairing is sized, and its GPUs add up per pool."""
    r = llama.search(["nvidia-dgx-a100", "nvidia-dgx-h100"], SLO, workload(n=40), workers=1,
                     modes=("disaggregated",))
    mixed = [d for d in r.deployments if d.prefill["hardware"] != d.decode["hardware"]]
    assert mixed
    for d in mixed:
        assert d.hardware == f"{d.prefill['hardware']}+{d.decode['hardware']}"
        gp = d.prefill["layout"]["tp"] * d.prefill["layout"]["pp"]
        gd = d.decode["layout"]["tp"] * d.decode["layout"]["pp"]
        assert d.gpus == d.prefill["instances"] * gp + d.decode["instances"] * gd


def test_moe_layouts_include_the_experts_spread_over_tp():
    """A MoE model's candidates: every TP group (tp > 1, ep = 1) also with its experts spread
    whole over it (tensor_parallel's experts="ep"), priced as analyze prices that layout; its
    record and labels say so (layout key "experts", "tp=8 pp=1 experts spread over tp")."""
    model = costdsl.load(MODELS / "qwen3-30b-a3b.arch")
    hw = load_hardware("nvidia-dgx-h100")
    space = S.Space((hw,), **SMALL)
    prepared = S._layouts(model, space, workload(), {}, [])
    spread = [lay for lay in prepared if lay.layout[3:] == ("ep",)]
    assert {lay.layout[:2] for lay in spread} == {(2, 1), (4, 1), (8, 1), (2, 2), (4, 2),
                                                  (2, 4)}
    lay = next(lay for lay in spread if lay.layout[:2] == (8, 1))
    sub = lay.hw
    expected = model.with_layout(['tensor_parallel(n=8, experts="ep")']).analyze(
        sub, batch=1, seq=1024, stages=["decode"]).stages["decode"].total.time_s
    assert lay.steps[0] == pytest.approx(expected, rel=1e-9)
    candidates = S._candidates(prepared, space, S.SLO(5.0, 1.0, 0.9), workload(), {}, [])
    inst = next(c[0] for c in candidates if c[0].experts == "ep" and c[0].tp == 8)
    assert inst.layout == {"tp": 8, "pp": 1, "ep": 1, "experts": "ep"}
    assert inst.label == "nvidia-dgx-h100 tp=8 pp=1 experts spread over tp"
