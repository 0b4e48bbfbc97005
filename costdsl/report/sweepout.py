"""CSV, JSON and NumPy (.npz) forms of a sweep: one row per grid point."""
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
    names = list(table.columns)
    row = ",".join(_format(table.columns[n]) for n in names)
    columns = [np.where(c, "true", "false").tolist() if c.dtype == bool else c.tolist()
               for c in (table.columns[n] for n in names)]
    return ",".join(names) + "\n" + "\n".join(map(row.__mod__, zip(*columns))) + "\n"


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
