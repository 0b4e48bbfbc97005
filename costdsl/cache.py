"""The user's cache directory: where entries live, their keys, atomic writes and the checks a
read entry must pass. Entries are JSON data (expression trees, records), never code or pickles;
what is built from them is generated here, by costdsl (analysis.trees).

    COSTDSL_CACHE=/path      where entries live (default $XDG_CACHE_HOME/costdsl or ~/.cache/costdsl)
    COSTDSL_NO_CACHE=1       no cache at all (`costdsl --no-cache ...` sets it)

A directory that is not the user's own, or is writable by others, is not used (entries could
be planted). No sympy, networkx or lark here: a command answered from the cache reads it
without loading the compiler.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from .version import __version__

SCHEMA = 3  # 2: entries carry their key and a digest of their content; 3: any content

T = TypeVar("T")


def cache_dir() -> Path | None:
    """The cache directory, or None when disabled or unsafe to use."""
    return cache_status()[0]


def cache_status() -> tuple[Path | None, str]:
    """(the cache directory or None, why it is off: "" when on)."""
    if os.environ.get("COSTDSL_NO_CACHE"):
        return None, "COSTDSL_NO_CACHE is set (or --no-cache was given)"
    base = os.environ.get("COSTDSL_CACHE")
    if base:
        path = Path(base)
    else:
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        path = Path(root) / "costdsl"
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        info = path.stat()
    except OSError as err:
        what = "is a file, not a directory" if path.is_file() else \
            f"cannot be made ({err.strerror or err})"
        return None, f"{path} {what}"
    if hasattr(os, "getuid") and (info.st_uid != os.getuid() or info.st_mode & 0o022):
        # someone else's, or writable by others: entries could be planted
        return None, f"{path} is not private to you (owned by another user or writable by others)"
    return path, ""


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """The package's modules and the grammar as (path, size, mtime) stats: the cost rules and
    the language an entry was made by.
    Stats, not contents: a few hundred microseconds once per process, and a reinstall that
    changes nothing costs one rebuild, not a wrong answer."""
    from .resources import shipped_dir
    package, grammars = Path(__file__).resolve().parent, shipped_dir("grammars")
    stats = []
    for path in sorted([*package.rglob("*.py"), *grammars.glob("*.lark")]):
        info = path.stat()
        stats.append((path.name, str(path.parent), info.st_size, info.st_mtime_ns))
    return hashlib.sha256(repr(stats).encode()).hexdigest()


def key_of(parts) -> str:
    text = json.dumps([SCHEMA, __version__, code_fingerprint(), parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()


READ_ERRORS = (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
               SyntaxError, ZeroDivisionError, RecursionError, MemoryError)
"""What reading or interpreting a damaged entry may raise: it is rebuilt, with a warning."""


class Slot:
    """The place of one entry: the inputs `parts` describe, under `folder` of the cache
    directory. Without a usable cache directory, reads find nothing and writes do nothing."""

    def __init__(self, parts, folder: str = ""):
        directory = cache_dir()
        self.key = key_of(parts)
        self.path = None
        if directory is not None:
            self.path = directory / folder / f"{self.key}.json"   # folder "": at the top

    def load(self, interpret: Callable[[dict], T]) -> T | None:
        """interpret(content) of the stored entry, after checking its schema, its key and its
        digest; None where there is none. A damaged entry (or one `interpret` rejects) is
        reported on stderr and left to be rebuilt."""
        if self.path is None or not self.path.exists():
            return None
        try:
            entry = json.loads(self.path.read_text())
            if not isinstance(entry, dict) or entry.get("schema") != SCHEMA:
                raise ValueError("not an entry of this costdsl")
            content = {k: v for k, v in entry.items() if k not in ENVELOPE}
            if entry.get("key") != self.key or entry.get("digest") != _digest(self.key,
                                                                             content):
                raise ValueError("its digest does not match its content")
            return interpret(content)
        except READ_ERRORS as err:
            reason = type(err).__name__ if isinstance(err, (RecursionError, MemoryError)) \
                else str(err) or type(err).__name__
            print(f"costdsl: warning: cache entry {self.path.name} is unreadable ({reason}); "
                  "rebuilt", file=sys.stderr)
            return None

    def store(self, content: dict) -> None:
        """Keep `content` (JSON data) under this slot's key."""
        if self.path is None:
            return
        self.path.parent.mkdir(exist_ok=True, mode=0o700)
        _store(self.path, {"schema": SCHEMA, "key": self.key, **content,
                           "digest": _digest(self.key, content)})


ENVELOPE = ("schema", "key", "digest")


def _digest(key: str, content: dict) -> str:
    """What an entry must hash to: its key and its content (a changed digit, a swapped tree or
    an entry copied under another key is caught on read and rebuilt)."""
    text = json.dumps([key, content], separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _store(path: Path, entry: dict) -> None:
    """Write atomically (a reader never sees half an entry); a failure only skips caching."""
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, separators=(",", ":"))
        os.replace(tmp, path)
    except OSError:
        try:
            os.unlink(tmp)
        except (OSError, UnboundLocalError):
            pass


def entries(directory: Path) -> list[Path]:
    """Every entry: compiled functions at the top, answers in their folders."""
    return [*directory.glob("*.json"), *directory.glob("*/*.json")]


def clear() -> int:
    """Remove every entry; the number removed."""
    directory = cache_dir()
    if directory is None:
        return 0
    removed = 0
    for entry in entries(directory):
        try:
            entry.unlink()
            removed += 1
        except OSError:
            pass
    return removed
