"""Achieved fractions of the datasheet figures, and the fixed cost of a kernel launch.

A hardware file may carry an `[efficiency]` section (every figure with its source, as the rest
of the file):

    [efficiency]
    bandwidth = 0.82          # achieved fraction of datasheet bandwidth on streaming reads
    launch = "4 us"           # fixed cost per kernel: per op occurrence, after fusion
    [efficiency.compute]      # achieved fraction of peak, by compute type
    fp16 = 0.72
    [efficiency.attention]    # attention kernels (QK^T, softmax, xV, FlashAttention)
    bandwidth = 0.88
    compute = 0.60

Time of an op = max(operations / (eta_c peak), bytes / (eta_b bandwidth)) + launch. An op's
family picks its fractions: attention kernels use [efficiency.attention] where given, every
other op the top-level ones; a missing fraction is 1 (the datasheet figure). A fraction above 1
is allowed: a working set served from on-chip cache beats the off-chip roof.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

ATTENTION_KINDS = frozenset({"qk_matmul", "softmax", "sv_matmul", "flash_attention"})
"""Op kinds timed with the attention fractions (fused ops count when a member is one)."""

MAX_FRACTION = 4.0
"""The largest efficiency accepted: above 1 means on-chip reuse; 4x the datasheet is a typo."""


@dataclass(frozen=True)
class Efficiency:
    bandwidth: float = 1.0
    compute: Mapping[str, float] = field(default_factory=dict)
    launch_s: float = 0.0
    attention_bandwidth: float | None = None
    attention_compute: float | None = None
    source: str = ""  # where the figures come from (the comment calibrate writes)

    def bandwidth_for(self, family: str) -> float:
        if family == "attention" and self.attention_bandwidth is not None:
            return self.attention_bandwidth
        return self.bandwidth

    def compute_for(self, ctype: str, family: str) -> float:
        if family == "attention" and self.attention_compute is not None:
            return self.attention_compute
        return self.compute.get(ctype, 1.0)

    def as_dict(self) -> dict:
        out = {"bandwidth": self.bandwidth, "launch_s": self.launch_s,
               "compute": dict(self.compute)}
        if self.attention_bandwidth is not None or self.attention_compute is not None:
            out["attention"] = {"bandwidth": self.attention_bandwidth,
                                "compute": self.attention_compute}
        return out


def op_family(kind: str, fused_kinds=()) -> str:
    """"attention" for attention kernels, else "default"."""
    return "attention" if kind in ATTENTION_KINDS or set(fused_kinds) & ATTENTION_KINDS \
        else "default"


def parse_efficiency(table: dict, fail, parse_quantity) -> Efficiency:
    """The [efficiency] table of a hardware file. `fail(message, key)` makes the located error;
    `parse_quantity` reads "4 us"."""
    known = {"bandwidth", "launch", "compute", "attention", "source"}
    for key in table:
        if key not in known:
            raise fail(f"unknown key {key!r} in [efficiency]", f"efficiency.{key}",
                       "keys: bandwidth, launch, source, [efficiency.compute], "
                       "[efficiency.attention]")

    def fraction(value, key):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not 0 < value <= MAX_FRACTION:
            raise fail(f"efficiency {key} = {value!r}: expected a fraction in (0, "
                       f"{MAX_FRACTION:g}] of the datasheet figure", f"efficiency.{key}")
        return float(value)

    compute = table.get("compute", {})
    attention = table.get("attention", {})
    for name, sub in (("compute", compute), ("attention", attention)):
        if not isinstance(sub, dict):
            raise fail(f"[efficiency.{name}] must be a table", f"efficiency.{name}")
    for key in attention:
        if key not in ("bandwidth", "compute"):
            raise fail(f"unknown key {key!r} in [efficiency.attention]",
                       f"efficiency.attention.{key}",
                       "keys: bandwidth, compute")
    launch = 0.0
    if "launch" in table:
        try:
            launch = parse_quantity(table["launch"], "seconds", "efficiency.launch")
        except ValueError as err:
            raise fail(str(err), "efficiency.launch") from None
    return Efficiency(
        bandwidth=fraction(table.get("bandwidth", 1.0), "bandwidth"),
        compute={c: fraction(v, f"compute.{c}") for c, v in compute.items()},
        launch_s=launch,
        attention_bandwidth=(fraction(attention["bandwidth"], "attention.bandwidth")
                             if "bandwidth" in attention else None),
        attention_compute=(fraction(attention["compute"], "attention.compute")
                           if "compute" in attention else None),
        source=str(table.get("source", "")))
