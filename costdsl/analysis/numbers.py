"""The arithmetic of numbers: a stage's per-op arrays in, compute, memory and kernel times,
bounds and totals out; a deployment's bytes against its memory. Plain numpy on values already
substituted (no sympy): the path a command answered from the cache takes, and every other.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Mapping

import numpy as np

from ..errors import EvaluationError

if TYPE_CHECKING:
    import sympy


def compute_seconds(flops, vector_flops, peak, vector_peak):
    """An op's compute time: its matrix work at `peak`, its vector work (`vector_flops` of
    `flops`) at `vector_peak`. Plain arithmetic, so that the symbolic roofline (sympy) and the
    numeric one (numpy arrays, evaluate.py) share this one statement of it."""
    return (flops - vector_flops) / peak + vector_flops / vector_peak


def memory_seconds(nbytes, bandwidth):
    return nbytes / bandwidth


@dataclass(frozen=True)
class StageNumbers:
    """Numbers of one stage. Per-op arrays have the op on axis 0, then the grid's shape; the
    derived arrays (bytes, times, intensity) are computed once, on first use."""
    stage: str
    names: tuple[str, ...]
    kinds: tuple[str, ...]
    compute_types: tuple[str | None, ...]
    repeat: np.ndarray
    flops: np.ndarray
    bytes_by_class: Mapping[str, np.ndarray]
    peak: np.ndarray
    bandwidth: np.ndarray | float            # bytes/s, per op (efficiencies differ by family)
    vector_flops: np.ndarray | float = 0.0   # the part of flops run at vector_peak
    vector_peak: np.ndarray | float = np.inf
    fused_from: tuple[tuple[str, ...], ...] = ()
    launch: np.ndarray | float = 0.0         # seconds per occurrence (efficiency model)
    transfer_time: np.ndarray | float = 0.0  # channel time beside the kernel (collectives,
                                             # overlapped host streams)
    serial_time: np.ndarray | float = 0.0    # channel time after it (host, no overlap)
    channels: tuple[str | None, ...] = ()    # the channel of each op's transfers
    schedule: tuple[int, int] = (1, 1)       # (pipeline stages, microbatches)
    occupancy: np.ndarray | float = 1.0      # memory time's stretch when rows leave SMs idle
    overlap: np.ndarray | bool = True        # False: memory time adds to compute (efficiency)
    waves: np.ndarray | float = 1.0          # matrix work's wave quantisation factor (tile)
    serial_work: np.ndarray | float = 0.0    # before and after its loop (prologue, epilogue)
    split_launch: np.ndarray | float = np.inf  # decode attention's split regime: its fixed
    split_ratio: np.ndarray | float = 1.0      # cost and bandwidth ratio (inf, 1: none)
    floor: np.ndarray | float = 0.0            # a call's host time: its least (0: none)
    server: np.ndarray | float = 0.0         # the serving engine's time around the kernels

    @cached_property
    def bytes(self) -> np.ndarray:
        return sum(self.bytes_by_class.values())

    @cached_property
    def intensity(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(self.bytes > 0, self.flops / np.where(self.bytes > 0, self.bytes, 1),
                            np.inf)

    @cached_property
    def compute_time(self) -> np.ndarray:
        # ops without arithmetic have peak inf: 0 / inf is 0, no warning to silence
        matrix = (self.flops - self.vector_flops) * self.waves
        return compute_seconds(matrix + self.vector_flops, self.vector_flops, self.peak,
                               self.vector_peak)

    @cached_property
    def device_memory_time(self) -> np.ndarray:
        streaming = memory_seconds(self.bytes, self.bandwidth)   # split: not stretched
        return np.maximum(np.minimum(streaming * self.occupancy,
                                     self.split_launch + self.split_ratio * streaming),
                          self.floor)

    @cached_property
    def memory_time(self) -> np.ndarray:
        return self.device_memory_time + self.transfer_time

    @cached_property
    def time(self) -> np.ndarray:
        kernel = np.where(self.overlap, np.maximum(self.compute_time, self.memory_time),
                          self.compute_time + self.memory_time)
        return kernel + self.launch + self.serial_time + self.serial_work

    @cached_property
    def compute_bound(self) -> np.ndarray:
        return self.compute_time > self.memory_time

    def bounds(self) -> list[str]:
        """What bounds each op (one configuration): "compute", "memory", or the channel its
        transfers take ("link", "network", "host") when they outlast the device memory time."""
        compute, memory = self.compute_time, self.memory_time
        transfer = self.transfer_time + self.serial_time
        device = self.device_memory_time
        serial = np.broadcast_to(self.serial_time, compute.shape)
        transfer = np.broadcast_to(transfer, compute.shape)
        out = []
        for i in range(len(self.names)):
            channel = self.channels[i] if self.channels else None
            if compute[i] > memory[i] and not serial[i]:
                out.append("compute")
            elif channel and transfer[i] > device[i]:
                out.append(channel)
            else:
                out.append("compute" if compute[i] > memory[i] else "memory")
        return out

    @property
    def microbatches(self) -> int:
        return self.schedule[1]

    @property
    def bubble_steps(self) -> int:
        """Stage times a pipeline's fill and drain leave idle: n - 1."""
        return self.schedule[0] - 1

    @property
    def attainable(self) -> np.ndarray:
        return np.minimum(self.peak, self.intensity * self.bandwidth)

    def total(self, per_op: np.ndarray) -> np.ndarray:
        """Sum over all occurrences of every op (every microbatch of a pipeline)."""
        if self.repeat.ndim == 1 and np.ndim(per_op) == 1:   # one configuration
            return self.microbatches * float(self.repeat @ per_op)
        return self.microbatches * (self.repeat * per_op).sum(axis=0)

    def stage_time(self) -> np.ndarray:
        """The step's time: every op's occurrences, and a pipeline's bubble."""
        return self.total(self.time) * (1 + self.bubble_steps / self.microbatches) + self.server


