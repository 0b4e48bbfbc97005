"""Stage 2: AST -> Design. Resolves `extends`, parameters, blocks and `repeat`, checks
shapes, and expands composite ops (attention) into the ops that really run.

Parameters are evaluated top to bottom: a parameter may use only those defined above it. A block
sees the parameters of the model that instantiates it, plus the keyword arguments of the call.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Mapping

import sympy

from . import ast
from .design import Design, OpInstance, Tensor
from ..errors import ArchError, ArchNameError, CostDSLError, ShapeError, at
from .expr import shown, to_sympy
from .ops import (BOOL, SIGNATURES, Choice, Ref, TensorInfo, attention_dims, require_equal,
                  user_kinds)
from .library import Library
from .parser import parse_expr
from .provenance import Origins, names_in
from ..names import did_you_mean
from ..symbols import RUNTIME, model_param

RESERVED = {"peak", "bandwidth", "sram"}
"""Symbols the hardware file binds: a parameter of the same name would print like them."""

MODEL_INPUT = "tokens"

CYCLE = "cycle"
"""The built-in that stacks layers of several kinds in a repeating pattern (`layer_types`)."""


def layers_at(layers: sympy.Expr, place: int, period: int) -> sympy.Expr:
    """How many of `layers` layers fall on place `place` of a pattern of `period` places
    (layers place, place + period, ...): ceil((L - place) / period), none when L <= place.
    A free L is assumed to cover the pattern once."""
    count = sympy.ceiling((layers - place) / sympy.Integer(period))
    return sympy.Max(count, 0) if count.is_number else count


# --- models and parameters ----------------------------------------------------------------------

def pick_model(library: Library, name: str | None) -> ast.Model:
    if name is not None:
        if name not in library.models:
            raise CostDSLError(f"no model named {name!r} in {library.root.file}",
                               hint="models here: " + ", ".join(library.models) or "none")
        return library.models[name]
    if not library.root.models:
        raise CostDSLError(f"{library.root.file} defines no model", file=library.root.file,
                           hint="a file needs `model \"name\" { ... }`; blocks alone cannot run")
    return library.root.models[-1]


def _flatten(model: ast.Model, library: Library):
    """Parameters, body and passes of a model with its `extends` chain resolved: a model's
    passes run after those of the model it extends."""
    chain, current = [], model
    while current.base is not None:
        if current.base not in library.models:
            raise at(ArchNameError, f"model {current.name!r} extends unknown model "
                     f"{current.base!r}", current.pos, hint=_suggest(current.base, library.models))
        chain.append(current)
        base = library.models[current.base]
        if base is current and library.shadowed.get(current.base):
            base = library.shadowed[current.base][-1]  # extends the imported model of its name
        current = base
        if current in chain:
            raise at(ArchError, f"model {current.name!r} extends itself", current.pos)
    chain.append(current)
    params: dict[str, ast.Param] = {}
    body: tuple = ()
    passes: tuple = ()
    decoding = None
    for m in reversed(chain):  # base first; each child overrides values, keeps their order
        here: dict[str, ast.Param] = {}
        for p in m.params:
            if p.name in here:
                raise at(ArchError, f"parameter {p.name!r} is defined twice in one params "
                         f"block (first at line {here[p.name].pos.line})", p.pos)
            here[p.name] = p
            params[p.name] = p
        body = m.body or body
        passes += m.passes
        decoding = m.decoding or decoding
    return list(params.values()), body, passes, decoding


def evaluate_params(params: list[ast.Param], overrides: Mapping[str, ast.Expr] | None = None):
    """Parameters in definition order -> (name -> sympy value, names left free, name -> (where
    the value is written, its expression))."""
    overrides = dict(overrides or {})
    known = {p.name for p in params}
    for name in overrides:
        if name not in known:
            raise CostDSLError(f"--set {name}: the model has no parameter {name!r}",
                               hint=_suggest(name, known))
    order = [p.name for p in params]
    values: dict[str, sympy.Expr] = {}
    free: list[str] = []
    defs: dict[str, tuple[ast.Pos, object]] = {}
    for p in params:
        if p.name in RUNTIME or p.name in RESERVED:
            raise at(ArchError, f"{p.name!r} is set by the deployment, not the model", p.pos,
                     hint="batch, seq, tokens, gen and the bitwidths come from the command "
                          "line; peak, bandwidth and sram from the hardware file: name the "
                          "parameter differently")
        value = overrides.get(p.name, p.value)
        defs[p.name] = (getattr(value, "pos", None) or p.pos, value)
        if isinstance(value, ast.Free):
            values[p.name] = model_param(p.name)
            free.append(p.name)
            continue

        def undefined(node, here=p.name):
            if node.id in known and order.index(node.id) >= order.index(here):
                return at(ArchNameError, f"parameter {node.id!r} is used before it is defined",
                          node.pos, hint="define parameters above the ones that use them")
            return at(ArchNameError, f"name {node.id!r} is not defined", node.pos,
                      hint=_suggest(node.id, known))
        values[p.name] = to_sympy(value, values, undefined)
    return values, tuple(free), defs


def block_names(block: ast.Block, blocks: Mapping[str, ast.Block]) -> set[str]:
    """The names a block's ops read in their attributes, repeat counts and keywords, with those
    of the blocks it calls: the parameters a keyword at its call may override."""
    found, seen, todo = set(), set(), [block]
    while todo:
        current = todo.pop()
        if current.name in seen:
            continue
        seen.add(current.name)
        for stmt in current.body:
            if not isinstance(stmt, ast.Assign):
                continue
            for kw in stmt.call.keywords:
                found.update(names_in(kw.value))
            if stmt.repeat is not None:
                found.update(names_in(stmt.repeat))
            if stmt.call.callee in blocks:
                todo.append(blocks[stmt.call.callee])
            elif stmt.call.callee == CYCLE:
                todo += [blocks[n] for n in _cycle_blocks(stmt.call) if n in blocks]
    return found


def _cycle_blocks(call: ast.Call) -> list[str]:
    return [a.name for a in call.tensors[1:]] + [kw.name for kw in call.keywords]


def _suggest(name: str, options) -> str | None:
    return did_you_mean(name, options)


# --- the body -----------------------------------------------------------------------------------

MAX_BLOCK_NESTING = 200
"""How deeply block instances may nest (a block calling a block calling ...): a stated limit
instead of Python's recursion limit."""


