"""Fleets of replicas behind a router, and prefix caching (serving.fleet, serving.prefix).

Expected values by hand: a trace where half the requests share a 1,000-token prefix (62.5
blocks of 16 tokens: 62 full blocks can be shared) skips 62 x 16 = 992 prompt tokens of every
sharing request but the first, and its TTFT is the iteration cost of the 208 tokens left over
992 cached; a one-replica fleet is the single server; round robin deals requests in turn.
"""
import json

import numpy as np
import pytest

import costdsl
from costdsl.cli import main
from costdsl.errors import CostDSLError
from costdsl.serving.fleet import simulate_fleet
from costdsl.serving.prefix import PrefixCache
from costdsl.serving.requests import Stream, read_requests, synthetic
from costdsl.serving.simulate import Config, simulate, summarise

from conftest import MODELS

HW = "nvidia-a100-80gb"
BLOCK = 16


@pytest.fixture(scope="module")
def llama():
    return costdsl.load(MODELS / "llama-2-7b.arch")


def shared_prefix_stream(n=10, prompt=1200, output=8, gap=100.0):
    """Requests `gap` s apart (never two at once); the even ones start with the same 1,000
    tokens: 62 full blocks with common hashes, then blocks of their own."""
    blocks = -(-prompt // BLOCK)
    hashes = []
    for i in range(n):
        own = [10_000 * (i + 1) + j for j in range(blocks)]
        hashes.append(tuple(list(range(1, 63)) + own[62:]) if i % 2 == 0 else tuple(own))
    return Stream(np.arange(n) * gap, np.full(n, prompt), np.full(n, output), "shared",
                  hashes=tuple(hashes))


def run(llama, stream, **config):
    cost = llama.iteration_cost(HW)
    pool = llama.kv_pool(HW, Config(**config))
    return simulate(stream, cost, pool, Config(**config)), cost


def test_a_shared_prefix_by_hand(llama):
    trace, cost = run(llama, shared_prefix_stream(), prefix_cache=True)
    s = summarise(trace)
    # requests 2, 4, 6 and 8 find the 62 blocks request 0 left: 992 tokens each
    assert list(trace.prefill_saved) == [0, 0, 992, 0, 992, 0, 992, 0, 992, 0]
    assert s.prefill_tokens_saved == 4 * 992
    assert s.prefix_hit_rate == pytest.approx(4 * 992 / (10 * 1200))
    ttft = trace.first_token - trace.arrival
    miss = cost(1, 1200, 1200 ** 2, 0, 0, 1)            # the whole prompt, nothing cached
    hit = cost(1, 208, 208 ** 2, 208 * 992, 992, 1)     # 208 tokens over 992 cached
    assert ttft[0] == pytest.approx(miss, rel=1e-12)
    assert ttft[2] == pytest.approx(hit, rel=1e-12)
    assert hit < 0.3 * miss
    off, _ = run(llama, shared_prefix_stream(), prefix_cache=False)
    assert off.prefill_saved is None and summarise(off).prefix_hit_rate is None
    assert (off.first_token - off.arrival)[2] == pytest.approx(miss, rel=1e-12)


def test_the_whole_prompt_cached_still_prefills_its_last_block():
    """A prompt whose blocks are all cached prefills from its last block on (the first token
    needs the last position's logits): at most (prompt - 1) // 16 blocks are shared."""
    llama = costdsl.load(MODELS / "llama-2-7b.arch")
    hashes = tuple(range(1, 65))                          # 1,024 tokens = 64 blocks
    stream = Stream(np.array([0.0, 100.0]), np.array([1024, 1024]), np.array([4, 4]), "same",
                    hashes=(hashes, hashes))
    trace, _ = run(llama, stream, prefix_cache=True)
    assert list(trace.prefill_saved) == [0, 63 * BLOCK]


def test_sessions_share_their_earlier_turns(tmp_path, llama):
    """Turn 2 of a chat starts with turn 1's prompt and answer: (300 + 50 - 1) // 16 = 21 full
    blocks of turn 1 are in the cache when turn 1 finishes (its last token is never cached)."""
    path = tmp_path / "chat.csv"
    path.write_text("arrival_s,prompt_tokens,output_tokens,session_id\n"
                    "0,300,50,a\n100,400,20,a\n100.5,400,20,b\n200,420,10,\n")
    stream = read_requests(str(path))
    trace, _ = run(llama, stream, prefix_cache=True)
    assert list(trace.prefill_saved) == [0, 21 * BLOCK, 0, 0]


def test_idle_blocks_are_evicted_oldest_first():
    cache = PrefixCache()
    cache.acquire([1, 2, 3])
    cache.release([1, 2, 3])      # idle in order 1, 2, 3
    cache.acquire([2])
    cache.release([2])            # 2 is now the most recent
    assert cache.evict() and 1 not in cache
    assert cache.evict(keep=[3]) and 2 not in cache and 3 in cache
    assert not cache.evict(keep=[3])
    assert cache.match([3, 4]) == 1


def test_a_tight_pool_evicts_cached_blocks_before_it_pre_empts(llama):
    """With room for about two requests' blocks, those finished requests left idle are evicted
    for new ones, least recently used first: the shared prefix, used again and again, stays;
    nothing is pre-empted, every request finishes with its tokens."""
    stream = shared_prefix_stream(n=12, gap=1.0)
    trace, _ = run(llama, stream, prefix_cache=True, kv_memory=0.024)
    assert 2 * 76 < trace.pool_blocks < 3 * 76 < 12 * 75
    assert trace.max_blocks_used == trace.pool_blocks      # full: blocks were evicted
    assert list(trace.prefill_saved) == [0, 0, 992, 0, 992, 0, 992, 0, 992, 0, 992, 0]
    assert list(trace.generated) == [8] * 12
    assert trace.preemptions.sum() == 0


def test_one_replica_is_the_single_server(llama):
    stream = synthetic(6, 150, "lognormal(400, 0.6)", "lognormal(100, 0.8)", seed=2)
    config = Config(prefix_cache=True)
    cost, pool = llama.iteration_cost(HW), llama.kv_pool(HW, config)
    alone = simulate(stream, cost, pool, config)
    fleet, (own,) = simulate_fleet(stream, cost, pool, config, 1, "least_outstanding")
    assert np.array_equal(fleet.first_token, alone.first_token)
    assert np.array_equal(fleet.finish, alone.finish)
    assert fleet.iteration_time == alone.iteration_time
    assert np.array_equal(own.finish, alone.finish)


def test_round_robin_deals_in_turn(llama):
    stream = synthetic(30, 402, "lognormal(400, 0.6)", "lognormal(100, 0.8)", seed=4)
    _, summary, replicas = llama.simulate_fleet(HW, stream, 4, "round_robin")
    assert [s.requests for s in replicas] == [101, 101, 100, 100]
    assert summary.requests == 402
    for router in ("least_outstanding", "least_kv"):
        trace, _, replicas = llama.simulate_fleet(HW, stream, 4, router)
        assert sum(s.requests for s in replicas) == 402
        assert np.all(np.isfinite(trace.finish))


def test_prefix_affinity_keeps_a_prefix_on_one_replica(llama):
    """Round robin over three replicas deals the six sharing requests (0, 2, ..., 10) to
    replicas 0, 2, 1, 0, 2, 1: each caches the prefix once, three misses; prefix affinity sends
    them where it is cached: one miss."""
    stream = shared_prefix_stream(n=12, gap=2.0)
    config = Config(prefix_cache=True)
    cost, pool = llama.iteration_cost(HW), llama.kv_pool(HW, config)
    spread, _ = simulate_fleet(stream, cost, pool, config, 3, "round_robin")
    kept, _ = simulate_fleet(stream, cost, pool, config, 3, "prefix_affinity")
    assert int(spread.prefill_saved.sum()) == 3 * 992
    assert int(kept.prefill_saved.sum()) == 5 * 992


@pytest.mark.parametrize("text, message", [
    ("arrival_s,prompt_tokens,output_tokens,hash_ids\n0,32,4,\"[1, 2.5]\"\n",
     "r.csv:2: hash_ids '[1, 2.5]' is not a list of integers"),
    ("arrival_s,prompt_tokens,output_tokens,hash_ids\n0,32,4,\"{1: 2}\"\n",
     "r.csv:2: hash_ids '{1: 2}' is not a list of integers"),
    ("arrival_s,prompt_tokens,output_tokens,hash_ids,session_id\n0,32,4,[],a\n",
     "r.csv:1: hash_ids and session_id both given"),
])
def test_bad_prefix_columns(tmp_path, text, message):
    path = tmp_path / "r.csv"
    path.write_text(text)
    with pytest.raises(CostDSLError) as err:
        read_requests(str(path))
    assert message in str(err.value)


def test_fleet_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "r.csv"
    rows = ["arrival_s,prompt_tokens,output_tokens,hash_ids"]
    for i in range(20):
        shared = list(range(1, 63)) if i % 2 == 0 else []
        own = [1000 * (i + 1) + j for j in range(75 - len(shared))]
        rows.append(f'{i * 0.5},1200,16,"{json.dumps(shared + own)}"')
    path.write_text("\n".join(rows) + "\n")
    model = str(MODELS / "llama-2-7b.arch")
    args = ["simulate", model, "--hw", HW, "--requests", str(path), "--replicas", "2",
            "--router", "prefix_affinity"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "2 replicas behind the prefix_affinity router:" in out
    assert "prefix cache: " in out
    assert main(args + ["--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["prefill_tokens_saved"] == 9 * 992
    assert data["summary"]["prefix_hit_rate"] == pytest.approx(9 * 992 / (20 * 1200))
    assert len(data["replicas"]) == 2 and data["router"] == "prefix_affinity"
    assert sum(r["requests"] for r in data["replicas"] if r) == 20
    assert main(args[:-2] + ["--router", "prefix_affinity", "--prefix-cache", "off"]) == 2
    assert "turn them on" in capsys.readouterr().err
    assert main(args[:-4] + ["--replicas", "2", "--scheduler",
                             "disaggregated(prefill=1, decode=1)"]) == 2
    assert "a fleet's replicas are aggregated servers" in capsys.readouterr().err
