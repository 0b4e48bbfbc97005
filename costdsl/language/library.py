"""Loading .arch files: reading, resolving `import`s, and collecting every block and model
visible from a root file into a Library, the input of elaboration."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from . import ast
from ..errors import ArchError, ArchNameError, CostDSLError, at
from .parser import parse_program
from ..files import note_absent, read_user_text
from ..names import did_you_mean
from ..resources import resolve_model_path, shipped_dir


@dataclass(frozen=True)
class Library:
    """Every block and model visible from a root file (its own and those of its imports)."""
    root: ast.Program
    blocks: Mapping[str, ast.Block]
    models: Mapping[str, ast.Model]
    shadowed: Mapping[str, list] = None  # definitions a later one of the same name replaced


MAX_ARCH_BYTES = 2**20
"""The largest .arch file read (1 MiB, about 20,000 statements, compiled in a few seconds). A
405B model written out op by op for every layer is under 200 kB; with blocks it is 2 kB."""


def read_arch(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        names = sorted(p.stem for p in shipped_dir("models").glob("*.arch"))
        guess = did_you_mean(path.name, names) if len(path.parts) == 1 else None
        raise CostDSLError(f"no such file or shipped model: {path}",
                           hint=(guess + " " if guess else "") + f"shipped: {', '.join(names)}")
    return read_user_text(path, "model file", limit=MAX_ARCH_BYTES,
                          hint="write repeated layers once, as a block with `repeat`")


def load_library(path: str | Path, text: str | None = None) -> Library:
    path = resolve_model_path(path) if text is None else Path(path)
    root = parse_program(read_arch(path) if text is None else text, str(path))
    blocks: dict[str, ast.Block] = {}
    models: dict[str, ast.Model] = {}
    shadowed: dict[str, list] = {}
    _collect(root, path, blocks, models, visiting=[], seen=set(), shadowed=shadowed)
    return Library(root, blocks, models, shadowed)


def _resolve_import(imp: ast.Import, importer: Path) -> Path:
    for candidate in (importer.parent / imp.path, shipped_dir("models") / imp.path):
        if candidate.is_file():
            return candidate.resolve()
        note_absent(candidate)   # a file made here later would change what is imported
    raise at(ArchNameError, f"cannot find imported file {imp.path!r}", imp.pos,
             hint=f"paths are relative to {importer.parent} or to the shipped models/ folder")


MAX_IMPORT_DEPTH = 100
"""How deeply imports may chain (a file importing a file importing ...): a stated limit
instead of Python's recursion limit."""


def _collect(program, path, blocks, models, visiting, seen, shadowed):
    visiting.append(path.resolve())
    for imp in program.imports:
        target = _resolve_import(imp, path)
        if target in visiting:
            raise at(ArchError, f"import cycle through {imp.path!r}", imp.pos)
        if len(visiting) >= MAX_IMPORT_DEPTH:
            raise at(ArchError, f"imports chain more than {MAX_IMPORT_DEPTH} files deep",
                     imp.pos)
        if target not in seen:
            seen.add(target)
            _collect(parse_program(read_arch(target), str(target)), target, blocks, models,
                     visiting, seen, shadowed)
    for table, items, what in ((blocks, program.blocks, "block"), (models, program.models, "model")):
        for item in items:
            if item.name in table and table[item.name].pos.file == item.pos.file:
                first = table[item.name].pos
                raise at(ArchError, f"{what} {item.name!r} is defined twice "
                         f"(first at line {first.line})", item.pos)
            if item.name in table:
                shadowed.setdefault(item.name, []).append(table[item.name])
            table[item.name] = item  # a file's own definitions override those it imports
    visiting.pop()
