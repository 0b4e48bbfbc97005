"""Bad input: each kind gets a CostDSLError with file, line and column, and the CLI prints it
without a traceback and exits 2."""
import subprocess
import sys

import pytest

import costdsl
from costdsl.errors import (ArchError, ArchNameError, ArchSyntaxError, CostDSLError,
                            EvaluationError, HardwareError, ShapeError)

from conftest import MODELS

GOOD_LAYER = """model "m" {
  params { hidden = 64 }
  x = embedding(tokens, vocab=100, dim=hidden)
  y = linear(x, out=hidden)
}
"""


def _error(write_arch, text):
    with pytest.raises(CostDSLError) as info:
        costdsl.load(write_arch(text))
    return info.value


@pytest.mark.parametrize("text,cls,line,column,words", [
    # syntax: the statement on line 3 never closes its parenthesis
    ('model "m" {\n  params { h = 4 }\n  x = embedding(tokens, vocab=10, dim=h\n}\n',
     ArchSyntaxError, 4, 1, "expected"),
    # syntax: a missing '=' in a statement
    ('model "m" {\n  x embedding(tokens)\n}\n', ArchSyntaxError, 2, 5, "expected '='"),
    # unknown op kind, at the call
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n  y = linaer(x, out=4)\n}\n',
     ArchNameError, 3, 7, "unknown op 'linaer'"),
    # a parameter used before it is defined
    ('model "m" {\n  params {\n    a = b * 2\n    b = 3\n  }\n'
     '  x = embedding(tokens, vocab=10, dim=a)\n}\n',
     ArchNameError, 3, 9, "used before it is defined"),
    # a name that is not defined at all
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=width)\n}\n',
     ArchNameError, 2, 39, "not defined"),
    # shape mismatch: adding a 4-wide and an 8-wide tensor
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n  y = linear(x, out=8)\n'
     '  z = add(x, y)\n}\n', ShapeError, 4, 7, "differ in width"),
    # shape mismatch: declared input width disagrees with the producer
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n  y = linear(x, in=8, out=8)\n}\n',
     ShapeError, 3, 7, "in= differs"),
    # shape mismatch: attention heads do not divide the query width
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=8)\n'
     '  a = attention(x, x, x, heads=3, head_dim=2)\n}\n', ShapeError, 3, 7, "heads x head_dim"),
    # unknown tensor as an input
    ('model "m" {\n  y = linear(nothing, out=8)\n}\n', ArchNameError, 2, 14,
     "tensor 'nothing' is not defined"),
    # unknown attribute
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4, colour=3)\n}\n', ArchNameError, 2, 42,
     "no attribute 'colour'"),
    # repeat on a single op
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4) repeat 2\n}\n', ArchError, 2, 49,
     "applies to blocks"),
    # a tensor defined twice
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n  x = linear(x, out=4)\n}\n',
     ArchError, 3, 3, "already defined"),
    # an op reading token ids
    ('model "m" {\n  x = linear(tokens, out=4)\n}\n', ShapeError, 2, 7, "token ids"),
    # a boolean attribute given a parameter that is not 0 or 1
    ('model "m" {\n  params { b = 2 }\n  x = embedding(tokens, vocab=10, dim=4)\n'
     '  y = linear(x, out=4, bias=b)\n}\n', ArchError, 4, 24, "0 or 1"),
    # tied= naming something that is not an embedding
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n  y = rmsnorm(x)\n'
     '  z = linear(y, out=10, tied=y)\n}\n', ArchError, 4, 30, "not an embedding op"),
    # tied= to a table of the wrong shape
    ('model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n'
     '  z = linear(x, out=12, tied=x)\n}\n', ShapeError, 3, 7, "vocabulary differs"),
])
def test_arch_errors_name_line_and_column(write_arch, text, cls, line, column, words):
    err = _error(write_arch, text)
    assert isinstance(err, cls)
    assert (err.line, err.column) == (line, column), str(err)
    assert words in str(err)
    assert err.file.endswith("m.arch")


