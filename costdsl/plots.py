"""Plots (matplotlib, PNG or SVG by the file's suffix). Each takes analysis records (an
Analysis, a curves.StageCurve or MemoryCurve, a serving.ServeCurve) and writes one figure;
nothing here computes a cost.

    roofline  the hardware's roofline, one ceiling per compute type, every op of a stage on it
    batch     stage time and throughput against batch, crossovers annotated
    seq       stage time against seq, crossovers annotated
    memory    weights, KV cache and activations stacked against seq, with the capacity
    serve     throughput against latency over batch, memory limit and compute-bound marked
    predicted_vs_measured  validation: predicted against measured kernel times
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CostDSLError

KINDS = ("roofline", "batch", "seq", "memory", "serve")  # `costdsl plot` kinds
_BOUND_STYLE = {"memory": ("o", "tab:blue"), "compute": ("^", "tab:red"),
                "host": ("s", "tab:purple"), "link": ("D", "tab:orange"),
                "network": ("D", "tab:brown")}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; no screen
    import matplotlib.pyplot as plt
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, smaller
    return plt


def _save(fig, path: str) -> str:
    if Path(path).suffix.lower() not in (".png", ".svg"):
        raise CostDSLError(f"--out {path}: a plot is written as .png or .svg")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=150)
    except OSError as err:
        raise CostDSLError(f"cannot write {path}: {err.strerror or err}") from None
    finally:
        _pyplot().close(fig)
    return path


def roofline(analysis, stage: str, path: str) -> str:
    """Attainable ops/s against intensity: one ceiling per compute type of the hardware, the
    ridge point of each marked, and each op of the stage at (intensity, attainable)."""
    plt = _pyplot()
    hw = analysis.hardware
    result = analysis.stages[stage]
    ops = [o for o in result.ops if o.compute_type and o.intensity > 0]
    lo = min([o.intensity for o in ops] + [0.1]) / 4
    hi = max([o.intensity for o in ops] + [max(hw.peak.values()) / hw.bandwidth_Bps]) * 4
    x = np.geomspace(lo, hi, 400)
    fig, ax = plt.subplots(figsize=(9, 6))
    by_peak: dict[float, list[str]] = {}
    for ctype, peak in hw.peak.items():  # types with the same rate share one ceiling
        by_peak.setdefault(peak, []).append(ctype)
    for peak, types in sorted(by_peak.items(), reverse=True):
        name = "/".join(types)
        ax.plot(x, np.minimum(peak, x * hw.bandwidth_Bps), lw=1.2, label=f"{name} ceiling")
        ridge = peak / hw.bandwidth_Bps
        ax.plot([ridge], [peak], "k|", ms=10)
        ax.annotate(f"{name} ridge {ridge:.0f}", (ridge, peak), textcoords="offset points",
                    xytext=(4, 4), fontsize=7)
    channels = {o.bound for o in ops} & {"host", "link", "network"}
    for channel in sorted(channels):  # the survey's Figure 18: the roof of the slower path
        rate = hw.channel_bandwidth(channel)
        ax.plot(x, np.minimum(max(hw.peak.values()), x * rate), lw=1.2, ls="--",
                color=_BOUND_STYLE[channel][1], label=f"{channel} ceiling ({rate / 1e9:.0f} GB/s)")
    for bound, (marker, color) in _BOUND_STYLE.items():
        chosen = [o for o in ops if o.bound == bound]
        if not chosen:
            continue
        ax.scatter([_plotted_intensity(o, hw) for o in chosen], [o.attainable for o in chosen],
                   marker=marker, color=color, zorder=3, label=f"{bound}-bound op")
    # number the ops that matter (>= 2% of the stage's time) and list them in a box: op
    # names beside markers overlap wherever ops share an intensity
    notable = [o for o in sorted(ops, key=lambda o: -o.share) if o.share >= 0.02]
    for (x, y), numbers in _coinciding(notable):
        ax.annotate(",".join(map(str, numbers)), (x, y), textcoords="offset points",
                    xytext=(4, -11), fontsize=7, weight="bold")
    if notable:
        ax.text(0.01, 0.99, "\n".join(f"{i}  {o.name}: {100 * o.share:.0f}% of time"
                                      for i, o in enumerate(notable, 1)),
                transform=ax.transAxes, va="top", ha="left", fontsize=7, family="monospace",
                bbox=dict(boxstyle="round", facecolor="white", alpha=0.85, lw=0.5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (operations / byte)")
    ax.set_ylabel("attainable performance (operations / s)")
    s = analysis.settings
    ax.set_title(f"{analysis.model} {stage} on {hw.name} (batch {s.batch}, seq {s.seq})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def _plotted_intensity(o, hw) -> float:
    """Where an op sits: its intensity against device memory, or, for an op its transfers
    bound, its operations per byte of the channel it waits on (operations / (time x B))."""
    if o.bound in ("host", "link", "network"):
        return o.flops / (o.time_s * hw.channel_bandwidth(o.bound))
    return o.intensity


def _mark(ax, x, label, color="gray"):
    ax.axvline(x, color=color, ls="--", lw=1)
    ax.annotate(label, (x, 0.97), xycoords=("data", "axes fraction"), rotation=90,
                va="top", ha="right", fontsize=7, color=color)


def _within(x: np.ndarray, value) -> bool:
    return value is not None and x[0] <= value <= x[-1]


def stage(curve, path: str) -> str:
    """Stage time and throughput against batch or seq (a curves.StageCurve), with the first
    op's crossover and the stage's compute/memory balance marked."""
    plt = _pyplot()
    x = curve.x
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(x, curve.time_s * 1e3, color="tab:blue", label=f"{curve.stage} time")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(curve.symbol + (" (sequences)" if curve.symbol == "batch" else " (tokens)"))
    ax.set_ylabel(f"{curve.stage} time (ms)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(x, curve.tokens_per_s, color="tab:green", label="throughput")
    ax2.set_yscale("log")
    ax2.set_ylabel("throughput (tokens / s)", color="tab:green")
    if _within(x, curve.first_value):
        _mark(ax, curve.first_value,
              f"{curve.first_op} compute-bound at {curve.first_value:.0f}", "tab:red")
    if _within(x, curve.balance_value):
        _mark(ax, curve.balance_value, f"stage balance at {curve.balance_value:.0f}", "black")
    if not (_within(x, curve.first_value) or _within(x, curve.balance_value)):
        ax.text(0.99, 0.02, f"no op changes bound for {curve.symbol} in this range",
                transform=ax.transAxes, ha="right", fontsize=8, color="gray")
    fixed_text = ", ".join(f"{k} {v}" for k, v in curve.fixed.items())
    ax.set_title(f"{curve.model} {curve.stage} on {curve.hardware} ({fixed_text})")
    ax.grid(True, which="both", alpha=0.3)
    lines = ax.get_lines()[:1] + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=8, loc="upper left")
    return _save(fig, path)


def memory(curve, path: str) -> str:
    """Weights, KV cache and activation peak stacked against seq (a curves.MemoryCurve), with
    the capacity, the KV = weights crossing and the first context that does not fit."""
    plt = _pyplot()
    x, gb = curve.seq, 1e9
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.stackplot(x, curve.weights / gb, curve.kv_cache / gb, curve.activations / gb,
                 labels=["weights", "KV cache", "activations (peak)"],
                 colors=["tab:gray", "tab:orange", "tab:purple"], alpha=0.8)
    ax.axhline(curve.capacity_bytes / gb, color="red", lw=1.5,
               label=f"{curve.hardware} memory {curve.capacity_bytes / gb:.1f} GB")
    if _within(x, curve.kv_equals_weights):
        _mark(ax, curve.kv_equals_weights,
              f"KV cache = weights at {curve.kv_equals_weights:,.0f}")
    oom = curve.first_out_of_memory
    if oom is not None and oom > x[0]:
        _mark(ax, oom, f"out of memory from seq {oom:,.0f}", "red")
    ax.set_xscale("log")
    ax.set_yscale("log")  # weights are flat, the cache linear, attention scores quadratic
    ax.set_ylim(bottom=max(curve.weights.min() / gb / 3, 1e-3))
    ax.set_xlabel("seq (tokens per sequence)")
    ax.set_ylabel("memory (GB, stacked)")
    ax.set_title(f"{curve.model} memory, batch {curve.batch}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def serve(curve, model_name: str, hw, path: str) -> str:
    """Total tokens/s against time per output token, one point per batch size."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    tpot = curve.tpot_s * 1e3
    ok = curve.fits
    ax.plot(tpot, curve.tokens_per_s, color="tab:blue", lw=1, zorder=1)
    ax.scatter(tpot[ok], curve.tokens_per_s[ok], color="tab:blue", zorder=2, label="fits")
    ax.scatter(tpot[~ok], curve.tokens_per_s[~ok], color="tab:red", marker="x", zorder=2,
               label="out of memory")
    for b, xt, y in zip(curve.batch, tpot, curve.tokens_per_s):
        ax.annotate(f"b={int(b)}", (xt, y), textcoords="offset points", xytext=(4, -10),
                    fontsize=7)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time per output token (ms)")
    ax.set_ylabel("throughput (generated tokens / s, all users)")
    title = f"{model_name} on {hw.name}: prompt {curve.seq}, {curve.gen} generated"
    if curve.first_compute_batch:
        title += f"\ndecode turns compute-bound from batch {curve.first_compute_batch:.0f}"
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def _coinciding(notable) -> list[tuple[tuple[float, float], list[int]]]:
    """The numbers of the notable ops grouped by where their markers fall: ops within 3% of
    each other on both log axes share one label ("4,6,8"), the rest keep their own, each
    label placed at its group's first op (labels of coinciding ops would pile into a blob)."""
    groups: list[tuple[tuple[float, float], list[int]]] = []
    for i, o in enumerate(notable, 1):
        here = (o.intensity, o.attainable)
        for at, numbers in groups:
            if all(abs(np.log10(a / b)) < 0.013 for a, b in zip(here, at)):
                numbers.append(i)
                break
        else:
            groups.append((here, [i]))
    return groups


