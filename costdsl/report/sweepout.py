"""CSV, JSON, NumPy (.npz) and Parquet forms of a sweep: one row per grid point.

CSV is written to a file in chunks of rows, so that a million-row sweep never holds its whole
text (the peak stays that of one chunk). Parquet goes through pyarrow (the optional extra
`costdsl[parquet]`): the columns are handed over as numpy arrays, without a copy per row, and
pandas, polars and DuckDB read the file directly."""
from __future__ import annotations

import json

import numpy as np

from ..analysis.sweep import SweepTable
from .jsonsafe import dumps


def _format(values: np.ndarray) -> str:
    if values.dtype == bool:
        return "%s"
    if values.dtype.kind in "iu":
        return "%d"
    if values.dtype.kind == "f":
        return "%.9g"
    return "%s"


def csv_text(table: SweepTable) -> str:
    """Header, then one line per grid point (one % format per row: the fast path in Python)."""
    return "".join(_csv_chunks(table, len(table) or 1))


CSV_CHUNK = 100_000
"""Rows formatted at a time when a CSV is written to a file."""


def _csv_chunks(table: SweepTable, rows: int):
    names = list(table.columns)
    row = ",".join(_format(table.columns[n]) for n in names)
    yield ",".join(names) + "\n"
    for start in range(0, len(table), rows):
        columns = [np.where(c, "true", "false").tolist() if c.dtype == bool else c.tolist()
                   for c in (table.columns[n][start:start + rows] for n in names)]
        yield "\n".join(map(row.__mod__, zip(*columns))) + "\n"


def write_csv(table: SweepTable, path: str) -> None:
    """The CSV, streamed to `path` a chunk of rows at a time: through pyarrow's CSV writer where
    pyarrow is installed (C++, about ten times faster; floats in their shortest exact form),
    else formatted here (%.9g)."""
    try:
        import pyarrow.csv as pa_csv
    except ImportError:
        with open(path, "w") as f:
            for chunk in _csv_chunks(table, CSV_CHUNK):
                f.write(chunk)
        return
    with open(path, "wb") as f:
        f.write((",".join(table.columns) + "\n").encode())
        pa_csv.write_csv(_arrow(table), f, pa_csv.WriteOptions(
            include_header=False, quoting_style="none", batch_size=CSV_CHUNK))


def _arrow(table: SweepTable):
    """The sweep as a pyarrow table; text columns dictionary-encoded (a handful of values)."""
    import pyarrow as pa
    return pa.table({k: _categories(pa, v) if v.dtype == object else v
                     for k, v in table.columns.items()})


def _categories(pa, column: np.ndarray):
    """A text column of few distinct values (the hardware names) as a dictionary array, built
    from one comparison per value rather than a string conversion per row."""
    keys = list(dict.fromkeys(column.tolist()))
    if len(keys) > 256:
        return pa.array(column, type=pa.string()).dictionary_encode()
    index = np.zeros(len(column), dtype=np.int32)
    for j, key in enumerate(keys[1:], 1):
        index[column == key] = j
    return pa.DictionaryArray.from_arrays(index, pa.array(keys, type=pa.string()))


def write_parquet(table: SweepTable, path: str, meta: dict) -> None:
    """One column per quantity, `meta` (model, passes) in the file's key-value metadata."""
    import pyarrow.parquet as pq
    arrow = _arrow(table).replace_schema_metadata(
        {f"costdsl.{k}": json.dumps(v) for k, v in meta.items()})
    # dictionary pages only for the text columns: on a million distinct floats pyarrow tries a
    # dictionary first and falls back, which costs more than the whole plain write
    text = [k for k, v in table.columns.items() if v.dtype == object]
    pq.write_table(arrow, path, compression="snappy", use_dictionary=text)


def _plain(v):
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def json_text(table: SweepTable, meta: dict) -> str:
    names = list(table.columns)
    columns = [table.columns[n].tolist() for n in names]
    rows = [dict(zip(names, (_plain(v) for v in row))) for row in zip(*columns)]
    return dumps({**meta, "rows": rows}, indent=None)


def write_npz(table: SweepTable, path: str, meta: dict) -> None:
    """One array per column (a row per grid point), uncompressed: the fast form for big grids
    (about 0.1 s per million rows against seconds for CSV). `meta` values are stored as 0-d
    JSON strings."""
    arrays = {k: (v.astype(str) if v.dtype == object else v) for k, v in table.columns.items()}
    np.savez(path, **arrays, **{f"meta_{k}": np.array(json.dumps(v))
                                          for k, v in meta.items()})
