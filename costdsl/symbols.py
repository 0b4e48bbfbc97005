"""The canonical sympy symbols. Every module imports them from here, so that
`batch` in a cost rule and `batch` in a crossover solve are the same object."""
from __future__ import annotations

import functools

import sympy

# the limits, named here too
from .limits import BITS_RANGE, MAX_BITS, MAX_SIZE, MIN_BITS, is_bitwidth  # noqa: F401

batch = sympy.Symbol("batch", positive=True, integer=True)
"""Number of sequences processed together."""
seq = sympy.Symbol("seq", positive=True, integer=True)
"""Prefill: prompt length. Decode and the general step: tokens already in the KV cache before
the step."""
tokens = sympy.Symbol("tokens", positive=True, integer=True)
"""The general step: new tokens each sequence adds over `seq` cached ones (a speculative
verification of k + 1 tokens, a prefill chunk). Decode is the step with tokens = 1."""
gen = sympy.Symbol("gen", positive=True, integer=True)
"""Generated tokens of a whole request (used by latency analyses)."""
w_bits = sympy.Symbol("w_bits", positive=True)
a_bits = sympy.Symbol("a_bits", positive=True)
kv_bits = sympy.Symbol("kv_bits", positive=True)

peak = sympy.Symbol("peak", positive=True)
"""Operations/s of an op's compute type: a symbol in closed-form answers, then the hardware's."""
bandwidth = sympy.Symbol("bandwidth", positive=True)
"""Memory bandwidth in bytes/s: likewise."""

sram = sympy.Symbol("sram", positive=True)
"""On-chip memory one thread block can use, in bytes (the M of FlashAttention's IO analysis):
a symbol in the cost rules, the hardware's `sram_per_block` once a hardware file is chosen."""

l2 = sympy.Symbol("l2", nonnegative=True)
"""The chip's last-level cache (L2) in bytes: a symbol in the cost rules, the hardware's `l2`
once a hardware file is chosen (0 where the file gives none: every re-read goes off chip)."""

RUNTIME = {s.name: s for s in (batch, seq, tokens, gen, w_bits, a_bits, kv_bits)}
"""Symbols bound by the deployment, never by the model file."""

BITS_BY_CLASS = {"weight": w_bits, "act": a_bits, "kv": kv_bits}
"""Bitwidth symbol of each tensor class."""


DEFAULT_BITS = {"w_bits": 16, "a_bits": 16, "kv_bits": 16}


def model_param(name: str) -> sympy.Symbol:
    """A model parameter left free in a .arch file: a positive integer dimension."""
    return sympy.Symbol(name, positive=True, integer=True)


def to_bytes(elements, bits):
    """bytes = elements x bits / 8, the one place this conversion is written."""
    return elements * bits / 8


@functools.lru_cache(maxsize=4096)
def exact(x: float) -> sympy.Expr:
    """A hardware figure as the exact rational of its decimal form (1.39e-06 -> 139/10^8), so
    that formulas keep exact coefficients; nsimplify's search for a simpler form is costly and
    finds nothing simpler in a datasheet figure."""
    return sympy.oo if x == float("inf") else sympy.Rational(repr(float(x)))
