"""Decoding strategies as written: `--decoding 'speculative(draft="tinyllama-1.1b", k=4,
accept=0.8)'` -> a checked `Decoding` record. The syntax is that of a pass call; each argument
is checked where it is written (file, line and column of the flag's text)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import sympy

from . import ast
from ..errors import CostDSLError, at
from .expr import to_sympy
from .parser import parse_passes

STRATEGIES = {"speculative": ("draft", "k", "accept", "tree"),
              "lookahead": ("window", "ngram", "guesses", "accept_per_step"),
              "medusa": ("heads", "layers", "accept", "tree", "lm_head"),
              "mtp": ("depth", "accept", "tree", "module")}
REQUIRED = {"speculative": ("draft", "accept"),
            "lookahead": ("window", "ngram", "guesses", "accept_per_step"),
            "medusa": ("accept",),
            "mtp": ("accept",)}
MEDUSA_LM_HEADS = ("shared", "own")
MAX_K = 64  # draft tokens per target step; real systems use 1 to 8


class DecodingError(CostDSLError):
    label = "decoding error"


@dataclass(frozen=True)
class Decoding:
    strategy: str
    draft: str      # the draft model: a .arch file or a shipped name (mtp: the module's model
                    # name, "" for the target's "<name>-MTP")
    k: int          # draft tokens per target step (a tree's depth)
    accept: float   # per-token acceptance probability, in [0, 1]
    pos: ast.Pos
    text: str
    tree: tuple[int, ...] | None = None  # candidates per level of a token tree (SpecInfer)
    lookahead: tuple[int, int, int] | None = None  # window W, n-gram N, guesses G
    medusa: tuple[int, int, str] | None = None  # heads, residual blocks per head, LM head

    def params(self) -> dict:
        if self.lookahead:
            w, n, g = self.lookahead
            return {"window": w, "ngram": n, "guesses": g, "accept_per_step": self.accept}
        if self.medusa:
            heads, layers, lm_head = self.medusa
            out = {"heads": heads, "layers": layers, "lm_head": lm_head, "k": self.k,
                   "accept": self.accept}
            return {**out, "tree": list(self.tree)} if self.tree else out
        out = ({"module": self.draft or None, "depth": self.k, "accept": self.accept}
               if self.strategy == "mtp" else
               {"draft": self.draft, "k": self.k, "accept": self.accept})
        return {**out, "tree": list(self.tree)} if self.tree else out


def parse_decoding(text: str, file: str = "--decoding", solving: str | None = None) -> Decoding:
    calls = parse_passes(text, file)
    if len(calls) != 1:
        raise DecodingError("give one decoding strategy", file=file,
                            hint='e.g. speculative(draft="tinyllama-1.1b", k=4, accept=0.8)')
    return decoding_of(calls[0], text, solving)


def decoding_of(call: ast.PassCall, text: str = "", solving: str | None = None) -> Decoding:
    """The checked strategy of a `decoding { ... }` section or a --decoding flag. `solving`
    "accept": the acceptance rate is the unknown, so it may be left out (it is then NaN)."""
    if call.name not in STRATEGIES:
        raise at(DecodingError, f"unknown decoding strategy {call.name!r}", call.pos,
                 hint="strategies: " + ", ".join(STRATEGIES))
    given = {}
    for arg in call.args:
        if arg.name not in STRATEGIES[call.name]:
            raise at(DecodingError, f"{call.name}() takes no argument {arg.name!r}", arg.pos,
                     hint="arguments: " + ", ".join(STRATEGIES[call.name]))
        if arg.name in given:
            raise at(DecodingError, f"argument {arg.name!r} given twice", arg.pos)
        given[arg.name] = arg
    missing = [a for a in REQUIRED[call.name] if a not in given
               and not (a == "accept" and solving == "accept")] + \
        ([] if call.name != "speculative" or "k" in given or "tree" in given else ["k"])
    if missing:
        raise at(DecodingError, f"{call.name}() needs {', '.join(a + '=' for a in missing)}",
                 call.pos, hint='e.g. speculative(draft="tinyllama-1.1b", k=4, accept=0.8)')
    if call.name == "lookahead":
        return _lookahead(call, given, text)
    if call.name == "medusa":
        return _medusa(call, given, text)
    if call.name == "mtp":
        return _mtp(call, given, text)
    draft = given["draft"]
    if not isinstance(draft.value, str):
        raise at(DecodingError, 'draft= takes a quoted model name or file, e.g. '
                 'draft="tinyllama-1.1b"', draft.pos)
    k, tree = _draft_steps(given, "k", "k draft tokens are verified per target step",
                           "a tree's depth is its k: give one of the two")
    return Decoding(call.name, draft.value, k, _accept(given.get("accept")), call.pos,
                    call.text or text, tree)


def _draft_steps(given: dict, name: str, hint: str, tree_hint: str
                 ) -> tuple[int, tuple[int, ...] | None]:
    """(draft steps per target step, the token tree or None) of a drafting strategy: the
    argument `name` (k=, depth=), else the tree's depth, else 1; from 1 to MAX_K and equal
    to the tree's depth where both are given."""
    tree = _tree(given["tree"]) if "tree" in given else None
    steps = _number(given[name]) if name in given else sympy.Integer(
        len(tree) if tree is not None else 1)
    if not (steps.is_integer and 1 <= steps <= MAX_K):
        raise at(DecodingError, f"{name}= must be an integer from 1 to {MAX_K}, got {steps}",
                 given[name].pos, hint=hint)
    if tree is not None and steps != len(tree):
        raise at(DecodingError, f"{name}={steps} but the tree has {len(tree)} levels",
                 given[name].pos, hint=tree_hint)
    return int(steps), tree


