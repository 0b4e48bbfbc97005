"""Calibration and validation answers as text, JSON, and a calibrated hardware file."""
from __future__ import annotations

from ..analysis.calibration import Fit, is_duration
from ..analysis.validation import ErrorTable
from ..hardware.efficiency import (EXPERT_FAMILIES, MLA_DECODE, MLA_KV8, MLA_PREFILL,
                                   SPLIT_FAMILIES)
from .units import seconds


TIME_MODEL = ("Time = max(ops / (compute x peak), memory, floor) + launch + (input_bytes x "
              "inputs + output_bytes x outputs) / (bandwidth x datasheet bandwidth) + one_row at "
              "one row + k_latency x a GEMM's k + split_k where a GEMM's k / its tiles > "
              "split_depth; memory = bytes / (bandwidth x datasheet "
              "bandwidth) x max(1, rows / the op's rows, tiles / a GEMM's tiles), or "
              "split_launch + bytes / (split_bandwidth x datasheet bandwidth) where that is less "
              "(compute + memory, not their max, where overlap = false).")
"""The model a calibrated section's figures belong to, in its header (roofline.OpRoofline)."""


def _value(p) -> str:
    if p.name.endswith(".rows"):
        return f"{p.value:g} (the SM count: one block per row)"
    if p.name.endswith(".overlap"):
        return "false (memory time adds to compute time)"
    if p.name.endswith(".input_bytes"):
        return f"{p.value:g} bytes per input element (chosen)"
    if p.name.endswith(".output_bytes"):
        return f"{p.value:g} bytes per output element (chosen)"
    if p.name.endswith(".split_depth"):
        return f"{p.value:g} elements of k per output tile split it (chosen)"
    if p.name.endswith(".tiles"):
        return f"{p.value:g} GEMM tiles fill the chip (chosen)"
    if is_duration(p.name):
        shown = seconds(p.value)
        return shown + (f" ± {seconds(p.stderr)}" if p.stderr is not None else "")
    return f"{p.value:.4f}" + (f" ± {p.stderr:.4f}" if p.stderr is not None else "")


def fit_text(hw_name: str, fit: Fit, before: ErrorTable, after: ErrorTable) -> str:
    lines = [f"calibrated {hw_name} on {fit.rows} measured rows ({fit.rounds} rounds of bound "
             "assignment):", ""]
    width = max([8] + [len(p.name) for p in fit.parameters] + [len(n) for n in fit.unidentified])
    for p in fit.parameters:
        lines.append(f"  {p.name:{width}s}  {_value(p):24s} ({p.rows} rows)")
    for name in fit.unidentified:
        lines.append(f"  {name:{width}s}  not identifiable: no measured op is bound by it; "
                     "left at the datasheet figure")
    for family, rows in fit.underdetermined.items():
        lines.append(f"  {family + '.*':{width}s}  not identifiable: {rows} measured row"
                     f"{'s' if rows > 1 else ''} for more figures of its own; left out of the "
                     "fit, its ops take the top-level figures")
    lines += ["", "error against these rows (the fit's own data; `costdsl validate --folds` "
              "judges held-out rows):"]
    lines += error_lines(("ideal", before), ("calibrated", after))
    return "\n".join(lines) + "\n"


def error_lines(*tables: tuple[str, ErrorTable]) -> list[str]:
    """Mean and max absolute percentage error by op kind and stage, one column per model."""
    names = [n for n, _ in tables]
    first = tables[0][1]
    groups = (("by op kind", "by_kind"), ("by stage", "by_stage"), ("by compute type", "by_type"))
    labels = {(key, g): f"{g} ({count})" for _, key in groups
              for g, (_, _, count) in getattr(first, key).items()}
    width = max([22] + [len(label) + 1 for label in labels.values()])   # the label column
    head = "  " + " " * (width + 2) + "".join(f"{n + ' MAPE / max':>32s}" for n in names)
    lines = [head]
    for title, key in groups:
        lines.append(f"  {title}:")
        for group in getattr(first, key):
            cells = "".join(f"{getattr(t, key)[group][0]:>21.1f}% /{getattr(t, key)[group][1]:>7.1f}%"
                            for _, t in tables)
            lines.append(f"    {labels[key, group]:{width}s}{cells}")
    cells = "".join(f"{t.overall_mape:>21.1f}% /{t.overall_max:>7.1f}%" for _, t in tables)
    lines.append(f"  {'all rows':{width + 2}s}{cells}")
    if first.summed is not None:
        cells = "".join(f"{t.summed[0]:>21.1f}% /{t.summed[1]:>7.1f}%" for _, t in tables)
        lines.append(f"  {'summed per configuration':{width + 2}s}{cells}")
        lines.append(f"    ({first.summed[2]} configurations with several ops measured: the "
                     "error of their total time)")
    return lines


