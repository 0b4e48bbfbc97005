"""The deployment search: which deployment meets an SLO for the fewest GPUs (or dollars), and
with how much headroom.

Candidates are instances of the model on part of a system's node (every tp x pp x ep layout
whose devices fit one node), at each weight and KV bitwidth, in three roles:
- `aggregated`: prefill and decode on the same devices, under each scheduler (continuous,
  chunked) and a few batch limits;
- `prefill` and `decode`: the two pools of a disaggregated server (DistServe, Zhong et al.
  OSDI 2024; Splitwise, Patel et al. ISCA 2024). TTFT depends only on the prefill pool and TPOT
  only on the decode pool (and the KV transfer between them), so each pool is searched alone
  and sized for the target rate on its own: P prefill and D decode instances, any pairing of
  their layouts and hardware.

Symbolic first, simulation second. From the compiled closed forms of each layout (no
simulation): the largest batch that fits the device (`fit`), the decode step of one sequence
and the largest batch whose step meets the TPOT target (the step time is nondecreasing in the
batch: its root against the target, taken over the integers), the prefill of one prompt (a
floor under TTFT), and a throughput ceiling from the roofline at that batch (the prompt's
prefill amortised over the largest prefill batch, plus the output's decode steps at the batch).
A candidate is pruned when it does not fit (`memory`), when one prompt alone misses TTFT
(`ttft`), when one sequence alone misses TPOT (`tpot`), when it needs more GPUs than allowed
(`gpus`), or when its ceiling cannot beat the best deployment already simulated for the
objective (`dominated`). The survivors are simulated (serving.trial: the largest rate meeting
the SLO at its quantile) in rounds of a fixed size, best ceiling first, on the executor; a
round's answers prune the next. Replicas = ceil(target rate / the largest rate of one).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

from .. import progress
from .. import symbols as S
from ..analysis.evaluate import stage_time
from ..analysis.memory import evaluate_memory
from ..analysis.plan import has_experts, layout_name, layout_passes, layouts
from ..errors import CostDSLError, EvaluationError
from ..hardware import Hardware
from .executor import Executor
from .iteration import cost_record
from .requests import Stream, prefix_record
from .simulate import Config, KVPool, server_record
from .trial import run_trial

OBJECTIVES = ("gpus", "cost", "throughput_per_gpu")
MODES = ("aggregated", "disaggregated")
SCHEDULERS = ("continuous", "chunked")
ROUND = 8               # trials per round: fixed, so any executor prunes the same candidates
BATCH_FRACTIONS = (1, 2, 4, 8)   # batch limits: the TPOT root, and a half, quarter, eighth
MAX_BATCH = 4096
MAX_TOKENS = 8192       # prompt tokens per iteration of a continuous (or prefill) instance


@dataclass(frozen=True)
class SLO:
    ttft_s: float | None
    tpot_s: float | None
    quantile: float = 0.9

    def validate(self) -> "SLO":
        if self.ttft_s is None or self.tpot_s is None:
            # a rate past what the server keeps up with still meets a TPOT target alone (the
            # queue grows before prefill) and a TTFT target alone sizes no decode pool
            raise EvaluationError("the search's SLO needs both a TTFT and a TPOT target",
                                  hint='e.g. --slo "ttft=1s,tpot=50ms" (a loose one, such as '
                                       'tpot=1s, where only the other matters)')
        if not 0 < self.quantile < 1:
            raise EvaluationError(f"the SLO's quantile must be in (0, 1), got {self.quantile!r}",
                                  hint="e.g. quantile=p90 or quantile=0.9")
        return self

    def as_record(self) -> dict:
        return {"ttft": self.ttft_s, "tpot": self.tpot_s, "quantile": self.quantile}


@dataclass(frozen=True)
class Workload:
    """The requests: their shape at unit rate (gaps of mean 1 s, prompt and output lengths),
    and the target: a rate (requests/s) or a concurrency (requests in flight)."""
    gaps: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    source: str
    rate: float | None = None
    concurrency: int | None = None
    hashes: tuple | None = None   # each request's shareable KV blocks (a trace's prefixes)

    @staticmethod
    def from_stream(stream: Stream, rate: float | None, concurrency: int | None
                    ) -> "Workload":
        """The stream's lengths, with Poisson gaps of its own draw rescaled to unit rate."""
        if (rate is None) == (concurrency is None):
            raise EvaluationError("give the target: --rate R (requests/s) or --concurrency C")
        if rate is not None and not (math.isfinite(rate) and rate > 0):
            raise EvaluationError(f"--rate must be a positive number of requests/s, got "
                                  f"{rate!r}")
        if concurrency is not None and not 1 <= concurrency <= 10**7:
            raise EvaluationError(f"--concurrency must be a whole number of requests from 1, "
                                  f"got {concurrency!r}")
        rng = np.random.Generator(np.random.PCG64(0))
        gaps = rng.exponential(1.0, len(stream))
        return Workload(gaps, stream.prompt.copy(), stream.output.copy(), stream.source, rate,
                        concurrency, stream.hashes)

    @property
    def mean_output(self) -> float:
        return float(np.mean(self.output))

    @property
    def mean_prompt(self) -> float:
        return float(np.mean(self.prompt))

    @property
    def longest(self) -> int:
        """The most tokens one request caches (its prompt and output)."""
        return int(np.max(self.prompt + self.output))

    def as_record(self) -> dict:
        record = {"gaps": [float(g) for g in self.gaps],
                  "prompt": [int(p) for p in self.prompt],
                  "output": [int(o) for o in self.output]}
        if self.hashes is not None:
            record["prefixes"] = [prefix_record(h) for h in self.hashes]
        return record


