"""offload: tensors held in host memory and streamed to the device over the host link every
step (FlexGen, Sheng et al. 2023; DeepSpeed ZeRO-Inference; the survey's section 5.2 and
Figure 18).

A fraction `weights` of the selected ops' weights, and `kv` of their KV cache, live in host
memory: every step reads them over the host link (the hardware file's [host] bandwidth) instead
of from device memory, and device memory holds only the rest. An op's time is then
max(compute, device bytes / B + host bytes / B_host) + launch when the transfers overlap the
kernels (`overlap=1`, prefetching the next layer while this one runs), and
max(compute, device bytes / B) + host bytes / B_host + launch when they do not.

The crossover that makes offloading interesting follows: an offloaded 16-bit linear reads each
weight (2 bytes) once per step for 2 operations per sequence, so it turns compute-bound at
batch ~ peak / B_host (H100 over PCIe 5: 989.5e12 / 64e9 ~ 15,000 sequences), and below that
batch every offloaded weight costs 2 bytes / B_host of step time.
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access
from .registry import Arg, PassError, register
from .select import select


def _split(accesses, cls: str, fraction):
    """(the accesses' device part, their host part) for the tensors of class `cls`."""
    device, host = [], []
    for a in accesses:
        if a.cls == cls and fraction != 0:
            device.append(Access(a.tensor, a.cls, a.elements * (1 - fraction)))
            host.append(Access(a.tensor, a.cls, a.elements * fraction))
        else:
            device.append(a)
    return tuple(device), tuple(host)


@register("offload",
          weights=Arg("fraction", 1, help="fraction of the selected ops' weights in host memory"),
          kv=Arg("fraction", 0, help="fraction of their KV cache in host memory"),
          ops=Arg("pattern", help="only these ops (names or globs); default every op"),
          to=Arg("pattern", "host", help='where the tensors live: "host"'),
          overlap=Arg("flag", 1, help="1: transfers overlap the kernels (prefetch); 0: they "
                                      "add to them"))
def offload(graph: nx.DiGraph, weights, kv, ops, to, overlap) -> nx.DiGraph:
    """Weights and KV cache of the selected ops held in host memory (see the module's
    documentation)."""
    if to != "host":
        raise PassError(f'offload(to="{to}"): only "host" memory is modelled', arg="to")
    if weights == 0 and kv == 0:
        return graph.copy()
    out = graph.copy()
    for node in select(graph, ops):
        reads, host_w = _split(node.reads, "weight", weights)
        reads, host_kv = _split(reads, "kv", kv)
        moved = host_w + host_kv  # (a step's new KV rows are written on the device, then
        # moved out with the rest: too few bytes to count)
        if not moved:
            continue
        transfers = dict(node.transfers)
        transfers["host"] = transfers.get("host", ()) + moved
        offloaded = {**node.offloaded, "weight": sympy.sympify(weights), "kv": sympy.sympify(kv)}
        out.nodes[node.name]["op"] = replace(
            node, reads=reads, transfers=transfers, offloaded=offloaded,
            attrs={**node.attrs, "overlap": bool(overlap)})
    return out