def error_dict(t: ErrorTable) -> dict:
    return {"mape_percent": t.overall_mape, "max_percent": t.overall_max,
            "by_kind": {k: {"mape_percent": v[0], "max_percent": v[1], "rows": v[2]}
                        for k, v in t.by_kind.items()},
            "by_stage": {k: {"mape_percent": v[0], "max_percent": v[1], "rows": v[2]}
                         for k, v in t.by_stage.items()},
            "by_compute_type": {k: {"mape_percent": v[0], "max_percent": v[1], "rows": v[2]}
                                for k, v in (t.by_type or {}).items()},
            "summed": None if t.summed is None else {
                "mape_percent": t.summed[0], "max_percent": t.summed[1],
                "configurations": t.summed[2]}}


def fit_dict(hw_key: str, fit: Fit, before: ErrorTable, after: ErrorTable) -> dict:
    return {"hardware": hw_key, "rows": fit.rows,
            "parameters": {p.name: {"value": p.value, "stderr": p.stderr, "rows": p.rows}
                           for p in fit.parameters},
            "unidentified": list(fit.unidentified),
            "underdetermined": dict(fit.underdetermined),
            "errors": {"ideal": error_dict(before), "calibrated": error_dict(after)}}


_OUR_COMMENT = "# Calibrated by `costdsl calibrate`"


def calibrated_toml(original: str, fit: Fit, measurements: str, after: ErrorTable,
                    hw_key: str, held_out: ErrorTable | None = None, stack: str = "",
                    into_stack: str | None = None) -> str:
    """The hardware file's text with its [efficiency] section (re)written from the fit; with
    `into_stack` a stack's name, its [stack.NAME] instead (the default stack left as it is).
    `stack` is written as the figures' `stack` (name and version).

    Edited with a TOML library (tomlkit), not line by line: whatever form the old section has
    (headers with comments, an [efficiency.tile], an inline `efficiency = {...}`, dotted keys)
    it is removed whole, the rest of the file keeps its comments, and the result loads back."""
    import tomlkit
    doc = tomlkit.parse(original)
    if into_stack is None:
        old = doc.get("efficiency")
    else:
        stacks = doc.get("stack")
        old = stacks.get(into_stack) if stacks is not None else None
    e = fit.efficiency
    kept = _kept_tables(old, set(e.kinds))
    by = {p.name: p for p in fit.parameters}

    def note(name):
        p = by.get(name)
        return f"fitted: {_value(p)}, {p.rows} rows" if p else "not identifiable here"

    def put(table, key, value, comment):
        item = tomlkit.item(value)   # an item, so that a bool carries its comment too
        item.comment(comment)
        table.add(key, item)

    judged = (f"held-out MAPE {held_out.overall_mape:.1f}%" if held_out else
              f"MAPE {after.overall_mape:.1f}% on the fit's own rows")
    section = tomlkit.table()
    header = [f"{_OUR_COMMENT[2:]} from {measurements}",
              f"({fit.rows} rows; {judged}). {TIME_MODEL}"]
    if into_stack is not None:   # a stack's table carries its own account, first inside it
        for line in header:
            section.add(tomlkit.comment(line))
    put(section, "bandwidth", round(e.bandwidth, 4), note("bandwidth"))
    put(section, "launch", f"{e.launch_s * 1e6:.2f} us", note("launch"))
    put(section, "measured_as", hw_key, "the hardware the measurement rows name")
    if stack:   # the file's own account of the stack, where it names the same one
        put(section, "stack", stack, _comment(old, "stack", stack) or
            "the serving stack whose kernels were measured")
    if e.compute:
        compute = tomlkit.table()
        for c, v in sorted(e.compute.items()):
            put(compute, c, round(v, 4), note("compute." + c))
        section.add("compute", compute)
    if e.tile is not None:
        tile = tomlkit.table()
        tile.comment("the file's wave quantisation, kept: fitted under it")
        tile.add("m", e.tile.m)
        tile.add("n", e.tile.n)
        if e.tile.sms:
            tile.add("sms", e.tile.sms)
        section.add("tile", tile)
    for kind, own in sorted(e.kinds.items()):
        section.add(kind, _kind_table(kind, own, by, note, put))
    for name, table in kept:
        section.add(name, table)
    if into_stack is None:
        if old is not None:
            doc["efficiency"] = section     # where it was: a refit moves nothing else
        else:
            doc.add(tomlkit.nl())
            doc.add("efficiency", section)
        return _header_above_default(tomlkit.dumps(doc), ["# " + line for line in header],
                                     _default_header(original))
    stacks = doc.setdefault("stack", tomlkit.table(is_super_table=True))
    stacks[into_stack] = section   # where it was, as [efficiency] is; a new one last
    return _header_above_default(tomlkit.dumps(doc), _default_header(original))


