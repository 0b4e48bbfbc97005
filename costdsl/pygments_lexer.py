"""A Pygments lexer for `.arch` files, registered as `arch` through the `pygments.lexers` entry
point (pyproject.toml), so that ```arch blocks highlight in Sphinx, MkDocs and other renderers
that use Pygments. Pygments is only needed where highlighting is wanted (the `docs` extra)."""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import (Comment, Keyword, Name, Number, Operator, Punctuation, String, Text,
                            Whitespace)

from .language.ops import SIGNATURES

KEYWORDS = ("block", "decoding", "extends", "import", "inline", "model", "params", "passes",
            "repeat", "return")
"""The grammar's keywords (grammars/arch.lark)."""


class ArchLexer(RegexLexer):
    name = "costdsl arch"
    aliases = ["arch", "costdsl"]
    filenames = ["*.arch"]
    mimetypes = ["text/x-costdsl-arch"]
    tokens = {
        "root": [
            (r"\s+", Whitespace),
            (r"#.*?$", Comment.Single),
            (r'"(\\\\|\\"|[^"])*"', String.Double),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (r"\?", Keyword.Pseudo),                       # a parameter left free
            (r"\binf\b", Number),
            (words(tuple(sorted(SIGNATURES, key=len, reverse=True)), suffix=r"(?=\s*\()"),
             Name.Builtin),                                # an op kind
            (r"([A-Za-z_][A-Za-z0-9_.]*)(\s*)(?==)", bygroups(Name.Variable, Text)),
            (r"[A-Za-z_][A-Za-z0-9_.]*(?=\s*\()", Name.Function),   # a block or a pass
            (r"[A-Za-z_][A-Za-z0-9_.]*", Name),
            (r"[0-9]*\.?[0-9]+([eE][+-]?[0-9]+)?", Number),
            (r"\.\.\.", Text),                              # elided text in examples
            (r"[-+*/^=]", Operator),
            (r"[(){}\[\],;:]", Punctuation),
        ],
    }
