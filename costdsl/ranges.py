"""Ranges of sizes and bitwidths on the command line: `1:1000` every integer from 1 to 1000;
`128:32768:log16` 16 log-spaced integers (duplicates after rounding dropped); `1,2,4,8` a list.
Bitwidth lists may hold fractions (`4.125`). No compiler here: the commands that take ranges
parse them before they know whether the cache answers."""
from __future__ import annotations

import math

import numpy as np

from .errors import CostDSLError
from .limits import MAX_SIZE

MAX_POINTS = 4_000_000  # beyond this a CSV is gigabytes: ask for log spacing instead


def parse_range(text: str, name: str, integer: bool = True,
                notes: list[str] | None = None) -> np.ndarray:
    """`a:b`, `a:b:logN` or `v1,v2,...` -> sorted unique values (see the module doc). Where
    rounding or repeats leave fewer values than asked, a line saying so goes to `notes`."""
    def number(t: str) -> float:
        try:
            v = float(t)
        except ValueError:
            raise CostDSLError(f"--{name} {text!r}: {t!r} is not a number") from None
        if not math.isfinite(v):
            raise CostDSLError(f"--{name} {text!r}: {t!r} is not a finite number")
        if integer and not v.is_integer():
            raise CostDSLError(f"--{name} {text!r}: {t!r} is not an integer")
        if v <= 0:
            raise CostDSLError(f"--{name} {text!r}: values must be positive")
        if v > MAX_SIZE:
            raise CostDSLError(f"--{name} {text!r}: {t} is more than {MAX_SIZE:.0e}, the "
                               f"largest size costdsl accepts")
        return v

    def count(n: float) -> int:  # checked from the range's arithmetic, before building it
        if n > MAX_POINTS:
            raise CostDSLError(f"--{name} {text!r} has {n:,.0f} values (more than "
                               f"{MAX_POINTS:,})", hint="use log spacing, e.g. 1:1e6:log64")
        return int(n)

    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3):
            raise CostDSLError(f"--{name} {text!r}: expected a:b, a:b:logN or a list a,b,c")
        low, high = number(parts[0]), number(parts[1])
        if high < low:
            raise CostDSLError(f"--{name} {text!r}: the range is empty ({high:g} < {low:g})")
        if len(parts) == 2:
            if not integer:
                raise CostDSLError(f"--{name} {text!r}: a bitwidth range needs :logN or a list")
            values = np.arange(low, low + count(high - low + 1))
        else:
            step = parts[2]
            if not (step.startswith("log") and step[3:].isdigit() and int(step[3:]) >= 2):
                raise CostDSLError(f"--{name} {text!r}: the step must be logN with N >= 2, "
                                   f"e.g. {parts[0]}:{parts[1]}:log16")
            values = np.geomspace(low, high, count(int(step[3:])))
            if integer:
                values = np.round(values)
    else:
        items = [t for t in text.split(",") if t.strip()]
        values = np.array([number(t) for t in items[:count(len(items))]])
        if not len(values):
            raise CostDSLError(f"--{name}: no values given")
    unique = np.unique(values.astype(np.int64) if integer else values)
    if notes is not None and len(unique) < len(values):
        notes.append(f"--{name} {text}: {len(unique):,} distinct values of the {len(values):,} "
                     f"asked ({len(values) - len(unique):,} "
                     + ("rounded onto the same integer" if ":" in text else "repeated") + ")")
    return unique
