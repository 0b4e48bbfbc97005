"""Plots (matplotlib, PNG or SVG by the file's suffix). Each takes analysis results or the
compiled model and writes one figure; nothing here computes a cost of its own.

    roofline  the hardware's roofline, one ceiling per compute type, every op of a stage on it
    batch     stage time and throughput against batch, crossovers annotated
    seq       stage time against seq, crossovers annotated
    memory    weights, KV cache and activations stacked against seq, with the capacity
    serve     throughput against latency over batch, memory limit and compute-bound marked
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import CostDSLError
from . import symbols as S

KINDS = ("roofline", "batch", "seq", "memory", "serve")
_BOUND_STYLE = {"memory": ("o", "tab:blue"), "compute": ("^", "tab:red")}


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
    for bound, (marker, color) in _BOUND_STYLE.items():
        chosen = [o for o in ops if o.bound == bound]
        ax.scatter([o.intensity for o in chosen], [o.attainable for o in chosen], marker=marker,
                   color=color, zorder=3, label=f"{bound}-bound op")
    # number the ops that matter (>= 2% of the stage's time) and list them in a box: op
    # names beside markers overlap wherever ops share an intensity
    notable = [o for o in sorted(ops, key=lambda o: -o.share) if o.share >= 0.02]
    for i, o in enumerate(notable, 1):
        ax.annotate(str(i), (o.intensity, o.attainable), textcoords="offset points",
                    xytext=(3 + 7 * (i % 3), -11 - 6 * (i % 2)), fontsize=7, weight="bold")
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


def _mark(ax, x, label, color="gray"):
    ax.axvline(x, color=color, ls="--", lw=1)
    ax.annotate(label, (x, 0.97), xycoords=("data", "axes fraction"), rotation=90,
                va="top", ha="right", fontsize=7, color=color)


def against(model, hw, stage: str, symbol: str, values: np.ndarray, fixed: dict, bits: dict,
            path: str) -> str:
    """Stage time and throughput against batch or seq, with the first op's crossover and the
    stage's compute/memory balance marked."""
    from .analysis import Settings
    from .evaluate import stage_time
    plt = _pyplot()
    settings = Settings(1, 1, **bits).validate()
    symbolic = model._roofline(stage, hw, settings)
    x = values.astype(float)
    grid = {**settings.values(), **{getattr(S, k): v for k, v in fixed.items()},
            getattr(S, symbol): x}
    t = stage_time(symbolic, grid)
    tokens = (grid[S.batch] * (grid[S.seq] if stage == "prefill" else 1)) * np.ones_like(x)
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.plot(x, t * 1e3, color="tab:blue", label=f"{stage} time")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(symbol + (" (sequences)" if symbol == "batch" else " (tokens)"))
    ax.set_ylabel(f"{stage} time (ms)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(x, tokens / t, color="tab:green", label="throughput")
    ax2.set_yscale("log")
    ax2.set_ylabel("throughput (tokens / s)", color="tab:green")
    answer = model.crossover(symbol, hw, stage, **{k: int(v) for k, v in fixed.items()}, **bits)
    first = answer.summary.first_compute_bound
    if first and first.value and x[0] <= first.value <= x[-1]:
        _mark(ax, first.value, f"{first.op} compute-bound at {first.value:.0f}", "tab:red")
    bal = answer.summary.balance_value
    if bal and x[0] <= bal <= x[-1]:
        _mark(ax, bal, f"stage balance at {bal:.0f}", "black")
    if not ((first and first.value and x[0] <= first.value <= x[-1])
            or (bal and x[0] <= bal <= x[-1])):
        ax.text(0.99, 0.02, f"no op changes bound for {symbol} in this range",
                transform=ax.transAxes, ha="right", fontsize=8, color="gray")
    fixed_text = ", ".join(f"{k} {v}" for k, v in fixed.items())
    ax.set_title(f"{model.name} {stage} on {hw.name} ({fixed_text})")
    ax.grid(True, which="both", alpha=0.3)
    lines = ax.get_lines()[:1] + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=8, loc="upper left")
    return _save(fig, path)


def memory(model, hw, batch: int, seqs: np.ndarray, bits: dict, path: str) -> str:
    """Weights, KV cache and activation peak (the larger stage) stacked against seq."""
    from .analysis import Settings
    from .memory import evaluate_memory
    plt = _pyplot()
    base = Settings(batch, 1, **bits).validate().values()
    x = seqs.astype(float)
    parts = {}
    for stage in ("prefill", "decode"):
        w, kv, act = evaluate_memory(model.memory(stage), {**base, S.seq: x})
        parts[stage] = (w, kv, act)
    pick = np.argmax([sum(parts[s]) for s in parts], axis=0)
    w, kv, act = (np.choose(pick, [parts["prefill"][i], parts["decode"][i]]) for i in range(3))
    gb = 1e9
    fig, ax = plt.subplots(figsize=(8, 5))
    ax.stackplot(x, w / gb, kv / gb, act / gb, labels=["weights", "KV cache", "activations (peak)"],
                 colors=["tab:gray", "tab:orange", "tab:purple"], alpha=0.8)
    ax.axhline(hw.memory_bytes / gb, color="red", lw=1.5,
               label=f"{hw.name} memory {hw.memory_bytes / gb:.1f} GB")
    f = model.fit(hw, seq=int(x[-1]), batch=batch, **bits)
    if f.kv_crossover_value and x[0] <= f.kv_crossover_value <= x[-1]:
        _mark(ax, f.kv_crossover_value, f"KV cache = weights at {f.kv_crossover_value:,.0f}")
    over = np.nonzero(w + kv + act > hw.memory_bytes)[0]
    if len(over) and over[0] > 0:
        _mark(ax, x[over[0]], f"out of memory from seq {x[over[0]]:,.0f}", "red")
    ax.set_xscale("log")
    ax.set_yscale("log")  # weights are flat, the cache linear, attention scores quadratic
    ax.set_ylim(bottom=max(w.min() / gb / 3, 1e-3))
    ax.set_xlabel("seq (tokens per sequence)")
    ax.set_ylabel("memory (GB, stacked)")
    ax.set_title(f"{model.name} memory, batch {batch}")
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
