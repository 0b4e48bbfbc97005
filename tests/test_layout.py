"""The package layout shows the pipeline, and imports only point down it.

language, hardware -> graph -> analysis -> serving -> report, plots -> api, cli. The foundations (errors,
symbols, resources) sit below every stage. Lazy imports inside functions count too.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "costdsl"

RANK = {"errors": 0, "symbols": 0, "resources": 0, "files": 0, "version": 0, "names": 0,
        "progress": 0, "limits": 0, "ranges": 0, "cache": 0, "recall": 0,
        "language": 1, "hardware": 1,
        "graph": 2,
        "analysis": 3,
        "serving": 4,
        "report": 5, "plots": 5,
        "api": 6, "cli": 6, "__init__": 6, "__main__": 6, "sphinx": 7, "markdown_ext": 7,
        "pygments_lexer": 6}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        yield path, parts


def _stage(parts: tuple[str, ...]) -> str:
    """'costdsl.graph.passes.flash' -> 'graph'; 'costdsl' itself -> '__init__'."""
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path, parts: tuple[str, ...]):
    """Absolute module paths (as tuples) that `path` imports from costdsl, with line numbers."""
    package = parts[:-1]  # a module's package; for an __init__, the package itself
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else ()
            target = base + tuple(node.module.split(".")) if node.module else base
            if target[:1] != ("costdsl",):
                continue
            if node.module is None:  # from . import a, b: each name is a module
                for alias in node.names:
                    yield target + (alias.name,), node.lineno
            else:
                yield target, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "costdsl":
                    yield tuple(alias.name.split(".")), node.lineno


def test_every_module_has_a_known_stage():
    unknown = {_stage(parts) for _, parts in _modules()} - set(RANK)
    assert not unknown, f"modules outside the pipeline's stages: {sorted(unknown)}"


def test_imports_point_down_the_pipeline():
    wrong = []
    for path, parts in _modules():
        here = _stage(parts)
        for target, line in _imports(path, parts):
            there = _stage(target)
            if there == "__init__" or target == ("costdsl",):
                wrong.append(f"{path.name}:{line} imports the package root")
                continue
            if RANK[there] > RANK[here]:
                wrong.append(f"{'/'.join(parts)}:{line}: {here} imports {'.'.join(target)} "
                             f"({there}, a later stage)")
            elif RANK[there] == RANK[here] == 1 and there != here:
                wrong.append(f"{'/'.join(parts)}:{line}: {here} imports {there}: the language "
                             "and the hardware input are independent")
    assert not wrong, "\n".join(wrong)


def test_the_direction_check_sees_a_backward_import(tmp_path):
    """The checker itself: a graph module importing from analysis is caught."""
    bad = tmp_path / "costdsl" / "graph"
    bad.mkdir(parents=True)
    (bad / "x.py").write_text("def f():\n    from ..analysis.roofline import roofline\n")
    found = list(_imports(bad / "x.py", ("costdsl", "graph", "x")))
    assert found == [(("costdsl", "analysis", "roofline"), 2)]
    assert RANK[_stage(found[0][0])] > RANK["graph"]


@pytest.mark.parametrize("package", ["language", "graph", "graph/passes", "hardware", "analysis",
                                     "report"])
def test_each_stage_says_what_comes_in_and_goes_out(package):
    init = PACKAGE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc and len(doc.split()) >= 12, f"{init} needs a docstring naming its input and output"
