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
m = 2, which the first column counts against every monotone model.

A third column, for the GEMM files, asks a narrower question: how well a roofline with figures
of its own for each shape fits the rows. Each series (one n x k) gets its own launch c, memory
time A and compute time per row B, t = c + max(A, B m), fitted to that series' 15 rows
themselves (m = 1 free), so three figures per shape where the calibrated model shares one
fraction per family over every shape and is judged held out: what stays between the two is
efficiency that varies from shape to shape (the kernel's tile and split-K for n x k, how many
tiles fill the chip), what is left under it is not a roofline's at all (a kernel picked per m,
repeats that vary). The calibrated figures are judged against all three in the README. Without
files: every aiconfigurator-{gemm,attention}-*.csv.

Last, the tables against each other (TWINS): chips of one compute die (the H100 and H200; the
B200 and GB200; the B300 and GB300) run a compute-bound GEMM in the same time up to a constant
(their clocks). Over the rows both tables time compute-bound (intensity over twice the ridge of
the chip with less bandwidth), the log of the time ratio strays from its median by D on
average; any model that prices the twins' compute-bound rows in a constant ratio (a roofline
with one compute fraction a chip, as costdsl's) then misses the two tables by at least D / 2
on average there (|log a - log f| + |log b - log f| >= |log a/b - c|), whatever its figures:
what the measurements disagree with themselves by.
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


def weighted_median(values: list[float], weights: list[float]) -> float:
    """The value minimising sum w |x - v| (the lower weighted median)."""
    pairs = sorted(zip(values, weights))
    half, running = sum(weights) / 2, 0.0
    for v, w in pairs:
        running += w
        if running >= half:
            return v
    return pairs[-1][0]


LAUNCH_STEPS = 40
"""The launch c is searched on a grid of this many steps from 0 to the series' least time; for
each c and each row at which the compute side takes over, A and B are the weighted medians that
minimise the relative L1 error of their side exactly. The result is a fit the family reaches
(its own optimum is at most this), within a step of c of that optimum."""


def roofline_floor(sizes: list[int], times: list[float]) -> float:
    """The least sum of |t_hat - t| / t found for t_hat = c + max(A, B m) over one series,
    sizes `sizes` (m) and times `times`, in order of m; c, A, B >= 0."""
    best = float("inf")
    for step in range(LAUNCH_STEPS + 1):
        c = min(times) * step / LAUNCH_STEPS
        rest = [t - c for t in times]
        for cut in range(len(times) + 1):
            a = weighted_median(rest[:cut], [1 / t for t in times[:cut]]) if cut else 0.0
            b = weighted_median([r / m for r, m in zip(rest[cut:], sizes[cut:])],
                                [m / t for m, t in zip(sizes[cut:], times[cut:])]) \
                if cut < len(times) else 0.0
            error = sum(abs(c + max(a, b * m) - t) / t for m, t in zip(sizes, times))
            best = min(best, error)
    return best


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


def is_gemm(path: Path) -> bool:
    return path.name.startswith("aiconfigurator-gemm-")


def floor(path: Path, first_free: bool = False, roofline: bool = False) -> tuple[int, float]:
    """(rows, the best monotone MAPE in percent) of one file; `first_free`: each GEMM series'
    first row (its m = 1) fitted exactly, the rest monotone; `roofline`: the per-shape
    roofline's MAPE instead (roofline_floor; GEMM files)."""
    total, rows = 0.0, 0
    for points in series(path).values():
        sizes, times = zip(*sorted(points))
        if first_free and is_gemm(path) and len(times) > 1:
            sizes, times = sizes[1:], times[1:]
        total += roofline_floor(list(sizes), list(times)) if roofline else \
            monotone_floor(list(times))
        rows += len(points)
    return rows, 100 * total / rows


def main(argv: list[str]) -> None:
    paths = [Path(a) for a in argv] or sorted(
        p for pattern in ("aiconfigurator-gemm-*.csv", "aiconfigurator-attention-*.csv")
        for p in MEASURED.glob(pattern))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        sys.exit(f"data_floor: no measurement file {', '.join(missing)}")
    fp8: dict[str, list[tuple[int, list[float | None]]]] = defaultdict(list)
    shaped: dict[tuple[str, str, str], list[tuple[int, float]]] = defaultdict(list)
    for path in paths:
        rows, mape = floor(path)
        figures = [mape, floor(path, first_free=True)[1],
                   floor(path, first_free=True, roofline=True)[1] if is_gemm(path) else None]
        print(line(path.name, rows, figures))
        if is_gemm(path):
            shaped[cell_of(path)].append((rows, figures[2]))
        if path.name.startswith(("aiconfigurator-gemm-fp8-", "aiconfigurator-gemm-fp8-tp-")):
            fp8[path.name.replace("-tp-", "-")].append((rows, figures))
    for name, parts in sorted(fp8.items()):   # the full shapes and their shards together
        rows = sum(n for n, _ in parts)
        figures = [sum(n * f[i] for n, f in parts) / rows for i in range(3)]
        print(line(name.replace(".csv", " (with the shards)"), rows, figures))
    print_cells(cells(shaped))
    if not argv:
        print_twins()


