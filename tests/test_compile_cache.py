"""The persistent compile cache: the same numbers with and without it, a new entry for any
changed input, corrupt or planted entries rebuilt (never executed), unsafe directories unused."""
import json
import os
from pathlib import Path

import pytest

import costdsl
from costdsl import cache as compiled
from costdsl.cli import main

from conftest import MODELS, shipped_sizes

SWEEP = ["--batch", "1:40", "--seq", "128:8192:log9", "--stage", "all"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    directory = tmp_path / "cache"
    monkeypatch.setenv("COSTDSL_CACHE", str(directory))
    monkeypatch.delenv("COSTDSL_NO_CACHE", raising=False)
    return directory


def sweep_csv(model, hw, out: Path, *extra) -> str:
    assert main(["sweep", str(MODELS / model) if not str(model).startswith("/") else str(model),
                 "--hw", hw, *SWEEP, "--out", str(out), *extra]) == 0
    return out.read_text()


@pytest.mark.parametrize("model, hw, passes", [
    ("llama-2-7b.arch", "nvidia-a6000", []),
    ("mistral-7b.arch", "nvidia-h100-sxm", ["--pass", "quantize(kv=8)"]),        # windows
    ("mixtral-8x7b.arch", "nvidia-dgx-h100", ["--pass", "expert_parallel(n=8)"]),  # log, sqrt
    ("deepseek-v2-lite.arch", "nvidia-a100-80gb", []),                            # MLA
    ("llama-2-70b.arch", "nvidia-dgx-h100",
     ["--pass", "tensor_parallel(n=4)", "--pass", "pipeline_parallel(n=2, microbatches=2)"]),
])
def test_cached_and_uncached_sweeps_are_identical(cache, tmp_path, monkeypatch, model, hw, passes):
    cold = sweep_csv(model, hw, tmp_path / "cold.csv", *passes)          # builds and stores
    assert list(cache.glob("*.json"))
    warm = sweep_csv(model, hw, tmp_path / "warm.csv", *passes)          # read back
    monkeypatch.setenv("COSTDSL_NO_CACHE", "1")
    none = sweep_csv(model, hw, tmp_path / "none.csv", *passes)          # the sympy path
    assert cold == warm == none


def test_every_input_changes_the_key(cache, tmp_path):
    sweep_csv("llama-2-7b.arch", "nvidia-a6000", tmp_path / "a.csv")
    entries = set(cache.glob("*.json"))
    sweep_csv("llama-2-7b.arch", "nvidia-a6000", tmp_path / "b.csv", "--pass", "quantize(kv=8)")
    assert len(set(cache.glob("*.json")) - entries) == 2     # a pass: new entries per stage
    entries = set(cache.glob("*.json"))
    hw = tmp_path / "a6000.toml"
    hw.write_text((MODELS.parent / "hardware" / "nvidia-a6000.toml").read_text()
                  .replace('bandwidth = "768 GB/s"', 'bandwidth = "700 GB/s"'))
    sweep_csv("llama-2-7b.arch", str(hw), tmp_path / "c.csv")
    assert len(set(cache.glob("*.json")) - entries) == 2     # a hardware figure
    entries = set(cache.glob("*.json"))
    sweep_csv("llama-2-7b.arch", "nvidia-a6000", tmp_path / "d.csv", "--w-bits", "8")
    assert len(set(cache.glob("*.json")) - entries) == 2     # a bitwidth


def test_corrupt_and_planted_entries_are_rebuilt_not_run(cache, tmp_path, capsys):
    good = sweep_csv("llama-2-7b.arch", "nvidia-a6000", tmp_path / "a.csv")
    entries = sorted(cache.glob("*.json"))
    entries[0].write_text(entries[0].read_text()[:100])                   # truncated
    planted = json.loads(entries[1].read_text())
    marker = tmp_path / "ran"
    planted["trees"][0] = ["s", f"__import__('os').system('touch {marker}')"]
    entries[1].write_text(json.dumps(planted))
    capsys.readouterr()
    again = sweep_csv("llama-2-7b.arch", "nvidia-a6000", tmp_path / "b.csv")
    assert again == good and not marker.exists()
    assert capsys.readouterr().err.count("is unreadable") == 2
    assert main(["sweep", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000", *SWEEP,
                 "--out", str(tmp_path / "c.csv")]) == 0
    assert "unreadable" not in capsys.readouterr().err                   # rewritten whole


def test_an_unsafe_directory_is_not_used(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)                                                   # others may write
    monkeypatch.setenv("COSTDSL_CACHE", str(shared))
    monkeypatch.delenv("COSTDSL_NO_CACHE", raising=False)
    assert compiled.cache_dir() is None
    monkeypatch.setenv("COSTDSL_CACHE", "/proc/no-such-place")            # cannot be made
    assert compiled.cache_dir() is None


def test_cache_command(cache, tmp_path, capsys):
    sweep_csv("llama-2-7b.arch", "nvidia-a6000", tmp_path / "a.csv")
    assert main(["cache", "info"]) == 0
    assert "2 entries" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert main(["--no-cache", "sweep", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000",
                 *SWEEP, "--out", str(tmp_path / "b.csv")]) == 0
    assert not list(cache.glob("*.json"))
    os.environ.pop("COSTDSL_NO_CACHE", None)   # main() set it for the rest of this process


SHIPPED = shipped_sizes()


@pytest.mark.parametrize("model", SHIPPED)
def test_every_shipped_model_sweeps_the_same_from_the_cache(cache, monkeypatch, model):
    import numpy as np
    import costdsl
    from costdsl.analysis.sweep import sweep
    from costdsl.hardware import load_hardware
    hw = [load_hardware("nvidia-h100-sxm")]
    grid = dict(batches=np.array([1, 7, 64]), seqs=np.array([128, 3000]), bits=[(16, 16, 16)],
                stages=["prefill", "decode"])
    stored = sweep(costdsl.load(MODELS / model), hw, **grid).columns      # built and stored
    read = sweep(costdsl.load(MODELS / model), hw, **grid).columns        # a new model: read back
    monkeypatch.setenv("COSTDSL_NO_CACHE", "1")
    plain = sweep(costdsl.load(MODELS / model), hw, **grid).columns       # lambdify, no cache
    for name in plain:
        assert (stored[name] == plain[name]).all() and (read[name] == plain[name]).all(), name


def test_plan_reads_its_stage_times_back(cache, monkeypatch):
    import costdsl
    first = costdsl.load(MODELS / "llama-2-70b.arch").plan("nvidia-dgx-h100", 512, 4, 1,
                                                          bits=(16,))
    entries = set(cache.glob("*.json"))
    assert entries
    again = costdsl.load(MODELS / "llama-2-70b.arch").plan("nvidia-dgx-h100", 512, 4, 1,
                                                          bits=(16,))
    assert set(cache.glob("*.json")) == entries                      # read, not rebuilt
    monkeypatch.setenv("COSTDSL_NO_CACHE", "1")
    plain = costdsl.load(MODELS / "llama-2-70b.arch").plan("nvidia-dgx-h100", 512, 4, 1,
                                                          bits=(16,))
    assert [p.as_dict() for p in first.plans] == [p.as_dict() for p in again.plans] == \
        [p.as_dict() for p in plain.plans]
