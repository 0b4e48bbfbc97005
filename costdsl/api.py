"""The Python API: load a .arch file, get its graphs, analyse it on a hardware file.

    >>> import costdsl
    >>> m = costdsl.load("models/llama-2-7b.arch")
    >>> a = m.analyze("nvidia-a6000", batch=1, seq=2048)
    >>> a.stages["decode"].total.time_s
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Iterable, Mapping

import networkx as nx
import sympy

from . import ast
from .analysis import Analysis, Settings, stage_result
from .design import Design
from .elaborate import elaborate, load_library, parse_overrides
from .errors import EvaluationError
from .hardware import Hardware, load_hardware
from .lower import STAGES, lower
from .params import total_params
from .roofline import StageRoofline, roofline


class Model:
    """A compiled model: its design and, lazily, one op graph per stage."""

    def __init__(self, design: Design):
        self.design = design

    @property
    def name(self) -> str:
        return self.design.name

    @functools.cache
    def graph(self, stage: str) -> nx.DiGraph:
        return lower(self.design, stage)

    def params(self) -> sympy.Expr:
        """Total parameter count (a number, or an expression in the free parameters)."""
        return total_params(self.graph("prefill"))

    def roofline(self, hw: str | Hardware, stage: str, **bits) -> StageRoofline:
        hw = hw if isinstance(hw, Hardware) else load_hardware(hw)
        settings = Settings(1, 1, **bits)
        return roofline(self.graph(stage), hw, settings.bits())

    def analyze(self, hw: str | Hardware, batch: int, seq: int, w_bits: float = 16,
                a_bits: float = 16, kv_bits: float = 16,
                stages: Iterable[str] = STAGES) -> Analysis:
        hw = hw if isinstance(hw, Hardware) else load_hardware(hw)
        settings = Settings(batch, seq, w_bits, a_bits, kv_bits).validate()
        results = {}
        for stage in stages:
            symbolic = roofline(self.graph(stage), hw, settings.bits())
            results[stage] = stage_result(symbolic, settings)
        total = self.params()
        if not total.is_number:
            free = ", ".join(sorted(s.name for s in total.free_symbols))
            raise EvaluationError(f"parameter {free} is still free at evaluation",
                                  hint=f"bind it with --set NAME=VALUE")
        return Analysis(self.name, self.design.file, hw, settings,
                        {k: _number(v) for k, v in self.design.params.items()},
                        int(total), results)


def _number(v: sympy.Expr):
    if v.is_Integer:
        return int(v)
    return float(v) if v.is_number else str(v)


def load(path: str | Path, model: str | None = None,
         set: Mapping[str, object] | Iterable[str] | None = None, text: str | None = None) -> Model:
    """Compile a .arch file. `set` binds or overrides parameters: {"hidden": 4096} or
    ["hidden=4096"]; values are numbers or expression text, parsed, never evaluated as Python."""
    return Model(elaborate(load_library(path, text), model, _overrides(set)))


def _overrides(set) -> dict[str, ast.Expr] | None:
    if set is None:
        return None
    if isinstance(set, Mapping):
        set = [f"{k}={v}" for k, v in set.items()]
    return parse_overrides(list(set))
