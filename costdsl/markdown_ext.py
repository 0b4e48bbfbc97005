"""A Python-Markdown extension (what MkDocs renders with): costdsl's formula table inserted
where a page says

    !costdsl-formulas models/llama-3-8b.arch stage=decode keep=hidden,ffn

    # mkdocs.yml
    markdown_extensions:
      - costdsl.markdown_ext

The line becomes the Markdown table `costdsl formulas --format markdown` writes (math as
`$...$`, for MathJax or KaTeX); a path is relative to the directory MkDocs (or the caller) runs
in. A model that does not compile becomes a one-line quoted error, not a failed build.
"""
from __future__ import annotations

import re

from markdown import Extension
from markdown.preprocessors import Preprocessor

from .api import load
from .errors import CostDSLError
from .report.formula_tables import markdown as markdown_tables

_LINE = re.compile(r"^!costdsl-formulas\s+(\S+)((?:\s+\w+=\S+)*)\s*$")


class _Formulas(Preprocessor):
    def run(self, lines: list[str]) -> list[str]:
        out = []
        for line in lines:
            m = _LINE.match(line)
            out += _table(m.group(1), m.group(2)).splitlines() + [""] if m else [line]
        return out


def _table(path: str, options: str) -> str:
    opts = dict(o.split("=", 1) for o in options.split())
    keep = [k for k in opts.get("keep", "").split(",") if k]
    try:
        table = load(path).formulas(opts.get("stage", "decode"), keep)
    except CostDSLError as err:
        return "> costdsl: " + str(err).splitlines()[0]
    return markdown_tables([table])


class CostDSLExtension(Extension):
    def extendMarkdown(self, md):
        md.preprocessors.register(_Formulas(md), "costdsl_formulas", 30)


def makeExtension(**kwargs):  # Python-Markdown's hook: `extensions=["costdsl.markdown_ext"]`
    return CostDSLExtension(**kwargs)