class _Elaborator:
    def __init__(self, library: Library, params: Mapping[str, sympy.Expr], origins: Origins):
        self.library = library
        self.params = params
        self.origins = origins
        self.active: list[str] = []  # the blocks being instantiated, outermost first
        self.ops: list[OpInstance] = []
        self.tensors: dict[str, Tensor] = {}
        self.kv: set[str] = set()
        self.defined_at: dict[str, ast.Pos] = {}
        self.by_name: dict[str, OpInstance] = {}

    def run(self, body) -> str | None:
        model_input = Tensor(MODEL_INPUT, sympy.Integer(1), "ids", None)
        self.tensors[MODEL_INPUT] = model_input
        return self.body(body, {MODEL_INPUT: model_input}, self.params, "", sympy.Integer(1),
                         block=None)

    def body(self, statements, scope, params, prefix, repeat, block) -> str | None:
        scope = dict(scope)
        returned = None
        for i, stmt in enumerate(statements):
            if isinstance(stmt, ast.Return):
                if i != len(statements) - 1:
                    raise at(ArchError, "`return` must be the last statement", stmt.pos)
                returned = self.lookup(stmt.name, scope, stmt.pos).name
                continue
            full = prefix + stmt.target
            if stmt.target in scope or (full in self.defined_at and not stmt.inline):
                first = self.defined_at.get(full)
                where = f" (at {first.file}:{first.line})" if first else ""
                raise at(ArchError, f"{stmt.target!r} is already defined{where}", stmt.pos,
                         hint="each op names a new tensor; give this one another name")
            if not stmt.inline:  # an inlined block's ops claim their own names
                self.defined_at[full] = stmt.pos
            scope[stmt.target] = self.statement(stmt, scope, params, prefix, repeat)
        if block is not None and returned is None:
            raise at(ArchError, f"block {block.name!r} must end with `return NAME`", block.pos)
        return returned

    def lookup(self, name: str, scope, pos) -> Tensor:
        if name not in scope:
            raise at(ArchNameError, f"tensor {name!r} is not defined", pos,
                     hint=_suggest(name, scope) or "inputs must be defined above their use")
        return scope[name]

    def statement(self, stmt: ast.Assign, scope, params, prefix, repeat) -> Tensor:
        call = stmt.call
        if call.callee == CYCLE and call.callee not in self.library.blocks:
            return self.cycle(stmt, scope, params, prefix, repeat)
        inputs = [self.lookup(a.name, scope, a.pos) for a in call.tensors]
        if call.callee in self.library.blocks:
            return self.instantiate(stmt, inputs, params, prefix, repeat)
        if stmt.inline:
            raise at(ArchError, "`inline` applies to blocks, not to single ops", stmt.pos)
        if call.callee not in SIGNATURES or SIGNATURES[call.callee].internal:
            known = user_kinds() + sorted(self.library.blocks)
            raise at(ArchNameError, f"unknown op {call.callee!r}", call.pos,
                     hint=_suggest(call.callee, known) or "ops are " + ", ".join(user_kinds()))
        if stmt.repeat is not None:
            raise at(ArchError, "`repeat` applies to blocks, not to single ops", stmt.repeat.pos)
        return self.op(stmt, inputs, params, prefix, repeat, scope)

    def instantiate(self, stmt, inputs, params, prefix, repeat) -> Tensor:
        block = self.library.blocks[stmt.call.callee]
        self.check_call(block, inputs, stmt.call.pos)
        inner = dict(params)
        used = block_names(block, self.library.blocks)
        for kw in stmt.call.keywords:
            if kw.name not in used:
                raise at(ArchNameError, f"block {block.name!r} uses no parameter {kw.name!r}",
                         kw.pos, hint=_suggest(kw.name, used & set(params)) or
                         "a block's keywords override the parameters its ops use")
            if kw.name in [k.name for k in stmt.call.keywords[:stmt.call.keywords.index(kw)]]:
                raise at(ArchError, f"keyword {kw.name!r} is given twice", kw.pos)
            inner[kw.name] = to_sympy(kw.value, params)
        count = self.repeat_count(stmt, params) if stmt.repeat is not None else sympy.Integer(1)
        inner_prefix = prefix if stmt.inline else f"{prefix}{stmt.target}."
        carried = stmt.pos if stmt.repeat is not None else None
        return self.run_block(block, inputs, inner, inner_prefix, repeat * count, carried)

    def check_call(self, block: ast.Block, inputs, pos) -> None:
        if block.name in self.active:
            cycle = " -> ".join(self.active[self.active.index(block.name):] + [block.name])
            raise at(ArchError, f"block {block.name!r} calls itself ({cycle})", pos,
                     hint="a block cannot contain itself; use `repeat` to stack layers")
        if len(self.active) >= MAX_BLOCK_NESTING:
            raise at(ArchError, f"blocks nest more than {MAX_BLOCK_NESTING} deep", pos)
        if len(inputs) != len(block.inputs):
            raise at(ArchError, f"block {block.name!r} takes {len(block.inputs)} input(s) "
                     f"({', '.join(block.inputs)}), got {len(inputs)}", pos)

    def repeat_count(self, stmt, params) -> sympy.Expr:
        count = to_sympy(stmt.repeat, params)
        if count.is_number and not (count.is_integer and count >= 1):
            pos, note = self.origins.locate(stmt.repeat, stmt.repeat.pos, "a repeat count")
            raise at(ArchError, f"repeat count must be a positive integer, got {shown(count)}"
                     f"{note}", pos)
        return count

    def run_block(self, block, inputs, params, prefix, repeat, carried_at) -> Tensor:
        """The block's ops under `prefix`, each occurring `repeat` times. `carried_at`: the
        position of a statement that stacks the block, whose output must be as wide as its
        input (None when it runs once)."""
        scope = dict(zip(block.inputs, inputs))
        self.active.append(block.name)
        out = self.body(block.body, scope, params, prefix, repeat, block)
        self.active.pop()
        result = self.tensors[out]
        if carried_at is not None:
            try:
                require_equal(result.width, inputs[0].width,
                              f"a repeated block must return what it takes: output "
                              f"{result.name!r} and input {inputs[0].name!r} differ in width")
            except ShapeError as err:
                raise at(ShapeError, err.message, carried_at) from None
        return result

    def cycle(self, stmt, scope, params, prefix, repeat) -> Tensor:
        """`t = cycle(x, a, b, ...) repeat L`: L layers, layer i running the block at place
        i mod P of the pattern (P entries; `a=5, b=1` writes five a's then one b). Each block
        of the pattern becomes one instance, `t.a`, repeated as many times as it holds layers:
        costs are sums over layers, so the order inside the stack changes no figure."""
        call = stmt.call
        if stmt.inline:
            raise at(ArchError, "`inline` applies to blocks, not to cycle()", stmt.pos)
        if stmt.repeat is None:
            raise at(ArchError, "cycle() needs `repeat N`: the number of layers the pattern is "
                     "cycled over", call.pos, hint="e.g. layers = cycle(embed, local, "
                     "local, global) repeat layers")
        if not call.tensors:
            raise at(ArchError, "cycle() takes the input tensor first, then the blocks of the "
                     "pattern", call.pos)
        x = self.lookup(call.tensors[0].name, scope, call.tensors[0].pos)
        layers = self.repeat_count(stmt, params)
        pattern = self.pattern(call, params)
        counts: dict[str, sympy.Expr] = {}
        for place, (name, _) in enumerate(pattern):
            counts[name] = counts.get(name, 0) + layers_at(layers, place, len(pattern))
        where = {name: pos for name, pos in reversed(pattern)}  # first appearance
        tensor = x
        for name, count in counts.items():
            if count == 0:
                continue
            block = self.library.blocks[name]
            self.check_call(block, [tensor], where[name])
            tensor = self.run_block(block, [tensor], dict(params),
                                    f"{prefix}{stmt.target}.{name}.", repeat * count, where[name])
        return tensor

    def pattern(self, call, params) -> list[tuple[str, ast.Pos]]:
        """The blocks of a cycle() in order, one entry per layer of the period."""
        named = [(a.name, a.pos, sympy.Integer(1)) for a in call.tensors[1:]]
        counted = []
        for kw in call.keywords:
            count = to_sympy(kw.value, params)
            if not (count.is_number and count.is_integer and count >= 1):
                raise at(ArchError, f"cycle(): {kw.name}= counts consecutive layers: a positive "
                         f"whole number, got {shown(count)}", kw.pos)
            counted.append((kw.name, kw.pos, count))
        if named and counted:
            raise at(ArchError, "cycle() takes blocks one layer each (cycle(x, a, b)) or counted "
                     "(cycle(x, a=5, b=1)), not both", call.pos)
        entries = named or counted
        if not entries:
            raise at(ArchError, "cycle() needs at least one block after its input", call.pos)
        out = []
        for name, pos, count in entries:
            if name not in self.library.blocks:
                raise at(ArchNameError, f"cycle(): {name!r} is not a block", pos,
                         hint=_suggest(name, self.library.blocks) or
                         "the pattern names blocks, each run as one layer")
            out += [(name, pos)] * int(count)
        return out

    def op(self, stmt, inputs, params, prefix, repeat, scope) -> Tensor:
        call = stmt.call
        sig = SIGNATURES[call.callee]
        if len(inputs) != len(sig.inputs):
            raise at(ArchError, f"{sig.kind} takes {len(sig.inputs)} input tensor(s) "
                     f"({', '.join(sig.inputs)}), got {len(inputs)}", call.pos)
        attrs = self.attributes(sig, call, params, scope)
        infos = [TensorInfo(t.name, t.width, t.rows) for t in inputs]
        try:
            if sig.kind not in INPUT_KINDS and any(t.rows == "ids" for t in infos):
                raise ShapeError("`tokens` holds token ids: only `embedding` can read it "
                                 "(and `patch_embed` in a vision encoder)")
            if len({t.rows for t in infos}) > 1:
                raise ShapeError("inputs mix all positions with only the last position")
            if sig.kind == "attention":
                attrs = attention_dims(infos, attrs)
            width = sig.shape(infos, attrs)
        except ShapeError as err:
            pos, note = self.origins.locate([kw.value for kw in call.keywords], call.pos,
                                            f"{call.callee} {stmt.target!r}")
            raise at(ShapeError, f"{call.callee} {stmt.target!r}: {err.message}{note}",
                     pos) from None
        rows = "last" if attrs.get("tokens") == "last" else (
            "all" if sig.kind in INPUT_KINDS else infos[0].rows)
        if attrs.get("merge", 1) != 1:
            rows = merged_rows(rows, attrs["merge"])
        name = prefix + stmt.target
        if sig.kind == "attention":
            return self.expand_attention(name, inputs, attrs, repeat, call.pos, width)
        if sig.kind == "block_index":   # MiniMax-M3's selector: its index key is cached
            self.kv.add(inputs[1].name)
        if sig.kind == "moe":
            return self.expand_moe(name, inputs[0], attrs, repeat, call.pos)
        if sig.kind in _COMPOSITES:
            parts, kv = _COMPOSITES[sig.kind](name, inputs[0], attrs)
            self.kv.update(kv)
            return self.expand_parts(name, inputs[0], parts, repeat, call.pos)
        return self.emit(OpInstance(name, sig.kind, tuple(t.name for t in inputs), name,
                                    attrs, repeat, call.pos), width, rows)

    def attributes(self, sig, call, params, scope) -> dict:
        given = {}
        for kw in call.keywords:
            if kw.name not in sig.attrs:
                raise at(ArchNameError, f"{sig.kind} has no attribute {kw.name!r}", kw.pos,
                         hint=f"{sig.kind} takes " + (", ".join(sig.attrs) or "no attributes"))
            if kw.name in given:
                raise at(ArchError, f"attribute {kw.name!r} is given twice", kw.pos)
            spec = sig.attrs[kw.name]
            if isinstance(spec, Ref):
                given[kw.name] = self.reference(spec, kw, scope)
            else:
                given[kw.name] = self.attribute(spec, kw, params, sig.kind)
        for name, spec in sig.attrs.items():
            if name in given:
                continue
            if isinstance(spec, Ref):
                given[name] = None
            elif isinstance(spec, Choice):
                given[name] = spec.default
            elif spec.default is not None:
                given[name] = sympy.sympify(spec.default)
            elif spec.infer:
                given[name] = None
            else:
                raise at(ArchError, f"{sig.kind} needs attribute {name}= ({spec.doc})", call.pos)
        return given

    def reference(self, spec: Ref, kw: ast.KeywordArg, scope) -> OpInstance:
        """An attribute naming another op of this scope, by the tensor it wrote."""
        if not isinstance(kw.value, ast.Name):
            raise at(ArchError, f"{kw.name}= takes the name of an op of kind {spec.kind}",
                     kw.pos)
        tensor = self.lookup(kw.value.id, scope, kw.value.pos)
        op = self.by_name.get(tensor.producer or "")
        if op is None or op.kind != spec.kind:
            article = "an" if spec.kind[0] in "aeiou" else "a"
            raise at(ArchError, f"{kw.name}={kw.value.id}: {kw.value.id!r} is not {article} "
                     f"{spec.kind} op", kw.value.pos)
        return op

    def attribute(self, spec, kw: ast.KeywordArg, params, kind: str):
        if isinstance(spec, Choice):
            if isinstance(kw.value, ast.Name) and kw.value.id in spec.options:
                return kw.value.id
            if spec.options == BOOL and not (isinstance(kw.value, ast.Name)
                                             and kw.value.id not in params):
                flag = to_sympy(kw.value, params)  # a 0/1 parameter switches it
                if flag in (0, 1):
                    return BOOL[int(flag)]
            raise at(ArchError, f"{kw.name}= takes one of {', '.join(spec.options)}"
                     + (" (or a parameter equal to 0 or 1)" if spec.options == BOOL else ""),
                     kw.pos)
        value = to_sympy(kw.value, params)
        if value == 0 and spec.default == 0:  # 0 switches the part off (shared=0, q_lora_rank=0)
            return value
        infinite_ok = spec.default == "oo"  # a window: inf attends every position
        if value.is_number and not (value.is_integer and value.is_positive
                                    or (infinite_ok and value is sympy.oo)):
            pos, note = self.origins.locate(kw.value, kw.pos, f"{kw.name}= of {kind}")
            raise at(ArchError, f"{kw.name}= must be a positive integer"
                     + (" or inf" if infinite_ok else "") + f", got {shown(value)}{note}", pos,
                     hint="dimensions count whole heads, features and tokens")
        return value

    def emit(self, op: OpInstance, width, rows) -> Tensor:
        tensor = Tensor(op.output, sympy.nsimplify(width), rows, op.name)
        self.ops.append(op)
        self.by_name[op.name] = op
        self.tensors[tensor.name] = tensor
        return tensor

    def expand_moe(self, name, x: Tensor, attrs, repeat, pos) -> Tensor:
        """moe -> router, routed experts (gate, up, act, down with the weighted combine), and
        shared experts as a dense MLP of shared x shared_ffn width added to the result."""
        return self.expand_parts(name, x, _moe_parts(name, x, attrs), repeat, pos)

    def expand_parts(self, name, x: Tensor, parts, repeat, pos) -> Tensor:
        """Emit the ops of a composite (moe, mla, mamba): (suffix, kind, inputs, output, width,
        attrs) each; the composite's name is their group."""
        tensor = None
        for part, kind, ins, out, width, part_attrs in parts:
            op = OpInstance(f"{name}.{part}", kind, ins, out, part_attrs, repeat, pos, group=name)
            tensor = self.emit(op, width, x.rows)
        return tensor

    def expand_attention(self, name, inputs, attrs, repeat, pos, width) -> Tensor:
        """attention -> qk (scores), softmax (probabilities), sv (output): the unfused kernels.

        The scores and probabilities are batch x heads x q_len x kv_len: the full matrix, as an
        unfused implementation writes it; the causal mask is applied to it, not skipped.
        """
        q, k, v = inputs
        self.kv.update((k.name, v.name))
        zero = sympy.Integer(0)
        chooser, selected = attrs.get("select"), ()
        if chooser is not None:   # a block_index keeps topk blocks; qk reads its choice
            attrs = {**attrs, "select": chooser.attrs["topk"] * chooser.attrs["block"]}
            selected = (chooser.output,)
        else:
            attrs = {k_: v_ for k_, v_ in attrs.items() if k_ != "select"}
        parts = [("qk", "qk_matmul", (q.name, k.name, *selected), f"{name}.scores"),
                 ("softmax", "softmax", (f"{name}.scores",), f"{name}.probs"),
                 ("sv", "sv_matmul", (f"{name}.probs", v.name), name)]
        for part, kind, ins, out in parts:
            op = OpInstance(f"{name}.{part}", kind, ins, out, attrs, repeat, pos, group=name)
            tensor = self.emit(op, width if out == name else zero, q.rows)
        return tensor