@dataclass(frozen=True)
class Space:
    """What the search tries."""
    systems: tuple[Hardware, ...]
    w_bits: tuple[float, ...] = (16,)
    kv_bits: tuple[float, ...] = (16,)
    a_bits: float = 16
    schedulers: tuple[str, ...] = SCHEDULERS
    chunk: int = 2048
    modes: tuple[str, ...] = MODES
    gpus: int | None = None
    prices: dict = field(default_factory=dict)   # hardware key -> $ per GPU-hour
    objective: str = "gpus"


@dataclass(frozen=True)
class Instance:
    """One candidate instance and its closed-form bounds."""
    id: int
    role: str                 # aggregated, prefill or decode
    hardware: str
    tp: int
    pp: int
    ep: int
    w_bits: float
    kv_bits: float
    scheduler: str
    chunk: int
    max_batch: int
    ceiling: float            # requests/s the roofline allows one instance
    mean_output: float
    experts: str = "split"    # "ep": a MoE's experts spread whole over the TP group

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.ep

    @property
    def layout(self) -> dict:
        return {"tp": self.tp, "pp": self.pp, "ep": self.ep, "experts": self.experts}

    @property
    def label(self) -> str:
        return f"{self.hardware} " + layout_name(
            (self.tp, self.pp, self.ep) + (("ep",) if self.experts == "ep" else ()))


@dataclass(frozen=True)
class Deployment:
    """A deployment sized for the target, as the JSON contract names its fields."""
    mode: str
    hardware: str
    layout: dict
    replicas: int
    gpus: int
    w_bits: float
    kv_bits: float
    scheduler: str
    max_batch: int
    rate_per_replica: float
    tokens_per_s_per_gpu: float
    tokens_per_s_per_user: float
    ttft_s: float
    tpot_s: float
    cost_per_hour: float | None
    cost_per_million_tokens: float | None
    binding: str
    headroom: float               # capacity over the target rate, minus 1
    prefill: dict | None = None   # disaggregated: {layout, instances, hardware}
    decode: dict | None = None

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "hardware", "mode", "layout", "replicas", "gpus", "w_bits", "kv_bits", "scheduler",
            "max_batch", "rate_per_replica", "tokens_per_s_per_gpu", "tokens_per_s_per_user",
            "ttft_s", "tpot_s", "cost_per_hour", "cost_per_million_tokens", "binding",
            "headroom")}
        if self.mode == "disaggregated":
            out["prefill"], out["decode"] = self.prefill, self.decode
        return out


