"""Everything a user can cause raises a CostDSLError: file, line, column, what was expected.

The CLI prints `str(error)` and exits 2; a Python traceback reaching a user is a bug.
"""
from __future__ import annotations


_SOURCES: dict[str, str] = {}


def register_source(file: str, text: str) -> None:
    """Remember a file's text so that any later error pointing into it can quote the line."""
    _SOURCES[file] = text


def caret_context(file: str | None, line: int | None, column: int | None) -> str | None:
    text = _SOURCES.get(file) if file else None
    if text is None or line is None:
        return None
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return None
    return _clipped(lines[line - 1], max(column or 1, 1) - 1)


CONTEXT_WIDTH = 100
"""The most characters of the offending line an error quotes (a 200 kB line is not shown)."""


def _clipped(text: str, at: int) -> str:
    """The line with a caret under index `at`, cut to CONTEXT_WIDTH around it ('...' marks a
    cut)."""
    if len(text) <= CONTEXT_WIDTH:
        return f"{text}\n{' ' * at}^"
    start = max(0, min(at - CONTEXT_WIDTH // 2, len(text) - CONTEXT_WIDTH))
    head = "..." if start > 0 else ""
    tail = "..." if start + CONTEXT_WIDTH < len(text) else ""
    return f"{head}{text[start:start + CONTEXT_WIDTH]}{tail}\n{' ' * (len(head) + at - start)}^"


class CostDSLError(Exception):
    """Base class of every error caused by user input (a .arch file, a hardware file, a flag)."""

    label = "error"

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 column: int | None = None, hint: str | None = None, context: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.hint = hint
        self.context = context if context is not None else caret_context(file, line, column)

    def where(self) -> str:
        parts = [p for p in (self.file, self.line, self.column) if p is not None]
        return ":".join(str(p) for p in parts)

    def __str__(self) -> str:
        where = self.where()
        head = f"{where}: {self.label}: {self.message}" if where else f"{self.label}: {self.message}"
        lines = [head]
        if self.context:
            lines.append(self.context.rstrip("\n"))
        if self.hint:
            lines.append(f"hint: {self.hint}")
        return "\n".join(lines)


def at(cls: type["CostDSLError"], message: str, pos, hint: str | None = None) -> "CostDSLError":
    """An error of class `cls` located at an AST position (anything with file, line, column)."""
    return cls(message, file=pos.file, line=pos.line, column=pos.column, hint=hint)


class ArchSyntaxError(CostDSLError):
    label = "syntax error"


class ArchNameError(CostDSLError):
    """A name (parameter, tensor, op kind, block, model, attribute) that is not defined."""
    label = "name error"


class ShapeError(CostDSLError):
    """Connected ops whose tensor widths or token rows disagree."""
    label = "shape error"


class ArchError(CostDSLError):
    """Any other mistake in a model description (repeat of a non-block, cyclic import, ...)."""
    label = "error"


class HardwareError(CostDSLError):
    label = "hardware error"


class EvaluationError(CostDSLError):
    """A value needed for numbers is missing or invalid (a free parameter, batch <= 0, ...)."""
    label = "error"
