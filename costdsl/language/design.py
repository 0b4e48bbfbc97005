"""The elaborated model ("design"): plain data between elaboration and lowering.

A design is stage-independent: every op instance with its resolved attributes, every tensor with
its width, and the resolved parameters. Lowering turns it into one op graph per stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import sympy

from .ast import PassCall, Pos


@dataclass(frozen=True)
class Tensor:
    name: str
    width: sympy.Expr
    rows: str            # "all", "last" or "ids" (the token ids fed to the model)
    producer: str | None  # op name; None for the model input
    cls: str = "act"      # "act", or "kv" for the K and V that attention keeps in its cache


@dataclass(frozen=True)
class OpInstance:
    name: str
    kind: str
    inputs: tuple[str, ...]
    output: str
    attrs: Mapping[str, object]  # sympy expressions for dimensions, str for choices
    repeat: sympy.Expr
    pos: Pos | None
    group: str | None = None  # the user-level op this one was expanded from (attention)


@dataclass(frozen=True)
class Design:
    name: str
    file: str
    params: Mapping[str, sympy.Expr]  # in definition order
    free: tuple[str, ...]             # parameters left free (symbols in the expressions)
    ops: tuple[OpInstance, ...]
    tensors: Mapping[str, Tensor]
    output: str | None
    passes: tuple[PassCall, ...] = ()  # the file's pass pipeline (base model's first)
    decoding: PassCall | None = None   # the decoding strategy (the nearest model's in extends)

    def tensor(self, name: str) -> Tensor:
        return self.tensors[name]
