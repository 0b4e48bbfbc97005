"""One self-contained HTML report: summary and memory, the op graph of each stage as SVG (nodes
coloured by bound; a click shows the op's formulas and numbers), the roofline chart, the per-op
table, the crossovers in closed form and the formula table.

No network and no script library: the graph and the chart are SVG written here, math is
presentation MathML from sympy's printer (rendered by Chromium and Firefox, MathML Core), and the
few lines of script (show an op's details, copy a formula's LaTeX) are inline.
"""
from __future__ import annotations

import html
import math

from ..analysis.formulas import COLUMNS
from . import printing
from .units import count, seconds, si

BOUND_COLOUR = {"memory": "#4e79a7", "compute": "#e15759", "link": "#f28e2b",
                "network": "#9c755f", "host": "#b07aa1"}

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td:first-child,th:first-child{text-align:left}
.node{cursor:pointer}.node:hover rect,.node.selected rect{stroke:#000;stroke-width:2}
.graphrow{display:flex;gap:1em;align-items:flex-start}
.details{border:1px solid #ccc;padding:.5em 1em;min-height:3em;min-width:320px;background:#fafafa;
position:sticky;top:1em}
.edge{stroke:#999;fill:none;marker-end:url(#arrow)}.edge.skip{stroke:#666;stroke-dasharray:4 3}
math{font-size:1.05em}math[data-latex]{cursor:copy}
.legend span{display:inline-block;padding:0 .6em;margin-right:.4em;color:#fff;border-radius:3px}
.note{color:#666;font-size:.85em}
"""

_SCRIPT = """
document.querySelectorAll('.node').forEach(function(n){
  n.addEventListener('click',function(){
    var stage=n.getAttribute('data-stage'),op=n.getAttribute('data-op');
    document.querySelectorAll('.node[data-stage="'+stage+'"]').forEach(function(m){
      m.classList.remove('selected');});
    n.classList.add('selected');
    var t=document.getElementById('op-'+stage+'-'+op);
    var d=document.getElementById('details-'+stage);
    d.innerHTML='';d.appendChild(t.content.cloneNode(true));
  });
});
document.addEventListener('click',function(e){
  var m=e.target.closest('math[data-latex]');
  if(m&&navigator.clipboard){navigator.clipboard.writeText(m.getAttribute('data-latex'));}
});
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _math(expr) -> str:
    """Presentation MathML of an expression, with its LaTeX for copying."""
    return (f'<math display="inline" data-latex="{_e(printing.latex(expr))}">'
            f"{printing.mathml(expr)}</math>")


def render(data: dict) -> str:
    """`data`: analysis (records.Analysis), formulas {stage: FormulaTable}, crossovers
    {stage: CrossoverAnswer or None}, edges {stage: [(producer, consumer)]}."""
    a = data["analysis"]
    parts = [f"<h1>{_e(a.model)} on {_e(a.hardware.name)}</h1>", _summary(a)]
    live = data.get("live")
    if live is not None:
        from . import live as live_report
        s = a.settings
        parts.append(live_report.section(live, {
            "batch": s.batch, "seq": s.seq, "w_bits": s.w_bits, "a_bits": s.a_bits,
            "kv_bits": s.kv_bits, "hw": a.hardware.key, "stage": next(iter(a.stages))}))
        parts.append('<p class="note">Below: the report at the settings it was written '
                     "with.</p>")
    for stage, result in a.stages.items():
        formulas = data["formulas"].get(stage)
        parts += [f'<h2 id="stage-{stage}">{_e(stage)}: {_e(result.description)}</h2>',
                  _legend({o.bound for o in result.ops}), '<div class="graphrow">',
                  _graph(stage, result, data["edges"][stage], formulas),
                  f'<div class="details" id="details-{stage}">Click an op of the graph for its '
                  "formulas and numbers.</div></div>",
                  "<h3>Roofline</h3>", _roofline(a, stage, result),
                  "<h3>Ops</h3>", _op_table(result),
                  "<h3>Crossovers in batch</h3>", _crossovers(data["crossovers"].get(stage)),
                  "<h3>Formulas</h3>", _formula_table(formulas)]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{_e(a.model)} on {_e(a.hardware.name)}: costdsl report</title>"
            f"<style>{_STYLE}</style></head><body>\n{body}\n"
            f'<p class="note">{_e(printing.MATH_LEGEND)}. Written by costdsl; no network needed.</p>'
            f"<script>{_SCRIPT}</script>"
            + (live_report.script() if live is not None else "") + "</body></html>\n")


def _summary(a) -> str:
    s, hw, m = a.settings, a.hardware, a.memory
    rows = [("batch", s.batch), ("seq", s.seq), ("bits (w/a/kv)",
                                                 f"{s.w_bits:g}/{s.a_bits:g}/{s.kv_bits:g}"),
            ("parameters", count(a.params_total)), ("passes", "; ".join(a.passes) or "none"),
            ("bandwidth", si(hw.bandwidth_Bps, "B/s")),
            ("time model", hw.time_model + (f" ({hw.stack}'s kernels)" if hw.stack else ""))]
    if a.devices and (a.devices.used > 1 or hw.count > 1):
        layout = ", ".join(f"{k}={v}" for k, v in a.devices.layout.items())
        rows.append(("devices", f"{a.devices.used} of {a.devices.count} ({layout}); figures "
                                "per device"))
    if m is not None:
        rows.append(("memory", f"weights {si(m.weights_bytes, 'B')} + KV "
                               f"{si(m.kv_cache_bytes, 'B')} + activations "
                               f"{si(m.activation_peak_bytes, 'B')} = {si(m.total_bytes, 'B')} "
                               f"of {si(m.capacity_bytes, 'B')}: "
                               + ("fits" if m.fits else "does not fit")))
    for stage, result in a.stages.items():
        rows.append((f"{stage} time", seconds(result.total.time_s)))
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="summary">{cells}</table>'


def _legend(bounds: set[str]) -> str:
    """A chip for each bound that occurs in the stage (a chip for a colour never drawn only
    puzzles the reader)."""
    return '<p class="legend">' + "".join(
        f'<span style="background:{c}">{_e(b)}-bound</span>' for b, c in BOUND_COLOUR.items()
        if b in bounds) + "</p>"


# --- the op graph ----------------------------------------------------------------------------------

BOX_W, BOX_H, GAP_X, GAP_Y = 150, 44, 40, 18
LINE_CHARS = 24  # characters of an op name per line of its box (font 10, 150 px)


def _layers(names: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """The longest-path depth of each op: a layered drawing in execution order."""
    depth = {n: 0 for n in names}
    incoming: dict[str, list[str]] = {n: [] for n in names}
    for src, dst in edges:
        incoming[dst].append(src)
    for n in names:  # names are in execution (topological) order
        depth[n] = max((depth[p] + 1 for p in incoming[n]), default=0)
    return depth


def _graph(stage: str, result, edges, formulas) -> str:
    names = [o.name for o in result.ops]
    depth = _layers(names, edges)
    rows: dict[int, list[str]] = {}
    for n in names:
        rows.setdefault(depth[n], []).append(n)
    pos = {}
    for level, members in rows.items():
        for i, n in enumerate(members):
            pos[n] = (20 + i * (BOX_W + GAP_X), 20 + level * (BOX_H + GAP_Y))
    width = 40 + max(len(m) for m in rows.values()) * (BOX_W + GAP_X)
    height = 40 + len(rows) * (BOX_H + GAP_Y)
    out = [f'<svg class="graph" id="graph-{stage}" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" '
           'markerHeight="6" orient="auto"><path d="M0,0L10,5L0,10z" fill="#999"/></marker>'
           "</defs>"]
    for src, dst in edges:
        out.append(_edge(pos[src], pos[dst], depth[dst] - depth[src] > 1))
    templates = []
    rows_by_op = {r.op: r for r in formulas.rows} if formulas else {}
    for o in result.ops:
        x, y = pos[o.name]
        repeat = f" ×{o.repeat}" if o.repeat != 1 else ""
        lines = _name_lines(o.name)
        names = "".join(f'<tspan x="{x + BOX_W / 2}" dy="{0 if i == 0 else 11}">{_e(t)}</tspan>'
                        for i, t in enumerate(lines))
        out.append(
            f'<g class="node" data-op="{_e(o.name)}" data-stage="{stage}" tabindex="0">'
            f"<title>{_e(o.name)} ({_e(o.kind)}, {_e(o.bound)}-bound, {seconds(o.time_s)})"
            f'</title><rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="5" '
            f'fill="{BOUND_COLOUR.get(o.bound, "#888")}"/>'
            f'<text x="{x + BOX_W / 2}" y="{y + (13 if len(lines) > 1 else 18)}" '
            f'text-anchor="middle" font-size="10" fill="#fff">{names}</text>'
            f'<text x="{x + BOX_W / 2}" y="{y + 38}" '
            f'text-anchor="middle" font-size="9" fill="#fff">{_e(o.kind)}{repeat} · '
            f"{seconds(o.time_s)}</text></g>")
        templates.append(_op_template(stage, o, rows_by_op.get(o.name)))
    out.append("</svg>")
    return "\n".join(out + templates)


def _edge(a: tuple[float, float], b: tuple[float, float], skip: bool) -> str:
    """An edge from the bottom of a box to the top of the next level's; an edge that skips
    levels (a residual) runs beside the column, through the gap right of the boxes, so that it
    is never hidden under the ops between."""
    (x1, y1), (x2, y2) = a, b
    if not skip:
        return (f'<path class="edge" d="M{x1 + BOX_W / 2},{y1 + BOX_H} C{x1 + BOX_W / 2},'
                f'{y1 + BOX_H + GAP_Y} {x2 + BOX_W / 2},{y2 - GAP_Y} {x2 + BOX_W / 2},{y2}"/>')
    lane = max(x1, x2) + BOX_W + GAP_X / 2
    return (f'<path class="edge skip" d="M{x1 + BOX_W},{y1 + BOX_H / 2} '
            f'C{lane},{y1 + BOX_H / 2} {lane},{y1 + BOX_H / 2} {lane},{y1 + BOX_H} '
            f'L{lane},{y2} C{lane},{y2 + BOX_H / 2} {lane},{y2 + BOX_H / 2} '
            f'{x2 + BOX_W},{y2 + BOX_H / 2}"/>')


def _name_lines(name: str) -> list[str]:
    """An op name on at most two lines of LINE_CHARS, broken after a '.', '+' or '[' (a fused
    op's `layers[q+k+v]`); a name longer than two lines keeps its ends around an ellipsis."""
    if len(name) <= LINE_CHARS:
        return [name]
    if len(name) > 2 * LINE_CHARS:
        half = LINE_CHARS - 1
        name = name[:half] + "…" + name[-half:]
    cut = max((i + 1 for i, c in enumerate(name[:LINE_CHARS]) if c in ".+[_"), default=LINE_CHARS)
    if len(name) - cut > LINE_CHARS:
        cut = len(name) - LINE_CHARS
    return [name[:cut], name[cut:]]


def _op_template(stage: str, o, row) -> str:
    numbers = [("kind", o.kind), ("occurrences", o.repeat), ("bound", o.bound),
               ("compute type", o.compute_type or "-"), ("operations", si(o.flops)),
               ("bytes", si(o.bytes, "B")), ("intensity", f"{o.intensity:.4g} ops/byte"),
               ("time", seconds(o.time_s)), ("share of the stage", f"{100 * o.share:.1f}%")]
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in numbers)
    formulas = ""
    if row is not None:
        formulas = "".join(f"<tr><th>{_e(name)}</th><td>{_math(expr)}</td></tr>"
                           for name, expr in zip(COLUMNS, row.cells))
    return (f'<template id="op-{stage}-{_e(o.name)}"><h4>{_e(o.name)}</h4>'
            f'<table class="op-formulas">{formulas}</table><table>{cells}</table></template>')


# --- the roofline chart --------------------------------------------------------------------------

CHART_W, CHART_H, PAD = 640, 400, 50


def _roofline(a, stage: str, result) -> str:
    hw = a.hardware
    ops = [o for o in result.ops if o.compute_type and o.intensity > 0 and o.attainable > 0]
    peaks = sorted(set(hw.peak.values()))
    xs = [o.intensity for o in ops] + [p / hw.bandwidth_Bps for p in peaks]
    ys = [o.attainable for o in ops] + peaks
    x0, x1 = math.log10(min(xs + [0.1]) / 2), math.log10(max(xs) * 4)
    y0, y1 = math.log10(min(ys) / 4), math.log10(max(ys) * 2)
    px = lambda v: PAD + (math.log10(v) - x0) / (x1 - x0) * (CHART_W - 2 * PAD)
    py = lambda v: CHART_H - PAD - (math.log10(v) - y0) / (y1 - y0) * (CHART_H - 2 * PAD)
    out = [f'<svg class="roofline" width="{CHART_W}" height="{CHART_H}" '
           f'xmlns="http://www.w3.org/2000/svg">',
           f'<rect x="{PAD}" y="{PAD}" width="{CHART_W - 2 * PAD}" height="{CHART_H - 2 * PAD}" '
           'fill="none" stroke="#ccc"/>']
    lo = 10 ** x0
    for peak in peaks:
        ridge = peak / hw.bandwidth_Bps
        start = max(lo, 10 ** y0 / hw.bandwidth_Bps)
        out.append(f'<polyline fill="none" stroke="#555" points="{px(start)},'
                   f'{py(start * hw.bandwidth_Bps)} {px(ridge)},{py(peak)} {px(10 ** x1)},'
                   f'{py(peak)}"/>')
        ctype = ", ".join(c for c, v in hw.peak.items() if v == peak)   # one roof, its types
        out.append(f'<text x="{px(ridge) + 4:.1f}" y="{py(peak) - 3:.1f}" font-size="9" '
                   f'fill="#555">{_e(ctype)} {si(peak, "OP/s")}, ridge {ridge:.4g}</text>')
    for o in ops:
        out.append(f'<circle cx="{px(o.intensity):.1f}" cy="{py(o.attainable):.1f}" r="4" '
                   f'fill="{BOUND_COLOUR.get(o.bound, "#888")}"><title>{_e(o.name)}: '
                   f'{o.intensity:.3g} ops/byte, {si(o.attainable, "OP/s")}</title></circle>')
    for (x, y), names in _point_labels(ops, px, py):  # below the point: ceilings sit above
        out.append(f'<text x="{x + 5:.1f}" y="{y + 13:.1f}" font-size="10" fill="#222">'
                   f'{_e(names)}</text>')
    for decade in range(math.ceil(x0), math.floor(x1) + 1):
        out.append(f'<text x="{px(10 ** decade)}" y="{CHART_H - PAD + 15}" font-size="10" '
                   f'text-anchor="middle">1e{decade}</text>')
    for decade in range(math.ceil(y0), math.floor(y1) + 1):
        out.append(f'<text x="{PAD - 5}" y="{py(10 ** decade)}" font-size="10" '
                   f'text-anchor="end">1e{decade}</text>')
    out.append(f'<text x="{CHART_W / 2}" y="{CHART_H - 10}" font-size="11" '
               'text-anchor="middle">intensity (operations / byte)</text>')
    out.append(f'<text x="12" y="{CHART_H / 2}" font-size="11" text-anchor="middle" '
               f'transform="rotate(-90 12 {CHART_H / 2})">operations / s</text></svg>')
    return "\n".join(out)


LABELLED = 6  # ops of the largest shares named on the chart (the rest in their tooltips)


def _point_labels(ops, px, py) -> list[tuple[tuple[float, float], str]]:
    """Labels for the points of the ops with the largest shares: ops drawn at the same place
    share one label ("q, k, v"), and a label that would overlap one already placed is left
    out."""
    top = sorted(ops, key=lambda o: -o.share)[:LABELLED]
    groups: dict[tuple[float, float], list[str]] = {}
    for o in top:
        at = (round(px(o.intensity)), round(py(o.attainable)))
        groups.setdefault(at, []).append(o.name.rsplit(".", 1)[-1])
    placed, out = [], []
    for (x, y), names in groups.items():
        text = ", ".join(names)
        box = (x + 5, y + 3, x + 5 + 6 * len(text), y + 15)
        if any(not (box[2] < b[0] or b[2] < box[0] or box[3] < b[1] or b[3] < box[1])
               for b in placed):
            continue
        placed.append(box)
        out.append(((x, y), text))
    return out


# --- tables ----------------------------------------------------------------------------------------

def _op_table(result) -> str:
    head = ("op", "kind", "×", "type", "ops", "bytes", "ops/byte", "bound", "time", "share")
    rows = ["<tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for o in result.ops:
        cells = (o.name, o.kind, o.repeat, o.compute_type or "-", si(o.flops), si(o.bytes, "B"),
                 f"{o.intensity:.4g}", o.bound, seconds(o.time_s), f"{100 * o.share:.1f}%")
        rows.append("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in cells) + "</tr>")
    return f'<table class="ops">{"".join(rows)}</table>'


def _crossovers(answer) -> str:
    if answer is None:
        return '<p class="note">not computed for this stage</p>'
    rows = ["<tr><th>op</th><th>batch where the bound changes</th><th>value</th>"
            "<th>direction</th></tr>"]
    for c in answer.ops:
        if c.expression is None:
            rows.append(f"<tr><td>{_e(c.op)}</td><td colspan=3>{_e(c.reason or '')}</td></tr>")
            continue
        value = f"{c.value:.6g}" if c.value is not None else "-"
        rows.append(f"<tr><td>{_e(c.op)}</td><td>{_math(c.expression)}</td><td>{value}</td>"
                    f"<td>{_e(c.direction or '')}</td></tr>")
    first = answer.summary.first_compute_bound
    note = (f"<p>First op to turn compute-bound: {_e(first.op)} at batch {first.value:.6g}.</p>"
            if first is not None and first.value is not None else "")
    return note + f'<table class="crossovers">{"".join(rows)}</table>'


def _formula_table(table) -> str:
    if table is None:
        return ""
    head = "<tr><th>op</th><th>×</th>" + "".join(f"<th>{_e(c)}</th>" for c in COLUMNS) + "</tr>"
    rows = [head]
    for r in list(table.rows) + [table.per_layer, table.per_model]:
        rows.append(f"<tr><td>{_e(r.op)}</td><td>{_math(r.repeat)}</td>" +
                    "".join(f"<td>{_math(c)}</td>" for c in r.cells) + "</tr>")
    return f'<table class="formulas">{"".join(rows)}</table>'
