"""Formula tables in text, Markdown (GitHub, $...$ math), LaTeX (a plain `tabular`) and JSON."""
from __future__ import annotations


from ..analysis.formulas import COLUMNS, FormulaRow, FormulaTable
from . import printing
from .jsonsafe import dumps


def _rows(table: FormulaTable) -> list[FormulaRow]:
    return list(table.rows) + [table.per_layer, table.per_model]


def _kept(tables: list[FormulaTable]) -> str:
    kept = tables[0].kept if tables else ()
    return ("free model parameters: " + ", ".join(kept)) if kept else "all model parameters bound"


def text(tables: list[FormulaTable]) -> str:
    out = [printing.LEGEND, _kept(tables)]
    for t in tables:
        out += ["", f"{t.stage}:"]
        for row in _rows(t):
            times = f" (x {printing.text(row.repeat)})" if row.repeat != 1 else ""
            out.append(f"  {row.op}{times}")
            for name, cell in zip(COLUMNS, row.cells):
                out.append(f"    {name:17s} {printing.text(cell)}")
    return "\n".join(out) + "\n"


def markdown(tables: list[FormulaTable]) -> str:
    out = [printing.MATH_LEGEND + ".", "", _kept(tables) + "."]
    for t in tables:
        out += ["", f"### {t.stage}", "",
                "| op | kind | x | " + " | ".join(COLUMNS) + " |",
                "|---|---|---:|" + "---|" * len(COLUMNS)]
        for row in _rows(t):
            name = f"**{row.op}**" if not row.kind else f"`{row.op}`"
            cells = " | ".join(f"${printing.latex(c)}$" for c in row.cells)
            out.append(f"| {name} | {row.kind} | ${printing.latex(row.repeat)}$ | {cells} |")
    return "\n".join(out) + "\n"


def latex(tables: list[FormulaTable]) -> str:
    """One `tabular` per stage; needs only plain LaTeX (no packages)."""
    out = [f"% {printing.MATH_LEGEND}", f"% {_kept(tables)}"]
    for t in tables:
        out += [f"% stage: {t.stage}",
                r"\begin{tabular}{l l r " + "l " * len(COLUMNS) + "}", r"\hline",
                "op & kind & $\\times$ & " + " & ".join(COLUMNS) + r" \\", r"\hline"]
        for row in _rows(t):
            if not row.kind:
                out.append(r"\hline")
            cells = " & ".join(f"${printing.latex(c)}$" for c in row.cells)
            op = r"\texttt{" + printing.latex_escape(row.op) + "}"
            out.append(f"{op} & {printing.latex_escape(row.kind)} & "
                       f"${printing.latex(row.repeat)}$ & {cells} \\\\")
        out += [r"\hline", r"\end{tabular}", ""]
    return "\n".join(out)


def json_text(tables: list[FormulaTable]) -> str:
    def cell(e):
        return {"text": printing.text(e), "latex": printing.latex(e), "sympy": str(e)}
    data = {"kept": list(tables[0].kept) if tables else [], "stages": {
        t.stage: [{"op": r.op, "kind": r.kind, "repeat": cell(r.repeat),
                   **{name.replace(" ", "_"): cell(c) for name, c in zip(COLUMNS, r.cells)}}
                  for r in _rows(t)] for t in tables}}
    return dumps(data)


FORMATS = {"text": text, "markdown": markdown, "latex": latex, "json": json_text}
