"""Every plot kind is generated as PNG and SVG; the SVG carries its axis labels and marks."""
import pytest

from costdsl.cli import main

from conftest import MODELS

LLAMA = str(MODELS / "llama-2-7b.arch")

CASES = {
    "roofline": (["--stage", "prefill", "--pass", "fuse_all()"],
                 ["arithmetic intensity (operations / byte)", "fp16/bf16 ridge",
                  "compute-bound op", "layers[mlp_norm+gate+up+act]"]),
    "batch": (["--seq", "1024"], ["batch (sequences)", "throughput (tokens / s)",
                                  "lm_head compute-bound at 213"]),
    "seq": (["--batch", "1"], ["seq (tokens)", "decode time (ms)", "no op changes bound"]),
    "memory": (["--batch", "8"], ["KV cache", "weights", "activations (peak)",
                                  "KV cache = weights at 3,212", "out of memory from seq"]),
    "serve": (["--seq", "1024", "--gen", "64"], ["time per output token (ms)",
                                                 "out of memory", "b=1"]),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_plot_kinds(kind, tmp_path, capsys):
    extra, labels = CASES[kind]
    for suffix in ("png", "svg"):
        out = tmp_path / f"{kind}.{suffix}"
        assert main(["plot", kind, LLAMA, "--hw", "nvidia-a6000", *extra,
                     "--out", str(out)]) == 0
        assert out.stat().st_size > 10_000
    svg = (tmp_path / f"{kind}.svg").read_text()
    for label in labels:
        assert label in svg, label
    assert (tmp_path / f"{kind}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_rejects_other_suffixes(tmp_path, capsys):
    assert main(["plot", "roofline", LLAMA, "--hw", "nvidia-a6000",
                 "--out", str(tmp_path / "x.pdf")]) == 2
    assert ".png or .svg" in capsys.readouterr().err


def test_speculative_plot_marks_break_even_and_the_batch_limit(tmp_path, capsys):
    """Mistral-7B with TinyLlama at 128 cached on an H100 (ideal): speculation stops paying at
    a batch inside the default range, and the plot says where."""
    out = tmp_path / "spec.svg"
    assert main(["plot", "speculative", str(MODELS / "mistral-7b.arch"), "--hw",
                 "nvidia-h100-sxm", "--ideal", "--seq", "128", "--decoding",
                 'speculative(draft="tinyllama-1.1b", k=4, accept=0.8)', "--out", str(out)]) == 0
    svg = out.read_text()
    for label in ("acceptance rate", "break-even", "k = 8", "stops paying at batch",
                  "speedup over plain decoding"):
        assert label in svg, label
    assert main(["plot", "speculative", str(MODELS / "mistral-7b.arch"), "--hw",
                 "nvidia-h100-sxm", "--out", str(out)]) == 2
    assert "needs --decoding" in capsys.readouterr().err