def _moe_parts(name: str, x: Tensor, a: dict) -> list[tuple]:
    """(suffix, kind, inputs, output, width, attrs) of the ops a `moe` op runs, in order.

    With latent=L (LatentMoE, Nemotron 3 Super): the router still reads the hidden input; the
    routed experts read its projection to L (fc1_latent_proj) and their weighted sum is
    projected back (fc2_latent_proj); the shared experts work on the hidden input."""
    from .ops import GATED
    hidden, ffn, gated = x.width, a["ffn"], a["act"] in GATED
    latent = a["latent"]
    routed = {"experts": a["experts"], "top_k": a["top_k"], "act": a["act"], "bias": a["bias"]}
    parts = [("router", "router", (x.name,), f"{name}.router", a["experts"], routed)]
    expert_in, expert_width = x.name, hidden
    if latent != 0:
        expert_in, expert_width = f"{name}.latent_down", latent
        parts.append(("latent_down", "linear", (x.name,), expert_in, latent,
                      {**_DENSE, "out": latent}))
        if a["latent_norm"] == "true":
            parts.append(("latent_norm", "rmsnorm", (expert_in,), f"{name}.latent_normed",
                          latent, {"dim": None, "gain": "true"}))
            expert_in = f"{name}.latent_normed"
    if gated:
        parts.append(("gate", "expert_linear", (expert_in,), f"{name}.gate", ffn,
                      {**routed, "out": ffn, "combine": False}))
    parts.append(("up", "expert_linear", (expert_in,), f"{name}.up", ffn,
                  {**routed, "out": ffn, "combine": False}))
    act_in = (f"{name}.gate", f"{name}.up") if gated else (f"{name}.up",)
    parts.append(("act", "expert_act", act_in, f"{name}.act", ffn, routed))
    shared = a["shared"]
    routed_out = f"{name}.routed" if shared != 0 else name
    summed = f"{name}.routed_latent" if latent != 0 else routed_out
    parts.append(("down", "expert_linear", (f"{name}.act",), summed, expert_width,
                  {**routed, "out": expert_width, "combine": True}))
    if latent != 0:
        parts.append(("latent_up", "linear", (summed,), routed_out, hidden,
                      {**_DENSE, "out": hidden}))
    if shared != 0:
        width = shared * (a["shared_ffn"] if a["shared_ffn"] is not None else ffn)
        dense = _DENSE
        if gated:
            parts.append(("shared_gate", "linear", (x.name,), f"{name}.shared_gate", width,
                          {**dense, "out": width}))
        parts.append(("shared_up", "linear", (x.name,), f"{name}.shared_up", width,
                      {**dense, "out": width}))
        s_in = (f"{name}.shared_gate", f"{name}.shared_up") if gated else (f"{name}.shared_up",)
        parts.append(("shared_act", a["act"], s_in, f"{name}.shared_act", width, {}))
        parts.append(("shared_down", "linear", (f"{name}.shared_act",), f"{name}.shared_out",
                      hidden, {**dense, "out": hidden}))
        parts.append(("combine", "add", (routed_out, f"{name}.shared_out"), name, hidden, {}))
    return parts