def predicted_vs_measured(measured, columns, hw_name: str, path: str) -> str:
    """Predicted against measured time per row, log axes, one marker per model of the time
    (ideal, calibrated, held-out), with the y = x line and +-10% band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.2, 5.6))
    times = np.array([m.row.time_s for m in measured])
    lo = min(times.min(), min(p.min() for _, p in columns)) / 1.5
    hi = max(times.max(), max(p.max() for _, p in columns)) * 1.5
    line = np.geomspace(lo, hi, 50)
    ax.fill_between(line, line / 1.1, line * 1.1, color="#59a14f", alpha=0.35, lw=0,
                    label="±10%", zorder=1)
    for k in (1 / 1.1, 1.1):
        ax.plot(line, line * k, color="#59a14f", lw=0.8, ls="--", zorder=1)
    ax.plot(line, line, color="black", lw=1, label="y = x", zorder=2)
    # held-out hollow and underneath, the calibrated fit filled on top: both stay visible
    style = {"held-out": dict(marker="o", facecolors="none", edgecolors="#e15759", s=26,
                              zorder=3),
             "calibrated": dict(marker="^", color="#4e79a7", s=12, zorder=4),
             "ideal": dict(marker="s", color="#bab0ac", s=10, alpha=0.6, zorder=2)}
    order = sorted(columns, key=lambda c: ("ideal", "held-out", "calibrated").index(
        _series(c[0])) if _series(c[0]) else -1)
    for name, predicted in order:
        ape = 100 * np.mean(np.abs(predicted - times) / times)
        ax.scatter(times, predicted, label=f"{name} (MAPE {ape:.1f}%)",
                   **style.get(_series(name), dict(marker="D", s=12, zorder=3)))
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
           xlabel="measured time (s)", ylabel="predicted time (s)",
           title=f"{hw_name}: {len(measured)} measured kernels")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(True, which="both", alpha=0.2)
    return _save(fig, path)


def _series(name: str) -> str | None:
    """Which of the validation's series a column is, from its name."""
    return next((k for k in ("held-out", "calibrated", "ideal") if k in name.lower()), None)


