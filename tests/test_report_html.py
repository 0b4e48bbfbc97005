"""The HTML report and the notebook forms: structure checked by parsing, and the real thing
driven in headless Chromium (Debian's `chromium`, through Playwright pointed at it: Playwright's
own browser download is not needed, and it waits for rendering and clicks like a user)."""
import shutil
from html.parser import HTMLParser

import pytest

import costdsl
from costdsl.cli import main

from conftest import MODELS

HW = "nvidia-a100-80gb"


class Collect(HTMLParser):
    """Tags with their attributes, in order."""
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parsed(text):
    c = Collect()
    c.feed(text)
    return c.tags


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "report.html"
    assert main(["report", str(MODELS / "llama-2-7b.arch"), "--hw", HW, "--batch", "8", "--seq",
                 "1024", "-o", str(path)]) == 0
    return path


def test_report_is_self_contained_with_one_node_per_op(report):
    text = report.read_text()
    tags = parsed(text)
    # nothing fetched: no external script, style sheet, image or font
    assert not [t for t, a in tags if t in ("link", "img", "iframe")]
    assert not [a for t, a in tags if t == "script" and "src" in a]
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    for stage in ("prefill", "decode"):
        nodes = [a["data-op"] for t, a in tags if t == "g" and a.get("data-stage") == stage]
        assert nodes == [n for n in model.graph(stage).nodes] or \
            sorted(nodes) == sorted(model.graph(stage).nodes)
        templates = [a["id"] for t, a in tags if t == "template"
                     and a["id"].startswith(f"op-{stage}-")]
        assert len(templates) == len(nodes)
    maths = [a for t, a in tags if t == "math"]
    assert maths and all("data-latex" in a for a in maths)


def test_notebook_forms_parse_and_carry_math():
    m = costdsl.load(MODELS / "llama-2-7b.arch")
    for record in (m.analyze(HW, batch=1, seq=256), m.crossover("batch", HW),
                   m.formulas("decode"), m.latency(HW, 1, 256, 16), m.fit(HW, seq=1024),
                   m.with_passes(["fuse_all()"]).compare(HW, 1, 256)):
        tags = parsed(record._repr_html_())
        assert any(t == "table" for t, _ in tags), type(record).__name__
    crossover = m.crossover("batch", HW)
    q = next(c for c in crossover.ops if c.op == "layers.q")
    assert q._repr_latex_().startswith("$batch = ")
    assert any(t == "math" for t, _ in parsed(crossover._repr_html_()))


def _browser():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def test_report_in_a_real_browser(report, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); .ci/run "
                    "installs it")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed "
                                     "(pip install -e '.[test]')")
    ops = len(costdsl.load(MODELS / "llama-2-7b.arch").graph("decode"))
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = b.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(report.as_uri())
        nodes = page.locator('.node[data-stage="decode"]')
        assert nodes.count() == ops
        page.locator('.node[data-stage="decode"][data-op="layers.q"]').click()
        details = page.locator("#details-decode")
        assert "layers.q" in details.inner_text() and "operations" in details.inner_text()
        box = details.locator("math").first.bounding_box()
        assert box and box["width"] > 0 and box["height"] > 0   # MathML laid out, not raw text
        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot))
        b.close()
    assert shot.stat().st_size > 10_000


@pytest.mark.parametrize("fmt", ["dot", "graphml", "json"])
def test_graph_export_round_trips(fmt, tmp_path):
    import json
    import networkx as nx
    path = tmp_path / f"g.{fmt}"
    assert main(["graph", str(MODELS / "mixtral-8x7b.arch"), "--stage", "prefill", "--format",
                 fmt, "-o", str(path)]) == 0
    original = costdsl.load(MODELS / "mixtral-8x7b.arch").graph("prefill")
    text = path.read_text()
    if fmt == "graphml":
        g = nx.read_graphml(path)
    elif fmt == "json":
        g = nx.node_link_graph(json.loads(text), edges="edges")
    else:
        assert text.startswith("digraph") and text.rstrip().endswith("}")
        assert text.count(" -> ") == original.number_of_edges()
        if shutil.which("dot"):
            import subprocess
            subprocess.run(["dot", "-Tsvg", str(path), "-o", str(tmp_path / "g.svg")], check=True)
        return
    assert set(g.nodes) == set(original.nodes) and g.number_of_edges() == original.number_of_edges()
    assert g.nodes["layers.moe.gate"]["kind"] == "expert_linear"
    assert "b" in g.nodes["layers.attn_norm"]["operations"]   # a formula in the batch


def test_a_crossover_below_one_sequence_is_said_so(report):
    """Prefill's linears at 1,024 tokens switch at batch 0.168: the report says they are
    compute-bound for every batch, and no crossover cell shows a batch below one."""
    import re
    text = report.read_text()
    assert "it switches at batch = 0.168, below 1: compute-bound for every batch" in text
    values = [float(v) for v in re.findall(r"</math></td><td>([0-9.e+-]+)</td>", text)]
    assert values and min(values) >= 1


def test_the_static_roofline_names_every_compute_type_of_a_roof(tmp_path):
    """The H100's fp16 and bf16 share a peak (989.5 TFLOPS, datasheet): the chart draws that
    roof once and its label names both (it named the first alone)."""
    import re
    path = tmp_path / "h100.html"
    assert main(["report", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-h100-sxm",
                 "--batch", "8", "--seq", "1024", "-o", str(path)]) == 0
    labels = re.findall(r'<text[^>]*fill="#555">([^<]*ridge[^<]*)</text>', path.read_text())
    assert any(re.match(r"(fp16, bf16|bf16, fp16) 990 TOP/s", t) for t in labels), labels
