"""Memory footprint of a deployment, symbolic first: weights, KV cache and the peak of the
temporary activations, with each activation's lifetime taken from the op graph.

- Weights: each op's parameters at its stored weight bits (group scales included); a tied head
  holds none, so the shared table is counted once, under the embedding.
- KV cache: every KV tensor an op writes (K and V, or an MLA latent) is kept for each position
  the attention reading it attends: min(context, window) positions per sequence, context = seq
  after the prefill and seq + 1 after a decode step. Bytes per position come from the op's
  writes in one decode step (one new token per sequence). A recurrent state (Mamba's, an op
  marked `recurrent`) is counted once per sequence, whatever the context.
- Activations: an activation tensor lives from the op that writes it until the last op that
  reads it (the residual stream until its add); the peak is the largest sum of live tensors
  over the stage's execution order. Repeated layers reuse the same buffers, so the peak over
  one layer is the peak of the stack. Fused ops never hold their intermediates.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import networkx as nx
import numpy as np
import sympy

from ..graph.costs import SITES, window_of
from .numbers import MemoryNumbers, bound_args, memory_totals
from ..graph.schema import nodes
from .. import symbols as S


@dataclass(frozen=True)
class StageMemory:
    """Bytes in memory during one stage, as expressions in batch, seq and the bitwidths."""
    stage: str
    weights: sympy.Expr
    kv_cache: sympy.Expr
    activation_peak: sympy.Expr
    host: sympy.Expr = sympy.Integer(0)   # offloaded weights and KV cache, in host memory

    @property
    def total(self) -> sympy.Expr:
        return self.weights + self.kv_cache + self.activation_peak


def weight_bytes(graph: nx.DiGraph, where: str = "device") -> sympy.Expr:
    """Bytes of the weights held on the device (or, where="host", offloaded to host memory)."""
    return sum((n.repeat * S.to_bytes(n.params, n.stored_bits("weight"))
                * _held(n, "weight", where) for n in nodes(graph)), sympy.Integer(0))


def _held(node, cls: str, where: str) -> sympy.Expr:
    """The share of a class's bytes of `node` held `where` ("device" or "host")."""
    host = sympy.sympify(node.offloaded.get(cls, 0))
    return host if where == "host" else 1 - host


def _window(graph: nx.DiGraph, producer: str, tensor: str) -> sympy.Expr:
    """The most positions of `tensor` any consumer attends (inf: no window)."""
    windows = [window_of(graph.nodes[c]["op"], tensor)
               for c in graph.successors(producer)
               if tensor in graph.edges[producer, c]["tensors"]]
    return sympy.Max(*windows) if windows else sympy.oo


def kv_cache_bytes(decode: nx.DiGraph, context: sympy.Expr, where: str = "device") -> sympy.Expr:
    """Bytes of the KV cache holding `context` positions per sequence (capped by windows).
    `decode` is the decode-stage graph: its KV writes are those of one new token (of one
    microbatch, under a pipeline: every microbatch's cache is held). where="host": the part
    offloaded to host memory."""
    total = sympy.Integer(0)
    for n in nodes(decode):
        for w in (w for w in n.writes if w.cls == "kv"):
            if n.attrs.get("recurrent"):  # a fixed-size state (Mamba), not a cache of tokens
                total += n.repeat * S.to_bytes(w.elements, n.stored_bits("kv")) * _held(
                    n, "kv", where)
                continue
            window = _window(decode, n.name, w.tensor)
            positions = context if window == sympy.oo else sympy.Min(context, window)
            total += n.repeat * S.to_bytes(w.elements * positions, n.stored_bits("kv")) * _held(
                n, "kv", where)
    return total * decode.graph.get("pipeline", (1, 1))[1]


def activation_peak(graph: nx.DiGraph) -> sympy.Expr:
    """max over execution steps of the bytes of activation tensors alive at that step."""
    order = nodes(graph)
    step = {n.name: i for i, n in enumerate(order)}
    sizes, spans = {}, {}
    for i, n in enumerate(order):
        for w in n.writes:
            if w.cls != "act":
                continue
            sizes[w.tensor] = S.to_bytes(w.elements, n.stored_bits("act"))
            users = [step[c] for c in graph.successors(n.name)
                     if w.tensor in graph.edges[n.name, c]["tensors"]]
            spans[w.tensor] = (i, max(users, default=i))
    live = []
    for i in range(len(order)):
        live.append(sympy.expand(sum((sizes[t] for t, (a, b) in spans.items() if a <= i <= b),
                                     sympy.Integer(0))))
    kept = _undominated(live)
    if len(kept) > 1:  # already pruned: sympy's own comparisons would only cost time
        return sympy.Max(*kept, evaluate=False)
    return kept[0] if kept else sympy.Integer(0)


