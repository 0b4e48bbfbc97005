"""Text and JSON forms of the offloading answers (analysis.offloading)."""
from __future__ import annotations

from . import printing
from ..analysis.offloading import stage_offload


def offload_dict(answers: dict, batch: int) -> dict:
    """Per stage: each offloaded op's free fraction f* (formula in batch and value), the
    batch from which all of it is free, and the stage's free fraction (the least)."""
    out = {}
    for stage, items in answers.items():
        whole = stage_offload(items)
        out[stage] = {
            "batch": batch,
            "free_fraction": whole.value,
            "limited_by": whole.limited_by,
            "all_free_from_batch": whole.all_free_from,
            "negligible": list(whole.left_out),
            "ops": [{"op": a.op, "fraction": printing.text(a.fraction), "value": a.value,
                     "all_free_from_batch": a.free_from, "weight_share": a.weight_share,
                     "negligible": a.negligible} for a in items]}
    return out


def offload_text(answers: dict, batch: int) -> str:
    lines = []
    for stage, items in answers.items():
        lines.append(f"{stage}: the fraction of each offloaded op's weights that can live in "
                     f"host memory without slowing it (f*, b = batch), at batch {batch}:")
        for a in items:
            free = (f"; all of it free from batch {a.free_from:,.0f}" if a.free_from is not None
                    else "; never all of it below 1e9")
            small = (f" (negligible: {a.weight_share:.1e} of the selected weights)"
                     if a.negligible else "")
            lines.append(f"  {a.op:24s} f* = {printing.text(a.fraction)} = {a.value:.3g}"
                         f"{free}{small}")
        whole = stage_offload(items)
        if whole.value is not None:
            lines.append(f"  the step keeps its time offloading up to {whole.value:.3g} of the "
                         f"selected weights (limited by {whole.limited_by})" +
                         (f"; offloading all of them is free from batch "
                          f"{whole.all_free_from:,.0f}" if whole.all_free_from is not None
                          else ""))
        elif not items:
            lines.append("  no op of this stage has offloaded weights")
        if whole.left_out:
            lines.append(f"  left out of the stage's answer, their weights negligible: "
                         f"{', '.join(whole.left_out)}")
    return "\n".join(lines) + "\n"