def test_repeated_block_must_return_its_input_width(write_arch):
    err = _error(write_arch, 'block widen(x) {\n  y = linear(x, out=8)\n  return y\n}\n'
                             'model "m" {\n  x = embedding(tokens, vocab=10, dim=4)\n'
                             '  w = widen(x) repeat 2\n}\n')
    assert isinstance(err, ShapeError) and (err.line, err.column) == (7, 3)


def test_free_parameter_at_evaluation_is_named():
    model = costdsl.load(MODELS / "llama.arch")
    with pytest.raises(EvaluationError, match="ffn|heads|hidden|layers|vocab"):
        model.analyze("nvidia-a6000", batch=1, seq=16)


@pytest.mark.parametrize("batch,seq", [(0, 16), (1, 0), (-3, 16), (1.5, 16)])
def test_non_positive_batch_or_seq(batch, seq):
    model = costdsl.load(MODELS / "llama-2-7b.arch")
    with pytest.raises(EvaluationError, match="positive integer"):
        model.analyze("nvidia-a6000", batch=batch, seq=seq)


@pytest.mark.parametrize("toml,line,words", [
    ('name = "x"\nbandwidth = "1 TB/s"\nmemory = "1 GB"\n', None, "missing required key 'peak'"),
    ('name = "x"\nbandwidth = "1 GB"\nmemory = "1 GB"\n[peak]\nfp16 = 1e12\n', 2, "bytes/s"),
    ('name = "x"\nbandwidth = 1e12\nmemory = "1 GB"\n[peak]\nfp17 = 1e12\n', 5,
     "unknown compute type"),
    ('name = "x"\nbandwidth = -5\nmemory = 1\n[peak]\nfp16 = 1\n', 2, "positive"),
    ('name = "x"\nbandwidth = = 3\n', 2, "not valid TOML"),
    ('name = "x"\nbandwidth = 1e12\nmemory = 1\nsms = 0\n[peak]\nfp16 = 1\n', 4,
     "positive whole number of multiprocessors"),
    ('name = "x"\nbandwidth = 1e12\nmemory = 1\nsms = 1.5\n[peak]\nfp16 = 1\n', 4,
     "sms = 1.5"),
])
def test_malformed_hardware_file(tmp_path, toml, line, words):
    path = tmp_path / "chip.toml"
    path.write_text(toml)
    with pytest.raises(HardwareError) as info:
        costdsl.load_hardware(str(path))
    assert words in str(info.value)
    assert info.value.line == line
    assert info.value.file == str(path)


def test_missing_hardware_file():
    with pytest.raises(HardwareError, match="unknown hardware"):
        costdsl.load_hardware("nvidia-a9000")
    with pytest.raises(HardwareError, match="cannot read"):
        costdsl.load_hardware("/nonexistent/chip.toml")


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "costdsl", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("args,words", [
    (["analyze", "{bad}", "--hw", "nvidia-a6000"], "unexpected"),
    (["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a9000"], "unknown hardware"),
    (["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--batch", "0"],
     "positive integer"),
    (["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--seq", "-1"],
     "positive integer"),
    (["analyze", str(MODELS / "llama.arch"), "--hw", "nvidia-a6000"], "still free"),
    (["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--set", "nope=3"],
     "no parameter 'nope'"),
    (["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", "--set", "ffn=(3"],
     "syntax error"),
    (["check", "/nonexistent/model.arch"], "no such file"),
])
def test_cli_errors_exit_2_without_traceback(tmp_path, args, words):
    if args[1] == "{bad}":
        bad = tmp_path / "bad.arch"
        bad.write_text('model "m" {\n  x = = 3\n}\n')
        args = [args[0], str(bad), *args[2:]]
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert words in result.stderr
    assert result.stdout == ""


def test_cli_syntax_error_points_at_the_file(tmp_path):
    bad = tmp_path / "bad.arch"
    bad.write_text('model "m" {\n  x = = 3\n}\n')
    result = _cli("check", str(bad))
    assert result.stderr.startswith(f"costdsl: {bad}:2:7: syntax error")
