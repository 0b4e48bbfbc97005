"""Fit each serving stack's all-reduce to its measured times and write [all_reduce.NAME.G].

    python bench/fit_all_reduce.py            # print the held-out errors
    python bench/fit_all_reduce.py --write    # and rewrite the system files' [all_reduce]

Reads tests/data/measured/allreduce-stacks.csv (bench/convert_aiconfigurator.py writes it from
aiconfigurator-core's custom_allreduce tables) and fits, per (system, stack, group size), the
switch sizes and each regime's latency and efficiency (costdsl.analysis.links.
fit_stack_all_reduce). The held-out error is 5-fold: every fifth message size left out of the
fit in turn, switches included, and predicted by the rest.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tomlkit

from costdsl.analysis.links import (fit_stack_all_reduce, held_out_all_reduce,
                                    read_stack_all_reduce)
from costdsl.hardware import load_hardware
from costdsl.hardware.collectives import size_text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "measured" / "allreduce-stacks.csv"
FILES = {"aic_a100_sxm": ("nvidia-dgx-a100",), "aic_h100_sxm": ("nvidia-dgx-h100",
                                                                "nvidia-dgx-h100-2node"),
         "aic_h200_sxm": ("nvidia-hgx-h200",), "aic_b200_sxm": ("nvidia-hgx-b200",),
         "aic_b300_sxm": ("nvidia-hgx-b300",), "aic_gb200": ("nvidia-gb200-nvl72",),
         "aic_gb300": ("nvidia-gb300-nvl72",), "aic_l40s": ("nvidia-l40s-8x",),
         "aic_rtx_pro_6000_server": ("nvidia-rtx-pro-6000-8x",), "aic_b60": ("intel-arc-pro-b60-4x",)}
FOLDS = 5
MARK = "# Each stack's own all-reduce"


def entry(a) -> tomlkit.items.InlineTable:
    t = tomlkit.inline_table()
    if a.up_to_bytes is not None:
        t["up_to"] = size_text(a.up_to_bytes)
    t["latency"] = f"{a.latency_s * 1e6:.2f} us"
    t["efficiency"] = round(a.efficiency, 3)
    return t


def main(argv: list[str]) -> None:
    rows = read_stack_all_reduce(DATA)
    tables: dict[str, dict] = {}
    print(f"{'system':14} {'stack':18} {'gpus':>4} {'rows':>4} {'fit':>6} {'held out':>8}  "
          "switches")
    for network, stack, gpus in sorted({(r.network, r.stack, r.devices) for r in rows}):
        group = [r for r in rows if (r.network, r.stack, r.devices) == (network, stack, gpus)]
        files = FILES[network]
        system = load_hardware(files[0])
        if gpus > system.count:   # a group the system cannot form (the B60's 8 on 4 cards)
            continue
        bandwidth = system.link.bandwidth_Bps
        fit = fit_stack_all_reduce(group, bandwidth)
        error = float(np.mean([e for _, e in held_out_all_reduce(group, bandwidth, FOLDS)]))
        switches = ", ".join(size_text(a.up_to_bytes) for a in fit.algorithms if a.up_to_bytes)
        print(f"{network:14} {stack:18} {gpus:4} {len(group):4} {100 * fit.mape:5.1f}% "
              f"{100 * error:7.1f}%  {switches}")
        name = stack.split()[0]
        per_stack = tables.setdefault(network, {}).setdefault(name, {"stack": stack})
        per_stack[gpus] = (fit, error, group)
    if "--write" in argv:
        for network, stacks in tables.items():
            for key in FILES[network]:
                write(ROOT / "hardware" / f"{key}.toml", stacks)


def write(path: Path, stacks: dict) -> None:
    text = path.read_text()
    if MARK in text:   # this script's block closes the file: drop it whole, comments and all
        text = text[:text.index(MARK)].rstrip("\n# ") + "\n"
    doc = tomlkit.parse(text)
    doc.pop("all_reduce", None)
    section = tomlkit.table(is_super_table=True)
    for name, groups in sorted(stacks.items()):
        table = tomlkit.table(is_super_table=False)
        table.add("stack", groups["stack"])
        table["stack"].comment("the version measured: aiconfigurator-core 0.12.0 (allreduce-"
                               "stacks.csv)")
        for gpus, (fit, error, rows) in sorted(((g, v) for g, v in groups.items()
                                                if g != "stack"), key=lambda x: x[0]):
            count = len(rows)
            group = tomlkit.table()
            low = 0.0
            for a in fit.algorithms:
                high = a.up_to_bytes or float("inf")
                sizes = sum(low < r.bytes <= high for r in rows)
                group.add(a.name, entry(a))
                group[a.name].comment(f"fitted to {sizes} sizes" + (
                    f"; group: {count} sizes, {100 * fit.mape:.1f}% mean error "
                    f"({100 * error:.1f}% held out)" if a.up_to_bytes is None else ""))
                low = high
            table.add(str(gpus), group)
        section.add(name, table)
    doc.add(tomlkit.nl())
    for line in (MARK[2:] + " (hardware/collectives.py), fitted by",
                 "bench/fit_all_reduce.py: the ring entry is the stack's NCCL fallback for",
                 "larger messages; efficiencies are fractions of the [link] bandwidth."):
        doc.add(tomlkit.comment(line))
    doc.add("all_reduce", section)
    path.write_text(tomlkit.dumps(doc))
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
