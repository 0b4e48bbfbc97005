"""All-reduce as a serving stack runs it: the algorithm chosen by message size and group size.

vLLM, TensorRT-LLM and SGLang do not call NCCL for the small all-reduces of tensor-parallel
decode: their own kernels (one-shot: every GPU reads every peer's buffer and reduces; two-shot:
a reduce-scatter then an all-gather through peer memory) cost a few microseconds where NCCL's
ring pays 2 (n - 1) message steps, and they hand large messages back to NCCL. A hardware file
says so per stack and per group size:

    [all_reduce.vllm]               # the stack's name, as in [efficiency] / [stack.NAME]
    stack = "vllm 0.24.0"           # which version was measured
    [all_reduce.vllm.8]             # groups of 8 devices
    one_shot = { up_to = "128 KiB", latency = "4.7 us", efficiency = 0.61 }
    two_shot = { up_to = "64 MiB", latency = "6.2 us", efficiency = 0.74 }
    # larger messages: NCCL's ring over [link] (or a `ring` entry with its own figures)

Each algorithm's time is latency + steps x step_latency + sent / (efficiency x B_link), with
its message steps and bytes sent per device from graph.costs.all_reduce_terms; the entries
apply in order of `up_to`, the last one without `up_to` (or the link's ring) above. A group size
the file does not list takes the figures of the nearest listed size at or above it (the
largest listed above them all). The ideal roofline ignores these tables.
"""
from __future__ import annotations

from dataclasses import dataclass

from .system import figure, fraction

ALGORITHMS = ("one_shot", "two_shot", "ring")
ALGORITHM_KEYS = ("up_to", "latency", "step_latency", "efficiency")
MAX_GROUP = 1024


@dataclass(frozen=True)
class Algorithm:
    name: str                      # one of ALGORITHMS
    up_to_bytes: float | None      # the largest message it runs (None: every larger one)
    latency_s: float               # fixed cost per call
    efficiency: float              # achieved fraction of the link's bandwidth
    step_latency_s: float = 0.0    # cost per message step (the alpha of the ring)


@dataclass(frozen=True)
class AllReduce:
    """One stack's all-reduce: per group size, its algorithms in order of message size."""
    stack: str
    groups: tuple[tuple[int, tuple[Algorithm, ...]], ...]   # (devices, algorithms), ascending

    def for_group(self, devices: int) -> tuple[Algorithm, ...]:
        """The algorithms of the nearest listed group at or above `devices` (else the largest)."""
        for size, algorithms in self.groups:
            if size >= devices:
                return algorithms
        return self.groups[-1][1]

    @property
    def name(self) -> str:
        return self.stack.split()[0].lower()

    def describe(self, devices: int) -> str:
        """One line: which algorithm runs up to which size over `devices` devices."""
        parts = [f"{a.name.replace('_', '-')} to {size_text(a.up_to_bytes)}"
                 if a.up_to_bytes is not None else f"{a.name.replace('_', '-')} above"
                 for a in self.for_group(devices)]
        if self.for_group(devices)[-1].up_to_bytes is not None:
            parts.append("the link's ring above")
        return f"{self.stack}'s " + ", ".join(parts)

    def as_dict(self) -> dict:
        return {"stack": self.stack, "groups": {
            str(n): [{"name": a.name, "up_to_bytes": a.up_to_bytes, "latency_s": a.latency_s,
                      "step_latency_s": a.step_latency_s, "efficiency": a.efficiency}
                     for a in algorithms] for n, algorithms in self.groups}}


def size_text(b: float) -> str:
    """A message size as the files write it: \"128 KiB\", \"64 MiB\", \"256 B\"."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 1024)):
        if b >= scale:
            return f"{b / scale:g} {unit}"
    return f"{b:g} B"


def parse_all_reduce(data, fail, parse_quantity) -> dict[str, AllReduce]:
    """The file's [all_reduce.NAME] tables by stack name ({} without any)."""
    if "all_reduce" not in data:
        return {}
    if not isinstance(data["all_reduce"], dict):
        raise fail("[all_reduce] must hold one table per stack, e.g. [all_reduce.vllm]",
                   "all_reduce")
    return {name.lower(): _stack(name, table, fail, parse_quantity)
            for name, table in data["all_reduce"].items()}


def _stack(name: str, table, fail, parse_quantity) -> AllReduce:
    where = f"all_reduce.{name}"
    if not isinstance(table, dict):
        raise fail(f"[{where}] must be a table", where)
    stack = table.get("stack", name)
    if not isinstance(stack, str) or not stack.strip() or \
            stack.split()[0].lower() != name.lower():
        raise fail(f"{where}.stack = {stack!r}: its first word must be the stack's name, "
                   f"{name!r}", f"{where}.stack")
    groups = []
    for key, entry in table.items():
        if key == "stack":
            continue
        if not key.isdigit() or not 2 <= int(key) <= MAX_GROUP:
            raise fail(f"[{where}] has {key!r}: expected stack or a group size (a table named "
                       f"by its device count, 2 to {MAX_GROUP}, e.g. [{where}.8])",
                       f"{where}.{key}")
        groups.append((int(key), _algorithms(entry, f"{where}.{key}", fail, parse_quantity)))
    if not groups:
        raise fail(f"[{where}] lists no group size", where,
                   hint=f"add [{where}.8] with its one_shot / two_shot / ring entries")
    return AllReduce(stack, tuple(sorted(groups)))


def _algorithms(table, where: str, fail, parse_quantity) -> tuple[Algorithm, ...]:
    if not isinstance(table, dict) or not table:
        raise fail(f"[{where}] must be a table of algorithms ({', '.join(ALGORITHMS)})", where)
    out = []
    for name, entry in table.items():
        if name not in ALGORITHMS:
            raise fail(f"unknown all-reduce algorithm {name!r} in [{where}]", f"{where}.{name}",
                       hint="algorithms: " + ", ".join(ALGORITHMS))
        out.append(_algorithm(name, entry, f"{where}.{name}", fail, parse_quantity))
    bounded = [a for a in out if a.up_to_bytes is not None]
    if len(out) - len(bounded) > 1:
        raise fail(f"[{where}]: only the last algorithm may leave out up_to", where)
    bounded.sort(key=lambda a: a.up_to_bytes)
    sizes = [a.up_to_bytes for a in bounded]
    if len(set(sizes)) < len(sizes):
        raise fail(f"[{where}]: two algorithms share one up_to", where)
    return tuple(bounded + [a for a in out if a.up_to_bytes is None])


def _algorithm(name: str, entry, where: str, fail, parse_quantity) -> Algorithm:
    if not isinstance(entry, dict):
        raise fail(f"{where} must be a table such as {{ up_to = \"256 KiB\", latency = "
                   "\"5 us\", efficiency = 0.7 }", where)
    unknown = sorted(set(entry) - set(ALGORITHM_KEYS))
    if unknown:
        raise fail(f"unknown key {unknown[0]!r} in {where}", f"{where}.{unknown[0]}",
                   hint="keys: " + ", ".join(ALGORITHM_KEYS))
    for key in ("latency", "efficiency"):
        if key not in entry:
            raise fail(f"{where} needs {key}", where)
    efficiency = fraction(entry, "efficiency", where, fail)
    quantity = lambda key, family: figure(entry, key, family, where, fail, parse_quantity)
    return Algorithm(name, quantity("up_to", "bytes") if "up_to" in entry else None,
                     quantity("latency", "seconds"), efficiency,
                     quantity("step_latency", "seconds") if "step_latency" in entry else 0.0)
