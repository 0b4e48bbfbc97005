"""Text and JSON forms of a deployment plan (analysis.plan.PlanResult)."""
from __future__ import annotations

from ..analysis.plan import Plan, layout_name
from .units import seconds, si
from .tables import priced_by


def plan_dict(r) -> dict:
    """{"plans": [...]} best first, each with the keys of Plan.as_dict; plus the question."""
    return {"model": r.model, "hardware": r.hardware, "devices": r.devices, "seq": r.seq,
            "gen": r.gen, "objective": r.objective, "reason": reason(list(r.plans), r.objective),
            "time_model": r.time_model, "stack": r.stack,
            "plans": [p.as_dict() for p in r.plans],
            "skipped": [{"layout": layout, "why": why} for layout, why in r.skipped]}


def plan_text(r) -> str:
    head = (f"{r.model} on {r.hardware} ({r.devices} devices), prompt {r.seq}, {r.gen} "
            f"generated, ranked by {r.objective}\n"
            f"time model: {priced_by(r.time_model, r.stack, r.framework)}")
    rows = [("tp", "pp", "ep", "w_bits", "batch", "memory/device", "fits", "TTFT", "TPOT",
             "tokens/s", "comm", "bubble")]
    for p in r.plans:
        rows.append((str(p.tp), str(p.pp), "tp" if p.experts == "ep" else str(p.ep),
                     f"{p.w_bits:g}", str(p.batch),
                     si(p.memory_per_device_bytes, "B"), "yes" if p.fits else "no",
                     seconds(p.ttft_s), seconds(p.tpot_s), f"{p.tokens_per_s:,.0f}",
                     f"{100 * p.communication_share:.0f}%", f"{100 * p.bubble_share:.0f}%"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [head, ""] + ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in rows]
    lines += ["", reason(list(r.plans), r.objective)]
    for layout, why in r.skipped:
        lines.append(f"skipped {layout}: {why}")
    return "\n".join(lines) + "\n"


def reason(plans: list[Plan], objective: str) -> str:
    """Why the best plan wins, in the quantities that decide it."""
    fitting = [p for p in plans if p.fits]
    if not fitting:
        smallest = min(plans, key=lambda p: p.memory_per_device_bytes, default=None)
        return ("no layout fits: the smallest needs "
                f"{smallest.memory_per_device_bytes / 1e9:.1f} GB per device "
                f"({layout_name(smallest.layout)}, {smallest.w_bits:g}-bit "
                "weights)") if smallest else "no layout could be built"
    best = fitting[0]
    text = [f"{_name(best)} wins on {objective}: TPOT {seconds(best.tpot_s)}, TTFT "
            f"{seconds(best.ttft_s)}, {best.tokens_per_s:.4g} tokens/s at batch {best.batch}"]
    if best.communication is not None:
        text.append(f"its collectives take {100 * best.communication_share:.0f}% of a decode "
                    f"step (communication per step = {best.communication} s)")
    if best.bubble_share:
        text.append(f"the pipeline bubble {100 * best.bubble_share:.0f}%")
    other = next((p for p in fitting[1:] if p.layout != best.layout), None)
    if other is not None:
        parts = [f"next layout {_name(other)}: TPOT {seconds(other.tpot_s)}"]
        if other.communication_share:
            parts.append(f"collectives {100 * other.communication_share:.0f}%")
        if other.bubble_share:
            parts.append(f"bubble {100 * other.bubble_share:.0f}%")
        text.append(", ".join(parts))
    return "; ".join(text)


def _name(p: Plan) -> str:
    return f"{layout_name(p.layout)} at {p.w_bits:g}-bit weights"
