"""sparsify: weights stored sparse -- unstructured (SparseGPT, Wanda) or N:M semi-structured
(2:4 on NVIDIA Ampere and later) -- the "pruning" family of the survey "Faster and Lighter
LLMs" (2024).

A matrix op's weights keep a fraction k of their values (k = 1 - weights for unstructured
sparsity, N/M for N:M) and store, per kept value, its position:

- `pattern="N:M"`: ceil(log2 M) bits per kept value (2:4: a 2-bit index for each of the two
  values kept out of four, NVIDIA's sparse tensor-core format). At 16 bits: 0.5 x (16 + 2) = 9
  bits per original weight. The matrix work runs at the hardware's sparse rate (`fp16_sparse`
  and the like in [peak]: the datasheets' "with sparsity" figures, which count the dense
  operations the kernel stands for), the dense rate where the file gives none.
- `pattern="unstructured"`, `format="bitmap"`: one bit per original weight, 1/k bits per kept
  value; `format="csr"`: an `index_bits` column index per kept value (16 by default: enough for
  rows up to 65,536 wide; the per-row pointers, one per output row, are left out). The work stays
  dense (no general sparse GEMM beats dense tensor cores at LLM sparsities): only the bytes
  shrink.

The parameters an op holds become its kept values (what memory and `params` count), the
position bits are stored beside them (the node's `scale_bits`, which also apply to the op's
bias: a vector of `out` values beside an in x out matrix). weights=0 is the identity.
"""
from __future__ import annotations

import math
import re
from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access
from ..schema import Node
from .registry import Arg, PassError, register
from .select import select

FORMATS = ("bitmap", "csr")


def _pattern(pattern: str, weights) -> tuple[sympy.Expr, sympy.Expr | None, str | None]:
    """(kept fraction, position bits per kept value or None for the format to say, N:M text)."""
    if pattern == "unstructured":
        return 1 - weights, None, None
    m = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", pattern)
    if not m or not 0 < int(m[1]) < int(m[2]) <= 64:
        raise PassError(f'pattern={pattern!r}: expected "unstructured" or N:M with 0 < N < M '
                        '(e.g. "2:4")', arg="pattern")
    n, mm = int(m[1]), int(m[2])
    if weights is not None and sympy.sympify(weights) != 1 - sympy.Rational(n, mm):
        raise PassError(f"weights={weights} contradicts pattern={pattern!r}, which keeps "
                        f"{n} of {mm}: leave weights= out", arg="weights")
    return sympy.Rational(n, mm), sympy.Integer(math.ceil(math.log2(mm))), f"{n}:{mm}"


def _is_matrix(node: Node) -> bool:
    """A matrix op holding its weights (a linear tied to the embedding reads a table stored
    with the embedding, dense: it is left alone)."""
    return node.engine == "matrix" and "weight" in node.operands and not node.attrs.get("tied")


def _sparse(node: Node, keep, meta) -> Node:
    """Kept values of the matrix (not of a bias) read; `meta` position bits per kept value."""
    def scale(a: Access) -> Access:
        if a.cls == "weight" and not a.tensor.endswith(".bias"):
            return Access(a.tensor, a.cls, a.elements * keep)
        return a
    bias = node.bias_elements
    scale_bits = {**node.scale_bits, "weight": node.scale_bits.get("weight", 0) + meta}
    return replace(node, reads=tuple(scale(a) for a in node.reads),
                   params=(node.params - bias) * keep + bias, scale_bits=scale_bits,
                   active_params=None if node.active_params is None else
                   (node.active_params - bias) * keep + bias)


@register("sparsify",
          weights=Arg("fraction", help="fraction of each weight matrix that is zero (unstructured"
                                       "; implied by an N:M pattern)"),
          pattern=Arg("pattern", "unstructured", help='"unstructured", or "N:M" such as "2:4"'),
          format=Arg("pattern", "bitmap", help='unstructured storage: "bitmap" or "csr"'),
          index_bits=Arg("count", 16, help="csr: bits of a column index"),
          ops=Arg("pattern", help="only these ops (names or globs)"),
          exclude=Arg("pattern", help="not these ops"))
def sparsify(graph: nx.DiGraph, weights, pattern, format, index_bits, ops, exclude) -> nx.DiGraph:
    """Sparse weights: kept values plus their positions; N:M work at the sparse rate."""
    if pattern == "unstructured" and weights is None:
        raise PassError("sparsify() needs weights= (the fraction of zeros) for unstructured "
                        "sparsity", hint='or pattern="2:4"')
    if weights is not None and sympy.sympify(weights).is_number and weights >= 1:
        raise PassError(f"weights={weights}: a matrix must keep some values; the zero "
                        "fraction is in [0, 1)", arg="weights")
    if format not in FORMATS:
        raise PassError(f"format={format!r}: expected one of {', '.join(FORMATS)}", arg="format")
    keep, meta, nm = _pattern(pattern, weights)
    if meta is None:
        meta = 1 / keep if format == "bitmap" else sympy.Integer(index_bits)
    chosen = [n for n in select(graph, ops, exclude) if _is_matrix(n)]
    if not chosen:
        raise PassError("sparsify() selected no matrix op with weights")
    out = graph.copy()
    if keep == 1:
        return out
    for node in chosen:
        new = _sparse(node, keep, meta)
        if nm:
            new = replace(new, attrs={**new.attrs, "sparse_nm": nm})
        out.nodes[node.name]["op"] = new
    return out
