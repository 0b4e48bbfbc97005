"""Request streams for the serving simulation: read from CSV or drawn from named distributions.

A CSV holds `arrival_s,prompt_tokens,output_tokens`, or the columns of the public Azure LLM
inference traces as downloaded, `TIMESTAMP,ContextTokens,GeneratedTokens` (timestamps as
date-times; arrivals are seconds after the first). Rows out of arrival order are sorted, and
the simulation's summary says how many were (a trace concatenated from parts is common, and
the order of arrival is what a server sees).

Synthetic streams: Poisson arrivals at `rate` requests/s (exponential gaps), prompt and output
lengths from `lognormal(median, sigma)`, `uniform(low, high)`, `normal(mean, sd)` or
`fixed(n)`, rounded to whole tokens of at least 1, from numpy's PCG64 generator seeded with
`seed`: the same seed gives the same stream, byte for byte.
"""
from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np

from ..errors import EvaluationError
from ..files import read_user_text
from .. import symbols as S

MAX_REQUESTS = 10_000_000
MIN_RATE, MAX_RATE = 1e-6, 1e9
"""Arrival rates (requests/s) a synthetic stream may have: a slower one spans more than a float
clock resolves, a faster one arrives within a nanosecond."""


@dataclass(frozen=True)
class Stream:
    arrival_s: np.ndarray     # float, sorted
    prompt: np.ndarray        # int >= 1
    output: np.ndarray        # int >= 1
    source: str
    reordered: int = 0        # rows that arrived out of order in the file (sorted here)
    hashes: tuple | None = None   # per request, the hashes of its shareable KV blocks (a
                                  # trace's hash_ids, or its session's earlier turns)

    def __len__(self) -> int:
        return len(self.arrival_s)


_COLUMNS = (("arrival_s", "prompt_tokens", "output_tokens"),
            ("TIMESTAMP", "ContextTokens", "GeneratedTokens"))


def read_requests(path: str) -> Stream:
    text = read_user_text(path, "request file", EvaluationError)
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise EvaluationError(f"{path}: the request file is empty")
    header = [h.strip() for h in rows[0]]
    names = next((c for c in _COLUMNS if set(c) <= set(header)), None)
    if names is None:
        raise EvaluationError(f"{path}:1: missing columns: expected {', '.join(_COLUMNS[0])} "
                              f"(or the Azure trace's {', '.join(_COLUMNS[1])}); found "
                              f"{', '.join(header) or 'none'}", file=path, line=1)
    index = [header.index(n) for n in names]
    if len(rows) - 1 > MAX_REQUESTS:
        raise EvaluationError(f"{path}: more than {MAX_REQUESTS:,} requests")
    prefix = _prefix_column(header, path)
    arrival, prompt, output, keys = [], [], [], []
    for line, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) < len(header):
            raise EvaluationError(f"{path}:{line}: {len(row)} fields, the header has "
                                  f"{len(header)}", file=path, line=line)
        cells = [row[i].strip() for i in index]
        arrival.append(_time(cells[0], names[0], path, line))
        prompt.append(_count(cells[1], names[1], path, line))
        output.append(_count(cells[2], names[2], path, line))
        if prefix is not None:
            keys.append(_prefix_key(row[header.index(prefix)].strip(), prefix, path, line))
    if not arrival:
        raise EvaluationError(f"{path}: no requests after the header")
    times = _relative(np.array(arrival, dtype=float), path)
    order = np.argsort(times, kind="stable")
    reordered = int(np.sum(order != np.arange(len(order))))
    prompt = np.array(prompt, dtype=np.int64)[order]
    output = np.array(output, dtype=np.int64)[order]
    hashes = None
    if prefix is not None:
        keys = [keys[i] for i in order]
        hashes = tuple(SessionBlocks(k) if prefix == "session_id" else k for k in keys)
    return Stream(times[order], prompt, output, path, reordered, hashes)


PREFIX_COLUMNS = ("hash_ids", "session_id")


