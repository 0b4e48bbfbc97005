"""The documentation's examples are code too: they must compile and say what they claim."""
import re

import costdsl

from conftest import ROOT


def _blocks(path, lang=""):
    return re.findall(rf"```{lang}\n(.*?)```", (ROOT / path).read_text(), re.S)


def test_language_reference_complete_example_compiles(tmp_path):
    example = _blocks("docs/language.md", "arch")[0]
    path = tmp_path / "tiny.arch"
    path.write_text(example)
    model = costdsl.load(path)
    # TinyLlama-1.1B dimensions: 1,100,048,384 parameters (TinyLlama/TinyLlama-1.1B config.json
    # with untied embeddings: 2*32000*2048 + 2048 + 22*(2048^2*2 + 2*2048*256 + 3*2048*5632
    # + 2*2048))
    assert model.params() == 2 * 32000 * 2048 + 2048 + 22 * (
        2 * 2048**2 + 2 * 2048 * 256 + 3 * 2048 * 5632 + 2 * 2048)
    assert model.params() == 1_100_048_384
    a = model.analyze("nvidia-l4", batch=8, seq=1024)
    assert {"prefill", "decode"} == set(a.stages)


def test_shipped_examples_compile_and_apply_their_passes():
    examples = sorted((ROOT / "examples").glob("*.arch"))
    assert examples
    for path in examples:
        model = costdsl.load(path)
        assert model.passes, path
        parallel = any(c.name.endswith("_parallel") for c in model.passes)
        if parallel:   # one device's share of the parameters, on a system of devices
            assert model.params() < model.without_passes().params()
            model.compare("nvidia-dgx-h100", batch=4, seq=512)
            continue
        # passes change the graph, never the parameter count
        assert model.params() == model.without_passes().params()
        model.compare("nvidia-h100-sxm", batch=4, seq=512)


def test_every_package_is_listed_for_the_wheel():
    """pyproject.toml lists packages explicitly (the shipped data is mapped into the wheel);
    a subpackage missing there would work from a checkout and vanish from an install."""
    import tomllib
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "costdsl").rglob("__init__.py")}
    assert found <= listed, found - listed