FITTED_ELSEWHERE = ("framework", "expert_act", *sorted(EXPERT_FAMILIES), MLA_DECODE,
                    MLA_KV8, MLA_PREFILL)
"""Tables of a section that other fits write: the serving engine's (bench/serving_silicon.py,
to served requests), the routed experts' and MLA decode's (bench/fit_experts.py, to MoE and
MLA kernels)."""


def _comment(section, key: str, value) -> str:
    """The comment on `key` in a section being rewritten, where it holds `value` ("" else)."""
    if section is None or section.get(key) != value:
        return ""
    return section[key].trivia.comment.lstrip("#").strip()


def _kept_tables(section, fitted: set[str]) -> list:
    """The tables of a section being rewritten that this fit does not produce and another fit
    wrote (FITTED_ELSEWHERE), copied with their comments, in the section's order."""
    import tomlkit
    if section is None:
        return []
    names = [k for k in section if k in FITTED_ELSEWHERE and k not in fitted]
    copied = tomlkit.parse(tomlkit.dumps({k: section[k] for k in names}))
    return [(k, copied[k]) for k in names]


def _kind_table(kind, own, by, note, put):
    import tomlkit
    table = tomlkit.table()
    if own.bandwidth is not None:
        put(table, "bandwidth", round(own.bandwidth, 4), note(kind + ".bandwidth"))
    if own.compute is not None:
        put(table, "compute", round(own.compute, 4), note(kind + ".compute"))
    if own.launch_s is not None:
        put(table, "launch", f"{own.launch_s * 1e6:.2f} us", note(kind + ".launch")
            if own.floor_s is None else "none beside its floor")
    if own.floor_s is not None:
        put(table, "floor", f"{own.floor_s * 1e6:.2f} us", note(kind + ".floor") +
            " (its host time: the GPU's work runs under it)")
    if own.one_row_s is not None:
        put(table, "one_row", f"{own.one_row_s * 1e6:.2f} us", note(kind + ".one_row") +
            " (what a call of one row adds)")
    if own.k_latency_s is not None:
        put(table, "k_latency", f"{own.k_latency_s * 1e9:.4g} ns", note(kind + ".k_latency") +
            " (per element of k: its tiles walk k in sequence)")
    if own.split_k_s is not None:
        p = by.get(kind + ".split_depth")
        put(table, "split_k", f"{own.split_k_s * 1e6:.2f} us", note(kind + ".split_k") +
            " (a call that splits its k: its partial sums reduced after)")
        put(table, "split_depth", int(own.split_depth), f"chosen: elements of k per output "
            f"tile above which a call splits ({p.rows if p else 0} rows split)")
    if own.rows is not None:
        p = by.get(kind + ".rows")
        put(table, "rows", int(own.rows) if float(own.rows).is_integer() else own.rows,
            f"chosen: thread blocks (one per sequence and KV head) that fill the chip "
            f"({p.rows if p else 0} rows below it)" if kind in SPLIT_FAMILIES else
            f"the SM count: one thread block per token row fits better "
            f"({p.rows if p else 0} rows below it)")
    if own.input_bytes:
        p = by.get(kind + ".input_bytes")
        put(table, "input_bytes", own.input_bytes,
            f"chosen: its input quantised first, bytes per element ({p.rows if p else 0} rows)")
    if own.tiles is not None:
        p = by.get(kind + ".tiles")
        put(table, "tiles", int(own.tiles), f"chosen: GEMM output tiles of 128 x 128 that fill "
            f"the chip ({p.rows if p else 0} rows)")
    if own.output_bytes is not None:
        p = by.get(kind + ".output_bytes")
        put(table, "output_bytes", own.output_bytes, f"chosen: bytes per output element after "
            f"its main loop, not hidden ({p.rows if p else 0} rows)")
    if own.split_bandwidth is not None:
        put(table, "split_bandwidth", round(own.split_bandwidth, 4),
            note(kind + ".split_bandwidth") + " (split over more blocks, reduced after)")
    if own.split_launch_s is not None:
        put(table, "split_launch", f"{own.split_launch_s * 1e6:.2f} us",
            note(kind + ".split_launch"))
    if own.overlap is False:
        put(table, "overlap", False, "its memory time adds to its compute time: fits better")
    elif own.overlap:
        put(table, "overlap", True, "not its fallback's false: the max fits better")
    return table


