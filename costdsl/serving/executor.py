"""Where a search's trials run: in this process, on a local pool of worker processes, or on a
Dask cluster (the `cluster` extra: `pip install costdsl[cluster]`).

A trial is a plain record and so is its answer (serving.trial): a worker needs costdsl
installed and nothing of this process. The map keeps the records' order, so the answers are
the same whichever engine ran them (a trial is deterministic: its stream is in the record).
Dask (`distributed`) rather than Ray: it runs from a plain pip install on any Python this
project supports, starts a local cluster in-process for tests, and its futures are the
standard concurrent.futures interface.
"""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable

from ..errors import CostDSLError, EvaluationError

CONNECT_TIMEOUT_S = 10


def default_workers() -> int:
    return os.cpu_count() or 1


class Executor:
    """Maps a function of one plain record over many, in order."""

    def __init__(self, workers: int = 1, cluster: str | None = None):
        if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 4096:
            raise EvaluationError(f"--workers must be a whole number from 1 to 4096, got "
                                  f"{workers!r}")
        self.workers, self.cluster = workers, cluster
        self._pool = self._client = None

    def __enter__(self) -> "Executor":
        if self.cluster is not None:
            self._client = _connect(self.cluster)
        elif self.workers > 1:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._client is not None:
            self._client.close()

    @property
    def name(self) -> str:
        if self.cluster is not None:
            return f"Dask cluster at {self.cluster}"
        return f"{self.workers} local worker{'s' if self.workers > 1 else ''}" \
            if self.workers > 1 else "this process"

    def map(self, function: Callable[[dict], dict], records: Iterable[dict]) -> list[dict]:
        records = list(records)
        if not records:
            return []
        if self._client is not None:
            futures = self._client.map(function, records, pure=False)
            return self._client.gather(futures)
        if self._pool is not None:
            return list(self._pool.map(function, records))
        return [function(r) for r in records]


def _connect(address: str):
    """A Dask client of the scheduler at `address`, or a clear error within the timeout."""
    try:
        from distributed import Client
    except ImportError:
        raise CostDSLError("--cluster runs the trials on a Dask cluster: install the extra "
                           "(pip install 'costdsl[cluster]')") from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as err:
        raise CostDSLError(f"--cluster {address}: no Dask scheduler answered within "
                           f"{CONNECT_TIMEOUT_S} s ({type(err).__name__}: {err})",
                           hint="start one with `dask scheduler` (and workers with `dask "
                                "worker ADDRESS`), or use --workers N for a local pool") \
            from None
