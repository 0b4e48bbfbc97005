"""JSON text that is always JSON: no Infinity or NaN, which other tools' parsers refuse."""
from __future__ import annotations

import json

from ..errors import CostDSLError


def dumps(obj, indent: int | None = 2) -> str:
    """`obj` as JSON text plus a newline. A non-finite number left in a result is an error in
    words (the formatters map the infinities they expect, such as an op with no bytes, to null)."""
    try:
        return json.dumps(obj, indent=indent, allow_nan=False) + "\n"
    except ValueError:
        raise CostDSLError("the result holds a number that is not finite (inf or NaN), which "
                           "JSON cannot carry", hint="check the hardware figures and the sizes "
                           "given; every figure must be positive and finite") from None