@dataclass(frozen=True)
class SearchResult:
    model: str
    slo: SLO
    workload: str
    rate: float | None
    concurrency: int | None
    objective: str
    recommendation: Deployment
    runner_up: Deployment | None
    frontier: tuple[Deployment, ...]
    deployments: tuple[Deployment, ...]
    total: int
    pruned_by: dict
    simulated: int
    simulations: int
    executor: str
    priced: tuple = ()   # (system, time model, stack, serving engine's figures) of each searched


# --- closed forms per layout ------------------------------------------------------------------

@dataclass
class _Layout:
    """One layout at one bitwidth on one system: its compiled model and closed-form bounds."""
    hw: Hardware
    model: object
    layout: tuple   # (tp, pp, ep), or (tp, pp, 1, "ep"): the experts spread over tp
    bits: dict
    fits: int                 # the largest batch that fits the longest request
    steps: np.ndarray         # decode step time at batch 1..len, shortest mean context
    prefill_one: float        # one prompt's prefill
    prefill_each: float       # a prompt's prefill amortised over the largest prefill batch

    @cached_property
    def cost(self) -> dict:
        """The iteration cost as a trial record carries it (one per layout, shared by the
        scheduler and batch variants tried on it)."""
        return cost_record(self.model.iteration_cost(self.hw, **self.bits))

    def tpot_root(self, tpot: float | None) -> int:
        """The largest batch whose decode step meets `tpot` (all smaller ones meet it too)."""
        if tpot is None:
            return len(self.steps)
        over = np.nonzero(self.steps > tpot)[0]
        return int(over[0]) if len(over) else len(self.steps)