_DENSE = {"in": None, "bias": "false", "tokens": "all", "tied": None, "merge": 1}

INPUT_KINDS = ("embedding", "patch_embed")
"""The ops that read the model input (token ids, or a vision encoder's patches)."""


def merged_rows(rows: str, k) -> str:
    """The rows of an op reading k consecutive rows as one: "all/k" (composed: "all/4" merged
    by 2 is "all/8")."""
    whole, _, divisor = rows.partition("/")
    return f"{whole}/{int(k) * int(divisor or 1)}"


def _mla_parts(name: str, x: Tensor, a: dict) -> tuple[list[tuple], set[str]]:
    """mla -> query projection (optionally through a low-rank q_a / norm / q_b), absorption of
    W_UK into the query, the latent KV projection and its cache entry, attention over the latent
    (one shared KV head: qk over kv_lora + rope dims, xV over the kv_lora dims), and the W_UV
    up-projection. Weight-absorbed form, as DeepSeek-V2's paper describes for inference, in
    decode. A dense MLA's prefill runs expanded (costs.attention_form, as the stacks and
    DeepSeek's own inference do): the same ops price the latent's up-projection to per-head keys
    and values (both halves of kv_b_proj, in `absorb`, written beside the query) and attention
    over them, Dn + Dr wide keys and Dv wide values per head, where the absorbed form would do
    (C + Dr) + C operations a pair per head: 3.4x DeepSeek-V3's. prefill=absorbed keeps the
    absorbed form there too, and a sparse MLA (DeepSeek Sparse Attention: an indexer) stays
    over the latent in both stages, as its kernels do."""
    h, c, dn, dr, dv = (a["heads"], a["kv_lora_rank"], a["qk_nope_dim"], a["qk_rope_dim"],
                        a["v_dim"])
    dense = a["index_heads"] == 0
    expanded = dense and a["prefill"] == "expanded"
    dims = {"heads": h, "kv_lora_rank": c, "qk_nope_dim": dn, "qk_rope_dim": dr, "v_dim": dv,
            "expanded": "true" if expanded else "false"}
    parts = []
    q = f"{name}.q"
    if a["q_lora_rank"] != 0:
        qr = a["q_lora_rank"]
        parts += [("q_a", "linear", (x.name,), f"{name}.q_a", qr, {**_DENSE, "out": qr}),
                  ("q_norm", "rmsnorm", (f"{name}.q_a",), f"{name}.q_norm", qr, {"dim": None}),
                  ("q", "linear", (f"{name}.q_norm",), q, h * (dn + dr),
                   {**_DENSE, "out": h * (dn + dr)})]
    else:
        parts.append(("q", "linear", (x.name,), q, h * (dn + dr), {**_DENSE, "out": h * (dn + dr)}))
    latent = f"{name}.latent"
    # latent: the kernel reads a latent cache (its own efficiency family, MLA_DECODE)
    attn = {"heads": h, "kv_heads": sympy.Integer(1), "causal": "true", "window": a["window"],
            "latent": c}
    selected, cached = (), {latent}
    if not dense:
        indexed, selected, index_key = _indexer_parts(
            name, x, a, f"{name}.q_norm" if a["q_lora_rank"] != 0 else x.name)
        parts += indexed
        cached.add(index_key)
        attn = {**attn, "select": a["index_topk"]}
    # the expanded form's widths, and the tensor its keys and values are written to
    keys, values = ({"expanded": "true", "expanded_dim": dim, "expanded_kv": f"{name}.q_latent"}
                    if expanded else {} for dim in (dn + dr, dv))
    parts += [
        ("absorb", "mla_absorb", (q,), f"{name}.q_latent", h * (c + dr), dims),
        ("kv_a", "linear", (x.name,), f"{name}.kv_a", c + dr, {**_DENSE, "out": c + dr}),
        ("cache", "mla_cache", (f"{name}.kv_a",), latent, c + dr, dims),
        ("qk", "qk_matmul", (f"{name}.q_latent", latent, *selected), f"{name}.scores",
         sympy.Integer(0), {**attn, "head_dim": c + dr, **keys}),
        ("softmax", "softmax", (f"{name}.scores",), f"{name}.probs", sympy.Integer(0),
         {**attn, "head_dim": c + dr, **keys}),
        ("sv", "sv_matmul", (f"{name}.probs", latent), f"{name}.o_latent", h * c,
         {**attn, "head_dim": c, **values}),
        ("v_up", "mla_v_up", (f"{name}.o_latent",), name, h * dv, dims),
    ]
    return parts, cached


