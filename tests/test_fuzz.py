"""Bad input never gets a traceback, a hang or a silent wrong answer.

Three layers: the corpus in tests/data/bad/ (one case per class, each with its message and
location), generated inputs too big, deep or binary to commit, and hypothesis-driven mutation
of valid model files, hardware files and flag values. For every input: exit 0 with valid
output, or exit 2 with one message that starts `costdsl:` and names a file and line where
there is one; never a traceback, never more than a few seconds.

The property runs use a fixed example count in CI; set COSTDSL_FUZZ_EXAMPLES (e.g. 2000) for a
longer run.
"""
import contextlib
import io
import json
import os
import time
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from costdsl.cli import main

from conftest import DATA, MODELS, ROOT

BAD = DATA / "bad"
HARDWARE = ROOT / "hardware"
SECONDS = 10.0  # per input, on a slow CI core; most take well under one second
EXAMPLES = int(os.environ.get("COSTDSL_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


def run(argv: list[str]) -> tuple[int, str, str, float]:
    """costdsl in this process: (exit status, stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - start


def assert_clean(argv, code, out, err, seconds, json_out=False):
    """The contract every input must meet."""
    shown = " ".join(map(str, argv))[:300]
    assert "Traceback" not in err + out, f"traceback for: {shown}\n{err[-2000:]}"
    assert code in (0, 2), f"exit {code} for: {shown}\n{err[-2000:]}"
    assert seconds < SECONDS, f"{seconds:.1f} s for: {shown}"
    if code == 2:
        assert err.startswith(("costdsl:", "usage:")), f"message for: {shown}\n{err}"
    elif json_out:
        json.loads(out)  # allow_nan=False: valid JSON, no Infinity or NaN


# --- the corpus --------------------------------------------------------------------------------

CASES = tomllib.loads((BAD / "cases.toml").read_text())["case"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_input_corpus(case, tmp_path):
    subst = {"{bad}": str(BAD), "{models}": str(MODELS), "{root}": str(ROOT),
             "{tmp}": str(tmp_path)}
    argv = []
    for a in case["args"]:
        for key, value in subst.items():
            a = a.replace(key, value)
        argv.append(a)
    code, out, err, seconds = run(argv)
    assert_clean(argv, code, out, err, seconds)
    assert code == 2, f"{case['name']}: exit {code}\n{out[:500]}"
    assert case["expect"] in err, err
    if "where" in case:
        first = err.splitlines()[0]
        assert case["where"] in first, first


# --- generated inputs ----------------------------------------------------------------------------

def _model(params: str, body: str = "t = embedding(tokens, vocab=10, dim=h)") -> str:
    return f'model "m" {{\n  params {{ {params} }}\n  {body}\n}}\n'


def test_files_that_are_not_utf8(tmp_path):
    (tmp_path / "g.arch").write_bytes(b"\xff\xfe")
    (tmp_path / "imports.arch").write_text('import "g.arch"\n' + _model("h = 8"))
    (tmp_path / "hw.toml").write_bytes(b'name = "x"\n\xff')
    (tmp_path / "config.json").write_bytes(b'{"model_type": "\xff"}')
    for argv, where in [(["check", "g.arch"], "g.arch:1:1"),
                        (["check", "imports.arch"], "g.arch:1:1"),
                        (["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", "hw.toml"],
                         "hw.toml:2:1"),
                        (["import", "config.json"], "config.json:1:")]:
        argv = [str(tmp_path / a) if a.endswith((".arch", ".toml", ".json")) and "/" not in a
                else a for a in argv]
        code, out, err, seconds = run(argv)
        assert_clean(argv, code, out, err, seconds)
        assert code == 2 and "not UTF-8" in err and where in err, err


def test_a_long_flat_sum_and_a_chain_of_minuses_simply_work(tmp_path):
    """Legitimate input: built without recursion. 3,000 terms of 64; 3,001 minuses -> -64."""
    path = tmp_path / "sum.arch"
    path.write_text(_model("h = " + "+".join(["64"] * 3000)))
    code, out, err, seconds = run(["check", str(path)])
    assert_clean(["check", path], code, out, err, seconds)
    assert code == 0 and f"{10 * 64 * 3000:,} parameters" in out
    path.write_text(_model("h = " + "-" * 3000 + "64"))  # an even count: +64
    code, out, err, seconds = run(["check", str(path)])
    assert code == 0 and "640 parameters" in out


@pytest.mark.parametrize("text, message", [
    (_model("h = " + "2^(" * 300 + "1" + ")" * 300), "nests more than 100 levels"),
    (_model("h = " + "min(" * 300 + "1" + ", 2)" * 300), "nests more than 100 levels"),
], ids=["nested powers", "nested calls"])
def test_deep_nesting_is_a_stated_limit(text, message, tmp_path):
    path = tmp_path / "deep.arch"
    path.write_text(text)
    code, out, err, seconds = run(["check", str(path)])
    assert_clean(["check", path], code, out, err, seconds)
    assert code == 2 and message in err


def test_a_chain_of_1000_blocks_and_1200_imports(tmp_path):
    # 1000 blocks of 14 tokens: under the 20,000-token limit, five times the nesting limit
    lines = ["block b0(x) { y = rmsnorm(x) return y }"]
    lines += [f"block b{i}(x) {{ y = b{i - 1}(x) return y }}" for i in range(1, 1000)]
    (tmp_path / "chain.arch").write_text("\n".join(lines) + "\n" +
                                         _model("h = 8", "t = embedding(tokens, vocab=10, "
                                                "dim=h)\n  y = b999(t)"))
    code, out, err, seconds = run(["check", str(tmp_path / "chain.arch")])
    assert_clean(["check"], code, out, err, seconds)
    assert code == 2 and "blocks nest more than 200 deep" in err
    for i in range(1200):
        nxt = f'import "f{i + 1}.arch"\n' if i < 1199 else ""
        (tmp_path / f"f{i}.arch").write_text(nxt + f"block c{i}(x) {{ y = rmsnorm(x) return y }}\n")
    (tmp_path / "main.arch").write_text('import "f0.arch"\n' + _model("h = 8"))
    code, out, err, seconds = run(["check", str(tmp_path / "main.arch")])
    assert_clean(["check"], code, out, err, seconds)
    assert code == 2 and "imports chain more than 100 files deep" in err


def test_deeply_nested_json_and_an_oversized_model_file(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    code, out, err, seconds = run(["import", str(tmp_path / "deep.json")])
    assert_clean(["import"], code, out, err, seconds)
    assert code == 2 and "deep.json" in err
    big = tmp_path / "big.arch"
    big.write_text(_model("h = 8") + "# padding\n" * 200_000)
    code, out, err, seconds = run(["check", str(big)])
    assert_clean(["check"], code, out, err, seconds)
    assert code == 2 and "more than the 1,048,576 costdsl reads" in err


def test_json_output_is_always_json(tmp_path):
    """A figure far above real hardware but finite is accepted and every JSON output parses."""
    hw = tmp_path / "fast.toml"
    hw.write_text('name = "Fast"\nbandwidth = 1e19\nmemory = 1e19\n[peak]\nfp32 = 1e19\n'
                  'fp16 = 1e19\n')
    for command in (["analyze"], ["latency", "--gen", "4"], ["fit"], ["sensitivity"],
                    ["crossover", "--solve", "batch"]):
        argv = [command[0], str(MODELS / "llama-2-7b.arch"), "--hw", str(hw), *command[1:],
                "--format", "json"]
        code, out, err, seconds = run(argv)
        assert_clean(argv, code, out, err, seconds, json_out=True)
        assert code == 0, err


# --- mutation ----------------------------------------------------------------------------------

SEEDS = [MODELS / "llama-2-7b.arch", MODELS / "llama.arch", MODELS / "mixtral-8x7b.arch",
         DATA / "toy.arch", DATA / "toy2.arch", MODELS / "deepseek.arch", MODELS / "gpt2.arch"]
TOKENS = ["(", ")", "{", "}", "=", ",", "+", "-", "*", "/", "//", "^", "?", "inf", "0", "-1",
          "1e40", "0.5", "4096.5", "2^70", "10^10^10", "repeat", "inline", "import", "model",
          "params", "passes", "extends", "tokens", "hidden", "heads", "x", "\"", "#", "\n",
          "attention(", "linear(", "moe(", "batch", "peak", "window=", "tokens=last",
          "quantize(weights=4)", "flash_attention()", "fuse(ops=\"*\")", "\x00", "é", "\t",
          'decoding { speculative(draft="llama-68m", k=2, accept=0.5) }', "decoding {",
          "early_exit(mean_layers=0.5)", "contextual_sparsity(mlp=0.5)", "[", "]", "[4, 2]"]


@st.composite
def mutated_text(draw):
    """A shipped model's text with a few edits: a span deleted, a token inserted, a number
    replaced, or a line duplicated."""
    text = draw(st.sampled_from(SEEDS)).read_text()
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, max(len(text) - 1, 0)))
        kind = draw(st.sampled_from(["delete", "insert", "number", "duplicate"]))
        if kind == "delete":
            text = text[:i] + text[i + draw(st.integers(1, 40)):]
        elif kind == "insert":
            text = text[:i] + " " + draw(st.sampled_from(TOKENS)) + " " + text[i:]
        elif kind == "number":
            digits = [j for j, c in enumerate(text) if c.isdigit()]
            if digits:
                j = draw(st.sampled_from(digits))
                text = text[:j] + draw(st.sampled_from(TOKENS[14:20])) + text[j + 1:]
        else:
            lines = text.splitlines(True)
            k = draw(st.integers(0, len(lines) - 1))
            text = "".join(lines[:k + 1] + [lines[k]] + lines[k + 1:])
    return text


@FUZZ
@given(text=mutated_text())
def test_mutated_model_files(text, tmp_path):
    # the seeds import their family files, which resolve from the shipped models/ folder
    path = tmp_path / "mutant.arch"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    code, out, err, seconds = run(["check", str(path)])
    assert_clean(["check", text[:200]], code, out, err, seconds)
    if code == 2 and "mutant.arch:" not in err and "models/" not in err:
        assert "--" in err or "error" in err  # a message even where no line applies
    if code == 0:
        argv = ["analyze", str(path), "--hw", "nvidia-h100-sxm", "--format", "json",
                "--seq", "256", "--batch", "2"]
        code, out, err, seconds = run(argv)
        assert_clean(argv, code, out, err, seconds, json_out=True)


FIGURES = st.one_of(st.sampled_from(['"inf"', "inf", "nan", "-1", "0", "1e400", '"1e400 GB/s"',
                                     '"12 parsecs"', '"-5 TFLOPS"', "true", "[]", '""',
                                     '"1e19"', "1", '"768 GB/s"', '"48 GiB"']),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.integers(-10**30, 10**30).map(str))


@st.composite
def mutated_hardware(draw):
    text = draw(st.sampled_from(sorted(HARDWARE.glob("*.toml")))).read_text()
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 3))):
        k = draw(st.integers(0, len(lines) - 1))
        if "=" in lines[k] and draw(st.booleans()):
            key = lines[k].split("=", 1)[0]
            lines[k] = f"{key}= {draw(FIGURES)}"
        else:
            del lines[k]
    return "\n".join(lines) + "\n"


@FUZZ
@given(text=mutated_hardware())
def test_mutated_hardware_files(text, tmp_path):
    hw = tmp_path / "hw.toml"
    hw.write_text(text)
    argv = ["analyze", str(MODELS / "llama-2-7b.arch"), "--hw", str(hw), "--format", "json"]
    code, out, err, seconds = run(argv)
    assert_clean(argv, code, out, err, seconds, json_out=True)


VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "4096", "1e20", "1e9", "1000000001", "abc",
                                    "", "1:1e12", "1:10:log5", "1,2,x", "inf", "nan", "2.5",
                                    "1:0", "1:4:log1", ",", "3", "16", "100000", "step",
                                    "prefill", "tokens", "seq", "w_bits=4", "kv_bits",
                                    "all", "hidden"]),
                   st.text(max_size=12))
PASSES = st.sampled_from(["quantize(weights=4)", "quantize(weights=(-1)^(1/2))",
                          "quantize(kv=0)", "quantize(weights=100)", "flash_attention()",
                          "flash_attention(block=0)", "fuse(ops=\"\")", "fuse(ops=\"nope\")",
                          "fuse_all()", "quantize(weights=4, group=0)", "unknown()",
                          "quantize(", "quantize(weights=w_bits/0)", "fuse_qkv(); fuse_qkv()",
                          "early_exit(mean_layers=0.5)", 'early_exit(mean_layers=0.5, kv="x")',
                          'layer_skip(layers="1:3")', 'layer_skip(layers="::")',
                          "contextual_sparsity(mlp=0.9, heads=0.5, predictor_rank=64)",
                          "contextual_sparsity(mlp=hidden)", "early_exit(mean_layers=0)",
                          "medusa_heads(heads=2)", 'medusa_heads(lm_head="x")',
                          "medusa_heads(); medusa_heads()", "prune(ffn=0.5, heads=0.3)",
                          "prune(layers=0.9)", 'sparsify(pattern="2:4")', "sparsify(weights=1)",
                          "low_rank(rank=64)", "low_rank(rank=100000)",
                          "tensor_parallel(n=8)", "tensor_parallel(n=3)", "tensor_parallel(n=tp)",
                          "tensor_parallel(n=0)", "tensor_parallel(n=2); tensor_parallel(n=2)",
                          "tensor_parallel(n=2, overlap=true)", "pipeline_parallel(n=1000)",
                          "pipeline_parallel(n=2, microbatches=4)", "expert_parallel(n=8)",
                          'expert_parallel(n=2, load="x")', "offload(weights=0.5)",
                          'offload(to="disk")', "offload(weights=2)", "offload(kv=1)"])
DECODINGS = st.sampled_from(["lookahead(window=5, ngram=4, guesses=5, accept_per_step=2)",
                             "lookahead(window=0, ngram=4, guesses=5, accept_per_step=2)",
                             'speculative(draft="tinyllama-1.1b", k=4, accept=0.8)',
                             'speculative(draft="llama-68m", k=1, accept=1)',
                             'speculative(draft="llama-3-8b", k=2, accept=0.5)',
                             'speculative(draft="tinyllama-1.1b", k=99, accept=0.5)',
                             'speculative(k=2)', "speculative(", "nonsense()",
                             "medusa(heads=3, accept=0.6)", "medusa(heads=2, tree=[3, 2, 1], "
                             "accept=0.5)", 'medusa(accept=0.5, lm_head="own")'])


@st.composite
def command_line(draw):
    command = draw(st.sampled_from(["analyze", "crossover", "latency", "fit", "sweep",
                                    "serve-curve", "formulas", "sensitivity", "compare",
                                    "plan", "simulate"]))
    argv = [command, str(MODELS / draw(st.sampled_from(["llama-2-7b.arch", "mixtral-8x7b.arch",
                                                          "mamba-2.8b.arch", "gpt2.arch",
                                                          "deepseek-v2-lite.arch"])))]
    if command != "formulas":
        argv += ["--hw", draw(st.sampled_from(["nvidia-a6000", "nvidia-h100-sxm", "nope",
                                                "google-tpu-v5e", "", "nvidia-dgx-h100"]))]
    flags = {"analyze": ["--batch", "--seq", "--tokens", "--w-bits", "--stage"],
             "crossover": ["--batch", "--seq", "--solve", "--free", "--versus", "--stage",
                           "--tokens"],
             "latency": ["--batch", "--seq", "--gen"], "fit": ["--batch", "--seq"],
             "sweep": ["--batch", "--seq", "--w-bits", "--tokens", "--stage"],
             "serve-curve": ["--seq", "--gen", "--batch"],
             "formulas": ["--keep", "--stage", "--tokens"],
             "sensitivity": ["--batch", "--seq"], "compare": ["--batch", "--seq"],
             "plan": ["--seq", "--gen", "--batch", "--bits", "--objective"],
             "simulate": ["--n", "--prompt", "--output", "--scheduler", "--chunk", "--kv-block",
                          "--kv-memory", "--slo", "--max-batch", "--preempt"]}[command]
    for flag in draw(st.lists(st.sampled_from(flags), max_size=3, unique=True)):
        argv += [flag, draw(VALUES)]
    required = {"crossover": ["--solve", "batch"], "latency": ["--gen", "8"],
                "serve-curve": ["--seq", "128", "--gen", "8"],
                "plan": ["--gen", "4"], "simulate": ["--rate", "2", "--n", "20"]}.get(command, [])
    for flag, value in zip(required[::2], required[1::2]):
        if flag not in argv:
            argv += [flag, value]
    if draw(st.booleans()):
        argv += ["--pass", draw(PASSES)]
    if command in ("latency", "crossover", "serve-curve") and draw(st.booleans()):
        argv += ["--decoding", draw(DECODINGS)]
        if command == "crossover":
            argv[argv.index("--solve") + 1] = draw(st.sampled_from(["accept", "batch", "k",
                                                                    "seq", "sparsity", "rank",
                                                                    "ffn"]))
    if draw(st.booleans()):
        argv += ["--set", draw(st.sampled_from(["hidden=4097", "layers=0", "ffn=1e99",
                                                "vocab=(", "nope=1", "heads=7", "x"]))]
    return argv


@FUZZ
@given(argv=command_line())
def test_random_command_lines(argv):
    code, out, err, seconds = run(argv)
    assert_clean(argv, code, out, err, seconds)


@st.composite
def mutated_measurements(draw):
    """A few rows of a shipped measurement file with cells replaced or dropped."""
    lines = (DATA / "measured" / "vidur-linear-a100.csv").read_text().splitlines()
    rows = [lines[0]] + draw(st.lists(st.sampled_from(lines[1:]), min_size=0, max_size=14))
    for _ in range(draw(st.integers(0, 4))):
        k = draw(st.integers(0, len(rows) - 1))
        cells = rows[k].split(",")
        j = draw(st.integers(0, len(cells) - 1))
        cells[j] = draw(st.sampled_from(["", "0", "-1", "nan", "inf", "1e400", "x", "step",
                                         "decode", "total", "layers.q", "nvidia-h100-sxm",
                                         "llama-2-7b", "nope.arch", "5", "1e20", "\"", "é"]))
        rows[k] = ",".join(cells) if draw(st.booleans()) else ",".join(cells[:-1])
    return "\n".join(rows) + "\n"


@FUZZ
@given(text=mutated_measurements(), command=st.sampled_from(["calibrate", "validate"]))
def test_mutated_measurement_files(text, command, tmp_path):
    path = tmp_path / "m.csv"
    path.write_text(text)
    for model in ("llama-2-7b-vidur.arch", "llama-2-70b-vidur.arch"):  # the rows name these
        (tmp_path / model).write_text((DATA / "measured" / model).read_text())
    argv = [command, str(path), "--hw", "nvidia-a100-80gb"] + \
        (["--folds", "3"] if command == "validate" else ["--format", "json"])
    code, out, err, seconds = run(argv)
    assert_clean(argv, code, out, err, seconds, json_out=command == "calibrate")


@st.composite
def mutated_requests(draw):
    """A request file (ours or the Azure trace's columns) with cells replaced or dropped."""
    header = draw(st.sampled_from(["arrival_s,prompt_tokens,output_tokens",
                                   "TIMESTAMP,ContextTokens,GeneratedTokens", "a,b,c", ""]))
    azure = header.startswith("TIMESTAMP")
    rows = []
    for i in range(draw(st.integers(0, 8))):
        arrival = f"2023-11-16 18:15:{10 + i:02d}.5" if azure else f"{i * 0.3:g}"
        rows.append([arrival, str(draw(st.integers(1, 3000))), str(draw(st.integers(1, 300)))])
    for _ in range(draw(st.integers(0, 3))):
        if not rows:
            break
        row = rows[draw(st.integers(0, len(rows) - 1))]
        if not row:
            continue
        j = draw(st.integers(0, len(row) - 1))
        row[j] = draw(st.sampled_from(["", "-1", "0", "nan", "inf", "1e400", "x", "2.5",
                                       "1e12", "2023-13-45", "\"", "é"]))
        if draw(st.booleans()):
            del row[j]
    return "\n".join([header] + [",".join(r) for r in rows]) + "\n"


@FUZZ
@given(text=mutated_requests(), scheduler=st.sampled_from(["static", "continuous", "chunked"]))
def test_mutated_request_files(text, scheduler, tmp_path):
    path = tmp_path / "requests.csv"
    path.write_text(text)
    argv = ["simulate", str(MODELS / "tinyllama-1.1b.arch"), "--hw", "nvidia-a100-80gb",
            "--requests", str(path), "--scheduler", scheduler, "--format", "json"]
    code, out, err, seconds = run(argv)
    assert_clean(argv, code, out, err, seconds, json_out=True)