def _accept(arg: ast.PassArg | None) -> float:
    if arg is None:  # the unknown of `crossover --solve accept`
        return math.nan
    accept = _number(arg)
    if not 0 <= accept <= 1:
        raise at(DecodingError, f"accept= must be a probability in [0, 1], got {accept}",
                 arg.pos)
    return float(accept)


def _medusa(call: ast.PassCall, given: dict, text: str) -> Decoding:
    """medusa(heads=4, layers=1, accept=0.7, tree=[...], lm_head="shared") (Cai et al. 2024):
    the heads' top candidates verified in one pass of the target itself; a tree's depth is at
    most the number of heads (level l holds head l's candidates)."""
    sizes = {}
    for name, default in (("heads", 4), ("layers", 1)):
        v = _number(given[name]) if name in given else sympy.Integer(default)
        if not (v.is_integer and 1 <= v <= MAX_K):
            raise at(DecodingError, f"{name}= must be an integer from 1 to {MAX_K}, got {v}",
                     given[name].pos if name in given else call.pos)
        sizes[name] = int(v)
    lm_head = "shared"
    if "lm_head" in given:
        lm_head = given["lm_head"].value
        if not isinstance(lm_head, str) or lm_head not in MEDUSA_LM_HEADS:
            raise at(DecodingError, f"lm_head= takes {' or '.join(map(repr, MEDUSA_LM_HEADS))}",
                     given["lm_head"].pos,
                     hint='"shared": the model\'s LM head; "own": one projection per head')
    tree = _tree(given["tree"]) if "tree" in given else None
    if tree is not None and len(tree) > sizes["heads"]:
        raise at(DecodingError, f"tree={list(tree)} has {len(tree)} levels but there are "
                 f"{sizes['heads']} heads", given["tree"].pos,
                 hint="level l of the tree holds the candidates of head l")
    k = len(tree) if tree is not None else sizes["heads"]
    return Decoding(call.name, "", k, _accept(given.get("accept")), call.pos, call.text or text,
                    tree, medusa=(sizes["heads"], sizes["layers"], lm_head))


