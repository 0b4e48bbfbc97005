"""Output forms: the JSON interface against a golden file, and the other formatters."""
import csv
import io
import json

import pytest

import costdsl
from costdsl.report import FORMATS, to_dict

from conftest import DATA, MODELS, same_json

GOLDEN = DATA / "golden" / "llama-2-7b-a6000-b1-s2048.json"
OP_KEYS = {"name", "kind", "repeat", "flops", "bytes", "intensity", "bound", "time_s"}
TOTAL_KEYS = {"flops", "bytes", "time_s"}


@pytest.fixture(scope="module")
def analysis():
    return costdsl.load(MODELS / "llama-2-7b.arch").analyze("nvidia-a6000", batch=1, seq=2048)


def test_json_matches_golden_file(analysis):
    produced = json.loads(FORMATS["json"](analysis))
    golden = json.loads(GOLDEN.read_text())
    produced.pop("file"), golden.pop("file")
    same_json(produced, golden, rel=1e-9)


def test_json_contract_keys(analysis):
    """The interface named in the issue: these keys, these meanings, always present."""
    d = json.loads(FORMATS["json"](analysis))
    assert {"model", "hardware", "settings", "params", "stages"} <= set(d)
    assert d["params"]["total"] == 6_738_415_616
    assert set(d["stages"]) == {"prefill", "decode"}
    for stage in d["stages"].values():
        for op in stage["ops"]:
            assert OP_KEYS <= set(op)
            assert op["bound"] in ("memory", "compute")
            assert isinstance(op["repeat"], int)
        assert TOTAL_KEYS <= set(stage["total"])
    assert d["settings"] == {"batch": 1, "seq": 2048, "w_bits": 16, "a_bits": 16, "kv_bits": 16}


def test_json_total_sums_all_occurrences(analysis):
    d = to_dict(analysis)
    for stage in d["stages"].values():
        assert stage["total"]["flops"] == sum(o["repeat"] * o["flops"] for o in stage["ops"])


def test_csv_has_one_row_per_op_and_a_total(analysis):
    rows = list(csv.DictReader(io.StringIO(FORMATS["csv"](analysis))))
    n_ops = len(analysis.stages["decode"].ops)
    assert len(rows) == 2 * (n_ops + 1)
    total = next(r for r in rows if r["stage"] == "decode" and r["name"] == "total")
    assert float(total["time_s"]) == pytest.approx(analysis.stages["decode"].total.time_s)


def test_text_and_markdown_list_every_op(analysis):
    text, md = FORMATS["text"](analysis), FORMATS["markdown"](analysis)
    for op in analysis.stages["prefill"].ops:
        assert op.name in text and op.name in md
    assert "6,738,415,616" in text
    table = [l for l in md.splitlines() if l.startswith("|")]
    assert len({l.count("|") for l in table}) == 1  # every Markdown row has the same cells
