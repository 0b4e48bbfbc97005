"""Answers recalled from the cache, without the compiler.

A command's record (the analysis of a model on a hardware, as expression trees: programs.py)
is kept under the inputs the user gave -- the model as typed and as found, the model's name,
`--set` and `--pass` text, the stages, the bitwidths, the hardware's figures, costdsl's version
and code -- together with every file its building read (their SHA-256) and every file looked
for and not found. Asking again, at any batch and context, reads the record back, checks that
no file it came from changed, and compiles it into numbers: numpy and this package's light
modules are loaded, sympy, networkx and lark are not. Anything else is a miss: the compiler
builds the record, and the answer is computed from it in the same way, so a hit and a miss
print the same bytes.
"""
from __future__ import annotations

import os
from typing import Callable, TypeVar

from . import files
from .cache import Slot
from .resources import resolve_model_path

T = TypeVar("T")

FOLDER = "answers"


def model_inputs(spec: str, name: str | None, sets, passes) -> dict:
    """What names a model on the command line: the spec as typed (it is printed) and the file
    it resolves to now (the current directory changes which), its `--model`, `--set` and
    `--pass` text."""
    return {"model": str(spec), "path": os.path.abspath(resolve_model_path(spec)),
            "name": name, "set": list(sets), "pass": list(passes)}


def recalled(kind: str, inputs: dict, build: Callable[[], dict],
             interpret: Callable[[dict], T]) -> T:
    """interpret(record) for `inputs`: the record read back where the cache holds one whose
    files are unchanged, else made by build() (which may load the compiler) and kept."""
    slot = Slot([kind, inputs], FOLDER)
    found = slot.load(lambda entry: interpret(entry["record"])
                      if files.unchanged(entry["reads"]) else None)
    if found is not None:
        return found
    with files.recording() as reads:
        record = build()
    answer = interpret(record)
    slot.store({"reads": reads, "record": record})
    return answer


def recalled_text(inputs: dict, produce: Callable[[], str]) -> str:
    """A command's printed answer for `inputs` (all its arguments and the current directory):
    from the cache where the files it was made from are unchanged, else produce() and kept."""
    return recalled("text", inputs, lambda: {"text": produce()}, _text)


def _text(record: dict) -> str:
    text = record["text"]
    if not isinstance(text, str):
        raise ValueError("not a printed answer")
    return text
