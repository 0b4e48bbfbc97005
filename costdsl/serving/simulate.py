"""A serving simulation: requests arrive, a scheduler batches them every iteration, the KV cache
is handed out in blocks, and each iteration takes the time the compiled cost model gives its
mixed batch (serving.iteration: one call of a lambdified function of five sums, never a loop
over ops).

Schedulers (the survey's section 5.3 and its Figure 19):
- `static`: first come, first served batches of up to `max_batch` requests, admitted only when
  the previous batch has finished; the batch's prompts are prefilled together, then it decodes
  until its last request is done (finished requests leave the batch's work).
- `continuous` (ORCA, Yu et al. OSDI 2022): every iteration admits waiting requests (while the
  batch has room, the iteration's new tokens stay within `max_tokens` and KV blocks are free)
  and retires finished ones; an admitted prompt is prefilled whole in the iteration that admits
  it, beside the decodes of the others.
- `chunked` (Sarathi-Serve, Agrawal et al. OSDI 2024): a budget of `chunk` new tokens per
  iteration; decodes first (one token each), then the prompts being prefilled, then new
  requests, each prompt in chunks that fill what is left of the budget.

Each sequence holds ceil(cached tokens / kv_block) blocks of a pool sized from the device memory
left after the weights and the activation peak of an iteration (a fraction `kv_memory` of it:
PagedAttention, Kwon et al. SOSP 2023). A request waits until its first step's blocks are free.
When a running sequence needs a block and none is free, the newest running request is
pre-empted: `recompute` frees its blocks and prefills its prompt and generated tokens again
later; `swap` moves its blocks to host memory over the host link (that time is added to the
iteration) and back when it resumes.

Arrivals: the stream's times (an open loop), or with `concurrency` C at most C requests in
flight, the way serving benchmarks drive a server (`vllm bench serve --max-concurrency C
--request-rate R`, genai-perf's `--concurrency`): request k is sent at its time in the stream
or, when C requests are still unfinished then, the moment one of them finishes. A stream whose
times are all equal makes the closed loop of C clients that each send their next request when
their last one finishes.

Token accounting follows `latency`: a prefill emits the first token; decode step j runs over the
prompt and j - 1 generated tokens and emits token j + 1.
"""
from __future__ import annotations

import bisect
import heapq
import math
from collections import deque
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .. import progress
from ..errors import EvaluationError
from .iteration import NO_PROMPTS, IterationCost, cost_from_record
from .prefix import PrefixCache
from .requests import Stream

SCHEDULERS = ("static", "continuous", "chunked", "disaggregated")
PREEMPTION = ("recompute", "swap")