def with_tables(original: str, stack: str, tables: dict) -> str:
    """A hardware file's text with `tables` ({name: tomlkit table}) put into the section of
    `stack`: [efficiency] where it is the default's stack, [stack.NAME] otherwise; a table of
    the same name replaced, the rest of the file as it was (the default's account kept above
    [efficiency]). What the fits that write beside `calibrate` (bench/fit_experts.py,
    bench/serving_silicon.py) write with."""
    import tomlkit
    doc = tomlkit.parse(original)
    default = str(doc["efficiency"]["stack"]).split()[0]
    section = doc["efficiency"] if stack == default else doc["stack"][stack]
    for name, table in tables.items():
        if name in section:
            del section[name]
        section.add(name, table)
    return _tidy(_header_above_default(tomlkit.dumps(doc), _default_header(original)))


def _tidy(text: str) -> str:
    """One blank line at most between the machine-written sections (from the first
    [efficiency] or [stack.NAME] on; the datasheet part above is the author's), none at the
    end: tomlkit leaves a removed table's spacing behind."""
    lines = text.rstrip("\n").splitlines()
    start = next((i for i, line in enumerate(lines)
                  if line.startswith(("[efficiency", "[stack."))), len(lines))
    out = lines[:start]
    for line in lines[start:]:
        if line.strip() or (out and out[-1].strip()):
            out.append(line)
    return "\n".join(out) + "\n"


def _default_header(text: str) -> list[str]:
    """The two comment lines an earlier calibration wrote for [efficiency] (not those inside a
    [stack.NAME] table, which are that table's own); [] where there are none."""
    lines = text.splitlines()
    return next((lines[i:i + 2] for i, line in enumerate(lines) if line.startswith(_OUR_COMMENT)
                 and not (i and lines[i - 1].startswith("[stack."))), [])


def _header_above_default(text: str, header: list[str], stale: list[str] = ()) -> str:
    """`text` with `header` directly above its [efficiency] line and the `stale` lines (an
    older account) gone, wherever they were: TOML parsers hold a comment before a header as
    the end of the table above it, so rewriting that table (a stack, in place) would carry the
    default's account off with it."""
    drop = set(header) | set(stale)
    out, dropped = [], False
    for line in text.splitlines():
        if line in drop:
            dropped = True
        elif line.strip() or not dropped or (out and out[-1].strip()):
            out.append(line)     # (no second blank line where the lines were dropped)
            dropped = dropped and not line.strip()
    if header and "[efficiency]" in out:
        at = out.index("[efficiency]")
        out[at:at] = header
    return "\n".join(out) + "\n"
