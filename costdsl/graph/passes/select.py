"""Selecting ops by name: comma-separated names or glob patterns (fnmatch), matched against an
op's name and, for a fused op, the names of the ops it was fused from."""
from __future__ import annotations

import difflib
from fnmatch import fnmatchcase

import networkx as nx

from ..schema import Node, nodes
from .registry import PassError


def patterns(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def matches(node: Node, pats: list[str]) -> bool:
    names = (node.name,) + node.fused_from
    return any(fnmatchcase(n, p) for p in pats for n in names)


def select(graph: nx.DiGraph, include: str | None, exclude: str | None = None,
           names: tuple[str, str] = ("ops", "exclude")) -> list[Node]:
    """The ops (in execution order) matching `include` (all when None) and not `exclude`.
    A pattern that matches no op is an error: it is almost always a typo."""
    ops = nodes(graph)
    for arg, text in zip(names, (include, exclude)):
        if text is not None and not patterns(text):  # ops="" is a slip, not "every op"
            raise PassError(f"{arg}= names no op", arg=arg,
                            hint=f"leave {arg}= out to mean every op, or give names or globs")
    inc, exc = patterns(include), patterns(exclude)
    for arg, p in [(names[0], p) for p in inc] + [(names[1], p) for p in exc]:
        if not any(matches(n, [p]) for n in ops):
            close = difflib.get_close_matches(p, [n.name for n in ops], 3)
            raise PassError(f"{arg} pattern {p!r} matches no op", arg=arg,
                            hint=("did you mean " + " or ".join(map(repr, close)) + "?") if close
                            else "ops: " + ", ".join(n.name for n in ops[:12]) +
                            (", ..." if len(ops) > 12 else ""))
    return [n for n in ops if (not inc or matches(n, inc)) and not matches(n, exc)]
