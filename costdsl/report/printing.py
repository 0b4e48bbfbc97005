"""How expressions are printed in reports: short names for the runtime symbols."""
from __future__ import annotations

import re

import sympy

from .. import symbols as S

_TEXT_NAMES = {S.batch: "b", S.seq: "s", S.gen: "g"}
_LATEX_NAMES = {S.batch: "b", S.seq: "s", S.gen: "g", S.w_bits: r"\beta_w",
                S.a_bits: r"\beta_a", S.kv_bits: r"\beta_{kv}", S.peak: "P", S.bandwidth: "B"}
LEGEND = ("b = batch, s = seq (prompt length in prefill, cached tokens in decode), "
          "w_bits / a_bits / kv_bits = bitwidths of weights / activations / KV cache")
MATH_LEGEND = ("b = batch, s = seq (prompt length in prefill, cached tokens in decode), "
               "β_w / β_a / β_kv = bitwidths of weights / activations / KV cache, "
               "P = peak, B = bandwidth")
"""The legend of the typeset forms (LaTeX, MathML, Markdown math), which print the bitwidths
as β: each output names the symbols as it prints them."""


def text(expr) -> str:
    expr = sympy.sympify(expr)
    out = sympy.sstr(expr.subs({s: sympy.Symbol(n) for s, n in _TEXT_NAMES.items()}))
    return out.replace("**", "^").replace("*", "·")


def latex(expr) -> str:
    expr = sympy.sympify(expr)
    names = dict(_LATEX_NAMES)
    for symbol in expr.free_symbols:
        if symbol not in names:
            names[symbol] = r"\mathrm{" + symbol.name.replace("_", r"\_") + "}"
    return sympy.latex(expr, symbol_names=names, mul_symbol="dot")


def latex_escape(text: str) -> str:
    return re.sub(r"([_&%$#{}])", r"\\\1", text)


_MATHML_NAMES = {S.batch: "b", S.seq: "s", S.gen: "g", S.w_bits: "β_w", S.a_bits: "β_a",
                 S.kv_bits: "β_kv", S.peak: "P", S.bandwidth: "B"}


def mathml(expr) -> str:
    """Presentation MathML (the inside of a <math> element), with the report's short names."""
    expr = sympy.sympify(expr)
    names = {s: sympy.Symbol(n) for s, n in _MATHML_NAMES.items() if s in expr.free_symbols}
    return sympy.mathml(expr.xreplace(names), printer="presentation")

