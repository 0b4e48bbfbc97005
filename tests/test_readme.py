"""The README and docs/ are executable: every example runs here and its shown output is compared.

- A ```console block holds commands (`$ costdsl ...`), each followed by the output it shows. The
  command runs in-process (costdsl.cli.main) in a scratch folder that sees the repository's
  models/, examples/, hardware/ and tests/; the output must match line by line, where a line
  `...` stands for any number of lines and `...` inside a line for any text. Numbers are
  compared as printed: a changed figure fails until the text says it.
- A ```python block with `>>>` prompts is a doctest (Python's own, ELLIPSIS and
  NORMALIZE_WHITESPACE); a ```python block without prompts must run.
- A ```arch block that defines a model must compile (`costdsl check`).

Why a harness of our own, not Sybil: the console blocks run costdsl's CLI in-process (a whole
process per command would cost minutes), in a scratch folder, and need nothing installed beyond
pytest; doctest, from the standard library, covers the Python blocks.
"""
from __future__ import annotations

import contextlib
import doctest
import io
import re
import shlex
from pathlib import Path

import pytest

from costdsl.cli import main

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.M | re.S)


def _blocks():
    for path in DOCS:
        text = path.read_text()
        for m in _FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            yield path, line, m.group(1), m.group(2)


BLOCKS = [b for b in _blocks() if b[2] in ("console", "python", "arch")]


def _id(block) -> str:
    path, line, kind, _ = block
    return f"{path.relative_to(ROOT)}:{line}:{kind}"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A folder that sees the repository's data, so that paths in the docs resolve and files
    the examples write land here, not in the checkout."""
    for name in ("models", "examples", "hardware", "tests", "docs"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COSTDSL_CACHE", str(tmp_path / ".cache"))
    return tmp_path


def commands(body: str) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) for each `$ ` line of a console block; a command may
    continue on lines ending in a backslash."""
    out: list[tuple[str, list[str]]] = []
    lines = body.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("$ "):
            command = lines[i][2:]
            while command.endswith("\\") and i + 1 < len(lines):
                i += 1
                command = command[:-1] + " " + lines[i].strip()
            out.append((command, []))
        elif out:
            out[-1][1].append(lines[i])
        i += 1
    return out


def matches(expected: list[str], actual: list[str]) -> bool:
    """Line-by-line match: a line `...` skips any number of lines, `...` in a line any text;
    trailing spaces are ignored."""
    pattern = []
    for line in expected:
        line = line.rstrip()
        if line == "...":
            pattern.append(r"(?:[^\n]*\n)*?")
        else:
            pattern.append(".*?".join(re.escape(p) for p in line.split("...")) + r"[ \t]*\n")
    text = "".join(a.rstrip() + "\n" for a in actual)
    return re.fullmatch("".join(pattern), text, re.S) is not None


def run_costdsl(command: str) -> tuple[int, str, str]:
    argv = shlex.split(command)
    assert argv[0] == "costdsl", f"a console block runs costdsl commands, not {argv[0]!r}"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv[1:])
        except SystemExit as exit:
            code = exit.code
    return code, out.getvalue(), err.getvalue()


def test_the_docs_have_examples():
    kinds = [b[2] for b in BLOCKS]
    assert kinds.count("console") >= 10 and "python" in kinds


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "console"], ids=_id)
def test_console_block(block, scratch):
    path, line, _, body = block
    for command, expected in commands(body):
        code, out, err = run_costdsl(command)
        assert code == 0, f"{path.name}:{line}: `{command}` exited {code}: {err}"
        shown = (out + err).splitlines()   # what a terminal shows: notes on stderr too
        assert matches(expected, shown), (
            f"{path.name}:{line}: `{command}` printed\n{out}{err}\nbut the text shows\n" +
            "\n".join(expected))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "python"], ids=_id)
def test_python_block(block, scratch):
    path, line, _, body = block
    if ">>>" not in body:
        exec(compile(body, f"{path.name}:{line}", "exec"), {"__name__": "__readme__"})
        return
    test = doctest.DocTestParser().get_doctest(body, {}, f"{path.name}:{line}", str(path), line)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = io.StringIO()
    runner.run(test, out=report.write)
    assert runner.failures == 0, report.getvalue()


@pytest.mark.parametrize("block", [b for b in BLOCKS if b[2] == "arch"
                                   and re.search(r"^model ", b[3], re.M)], ids=_id)
def test_arch_block(block, scratch):
    path, line, _, body = block
    (scratch / "example.arch").write_text(body)
    code, out, err = run_costdsl("costdsl check example.arch")
    assert code == 0, f"{path.name}:{line}: the model does not compile: {err}"
