"""Refit every calibrated section of the shipped hardware files from the measurements it names.

    python bench/recalibrate.py [--write] [HARDWARE_KEY ...]

Each section `costdsl calibrate` wrote ([efficiency], [stack.NAME]) carries its account as a
comment: "Calibrated by `costdsl calibrate` from FILE, FILE, ...", and its `stack`. This reads
them back and runs the same calibration on the same files under the same stack, so that a
change to the cost model (a new family, a new choice) reaches every shipped file the way it
reached the first, and a file can be checked against its sources. Prints, per section, the
figures that move (more than 0.5% or 0.05 us) and the MAPE on the fit's rows before and after;
--write writes the refitted sections where a figure moved (the tables other fits wrote, the
serving engine's and the routed experts', are kept as they are:
report.calibration.FITTED_ELSEWHERE; a section where nothing moved keeps its text). Without
keys: every file under hardware/ with a calibrated section.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ACCOUNT = re.compile(r"^# Calibrated by `costdsl calibrate` from (.+)$")


def sections(path: Path) -> list[tuple[str | None, list[str]]]:
    """(stack table name or None for [efficiency], the measurement files) per calibrated
    section of a hardware file, in the file's order."""
    lines = path.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        found = ACCOUNT.match(line)
        if not found:
            continue
        header = lines[i - 1] if i else ""
        table = header[len("[stack."):-1] if header.startswith("[stack.") else None
        out.append((table, [f.strip() for f in found.group(1).split(",")]))
    return out


def _figures(e) -> dict[str, float]:
    """The fitted numbers of one section, flat: name -> value."""
    from dataclasses import fields
    out = {"bandwidth": e.bandwidth, "launch": e.launch_s}
    out.update({f"compute.{k}": v for k, v in e.compute.items()})
    for kind, own in e.kinds.items():
        for field in fields(own):   # every figure a family may have (overlap is a choice)
            value = getattr(own, field.name)
            if value is not None and not isinstance(value, bool):
                out[f"{kind}.{field.name}"] = value
    return out


def section_rows(key: str, table: str | None, files: list[str]):
    """(the shipped file, its section as hardware, the measured rows of `files` resolved
    against it) for one calibrated section."""
    from costdsl import load
    from costdsl.analysis.measurements import read_measurements, resolve, stack_of_rows
    from costdsl.hardware import load_hardware
    shipped = load_hardware(key)
    hw = shipped.with_stack(table) if table else shipped
    measured = []
    for name in files:
        measured += resolve(read_measurements(ROOT / name), ROOT / name, hw, load)
    stack_of_rows([m.row for m in measured], hw.stack or "")   # the tables' stack is the section's
    return shipped, hw, measured


def refit(key: str, table: str | None, files: list[str], write: bool) -> list[str]:
    """Refit one section; the lines that report it."""
    from costdsl.analysis.calibration import fit_efficiency
    from costdsl.analysis.measurements import predict
    from costdsl.analysis.validation import errors
    from costdsl.report.calibration import FITTED_ELSEWHERE, calibrated_toml
    shipped, hw, measured = section_rows(key, table, files)
    fit = fit_efficiency(measured, source=", ".join(files), sms=hw.sms,
                         tile=hw.efficiency.tile if table is None else None)
    before = errors(measured, predict(measured, hw.efficiency)).overall_mape
    after = errors(measured, predict(measured, fit.efficiency))
    old, new = _figures(hw.efficiency), _figures(fit.efficiency)
    moved = [f"    {name}: {old.get(name, '-')} -> {value:.4g}" for name, value in sorted(new.items())
             if name not in old or abs(value - old[name]) > max(5e-3 * abs(old[name]), 5e-8)]
    moved += [f"    {name}: {old[name]:.4g} -> (none)" for name in sorted(set(old) - set(new))
              if name.split(".")[0] not in FITTED_ELSEWHERE]   # kept as they are: not moved
    lines = [f"{key} [{'stack.' + table if table else 'efficiency'}] ({hw.stack}, "
             f"{len(measured)} rows): MAPE {before:.1f}% -> {after.overall_mape:.1f}%", *moved]
    if write and len(lines) > 1:   # a section nothing moved in keeps its text (and hand layout)
        text = calibrated_toml(Path(shipped.source).read_text(), fit, ", ".join(files), after,
                               shipped.efficiency.measured_as or key, stack=hw.stack,
                               into_stack=table)
        Path(shipped.source).write_text(text)
    return lines


def main(argv: list[str]) -> None:
    write = "--write" in argv
    keys = [a for a in argv if not a.startswith("--")]
    paths = [ROOT / "hardware" / f"{k}.toml" for k in keys] if keys else \
        sorted((ROOT / "hardware").glob("*.toml"))
    missing = [p.stem for p in paths if not p.exists()]
    if missing:
        sys.exit(f"recalibrate: no hardware file {', '.join(missing)} under hardware/ "
                 "(give keys as `costdsl hardware` lists them)")
    for path in paths:
        for table, files in sections(path):
            print("\n".join(refit(path.stem, table, files, write)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