FORMATS = ("bf16", "fp8", "fp8block", "nvfp4")


def cell_of(path: Path) -> tuple[str, str, str]:
    """(chip, stack, number format) of a GEMM file aiconfigurator-gemm-[FORMAT-]CHIP[-STACK].csv
    (no format: bf16; fp8-tp, the sharded shapes: fp8; no stack: vllm)."""
    words = path.stem.removeprefix("aiconfigurator-gemm-").split("-")
    stack = words.pop() if words[-1] in ("trtllm", "sglang") else "vllm"
    chip = words.pop()
    return chip, stack, {"": "bf16", "fp8-tp": "fp8"}.get("-".join(words), "-".join(words))


def cells(parts: dict[tuple, list[tuple[int, float]]]) -> dict[tuple[str, str, str], float]:
    """The per-shape roofline's MAPE (m = 1 free) per (chip, stack, format), the cells of the
    README's held-out table, from each cell's files' (rows, MAPE)."""
    return {key: sum(n * m for n, m in rows) / sum(n for n, _ in rows)
            for key, rows in parts.items()}


def print_cells(by_cell: dict[tuple[str, str, str], float]) -> None:
    if not by_cell:
        return
    print("\nroofline per shape (m = 1 free), GEMMs by chip and stack: "
          + " / ".join(FORMATS))
    for chip, stack in sorted({(c, s) for c, s, _ in by_cell}):
        figures = [by_cell.get((chip, stack, f)) for f in FORMATS]
        print(f"  {chip:11s} {stack:7s} "
              + " / ".join("-" if f is None else f"{f:.1f}" for f in figures))


TWINS = (("h100", "nvidia-h100-sxm", "h200", "nvidia-h200"),
         ("b200", "nvidia-b200", "gb200", "nvidia-gb200"),
         ("b300", "nvidia-b300", "gb300", "nvidia-gb300"))
"""Chips of one compute die and the hardware files that give their ridges."""
OPERANDS = {"": ("bf16", 2), "fp8-": ("fp8", 1), "fp8-tp-": ("fp8", 1), "fp8block-": ("fp8", 1),
            "nvfp4-": ("fp4", 0.5)}
"""By a GEMM file's format prefix: the compute type and bytes per input element (weights and
activations alike; the outputs are bf16)."""


def gemm_times(path: Path) -> dict[tuple[int, int, int], float]:
    """{(n, k, m): seconds} of a GEMM file (its models are gemm/gemm-NxK[-format].arch)."""
    out = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            n, k = r["model"].split("gemm-")[-1].split("-")[0].removesuffix(".arch").split("x")
            out[int(n), int(k), int(r["seq"])] = float(r["time_s"])
    return out


def twin_disagreement(a: dict, b: dict, ridge: float, width: float) -> tuple[int, float, float]:
    """(rows, median ratio b / a, D / 2 in percent) over the (n, k, m) both time whose
    intensity is over twice `ridge`."""
    import math
    import statistics
    logs = [math.log(b[key] / a[key]) for key in a if key in b and
            2 * key[2] * key[0] * key[1] / (width * key[1] * (key[0] + key[2]) + 2 * key[2]
                                           * key[0]) > 2 * ridge]
    if len(logs) < 10:
        return len(logs), float("nan"), float("nan")
    middle = statistics.median(logs)
    return len(logs), math.exp(middle), 50 * statistics.mean(abs(x - middle) for x in logs)


def print_twins() -> None:
    from costdsl.hardware import load_hardware
    print("\ntwins (one compute die): compute-bound rows both time, median time ratio, and the "
          "least mean error D / 2 of a constant-ratio model")
    for first, first_hw, second, second_hw in TWINS:
        slow = min((load_hardware(first_hw), load_hardware(second_hw)),
                   key=lambda hw: hw.bandwidth_Bps)
        for stack in ("", "-trtllm", "-sglang"):
            for prefix, (ctype, width) in OPERANDS.items():
                files = [MEASURED / f"aiconfigurator-gemm-{prefix}{chip}{stack}.csv"
                         for chip in (first, second)]
                if not all(f.is_file() for f in files) or ctype not in slow.peak:
                    continue
                rows, ratio, half = twin_disagreement(
                    gemm_times(files[0]), gemm_times(files[1]),
                    slow.peak[ctype] / slow.bandwidth_Bps, width)
                if rows >= 10:
                    print(f"  {first}/{second:6s} {stack.strip('-') or 'vllm':7s} "
                          f"{(prefix.strip('-') or 'bf16'):8s} {rows:4d} rows   ratio "
                          f"{ratio:5.3f}   D / 2 {half:4.1f}%")


def line(label: str, rows: int, figures: list[float | None]) -> str:
    monotone, free, roofline = figures
    shaped = "-" if roofline is None else f"{roofline:5.1f}%"
    return (f"{label:62s} {rows:5d} rows   best monotone fit {monotone:5.1f}%"
            f"   m = 1 free {free:5.1f}%   roofline per shape {shaped:>6s}")


if __name__ == "__main__":
    main(sys.argv[1:])
