"""Calibration and validation answers as text, JSON, and a calibrated hardware file."""
from __future__ import annotations


from ..analysis.calibration import Fit
from ..analysis.validation import ErrorTable
from .units import seconds


def _value(p) -> str:
    if p.name.endswith(".rows"):
        return f"{p.value:g} (the SM count: one block per row)"
    if p.name.endswith(".overlap"):
        return "false (memory time adds to compute time)"
    if p.name.endswith(".input_bytes"):
        return f"{p.value:g} bytes per input element (chosen)"
    if p.name == "launch" or p.name.endswith(".launch"):
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
    head = "  " + f"{'':24s}" + "".join(f"{n + ' MAPE / max':>32s}" for n in names)
    lines = [head]
    first = tables[0][1]
    for title, key in (("by op kind", "by_kind"), ("by stage", "by_stage"),
                       ("by compute type", "by_type")):
        lines.append(f"  {title}:")
        for group, (_, _, count) in getattr(first, key).items():
            cells = "".join(f"{getattr(t, key)[group][0]:>21.1f}% /{getattr(t, key)[group][1]:>7.1f}%"
                            for _, t in tables)
            lines.append(f"    {group + f' ({count})':22s}{cells}")
    cells = "".join(f"{t.overall_mape:>21.1f}% /{t.overall_max:>7.1f}%" for _, t in tables)
    lines.append(f"  {'all rows':24s}{cells}")
    if first.summed is not None:
        cells = "".join(f"{t.summed[0]:>21.1f}% /{t.summed[1]:>7.1f}%" for _, t in tables)
        lines.append(f"  {'summed per configuration':24s}{cells}")
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
    doc = tomlkit.parse(_without_our_comment(original) if into_stack is None else original)
    if into_stack is None:
        framework = _framework_table(doc.pop("efficiency", None))
    else:
        stacks = doc.get("stack")
        framework = _framework_table(stacks.pop(into_stack, None) if stacks is not None
                                     else None)
    e = fit.efficiency
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
              f"({fit.rows} rows; {judged}). Time = max(ops / (compute x peak), bytes / "
              "(bandwidth x datasheet bandwidth) x max(1, rows / the op's rows)) + launch (the "
              "sum of the two, not their max, where overlap = false)."]
    if into_stack is not None:   # a stack's table carries its own account, first inside it
        for line in header:
            section.add(tomlkit.comment(line))
    put(section, "bandwidth", round(e.bandwidth, 4), note("bandwidth"))
    put(section, "launch", f"{e.launch_s * 1e6:.2f} us", note("launch"))
    put(section, "measured_as", hw_key, "the hardware the measurement rows name")
    if stack:
        put(section, "stack", stack, "the serving stack whose kernels were measured")
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
    if framework is not None:   # fitted to served requests, not to these kernels: kept
        section.add("framework", framework)
    if into_stack is None:
        doc.add(tomlkit.nl())
        for line in header:
            doc.add(tomlkit.comment(line))
        doc.add("efficiency", section)
    else:
        stacks = doc.setdefault("stack", tomlkit.table(is_super_table=True))
        stacks.add(into_stack, section)
    return tomlkit.dumps(doc)


def _framework_table(section):
    """The [framework] table of a section being rewritten, copied with its comments (None where
    it has none)."""
    import tomlkit
    if section is None or "framework" not in section:
        return None
    return tomlkit.parse(tomlkit.dumps({"framework": section["framework"]}))["framework"]


def _kind_table(kind, own, by, note, put):
    import tomlkit
    table = tomlkit.table()
    if own.bandwidth is not None:
        put(table, "bandwidth", round(own.bandwidth, 4), note(kind + ".bandwidth"))
    if own.compute is not None:
        put(table, "compute", round(own.compute, 4), note(kind + ".compute"))
    if own.launch_s is not None:
        put(table, "launch", f"{own.launch_s * 1e6:.2f} us", note(kind + ".launch"))
    if own.rows is not None:
        p = by.get(kind + ".rows")
        put(table, "rows", int(own.rows) if float(own.rows).is_integer() else own.rows,
            f"the SM count: one thread block per token row fits better "
            f"({p.rows if p else 0} rows below it)")
    if own.input_bytes:
        p = by.get(kind + ".input_bytes")
        put(table, "input_bytes", own.input_bytes,
            f"chosen: its input quantised first, bytes per element ({p.rows if p else 0} rows)")
    if own.overlap is False:
        put(table, "overlap", False, "its memory time adds to its compute time: fits better")
    elif own.overlap:
        put(table, "overlap", True, "not its fallback's false: the max fits better")
    return table


def _without_our_comment(text: str) -> str:
    """The text less the two comment lines an earlier calibration wrote above [efficiency]
    (those inside a [stack.NAME] table are that table's own, and stay)."""
    lines = text.splitlines()
    drop = set()
    for i, line in enumerate(lines):
        if line.startswith(_OUR_COMMENT):
            after = next((l for l in lines[i + 2:] if l.strip()), "")
            if after.replace(" ", "").startswith("[efficiency"):
                drop |= {i, i + 1}
    out = [line for i, line in enumerate(lines) if i not in drop]
    while out and not out[-1].strip():
        out.pop()
    return "\n".join(out) + "\n"
