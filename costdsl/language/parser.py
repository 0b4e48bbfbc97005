"""Stage 1: .arch text -> AST. Lark (LALR) parses; a Transformer builds `costdsl.ast` nodes.

Syntax errors become ArchSyntaxError with file, line, column, the offending line with a caret,
what was expected, and, where a short broken example matches, a named diagnosis.
"""
from __future__ import annotations

import functools
import re
from fractions import Fraction

import lark
from lark import Lark, Token, Transformer_NonRecursive, v_args

from . import ast
from ..errors import ArchSyntaxError, register_source
from ..resources import shipped_dir

# Short broken programs and the diagnosis each stands for (lark's match_examples).
_DIAGNOSES = {
    "a '}' is missing: a block, model or params section is not closed": [
        "model m { x = f(a)",
        "model m { params { a = 1 }",
        "block b(x) { y = f(x)",
    ],
    "a ')' is missing or a parenthesis is unbalanced": [
        "model m { x = f(a }",
        "model m { x = f(a, b = 2 }",
        "model m { params { a = (1 + 2 } }",
    ],
    "a statement must read `name = kind(inputs..., attribute=value...)`": [
        "model m { x f(a) }",
        "model m { x = y }",
        "model m { x = 3 }",
    ],
    "an expression is missing after '='": [
        "model m { params { a = } }",
        "model m { x = f(a, b=) }",
    ],
    "an input tensor must be a plain name; arithmetic goes in attributes (name=expr)": [
        "model m { x = f(a + 1) }",
        "model m { x = f(2) }",
    ],
}

_START_RULES = ("start", "expr", "pass_list")


@functools.cache
def _parser() -> Lark:
    grammar = (shipped_dir("grammars") / "arch.lark").read_text()
    # cache=True keeps the LALR tables in the temp directory (keyed by the grammar's hash):
    # building them costs most of a cold start
    return Lark(grammar, parser="lalr", start=list(_START_RULES), propagate_positions=True,
                maybe_placeholders=True, cache=True)


def _literal(terminal_name: str) -> str:
    try:
        pattern = _parser().get_terminal(terminal_name).pattern
    except KeyError:
        return terminal_name
    if pattern.type == "str":
        return repr(pattern.value)
    return {"NAME": "a name", "NUMBER": "a number", "STRING": "a quoted string"}.get(
        terminal_name, terminal_name)


def _describe_unexpected(err: lark.exceptions.UnexpectedInput) -> str:
    if isinstance(err, lark.exceptions.UnexpectedToken):
        token = err.token
        found = "end of file" if token.type == "$END" else repr(str(token))
        expected = sorted({_literal(t) for t in err.expected} - {"$END"})
        if not expected:  # the input is complete before this token
            return f"unexpected {found}: the text is complete before it"
        return f"unexpected {found}; expected " + _one_of(expected)
    if isinstance(err, lark.exceptions.UnexpectedCharacters):
        return f"unexpected character {err.char!r}"
    return "unexpected end of file"


def _one_of(options: list[str]) -> str:
    if len(options) == 1:
        return options[0]
    if len(options) > 8:
        return ", ".join(options[:8]) + ", ..."
    return "one of " + ", ".join(options)


def _diagnose(err: lark.exceptions.UnexpectedInput, text: str, start: str) -> str | None:
    if start != "start" or isinstance(err, lark.exceptions.UnexpectedCharacters):
        return None
    try:
        return err.match_examples(
            lambda t: _parser().parse(t, start="start"), _DIAGNOSES, use_accepts=True)
    except Exception:  # a diagnosis is a courtesy; never let it hide the real error
        return None


def _syntax_error(err: lark.exceptions.UnexpectedInput, text: str, file: str, start: str):
    line = getattr(err, "line", None)
    column = getattr(err, "column", None)
    if line is None or line < 0:  # unexpected end of input
        line = text.count("\n") + 1
        column = len(text.rsplit("\n", 1)[-1]) + 1
    context = err.get_context(text) if getattr(err, "pos_in_stream", None) is not None else None
    return ArchSyntaxError(_describe_unexpected(err), file=file, line=line, column=column,
                           hint=_diagnose(err, text, start), context=context)