def _indexer_parts(name: str, x: Tensor, a: dict, q_source: str
                   ) -> tuple[list[tuple], tuple[str], str]:
    """DeepSeek Sparse Attention's indexer (DeepSeek-V3.2's Indexer): its queries from the
    compressed query (wq_b: q_lora_rank -> Hi di), one key per token (wk: hidden -> di, then a
    LayerNorm: the cached index key), per-head weights (weights_proj: hidden -> Hi), and the
    scoring and top-k selection the attention then reads. Returns the parts, the selection
    (for the attention to read) and the cached key."""
    hi, di = a["index_heads"], a["index_dim"]
    parts = [
        ("index_q", "linear", (q_source,), f"{name}.index_q", hi * di, {**_DENSE, "out": hi * di}),
        ("index_wk", "linear", (x.name,), f"{name}.index_key", di, {**_DENSE, "out": di}),
        ("index_k", "layernorm", (f"{name}.index_key",), f"{name}.index_k", di, {"dim": None}),
        ("index_w", "linear", (x.name,), f"{name}.index_w", hi, {**_DENSE, "out": hi}),
        ("indexer", "indexer", (f"{name}.index_q", f"{name}.index_k", f"{name}.index_w"),
         f"{name}.selected", sympy.Integer(0),
         {"heads": hi, "head_dim": di, "window": a["window"], "select": a["index_topk"]}),
    ]
    return parts, (f"{name}.selected",), f"{name}.index_k"


