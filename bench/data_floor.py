"""How well any monotone cost model could fit the measured kernel tables: the data's own floor.

    python bench/data_floor.py [FILE.csv ...]

A roofline time grows with the work: a GEMM of fixed n x k takes no less time at 2m tokens
than at m, decode attention at a fixed batch takes no less over a longer cache. Some measured
tables do not: a kernel timed at 64 tokens takes 2.5x its time at 128 (the stack picked another
tile), or repeats vary. For each series of rows that differ only in m (GEMMs: the prefill's
tokens) or in the cache length (decode attention, one batch), this finds the non-decreasing
sequence closest to the measured times in mean absolute percentage error, exactly (weighted L1
isotonic regression by dynamic programming over the measured values, where an optimum lies),
and prints per file (and for the GEMM files of one chip and stack together) the MAPE of that best monotone fit: no model that is monotone in m (or in
the cache length), whatever its form and figures, can predict those rows better. A second
column frees a GEMM's first row (m = 1), as a model with a one-row extra (efficiency one_row)
is free there: vLLM's per-tensor FP8 GEMMs on Blackwell take 13-18 us more at m = 1 than at
m = 2, which the first column counts against every monotone model. The calibrated figures are
judged against both in the README. Without files: every
aiconfigurator-{gemm,attention}-*.csv.
"""
from __future__ import annotations

import csv
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MEASURED = ROOT / "tests" / "data" / "measured"


def monotone_floor(times: list[float]) -> float:
    """The least sum of |f_i - t_i| / t_i over non-decreasing f (the series in order)."""
    values = sorted(set(times))
    best = [abs(v - times[0]) / times[0] for v in values]
    for t in times[1:]:
        running, step = float("inf"), []
        for j, v in enumerate(values):
            running = min(running, best[j])   # the best ending at or below v
            step.append(running + abs(v - t) / t)
        best = step
    return min(best)


def series(path: Path) -> dict[tuple, list[tuple[int, float]]]:
    """The file's rows grouped into series that differ only in `seq`, the size a roofline
    grows with at a fixed batch: m for a GEMM (a prefill of batch 1), the prompt for prefill
    attention, the cache for decode attention."""
    out: dict[tuple, list[tuple[int, float]]] = defaultdict(list)
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            key = (r["model"], r["stage"], r["batch"], r["w_bits"], r["a_bits"], r["kv_bits"],
                   r["op"])
            out[key].append((int(r["seq"]), float(r["time_s"])))
    return out


def floor(path: Path, first_free: bool = False) -> tuple[int, float]:
    """(rows, the best monotone MAPE in percent) of one file; `first_free`: each GEMM series'
    first row (its m = 1) fitted exactly, the rest monotone."""
    total, rows = 0.0, 0
    gemm = path.name.startswith("aiconfigurator-gemm-")
    for points in series(path).values():
        times = [t for _, t in sorted(points)]
        total += monotone_floor(times[1:] if first_free and gemm and len(times) > 1
                                else times)
        rows += len(times)
    return rows, 100 * total / rows


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or sorted(
        p for pattern in ("aiconfigurator-gemm-*.csv", "aiconfigurator-attention-*.csv")
        for p in MEASURED.glob(pattern))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"data_floor: no measurement file {', '.join(missing)}")
    fp8: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
    for path in paths:
        rows, mape = floor(path)
        _, free = floor(path, first_free=True)
        print(f"{path.name:62s} {rows:5d} rows   best monotone fit {mape:5.1f}%"
              f"   m = 1 free {free:5.1f}%")
        if path.name.startswith(("aiconfigurator-gemm-fp8-", "aiconfigurator-gemm-fp8-tp-")):
            fp8[path.name.replace("-tp-", "-")].append((rows, mape, free))
    for name, parts in sorted(fp8.items()):   # the full shapes and their shards together
        rows = sum(n for n, _, _ in parts)
        mape = sum(n * m for n, m, _ in parts) / rows
        free = sum(n * f for n, _, f in parts) / rows
        label = name.replace(".csv", " (with the shards)")
        print(f"{label:62s} {rows:5d} rows   best monotone "
              f"fit {mape:5.1f}%   m = 1 free {free:5.1f}%")


if __name__ == "__main__":
    main(sys.argv[1:])
