"""The live report (`report --live`): the page evaluates the model's own expressions, and its
numbers are the CLI's.

Expected values: `Model.analyze` (what `costdsl analyze --format json` prints) at the same
settings, op by op, within 1e-9 relative; its bounds give the graph's colours. Settings spread
over batch 1-1024, seq 128-128k and bitwidths 4-16, on a calibrated file (the A100 80GB: vLLM's
fitted efficiencies, launch costs, L2), one with a serving engine's figures as well (the H100:
CUDA-graph decode, per-iteration and per-sequence time) and an ideal one (the RTX A6000).
"""
import re
import shutil

import pytest

import costdsl
from costdsl.cli import main
from costdsl.report.html import BOUND_COLOUR

from conftest import MODELS

HARDWARE = ("nvidia-a100-80gb", "nvidia-a6000", "nvidia-h100-sxm")
BATCHES = (1, 3, 16, 64, 256, 1024, 7, 128, 512, 33)
SEQS = (128, 1000, 4096, 32768, 131072)
BITS = (4, 8, 16)


def settings():
    """20 settings: each hardware and stage, batches and contexts over their ranges, every
    bitwidth for weights, activations and the KV cache."""
    out = []
    for i in range(20):
        w, a, kv = BITS[i % 3], BITS[(i // 3) % 3], BITS[(i + 1) % 3]
        out.append((BATCHES[i % len(BATCHES)], SEQS[i % len(SEQS)], w, a, kv,
                    HARDWARE[i % 3], ("decode", "prefill")[(i // 2) % 2]))
    return out


@pytest.fixture(scope="module")
def page_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("live") / "live.html"
    assert main(["report", str(MODELS / "llama-2-7b.arch"), "--hw", ",".join(HARDWARE),
                 "--live", "--batch", "8", "--seq", "1024", "-o", str(path)]) == 0
    return path


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); .ci/run "
                "installs it")


@pytest.fixture(scope="module")
def page(page_file):
    browser = _browser()
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        pg = b.new_page(viewport={"width": 1300, "height": 1000})
        errors = []
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(page_file.as_uri())
        pg.errors, pg.base = errors, page_file.as_uri()
        yield pg
        b.close()


def _view(page, batch, seq, w, a, kv, hw, stage, tokens=16):
    page.goto(f"{page.base}#batch={batch}&seq={seq}&tokens={tokens}&w_bits={w}&a_bits={a}"
              f"&kv_bits={kv}&config=0&hw={hw}&stage={stage}&vs=")
    page.reload()
    rows = page.eval_on_selector_all(
        "tr[data-op]", "els => els.map(e => [e.dataset.op, e.dataset.timeS, e.dataset.bound])")
    total = page.locator("[data-total-time-s]")
    assert total.get_attribute("data-stage") == stage
    fills = page.eval_on_selector_all(
        f'.node[data-stage="{stage}"]',
        "els => els.map(e => [e.dataset.op, e.querySelector('rect').getAttribute('fill')])")
    return rows, float(total.get_attribute("data-total-time-s")), dict(fills)


@pytest.mark.parametrize("setting", settings(), ids=lambda s: "-".join(map(str, s)))
def test_the_page_shows_the_clis_numbers(page, setting):
    batch, seq, w, a, kv, hw, stage = setting
    rows, total, fills = _view(page, *setting)
    cli = costdsl.load(MODELS / "llama-2-7b.arch").analyze(
        hw, batch=batch, seq=seq, w_bits=w, a_bits=a, kv_bits=kv, stages=[stage]).stages[stage]
    assert [r[0] for r in rows] == [o.name for o in cli.ops]
    for (name, time_s, bound), o in zip(rows, cli.ops):
        assert float(time_s) == pytest.approx(o.time_s, rel=1e-9), name
        assert bound == o.bound, name
        assert fills[name] == BOUND_COLOUR[o.bound], name
    assert total == pytest.approx(cli.total.time_s, rel=1e-9)
    assert not page.errors


def test_moving_a_control_updates_the_table_and_the_url(page):
    _view(page, 1, 1024, 16, 16, 16, "nvidia-a100-80gb", "decode")
    before = page.get_attribute("[data-total-time-s]", "data-total-time-s")
    page.fill("#c-batch", "256")
    page.dispatch_event("#c-batch", "change")
    assert "batch=256" in page.url
    after = page.get_attribute("[data-total-time-s]", "data-total-time-s")
    cli = costdsl.load(MODELS / "llama-2-7b.arch").analyze(
        "nvidia-a100-80gb", batch=256, seq=1024, stages=["decode"]).stages["decode"]
    assert float(after) == pytest.approx(cli.total.time_s, rel=1e-9) and after != before
    page.select_option("#c-hw", "nvidia-a6000")
    assert "hw=nvidia-a6000" in page.url
    assert "NVIDIA RTX A6000" in page.inner_text("#live-summary")
    assert not page.errors


def test_the_page_is_self_contained_and_small(tmp_path):
    """No URL is fetched (the only one in the file is SVG's namespace name), and the page of
    Llama-3.1-405B with both stages on two chips stays under 2 MB."""
    path = tmp_path / "405b.html"
    assert main(["report", str(MODELS / "llama-3.1-405b.arch"), "--hw",
                 "nvidia-h100-sxm,nvidia-a100-80gb", "--live", "-o", str(path)]) == 0
    text = path.read_text()
    assert path.stat().st_size < 2_000_000
    assert set(re.findall(r"https?://[^\s\"'<>]+", text)) <= {"http://www.w3.org/2000/svg"}
    assert not re.search(r"<script[^>]+src=", text)


def test_several_hw_need_live_and_free_parameters_a_value(tmp_path, capsys):
    out = str(tmp_path / "r.html")
    assert main(["report", str(MODELS / "llama-2-7b.arch"), "--hw",
                 "nvidia-a100-80gb,nvidia-a6000", "-o", out]) == 2
    assert "several --hw make a live report: add --live" in capsys.readouterr().err
    (tmp_path / "llama.arch").write_text((MODELS / "llama.arch").read_text())
    family = tmp_path / "family.arch"
    family.write_text((MODELS / "llama-2-7b.arch").read_text().replace(
        "ffn      = 11008", "ffn      = ?"))
    assert "= ?" in family.read_text()
    assert main(["report", str(family), "--hw", "nvidia-a100-80gb", "--live", "-o", out]) == 2
    err = capsys.readouterr().err
    assert "parameter ffn is still free" in err and "--set ffn=VALUE" in err


def test_the_compare_view(tmp_path, page):
    """Two chips, the model without its pass, another model: the per-stage speedup is the ratio
    of analyze's totals, and the ops listed as changing bound are those whose CLI bounds
    differ."""
    path = tmp_path / "compare.html"
    assert main(["report", str(MODELS / "llama-2-7b.arch"), "--hw", ",".join(HARDWARE),
                 "--live", "--pass", "flash_attention()", "--compare", "mistral-7b",
                 "-o", str(path)]) == 0
    model = costdsl.load(MODELS / "llama-2-7b.arch", passes=["flash_attention()"])
    cases = [("0:nvidia-a6000", model, "nvidia-a6000"),
             ("1:nvidia-a100-80gb", model.without_passes(), "nvidia-a100-80gb"),
             ("2:nvidia-a100-80gb", costdsl.load(MODELS / "mistral-7b.arch"), "nvidia-a100-80gb")]
    options, seen = page, []
    for vs, other, hw in cases:
        options.goto(f"{path.as_uri()}#batch=180&seq=2048&w_bits=16&a_bits=16&kv_bits=16"
                     f"&config=0&hw=nvidia-a100-80gb&stage=decode&vs={vs}")
        options.reload()
        rows = options.eval_on_selector_all(
            "tr[data-compare-stage]", "els => els.map(e => [e.dataset.compareStage, "
                                      "Number(e.dataset.speedup)])")
        changed = options.eval_on_selector_all(
            "li[data-op]", "els => els.map(e => [e.dataset.op, e.dataset.boundA, "
                           "e.dataset.boundB])")
        assert [r[0] for r in rows] == ["prefill", "decode"]
        mine = model.analyze("nvidia-a100-80gb", batch=180, seq=2048)
        theirs = other.analyze(hw, batch=180, seq=2048)
        for stage, speedup in rows:
            assert speedup == pytest.approx(mine.stages[stage].total.time_s /
                                            theirs.stages[stage].total.time_s, rel=1e-9)
        bounds = {o.name: o.bound for o in theirs.stages["decode"].ops}
        expected = [[o.name, o.bound, bounds[o.name]] for o in mine.stages["decode"].ops
                    if o.name in bounds and bounds[o.name] != o.bound]
        assert changed == expected
        seen += changed
    assert seen   # the linears turn compute-bound near batch 172 on the A100, 200 on the A6000


@pytest.mark.parametrize("stage, batch, seq", [("prefill", 4, 512), ("decode", 64, 4096)])
def test_crossover_markers_are_the_closed_forms(page, stage, batch, seq):
    """Each marker is the op's crossover solved with the other symbol left free, evaluated in
    the page at this view's settings: `crossover --solve batch` at this seq, and `--solve seq`
    at this batch, give the same values."""
    _view(page, batch, seq, 16, 16, 16, "nvidia-a100-80gb", stage)
    marks = page.eval_on_selector_all(
        "g.crossover", "els => els.map(e => [e.dataset.axis, e.dataset.op, "
                       "Number(e.dataset.value)])")
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    for axis in ("batch", "seq"):
        cli = model.crossover(axis, "nvidia-a100-80gb", stage, batch=batch, seq=seq)
        expected = {c.op: c.value for c in cli.ops if c.value is not None and c.value >= 1}
        shown = {op: v for a, op, v in marks if a == axis}
        assert set(shown) == set(expected), axis
        for op, value in shown.items():
            assert value == pytest.approx(expected[op], rel=1e-9), (axis, op)
    assert any(a == "seq" for a, _, _ in marks) or stage == "decode"
    page.select_option("#c-w_bits", "8")
    assert "solved at 16/16/16 bits" in page.inner_text("#live-markers")


@pytest.mark.parametrize("tokens, hw", [(4, "nvidia-a100-80gb"), (512, "nvidia-a6000")])
def test_the_step_stage_with_its_tokens(page, tokens, hw):
    """The step stage (`tokens` new per sequence over `seq` cached: speculative verification,
    chunked prefill) at the page's tokens control is `analyze --stage step --tokens`."""
    rows, total, _ = _view(page, 12, 3000, 16, 16, 8, hw, "step", tokens=tokens)
    cli = costdsl.load(MODELS / "llama-2-7b.arch").analyze(
        hw, batch=12, seq=3000, kv_bits=8, stages=["step"], tokens=tokens).stages["step"]
    assert [r[0] for r in rows] == [o.name for o in cli.ops]
    for (name, time_s, bound), o in zip(rows, cli.ops):
        assert float(time_s) == pytest.approx(o.time_s, rel=1e-9), name
        assert bound == o.bound, name
    assert total == pytest.approx(cli.total.time_s, rel=1e-9)


def test_compute_types_of_one_peak_share_one_roof_and_label(page):
    """The H100's datasheet gives fp16 and bf16 one peak (989.5 TFLOPS) and fp8 the sparse
    16-bit one (1,979 TFLOPS): one roof and one label each ("bf16, fp16 ridge ..."), not labels
    drawn over each other; every compute type of the file is named once."""
    from costdsl.hardware import load_hardware
    _view(page, 8, 1024, 16, 16, 16, "nvidia-h100-sxm", "decode")
    labels = page.eval_on_selector_all(
        "#live-roofline text", "els => els.map(e => e.textContent)")
    roofs = [t.rsplit(" ridge ", 1)[0].split(", ") for t in labels if " ridge " in t]
    peaks = load_hardware("nvidia-h100-sxm").peak
    named = [c for roof in roofs for c in roof]
    assert len(named) == len(set(named))
    for roof in roofs:
        assert len({peaks[c] for c in roof}) == 1
    assert len(roofs) == len(set(peaks[roof[0]] for roof in roofs))
    assert any({"fp16", "bf16"} <= set(roof) for roof in roofs)
    assert not page.errors