def _prefix_column(header: list[str], path: str) -> str | None:
    """Which column names a request's shareable prefix, if any."""
    present = [c for c in PREFIX_COLUMNS if c in header]
    if len(present) > 1:
        raise EvaluationError(f"{path}:1: hash_ids and session_id both given: a request names "
                              "its prefix blocks one way", file=path, line=1)
    return present[0] if present else None


def _prefix_key(cell: str, column: str, path: str, line: int):
    """A row's hash_ids (a list of integers, one per KV block of its prompt, as the public
    Mooncake traces give them) or its session_id (any text; empty: no session)."""
    if column == "session_id":
        return cell or None
    try:
        value = json.loads(cell) if cell else []
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool)
                                              for v in value):
        raise EvaluationError(f"{path}:{line}: hash_ids {cell!r} is not a list of integers",
                              file=path, line=line, hint='e.g. "[17, 18, 19]": one hash per '
                                                         'KV block of the prompt')
    return tuple(value)


def prefix_record(hashes) -> list | dict:
    """A request's shareable blocks as plain data (a trial record): a list of integers, or
    {"session": id}."""
    if isinstance(hashes, SessionBlocks):
        return {"session": hashes.session}
    return [int(h) for h in hashes]


def prefix_from_record(record) -> "tuple | SessionBlocks":
    if isinstance(record, dict):
        return SessionBlocks(record["session"])
    return tuple(int(h) for h in record)


class SessionBlocks:
    """The KV blocks of a multi-turn chat's turn: each turn's prompt extends the last turn's
    prompt and answer, so block j of every turn of a session holds the same tokens and has the
    hash (session, j). As long as any sequence (a block count never exceeds the tokens); sliced
    to the blocks the simulation asks for."""
    __slots__ = ("session",)
    _LENGTH = 1 << 40

    def __init__(self, session):
        self.session = session

    def __len__(self) -> int:
        return self._LENGTH if self.session is not None else 0

    def __getitem__(self, index: slice) -> list:
        if self.session is None:
            return []
        start, stop, step = index.indices(self._LENGTH)
        return [(self.session, j) for j in range(start, stop, step)]


MAX_SPAN_S = 1e9
"""The longest span of arrivals (about 32 years): past it a float64 clock keeps less than a
microsecond, and a trace that long is a unit mistake (nanoseconds in a column of seconds)."""


def _relative(times: np.ndarray, source: str) -> np.ndarray:
    """Arrivals as seconds after the first: the simulation keeps its clock near 0, where a float
    resolves nanoseconds (epoch times of 1.7e9 s, or 1.7e18 ns, would lose the step times)."""
    times = times - times.min()
    span = float(times.max())
    if not span <= MAX_SPAN_S:
        raise EvaluationError(f"{source}: the arrivals span {span:.3g} s, more than the "
                              f"{MAX_SPAN_S:.0e} s a simulation can resolve",
                              hint="arrival_s is in seconds (epoch nanoseconds divided by 1e9)")
    return times


def _time(cell: str, column: str, path: str, line: int) -> float:
    if column == "TIMESTAMP":
        try:
            stamp = datetime.fromisoformat(cell.replace("Z", "+00:00"))
        except ValueError:
            raise EvaluationError(f"{path}:{line}: {column} {cell!r} is not a date-time",
                                  file=path, line=line) from None
        # A naive time (as Azure's traces write them) is read as UTC, never in the machine's
        # time zone: a daylight-saving change would otherwise move requests by an hour.
        return (stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)).timestamp()
    try:
        value = float(cell)
    except ValueError:
        raise EvaluationError(f"{path}:{line}: {column} {cell!r} is not a number", file=path,
                              line=line) from None
    if not np.isfinite(value) or value < 0:
        raise EvaluationError(f"{path}:{line}: {column} must be a time of at least 0 s, got "
                              f"{cell}", file=path, line=line)
    return value