def _mamba_parts(name: str, x: Tensor, a: dict) -> tuple[list[tuple], set[str]]:
    """mamba -> in_proj (x and the gate z), causal conv + SiLU, x_proj (dt, B, C), dt_proj,
    the selective scan with the D skip and the gate, out_proj (Gu and Dao 2023, Fig. 3)."""
    di, n, k, r = a["d_inner"], a["d_state"], a["d_conv"], a["dt_rank"]
    dims = {"d_inner": di, "d_state": n, "d_conv": k, "dt_rank": r, "recurrent": True}
    return [
        ("in_proj", "linear", (x.name,), f"{name}.xz", 2 * di, {**_DENSE, "out": 2 * di}),
        ("conv", "ssm_conv", (f"{name}.xz",), f"{name}.u", di, dims),
        ("x_proj", "linear", (f"{name}.u",), f"{name}.dbc", r + 2 * n,
         {**_DENSE, "out": r + 2 * n}),
        ("dt_proj", "linear", (f"{name}.dbc",), f"{name}.dt", di,
         {**_DENSE, "in": r, "out": di, "bias": "true"}),
        ("scan", "ssm_scan", (f"{name}.u", f"{name}.dt", f"{name}.dbc", f"{name}.xz"),
         f"{name}.y", di, dims),
        ("out_proj", "linear", (f"{name}.y",), name, x.width, {**_DENSE, "out": x.width}),
    ], set()


def _deltanet_parts(name: str, x: Tensor, a: dict) -> tuple[list[tuple], set[str]]:
    """deltanet -> the q/k/v, z and a/b projections (in_proj_qkv, in_proj_z, in_proj_b and
    in_proj_a of Qwen3.5), the causal conv over q, k and v (no bias) with SiLU, the gated
    delta rule, the gated RMSNorm and out_proj (transformers' Qwen3NextGatedDeltaNet)."""
    hv, hk, dk, dv = a["heads"], a["k_heads"], a["k_dim"], a["v_dim"]
    qkv, value = 2 * hk * dk + hv * dv, hv * dv
    conv = {"d_inner": qkv, "d_conv": a["d_conv"], "conv_bias": False, "recurrent": True}
    rule = {"heads": hv, "k_heads": hk, "k_dim": dk, "v_dim": dv, "chunk": a["chunk"],
            "recurrent": True}
    return [
        ("qkv", "linear", (x.name,), f"{name}.qkv", qkv, {**_DENSE, "out": qkv}),
        ("z", "linear", (x.name,), f"{name}.z", value, {**_DENSE, "out": value}),
        ("ab", "linear", (x.name,), f"{name}.ab", 2 * hv, {**_DENSE, "out": 2 * hv}),
        ("conv", "ssm_conv", (f"{name}.qkv",), f"{name}.u", qkv, conv),
        ("rule", "delta_rule", (f"{name}.u", f"{name}.ab"), f"{name}.y", value, rule),
        ("norm", "gated_rmsnorm", (f"{name}.y", f"{name}.z"), f"{name}.gated", value,
         {"gain": dv}),
        ("out_proj", "linear", (f"{name}.gated",), name, x.width, {**_DENSE, "out": x.width}),
    ], set()


