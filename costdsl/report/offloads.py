"""Text and JSON forms of the offloading answers (analysis.offloading)."""
from __future__ import annotations

from . import printing


def offload_dict(answers: dict, batch: int) -> dict:
    """Per stage: each offloaded op's free fraction f* (formula in batch and value), the
    batch from which all of it is free, and the stage's free fraction (the least)."""
    out = {}
    for stage, items in answers.items():
        out[stage] = {
            "batch": batch,
            "free_fraction": min((a.value for a in items), default=None),
            "all_free_from_batch": max((a.free_from for a in items
                                        if a.free_from is not None), default=None),
            "ops": [{"op": a.op, "fraction": printing.text(a.fraction), "value": a.value,
                     "all_free_from_batch": a.free_from} for a in items]}
    return out


def offload_text(answers: dict, batch: int) -> str:
    lines = []
    for stage, items in answers.items():
        lines.append(f"{stage}: the fraction of each offloaded op's weights that can live in "
                     f"host memory without slowing it (f*, b = batch), at batch {batch}:")
        for a in items:
            free = (f"; all of it free from batch {a.free_from:,.0f}" if a.free_from is not None
                    else "; never all of it below 1e9")
            lines.append(f"  {a.op:24s} f* = {printing.text(a.fraction)} = {a.value:.3g}{free}")
        if items:
            least = min(items, key=lambda a: a.value)
            last = [a.free_from for a in items if a.free_from is not None]
            lines.append(f"  the step keeps its time offloading up to {least.value:.3g} of the "
                         f"selected weights (limited by {least.op})" +
                         (f"; offloading all of them is free from batch {max(last):,.0f}"
                          if len(last) == len(items) else ""))
        else:
            lines.append("  no op of this stage has offloaded weights")
    return "\n".join(lines) + "\n"
