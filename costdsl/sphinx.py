"""A Sphinx extension: costdsl's tables inserted at build time.

    extensions = ["costdsl.sphinx"]

    .. costdsl-formulas:: models/llama-3-8b.arch
       :stage: decode
       :keep: hidden,ffn

    .. costdsl-crossover:: models/llama-3-8b.arch
       :hw: nvidia-h100-sxm
       :stage: decode
       :solve: batch
       :seq: 2048

Paths are relative to the document (then to Sphinx's source directory); math is MathML in
HTML (the browser renders it: an offline build needs no MathJax from a CDN) and LaTeX in PDF. A
model the directive cannot compile is a located Sphinx warning, not a crash. The extension also
registers the `.arch` Pygments lexer, so that `.. code-block:: arch` highlights.
"""
from __future__ import annotations

from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives

from .analysis.formulas import COLUMNS
from .api import load
from .errors import CostDSLError
from .report import printing
from .version import __version__


def _table(header: list[str], rows: list[list]) -> nodes.table:
    """A docutils table; a cell is text, or a sympy expression (rendered as math)."""
    table = nodes.table(classes=["costdsl"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group += [nodes.colspec(colwidth=1) for _ in header]
    head = nodes.thead()
    head += _row(header)
    body = nodes.tbody()
    body += [_row(r) for r in rows]
    group += [head, body]
    return table


def _math(expr) -> list[nodes.Node]:
    """The formula as MathML for HTML (rendered by the browser itself: no MathJax, so an
    offline build shows math, not raw \\(...\\)) and as LaTeX for PDF; other builders get
    the LaTeX text."""
    latex = printing.latex(expr)
    return [nodes.raw("", f'<span class="math costdsl-math"><math display="inline">'
                          f"{printing.mathml(expr)}</math></span>", format="html"),
            nodes.raw("", f"${latex}$", format="latex"),
            nodes.raw("", latex, format="text")]


def _row(cells) -> nodes.row:
    row = nodes.row()
    for cell in cells:
        entry = nodes.entry()
        if isinstance(cell, str):
            entry += nodes.paragraph(text=cell)
        else:
            paragraph = nodes.paragraph()
            paragraph += _math(cell)
            entry += paragraph
        row += entry
    return row


class _CostDSLDirective(Directive):
    required_arguments = 1
    has_content = False

    def _model_path(self) -> Path | str:
        """The argument as a path on disk (absolute, beside the document, or under the
        source directory), else as given: a shipped model's name."""
        env = self.state.document.settings.env
        given = Path(self.arguments[0])
        if given.is_absolute() and given.is_file():
            env.note_dependency(str(given))
            return given
        relative, absolute = env.relfn2path(self.arguments[0])
        if Path(absolute).is_file():
            env.note_dependency(relative)
            return Path(absolute)
        return self.arguments[0]

    def run(self):
        try:
            return self.build(self._model_path())
        except CostDSLError as err:
            return [self.state.document.reporter.warning(
                f"costdsl: {err}", line=self.lineno)]


class FormulasDirective(_CostDSLDirective):
    option_spec = {"stage": directives.unchanged, "keep": directives.unchanged}

    def build(self, path: Path | str):
        stage = self.options.get("stage", "decode")
        keep = [k.strip() for k in self.options.get("keep", "").split(",") if k.strip()]
        table = load(path).formulas(stage, keep)
        rows = [[r.op, r.repeat, *r.cells] for r in table.rows]
        rows += [[r.op, r.repeat, *r.cells] for r in (table.per_layer, table.per_model)]
        return [_table(["op", "×", *COLUMNS], rows)]


class CrossoverDirective(_CostDSLDirective):
    option_spec = {"hw": directives.unchanged_required, "stage": directives.unchanged,
                   "solve": directives.unchanged, "batch": directives.positive_int,
                   "seq": directives.positive_int}

    def build(self, path: Path | str):
        if "hw" not in self.options:
            raise CostDSLError("costdsl-crossover needs :hw: (a shipped name or a .toml file)")
        solve = self.options.get("solve", "batch")
        answer = load(path).crossover(solve, self.options["hw"],
                                      self.options.get("stage", "decode"),
                                      batch=self.options.get("batch", 1),
                                      seq=self.options.get("seq", 2048))
        rows = []
        for c in answer.ops:
            if c.expression is None:
                rows.append([c.op, c.reason or "", "-", ""])
            else:
                rows.append([c.op, c.expression, f"{c.value:.6g}" if c.value is not None
                             else "-", c.direction or ""])
        return [_table(["op", f"{solve} where the bound changes", "value", "direction"], rows)]


def setup(app):
    app.add_directive("costdsl-formulas", FormulasDirective)
    app.add_directive("costdsl-crossover", CrossoverDirective)
    from .pygments_lexer import ArchLexer
    app.add_lexer("arch", ArchLexer)
    return {"version": __version__, "parallel_read_safe": True, "parallel_write_safe": True}
