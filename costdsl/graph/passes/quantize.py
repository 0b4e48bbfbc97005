"""quantize: set the bitwidths of weights, activations and KV cache, for the whole model or the
ops a pattern selects, with optional group-wise scales and dequantization cost."""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from .registry import Arg, PassError, register
from .select import select

_CLASSES = {"weights": "weight", "acts": "act", "kv": "kv"}


@register(
    "quantize",
    weights=Arg("bits", help="weight bitwidth"),
    acts=Arg("bits", help="activation bitwidth"),
    kv=Arg("bits", help="KV-cache bitwidth"),
    ops=Arg("pattern", help="only these ops (names or globs, comma-separated)"),
    exclude=Arg("pattern", help="not these ops"),
    group=Arg("count", help="weights per scale (group-wise quantization)"),
    scale_bits=Arg("bits", 16, help="bits of each group's scale"),
    zero_bits=Arg("bits", 0, help="bits of each group's zero point (0: symmetric)"),
    dequant=Arg("flag", 0, help="count dequantization as vector operations"),
)
def quantize(graph: nx.DiGraph, weights, acts, kv, ops, exclude, group, scale_bits, zero_bits,
             dequant) -> nx.DiGraph:
    """Sets the bitwidth of each tensor class the arguments name (weights, acts, kv), on the
    selected ops (all by default). A bitwidth may be a number or a symbol (w_bits, a_bits,
    kv_bits, or a model parameter): left symbolic, crossovers can solve for it.

    group=G stores one scale (scale_bits) and zero point (zero_bits) per G weights: each weight
    then takes bits + (scale_bits + zero_bits) / G bits in memory, e.g. 4 + 16/128 = 4.125 bits
    with 4-bit weights, group 128 and fp16 scales. The compute type follows the bitwidth alone.

    dequant=1 counts the dequantization of a weight-only kernel: one multiply by the scale per
    weight element read, plus one subtraction of the zero point when zero_bits > 0, run on the
    vector units (at the fp32 rate) as part of the op."""
    if weights is None and acts is None and kv is None:
        raise PassError("quantize() sets nothing", hint="give weights=, acts= and/or kv=")
    if group is None and (dequant or zero_bits):
        raise PassError("zero_bits and dequant describe group-wise scales: give group=")
    chosen = {_CLASSES[k]: v for k, v in (("weights", weights), ("acts", acts), ("kv", kv))
              if v is not None}
    out = graph.copy()
    for node in select(graph, ops, exclude):
        bits = {**node.bits, **chosen}
        scale = dict(node.scale_bits)
        vector, flops = node.vector_flops, node.flops
        attrs = node.attrs
        if group is not None and weights is not None:
            scale["weight"] = (scale_bits + zero_bits) / group  # group is a sympy number
            if sympy.sympify(scale_bits).is_number:   # the scale's own width names the format:
                attrs = {**attrs, "weight_scale_bits": float(scale_bits)}  # 8: MXFP4, NVFP4
            if dequant:
                per_weight = 2 if zero_bits else 1
                read = sum((a.elements for a in node.reads if a.cls == "weight"), sympy.Integer(0))
                vector, flops = vector + per_weight * read, flops + per_weight * read
        out.nodes[node.name]["op"] = replace(node, bits=bits, scale_bits=scale,
                                             vector_flops=vector, flops=flops, attrs=attrs)
    return out
