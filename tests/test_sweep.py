"""Sweeps: range syntax, one vectorised evaluation equal to the per-configuration path, and the
CSV/JSON outputs."""
import csv
import io
import json

import numpy as np
import pytest

import costdsl
from costdsl.cli import main
from costdsl.errors import CostDSLError
from costdsl.hardware import load_hardware
from costdsl.analysis.sweep import MAX_POINTS, parse_range, sweep

from conftest import MODELS

LLAMA = MODELS / "llama-2-7b.arch"


def test_range_syntax():
    assert parse_range("1:5", "batch").tolist() == [1, 2, 3, 4, 5]
    logs = parse_range("128:32768:log9", "seq")
    assert logs.tolist() == [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
    assert parse_range("8,1,4,2,4", "batch").tolist() == [1, 2, 4, 8]
    assert parse_range("4.125,16", "w-bits", integer=False).tolist() == [4.125, 16.0]
    assert len(parse_range("1:1000", "batch")) == 1000


@pytest.mark.parametrize("text, message", [
    ("5:1", "empty"), ("1:10:lin3", "logN"), ("a:4", "not a number"), ("0:4", "positive"),
    ("1.5,2", "not an integer"), ("1:2:3:4", "expected"),
])
def test_bad_ranges(text, message):
    with pytest.raises(CostDSLError, match=message):
        parse_range(text, "batch")


def test_sweep_equals_the_per_configuration_path():
    m = costdsl.load(LLAMA, passes=["flash_attention()"])
    hws = [load_hardware("nvidia-a6000"), load_hardware("nvidia-h100-sxm")]
    bits = [(16.0, 16.0, 16.0), (4.0, 16.0, 8.0)]
    table = sweep(m, hws, np.array([1, 16, 300]), np.array([128, 4096]), bits,
                  ["prefill", "decode"])
    assert len(table) == 2 * 2 * 3 * 2
    for i in range(len(table)):
        col = {k: v[i] for k, v in table.columns.items()}
        w, a, kv = col["w_bits"], col["a_bits"], col["kv_bits"]
        ref = m.analyze(str(col["hardware"]), batch=int(col["batch"]), seq=int(col["seq"]),
                        w_bits=int(w), a_bits=int(a), kv_bits=int(kv))
        for stage in ("prefill", "decode"):
            r = ref.stages[stage]
            assert col[f"{stage}_time_s"] == pytest.approx(r.total.time_s, rel=1e-9)
            share = sum(o.total_time_s for o in r.ops if o.bound == "compute") / r.total.time_s
            assert col[f"{stage}_compute_share"] == pytest.approx(share, rel=1e-9, abs=1e-12)
        assert col["decode_tokens_per_s"] == pytest.approx(col["batch"] / ref.stages[
            "decode"].total.time_s, rel=1e-9)
        assert col["memory_bytes"] == pytest.approx(ref.memory.total_bytes, rel=1e-12)
        assert bool(col["fits"]) == ref.memory.fits


def test_sweep_cli_writes_csv_and_json(tmp_path, capsys):
    out = tmp_path / "s.csv"
    assert main(["sweep", str(LLAMA), "--hw", "nvidia-a6000,nvidia-l4", "--batch", "1:4",
                 "--seq", "128:1024:log4", "--w-bits", "4,16", "--stage", "decode",
                 "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 2 * 2 * 4 * 4
    assert {r["hardware"] for r in rows} == {"nvidia-a6000", "nvidia-l4"}
    assert {r["w_bits"] for r in rows} == {"4", "16"}
    assert set(rows[0]) >= {"batch", "seq", "decode_time_s", "decode_tokens_per_s",
                            "decode_compute_share", "memory_bytes", "fits"}
    assert "prefill_time_s" not in rows[0]
    js = tmp_path / "s.json"
    assert main(["sweep", str(LLAMA), "--hw", "nvidia-a6000", "--batch", "1,2",
                 "--seq", "512", "--out", str(js), "--pass", "fuse_all()"]) == 0
    data = json.loads(js.read_text())
    assert data["passes"] == ["fuse_all()"] and len(data["rows"]) == 2
    assert data["rows"][1]["batch"] == 2 and isinstance(data["rows"][1]["fits"], bool)


def test_sweep_npz_holds_one_array_per_column(tmp_path, capsys):
    out = tmp_path / "s.npz"
    assert main(["sweep", str(LLAMA), "--hw", "nvidia-a6000", "--batch", "1:8",
                 "--seq", "128,4096", "--stage", "decode", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["batch"].tolist() == [b for b in range(1, 9) for _ in (128, 4096)]
    assert data["decode_time_s"].shape == (16,) and data["fits"].dtype == bool
    assert json.loads(str(data["meta_model"])) == "Llama-2-7b"


def test_oversized_sweeps_are_refused(capsys):
    big = int(np.sqrt(MAX_POINTS)) + 10
    assert main(["sweep", str(LLAMA), "--hw", "nvidia-a6000", "--batch", f"1:{big}",
                 "--seq", f"1:{big}"]) == 2
    assert "log spacing" in capsys.readouterr().err


def test_sweep_to_parquet_and_streamed_csv(tmp_path):
    """The same grid through both writers: the Parquet columns and the CSV rows carry the
    numbers of the .npz (NumPy's own) exactly (CSV: to the shortest exact float)."""
    pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed "
                             "(pip install 'costdsl[parquet]')")
    base = ["sweep", str(MODELS / "llama-2-7b.arch"), "--hw", "nvidia-a6000,nvidia-h100-sxm",
            "--batch", "1:20", "--seq", "128:4096:log7", "--stage", "all"]
    paths = {ext: tmp_path / f"s.{ext}" for ext in ("npz", "parquet", "csv")}
    for path in paths.values():
        assert main(base + ["--out", str(path)]) == 0
    reference = np.load(paths["npz"], allow_pickle=False)
    table = pq.read_table(paths["parquet"])
    assert table.num_rows == len(reference["batch"]) == 2 * 20 * 7
    assert json.loads(table.schema.metadata[b"costdsl.model"]) == "Llama-2-7b"
    for name in ("batch", "decode_time_s", "prefill_compute_share", "memory_bytes", "fits"):
        assert (table.column(name).to_numpy() == reference[name]).all(), name
    assert table.column("hardware").to_pylist()[0] == "nvidia-a6000"
    # dictionary pages for the text column only (a million distinct floats make none)
    meta = pq.ParquetFile(paths["parquet"]).metadata.row_group(0)
    encodings = {meta.column(i).path_in_schema: meta.column(i).encodings
                 for i in range(meta.num_columns)}
    assert any("DICTIONARY" in e for e in encodings["hardware"])
    assert not any("DICTIONARY" in e for e in encodings["decode_time_s"])
    with open(paths["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == table.num_rows
    assert [float(r["decode_time_s"]) for r in rows] == list(reference["decode_time_s"])
    assert rows[-1]["hardware"] == "nvidia-h100-sxm" and rows[0]["fits"] in ("true", "false")