@dataclass(frozen=True)
class Config:
    scheduler: str = "continuous"
    chunk: int = 512
    max_batch: int = 256
    max_tokens: int = 8192
    kv_block: int = 16
    kv_memory: float = 0.9
    preempt: str = "recompute"
    prefill_instances: int = 0    # disaggregated: instances that only prefill
    decode_instances: int = 0     # ... and those that only decode
    prefix_cache: bool = False    # share KV blocks by hash (requests that name them)
    concurrency: int = 0          # at most this many requests in flight; 0: no limit

    def validate(self) -> "Config":
        if self.scheduler not in SCHEDULERS:
            raise EvaluationError(f"unknown scheduler {self.scheduler!r}",
                                  hint="schedulers: " + ", ".join(SCHEDULERS))
        if self.preempt not in PREEMPTION:
            raise EvaluationError(f"unknown pre-emption {self.preempt!r}",
                                  hint="recompute or swap")
        for name in ("chunk", "max_batch", "max_tokens", "kv_block"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 10**7:
                raise EvaluationError(f"{name} must be a whole number from 1 to 1e7, got "
                                      f"{value!r}")
        if self.scheduler == "disaggregated" and not (
                1 <= self.prefill_instances <= 4096 and 1 <= self.decode_instances <= 4096):
            raise EvaluationError("a disaggregated server needs prefill and decode instances, "
                                  "each 1 to 4096", hint="e.g. disaggregated(prefill=1, "
                                                         "decode=3)")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or \
                not 0 <= self.concurrency <= 10**7:
            raise EvaluationError(f"concurrency must be a whole number of clients from 1 to 1e7 "
                                  f"(0: the stream's arrivals), got {self.concurrency!r}")
        if self.concurrency and self.scheduler == "disaggregated":
            raise EvaluationError("a closed loop (concurrency) drives one serving instance; a "
                                  "disaggregated server takes the stream's arrivals",
                                  hint="give a --rate, or a continuous or chunked scheduler")
        if not 0 < self.kv_memory <= 1:
            raise EvaluationError(f"kv_memory must be a fraction in (0, 1], got "
                                  f"{self.kv_memory!r}")
        return self


@dataclass(frozen=True)
class KVPool:
    blocks: int                 # blocks of the pool (of one instance)
    block_bytes: float          # bytes of one block (kv_block tokens of one sequence)
    fixed_blocks: int = 0       # blocks every sequence holds whatever its length (a state)
    swap_Bps: float | None = None   # host link for swapping; None: no [host]
    link_Bps: float | None = None   # between instances (a disaggregated server's KV transfer)
    link_latency_s: float = 0.0
    grows: bool = True          # False: a sequence's memory does not grow with its tokens
                                # (a recurrent state only: one block of state per sequence)

    def token_blocks(self, tokens: int, block: int) -> int:
        """Blocks `tokens` cached tokens take (none where only a fixed state is kept)."""
        return _blocks(tokens, block) if self.grows else 0


@dataclass(frozen=True)
class Speculative:
    """Speculative decoding inside the server (Leviathan et al. 2023, Chen et al. 2023): every
    decode iteration the draft model runs k steps for each decoding sequence, and the target
    verifies k + 1 tokens per sequence (its LM head on all of them). A sequence accepts m of the
    drafted tokens with P(m >= i) = accept^i (independent tokens, the papers' model) and emits
    m + 1: drawn per sequence and iteration from a generator seeded with `seed`, so a run is
    reproducible and its mean is (1 - accept^(k+1)) / (1 - accept). The draft prefills every
    prompt chunk too (it needs the prompt in its own KV cache); its cache is not counted
    against the target's KV pool (a draft is a few percent of it)."""
    k: int
    accept: float
    draft: IterationCost
    seed: int = 0


def _sums(pairs) -> tuple[int, int, int, int, int]:
    """(sequences, sum t, sum t^2, sum t c, sum c) over sequences adding t new tokens over c
    cached, given as (c, t) pairs: serving.iteration's five sums (N, T, TT, TC, C), or its
    prompt sums over the prompts' chunks alone."""
    n = tokens = squares = attended = cached = 0
    for c, t in pairs:
        n, tokens, squares, attended, cached = (n + 1, tokens + t, squares + t * t,
                                                attended + t * c, cached + c)
    return n, tokens, squares, attended, cached


class _Request:
    __slots__ = ("i", "arrival", "prompt", "output", "pending", "cached", "generated", "blocks",
                 "first", "finish", "preemptions", "swapped", "active", "ready", "hashes",
                 "hashed", "saved")

    def __init__(self, i, arrival, prompt, output, hashes=()):
        self.i, self.arrival, self.prompt, self.output = i, arrival, prompt, output
        self.hashes = hashes  # the hash of each KV block of its sequence that may be shared
        self.hashed = 0       # its leading blocks held through the prefix cache
        self.saved = 0        # prompt tokens it did not prefill: found in the cache
        self.pending, self.cached, self.generated, self.blocks = prompt, 0, 0, 0
        self.first = self.finish = math.nan
        self.preemptions = 0
        self.swapped = False
        self.active = False   # in the running set
        self.ready = arrival  # when it can be admitted (after a KV transfer, for a decode side)


@dataclass
class Trace:
    """What happened, per request and per iteration."""
    arrival: np.ndarray
    first_token: np.ndarray
    finish: np.ndarray
    output: np.ndarray
    prompt: np.ndarray
    preemptions: np.ndarray
    generated: np.ndarray                                 # tokens each request emitted
    iteration_end: list = field(default_factory=list)     # clock after each iteration
    iteration_time: list = field(default_factory=list)    # its duration
    iteration_batch: list = field(default_factory=list)   # sequences in each iteration
    iteration_blocks: list = field(default_factory=list)  # blocks held during it
    in_system_area: float = 0.0   # integral over time of the requests arrived, unfinished
    prefill_saved: np.ndarray | None = None   # per request: prompt tokens found in the cache
                                              # (None: no prefix cache)
    pool_blocks: int = 0
    max_blocks_used: int = 0


def simulate(stream: Stream, cost: IterationCost, pool: KVPool, config: Config,
             speculative: Speculative | None = None, prefilled: bool = False) -> Trace:
    """`prefilled`: every request arrives with its prompt cached and its first token emitted
    (at its arrival): the decode instance of a disaggregated server, served alone."""
    config = config.validate()
    requests = requests_of(stream, cost.request_s)
    if prefilled:
        if any(r.output < 2 for r in requests):
            raise EvaluationError("a prefilled request must have a token left to decode "
                                  "(output of at least 2)")
        for r in requests:
            r.pending, r.cached, r.generated, r.first = 0, r.prompt, 1, r.arrival
    check_requests(requests, pool, config)
    if config.concurrency:
        return Server(requests, cost, pool, config, speculative).run(
            stream, closed_loop=config.concurrency)
    if config.scheduler == "disaggregated":
        if pool.link_Bps is None:
            raise EvaluationError("a disaggregated server moves each prompt's KV cache between "
                                  "devices: the hardware needs a [link] (a system file)")
        return _disaggregated(requests, cost, pool, config, speculative, stream)
    return Server(requests, cost, pool, config, speculative).run(stream)


def check_requests(requests: list[_Request], pool: KVPool, config: Config) -> None:
    """Every request fits the pool alone, and swapping has a host link to swap over."""
    for r in requests:
        need = pool.token_blocks(r.prompt + r.output, config.kv_block) + pool.fixed_blocks
        if need > pool.blocks:
            raise EvaluationError(
                f"request {r.i} (arrival {r.arrival:g} s, {r.prompt} prompt + {r.output} output "
                f"tokens) needs {need} KV blocks; the pool has {pool.blocks}",
                hint="less --kv-block waste, more --kv-memory, a larger device, KV quantization"
                     " (--pass 'quantize(kv=8)') or a parallel layout")
    if config.preempt == "swap" and pool.swap_Bps is None:
        raise EvaluationError("--preempt swap moves KV blocks over the host link; the hardware "
                              "file has no [host] section", hint="use --preempt recompute")


def server_record(cost: dict, pool: KVPool, config: Config) -> dict:
    """A server as plain data, what a worker process or a cluster gets: its iteration cost's
    trees (iteration.cost_record), its KV pool and its scheduler's settings."""
    return {"cost": cost, "pool": asdict(pool), "config": asdict(config)}


def server_of(record: dict) -> tuple[IterationCost, KVPool, Config]:
    """The cost, pool and settings a `server_record` describes."""
    return (cost_from_record(record["cost"]), KVPool(**record["pool"]),
            Config(**record["config"]))


def requests_of(stream: Stream, delay: float = 0.0) -> list[_Request]:
    """The stream's requests as the engine sees them: `delay` (the serving engine's time per
    request before scheduling, IterationCost.request_s) after they are sent; the trace keeps
    the times they were sent, so TTFT and E2E count it."""
    hashes = stream.hashes if stream.hashes is not None else ((),) * len(stream)
    return [_Request(i, float(a) + delay, int(p), int(o), h) for i, (a, p, o, h) in
            enumerate(zip(stream.arrival_s, stream.prompt, stream.output, hashes))]


def _disaggregated(requests, cost, pool, config, speculative, stream) -> Trace:
    """DistServe / Splitwise (Zhong et al. OSDI 2024, Patel et al. ISCA 2024): prefill instances
    prefill whole prompts (continuous batching of prompts up to max_tokens per iteration) and
    emit the first token; the prompt's KV cache then moves to a decode instance over the link
    (alpha + bytes / B); decode instances batch decodes continuously. The instances share two
    queues (prompts by arrival, prefilled requests by the end of their transfer) and each keeps
    its own clock and KV pool; the earliest instance with work runs next, so every queue is fed
    in time order."""
    trace = new_trace(stream, pool, config)
    whole = replace(config, scheduler="continuous")
    prompts: deque[_Request] = deque()
    decodes: deque[_Request] = deque()
    transfers: list[tuple[float, int, _Request]] = []
    prefill = [Server(requests, cost, pool, whole, speculative, "prefill")
               for _ in range(config.prefill_instances)]
    decode = [Server(requests, cost, pool, whole, speculative, "decode")
              for _ in range(config.decode_instances)]
    for inst in prefill:
        inst.waiting = prompts
    for inst in decode:
        inst.waiting = decodes
    per_token = pool.block_bytes / config.kv_block
    n, arrived, finished = len(requests), 0, 0
    while finished < n:
        chosen = None
        for inst in prefill + decode:
            start = _next_start(inst, prompts if inst.role == "prefill" else decodes,
                                requests[arrived].arrival if arrived < n else None,
                                transfers[0][0] if transfers else None)
            if start is not None and (chosen is None or start < chosen[0]):
                chosen = (start, inst)
        if chosen is None:
            raise EvaluationError("the simulation cannot make progress: a request never fits "
                                  "an instance's KV pool")
        start, inst = chosen
        inst.clock = start
        while arrived < n and requests[arrived].arrival <= start:
            prompts.append(requests[arrived])
            arrived += 1
        while transfers and transfers[0][0] <= start:
            decodes.append(heapq.heappop(transfers)[2])
        batch = inst._schedule()
        if not batch:  # its queue's head does not fit yet: wait for the next event
            later = [t for t in ((requests[arrived].arrival if arrived < n else None),
                                 (transfers[0][0] if transfers else None)) if t is not None]
            if not later or inst.running:
                raise EvaluationError("the simulation cannot make progress: a request never "
                                      "fits an instance's KV pool")
            inst.clock = max(start, min(later))
            continue
        _, done = inst.iterate(batch, trace)
        for r in done:
            if math.isnan(r.finish):   # prefilled: its cache crosses the link
                r.ready = inst.clock + pool.link_latency_s + r.cached * per_token / pool.link_Bps
                heapq.heappush(transfers, (r.ready, r.i, r))
            else:
                finished += 1
    trace.in_system_area = float(np.nansum(trace.finish - trace.arrival))
    return trace


def _close_loop(requests: list[_Request], clients: int, trace: Trace) -> list[float]:
    """The first `clients` requests keep their times; the rest wait for a finish (arriving at
    infinity until then). Returns the stream's times (when each may be sent at the earliest)."""
    times = trace.arrival.tolist()
    for r in requests[clients:]:
        r.arrival = r.ready = trace.arrival[r.i] = math.inf
    return times


def _next_start(inst, queue, next_arrival, next_transfer) -> float | None:
    """When an instance can next run: now if it has sequences running; else when the head of
    its queue became available; else at the next arrival (prefill) or transfer (decode)."""
    if inst.running:
        return inst.clock
    if queue:
        return max(inst.clock, queue[0].ready)
    upcoming = next_arrival if inst.role == "prefill" else next_transfer
    return None if upcoming is None else max(inst.clock, upcoming)


def new_trace(stream: Stream, pool: KVPool, config: Config | None = None) -> Trace:
    n = len(stream)
    saved = np.zeros(n, dtype=np.int64) if config is not None and config.prefix_cache else None
    return Trace(stream.arrival_s.copy(), np.full(n, np.nan), np.full(n, np.nan),
                 stream.output.copy(), stream.prompt.copy(), np.zeros(n, dtype=np.int64),
                 np.zeros(n, dtype=np.int64), pool_blocks=pool.blocks, prefill_saved=saved)


RUN_POINTS = 1 << 20
"""Sequences x iterations one run of repeated decode iterations takes at once: its block
arrays stay a few MB whatever the batch and the output length."""


def _blocks(tokens: int, block: int) -> int:
    return -(-tokens // block)


class Server:
    """One serving instance: its clock, its queue, its running batch, its KV pool (and prefix
    cache); `run` serves a stream alone, `advance` steps it inside a fleet."""

    def __init__(self, requests, cost, pool, config, speculative=None, role="both"):
        self.requests, self.cost, self.pool, self.config = requests, cost, pool, config
        self.role = role   # "both"; or in a disaggregated server "prefill" or "decode"
        self.speculative = speculative
        self.decode_tokens = 1 + (speculative.k if speculative else 0)
        self.rng = np.random.Generator(np.random.PCG64(speculative.seed if speculative else 0))
        self.free = pool.blocks
        self.clock = 0.0
        self.waiting: deque[_Request] = deque()
        self.running: list[_Request] = []     # admission order: the newest is last
        self.swap_time = 0.0
        self.preempted = 0    # pre-emptions so far
        self.cache = PrefixCache() if config.prefix_cache else None

    def run(self, stream: Stream, closed_loop: int = 0) -> Trace:
        """Serve the requests at their arrival times; with `closed_loop` C, a request that
        finds C unfinished is sent when the next of them finishes."""
        n = len(self.requests)
        trace = new_trace(stream, self.pool, self.config)
        arrived = finished = 0
        if closed_loop:
            stream_times = _close_loop(self.requests, closed_loop, trace)
        arrivals = [r.arrival for r in self.requests]
        previous_end = arrivals[0]
        shown = progress.Counter("simulate: requests finished", n)
        steady = False   # the last iteration decoded every running sequence, and no more
        while finished < n:
            if not self.running and not self.waiting:
                self.clock = max(self.clock, self.requests[arrived].arrival)
            before = arrived
            while arrived < n and self.requests[arrived].arrival <= self.clock:
                self.waiting.append(self.requests[arrived])
                arrived += 1
            if steady and arrived == before:
                horizon = self.requests[arrived].arrival if arrived < n else math.inf
                self._decode_run(trace, horizon, arrived - finished)
                previous_end = self.clock
            preempted = self.preempted
            batch = self._schedule()
            if not batch:  # nothing fits yet and nothing runs: wait for the next arrival
                if arrived == n or math.isinf(self.requests[arrived].arrival):
                    raise EvaluationError("the simulation cannot make progress: a request "
                                          "never fits the KV pool")
                self.clock = max(self.clock, self.requests[arrived].arrival)
                continue
            start = self.clock
            trace.in_system_area += self._in_system((previous_end + start) / 2, arrivals,
                                                    finished) * (start - previous_end)
            step, done = self.iterate(batch, trace)
            trace.in_system_area += self._in_system(start + step / 2, arrivals, finished) * step
            previous_end = self.clock
            finished += len(done)
            if closed_loop:   # a slot is free: the next request is sent (not before its time)
                for k in range(finished - len(done) + closed_loop,
                               min(finished + closed_loop, n)):
                    trace.arrival[k] = sent = max(stream_times[k], self.clock)
                    arrivals[k] = self.requests[k].arrival = self.requests[k].ready = \
                        sent + self.cost.request_s
            steady = self.repeats(batch, done, preempted)
            shown.update(finished)
        shown.close()
        return trace

    def repeats(self, batch, done, preempted: int) -> bool:
        """Whether the next iterations repeat `batch` until something arrives or finishes:
        every running sequence decoded one token, none finished, none was pre-empted (that
        frees blocks: a waiting request may fit the next iteration)."""
        return (not done and self.speculative is None and preempted == self.preempted
                and len(batch) == len(self.running)
                and all(t == 1 and not r.pending for r, t in batch))

    def advance(self, trace: Trace, until: float) -> None:
        """Run the iterations that start before `until` (a fleet's next arrival, which its
        router may send here): the replica's work up to the moment it is next asked."""
        steady = False
        while (self.running or self.waiting) and self.clock < until:
            if steady:
                self._decode_run(trace, until, 0)
                if self.clock >= until:
                    return
            preempted = self.preempted
            batch = self._schedule()
            if not batch:
                raise EvaluationError("the simulation cannot make progress: a request never "
                                      "fits the KV pool")
            _, done = self.iterate(batch, trace)
            steady = self.repeats(batch, done, preempted)

    def _decode_run(self, trace: Trace, horizon: float, in_system: int) -> None:
        """The iterations that repeat the last one's batch (every running sequence decoding one
        token), run without rescheduling each: nothing can change the batch before the next
        arrival (`horizon`) or the first finish, and a waiting request that could not be
        admitted still cannot (the batch, the token budget and the free blocks only stay or
        shrink). Stops before an iteration that would end after the horizon, one that would
        finish a sequence, or one whose blocks are not free; the next iteration is scheduled as
        usual. The same numbers as iterating one by one: the same cost calls, the same blocks
        (allocated when a sequence's tokens cross a block, as `_grow` does)."""
        batch = self.running
        n = len(batch)
        steps = min(r.output - r.generated for r in batch) - 1  # the last one is scheduled
        steps = min(steps, max(1, RUN_POINTS // n))   # bounds the block arrays below; a
        if steps <= 0 or self.swap_time:              # longer run goes on after an iteration
            return
        cached = np.array([r.cached for r in batch], dtype=np.int64)
        held = np.array([r.blocks for r in batch], dtype=np.int64)
        block, fixed = self.config.kv_block, self.pool.fixed_blocks
        j = np.arange(1, steps + 1)
        tokens = cached[:, None] + j[None, :]             # cached after step j's new token
        need = (-(-tokens // block) if self.pool.grows else np.zeros_like(tokens)) + fixed
        grown = np.maximum(need - held[:, None], 0).sum(axis=0)   # blocks taken by step j
        steps = int(np.searchsorted(grown, self.free, side="right"))
        total = int(cached.sum())
        used = self.pool.blocks - self.free
        ran = 0
        if self.cost.decode_steps is not None and steps > 1:
            c = total + n * np.arange(steps, dtype=float)
            times = np.broadcast_to(self.cost.decode_steps(n, n, n, c, c, n, *NO_PROMPTS),
                                    c.shape).tolist()
        else:
            times = (self.cost(n, n, n, total + j * n, total + j * n, n) for j in range(steps))
        for step_j, step in enumerate(times):
            if self.clock + step > horizon:
                break
            self.clock += step
            trace.in_system_area += in_system * step
            taken = used + int(grown[step_j])
            trace.max_blocks_used = max(trace.max_blocks_used, taken)
            trace.iteration_end.append(self.clock)
            trace.iteration_time.append(step)
            trace.iteration_batch.append(n)
            trace.iteration_blocks.append(taken)
            ran += 1
        if not ran:
            return
        self.free -= int(grown[ran - 1])
        for r, blocks in zip(batch, np.maximum(need[:, ran - 1], held)):
            r.cached += ran
            r.generated += ran
            r.blocks = int(blocks)

    def iterate(self, batch: list[tuple[_Request, int]], trace: Trace
                ) -> tuple[float, list[_Request]]:
        """Run one iteration of `batch`: the clock advances by its time, every request by its
        tokens. Returns the time and the requests that left: finished, or (on a prefill
        instance) prefilled and handed to the decode side."""
        logits = sum(1 if r.pending else t for r, t in batch)   # L
        step = self.cost(*_sums((r.cached, t) for r, t in batch), logits,
                         _sums((r.cached, t) for r, t in batch if r.pending)) + self.swap_time
        if self.speculative is not None:
            step += self._draft_time(batch)
        self.clock += step
        self.swap_time = 0.0
        used = self.pool.blocks - self.free
        trace.max_blocks_used = max(trace.max_blocks_used, used)
        done = []
        plain = self.speculative is None
        for r, t in batch:
            prefilled = False
            if r.pending:
                r.cached += t
                r.pending -= t
                if r.pending:
                    continue
                emitted, prefilled = 1, True
                self._cache_blocks(r)
            else:
                emitted = 1 if plain else self._emitted()
                r.cached += emitted          # the rejected drafts leave the cache
            generated = r.generated + emitted
            r.generated = generated if generated < r.output else r.output
            if r.generated == 1 and r.first != r.first:   # (NaN: no first token yet)
                r.first = self.clock
            if r.generated >= r.output:
                r.finish = self.clock
                trace.first_token[r.i], trace.finish[r.i] = r.first, r.finish
                trace.preemptions[r.i] = r.preemptions
                trace.generated[r.i] = r.generated
                if trace.prefill_saved is not None:
                    trace.prefill_saved[r.i] = r.saved
                self._cache_blocks(r)
            elif not (prefilled and self.role == "prefill"):
                continue
            self._release(r)
            self.running.remove(r)
            r.active = False
            done.append(r)
        trace.iteration_end.append(self.clock)
        trace.iteration_time.append(step)
        trace.iteration_batch.append(len(batch))
        trace.iteration_blocks.append(used)
        return step, done

    # --- scheduling -------------------------------------------------------------------------------

    def _emitted(self) -> int:
        """Tokens a decoding sequence emits this iteration: 1, or with speculation the drafts
        accepted before the first rejection, plus one."""
        if self.speculative is None:
            return 1
        k, a = self.speculative.k, self.speculative.accept
        accepted = 0
        draws = self.rng.random(k)
        while accepted < k and draws[accepted] < a:
            accepted += 1
        return accepted + 1

    def _draft_time(self, batch) -> float:
        """The draft's k steps over the decoding sequences, and its prefill of the chunks."""
        if self.speculative is None:
            return 0.0
        k = self.speculative.k
        decoding = [r.cached for r, t in batch if not r.pending]
        chunks = [(r.cached, t) for r, t in batch if r.pending]
        n = len(decoding)
        cached = sum(decoding) + n * (k - 1) / 2           # the draft's cache at its mid step
        time = k * self.speculative.draft(n, n, n, cached, cached, n) if n else 0.0
        if chunks:
            sums = _sums(chunks)
            time += self.speculative.draft(*sums, len(chunks), sums)
        return time

    @staticmethod
    def _in_system(t: float, arrivals: list[float], finished: int) -> int:
        """Requests arrived by time t and not finished (sampled mid-interval: finishes happen
        at iteration ends, arrivals anywhere)."""
        return bisect.bisect_right(arrivals, t) - finished

    def _schedule(self) -> list[tuple[_Request, int]]:
        """[(request, new tokens)] of the next iteration, blocks allocated."""
        c = self.config
        if c.scheduler == "static":
            if not self.running:
                while self.waiting and len(self.running) < c.max_batch and \
                        self._admit(self.waiting[0], self.waiting[0].pending, 0):
                    self._start(self.waiting.popleft())
            plan = [(r, r.pending or self.decode_tokens) for r in self.running]
            return self._grow(plan)
        decodes = [(r, self.decode_tokens) for r in self.running if not r.pending]
        budget = c.chunk if c.scheduler == "chunked" else c.max_tokens
        budget -= len(decodes) * self.decode_tokens if c.scheduler == "chunked" else 0
        plan = list(decodes)
        for r in self.running:   # prompts being prefilled (chunked, or resumed)
            if r.pending and budget > 0:
                t = min(r.pending, budget) if c.scheduler == "chunked" else r.pending
                plan.append((r, t))
                budget -= t
        while self.waiting and len(self.running) < c.max_batch and budget > 0:
            r = self.waiting[0]
            hit = self._hit(r)
            if not r.pending:      # prefilled elsewhere, or swapped out while decoding
                t = self.decode_tokens
            else:
                pending = r.pending - hit * c.kv_block
                t = min(pending, budget) if c.scheduler == "chunked" else pending
            if c.scheduler == "continuous" and t > budget and plan:
                break                      # a whole prompt waits for a lighter iteration
            if not self._admit(r, t, hit):
                break
            self._start(self.waiting.popleft())
            plan.append((r, t))
            budget -= t
        return self._grow(plan)

    def _start(self, r: _Request) -> None:
        self.running.append(r)
        r.active = True

    def _hit(self, r: _Request) -> int:
        """Leading blocks of a request about to start its prompt that the prefix cache holds
        (at least one prompt token is left to prefill: it gives the first token)."""
        if self.cache is None or not r.hashes or r.cached or r.swapped or not r.pending:
            return 0
        usable = min(len(r.hashes), (r.pending - 1) // self.config.kv_block)
        return self.cache.match(r.hashes[:usable])

    def _admit(self, r: _Request, tokens: int, hit: int = 0) -> bool:
        """Give `r` the blocks its first step needs (swapping it back in if it was out); `hit`
        leading blocks are shared from the prefix cache and skip their prefill."""
        if r.swapped:
            need = r.blocks
            if not self._ensure(need):
                return False
            self.free -= need
            self.swap_time += need * self.pool.block_bytes / self.pool.swap_Bps
            r.swapped = False
            return True
        shared = hit * self.config.kv_block
        need = self.pool.token_blocks(r.cached + shared + tokens, self.config.kv_block) + \
            self.pool.fixed_blocks - hit
        if not self._ensure(need, r.hashes[:hit]):
            return False
        self.free -= need
        r.blocks = need + hit
        if hit:
            self.cache.acquire(r.hashes[:hit])
            r.hashed = hit
            r.cached += shared
            r.pending -= shared
            r.saved += shared
        return True

    def _ensure(self, need: int, keep=()) -> bool:
        """Free blocks for `need`, evicting idle cached blocks (oldest first) if it takes."""
        while need > self.free and self.cache is not None and self.cache.evict(keep):
            self.free += 1
        return need <= self.free

    def _cache_blocks(self, r: _Request) -> None:
        """The blocks `r` has filled join the prefix cache under their hashes (a block already
        there is shared instead, and `r`'s own copy freed)."""
        if self.cache is None or not r.hashes:
            return
        full = min(len(r.hashes), r.cached // self.config.kv_block)
        for h in r.hashes[r.hashed:full]:
            if not self.cache.insert(h):
                self.free += 1
        r.hashed = max(r.hashed, full)

    def _grow(self, plan: list[tuple[_Request, int]]) -> list[tuple[_Request, int]]:
        """Blocks for every sequence's new tokens; pre-empt the newest when they run out."""
        block, fixed = self.config.kv_block, self.pool.fixed_blocks
        preempted = False
        for r, t in plan:
            if not r.active:   # pre-empted below for an older sequence's block
                continue
            need = self.pool.token_blocks(r.cached + t, block) + fixed - r.blocks
            if need <= 0:
                continue
            while not self._ensure(need) and r.active:
                self._preempt(self.running[-1])
                preempted = True
            if r.active:
                self.free -= need
                r.blocks += need
        return [(r, t) for r, t in plan if r.active] if preempted else plan

    def _preempt(self, r: _Request) -> None:
        self.preempted += 1
        self.running.remove(r)
        r.active = False
        r.preemptions += 1
        if self.config.preempt == "swap":   # all its blocks go out as its own copies
            self.swap_time += r.blocks * self.pool.block_bytes / self.pool.swap_Bps
            self.free += r.blocks - r.hashed
            if r.hashed:
                self.cache.release(r.hashes[:r.hashed])
                r.hashed = 0
            r.swapped = True
        else:   # recompute: the prompt and what it generated are prefilled again
            self._release(r)
            r.pending, r.cached = r.prompt + r.generated if r.generated else r.prompt, 0
            if r.generated:
                r.generated -= 1   # the re-prefill emits the last generated token again
        self.waiting.appendleft(r)

    def _release(self, r: _Request) -> None:
        self.free += r.blocks - r.hashed
        if r.hashed:
            self.cache.release(r.hashes[:r.hashed])
            r.hashed = 0
        r.blocks = 0


# --- summary --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Summary:
    requests: int
    duration_s: float
    ttft_s: dict          # {"mean", "p50", "p90", "p99"}
    tpot_s: dict
    e2e_s: dict
    requests_per_s: float
    input_tokens_per_s: float
    output_tokens_per_s: float
    mean_batch: float
    kv_utilisation: float      # time-weighted mean of blocks in use / pool
    kv_peak_blocks: int
    kv_pool_blocks: int
    preemptions: int
    goodput_rps: float | None  # requests/s meeting the SLO (None: no SLO given)
    slo_attainment: float | None
    mean_in_system: float      # time-weighted requests arrived and not finished
    arrival_rate: float | None  # requests / (last arrival - first arrival); None: all at once
    reordered: int = 0
    prefix_hit_rate: float | None = None     # prompt tokens found in the prefix cache, as a
    prefill_tokens_saved: int | None = None  # share of all prompt tokens; None: cache off


def _percentiles(x: np.ndarray) -> dict:
    return {"mean": float(np.mean(x)), "p50": float(np.percentile(x, 50)),
            "p90": float(np.percentile(x, 90)), "p99": float(np.percentile(x, 99))}


def request_metrics(trace: Trace) -> dict[str, np.ndarray]:
    ttft = trace.first_token - trace.arrival
    e2e = trace.finish - trace.arrival
    steps = np.maximum(trace.output - 1, 1)
    tpot = np.where(trace.output > 1, (trace.finish - trace.first_token) / steps, 0.0)
    return {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e}


def summarise(trace: Trace, slo: dict | None = None, reordered: int = 0) -> Summary:
    m = request_metrics(trace)
    start, end = float(trace.arrival.min()), float(trace.finish.max())
    duration = max(end - start, 1e-12)
    busy = np.array(trace.iteration_time)                      # the server's working time
    weight = busy.sum() or 1.0
    met = None
    if slo:
        ok = np.ones(len(trace.arrival), dtype=bool)
        if "ttft" in slo:
            ok &= m["ttft_s"] <= slo["ttft"]
        if "tpot" in slo:
            ok &= m["tpot_s"] <= slo["tpot"]
        if "e2e" in slo:
            ok &= m["e2e_s"] <= slo["e2e"]
        met = ok
    span = float(trace.arrival.max() - trace.arrival.min())
    return Summary(
        requests=len(trace.arrival), duration_s=duration, ttft_s=_percentiles(m["ttft_s"]),
        tpot_s=_percentiles(m["tpot_s"]), e2e_s=_percentiles(m["e2e_s"]),
        requests_per_s=len(trace.arrival) / duration,
        input_tokens_per_s=float(trace.prompt.sum()) / duration,
        output_tokens_per_s=float(trace.output.sum()) / duration,
        mean_batch=float(np.dot(trace.iteration_batch, busy) / weight),
        kv_utilisation=float(np.dot(trace.iteration_blocks, busy) / weight / trace.pool_blocks),
        kv_peak_blocks=trace.max_blocks_used, kv_pool_blocks=trace.pool_blocks,
        preemptions=int(trace.preemptions.sum()),
        goodput_rps=float(met.sum()) / duration if met is not None else None,
        slo_attainment=float(met.mean()) if met is not None else None,
        mean_in_system=trace.in_system_area / duration,
        arrival_rate=(len(trace.arrival) - 1) / span if span > 0 else None,
        reordered=reordered, **_prefix_summary(trace))


def _prefix_summary(trace: Trace) -> dict:
    if trace.prefill_saved is None:
        return {}
    saved = int(trace.prefill_saved.sum())
    return {"prefix_hit_rate": saved / float(trace.prompt.sum()),
            "prefill_tokens_saved": saved}
