"""'Did you mean ...?' for names a user types: ops, passes, parameters, hardware, models."""
from __future__ import annotations

import difflib
import re


def _folded(name: str) -> str:
    """The name without case and separators: llama2-7b, Llama_2.7b and llama-2-7b agree."""
    return re.sub(r"[-_. ]", "", name.lower())


def close_names(name: str, options, n: int = 3) -> list[str]:
    """Options the name may have meant: the same name but for case and separators, names that
    contain it (a6000 -> nvidia-a6000, nvidia-h100 -> nvidia-h100-sxm), then near spellings."""
    options = list(options)
    folded = _folded(name)
    same = [o for o in options if _folded(o) == folded]
    inside = [o for o in options if folded and folded in _folded(o) and o not in same]
    near = difflib.get_close_matches(name, options, n=n)
    out = []
    for o in same + sorted(inside, key=len) + near:
        if o not in out:
            out.append(o)
    return out[:n]


def did_you_mean(name: str, options) -> str | None:
    close = close_names(name, options)
    return ("did you mean " + " or ".join(repr(c) for c in close) + "?") if close else None
