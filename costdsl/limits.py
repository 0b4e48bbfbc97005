"""The sizes, bitwidths and stage names costdsl accepts: plain constants, so that the command
line can check its arguments without loading the compiler (sympy, networkx, lark)."""
from __future__ import annotations

MAX_SIZE = 10**9
"""The largest batch, sequence length, token count or generation length accepted. Far above
any deployment, and low enough that products of sizes and dimensions stay exact in float64 and
inside int64 (a batch of 1e20 would wrap to a negative number in an integer column)."""

MIN_BITS, MAX_BITS = 1, 64
"""A bitwidth is at least 1 (fractional widths such as 4.25, with a block's scales, are fine)
and at most 64."""
BITS_RANGE = f"[{MIN_BITS}, {MAX_BITS}]"


def is_bitwidth(value) -> bool:
    """True for a number in BITS_RANGE (NaN and infinities are not)."""
    try:
        return MIN_BITS <= float(value) <= MAX_BITS
    except (TypeError, ValueError):
        return False


STAGES = ("prefill", "decode")
"""The stages a request goes through, and what `--stage all` means."""
ALL_STAGES = STAGES + ("step", "chunk", "verify")
"""Every stage that can be lowered: the two above, the general step, a prompt chunk (the step
as a prefill path runs it: costs.CHUNK), and the verification step (the step with logits for
every new token)."""
STEP_STAGES = ("step", "chunk", "verify")
"""The stages sized by `tokens`."""

COMPRESSION_ARGS = {"prune": ("heads", "kv_heads", "ffn", "layers"), "low_rank": ("rank",),
                    "sparsify": ("weights",)}
"""The compression passes' arguments `crossover --solve` answers for."""