def _count(cell: str, column: str, path: str, line: int) -> int:
    try:
        value = float(cell)
    except ValueError:
        raise EvaluationError(f"{path}:{line}: {column} {cell!r} is not a number", file=path,
                              line=line) from None
    if not value.is_integer() or not 1 <= value <= S.MAX_SIZE:
        raise EvaluationError(f"{path}:{line}: {column} must be a whole number of tokens from 1 "
                              f"to {S.MAX_SIZE:.0e}, got {cell}", file=path, line=line)
    return int(value)


# --- synthetic streams ----------------------------------------------------------------------------

_DISTRIBUTION = re.compile(r"^\s*([a-z]+)\s*\(\s*([^)]*)\)\s*$")
_BARE_LENGTH = re.compile(r"^\s*-?[0-9]+(\.[0-9]*)?([eE][+-]?[0-9]+)?\s*$")   # signed: a
# negative length is refused as a length ("from 1 to ..."), not as an unknown distribution
_ARGS = {"lognormal": 2, "uniform": 2, "normal": 2, "fixed": 1}


def parse_distribution(text: str, what: str) -> tuple[str, tuple[float, ...]]:
    """("lognormal", (1024.0, 0.8)) from 'lognormal(1024, 0.8)'; a bare length ('512') is
    fixed(512), as `search --isl` takes it; errors name the choices."""
    if _BARE_LENGTH.match(text or ""):
        text = f"fixed({text.strip()})"
    m = _DISTRIBUTION.match(text or "")
    name = m.group(1) if m else None
    if name not in _ARGS:
        raise EvaluationError(f"{what} {text!r}: unknown distribution",
                              hint="lognormal(median, sigma), uniform(low, high), "
                                   "normal(mean, sd), fixed(n) or a bare length n")
    try:
        args = tuple(float(a) for a in m.group(2).split(","))
    except ValueError:
        raise EvaluationError(f"{what} {text!r}: the arguments must be numbers") from None
    if len(args) != _ARGS[name] or not all(np.isfinite(args)):
        raise EvaluationError(f"{what} {text!r}: {name} takes {_ARGS[name]} finite numbers")
    first = args[0]
    if not 1 <= first <= S.MAX_SIZE or (len(args) > 1 and args[1] < 0) or \
            (name == "uniform" and args[1] < args[0]):
        raise EvaluationError(f"{what} {text!r}: lengths must be from 1 to {S.MAX_SIZE:.0e} "
                              "tokens and spreads non-negative (uniform: low <= high)")
    return name, args


def _draw(rng: np.random.Generator, spec: tuple[str, tuple[float, ...]], n: int) -> np.ndarray:
    name, args = spec
    if name == "lognormal":
        values = rng.lognormal(np.log(args[0]), args[1], n)
    elif name == "uniform":
        values = rng.uniform(args[0], args[1], n)
    elif name == "normal":
        values = rng.normal(args[0], args[1], n)
    else:
        values = np.full(n, args[0])
    return np.clip(np.rint(values), 1, S.MAX_SIZE).astype(np.int64)


def synthetic(rate: float, n: int, prompt: str, output: str, seed: int = 0) -> Stream:
    """`n` requests arriving as a Poisson process at `rate` per second."""
    if not (isinstance(rate, (int, float)) and np.isfinite(rate) and
            MIN_RATE <= rate <= MAX_RATE):
        raise EvaluationError(f"the arrival rate must be a positive number of requests/s from "
                              f"{MIN_RATE:g} to {MAX_RATE:g}, got {rate!r}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_REQUESTS:
        raise EvaluationError(f"the number of requests must be from 1 to {MAX_REQUESTS:,}, got "
                              f"{n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise EvaluationError(f"the seed must be a whole number from 0, got {seed!r}")
    specs = parse_distribution(prompt, "--prompt"), parse_distribution(output, "--output")
    rng = np.random.Generator(np.random.PCG64(seed))
    arrival = np.cumsum(rng.exponential(1 / rate, n))
    _relative(arrival, f"--rate {rate:g} with {n:,} requests")  # the span's limit
    return Stream(arrival, _draw(rng, specs[0], n), _draw(rng, specs[1], n),
                  f"Poisson {rate:g}/s, prompt {prompt}, output {output}, seed {seed}")
