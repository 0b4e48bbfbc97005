"""The README's k-fold held-out table: each calibrated section of the shipped hardware files
judged on rows its fit did not see.

    python bench/held_out.py [--folds 5] [--markdown] [HARDWARE_KEY ...]

A section's rows are the measurement files its account names ("Calibrated by `costdsl
calibrate` from FILE, ...", as bench/recalibrate.py reads them). The rows are split into
`folds` seeded random folds; each fold is predicted by a fit of the others
(costdsl.analysis.validation.cross_validate, the fit `calibrate` runs, with the file's tile
model for its default section) and the MAPE is printed over all rows, the single GEMMs by
number format (bf16; FP8 with per-tensor scales, and on the A100 and the Arc Pro B60 the
weight-only and INT8 GEMMs in its place; FP8 with 128 x 128 blocks; NVFP4: the last two named
by their model files, as tests/conftest.gemm_rows reads them) and the decode attention rows. --markdown prints the README's layout: a row per chip, a column per stack. Each section
refits `folds` times (about a minute a section); without keys every file under
hardware/ with a calibrated section.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from recalibrate import section_rows, sections  # noqa: E402  (the accounts' reader)

COLUMNS = ("all", "bf16", "fp8", "fp8block", "nvfp4", "decode")
STACKS = ("vllm", "trtllm", "sglang")


def row_groups(measured) -> dict[str, list[int]]:
    """Indices of the rows of each column: every row, the single GEMMs by format, and the
    decode attention rows (tests/test_stacks.py's columns)."""
    out = {c: [] for c in COLUMNS}
    for i, m in enumerate(measured):
        out["all"].append(i)
        if m.kind == "linear":
            block = next((b for b in ("fp8block", "nvfp4") if b in m.row.model), None)
            out[block or ("bf16" if m.row.bits[0] == 16 else "fp8")].append(i)
        elif m.row.stage == "decode":   # a converted set's decode rows are its attention
            out["decode"].append(i)
    return out


def judge(key: str, table: str | None, files: list[str], folds: int):
    """(the stack and its version, the rows, the MAPE in percent per column: None where the
    column has no rows)."""
    import numpy as np
    from costdsl.analysis.validation import cross_validate
    _, hw, measured = section_rows(key, table, files)
    held, _ = cross_validate(measured, folds, sms=hw.sms,
                             tile=hw.efficiency.tile if table is None else None)
    ratio = np.array([held[i] / m.row.time_s - 1 for i, m in enumerate(measured)])
    mape = {c: (100 * float(np.mean(np.abs(ratio[rows]))) if rows else None)
            for c, rows in row_groups(measured).items()}
    return hw.stack, len(measured), mape


def cells(mape: dict) -> str:
    return " / ".join("-" if mape[c] is None else f"{mape[c]:.1f}" for c in COLUMNS)


def main(argv: list[str]) -> None:
    try:
        folds = int(argv[argv.index("--folds") + 1]) if "--folds" in argv else 5
    except (IndexError, ValueError):
        sys.exit("held_out: --folds needs a whole number (2 or more)")
    markdown = "--markdown" in argv
    skip = {argv.index("--folds") + 1} if "--folds" in argv else set()
    keys = [a for i, a in enumerate(argv) if not a.startswith("--") and i not in skip]
    paths = [ROOT / "hardware" / f"{k}.toml" for k in keys] if keys else \
        sorted((ROOT / "hardware").glob("*.toml"))
    missing = [p.stem for p in paths if not p.exists()]
    if missing:
        sys.exit(f"held_out: no hardware file {', '.join(missing)} under hardware/")
    table: dict[str, dict[str, str]] = {}
    for path in paths:
        for section, files in sections(path):
            stack, rows, mape = judge(path.stem, section, files, folds)
            name = stack.split()[0] if stack else "-"
            print(f"{path.stem} {stack} ({rows} rows), {folds}-fold held out, "
                  f"{' / '.join(COLUMNS)}: {cells(mape)}", flush=True)
            table.setdefault(path.stem, {})[name] = f"{cells(mape)} ({rows} rows)"
    if markdown:
        print(f"\n| {folds}-fold held out ({' / '.join(COLUMNS)}) | vLLM | TensorRT-LLM | SGLang |")
        print("|---|---|---|---|")
        for key, by_stack in table.items():
            print(f"| {key} | " + " | ".join(by_stack.get(s, "-") for s in STACKS) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
