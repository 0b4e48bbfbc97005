"""Notebook display: `_repr_html_` on the result records (and `_repr_latex_` where one expression
is the answer), so that a Jupyter cell ending in `model.crossover(...)` shows a table with
rendered math. The records live in the analysis stage, which must not import reports; the
methods are attached here, by the package when it is imported (`install`: a few milliseconds
of start-up, so it imports nothing the records do not already need)."""
from __future__ import annotations

from ..analysis.capacity import Fit
from ..analysis.compare import Comparison
from ..analysis.crossover import Crossover, CrossoverAnswer
from ..analysis.formulas import FormulaTable
from ..analysis.latency import Latency
from ..analysis.records import Analysis
from . import printing
from .html import _crossovers, _e, _formula_table, _math, _op_table, _summary
from .units import seconds


def _rows(pairs) -> str:
    return "<table>" + "".join(f"<tr><th>{_e(k)}</th><td>{v}</td></tr>" for k, v in pairs) + \
        "</table>"


def analysis_html(a: Analysis) -> str:
    parts = [f"<h4>{_e(a.model)} on {_e(a.hardware.name)}</h4>", _summary(a)]
    for stage, result in a.stages.items():
        parts += [f"<h5>{_e(stage)}</h5>", _op_table(result)]
    return "".join(parts)


def crossover_html(c: CrossoverAnswer) -> str:
    bound = ", ".join(f"{k}={v:g}" for k, v in c.bound.items())
    head = f"<h4>{_e(c.stage)}: crossovers in {_e(c.symbol.name)} ({_e(bound)})</h4>"
    return head + _crossovers(c).replace("batch where", f"{_e(c.symbol.name)} where")


def formulas_html(t: FormulaTable) -> str:
    return f"<h4>{_e(t.stage)} formulas</h4>" + _formula_table(t)


def latency_html(l: Latency) -> str:
    return _rows([("TTFT", _e(seconds(l.ttft_s))), ("TPOT", _e(seconds(l.tpot_s))),
                  ("end to end", _e(seconds(l.e2e_s))),
                  ("tokens/s", _e(f"{l.tokens_per_s:,.1f}")),
                  ("request time in gen", _math(l.request_total))])


def fit_html(f: Fit) -> str:
    pairs = [("largest batch at seq", _e(f.max_batch)),
             ("longest context at batch", _e(f.max_seq if f.max_seq is not None else "-")),
             ("memory per sequence", _math(f.per_sequence))]
    if f.kv_crossover is not None:
        pairs.append(("context where KV = weights", _math(f.kv_crossover)))
    return _rows(pairs)


def comparison_html(c: Comparison) -> str:
    rows = ["<tr><th>stage</th><th>before</th><th>after</th><th>speedup</th></tr>"]
    for stage in c.after.stages:
        b, a = c.before.stages[stage].total.time_s, c.after.stages[stage].total.time_s
        rows.append(f"<tr><td>{_e(stage)}</td><td>{_e(seconds(b))}</td><td>{_e(seconds(a))}"
                    f"</td><td>{b / a:.3g}x</td></tr>" if a else "")
    return "<table>" + "".join(rows) + "</table>"


def crossover_latex(c: Crossover) -> str | None:
    if c.expression is None:
        return None
    return f"${c.symbol.name} = {printing.latex(c.expression)}$"


def latency_latex(l: Latency) -> str:
    return f"$T(g) = {printing.latex(l.request_total)}$"


def _fit_text(f: Fit) -> str:
    seq = "unbounded" if f.max_seq is None else f"{f.max_seq:,}"
    return (f"largest batch at seq {f.seq}: {f.max_batch}; longest context at batch {f.batch}: "
            f"{seq}; weights {f.weights_bytes:.4g} B of {f.capacity_bytes:.4g} B\n")


def _texts():
    """The plain-text form of each record: what `print(record)` shows (the CLI's text)."""
    from . import comparison, formula_tables, tables
    from .answers import crossover_text, latency_text
    return ((Analysis, tables.text), (CrossoverAnswer, lambda c: crossover_text([c])),
            (FormulaTable, lambda t: formula_tables.text([t])), (Latency, latency_text),
            (Fit, _fit_text), (Comparison, comparison.text))


def _short(text_of):
    """A one-line repr: the record's kind and the first line of its text (a REPL echoing a
    record shows this, not a 16,000-character dataclass dump; print() shows the whole text)."""
    def short(record) -> str:
        lines = text_of(record).strip().splitlines()
        return f"<{type(record).__name__}: {lines[0] if lines else ''}>"
    return short


def install() -> None:
    """Give the records their notebook forms and their printed forms."""
    for cls, fn in ((Analysis, analysis_html), (CrossoverAnswer, crossover_html),
                    (FormulaTable, formulas_html), (Latency, latency_html), (Fit, fit_html),
                    (Comparison, comparison_html)):
        cls._repr_html_ = fn
    for cls, text_of in _texts():
        cls.__str__ = text_of
        cls.__repr__ = _short(text_of)
    Crossover._repr_latex_ = crossover_latex
    Latency._repr_latex_ = latency_latex