def _prepare(model, hw: Hardware, layout, bits: dict, workload: Workload) -> _Layout:
    g = layout[0] * layout[1] * layout[2]
    sub = replace(hw, count=g, nodes=1) if hw.is_system else hw
    compiled = model.with_layout(layout_passes(layout, layout[1]))
    isl = workload.mean_prompt
    values = {S.w_bits: bits["w_bits"], S.a_bits: bits["a_bits"], S.kv_bits: bits["kv_bits"]}
    fits = _fits(compiled, sub, values, workload.longest)
    steps = np.zeros(0)
    prefill_one = prefill_each = math.inf
    if fits >= 1:
        batches = np.arange(1, min(fits, MAX_BATCH) + 1, dtype=float)
        decode = compiled.roofline(sub, "decode", **bits)
        steps = np.asarray(stage_time(decode, {**values, S.batch: batches, S.seq: isl}),
                           dtype=float)
        prefill = compiled.roofline(sub, "prefill", **bits)
        widest = max(1, min(fits, MAX_TOKENS // max(int(isl), 1)))
        p = np.asarray(stage_time(prefill, {**values, S.batch: np.array([1.0, widest]),
                                            S.seq: isl}), dtype=float)
        # a request's first token also waits for the engine's time per request (not GPU time:
        # it does not count in the prefill throughput)
        prefill_one, prefill_each = float(p[0]) + sub.request_s, float(min(p[0], p[1] / widest))
    return _Layout(sub, compiled, layout, bits, fits, steps, prefill_one, prefill_each)


def _fits(model, hw: Hardware, values: dict, seq: int) -> int:
    """The largest batch (up to MAX_BATCH) whose prefill at `seq` and decode at `seq` cached fit
    the device: weights + KV cache + activation peak, evaluated over every batch at once (the
    memory grows with the batch; fit's closed form solves the same, slower, per layout)."""
    batches = np.arange(1, MAX_BATCH + 1, dtype=float)
    grid = {**values, S.batch: batches, S.seq: float(seq)}
    need = np.maximum(*(sum(evaluate_memory(model.memory(stage), grid)[:3])
                        for stage in ("prefill", "decode")))
    over = np.nonzero(need > hw.memory_bytes)[0]
    return int(over[0]) if len(over) else MAX_BATCH


def _layouts(model, space: Space, workload: Workload, pruned: dict, near: list):
    """Every (system, layout, bitwidths) that compiles, with its bounds; the others counted."""
    moe = has_experts(model.design)
    out = []
    for hw in space.systems:
        sizes = [g for g in range(1, hw.per_node + 1) if hw.per_node % g == 0]
        shapes = [lay for g in sizes for lay in layouts(g, moe, spread=True)]
        for lay in progress.steps(f"search: closed forms on {hw.key}", shapes):
            g = lay[0] * lay[1] * lay[2]
            if space.gpus is not None and g > space.gpus:
                _count(pruned, "gpus", len(space.w_bits) * len(space.kv_bits))
                continue
            for w in space.w_bits:
                for kv in space.kv_bits:
                    bits = {"w_bits": w, "a_bits": space.a_bits, "kv_bits": kv}
                    try:
                        prepared = _prepare(model, hw, lay, bits, workload)
                    except CostDSLError as err:
                        _count(pruned, "layout", 1)
                        near.append((math.inf, f"{hw.key} {layout_name(lay)}", err.message))
                        continue
                    if prepared.fits < 1:
                        _count(pruned, "memory", 1)
                        continue
                    out.append(prepared)
    return out


def _count(pruned: dict, reason: str, n: int) -> None:
    pruned[reason] = pruned.get(reason, 0) + n


# --- candidates -------------------------------------------------------------------------------

def _candidates(prepared: list[_Layout], space: Space, slo: SLO, workload: Workload,
                pruned: dict, near: list) -> list[tuple[Instance, _Layout, Config, KVPool]]:
    """Every instance of every role, less those a closed form rules out."""
    osl, longest = workload.mean_output, workload.longest
    out = []
    for lay in prepared:
        tp, pp, ep, *spread = lay.layout
        label = f"{lay.hw.key} {layout_name(lay.layout)} w{lay.bits['w_bits']:g}"
        roles = (["aggregated"] if "aggregated" in space.modes else []) + \
            (["prefill", "decode"] if "disaggregated" in space.modes and _transfer_link(lay.hw)
             else [])
        root = lay.tpot_root(slo.tpot_s)
        ttft_miss = slo.ttft_s is not None and lay.prefill_one > slo.ttft_s
        tpot_miss = root < 1
        for role in roles:
            needs_ttft, needs_tpot = role != "decode", role != "prefill"
            if needs_ttft and ttft_miss:
                _count(pruned, "ttft", _variants(role, space))
                near.append((lay.prefill_one / slo.ttft_s, label,
                             f"one prompt's prefill takes {lay.prefill_one:.3g} s"))
                continue
            if needs_tpot and tpot_miss:
                _count(pruned, "tpot", _variants(role, space))
                near.append((lay.steps[0] / slo.tpot_s, label,
                             f"one sequence's decode step takes {lay.steps[0] * 1e3:.3g} ms"))
                continue
            for config in _configs(role, root, space, workload):
                try:
                    pool = lay.model.kv_pool(lay.hw, config, **lay.bits)
                except EvaluationError:
                    _count(pruned, "memory", 1)
                    continue
                if pool.token_blocks(longest, config.kv_block) + pool.fixed_blocks > \
                        pool.blocks:
                    _count(pruned, "memory", 1)
                    continue
                b = config.max_batch
                step = lay.steps[min(b, len(lay.steps)) - 1]
                decode_each = osl * step / min(b, len(lay.steps))
                ceiling = {"aggregated": 1 / (lay.prefill_each + decode_each),
                           "prefill": 1 / lay.prefill_each,
                           "decode": 1 / decode_each}[role]
                instance = Instance(0, role, lay.hw.key, tp, pp, ep, lay.bits["w_bits"],
                                    lay.bits["kv_bits"], config.scheduler, config.chunk, b,
                                    ceiling, osl, "ep" if spread else "split")
                out.append((instance, lay, config, pool))
    return [(replace(inst, id=i), *rest) for i, (inst, *rest) in enumerate(out)]


def _variants(role: str, space: Space) -> int:
    return 1 if role == "prefill" else len(BATCH_FRACTIONS) * (
        len(space.schedulers) if role == "aggregated" else 1)


def _configs(role: str, root: int, space: Space, workload: Workload) -> list[Config]:
    """The scheduler settings tried for a role: batch limits from the TPOT root down."""
    tokens = max(MAX_TOKENS, int(np.max(workload.prompt)))
    if role == "prefill":
        return [Config("continuous", max_batch=MAX_BATCH, max_tokens=tokens,
                       prefix_cache=True)]
    limits = sorted({max(1, root // f) for f in BATCH_FRACTIONS}, reverse=True)
    schedulers = space.schedulers if role == "aggregated" else ("continuous",)
    return [Config(s, chunk=space.chunk, max_batch=b, max_tokens=tokens, prefix_cache=True)
            for s in schedulers for b in limits]


def _transfer_link(hw: Hardware):
    """The channel a prompt's KV cache crosses from a prefill to a decode instance: the
    scale-out network where the system has one (pools on separate nodes), else its link; None
    for a single device (no disaggregation)."""
    if not hw.is_system:
        return None
    return "network" if hw.network is not None else ("link" if hw.link is not None else None)


# --- trials -----------------------------------------------------------------------------------

def _trial_record(instance: Instance, lay: _Layout, config: Config, pool: KVPool, slo: SLO,
                  shape: dict) -> dict:
    link = _transfer_link(lay.hw)
    per_token = pool.block_bytes / config.kv_block if pool.grows else 0.0
    transfer = per_token / lay.hw.channel_bandwidth(link) if link else 0.0
    return {**server_record(lay.cost, pool, config), "id": instance.id,
            "kind": instance.role, "stream": shape, "slo": slo.as_record(), "transfer_s": transfer,
            "ceiling": instance.ceiling}


def search(model, space: Space, slo: SLO, workload: Workload,
           executor: Executor) -> SearchResult:
    """The recommended deployment, the runner-up of the other mode, the frontier (module)."""
    slo = slo.validate()
    if space.objective not in OBJECTIVES:
        raise EvaluationError(f"unknown objective {space.objective!r}",
                              hint="objectives: " + ", ".join(OBJECTIVES))
    unknown = sorted(set(space.prices) - {hw.key for hw in space.systems})
    if unknown:
        raise EvaluationError(f"--price names {unknown[0]!r}, not among the systems searched",
                              hint="systems: " + ", ".join(hw.key for hw in space.systems))
    if space.objective == "cost":
        missing = [hw.key for hw in space.systems if _price(space, hw) is None]
        if missing:
            raise EvaluationError(f"--objective cost needs a price for {missing[0]}",
                                  hint=f'give --price "{missing[0]}=DOLLARS_PER_GPU_HOUR"')
    pruned, near = {}, []
    prepared = _layouts(model, space, workload, pruned, near)
    _check_gpus(space, prepared)
    candidates = _candidates(prepared, space, slo, workload, pruned, near)
    total = len(candidates) + sum(pruned.values())
    shape = workload.as_record()
    answers = _run_trials(candidates, space, slo, workload, shape, executor, pruned)
    deployments = _deployments(candidates, answers, space, workload)
    if not deployments:
        raise _nothing_meets(candidates, answers, near, slo, space)
    ranked = _rank(deployments, space.objective)
    best = ranked[0]
    other = next((d for d in ranked if d.mode != best.mode), None)
    return SearchResult(model.name, slo, workload.source, workload.rate, workload.concurrency,
                        space.objective, best, other, tuple(_frontier(deployments)),
                        tuple(ranked), total, pruned, len(answers),
                        sum(a["simulations"] for a in answers.values()), executor.name,
                        tuple((hw.key, hw.time_model, hw.stack, hw.framework)
                              for hw in space.systems))


def _check_gpus(space: Space, prepared: list[_Layout]) -> None:
    if space.gpus is not None and not prepared:
        raise EvaluationError(f"--gpus {space.gpus}: no layout of the model fits in "
                              f"{space.gpus} GPU{'s' if space.gpus > 1 else ''}",
                              hint="allow more GPUs, or quantize (--bits 8)")
    if not prepared:
        raise EvaluationError("no layout of the model fits any system searched",
                              hint="a system with more devices per node, or quantize "
                                   "(--bits 8, --kv-bits 8)")


def _run_trials(candidates, space, slo, workload, shape, executor, pruned) -> dict[int, dict]:
    """Trials in rounds, best bound first: after each round, candidates whose bound cannot
    beat the best deployment found so far (of either mode) are dropped (`dominated`)."""
    bounds = _bounds(candidates, space, workload)
    pending = sorted(candidates, key=lambda c: (bounds[c[0].id], c[0].id))
    answers: dict[int, dict] = {}
    best = math.inf
    shown = progress.Line()
    while pending:
        keep = [c for c in pending if bounds[c[0].id] <= best]
        if len(keep) < len(pending):
            _count(pruned, "dominated", len(pending) - len(keep))
        batch, pending = keep[:ROUND], keep[ROUND:]
        if not batch:
            break
        records = [_trial_record(*candidate, slo, shape) for candidate in batch]
        for answer in executor.map(run_trial, records):
            answers[answer["id"]] = answer
        found = _deployments([c for c in candidates if c[0].id in answers], answers, space,
                             workload)
        best = min([best] + [_score(d, space.objective) for d in found])
        shown.show(f"search: pruned {sum(pruned.values())}, simulated {len(answers)}, "
                   f"left {len(pending)}")
    shown.close()
    return answers


def _target(workload: Workload, e2e: float) -> float:
    """The rate the fleet must serve: the given rate, or for a concurrency C the rate at which
    C requests are in flight (Little's law, at the deployment's mean end-to-end latency)."""
    return workload.rate if workload.rate is not None else workload.concurrency / e2e


def _score(d: Deployment, objective: str) -> float:
    """The objective of a deployment, lower is better."""
    if objective == "throughput_per_gpu":
        return -d.tokens_per_s_per_gpu
    if objective == "cost":
        return d.cost_per_hour if d.cost_per_hour is not None else math.inf
    return d.gpus


def _bounds(candidates, space: Space, workload: Workload) -> dict[int, float]:
    """The best score any deployment with each candidate could reach, from the roofline's
    ceilings: an aggregated instance alone; a prefill or decode pool with the most favourable
    pool of the other kind (same bitwidths)."""
    parts = {c[0].id: _part(c[0], space, workload) for c in candidates}
    other = {"prefill": "decode", "decode": "prefill"}
    best_part: dict[tuple, float] = {}
    for inst, *_ in candidates:
        key = (inst.role, inst.w_bits, inst.kv_bits)
        best_part[key] = min(best_part.get(key, math.inf), parts[inst.id])
    out = {}
    for inst, *_ in candidates:
        own = parts[inst.id]
        if inst.role != "aggregated":
            own += best_part.get((other[inst.role], inst.w_bits, inst.kv_bits), math.inf)
        if space.objective == "throughput_per_gpu":   # parts are GPU-seconds per request
            own = -inst.mean_output / own if own > 0 else -math.inf
        out[inst.id] = own
    return out


def _part(inst: Instance, space: Space, workload: Workload) -> float:
    """An instance's least share of a deployment's score: GPU-seconds per request (throughput
    per GPU), or GPUs (dollars an hour) for the target rate; a concurrency's rate is unknown
    before simulating, so one instance is the least."""
    if space.objective == "throughput_per_gpu":
        return inst.gpus / inst.ceiling
    rate = workload.rate if workload.rate is not None else inst.ceiling
    gpus = math.ceil(rate / inst.ceiling - 1e-9) * inst.gpus
    return gpus * (_price_of(space, inst.hardware) or 1.0) if space.objective == "cost" \
        else gpus


def _price(space: Space, hw: Hardware) -> float | None:
    return space.prices.get(hw.key, hw.price_per_hour)


def _price_of(space: Space, key: str) -> float | None:
    hw = next(h for h in space.systems if h.key == key)
    return _price(space, hw)


# --- deployments ------------------------------------------------------------------------------

def _deployments(candidates, answers, space: Space, workload: Workload) -> list[Deployment]:
    by_role: dict[str, list] = {"aggregated": [], "prefill": [], "decode": []}
    for inst, *_ in candidates:
        answer = answers.get(inst.id)
        if answer is not None and answer["rate"] > 0:
            by_role[inst.role].append((inst, answer))
    out = [_aggregated(inst, a, space, workload) for inst, a in by_role["aggregated"]]
    for p, pa in by_role["prefill"]:
        for d, da in by_role["decode"]:
            if (p.w_bits, p.kv_bits) == (d.w_bits, d.kv_bits):
                out.append(_disaggregated(p, pa, d, da, space, workload))
    if space.gpus is not None:
        out = [d for d in out if d.gpus <= space.gpus]
    return out


def _costs(space: Space, gpus_by_hw: dict[str, int], rate: float, osl: float):
    prices = {k: _price_of(space, k) for k in gpus_by_hw}
    if any(p is None for p in prices.values()):
        return None, None
    per_hour = sum(prices[k] * g for k, g in gpus_by_hw.items())
    return per_hour, per_hour / (rate * osl * 3600) * 1e6


def _aggregated(inst: Instance, a: dict, space: Space, workload: Workload) -> Deployment:
    target = _target(workload, a["e2e_mean_s"])
    replicas = max(1, math.ceil(target / a["rate"] - 1e-9))
    gpus = replicas * inst.gpus
    cost, per_million = _costs(space, {inst.hardware: gpus}, target, inst.mean_output)
    return Deployment("aggregated", inst.hardware, inst.layout, replicas, gpus, inst.w_bits,
                      inst.kv_bits, _scheduler(inst), inst.max_batch, a["rate"],
                      a["rate"] * inst.mean_output / inst.gpus, 1 / a["tpot_mean_s"],
                      a["ttft_s"], a["tpot_s"], cost, per_million, a["binding"],
                      replicas * a["rate"] / target - 1)


def _disaggregated(p: Instance, pa: dict, d: Instance, da: dict, space: Space,
                   workload: Workload) -> Deployment:
    e2e = pa["e2e_mean_s"] + da["e2e_mean_s"]
    target = _target(workload, e2e)
    x = max(1, math.ceil(target / pa["rate"] - 1e-9))
    y = max(1, math.ceil(target / da["rate"] - 1e-9))
    gpus = x * p.gpus + y * d.gpus
    capacity = min(x * pa["rate"], y * da["rate"])
    by_hw = {p.hardware: x * p.gpus}
    by_hw[d.hardware] = by_hw.get(d.hardware, 0) + y * d.gpus
    cost, per_million = _costs(space, by_hw, target, d.mean_output)
    binding = pa["binding"] if x * pa["rate"] <= y * da["rate"] else da["binding"]
    hardware = p.hardware if p.hardware == d.hardware else f"{p.hardware}+{d.hardware}"
    return Deployment("disaggregated", hardware, d.layout, 1, gpus, d.w_bits, d.kv_bits,
                      "disaggregated", d.max_batch, capacity,
                      capacity * d.mean_output / gpus, 1 / da["tpot_mean_s"], pa["ttft_s"],
                      da["tpot_s"], cost, per_million, binding, capacity / target - 1,
                      {"layout": p.layout, "instances": x, "hardware": p.hardware},
                      {"layout": d.layout, "instances": y, "hardware": d.hardware})


def _scheduler(inst: Instance) -> str:
    return f"chunked({inst.chunk})" if inst.scheduler == "chunked" else inst.scheduler


def _rank(deployments: list[Deployment], objective: str) -> list[Deployment]:
    """Best first for the objective; ties to the cheaper, then the one with more headroom
    over the target, then the faster per user."""
    cost = lambda d: d.cost_per_hour if d.cost_per_hour is not None else math.inf
    keys = {"gpus": lambda d: (d.gpus, cost(d), -d.headroom, -d.tokens_per_s_per_user),
            "cost": lambda d: (cost(d), d.gpus, -d.headroom, -d.tokens_per_s_per_user),
            "throughput_per_gpu": lambda d: (-d.tokens_per_s_per_gpu, d.gpus,
                                             -d.tokens_per_s_per_user)}
    return sorted(deployments, key=keys[objective])


def _frontier(deployments: list[Deployment]) -> list[Deployment]:
    """The deployments no other beats on both tokens/s per GPU and tokens/s per user, by
    tokens/s per user (rising)."""
    points = sorted(deployments, key=lambda d: (-d.tokens_per_s_per_gpu,
                                                -d.tokens_per_s_per_user))
    out, best_user = [], -math.inf
    for d in points:
        if d.tokens_per_s_per_user > best_user:
            out.append(d)
            best_user = d.tokens_per_s_per_user
    return sorted(out, key=lambda d: d.tokens_per_s_per_user)


def _nothing_meets(candidates, answers, near, slo: SLO, space: Space) -> EvaluationError:
    """No deployment: name the closest miss and by how much."""
    misses = list(near)
    for inst, *_ in candidates:
        a = answers.get(inst.id)
        if a is None or a["rate"] > 0 or not a.get("missed_by"):
            continue
        ratios = []
        if slo.ttft_s is not None and "ttft_s" in a["missed_by"] and inst.role != "decode":
            ratios.append((a["missed_by"]["ttft_s"] / slo.ttft_s, "TTFT",
                           a["missed_by"]["ttft_s"]))
        if slo.tpot_s is not None and "tpot_s" in a["missed_by"] and inst.role != "prefill":
            ratios.append((a["missed_by"]["tpot_s"] / slo.tpot_s, "TPOT",
                           a["missed_by"]["tpot_s"]))
        if ratios:
            ratio, what, value = max(ratios)
            q = f"p{slo.quantile * 100:g}"
            misses.append((ratio, f"{inst.label} w{inst.w_bits:g} ({inst.role})",
                           f"its {q} {what} is {value:.3g} s even at a light load"))
    finite = [m for m in misses if math.isfinite(m[0])]
    if space.gpus is not None and not finite:
        return EvaluationError(f"no deployment within --gpus {space.gpus} meets the SLO",
                               hint="allow more GPUs")
    if not finite:
        return EvaluationError("no deployment meets the SLO")
    ratio, label, why = min(finite)
    return EvaluationError(f"no deployment meets the SLO; the closest is {label}: {why}, "
                           f"{(ratio - 1) * 100:.0f}% over the target",
                           hint="relax the SLO, quantize (--bits 8), or add a faster system")
