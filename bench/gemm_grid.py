"""The shipped GEMM figures against every shape the aiconfigurator package times, not only the
ones they were fitted to.

    python bench/gemm_grid.py [--data DIR] [CHIP ...]

The calibrated sections are fitted to nine LLM shapes and the shards tensor parallelism at 4
and 8 makes of them (bench/convert_aiconfigurator.py). The package times far more: every n x k
of 22 sizes from 32 to 65,536 at 74 sizes of m, 1 to 32,768 (odd ones too: 257, 2,817). This
prices each (chip, stack, format) table over its shapes with n and k from MIN_SIDE to
MAX_SIDE (the sides of LLM projections and their shards), every m, and prints the mean
absolute percentage error over all of them, over the shapes the fit never saw, by band of m,
and the worst shapes: what a user's model of other widths meets. Rows whose weights the
collector re-read from the L2 are left out as the converter leaves them out
(_weights_resident). Block formats are priced as the converter's files price them (the
quantize pass of gemm-NxK-<format>.arch).

--data: the package's systems/data folder (default: where `import aiconfigurator_core`
finds it; pip install aiconfigurator-core pyarrow). CHIP: the converter's short names (h200,
b200, ...; default every chip with a GEMM table). Needs costdsl and pyarrow in the same
environment (the `cluster` extra installs pyarrow).
"""
from __future__ import annotations

import csv
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))

MIN_SIDE, MAX_SIDE = 512, 32768
FORMATS = {"bfloat16": ("bf16", None, 16), "fp8": ("fp8", None, 8),
           "fp8_block": ("fp8block", "fp8_block", 8), "nvfp4": ("nvfp4", "nvfp4", 4)}
"""aiconfigurator's gemm_dtype: (the name printed, its BLOCK_FORMATS key or None, bits)."""
M_BANDS = ((1, 16), (17, 256), (257, 2048), (2049, 32768))


def main(argv: list[str]) -> None:
    import numpy as np
    from convert_aiconfigurator import (BLOCK_FORMATS, BLOCK_NOTES, FP8_WEIGHT_ONLY,
                                        GEMM_SHAPES, OTHER_STACKS, STACK, STACK_SYSTEMS,
                                        XPU_SYSTEMS, _package, _table, _tp_shapes,
                                        _variant_row, _weights_resident)
    from convert_measured import COLUMNS, _gemm_row
    import costdsl
    from costdsl.analysis.measurements import predict, read_measurements, resolve
    from costdsl.hardware import load_hardware

    data = Path(argv[argv.index("--data") + 1]) if "--data" in argv else \
        _package()[0] / "systems" / "data"
    chips = [a for i, a in enumerate(argv) if not a.startswith("--")
             and (i == 0 or argv[i - 1] != "--data")]
    systems = {**STACK_SYSTEMS, **XPU_SYSTEMS}
    fitted = GEMM_SHAPES | _tp_shapes()
    print(f"{'chip':10s} {'stack':7s} {'format':8s} {'shapes':>6s} {'rows':>6s} {'all':>6s} "
          f"{'unseen':>6s} " + " ".join(f"{f'm {lo}-{hi}':>12s}" for lo, hi in M_BANDS)
          + "  worst shapes (n x k)")
    for system, (short, key) in systems.items():
        if chips and short not in chips:
            continue
        for stack in (STACK, *OTHER_STACKS):
            if not (data / system / "gemm" / stack).exists():
                continue
            records, version, path = _table(data, system, "gemm", "gemm_perf", stack)
            hw = load_hardware(key)
            if stack != STACK:
                if stack not in hw.stacks:
                    continue
                hw = hw.with_stack(stack)
            for dtype, (name, block, bits) in FORMATS.items():
                if dtype == "fp8" and system in FP8_WEIGHT_ONLY:
                    continue
                chosen = [r for r in records if r["gemm_dtype"] == dtype
                          and MIN_SIDE <= r["n"] <= MAX_SIDE and MIN_SIDE <= r["k"] <= MAX_SIDE
                          and not _weights_resident(system, stack, r, bits)]
                if not chosen:
                    continue
                with tempfile.TemporaryDirectory() as tmp:
                    out = Path(tmp)
                    source = f"{path} ({stack} {version})"
                    if block:
                        quantize = BLOCK_FORMATS[block][2]
                        rows = [_variant_row(out, key, r, name, quantize, source,
                                             f"{name} ({BLOCK_NOTES[name]})", bits, bits)
                                for r in chosen]
                    else:
                        rows = [_gemm_row(out, key, r["m"], r["n"], r["k"], r["latency"],
                                          source, bits) for r in chosen]
                    csv_path = out / "grid.csv"
                    with csv_path.open("w", newline="") as f:
                        writer = csv.DictWriter(f, COLUMNS)
                        writer.writeheader()
                        writer.writerows(rows)
                    measured = resolve(read_measurements(csv_path), csv_path, hw, costdsl.load)
                times = np.array([m.row.time_s for m in measured])
                error = np.abs(predict(measured, hw.efficiency) / times - 1) * 100
                m = np.array([r["m"] for r in chosen])
                shapes = [(r["n"], r["k"]) for r in chosen]
                unseen = np.array([s not in fitted for s in shapes])
                by_shape = defaultdict(list)
                for s, e in zip(shapes, error):
                    by_shape[s].append(e)
                worst = sorted(by_shape.items(), key=lambda kv: -np.mean(kv[1]))[:3]
                bands = [error[(m >= lo) & (m <= hi)] for lo, hi in M_BANDS]
                print(f"{short:10s} {stack:7s} {name:8s} {len(by_shape):6d} {len(chosen):6d} "
                      f"{error.mean():5.1f}% {error[unseen].mean():5.1f}% "
                      + " ".join(f"{b.mean():11.1f}%" if b.size else f"{'-':>12s}"
                                 for b in bands) + "  "
                      + ", ".join(f"{n}x{k} {np.mean(v):.0f}%" for (n, k), v in worst),
                      flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