def _pos(file: str, meta_or_token) -> ast.Pos:
    return ast.Pos(file, meta_or_token.line, meta_or_token.column)


MAX_LITERAL_CHARS = 40
"""A number literal longer than this, or with an exponent beyond +-MAX_LITERAL_CHARS, is
refused before it is converted: `1e99999999` would take minutes to expand exactly. Values are
then held to `expr.MAX_MAGNITUDE`."""


def _number(token: Token, file: str) -> Fraction:
    text = str(token).replace("_", "")
    mantissa, _, exponent = text.lower().partition("e")
    if len(mantissa) > MAX_LITERAL_CHARS or (exponent and abs(int(exponent)) > MAX_LITERAL_CHARS):
        raise ArchSyntaxError(f"the number {text[:24]}{'...' if len(text) > 24 else ''} is out "
                              f"of range", file=file, line=token.line, column=token.column,
                              hint=f"literals have at most {MAX_LITERAL_CHARS} digits and an "
                                   f"exponent within +-{MAX_LITERAL_CHARS}")
    return Fraction(text)


@v_args(meta=True)
class _ToAst(Transformer_NonRecursive):
    """Parse tree -> AST, rule by rule (the method names are the grammar's rule aliases)."""

    def __init__(self, file: str, text: str = ""):
        super().__init__()
        self.file = file
        self.text = text

    def _p(self, meta):
        return _pos(self.file, meta)

    # expressions
    def number(self, meta, children):
        return ast.Num(_number(children[0], self.file), self._p(meta))

    def name(self, meta, children):
        return ast.Name(str(children[0]), self._p(meta))

    def func(self, meta, children):
        return ast.Func(str(children[0]), tuple(children[1:]), self._p(meta))

    def neg(self, meta, children):
        return ast.Neg(children[0], self._p(meta))

    def _binop(self, op, meta, children):
        return ast.BinOp(op, children[0], children[1], self._p(meta))

    def add(self, meta, children):
        return self._binop("+", meta, children)

    def sub(self, meta, children):
        return self._binop("-", meta, children)

    def mul(self, meta, children):
        return self._binop("*", meta, children)

    def div(self, meta, children):
        return self._binop("/", meta, children)

    def floordiv(self, meta, children):
        return self._binop("//", meta, children)

    def pow(self, meta, children):
        return self._binop("^", meta, children)

    # statements
    def param_value(self, meta, children):
        return ast.Param(str(children[0]), children[1], self._p(meta))

    def param_free(self, meta, children):
        return ast.Param(str(children[0]), ast.Free(self._p(meta)), self._p(meta))

    def params(self, meta, children):
        return tuple(children)

    def tensor_arg(self, meta, children):
        return ast.TensorArg(str(children[0]), self._p(meta))

    def keyword_arg(self, meta, children):
        return ast.KeywordArg(str(children[0]), children[1], self._p(meta))

    def call(self, meta, children):
        callee, args = str(children[0]), [a for a in children[1:] if a is not None]
        tensors, keywords = [], []
        for arg in args:
            if isinstance(arg, ast.TensorArg):
                if keywords:
                    raise ArchSyntaxError(
                        f"input tensor {arg.name!r} comes after an attribute",
                        file=self.file, line=arg.pos.line, column=arg.pos.column,
                        hint="write the input tensors first, then attributes (name=value)")
                tensors.append(arg)
            else:
                keywords.append(arg)
        return ast.Call(callee, tuple(tensors), tuple(keywords), self._p(meta))

    def repeat(self, meta, children):
        return children[0]

    def inline(self, meta, children):
        return "inline"

    def assign(self, meta, children):
        target, call, modifier = children
        if modifier == "inline":
            return ast.Assign(str(target), call, None, self._p(meta), inline=True)
        return ast.Assign(str(target), call, modifier, self._p(meta))

    def return_stmt(self, meta, children):
        return ast.Return(str(children[0]), self._p(meta))

    # top level
    def import_stmt(self, meta, children):
        return ast.Import(str(children[0])[1:-1], self._p(meta))

    def block_def(self, meta, children):
        name, *rest = children
        inputs = tuple(str(c) for c in rest if isinstance(c, Token))
        body = tuple(c for c in rest if isinstance(c, (ast.Assign, ast.Return)))
        return ast.Block(str(name), inputs, body, self._p(meta))

    def model_ident(self, meta, children):
        return str(children[0])

    def model_string(self, meta, children):
        return str(children[0])[1:-1]

    def extends(self, meta, children):
        return ("extends", children[0])

    def model_def(self, meta, children):
        name, base, params, *body, passes, decoding = children
        return ast.Model(name, base[1] if base else None, params or (),
                         tuple(body), self._p(meta), passes or (), decoding)

    def decoding(self, meta, children):
        return next(c for c in children if isinstance(c, ast.PassCall))

    # passes
    def pass_tuple(self, meta, children):
        return tuple(c for c in children if c is not None)

    def pass_string(self, meta, children):
        return str(children[0])[1:-1]

    def pass_arg(self, meta, children):
        return ast.PassArg(str(children[0]), children[1], self._p(meta))

    def pass_call(self, meta, children):
        name, *args = children
        text = self.text[meta.start_pos:meta.end_pos] if self.text else ""
        return ast.PassCall(str(name), tuple(a for a in args if a is not None), self._p(meta),
                            " ".join(text.split()))

    def passes(self, meta, children):
        return tuple(c for c in children if isinstance(c, ast.PassCall))

    def pass_list(self, meta, children):
        return tuple(c for c in children if isinstance(c, ast.PassCall))

    def start(self, meta, children):
        return ast.Program(
            self.file,
            tuple(c for c in children if isinstance(c, ast.Import)),
            tuple(c for c in children if isinstance(c, ast.Block)),
            tuple(c for c in children if isinstance(c, ast.Model)))


