"""A fleet: several replicas of one serving instance behind a global router.

Each replica keeps its own clock, queue, KV pool and prefix cache (serving.simulate's `Server`).
Requests are routed in arrival order: before each one, every replica runs the iterations that
start before its arrival, so the router sees each replica as its scheduler left it, then:

- `round_robin`: replica i mod N, whatever their load;
- `least_outstanding`: the fewest requests waiting or running (vLLM's and SGLang's routers'
  default);
- `least_kv`: the most KV blocks free (idle cached blocks count as free: they are evicted first);
- `prefix_affinity`: the replica whose prefix cache holds the longest prefix of the request's
  blocks (SGLang's cache-aware router, llm-d's prefix scorer); with no prefix anywhere, the
  fewest outstanding. Ties go to the lowest-numbered replica.

The fleet's trace holds every request as the replica that served it recorded it; per-replica
traces hold their own requests and iterations.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from ..errors import EvaluationError
from .iteration import IterationCost
from .requests import Stream
from .simulate import Config, KVPool, Server, Trace, check_requests, new_trace, requests_of

ROUTERS = ("round_robin", "least_outstanding", "least_kv", "prefix_affinity")
MAX_REPLICAS = 4096


def simulate_fleet(stream: Stream, cost: IterationCost, pool: KVPool, config: Config,
                   replicas: int, router: str) -> tuple[Trace, list[Trace | None]]:
    """The fleet's trace and each replica's (None for a replica that served nothing)."""
    config = config.validate()
    _check(config, replicas, router)
    requests = requests_of(stream, cost.request_s)
    check_requests(requests, pool, config)
    runs = [Server(requests, cost, pool, config) for _ in range(replicas)]
    traces = [new_trace(stream, pool, config) for _ in runs]
    served = np.empty(len(requests), dtype=np.int64)
    turn = 0
    for r in requests:
        for run, trace in zip(runs, traces):
            run.advance(trace, r.arrival)
        i = _route(router, runs, r, turn, config.kv_block)
        turn += 1
        served[r.i] = i
        run = runs[i]
        if not run.running and not run.waiting:
            run.clock = max(run.clock, r.arrival)
        run.waiting.append(r)
    for run, trace in zip(runs, traces):
        run.advance(trace, math.inf)
    return _merge(stream, pool, config, traces, served), \
        [_own(trace, served == i) if np.any(served == i) else None
         for i, trace in enumerate(traces)]


def _check(config: Config, replicas: int, router: str) -> None:
    if isinstance(replicas, bool) or not isinstance(replicas, int) or \
            not 1 <= replicas <= MAX_REPLICAS:
        raise EvaluationError(f"--replicas must be a whole number from 1 to {MAX_REPLICAS}, "
                              f"got {replicas!r}")
    if router not in ROUTERS:
        raise EvaluationError(f"unknown router {router!r}", hint="routers: " + ", ".join(ROUTERS))
    if config.scheduler == "disaggregated":
        raise EvaluationError("a fleet's replicas are aggregated servers: give --scheduler "
                              "continuous, chunked or static with --replicas",
                              hint="a disaggregated server already spreads over instances")
    if router == "prefix_affinity" and not config.prefix_cache:
        raise EvaluationError("prefix_affinity routes by the replicas' prefix caches: turn "
                              "them on (--prefix-cache on)")


def _route(router: str, runs: list[Server], r, turn: int, block: int) -> int:
    outstanding = [len(run.running) + len(run.waiting) for run in runs]
    if router == "round_robin":
        return turn % len(runs)
    if router == "least_kv":
        free = [run.free + (len(run.cache.idle) if run.cache is not None else 0)
                for run in runs]
        return max(range(len(runs)), key=lambda i: (free[i], -i))
    if router == "prefix_affinity" and r.hashes:
        usable = (r.prompt - 1) // block
        held = [run.cache.match(r.hashes[:usable]) for run in runs]
        if max(held) > 0:
            return max(range(len(runs)), key=lambda i: (held[i], -outstanding[i], -i))
    return min(range(len(runs)), key=lambda i: (outstanding[i], i))


def _merge(stream: Stream, pool: KVPool, config: Config, traces: list[Trace],
           served: np.ndarray) -> Trace:
    """One trace of the fleet: each request as its replica recorded it, every iteration of
    every replica (the summary's time-weighted means are then over replica-time)."""
    out = new_trace(stream, pool, config)
    rows = np.arange(len(served))
    for name in ("first_token", "finish", "preemptions", "generated"):
        getattr(out, name)[:] = np.stack([getattr(t, name) for t in traces])[served, rows]
    if out.prefill_saved is not None:
        out.prefill_saved[:] = np.stack([t.prefill_saved for t in traces])[served, rows]
    for name in ("iteration_end", "iteration_time", "iteration_batch", "iteration_blocks"):
        setattr(out, name, [v for t in traces for v in getattr(t, name)])
    out.max_blocks_used = max(t.max_blocks_used for t in traces)
    out.in_system_area = float(np.nansum(out.finish - out.arrival))
    return out


def _own(trace: Trace, mask: np.ndarray) -> Trace:
    """A replica's trace restricted to the requests it served."""
    cut = {name: getattr(trace, name)[mask] for name in
           ("arrival", "first_token", "finish", "output", "prompt", "preemptions", "generated")}
    saved = trace.prefill_saved[mask] if trace.prefill_saved is not None else None
    own = replace(trace, **cut, prefill_saved=saved)
    own.in_system_area = float(np.nansum(own.finish - own.arrival))
    return own