def _kda_parts(name: str, x: Tensor, a: dict) -> tuple[list[tuple], set[str]]:
    """kda -> q, k and v (three projections, as one here), the output gate (full rank, or
    through gate_rank with gate_rank > 0), the decay's low-rank down-projection f_a (to
    head_dim) fused with the per-head step b (one skinny GEMM, as vLLM runs them), f_b (head_dim
    to every head's key channels), the causal conv over q, k and v (no bias) with SiLU, the
    delta rule with a decay per key channel, the sigmoid-gated RMSNorm (one head_dim gain) and
    o_proj (flash-linear-attention's KimiDeltaAttention layer)."""
    h, d, rank = a["heads"], a["head_dim"], a["gate_rank"]
    qkv, value = 3 * h * d, h * d
    conv = {"d_inner": qkv, "d_conv": a["d_conv"], "conv_bias": False, "recurrent": True}
    rule = {"heads": h, "k_heads": h, "k_dim": d, "v_dim": d, "chunk": a["chunk"],
            "decay": "channel", "recurrent": True}
    gate = ([("g", "linear", (x.name,), f"{name}.g", value, {**_DENSE, "out": value})]
            if rank == 0 else
            [("g_a", "linear", (x.name,), f"{name}.g_a", rank, {**_DENSE, "out": rank}),
             ("g", "linear", (f"{name}.g_a",), f"{name}.g", value, {**_DENSE, "out": value})])
    return [
        ("qkv", "linear", (x.name,), f"{name}.qkv", qkv, {**_DENSE, "out": qkv}),
        *gate,
        ("fa_b", "linear", (x.name,), f"{name}.fa_b", d + h, {**_DENSE, "out": d + h}),
        ("f_b", "linear", (f"{name}.fa_b",), f"{name}.f", value,
         {**_DENSE, "in": d, "out": value}),
        ("conv", "ssm_conv", (f"{name}.qkv",), f"{name}.u", qkv, conv),
        ("rule", "delta_rule", (f"{name}.u", f"{name}.f", f"{name}.fa_b"), f"{name}.y", value,
         rule),
        ("norm", "gated_rmsnorm", (f"{name}.y", f"{name}.g"), f"{name}.gated", value,
         {"gain": d}),
        ("out_proj", "linear", (f"{name}.gated",), name, x.width, {**_DENSE, "out": x.width}),
    ], set()


def _mamba2_parts(name: str, x: Tensor, a: dict) -> tuple[list[tuple], set[str]]:
    """mamba2 -> the gate z and the x, B, C, dt projection (Mamba-2's in_proj, split), the
    causal conv over x, B and C (with bias) and SiLU, the SSD scan with the D skip, the gated
    RMSNorm (one gain per channel) and out_proj (transformers' Mamba2Mixer / NemotronH)."""
    h, p, n, g = a["heads"], a["head_dim"], a["d_state"], a["groups"]
    inner, xbc = h * p, h * p + 2 * g * n
    conv = {"d_inner": xbc, "d_conv": a["d_conv"], "recurrent": True}
    scan = {"heads": h, "head_dim": p, "d_state": n, "groups": g, "chunk": a["chunk"],
            "recurrent": True}
    return [
        ("z", "linear", (x.name,), f"{name}.z", inner, {**_DENSE, "out": inner}),
        ("in_proj", "linear", (x.name,), f"{name}.xbcdt", xbc + h, {**_DENSE, "out": xbc + h}),
        ("conv", "ssm_conv", (f"{name}.xbcdt",), f"{name}.u", xbc, conv),
        ("scan", "ssd_scan", (f"{name}.u", f"{name}.xbcdt"), f"{name}.y", inner, scan),
        ("norm", "gated_rmsnorm", (f"{name}.y", f"{name}.z"), f"{name}.gated", inner,
         {"gain": inner}),
        ("out_proj", "linear", (f"{name}.gated",), name, x.width, {**_DENSE, "out": x.width}),
    ], set()


