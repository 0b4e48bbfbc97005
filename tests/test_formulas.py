"""Formula tables: golden files pin the human form; LaTeX must be well formed."""
import re
import shutil
import subprocess

import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.report.formula_tables import FORMATS

from conftest import DATA, MODELS

KEEP = ["hidden", "ffn", "heads", "layers"]


@pytest.mark.parametrize("model", ["llama-2-7b", "llama-3-8b"])
def test_markdown_matches_golden_file(model):
    m = costdsl.load(MODELS / f"{model}.arch")
    tables = [m.formulas(stage, KEEP) for stage in ("prefill", "decode")]
    golden = (DATA / "golden" / f"formulas-{model}.md").read_text()
    assert FORMATS["markdown"](tables) == golden


def test_decode_linear_reads_as_the_textbook_formula():
    """Decode q projection with hidden kept: operations 2 b hidden^2, weight bytes
    hidden^2 w_bits / 8, activation bytes 2 x b hidden a_bits / 8 (input and output)."""
    table = costdsl.load(MODELS / "llama-2-7b.arch").formulas("decode", ["hidden"])
    q = next(r for r in table.rows if r.op == "layers.q")
    hidden = S.model_param("hidden")
    ops, w, a, kv, intensity = q.cells
    assert ops == 2 * S.batch * hidden**2
    assert w == hidden**2 * S.w_bits / 8
    assert sympy.simplify(a - S.batch * hidden * S.a_bits / 4) == 0
    assert kv == 0
    text = FORMATS["text"]([table])
    assert "2·b·hidden^2" in text


def test_per_model_total_equals_sum_of_repeated_ops():
    table = costdsl.load(MODELS / "llama-3-8b.arch").formulas("prefill", KEEP)
    total = sum(r.repeat * r.cells[0] for r in table.rows)
    assert sympy.simplify(table.per_model.cells[0] - total) == 0


def _latex():
    m = costdsl.load(MODELS / "llama-3-8b.arch")
    return FORMATS["latex"]([m.formulas(s, KEEP) for s in ("prefill", "decode")])


def test_latex_is_balanced_and_escaped():
    tex = _latex()
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 2
    body = "\n".join(l for l in tex.splitlines() if not l.startswith("%"))
    assert body.count("{") == body.count("}")
    for line in body.splitlines():
        assert line.count("$") % 2 == 0, line
        outside_math = re.sub(r"\$[^$]*\$", "", line)
        assert not re.search(r"(?<!\\)[_&%#]", outside_math.replace(" & ", " ")), line
    assert r"\texttt{layers.attn\_norm}" in tex


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")
def test_latex_compiles(tmp_path):
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\\usepackage[a0paper,landscape]{geometry}"
                   "\\begin{document}\\tiny\n" + _latex() + "\n\\end{document}\n")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", doc.name],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]


def test_keep_unknown_parameter_is_an_error():
    with pytest.raises(costdsl.CostDSLError, match="no parameter 'hiden'"):
        costdsl.load(MODELS / "llama-2-7b.arch").formulas("decode", ["hiden"])
