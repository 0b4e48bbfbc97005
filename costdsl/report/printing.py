"""How expressions are printed in reports: short names for the runtime symbols."""
from __future__ import annotations

import functools
import re

_TEXT_NAMES = {"batch": "b", "seq": "s", "gen": "g"}
_LATEX_NAMES = {"batch": "b", "seq": "s", "gen": "g", "w_bits": r"\beta_w",
                "a_bits": r"\beta_a", "kv_bits": r"\beta_{kv}", "peak": "P", "bandwidth": "B"}
_MATHML_NAMES = {"batch": "b", "seq": "s", "gen": "g", "w_bits": "β_w", "a_bits": "β_a",
                 "kv_bits": "β_kv", "peak": "P", "bandwidth": "B"}
LEGEND = ("b = batch, s = seq (prompt length in prefill, cached tokens in decode), "
          "w_bits / a_bits / kv_bits = bitwidths of weights / activations / KV cache")
MATH_LEGEND = ("b = batch, s = seq (prompt length in prefill, cached tokens in decode), "
               "β_w / β_a / β_kv = bitwidths of weights / activations / KV cache, "
               "P = peak, B = bandwidth")
"""The legend of the typeset forms (LaTeX, MathML, Markdown math), which print the bitwidths
as β: each output names the symbols as it prints them."""


@functools.cache
def _symbols(names: str) -> dict:
    """The short names by the canonical symbol (sympy is loaded here: an expression to print
    means the compiler is loaded already)."""
    from .. import symbols as S
    return {getattr(S, name): short for name, short in globals()[names].items()}


def text(expr) -> str:
    import sympy
    expr = sympy.sympify(expr)
    out = sympy.sstr(expr.subs({s: sympy.Symbol(n) for s, n in _symbols("_TEXT_NAMES").items()}))
    return out.replace("**", "^").replace("*", "·")


def latex(expr) -> str:
    import sympy
    expr = sympy.sympify(expr)
    names = dict(_symbols("_LATEX_NAMES"))
    for symbol in expr.free_symbols:
        if symbol not in names:
            names[symbol] = r"\mathrm{" + symbol.name.replace("_", r"\_") + "}"
    return sympy.latex(expr, symbol_names=names, mul_symbol="dot")


def latex_escape(text: str) -> str:
    return re.sub(r"([_&%$#{}])", r"\\\1", text)


def mathml(expr) -> str:
    """Presentation MathML (the inside of a <math> element), with the report's short names."""
    import sympy
    expr = sympy.sympify(expr)
    names = {s: sympy.Symbol(n) for s, n in _symbols("_MATHML_NAMES").items()
             if s in expr.free_symbols}
    return sympy.mathml(expr.xreplace(names), printer="presentation")

