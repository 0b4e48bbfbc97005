"""Documentation integration: the Sphinx extension builds a tiny project with both directives,
and the Pygments lexer is found by name through its entry point."""
import re
from pathlib import Path

import pytest

from conftest import MODELS

sphinx_build = pytest.importorskip("sphinx.cmd.build", reason="sphinx is not installed "
                                   "(pip install -e '.[test]')")


def _build(tmp_path: Path, body: str) -> tuple[str, str]:
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    (src / "conf.py").write_text('extensions = ["costdsl.sphinx"]\nproject = "t"\n')
    (src / "index.rst").write_text(body)
    warnings = tmp_path / "warnings.txt"
    code = sphinx_build.build_main(["-b", "html", "-q", "-w", str(warnings), str(src), str(out)])
    assert code == 0
    return (out / "index.html").read_text(), warnings.read_text()


def test_directives_insert_the_tables(tmp_path):
    model = MODELS / "llama-2-7b.arch"
    page, warnings = _build(tmp_path, f"""Llama
=====

.. costdsl-formulas:: {model}
   :stage: decode
   :keep: hidden

.. costdsl-crossover:: {model}
   :hw: nvidia-a100-80gb
   :stage: decode
   :seq: 1024

.. code-block:: arch

   model "tiny" {{
     params {{ hidden = 64 }}
     x = linear(tokens, out=hidden)   # a comment
   }}
""")
    assert "layers.q" in page and "per model" in page
    assert page.count('class="math') > 20             # formulas as math nodes
    assert page.count("<math") > 20 and "\\(" not in page  # MathML: no MathJax needed offline
    assert re.search(r"layers\.gate.*?memory-&gt;compute|memory->compute", page, re.S)
    assert '<span class="k">model</span>' in page      # the arch lexer highlighted the block
    assert "costdsl" not in warnings


def test_a_bad_model_is_a_warning_not_a_crash(tmp_path):
    page, warnings = _build(tmp_path, "T\n=\n\n.. costdsl-formulas:: nope.arch\n")
    assert "costdsl:" in warnings and "nope.arch" in warnings


def test_lexer_is_registered_by_name():
    from pygments.lexers import get_lexer_by_name, get_lexer_for_filename
    lexer = get_lexer_by_name("arch")
    assert type(lexer).__name__ == "ArchLexer"
    assert type(get_lexer_for_filename("llama.arch")).__name__ == "ArchLexer"
    tokens = list(lexer.get_tokens((MODELS / "llama.arch").read_text()))
    assert not [t for t in tokens if "Error" in str(t[0])]   # every shipped token lexes


def test_family_pages_are_current():
    """docs/families/*.md are what docs/families.py writes from the shipped families now."""
    import runpy
    script = Path(__file__).resolve().parent.parent / "docs" / "families.py"
    main = runpy.run_path(str(script))["main"]
    assert main(["--check"]) == 0


def test_markdown_extension_inserts_the_table(tmp_path):
    markdown = pytest.importorskip("markdown", reason="markdown is not installed")
    model = MODELS / "llama-2-7b.arch"
    text = (f"# Llama\n\n!costdsl-formulas {model} stage=decode keep=hidden\n\n"
            "!costdsl-formulas nope.arch\n")
    page = markdown.markdown(text, extensions=["costdsl.markdown_ext", "tables"])
    assert "<table>" in page and "<code>layers.q</code>" in page
    assert "costdsl: " in page and "nope.arch" in page     # a bad model is said, not raised
