"""The AST of the .arch language: small frozen dataclasses, one per grammar rule that matters.

Each node carries its source position (`Pos`) so that later stages can point at the user's text.
Expressions stay as AST nodes here; `expr.to_sympy` turns them into sympy objects within a scope.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction


@dataclass(frozen=True)
class Pos:
    file: str
    line: int
    column: int


# --- expressions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Num:
    value: Fraction
    pos: Pos


@dataclass(frozen=True)
class Name:
    id: str
    pos: Pos


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / // ^
    left: "Expr"
    right: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Neg:
    operand: "Expr"
    pos: Pos


@dataclass(frozen=True)
class Func:
    name: str
    args: tuple["Expr", ...]
    pos: Pos


Expr = Num | Name | BinOp | Neg | Func


@dataclass(frozen=True)
class Free:
    """`name = ?`: a parameter left free, bound later (e.g. with --set)."""
    pos: Pos


# --- statements --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    name: str
    value: Expr | Free
    pos: Pos


@dataclass(frozen=True)
class TensorArg:
    name: str
    pos: Pos


@dataclass(frozen=True)
class KeywordArg:
    name: str
    value: Expr
    pos: Pos


@dataclass(frozen=True)
class Call:
    callee: str
    tensors: tuple[TensorArg, ...]
    keywords: tuple[KeywordArg, ...]
    pos: Pos


@dataclass(frozen=True)
class Assign:
    target: str
    call: Call
    repeat: Expr | None
    pos: Pos
    inline: bool = False  # a block whose ops take the caller's names (no instance prefix)


@dataclass(frozen=True)
class Return:
    name: str
    pos: Pos


Statement = Assign | Return


@dataclass(frozen=True)
class Block:
    name: str
    inputs: tuple[str, ...]
    body: tuple[Statement, ...]
    pos: Pos


@dataclass(frozen=True)
class PassArg:
    name: str
    value: "Expr | str | tuple"  # an expression, the text of a quoted string (op patterns),
                                 # or a bracketed list of expressions (a speculation tree)
    pos: Pos


@dataclass(frozen=True)
class PassCall:
    """`quantize(weights=4, ops="layers.*")`: one graph transformation and its arguments."""
    name: str
    args: tuple[PassArg, ...]
    pos: Pos
    text: str = ""   # the call as written, for reports


@dataclass(frozen=True)
class Model:
    name: str
    base: str | None
    params: tuple[Param, ...]
    body: tuple[Statement, ...]
    pos: Pos
    passes: tuple[PassCall, ...] = ()
    decoding: PassCall | None = None  # the decoding strategy section, if any


@dataclass(frozen=True)
class Import:
    path: str
    pos: Pos


@dataclass(frozen=True)
class Program:
    file: str
    imports: tuple[Import, ...]
    blocks: tuple[Block, ...]
    models: tuple[Model, ...]
