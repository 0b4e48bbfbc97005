"""Progress of long work on the terminal: one line on stderr, rewritten in place.

Silent unless the CLI turned it on (`enable`), which it does only when stderr is a terminal and
--quiet is not given: output piped to a file or read by a tool never carries it. The work calls
`steps(label, items)` around its loop and knows nothing of where the line goes.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

_enabled = False
_EVERY_S = 0.1  # redraw at most ten times a second


def enable(on: bool = True) -> None:
    global _enabled
    _enabled = on


def steps(label: str, items: Iterable[T], total: int | None = None) -> Iterator[T]:
    """Yield `items`, drawing `label: i/total` (and the elapsed time) while they run."""
    if not _enabled:
        yield from items
        return
    items = list(items) if total is None else items
    total = len(items) if total is None else total
    start = last = time.monotonic()
    try:
        for i, item in enumerate(items):
            now = time.monotonic()
            if now - last >= _EVERY_S or i == 0:
                _draw(f"{label}: {i}/{total} ({now - start:.0f} s)")
                last = now
            yield item
    finally:
        _draw("")


def _draw(text: str) -> None:
    sys.stderr.write("\r\033[K" + text)
    sys.stderr.flush()


class Line:
    """A status line the work rewrites with its own text (`show`), at most ten times a second."""

    def __init__(self):
        self.start = time.monotonic()
        self.last = 0.0

    def show(self, text: str) -> None:
        if not _enabled:
            return
        now = time.monotonic()
        if now - self.last >= _EVERY_S:
            _draw(text)
            self.last = now

    def close(self) -> None:
        if _enabled:
            _draw("")


class Counter(Line):
    """Progress of a loop that is not a for loop: `update(done)` with the count so far."""

    def __init__(self, label: str, total: int):
        super().__init__()
        self.label, self.total = label, total
        self.last = self.start   # the first line after a tenth of a second: short work draws none

    def update(self, done: int) -> None:
        if _enabled:   # called every iteration: nothing is formatted when the line is off
            self.show(f"{self.label}: {done:,}/{self.total:,} "
                      f"({time.monotonic() - self.start:.0f} s)")
