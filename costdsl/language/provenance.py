"""Where a value came from: the parameter definitions an expression depends on.

A dimension is often written in a shipped family file (`dim=hidden` in models/llama.arch) while
its value is set by the user (`hidden = 4096.5` in their own file, or `--set`). An error about
that value should point at the user's line; this module finds it by following the parameter
names an expression uses back to where each was defined, without recursion.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from . import ast

OVERRIDE_FLAGS = ("--set", "--variant")
"""The flags whose values override parameters: what the user wrote, located by the flag."""


def names_in(node) -> list[str]:
    """Every name an expression (or a list of them) reads, in order of appearance."""
    found, stack = [], list(reversed(node)) if isinstance(node, (list, tuple)) else [node]
    while stack:
        item = stack.pop()
        if isinstance(item, ast.Name):
            found.append(item.id)
        elif isinstance(item, ast.BinOp):
            stack += [item.right, item.left]
        elif isinstance(item, ast.Neg):
            stack.append(item.operand)
        elif isinstance(item, ast.Func):
            stack += list(reversed(item.args))
    return found


@dataclass(frozen=True)
class Origins:
    """Parameter name -> (where its value is written, the expression written there)."""
    defs: Mapping[str, tuple[ast.Pos, object]]
    root: str  # the file the user loaded

    def users(self, expr) -> list[str]:
        """The parameters behind `expr` (transitively) that the user wrote: given with --set,
        else defined in the loaded file. Empty when every one comes from a shipped file."""
        order, seen, todo = [], set(), list(reversed(names_in(expr)))
        while todo:
            name = todo.pop()
            if name in seen or name not in self.defs:
                continue
            seen.add(name)
            order.append(name)
            value = self.defs[name][1]
            if not isinstance(value, ast.Free):
                todo += list(reversed(names_in(value)))
        flagged = [n for n in order if self.defs[n][0].file.startswith(OVERRIDE_FLAGS)]
        return flagged or [n for n in order if self.defs[n][0].file == self.root]

    def locate(self, expr, use: ast.Pos, what: str) -> tuple[ast.Pos, str]:
        """The position to report a bad value of `expr` at, and a note naming the use site
        when that position is the user's definition rather than the use."""
        names = self.users(expr)
        if not names or use.file == self.root:
            return use, ""
        pos = self.defs[names[0]][0]
        listed = " and ".join(repr(n) for n in names)
        noun = "parameters" if len(names) > 1 else "parameter"
        return pos, f" (from {noun} {listed}, used as {what} at {use.file}:{use.line})"
