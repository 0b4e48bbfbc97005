"""A command answered from the cache does not load the compiler, and prints what the compiler
would: the lazy startup (issue 29) and the answers cache (costdsl.recall)."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import costdsl.api
from costdsl import cache
from costdsl.cli import FORMULA_FORMATS, main
from costdsl.report.formula_tables import FORMATS as PRINTED_FORMULA_FORMATS

from conftest import DATA, MODELS, ROOT, shipped_sizes

PACKAGE = ROOT / "costdsl"
HEAVY = ("sympy", "networkx", "lark")

COMPILER = ("language", "graph", "analysis", "api", "symbols")
"""The compiler's own packages and modules: they may import sympy, networkx and lark at the
top. Beside them, two modules whose whole job is symbolic, imported only by commands that
compile: the exporter of op graphs (networkx's) and the iteration cost built from a step's
expressions."""
SYMBOLIC = ("report/graphs.py", "serving/iteration.py")


def _top_level_imports(tree: ast.Module):
    """Module names imported by statements that run on import (not inside functions, not
    under `if TYPE_CHECKING:`)."""
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        for sub in ast.walk(node):
            if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                break
            if isinstance(sub, ast.Import):
                yield from (a.name.split(".")[0] for a in sub.names)
            elif isinstance(sub, ast.ImportFrom) and not sub.level and sub.module:
                yield sub.module.split(".")[0]


def heavy_top_level_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    return sorted(set(_top_level_imports(tree)) & set(HEAVY))


def test_no_module_outside_the_compiler_imports_it_at_the_top():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0].removesuffix(".py") in COMPILER or rel in SYMBOLIC:
            continue
        for name in heavy_top_level_imports(path):
            wrong.append(f"{rel} imports {name} at the top")
    assert not wrong, "\n".join(wrong)


def test_the_import_check_sees_a_top_level_import(tmp_path):
    """The checker itself: a top-level sympy import is caught, one inside a function or under
    TYPE_CHECKING is not."""
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom sympy import Symbol\n")
    good = tmp_path / "good.py"
    good.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sympy\n"
                    "def f():\n    import networkx\n")
    assert heavy_top_level_imports(bad) == ["sympy"] and heavy_top_level_imports(good) == []


def _loaded(args: list[str], env: dict) -> tuple[list[str], str]:
    """The heavy modules a whole `costdsl` process loaded, and what it printed."""
    code = ("import sys\nfrom costdsl.cli import main\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "print('LOADED', [m for m in %r if m in sys.modules], file=sys.stderr)\n"
            "sys.exit(rc)\n" % (HEAVY,))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    loaded = done.stderr.rsplit("LOADED", 1)[1].strip()
    return json.loads(loaded.replace("'", '"')), done.stdout


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("COSTDSL_CACHE", str(directory))
    monkeypatch.delenv("COSTDSL_NO_CACHE", raising=False)
    return {**os.environ, "COSTDSL_CACHE": str(directory)}


def test_help_and_hardware_do_not_load_the_compiler(cache_env):
    assert _loaded(["--help"], cache_env)[0] == []
    assert _loaded(["hardware"], cache_env)[0] == []
    assert _loaded(["analyze", "--help"], cache_env)[0] == []


def test_analyze_from_the_cache_does_not_load_the_compiler(cache_env):
    args = ["analyze", "llama-2-7b", "--hw", "nvidia-a100-80gb"]
    miss, miss_out = _loaded(args, cache_env)
    assert miss == list(HEAVY)                      # built: the compiler was needed
    hit, hit_out = _loaded(args, cache_env)
    assert hit == [] and hit_out == miss_out
    # another batch, context and output form: the same record answers
    other = args + ["--batch", "8", "--seq", "512", "--format", "json"]
    hit, _ = _loaded(other, cache_env)
    assert hit == []


def _analyze(capsys, *args) -> str:
    capsys.readouterr()
    assert main(["analyze", *args]) == 0
    return capsys.readouterr().out


def _counting_loads(monkeypatch) -> list:
    """Every time the compiler is asked for a model (a miss)."""
    calls, load = [], costdsl.api.load
    monkeypatch.setattr(costdsl.api, "load", lambda *a, **k: calls.append(a) or load(*a, **k))
    return calls


@pytest.mark.parametrize("model", shipped_sizes())
def test_every_shipped_model_answers_the_same_from_the_cache(cache_env, capsys, monkeypatch,
                                                             model):
    loads = _counting_loads(monkeypatch)
    args = [str(MODELS / model), "--hw", "nvidia-dgx-h100", "--batch", "3", "--seq", "1000",
            "--format", "json"]
    miss = _analyze(capsys, *args)
    hit = _analyze(capsys, *args)
    assert len(loads) == 1 and hit == miss
    # the record is the whole answer: the Python API's numbers, op by op, to the bit
    from costdsl.report import text, to_dict
    compiled = costdsl.api.load(MODELS / model).analyze("nvidia-dgx-h100", batch=3, seq=1000)
    assert json.loads(hit) == json.loads(json.dumps(to_dict(compiled)))
    loads.clear()
    assert _analyze(capsys, *args[:-2]) == text(compiled) and not loads   # text: a hit too


@pytest.fixture
def user_model(tmp_path):
    path = tmp_path / "tiny.arch"
    path.write_text((DATA / "toy.arch").read_text())
    return path


def test_a_user_file_answers_the_same_in_every_form(cache_env, capsys, monkeypatch, user_model):
    loads = _counting_loads(monkeypatch)
    for form in ("text", "json", "markdown", "csv"):
        args = [str(user_model), "--hw", "nvidia-a100-80gb", "--format", form]
        first = _analyze(capsys, *args)
        assert _analyze(capsys, *args) == first
    assert len(loads) == 1                         # one record served every form
    monkeypatch.setenv("COSTDSL_NO_CACHE", "1")
    assert _analyze(capsys, str(user_model), "--hw", "nvidia-a100-80gb") == \
        _analyze(capsys, str(user_model), "--hw", "nvidia-a100-80gb")


def test_a_changed_input_misses(cache_env, capsys, monkeypatch, user_model, tmp_path):
    loads = _counting_loads(monkeypatch)
    args = [str(user_model), "--hw", "nvidia-a100-80gb", "--format", "json"]
    before = json.loads(_analyze(capsys, *args))
    _analyze(capsys, *args)
    assert len(loads) == 1
    # the .arch file: same slot, stale record -> rebuilt
    user_model.write_text(user_model.read_text() + "\n# a comment changes no number\n")
    assert json.loads(_analyze(capsys, *args)) == before and len(loads) == 2
    user_model.write_text(user_model.read_text().replace("hidden    = 8", "hidden    = 16"))
    wider = json.loads(_analyze(capsys, *args))
    assert len(loads) == 3 and wider["params"]["total"] > before["params"]["total"]
    # a pass
    _analyze(capsys, *args, "--pass", "quantize(weights=4)")
    assert len(loads) == 4
    # the hardware file
    hw = tmp_path / "a100.toml"
    hw.write_text((ROOT / "hardware" / "nvidia-a100-80gb.toml").read_text())
    _analyze(capsys, str(user_model), "--hw", str(hw))
    assert len(loads) == 5
    hw.write_text(hw.read_text().replace('bandwidth = "2039 GB/s"', 'bandwidth = "1000 GB/s"'))
    slower = json.loads(_analyze(capsys, str(user_model), "--hw", str(hw), "--format", "json"))
    assert len(loads) == 6 and slower["hardware"]["bandwidth"] == 1e12
    # costdsl's version
    monkeypatch.setattr(cache, "__version__", "0.0.0-other")
    _analyze(capsys, *args)
    assert len(loads) == 7


def test_an_imported_file_is_part_of_the_answer(cache_env, capsys, monkeypatch, tmp_path):
    loads = _counting_loads(monkeypatch)
    base = tmp_path / "base.arch"
    user = tmp_path / "mine.arch"
    base.write_text((MODELS / "llama.arch").read_text())
    user.write_text('import "base.arch"\nmodel "mine" extends "llama" {\n  params { hidden = 4096 '
                    'layers = 2 heads = 32 kv_heads = 32 ffn = 11008 vocab = 32000 }\n}\n')
    args = [str(user), "--hw", "nvidia-a100-80gb", "--format", "json"]
    first = json.loads(_analyze(capsys, *args))
    _analyze(capsys, *args)
    assert len(loads) == 1
    base.write_text(base.read_text() + "\n# a comment\n")
    second = json.loads(_analyze(capsys, *args))
    assert len(loads) == 2 and second == first


def test_a_damaged_or_planted_answer_is_rebuilt_never_run(cache_env, capsys, monkeypatch,
                                                          user_model, tmp_path):
    args = [str(user_model), "--hw", "nvidia-a100-80gb", "--format", "json"]
    good = _analyze(capsys, *args)
    entry = next((Path(cache_env["COSTDSL_CACHE"]) / "answers").glob("*.json"))
    entry.write_text(entry.read_text()[:200])                       # truncated
    assert _analyze(capsys, *args) == good
    content = json.loads(entry.read_text())
    marker = tmp_path / "ran"
    rows = content["record"]["stages"]["decode"]["rows"]
    rows[0] = ["s", f"__import__('os').system('touch {marker}')"]
    # planted with a digest that matches: the tree is still checked as it is compiled
    content.pop("digest")
    key = content["key"]
    body = {k: v for k, v in content.items() if k not in cache.ENVELOPE}
    entry.write_text(json.dumps({**content, "digest": cache._digest(key, body)}))
    capsys.readouterr()
    assert main(["analyze", *args]) == 0
    captured = capsys.readouterr()
    assert captured.out == good and not marker.exists()
    assert "is unreadable" in captured.err


def test_the_parser_names_the_formula_forms_the_printer_has():
    assert tuple(PRINTED_FORMULA_FORMATS) == FORMULA_FORMATS


def test_a_serving_curve_at_other_batches_does_not_load_the_compiler(cache_env):
    args = ["serve-curve", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--seq", "1024",
            "--gen", "64", "--batch", "1,8,64"]
    miss, miss_out = _loaded(args, cache_env)
    assert miss == list(HEAVY)
    hit, hit_out = _loaded(args, cache_env)
    assert hit == [] and hit_out == miss_out
    other, _ = _loaded(args[:-1] + ["1:200", "--format", "json"], cache_env)
    assert other == []                              # the record answers any batch sizes
    with_env = {**cache_env, "COSTDSL_NO_CACHE": "1"}
    assert _loaded(args, with_env)[1] == miss_out   # the compiled path prints the same


@pytest.mark.parametrize("command", [
    ["crossover", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--solve", "batch"],
    ["fit", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--seq", "4096"],
    ["plan", "llama-2-7b", "--hw", "nvidia-dgx-a100", "--seq", "1024", "--gen", "64"],
])
def test_an_answer_asked_again_does_not_load_the_compiler(cache_env, command):
    miss, miss_out = _loaded(command, cache_env)
    assert miss == list(HEAVY)
    hit, hit_out = _loaded(command, cache_env)
    assert hit == [] and hit_out == miss_out
    # another question of the same command is answered afresh
    assert _loaded(command + ["--w-bits", "8"], cache_env)[0] == list(HEAVY)
