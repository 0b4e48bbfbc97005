"""Memory model, capacity answers and serving metrics against hand derivations.

Llama-2-7b (config.json): hidden 4096, 32 layers, 32 heads of 128, 32 KV heads, ffn 11008,
6,738,415,616 parameters. RTX A6000: 48 GiB = 51,539,607,552 bytes (datasheet).
Mistral-7B-v0.1: 8 KV heads, window 4096 (config.json: sliding_window).
"""
import json

import numpy as np
import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.cli import main
from costdsl.analysis.memory import activation_peak

from conftest import MODELS

LLAMA = MODELS / "llama-2-7b.arch"
A6000 = "nvidia-a6000"
A6000_BYTES = 48 * 2**30
WEIGHTS_16 = 6_738_415_616 * 2
KV_PER_TOKEN = 2 * 32 * 4096 * 2   # K and V, 32 layers, 4096 wide, 2 bytes: 524,288


def test_memory_breakdown_of_llama_2_7b():
    a = costdsl.load(LLAMA).analyze(A6000, batch=1, seq=2048)
    m = a.memory
    assert m.weights_bytes == WEIGHTS_16 == 13_476_831_232
    # after a decode step the cache holds seq + 1 = 2049 positions
    assert m.kv_cache_bytes == 2049 * KV_PER_TOKEN
    assert m.stages["prefill"]["kv_cache_bytes"] == 2048 * KV_PER_TOKEN
    # prefill peak: scores and probabilities (2 x 32 x 2048^2 x 2 bytes) live together at the
    # softmax, with the residual stream (2048 x 4096 x 2) waiting for its add
    assert m.stages["prefill"]["activation_peak_bytes"] == 2 * 32 * 2048**2 * 2 + 2048 * 4096 * 2
    # decode peak, again at the softmax: one query row against 2049 positions per head, scores
    # and probabilities (2 x 32 x 2049 x 2 bytes), and the residual (4096 x 2)
    assert m.stages["decode"]["activation_peak_bytes"] == 2 * 32 * 2049 * 2 + 4096 * 2
    assert m.total_bytes == WEIGHTS_16 + 2048 * KV_PER_TOKEN + 553_648_128
    assert m.fits and m.headroom_bytes == A6000_BYTES - m.total_bytes


def test_activation_peak_is_a_lifetime_peak_not_a_sum():
    # decode with 16 cached tokens: the largest live set is at the SwiGLU: residual h (4096),
    # gate and up (11008 each) and its output (11008), 2 bytes each = 74,240 bytes; the sum of
    # every activation the graph writes is three times that
    graph = costdsl.load(LLAMA).graph("decode")
    at = {S.batch: 1, S.a_bits: 16, S.seq: 16}
    peak = activation_peak(graph).subs(at)
    every = sum(w.elements for n in graph.nodes.values() for w in n["op"].writes
                if w.cls == "act").subs(at) * 2
    assert peak == (4096 + 3 * 11008) * 2
    assert every > 3 * peak


def test_fused_attention_never_holds_the_score_matrix():
    m = costdsl.load(LLAMA, passes=["flash_attention()"])
    peak = m.analyze(A6000, batch=1, seq=2048).memory.stages["prefill"]["activation_peak_bytes"]
    # the SwiGLU step is now the largest: (4096 + 3 x 11008) x 2 bytes per token
    assert peak == 2048 * (4096 + 3 * 11008) * 2


def test_quantized_weights_and_kv_shrink_the_footprint():
    a = costdsl.load(LLAMA, passes=['quantize(weights=4, group=128, exclude="embed,lm_head")',
                                    "quantize(kv=8)"]).analyze(A6000, batch=1, seq=2048)
    embed_and_head = 2 * 32000 * 4096
    body = 6_738_415_616 - embed_and_head
    assert a.memory.weights_bytes == embed_and_head * 2 + body * 4.125 / 8
    assert a.memory.kv_cache_bytes == 2049 * KV_PER_TOKEN / 2


def test_tied_embeddings_are_stored_once():
    m = costdsl.load(MODELS / "gpt2.arch")
    a = m.analyze(A6000, batch=1, seq=128)
    assert a.memory.weights_bytes == 124_439_808 * 2


def test_sliding_window_caps_the_cache():
    # Mistral: 32 layers x 2 x 8 KV heads x 128 x 2 bytes = 131,072 bytes per position, at most
    # 4096 positions
    m = costdsl.load(MODELS / "mistral-7b.arch")
    long = m.analyze(A6000, batch=1, seq=30000, stages=["decode"])
    assert long.memory.kv_cache_bytes == 4096 * 131_072
    short = m.analyze(A6000, batch=1, seq=1000, stages=["decode"])
    assert short.memory.kv_cache_bytes == 1001 * 131_072