MAX_TOKENS = 20_000
"""The most tokens one input may hold: the parser takes tens of microseconds a token, so this
keeps any input under about a second to parse and check. The largest shipped file has 330;
a model written with blocks and `repeat` needs a few hundred whatever its size."""

_TOKEN = re.compile(r'#[^\n]*|\s+|"[^"\n]*"?|[A-Za-z_][A-Za-z_0-9]*|[0-9][0-9.]*(?:[eE][+-]?[0-9]+)?|.')


def _check_size(text: str, file: str) -> None:
    """ArchSyntaxError at the first token past MAX_TOKENS (comments and blanks not counted)."""
    count = 0
    for m in _TOKEN.finditer(text):
        if m.group()[0] in "# \t\r\n":
            continue
        count += 1
        if count > MAX_TOKENS:
            line = text.count("\n", 0, m.start()) + 1
            column = m.start() - (text.rfind("\n", 0, m.start()) + 1) + 1
            raise ArchSyntaxError(f"more than {MAX_TOKENS:,} tokens: the input is too long to "
                                  "compile", file=file, line=line, column=column,
                                  hint="write repeated layers once, as a block with `repeat`, "
                                       "and long sums as products")


def _parse(text: str, file: str, start: str):
    register_source(file, text)
    _check_size(text, file)
    try:
        tree = _parser().parse(text, start=start)
    except lark.exceptions.UnexpectedInput as err:
        raise _syntax_error(err, text, file, start) from None
    try:
        return _ToAst(file, text).transform(tree)
    except lark.exceptions.VisitError as err:
        if isinstance(err.orig_exc, ArchSyntaxError):
            raise err.orig_exc from None
        raise


def parse_program(text: str, file: str = "<string>") -> ast.Program:
    """Parse the text of a .arch file."""
    return _parse(text, file, "start")


def parse_expr(text: str, file: str = "<expression>") -> ast.Expr:
    """Parse one arithmetic expression (the value of --set NAME=VALUE, for instance)."""
    return _parse(text, file, "expr")


def parse_passes(text: str, file: str = "--pass") -> tuple[ast.PassCall, ...]:
    """Parse pass calls given on the command line: `quantize(weights=4); flash_attention()`."""
    return _parse(text, file, "pass_list")