def speculative(curves, path: str) -> str:
    """Speculative decoding's speedup against the acceptance rate for each draft length (the
    break-even line marked), and against batch at the given rate and k."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
    cmap = plt.get_cmap("viridis")
    ks = sorted(curves.by_k)
    for i, k in enumerate(ks):
        left.plot(curves.accept_grid, curves.by_k[k], color=cmap(i / max(len(ks) - 1, 1)),
                  lw=2 if k == curves.k else 1, label=f"k = {k}")
    left.axhline(1, color="red", lw=1, ls="--", label="break-even")
    left.set(xlabel="acceptance rate", ylabel="speedup over plain decoding", xlim=(0, 1),
             title=f"batch {curves.batch}, {curves.seq} cached")
    left.legend(fontsize=7, ncol=2, loc="upper left")
    left.grid(True, alpha=0.3)
    right.plot(curves.batches, curves.speedup_by_batch, marker="o", ms=3, color="tab:blue")
    right.axhline(1, color="red", lw=1, ls="--")
    if _within(curves.batches, curves.stop_batch):
        _mark(right, curves.stop_batch, f"stops paying at batch {curves.stop_batch:.0f}",
              "black")
    right.set(xscale="log", xlabel="batch (sequences)", ylabel="speedup",
              title=f"k = {curves.k}, acceptance {curves.accept:g}")
    right.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{curves.model} with {curves.drafter} on {curves.hardware}")
    return _save(fig, path)


def rate(rows: list[dict], best, slo: dict, model: str, hw: str, path: str) -> str:
    """p99 TTFT and TPOT against the arrival rate, the SLO as lines, the largest rate meeting
    it marked (costdsl simulate --sweep-rate)."""
    plt = _pyplot()
    x = np.array([r["rate"] for r in rows])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for ax, key, name in ((top, "ttft_s", "TTFT"), (bottom, "tpot_s", "TPOT")):
        ax.plot(x, [r["p99"][key] for r in rows], marker="o", ms=3, label=f"p99 {name}")
        ax.plot(x, [r["p50"][key] for r in rows], marker=".", ms=3, ls=":",
                label=f"p50 {name}")
        limit = (slo or {}).get(key.split("_")[0])
        if limit is not None:
            ax.axhline(limit, color="red", ls="--", lw=1, label=f"SLO {name}")
        if best is not None:
            _mark(ax, best, f"max rate {best:.3g}/s", "green")
        ax.set_yscale("log")
        ax.set_ylabel(f"{name} (s)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    bottom.set_xlabel("arrival rate (requests / s)")
    top.set_title(f"{model} on {hw}: latency against load")
    return _save(fig, path)


def timeline(trace, model: str, hw: str, scheduler: str, path: str) -> str:
    """Batch size and KV blocks in use over one simulated run."""
    plt = _pyplot()
    t = np.array(trace.iteration_end)
    fig, ax = plt.subplots(figsize=(9, 5))
    ax.step(t, trace.iteration_batch, where="pre", lw=0.8, color="tab:blue",
            label="sequences in the iteration")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("batch (sequences)", color="tab:blue")
    right = ax.twinx()
    right.step(t, 100 * np.array(trace.iteration_blocks) / trace.pool_blocks, where="pre",
               lw=0.8, color="tab:orange", label="KV blocks in use")
    right.set_ylabel("KV blocks in use (% of the pool)", color="tab:orange")
    right.set_ylim(0, 105)
    ax.set_title(f"{model} on {hw}, {scheduler} scheduler: {len(trace.arrival)} requests")
    ax.grid(True, alpha=0.3)
    return _save(fig, path)



def pareto(result, path: str) -> str:
    """Every deployment the search sized, tokens/s per GPU against tokens/s per user, the
    frontier joined and the recommendation marked (costdsl search --plot)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for mode, marker in (("aggregated", "o"), ("disaggregated", "s")):
        points = [d for d in result.deployments if d.mode == mode]
        if points:
            ax.scatter([d.tokens_per_s_per_user for d in points],
                       [d.tokens_per_s_per_gpu for d in points], marker=marker, s=18,
                       alpha=0.5, label=mode)
    front = result.frontier
    ax.plot([d.tokens_per_s_per_user for d in front], [d.tokens_per_s_per_gpu for d in front],
            color="black", lw=1, label="Pareto frontier")
    best = result.recommendation
    ax.scatter([best.tokens_per_s_per_user], [best.tokens_per_s_per_gpu], marker="*", s=160,
               color="red", zorder=3, label=f"recommended ({best.gpus} GPUs)")
    ax.set_xlabel("tokens/s per user")
    ax.set_ylabel("tokens/s per GPU")
    ax.set_title(f"{result.model}: deployments meeting the SLO")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)
