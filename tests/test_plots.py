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
