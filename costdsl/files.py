"""Reading the user's files: text as UTF-8, every failure a located CostDSLError.

One reader for model files, hardware files, config.json and measurement files, so that a file
that is missing, unreadable, not UTF-8 or absurdly large gets the same clear message wherever
it is read. Used by every stage that reads input.
"""
from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from .errors import CostDSLError

MAX_FILE_BYTES = 64 * 2**20
"""The largest input file read (64 MiB): far above any model, hardware or config file, and a
stated limit instead of an out-of-memory failure on a wrong path."""


def read_user_text(path: str | Path, what: str = "file",
                   error: type[CostDSLError] = CostDSLError, limit: int = MAX_FILE_BYTES,
                   hint: str | None = None) -> str:
    """The text of `path`, decoded as UTF-8 (a leading byte-order mark is dropped); a file over
    `limit` bytes is refused before it is read."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > limit:
            raise error(f"the {what} is {size:,} bytes, more than the {limit:,} costdsl reads",
                        file=str(path), hint=hint)
        data = path.read_bytes()
        _note(path, hashlib.sha256(data).hexdigest())
    except OSError as err:
        raise error(f"cannot read {what}: {err.strerror or err}", file=str(path)) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise error(f"the {what} is not UTF-8 text: byte 0x{data[err.start]:02x} at offset "
                    f"{err.start} cannot be decoded", file=str(path), line=line, column=column,
                    hint="save the file as UTF-8") from None


# --- what an answer was built from ----------------------------------------------------------------

_RECORDERS: list[dict[str, str | None]] = []


@contextlib.contextmanager
def recording():
    """Collect every file read while the block runs, as {resolved path: SHA-256 of its bytes},
    and the paths looked for and not found (None): what a cached answer depends on."""
    reads: dict[str, str | None] = {}
    _RECORDERS.append(reads)
    try:
        yield reads
    finally:
        _RECORDERS.remove(reads)


def _note(path: Path, digest: str | None) -> None:
    for reads in _RECORDERS:
        reads.setdefault(str(path.resolve()), digest)


def note_absent(path: Path) -> None:
    """A file looked for and not found: its appearing later would change the answer."""
    if _RECORDERS:
        _note(path, None)


def unchanged(reads: dict[str, str | None]) -> bool:
    """Every file of `reads` still has the bytes it had, and every absent one is still absent."""
    for name, digest in reads.items():
        path = Path(name)
        try:
            if digest is None:
                if path.exists():
                    return False
            elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
                return False
        except OSError:
            return False
    return True