def _at_least(big: sympy.Expr, small: sympy.Expr) -> bool:
    """True when big >= small for every value: their difference is a sum of terms with
    non-negative coefficients in positive symbols (a proof, not a sample)."""
    return all(term.as_coeff_Mul()[0] >= 0 for term in sympy.Add.make_args(big - small))


def _undominated(terms: list[sympy.Expr]) -> list[sympy.Expr]:
    """The terms no other term bounds from above: what max() over them can pick. Pruning them
    before building Max spares sympy's pairwise comparisons, which dominate compile time."""
    unique = list(dict.fromkeys(terms))
    return [t for i, t in enumerate(unique)
            if not any(j != i and _at_least(u, t) for j, u in enumerate(unique))]


def stage_memory(graph: nx.DiGraph, decode: nx.DiGraph) -> StageMemory:
    """Memory of `graph`'s stage; `decode` gives the KV bytes per cached position."""
    stage = graph.graph["stage"]
    context = SITES[stage].context
    return StageMemory(stage, weight_bytes(graph), kv_cache_bytes(decode, context),
                       activation_peak(graph),
                       weight_bytes(graph, "host") + kv_cache_bytes(decode, context, "host"))


# --- numbers -------------------------------------------------------------------------------------

def memory_rows(memory: StageMemory) -> list[sympy.Expr]:
    """weights, KV cache, activation peak and host bytes, as expressions."""
    return _rows(memory)


def _rows(memory: StageMemory) -> list[sympy.Expr]:
    return [sympy.sympify(r) for r in (memory.weights, memory.kv_cache, memory.activation_peak,
                                       memory.host)]


@functools.lru_cache(maxsize=256)
def memory_symbols(memory: StageMemory) -> list[sympy.Symbol]:
    return sorted(set().union(*(r.free_symbols for r in _rows(memory))), key=lambda s: s.name)


_SEEN: set = set()


@functools.lru_cache(maxsize=128)
def _compiled(memory: StageMemory):
    return sympy.lambdify(memory_symbols(memory), _rows(memory), modules="numpy")


def evaluate_memory(memory: StageMemory, values) -> tuple[np.ndarray, ...]:
    """(weights, kv, activation peak, host) in bytes, broadcast over array values; the first
    three are what one device holds."""
    symbols = memory_symbols(memory)
    args, shape = bound_args(symbols, values)
    if not shape and memory not in _SEEN:  # one configuration, first time: substituting is
        _SEEN.add(memory)                  # cheaper than compiling; a second time compiles
        numbers = {s: sympy.Float(float(a)) for s, a in zip(symbols, args)}
        return tuple(np.asarray(float(r.xreplace(numbers))) for r in _rows(memory))
    if not shape:
        return tuple(np.asarray(float(v)) for v in _compiled(memory)(*args))
    return tuple(np.broadcast_to(np.asarray(v, dtype=float), shape)
                 for v in _compiled(memory)(*args))


def request_memory(prefill: StageMemory, decode: StageMemory, values, gen: int,
                   capacity: float, host_capacity: float | None = None) -> MemoryNumbers:
    """One device's bytes over a request of `gen` tokens after a prompt of values[seq]: the
    prefill at the prompt, and the last decode step (seq + gen - 2 tokens cached before it,
    seq + gen - 1 after), where the cache is largest; the prefill alone when gen is 1."""
    rows = {"prefill": tuple(float(x) for x in evaluate_memory(prefill, values))}
    if gen > 1:
        last = {**values, S.seq: values[S.seq] + gen - 2}
        rows["decode"] = tuple(float(x) for x in evaluate_memory(decode, last))
    return memory_totals(rows, capacity, host_capacity)


def memory_numbers(stages: dict[str, StageMemory], values, capacity: float,
                   host_capacity: float | None = None) -> MemoryNumbers:
    return memory_totals({name: tuple(float(x) for x in evaluate_memory(m, values))
                          for name, m in stages.items()}, capacity, host_capacity)