def _compressed_attention_parts(name: str, x: Tensor, a: dict) -> tuple[list[tuple], set[str]]:
    """compressed_attention -> DeepSeek-V4's Attention (inference/model.py): the low-rank query
    (wq_a, q_norm, wq_b), each head RMS-scaled without a gain and rotated on rope_dim features;
    the one KV head (wkv, kv_norm, RoPE: the window's cache entry); with ratio R the Compressor
    (wkv and wgate as one projection of 2 o d, o = 2 at R = 4 where windows overlap, then the
    pooling into one cached entry per R tokens); with index heads the Indexer (its queries from
    the compressed query, per-head weights, its own Compressor of index_dim entries, the
    scoring of the compressed entries and the top-k); the fused kernel; and the inverse RoPE
    of the output's rope_dim features."""
    h, d, r, qr, w, ratio = (a["heads"], a["head_dim"], a["rope_dim"], a["q_lora_rank"],
                             a["window"], a["ratio"])
    rope = {"head_dim": d, "rotary_dim": r}
    parts = [
        ("q_a", "linear", (x.name,), f"{name}.q_a", qr, {**_DENSE, "out": qr}),
        ("q_norm", "rmsnorm", (f"{name}.q_a",), f"{name}.q_norm", qr, {"dim": None}),
        ("q", "linear", (f"{name}.q_norm",), f"{name}.q", h * d, {**_DENSE, "out": h * d}),
        ("q_scale", "rmsnorm", (f"{name}.q",), f"{name}.q_scaled", h * d,
         {"dim": d, "gain": "false"}),
        ("q_rope", "rope", (f"{name}.q_scaled",), f"{name}.q_rot", h * d, rope),
        ("kv", "linear", (x.name,), f"{name}.kv_proj", d, {**_DENSE, "out": d}),
        ("kv_norm", "rmsnorm", (f"{name}.kv_proj",), f"{name}.kv_normed", d, {"dim": None}),
        ("kv_rope", "rope", (f"{name}.kv_normed",), f"{name}.window_kv", d, rope),
    ]
    cached = {f"{name}.window_kv"}
    kernel_in = [f"{name}.q_rot", f"{name}.window_kv"]
    select = sympy.oo
    if ratio != 0:
        overlap = 2 if ratio == 4 else 1   # the Compressor's overlapping windows at ratio 4
        parts += _compressor_parts(name, "compress", x, d, r, ratio, overlap)
        cached.add(f"{name}.compress")
        kernel_in.append(f"{name}.compress")
        if a["index_heads"] != 0:
            hi, di, select = a["index_heads"], a["index_dim"], a["index_topk"]
            parts += [("index_q", "linear", (f"{name}.q_norm",), f"{name}.index_q", hi * di,
                       {**_DENSE, "out": hi * di}),
                      ("index_w", "linear", (x.name,), f"{name}.index_w", hi,
                       {**_DENSE, "out": hi})]
            parts += _compressor_parts(name, "index_k", x, di, r, ratio, overlap)
            parts.append(("indexer", "indexer",
                          (f"{name}.index_q", f"{name}.index_k", f"{name}.index_w"),
                          f"{name}.selected", sympy.Integer(0),
                          {"heads": hi, "head_dim": di, "window": sympy.oo, "select": select,
                           "ratio": ratio}))
            cached.add(f"{name}.index_k")
            kernel_in.append(f"{name}.selected")
    parts += [("attn", "sparse_attention", tuple(kernel_in), f"{name}.o_rot", h * d,
               {"heads": h, "head_dim": d, "window": w, "ratio": ratio, "select": select}),
              ("o_rope", "rope", (f"{name}.o_rot",), name, h * d, rope)]
    return parts, cached


def _compressor_parts(name: str, part: str, x: Tensor, d, r, ratio, overlap) -> list[tuple]:
    """A Compressor: its wkv and wgate as one projection (2 o d), then the pooling into one
    d-wide cached entry per `ratio` tokens (op `NAME.<part>`, its output the cached tensor)."""
    width = 2 * overlap * d
    return [(f"{part}_proj", "linear", (x.name,), f"{name}.{part}_proj", width,
             {**_DENSE, "out": width}),
            (part, "kv_compress", (f"{name}.{part}_proj",), f"{name}.{part}", d,
             {"head_dim": d, "rope_dim": r, "ratio": ratio, "overlap": sympy.Integer(overlap)})]


_COMPOSITES = {"mla": _mla_parts, "mamba": _mamba_parts, "deltanet": _deltanet_parts,
               "kda": _kda_parts,
               "mamba2": _mamba2_parts, "compressed_attention": _compressed_attention_parts}


def check_names(library: Library) -> None:
    """Every op a block or model of any loaded file calls exists, and every `extends` names a
    model: a file is checked whole, not only the model picked (a misspelled op in an unused
    model of an imported file is still an error of that file)."""
    items = [*library.blocks.values(), *library.models.values(),
             *(i for shadowed in (library.shadowed or {}).values() for i in shadowed)]
    for item in items:
        if isinstance(item, ast.Model) and item.base is not None \
                and item.base not in library.models:
            raise at(ArchNameError, f"model {item.name!r} extends unknown model {item.base!r}",
                     item.pos, hint=_suggest(item.base, sorted(library.models)))
        for stmt in item.body:
            if not isinstance(stmt, ast.Assign):
                continue
            callee = stmt.call.callee
            if callee == CYCLE:
                continue  # its blocks are checked where it is elaborated
            if callee in library.blocks or (callee in SIGNATURES
                                             and not SIGNATURES[callee].internal):
                continue
            known = user_kinds() + sorted(library.blocks)
            raise at(ArchNameError, f"unknown op {callee!r}", stmt.call.pos,
                     hint=_suggest(callee, known) or "ops are " + ", ".join(user_kinds()))


def elaborate(library: Library, model_name: str | None = None,
              overrides: Mapping[str, ast.Expr] | None = None) -> Design:
    check_names(library)
    model = pick_model(library, model_name)
    params_ast, body, passes, decoding = _flatten(model, library)
    params, free, defs = evaluate_params(params_ast, overrides)
    if not body:
        raise at(ArchError, f"model {model.name!r} has no ops", model.pos)
    el = _Elaborator(library, params, Origins(defs, library.root.file))
    output = el.run(body)
    tensors = {n: (replace(t, cls="kv") if n in el.kv else t) for n, t in el.tensors.items()}
    return Design(model.name, library.root.file, params, free, tuple(el.ops), tensors, output,
                  passes, decoding)


def parse_overrides(pairs: list[str], flag: str = "--set") -> dict[str, ast.Expr]:
    """`NAME=EXPR` strings (from --set, or `flag`) -> parsed expressions. Parsed, never
    evaluated; an error in one is located at `flag NAME`."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name.isidentifier() or not value.strip():
            raise CostDSLError(f"{flag} {pair!r}: expected NAME=VALUE, e.g. --set hidden=4096")
        out[name] = parse_expr(value, f"{flag} {name}")
    return out