def server_seconds(server: tuple[float, float], values: Mapping[str, object]):
    """The serving engine's time of one iteration (StageRoofline.server) at `values` (by
    name): step + per_sequence x batch."""
    step, per_sequence = server
    if not per_sequence:
        return step
    return step + per_sequence * np.asarray(values["batch"], dtype=float)


@dataclass(frozen=True)
class MemoryNumbers:
    """Bytes of one deployment: the peak over the stages analysed of weights + KV + activations."""
    weights_bytes: float
    kv_cache_bytes: float          # the largest cache of the stages (after a decode step)
    activation_peak_bytes: float   # the largest activation peak of the stages
    total_bytes: float             # max over stages of weights + KV + activation peak
    capacity_bytes: float
    stages: dict[str, dict[str, float]]
    host_bytes: float = 0.0        # offloaded weights and KV cache, in host memory
    host_capacity_bytes: float | None = None   # None: the hardware file does not state it

    @property
    def fits(self) -> bool:
        """Every device's memory holds its share, and the host holds what is offloaded (where
        the hardware file states the host's capacity)."""
        host_fits = self.host_capacity_bytes is None or self.host_bytes <= self.host_capacity_bytes
        return self.total_bytes <= self.capacity_bytes and host_fits

    @property
    def headroom_bytes(self) -> float:
        """Free memory left; negative: by how much the deployment misses."""
        return self.capacity_bytes - self.total_bytes


def memory_totals(rows: dict[str, tuple[float, float, float, float]], capacity: float,
                  host_capacity: float | None = None) -> MemoryNumbers:
    """The deployment's bytes from each stage's (weights, KV cache, activation peak, host)."""
    per_stage = {}
    for name, (w, kv, act, host) in rows.items():
        per_stage[name] = {"weights_bytes": w, "kv_cache_bytes": kv,
                           "activation_peak_bytes": act, "total_bytes": w + kv + act,
                           "host_bytes": host}
    pick = lambda key: max(s[key] for s in per_stage.values())
    return MemoryNumbers(pick("weights_bytes"), pick("kv_cache_bytes"),
                         pick("activation_peak_bytes"), pick("total_bytes"), capacity, per_stage,
                         pick("host_bytes"), host_capacity)


class LazyMemory:
    """A deployment's MemoryNumbers, evaluated when first read: `analyze` in a loop that reads
    only times pays nothing for memory. Reads as the MemoryNumbers it stands for."""

    def __init__(self, compute):
        self._compute, self._numbers = compute, None

    def resolved(self) -> MemoryNumbers:
        if self._numbers is None:
            self._numbers = self._compute()
        return self._numbers

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.resolved(), name)

    def __eq__(self, other):
        return self.resolved() == (other.resolved() if isinstance(other, LazyMemory) else other)

    def __hash__(self):
        return id(self)

    def __repr__(self) -> str:
        return f"LazyMemory({self.resolved()!r})"


def free_error(names: list[str]) -> EvaluationError:
    """The error of parameters (at least one) that no value binds at evaluation."""
    return EvaluationError(f"parameter {', '.join(names)} is still free at evaluation",
                           hint=f"bind it with --set {names[0]}=VALUE")


def check_named(names, values: Mapping[str, object]) -> None:
    """free_error for the names of `names` that `values` (by name) leaves free."""
    missing = [n for n in names if n not in values]
    if missing:
        raise free_error(missing)


def check_bound(symbols, values: Mapping["sympy.Symbol", object]) -> None:
    """EvaluationError naming every symbol of `symbols` that `values` leaves free."""
    missing = [s.name for s in symbols if s not in values]
    if missing:
        raise free_error(missing)


def bound_args(symbols, values: Mapping["sympy.Symbol", object]):
    """The values of `symbols` as float arrays, and the shape they broadcast to."""
    check_bound(symbols, values)
    scalars = [values[s] for s in symbols]
    if all(isinstance(v, (int, float)) for v in scalars):   # one configuration: no arrays
        return [float(v) for v in scalars], ()
    args = [np.asarray(values[s], dtype=float) for s in symbols]
    return args, (np.broadcast_shapes(*(a.shape for a in args)) if args else ())