def _mtp(call: ast.PassCall, given: dict, text: str) -> Decoding:
    """mtp(depth=1, accept=0.8, tree=[...], module="NAME"): the model's own multi-token-
    prediction module as the draft (DeepSeek-V3's MTP, run by vLLM and SGLang as a speculative
    draft): `depth` draft steps per target step, each a pass of the module (reused when depth
    exceeds the modules trained); the module is the model `module` of the target's file, by
    default "<target>-MTP"."""
    depth, tree = _draft_steps(given, "depth", "depth: draft tokens the MTP module proposes "
                               "per step", "a tree's depth is its number of levels: give one")
    module = ""
    if "module" in given:
        module = given["module"].value
        if not isinstance(module, str) or not module:
            raise at(DecodingError, 'module= takes the quoted name of a model of the file, e.g. '
                     'module="DeepSeek-V3.2-MTP"', given["module"].pos)
    return Decoding(call.name, module, depth, _accept(given.get("accept")), call.pos,
                    call.text or text, tree)


MAX_TREE_NODES = 4096  # tokens one verification may carry


def _lookahead(call: ast.PassCall, given: dict, text: str) -> Decoding:
    """lookahead(window=W, ngram=N, guesses=G, accept_per_step=a) (Fu et al. 2024)."""
    sizes = []
    for name in ("window", "ngram", "guesses"):
        v = _number(given[name])
        low = 2 if name == "ngram" else 1
        if not (v.is_integer and low <= v <= MAX_TREE_NODES):
            raise at(DecodingError, f"{name}= must be an integer from {low} to "
                     f"{MAX_TREE_NODES}, got {v}", given[name].pos)
        sizes.append(int(v))
    w, n, g = sizes
    tokens = 1 + (w + g) * (n - 1)
    if tokens > MAX_TREE_NODES:
        raise at(DecodingError, f"a step of {tokens} tokens is more than {MAX_TREE_NODES}",
                 call.pos)
    a = _number(given["accept_per_step"])
    if not 1 <= a <= n:
        raise at(DecodingError, f"accept_per_step= is the tokens accepted per step, from 1 (none "
                 f"guessed right) to ngram={n}; got {a}", given["accept_per_step"].pos)
    return Decoding(call.name, "", tokens - 1, float(a), call.pos, call.text or text,
                    lookahead=(w, n, g))


def _tree(arg: ast.PassArg) -> tuple[int, ...]:
    """tree=[4, 2, 1]: candidates kept per level, each a positive integer."""
    if not isinstance(arg.value, tuple):
        raise at(DecodingError, "tree= takes a list of candidates per level, e.g. [4, 2, 1]",
                 arg.pos)
    widths = []
    for item in arg.value:
        w = to_sympy(item, {})
        if not (w.is_number and w.is_integer and w >= 1):
            raise at(DecodingError, f"tree= holds positive integers (candidates per level), "
                     f"got {w}", item.pos)
        widths.append(int(w))
    if len(widths) > MAX_K:
        raise at(DecodingError, f"tree= has {len(widths)} levels, more than {MAX_K} (a level "
                 "is a draft step)", arg.pos)
    nodes, frontier = 0, 1
    for w in widths:
        frontier *= w
        nodes += frontier
        if nodes > MAX_TREE_NODES:
            raise at(DecodingError, f"tree={widths} verifies more than {MAX_TREE_NODES} tokens "
                     "per step", arg.pos)
    return tuple(widths)


def _number(arg: ast.PassArg) -> sympy.Expr:
    if isinstance(arg.value, (str, tuple)):
        raise at(DecodingError, f"{arg.name}= takes a number", arg.pos)
    value = to_sympy(arg.value, {})
    if not value.is_number or not value.is_real or not value.is_finite:
        raise at(DecodingError, f"{arg.name}= must be a finite number, got {value}", arg.pos)
    return value