def test_analyze_json_memory_object(capsys):
    assert main(["analyze", "llama-2-70b", "--hw", A6000, "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    mem = out["memory"]
    assert set(mem) >= {"weights_bytes", "kv_cache_bytes", "activation_peak_bytes",
                        "total_bytes", "fits"}
    assert mem["fits"] is False  # 138 GB of weights on a 48 GiB card
    assert mem["total_bytes"] == mem["stages"]["prefill"]["total_bytes"]


def test_fit_largest_batch_and_longest_context():
    # per sequence at seq 4096 (prefill is the larger stage): KV 4096 x 524,288 + scores and
    # probabilities 2 x 32 x 4096^2 x 2 + residual 4096 x 4096 x 2 = 4,328,521,728 bytes
    f = costdsl.load(LLAMA).fit(A6000, seq=4096, batch=1)
    per_seq = 4096 * KV_PER_TOKEN + 2 * 32 * 4096**2 * 2 + 4096 * 4096 * 2
    assert f.per_sequence_bytes == per_seq
    assert f.max_batch == (A6000_BYTES - WEIGHTS_16) // per_seq == 8
    # longest context at batch 1: W + 524,288 s + 128 s^2 + 8,192 s = capacity
    a, b, c = 128, KV_PER_TOKEN + 8192, WEIGHTS_16 - A6000_BYTES
    assert f.max_seq == int((-b + (b * b - 4 * a * c) ** 0.5) / (2 * a)) == 15_289


def test_kv_cache_outweighs_weights_in_closed_form():
    # decode cache after the step: (s + 1) x 32 x 2 x 4096 x kv_bits / 8 = weights
    #   s = 8 W / (262,144 kv_bits) - 1 = 411,280.25 / kv_bits - 1
    f = costdsl.load(LLAMA).fit(A6000, seq=2048, batch=1)
    assert sympy.simplify(f.kv_crossover - (sympy.Rational(1645121, 4) / S.kv_bits - 1)) == 0
    assert f.kv_crossover_value == pytest.approx(411_280.25 / 16 - 1)
    # 8-bit KV doubles it: ~51k tokens, the survey's "about 50k" for its setting
    f8 = costdsl.load(LLAMA).fit(A6000, seq=2048, batch=1, kv_bits=8)
    assert f8.kv_crossover_value == pytest.approx(411_280.25 / 8 - 1)
    # a sliding window caps the cache below the weights: no crossover, and it says why
    fm = costdsl.load(MODELS / "mistral-7b.arch").fit(A6000, seq=2048, batch=1)
    assert fm.kv_crossover is None and "window" in fm.kv_crossover_reason


def test_fit_cli(capsys):
    assert main(["fit", str(LLAMA), "--hw", A6000, "--seq", "4096", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["max_batch"] == 8 and out["max_seq"] == 15_289
    assert out["kv_crossover"]["value"] == pytest.approx(25_704.015625)
    assert main(["fit", "llama-2-70b", "--hw", A6000, "--seq", "4096"]) == 0
    assert "largest batch at seq 4096: 0" in capsys.readouterr().out


# --- serving ------------------------------------------------------------------------------------

def test_serving_metrics_agree_with_analyze_and_latency():
    from costdsl.hardware import load_hardware
    from costdsl.serving.curve import serve_curve
    m = costdsl.load(LLAMA)
    bits = dict(w_bits=16, a_bits=16, kv_bits=16)
    curve = serve_curve(m, load_hardware(A6000), 512, 64, np.array([1, 8, 64]), bits)
    for i, b in enumerate((1, 8, 64)):
        lat = m.latency(A6000, batch=b, seq=512, gen=64)
        assert curve.ttft_s[i] == pytest.approx(lat.ttft_s, rel=1e-12)
        assert curve.tpot_s[i] == pytest.approx(lat.tpot_s, rel=1e-9)
        assert curve.e2e_s[i] == pytest.approx(lat.e2e_s, rel=1e-9)
        assert curve.tokens_per_s[i] == pytest.approx(b * 64 / lat.e2e_s, rel=1e-9)
        # memory at the end of the request: the cache holds 512 + 63 positions
        mem = m.analyze(A6000, batch=b, seq=512 + 62).memory
        assert curve.memory_bytes[i] == max(
            mem.stages["decode"]["total_bytes"],
            m.analyze(A6000, batch=b, seq=512).memory.stages["prefill"]["total_bytes"])
        assert lat.memory.total_bytes == pytest.approx(curve.memory_bytes[i], rel=1e-12)
        # the last step's cache, by hand: 512 + 63 positions of KV_PER_TOKEN per sequence
        assert lat.memory.stages["decode"]["kv_cache_bytes"] == b * 575 * KV_PER_TOKEN
    assert curve.fits.tolist() == [True, True, True]


def test_latency_says_whether_the_request_fits(capsys):
    """Llama-2-70B's 16-bit weights, 68,976,648,192 x 2 bytes = 138 GB, do not fit the A6000's
    48 GiB: `latency` says so beside its times (before, it printed them alone); the 7B at
    batch 1 fits, with its peak at the last decode step's cache in JSON too."""
    assert main(["latency", "llama-2-70b", "--hw", A6000, "--batch", "1", "--seq", "512",
                 "--gen", "16"]) == 0
    out = capsys.readouterr().out
    assert "memory (peak, the prompt's prefill): weights 138 GB" in out
    assert "does NOT fit" in out
    assert main(["latency", str(LLAMA), "--hw", A6000, "--batch", "8", "--seq", "512",
                 "--gen", "4096"]) == 0   # 8 x 4,607 positions: 19.3 GB of cache at the end
    assert "memory (peak, the last decode step, 4,607 tokens cached): weights 13.5 GB + KV " \
           "cache 19.3 GB" in capsys.readouterr().out
    assert main(["latency", str(LLAMA), "--hw", A6000, "--batch", "1", "--seq", "512",
                 "--gen", "16", "--format", "json"]) == 0
    memory = json.loads(capsys.readouterr().out)["memory"]
    assert memory["fits"] is True and memory["capacity_bytes"] == A6000_BYTES
    assert memory["stages"]["decode"]["kv_cache_bytes"] == 527 * KV_PER_TOKEN


def test_a_miss_from_unfused_scores_says_so(capsys):
    """Llama-3-8B, 16 prompts of 8,192 tokens on an H100 (80 GiB): the unfused graph holds a
    layer's scores, 16 x 32 heads x 8,192^2 x 2 bytes = 68.7 GB (and softmax's output beside
    them), and misses; weights (16.1 GB) and cache (16 x 8,192 x 131,072 bytes = 17.2 GB) fit,
    so the line names the scores and the way out, which then fits. Where the weights alone
    miss (Llama-2-70B on the A6000), fusion would not help: no note."""
    argv = ["analyze", "llama-3-8b", "--hw", "nvidia-h100-sxm", "--batch", "16", "--seq", "8192",
            "--stage", "prefill"]
    assert main(argv) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("memory"))
    assert "KV cache 17.2 GB" in line and "does NOT fit" in line
    assert "keeps attention's scores" in line and 'fuse_serving()' in line
    assert main(argv + ["--pass", "fuse_serving()"]) == 0
    assert ": fits (" in capsys.readouterr().out
    assert main(["latency", "llama-2-70b", "--hw", A6000, "--batch", "1", "--seq", "512",
                 "--gen", "16"]) == 0
    out = capsys.readouterr().out
    assert "does NOT fit" in out and "scores" not in out


def test_serve_curve_cli_marks_memory_and_compute_bound(capsys):
    assert main(["serve-curve", str(LLAMA), "--hw", A6000, "--seq", "1024", "--gen", "128",
                 "--batch", "1,16,64,256"]) == 0
    out = capsys.readouterr().out
    assert "out of memory" in out
    assert "lm_head turns compute-bound at batch" in out
    assert main(["serve-curve", str(LLAMA), "--hw", A6000, "--seq", "1024", "--gen", "128",
                 "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    points = data["points"]
    assert [p["batch"] for p in points] == [2**k for k in range(len(points))]
    assert points[-1]["fits"] is False and points[0]["fits"] is True
    assert data["max_batch"] < points[-1]["batch"]


@pytest.mark.parametrize("command", [
    ["fit", "--seq", "128"], ["serve-curve", "--seq", "128", "--gen", "4"],
    ["plot", "memory", "--out", "x.png"], ["analyze"],
])
def test_a_family_file_with_free_dimensions_is_an_error_not_a_traceback(command, capsys,
                                                                       tmp_path):
    if command[0] == "plot":
        command = command[:2] + [str(MODELS / "llama.arch")] + command[2:-1] + [
            str(tmp_path / "x.png")]
    else:
        command = command[:1] + [str(MODELS / "llama.arch")] + command[1:]
    assert main(command + ["--hw", A6000]) == 2
    err = capsys.readouterr().err
    assert "is still free at evaluation" in err and "Traceback" not in err
