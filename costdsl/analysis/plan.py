"""Deployment plans: every layout of a system's devices (tp x pp x ep) and bitwidth, ranked.

For one layout the per-device graph (the parallelism passes) gives, from its compiled stages:
- TTFT: the prefill of `batch` prompts of `seq` tokens;
- TPOT: the mean decode step over the request, sum_{c = seq}^{seq + gen - 2} decode(c) / (gen - 1),
  evaluated exactly as one vectorised sum over the cache lengths (decode(c) is the compiled
  stage time);
- throughput: batch x gen / (TTFT + (gen - 1) TPOT);
- the share of decode time on links (collectives not hidden) and in the pipeline's bubble;
- memory per device: the larger of the prefill (seq cached) and the last decode step
  (seq + gen - 1 cached), weights + KV cache + activation peak, against the device's capacity.
Each plan carries its decode step's communication time as a formula in the batch (the other
symbols bound): the report states the best plan's reason with it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy

from .evaluate import evaluate, stage_time
from .memory import evaluate_memory
from .roofline import StageRoofline
from .. import symbols as S

OBJECTIVES = ("latency", "throughput")


def has_experts(design) -> bool:
    """Whether the model routes tokens to experts (its layouts may then split them: ep)."""
    return any(op.kind == "moe" or op.kind.startswith("expert") for op in design.ops)


def layouts(count: int, moe: bool, spread: bool = False) -> list[tuple]:
    """Every (tp, pp, ep) with tp x pp x ep = count (ep = 1 unless the model has experts);
    with `spread`, for a model with experts, each layout with tp > 1 and ep = 1 also as
    (tp, pp, 1, "ep"): its experts spread whole over the TP group (tensor_parallel's
    experts="ep") instead of split by width."""
    out = []
    for tp in _divisors(count):
        for pp in _divisors(count // tp):
            ep = count // (tp * pp)
            if ep == 1 or moe:
                out.append((tp, pp, ep))
            if spread and moe and ep == 1 and tp > 1:
                out.append((tp, pp, 1, "ep"))
    return out


def layout_passes(layout: tuple, microbatches: int) -> list[str]:
    """The parallelism passes of a (tp, pp, ep[, "ep"]) layout (none for a degree of 1)."""
    tp, pp, ep, *spread = layout
    experts = ', experts="ep"' if spread else ""
    return ([f"tensor_parallel(n={tp}{experts})"] if tp > 1 else []) + \
        ([f"pipeline_parallel(n={pp}, microbatches={microbatches})"] if pp > 1 else []) + \
        ([f"expert_parallel(n={ep})"] if ep > 1 else [])


def layout_name(layout: tuple) -> str:
    """tp=T pp=P ep=E, or "tp=T pp=P experts spread over tp"."""
    tp, pp, ep, *spread = layout
    return f"tp={tp} pp={pp} " + ("experts spread over tp" if spread else f"ep={ep}")


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass(frozen=True)
class Plan:
    tp: int
    pp: int
    ep: int
    w_bits: float
    kv_bits: float
    batch: int
    microbatches: int
    fits: bool
    memory_per_device_bytes: float
    ttft_s: float
    tpot_s: float
    tokens_per_s: float
    communication_share: float     # of a mid-request decode step
    bubble_share: float            # of a mid-request decode step
    communication: sympy.Expr | None = None   # decode communication time per step, in batch
    experts: str = "split"        # "ep": the routed experts spread whole over the TP group

    def as_dict(self) -> dict:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "w_bits": self.w_bits,
                "kv_bits": self.kv_bits, "batch": self.batch, "microbatches": self.microbatches,
                "fits": self.fits, "memory_per_device_bytes": self.memory_per_device_bytes,
                "ttft_s": self.ttft_s, "tpot_s": self.tpot_s, "tokens_per_s": self.tokens_per_s,
                "communication_share": self.communication_share,
                "bubble_share": self.bubble_share,
                "communication_s": str(self.communication) if self.communication is not None
                else None, "experts": self.experts}

    @property
    def layout(self) -> tuple:
        return (self.tp, self.pp, self.ep) + (("ep",) if self.experts == "ep" else ())


@dataclass(frozen=True)
class PlanResult:
    model: str
    hardware: str
    devices: int
    seq: int
    gen: int
    objective: str
    plans: tuple[Plan, ...]                    # best first; those that do not fit last
    skipped: tuple[tuple[str, str], ...] = ()  # (layout, why it cannot be built)
    time_model: str = "ideal"                  # which model priced the times, as Latency's
    stack: str | None = None                   # the serving stack whose kernels did
    framework: object = None                   # and its serving engine's figures (TTFT's)

    @property
    def best(self) -> Plan | None:
        return self.plans[0] if self.plans and self.plans[0].fits else None


def evaluate_plan(prefill: StageRoofline, decode: StageRoofline, memory: dict, layout,
                  values: dict, seq: int, gen: int, capacity: float, microbatches: int,
                  request_s: float = 0.0) -> Plan:
    """The plan's numbers from its compiled stages and memory expressions (see the module);
    `request_s`: the serving engine's time per request before its first token."""
    tp, pp, ep, *spread = layout
    batch = values[S.batch]
    ttft = float(stage_time(prefill, {**values, S.seq: seq})) + request_s
    cached = np.arange(seq, seq + max(gen - 1, 1), dtype=float)
    steps = stage_time(decode, {**values, S.seq: cached})
    tpot = float(np.mean(steps))
    mid = {**values, S.seq: float(seq + (gen - 1) // 2)}
    numbers = evaluate(decode, mid)
    total = float(numbers.stage_time())
    transfer = float(numbers.total(numbers.transfer_time + numbers.serial_time))
    # the pipeline's idle stages: the step less its kernels and the serving engine's time
    bubble = total - float(numbers.total(numbers.time)) - float(np.sum(numbers.server))
    bubble = bubble if bubble > 1e-9 * total else 0.0   # (rounding, without a pipeline)
    device_memory = max(
        float(sum(evaluate_memory(memory["prefill"], {**values, S.seq: seq})[:3])),
        float(sum(evaluate_memory(memory["decode"], {**values, S.seq: seq + gen - 1})[:3])))
    return Plan(tp, pp, ep, float(values[S.w_bits]), float(values[S.kv_bits]), int(batch),
                microbatches, device_memory <= capacity, device_memory, ttft, tpot,
                batch * gen / (ttft + (gen - 1) * tpot), transfer / total if total else 0.0,
                bubble / total if total else 0.0, _communication(decode, mid),
                "ep" if spread else "split")


def _communication(decode: StageRoofline, values: dict) -> sympy.Expr | None:
    """The decode step's exposed communication time as a formula in batch."""
    comm = [o for o in decode.ops if o.node.transfers]
    if not comm:
        return None
    expr = decode.steps * sum((o.node.repeat * (o.overlapped_transfer + o.serial_transfer)
                               for o in comm), sympy.Integer(0))
    bound = {k: v for k, v in values.items() if k != S.batch}
    return sympy.expand(sympy.sympify(expr).xreplace(
        {k: sympy.Float(v) for k, v in bound.items()})).evalf(4)


def rank(plans: list[Plan], objective: str) -> list[Plan]:
    """Best first: plans that fit before those that do not; then the objective."""
    if objective == "latency":
        key = lambda p: (not p.fits, p.tpot_s, p.ttft_s)
    else:
        key = lambda p: (not p.fits, -p.tokens_per_s, p.tpot_s)
    return sorted(plans, key=key)
