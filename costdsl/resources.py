"""Where the shipped data (grammars/, models/, hardware/) lives.

In a source checkout or an editable install the folders sit beside the package; a built wheel
carries copies inside the package under `_shipped/`. Either way the console script works from any
directory.
"""
from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def shipped_dir(kind: str) -> Path:
    """The folder holding shipped `kind` data: 'grammars', 'models' or 'hardware'."""
    for candidate in (_PACKAGE / "_shipped" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"costdsl installation is missing its {kind}/ folder")


def resolve_model_path(spec: str | Path) -> Path:
    """A path to a .arch file, or a shipped model by name (llama-2-7b) or file name
    (llama-2-7b.arch, as an import would find it)."""
    path = Path(spec)
    if path.exists() or len(path.parts) > 1:
        return path
    from .files import note_absent
    note_absent(path)   # a file of this name made here later would be read instead
    shipped = shipped_dir("models") / (path.name if path.suffix == ".arch" else f"{spec}.arch")
    return shipped if shipped.exists() else path
