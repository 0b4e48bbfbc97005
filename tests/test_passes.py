"""Passes (quantize, fusion, FlashAttention) against hand derivations on shipped models.

Llama-2-7b (config.json): hidden 4096, 32 heads of 128, 32 KV heads, ffn 11008, vocab 32000,
32 layers. RTX A6000 (hardware/nvidia-a6000.toml): 768 GB/s, fp16 154.8 TFLOPS, ridge 201.6
ops/byte, 99 KiB of shared memory per thread block (CUDA C++ Programming Guide, CC 8.6).
"""
import json

import pytest
import sympy

import costdsl
from costdsl import symbols as S
from costdsl.cli import main
from costdsl.graph.schema import check, nodes
from costdsl.graph.passes import PASSES, PassError
from costdsl.analysis.crossover import minmax_breakpoints, resolve_minmax
from costdsl.analysis.roofline import NotApplicableError
from costdsl.hardware import load_hardware

from conftest import MODELS

LLAMA = MODELS / "llama-2-7b.arch"
A6000 = "nvidia-a6000"
H, D, F = 4096, 128, 11008


def _op(model, stage, name):
    return model.graph(stage).nodes[name]["op"]


def _result(analysis, stage, name):
    return next(o for o in analysis.stages[stage].ops if o.name == name)


def _bytes_at(node, **values):
    subs = {getattr(S, k): v for k, v in values.items()}
    return {c: sympy.nsimplify(e.subs(subs)) for c, e in node.bytes_of(node.reads + node.writes).items()}


# --- quantize -----------------------------------------------------------------------------------

def test_group_scales_add_scale_bits_per_weight():
    # 4-bit weights, one fp16 scale per 128 weights: 4 + 16/128 = 4.125 bits per weight.
    # q projection: 4096 x 4096 weights x 4.125 / 8 = 8,650,752 bytes.
    m = costdsl.load(LLAMA, passes=["quantize(weights=4, group=128)"])
    q = _op(m, "decode", "layers.q")
    assert q.stored_bits("weight") == sympy.Rational(33, 8)
    assert _bytes_at(q, batch=1, a_bits=16)["weight"] == H * H * 33 // 64 == 8_650_752
    # zero points add their bits too: 4 + (16 + 4) / 64 = 4.3125
    m = costdsl.load(LLAMA, passes=["quantize(weights=4, group=64, zero_bits=4)"])
    assert _op(m, "decode", "layers.q").stored_bits("weight") == sympy.Rational(69, 16)


def test_patterns_select_ops_and_exclude_keeps_16_bits():
    m = costdsl.load(LLAMA, passes=['quantize(weights=4, exclude="embed,lm_head")',
                                    'quantize(weights=8, ops="layers.attn*,layers.q,layers.k,'
                                    'layers.v,layers.o")'])
    bits = {n.name: n.bits["weight"] for n in nodes(m.graph("decode"))}
    assert bits["embed"] == S.w_bits and bits["lm_head"] == S.w_bits  # left at the flag's value
    assert bits["layers.gate"] == 4 and bits["layers.down"] == 4
    assert bits["layers.q"] == 8 and bits["layers.o"] == 8


def test_bitwidth_flags_are_the_whole_model_quantize_pass():
    # --w-bits 4 and quantize(weights=4) give the same numbers, op by op.
    flags = costdsl.load(LLAMA).analyze(A6000, batch=8, seq=1024, w_bits=4, kv_bits=8)
    passes = costdsl.load(LLAMA, passes=["quantize(weights=4, kv=8)"]).analyze(
        A6000, batch=8, seq=1024)
    for stage in ("prefill", "decode"):
        for a, b in zip(flags.stages[stage].ops, passes.stages[stage].ops):
            assert (a.name, a.compute_type, a.bound) == (b.name, b.compute_type, b.bound)
            assert a.bytes == pytest.approx(b.bytes, rel=1e-12)
            assert a.time_s == pytest.approx(b.time_s, rel=1e-12)


def test_symbolic_bitwidths_stay_symbolic():
    m = costdsl.load(LLAMA, passes=['quantize(weights=w_bits / 2, ops="layers.gate")'])
    gate = _op(m, "decode", "layers.gate")
    assert gate.bits["weight"] == S.w_bits / 2
    # at w_bits = 8 the gate's weights take 4 bits: 4096 x 11008 / 2 bytes
    a = m.analyze(A6000, batch=1, seq=16, w_bits=8)
    assert _result(a, "decode", "layers.gate").bytes_by_class["weight"] == H * F / 2


def test_compute_type_follows_operands_and_hardware():
    def ctype(hw, passes):
        a = costdsl.load(LLAMA, passes=passes).analyze(hw, batch=1, seq=16, stages=["decode"])
        return _result(a, "decode", "layers.q").compute_type
    assert ctype(A6000, ["quantize(weights=4)"]) == "fp16"           # W4A16 dequantizes
    assert ctype(A6000, ["quantize(weights=8, acts=8)"]) == "int8"   # W8A8 on int8 units
    assert ctype(A6000, ["quantize(weights=4, acts=4)"]) == "int4"   # the A6000 has INT4
    assert ctype("nvidia-h100-sxm", ["quantize(weights=4, acts=4)"]) == "int8"  # H100 has not


def test_dequant_counts_a_multiply_per_weight_on_the_vector_units():
    # decode, batch 1: q does 2 x 4096^2 matrix operations; dequantizing adds one multiply per
    # weight read (4096^2), two with zero points.
    base = _op(costdsl.load(LLAMA), "decode", "layers.q")
    for extra, text in ((1, "quantize(weights=4, group=128, dequant=1)"),
                        (2, "quantize(weights=4, group=128, zero_bits=4, dequant=1)")):
        q = _op(costdsl.load(LLAMA, passes=[text]), "decode", "layers.q")
        assert (q.flops - base.flops).subs(S.batch, 1) == extra * H * H
        assert q.vector_flops == extra * H * H
    a = costdsl.load(LLAMA, passes=["quantize(weights=4, group=128, dequant=1)"]).analyze(
        A6000, batch=1, seq=16, stages=["decode"])
    q = _result(a, "decode", "layers.q")
    # compute time: 2 x 4096^2 at fp16 154.8 T + 4096^2 at fp32 38.7 T; still memory-bound
    assert q.bound == "memory"


def test_survey_quantization_cases_on_llama_2_7b_a6000_decode():
    def q(batch, passes):
        a = costdsl.load(LLAMA, passes=passes).analyze(A6000, batch=batch, seq=2048,
                                                      stages=["decode"])
        return _result(a, "decode", "layers.q")
    # 1. memory-bound op: W8 halves the weight bytes and the time follows the bytes.
    #    batch 1: W16 33,554,432 + 16,384 bytes; W8 16,777,216 + 16,384 bytes.
    w16, w8 = q(1, []), q(1, ["quantize(weights=8)"])
    assert (w16.bound, w8.bound) == ("memory", "memory")
    assert w16.bytes == 33_570_816 and w8.bytes == 16_793_600
    assert w16.time_s / w8.time_s == pytest.approx(33_570_816 / 16_793_600, rel=1e-12)
    # 2. quantization moves an op to compute-bound: batch 128, intensity
    #    2*128*4096^2 / (33,554,432 + 2,097,152) = 120.5 < 201.6 at W16;
    #    / (8,388,608 + 2,097,152) = 409.6 > 201.6 at W4 (computed in fp16).
    w16, w4 = q(128, []), q(128, ["quantize(weights=4)"])
    assert w16.intensity == pytest.approx(4_294_967_296 / 35_651_584)
    assert (w16.bound, w4.bound, w4.compute_type) == ("memory", "compute", "fp16")
    # 3. already compute-bound: W4 -> W2 at batch 512 changes nothing.
    w4, w2 = q(512, ["quantize(weights=4)"]), q(512, ["quantize(weights=2)"])
    assert (w4.bound, w2.bound) == ("compute", "compute")
    assert w4.time_s == w2.time_s
    assert w2.bytes < w4.bytes


# --- fusion -------------------------------------------------------------------------------------

def test_generic_fusion_removes_intermediate_traffic():
    # gate, up and swiglu fused (decode, batch b): the gate and up outputs (b x 11008 each) are
    # neither written nor read back: 4 x 11008 x b elements; the shared input x (b x 4096) is
    # read once instead of twice. At 16 bits: (4 x 11008 + 4096) x 2 = 96,256 bytes at b = 1.
    names = ["layers.gate", "layers.up", "layers.act"]
    base = costdsl.load(LLAMA)
    fused = costdsl.load(LLAMA, passes=['fuse(ops="layers.gate,layers.up,layers.act")'])
    f = _op(fused, "decode", "layers[gate+up+act]")
    members = [_op(base, "decode", n) for n in names]
    saved = sum(m.bytes for m in members) - f.bytes
    assert sympy.simplify(saved.subs({S.batch: 1, S.a_bits: 16, S.w_bits: 16})) == 96_256
    assert sympy.simplify(f.flops - sum(m.flops for m in members)) == 0
    assert f.vector_flops == members[2].flops  # the SwiGLU runs on the vector units
    assert f.fused_from == tuple(names) and f.kind == "fused"
    assert fused.params() == base.params() == 6_738_415_616


@pytest.mark.parametrize("ops, blocker", [
    ("layers.attn_norm,layers.q", "layers.k"),        # its output is also read by k
    ("layers.q,layers.attn.qk", "layers.q_rot"),      # rope runs between them
    ("layers.out,final_norm", "final_norm"),          # 32 occurrences against 1
])
def test_illegal_fusions_name_the_op_that_blocks_them(ops, blocker):
    with pytest.raises(PassError, match=f"'{blocker}'") as err:
        costdsl.load(LLAMA, passes=[f'fuse(ops="{ops}")']).graph("decode")
    assert err.value.line == 1 and err.value.file == "--pass[1]"


def test_fusion_of_differently_quantized_ops_is_refused():
    text = 'quantize(weights=4, ops="layers.q"); fuse(ops="layers.q,layers.k,layers.v")'
    with pytest.raises(PassError, match="different bitwidths"):
        costdsl.load(LLAMA, passes=[text]).graph("decode")


def test_named_fusions_and_markers():
    m = costdsl.load(LLAMA, passes=["fuse_all()"])
    names = [n.name for n in nodes(m.graph("decode"))]
    assert names == ["embed", "layers[attn_norm+q+k+v]", "layers.q_rot", "layers.k_rot",
                     "layers.attn[qk+softmax+sv]", "layers[o+h]", "layers[mlp_norm+gate+up+act]",
                     "layers[down+out]", "[final_norm+lm_head]"]
    qkv = _op(m, "decode", "layers[attn_norm+q+k+v]")
    assert qkv.outputs == ("layers.q", "layers.k", "layers.v")


@pytest.mark.parametrize("arch", sorted(p.name for p in MODELS.glob("*.arch")))
def test_every_pass_keeps_every_shipped_graph_valid(arch):
    base = costdsl.load(MODELS / arch)
    for name in ("fuse_qkv()", "flash_attention()", "fuse_linear_act()", "fuse_norm_linear()",
                 "fuse_residual()", "quantize(weights=4, group=128, kv=8)"):
        if name == "flash_attention()" and not any(
                n.kind == "qk_matmul" for n in nodes(base.graph("decode"))):
            continue
        m = costdsl.load(MODELS / arch, passes=[name, "fuse_all()"])
        for stage in ("prefill", "decode"):
            check(m.graph(stage))
        assert m.params() == base.params()
        assert m.active_params() == base.active_params()
        if not base.design.free:  # a family file leaves its dimensions free
            m.analyze("nvidia-h100-sxm", batch=4, seq=512)


def test_fusion_saves_in_decode_exactly_its_bytes_and_less_in_prefill():
    # The survey's observation on Llama-2-7b (A6000, batch 1, seq 2048): in decode every op is
    # memory-bound before and after fusing, so the time saved is the bytes saved / bandwidth;
    # in prefill the big linears are compute-bound and the relative time gain is smaller than
    # the relative byte reduction.
    c = costdsl.load(LLAMA, passes=["fuse_all()"]).compare(A6000, batch=1, seq=2048)
    d = c.stages["decode"]
    assert all(o.bound == "memory" for o in d.before.ops + d.after.ops)
    saved_bytes = d.before.total.bytes - d.after.total.bytes
    saved_time = d.before.total.time_s - d.after.total.time_s
    assert saved_bytes > 0
    assert saved_time == pytest.approx(saved_bytes / 768e9, rel=1e-9)
    p = c.stages["prefill"]
    byte_gain = 1 - p.after.total.bytes / p.before.total.bytes
    time_gain = 1 - p.after.total.time_s / p.before.total.time_s
    assert 0 < time_gain < byte_gain


# --- FlashAttention -----------------------------------------------------------------------------

def test_flash_attention_prefill_traffic_follows_the_sram(tmp_path):
    # The FlashAttention paper's IO count, which assumes no cache between HBM and the blocks'
    # SRAM: the A6000 file without its L2 figure. M = 99 KiB = 101,376 bytes; Br = 8 M / (2 d (16 + 16)) = 99 rows. Llama-2-7b
    # prefill, b = 1, N = 2048, g = 1: K and V are read N / Br times. Without the causal skip
    # (causal=0) every query attends all N positions:
    #   K, V: 2 x 32 x 2048 x 128 x 2 bytes x 2048/99 = 68,719,476,736 / 99
    #   Q, O: 2 x 32 x 2048 x 128 x 2 bytes = 33,554,432
    # operations: 4 x 32 x 2048^2 x 128 + 5 x 32 x 2048^2 = 69,390,565,376
    # With it (the default) a query attends (N + 1) / 2 = 1024.5 positions on average: the
    # scores and K/V passes scale by 1024.5 / 2048 (34,376,515,584 / 99 bytes and
    # 517 x 32 x 2048 x 1024.5 = 34,712,223,744 operations); Q and O are unchanged.
    for causal, kv, flops in ((0, 68_719_476_736, 69_390_565_376),
                              (1, 34_376_515_584, 34_712_223_744)):
        a = costdsl.load(LLAMA, passes=[f"flash_attention(causal={causal})"]).analyze(
            _a6000_with(tmp_path, 'sram_per_block = "99 KiB"', l2=False), batch=1, seq=2048)
        fa = _result(a, "prefill", "layers.attn[qk+softmax+sv]")
        assert fa.bytes_by_class["kv"] == pytest.approx(kv / 99, rel=1e-12)
        assert fa.bytes_by_class["act"] == 33_554_432
        assert fa.flops == flops
        assert fa.compute_type == "fp16"


def test_causal_flash_attention_of_a_chunk_over_a_cache(tmp_path):
    # step: 512 new tokens over 1,536 cached, Llama-2-7b, block 128: each new token attends the
    # cache and (512 + 1) / 2 = 256.5 new positions on average, 1,792.5 in all (2,048 without
    # the skip); K and V are read 512 / 128 = 4 times: 2 x 32 x 1792.5 x 128 x 2 x 4 bytes
    # without an L2 to serve the re-reads. The H100's 50 MiB hold one head's 1792.5 x 256 x 2 =
    # 917,760 bytes: the first pass alone reaches HBM.
    m = costdsl.load(LLAMA, passes=["flash_attention(block=128)"])
    no_l2 = _a6000_with(tmp_path, 'sram_per_block = "128 KiB"', l2=False)
    for hw, passes in ((no_l2, 4), ("nvidia-h100-sxm", 1)):
        a = m.analyze(hw, batch=1, seq=1536, tokens=512, stages=["step"])
        fa = _result(a, "step", "layers.attn[qk+softmax+sv]")
        assert fa.bytes_by_class["kv"] == 2 * 32 * 1792.5 * 128 * 2 * passes, hw
        assert fa.flops == (4 * 128 + 5) * 32 * 512 * 1792.5


def test_flash_attention_re_reads_come_from_the_l2_while_a_head_fits():
    """The A6000's L2 is 6 MiB = 6,291,456 bytes (GA102 whitepaper). One KV head of Llama-2-7b
    (d = 128, fp16 K and V) holds 512 bytes per position; a causal prefill of N tokens attends
    (N + 1) / 2 on average: 256 (N + 1) bytes, which fit up to N = 24,575. There K and V reach
    HBM once: 2 x 32 x 12,288 x 128 x 2 bytes; one token more and every one of the N / Br =
    24,576 / 99 passes does (Br = 99 rows in 99 KiB), the paper's count. The stage time in seq
    breaks at that size: a breakpoint of its Piecewise."""
    m = costdsl.load(LLAMA, passes=["flash_attention()"])
    kv = [_result(m.analyze(A6000, batch=1, seq=n, stages=["prefill"]), "prefill",
                  "layers.attn[qk+softmax+sv]").bytes_by_class["kv"] for n in (24_575, 24_576)]
    assert kv[0] == 2 * 32 * 12_288 * 128 * 2
    assert kv[1] == pytest.approx(2 * 32 * 12_288.5 * 128 * 2 * 24_576 / 99, rel=1e-12)
    op = next(o for o in m.roofline(load_hardware(A6000), "prefill").ops
              if o.node.name == "layers.attn[qk+softmax+sv]")
    nbytes = op.bytes.subs({costdsl.symbols.batch: 1, costdsl.symbols.kv_bits: 16,
                            costdsl.symbols.a_bits: 16})
    # 99: where a prefill first needs two blocks of query rows; 24,575.5: where a head stops
    # fitting (the condition holds at seq = 24,575 and not at 24,576: a whole seq switches
    # half-way between them, so the piece `seq < 24575.5` holds 24,575)
    assert sorted(minmax_breakpoints(nbytes, costdsl.symbols.seq)) == [
        pytest.approx(99), pytest.approx(24_575.5)]
    assert resolve_minmax(nbytes, costdsl.symbols.seq, 100).is_polynomial(costdsl.symbols.seq)


def _a6000_with(tmp_path, sram_line: str, l2: bool = True) -> str:
    """The A6000 file with its sram_per_block line replaced (or removed, with ""), and without
    its L2 figure when `l2` is false."""
    hw = (MODELS.parent / "hardware" / "nvidia-a6000.toml").read_text()
    if not l2:
        hw = "\n".join(line for line in hw.splitlines() if not line.startswith("l2 "))
    path = tmp_path / f"a6000-{abs(hash((sram_line, l2)))}.toml"
    path.write_text(hw.replace('sram_per_block = "99 KiB"', sram_line))
    return str(path)


def test_flash_attention_io_is_inverse_in_sram(tmp_path):
    # Theta(N^2 d^2 / M): doubling the on-chip memory per block halves the K/V traffic.
    # (the paper's model: no L2 between HBM and the blocks)
    small = _a6000_with(tmp_path, 'sram_per_block = "64 KiB"', l2=False)
    large = _a6000_with(tmp_path, 'sram_per_block = "128 KiB"', l2=False)
    m = costdsl.load(LLAMA, passes=["flash_attention()"])
    kv = [_result(m.analyze(h, batch=1, seq=4096, stages=["prefill"]), "prefill",
                  "layers.attn[qk+softmax+sv]").bytes_by_class["kv"] for h in (small, large)]
    assert kv[0] / kv[1] == pytest.approx(2, rel=1e-12)


def test_flash_attention_with_a_given_block_size(tmp_path):
    # block=128 (FlashAttention-2's tile for d = 128): K and V are read 2048 / 128 = 16 times
    # in prefill, over the (2048 + 1) / 2 positions a causal query attends:
    # 2 x 32 x 1024.5 x 128 x 2 bytes x 16 = 268,566,528 bytes, on any hardware without an L2
    # whose blocks hold 128 rows: 128 x 2 x 128 x 32 / 8 = 128 KiB. The A6000's 99 KiB do not.
    m = costdsl.load(LLAMA, passes=["flash_attention(block=128)"])
    a = m.analyze(_a6000_with(tmp_path, 'sram_per_block = "128 KiB"', l2=False), batch=1,
                  seq=2048, stages=["prefill"])
    fa = _result(a, "prefill", "layers.attn[qk+softmax+sv]")
    assert fa.bytes_by_class["kv"] == 268_566_528
    with pytest.raises(NotApplicableError, match="needs 128 KiB.*has 99 KiB"):
        m.analyze(A6000, batch=1, seq=2048)


def test_flash_attention_decode_reads_the_cache_once():
    # decode: the unfused QK^T reads K and xV reads V, the whole cache once; the fused kernel
    # reads the same KV bytes and no score matrix: 2 x 32 x 2049 x 128 x 2 = 33,570,816 bytes.
    base = costdsl.load(LLAMA).analyze(A6000, batch=1, seq=2048, stages=["decode"])
    fa = costdsl.load(LLAMA, passes=["flash_attention()"]).analyze(A6000, batch=1, seq=2048,
                                                                   stages=["decode"])
    fused = _result(fa, "decode", "layers.attn[qk+softmax+sv]")
    unfused_kv = sum(_result(base, "decode", n).bytes_by_class["kv"]
                     for n in ("layers.attn.qk", "layers.attn.sv"))
    assert fused.bytes_by_class["kv"] == unfused_kv == 33_570_816
    assert fused.bytes_by_class["act"] == 2 * 32 * 128 * 2


def test_flash_attention_is_not_applicable_without_enough_sram(tmp_path):
    # a 16-row block of d = 128 at 16 bits needs 16 x 2 x 128 x 32 / 8 = 16 KiB
    tiny = _a6000_with(tmp_path, 'sram_per_block = "8 KiB"')
    none = _a6000_with(tmp_path, "")
    m = costdsl.load(LLAMA, passes=["flash_attention()"])
    with pytest.raises(NotApplicableError, match="needs 16 KiB.*has 8 KiB"):
        m.analyze(tiny, batch=1, seq=128)
    with pytest.raises(NotApplicableError, match="sram_per_block"):
        m.analyze(none, batch=1, seq=128)
    m.analyze(tiny, batch=1, seq=128, kv_bits=4, a_bits=4)  # 4 KiB: fits


# --- the language and the command line ---------------------------------------------------------

def test_passes_declared_in_a_file_run_base_first_then_the_command_line():
    text = """
import "llama-2-7b.arch"
model "w4" extends "Llama-2-7b" { passes { quantize(weights=4, group=128) } }
model "w4-fa" extends "w4" { passes { flash_attention(); fuse_qkv() } }
"""
    m = costdsl.load(MODELS / "deploy.arch", text=text, passes=["fuse_residual()"])
    graph = m.graph("decode")
    assert graph.graph["passes"] == ["quantize(weights=4, group=128)", "flash_attention()",
                                     "fuse_qkv()", "fuse_residual()"]
    a = m.analyze(A6000, batch=1, seq=128)
    assert a.passes == tuple(graph.graph["passes"])
    assert m.without_passes().graph("decode").graph["passes"] == []


@pytest.mark.parametrize("text, message", [
    ("quantize()", "sets nothing"),
    ("quantize(weights=0)", r"bitwidth must be in \[1, 64\]"),
    ("quantize(weights=0.5)", r"bitwidth must be in \[1, 64\]"),
    ('quantize(weights="4")', "takes a number"),
    ("quantize(weights=4, group=0)", "positive integer"),
    ("quantize(weights=4, bits=3)", "no argument 'bits'"),
    ("flash_atention()", "did you mean 'flash_attention'"),
    ('quantize(weights=4, ops="layers.qq")', "matches no op"),
    ("quantize(weights=4, dequant=1)", "give group="),
])
def test_bad_passes_get_clear_errors(text, message, capsys):
    assert main(["analyze", str(LLAMA), "--hw", A6000, "--pass", text]) == 2
    err = capsys.readouterr().err
    assert "--pass[1]:1:" in err and "pass error" in err
    assert __import__("re").search(message, err), err
    assert "Traceback" not in err


def test_cli_compare_lists_bound_changes(capsys):
    assert main(["compare", str(LLAMA), "--hw", A6000, "--batch", "128", "--stage", "decode",
                 "--pass", "quantize(weights=4)", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    changes = {o["name"]: o for o in out["stages"]["decode"]["ops"] if o["changed_bound"]}
    assert changes["layers.q"]["bound_before"] == ["memory"]
    assert changes["layers.q"]["bound_after"] == "compute"
    assert out["stages"]["decode"]["speedup"] > 1
    assert out["passes"] == ["quantize(weights=4)"]
    assert main(["compare", str(LLAMA), "--hw", A6000, "--pass", "fuse_all()"]) == 0
    text = capsys.readouterr().out
    # 20 ops per stage before (Llama layer of 17 ops, embedding, final norm, head), 9 after
    assert len(__import__("re").findall(r"ops\s+20 ->\s+9\n", text)) == 2
    assert "layers[mlp_norm+gate+up+act]: compute/memory -> compute" in text


def test_analyze_json_lists_passes_and_fused_ops(capsys):
    assert main(["analyze", str(LLAMA), "--hw", A6000, "--format", "json",
                 "--pass", "flash_attention()"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passes"] == ["flash_attention()"]
    fa = next(o for o in out["stages"]["decode"]["ops"] if o["kind"] == "flash_attention")
    assert fa["name"] == "layers.attn[qk+softmax+sv]"
    assert fa["fused_from"] == ["layers.attn.qk", "layers.attn.softmax", "layers.attn.sv"]


def test_passes_command_lists_every_registered_pass(capsys):
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name in PASSES:
        assert f"\n{name}(" in "\n" + out


def test_crossover_runs_on_a_fused_graph():
    m = costdsl.load(LLAMA, passes=["fuse_all()"])
    answer = m.crossover("batch", A6000, "decode", seq=2048)
    by_op = {c.op: c for c in answer.ops}
    # the fused MLP up-projection turns compute-bound in decode: operations 4 b h F + 5 b F
    # (SwiGLU at the fp32 rate) against weight bytes 4 h F plus activations
    mlp = by_op["layers[mlp_norm+gate+up+act]"]
    assert mlp.value is not None and 150 < mlp.value < 260
    assert by_op["layers.attn[qk+softmax+sv]"].value is None  # intensity independent of batch


# --- passes on a small graph, by hand ------------------------------------------------------------

TINY = """
model "tiny" {
  params { hidden = 4  ffn = 8  vocab = 6 }
  emb  = embedding(tokens, vocab=vocab, dim=hidden)
  up   = linear(emb, out=ffn)
  act  = gelu(up)
  down = linear(act, out=hidden)
  out  = add(emb, down)
}
"""


def test_fusion_on_a_tiny_graph_by_hand(write_arch):
    # decode, batch b: up writes b x 8 and gelu reads it back; fused, neither happens:
    # 16 b elements fewer; the fused op does 2 b 4 8 + 9 b 8 operations, 9 b 8 on the vectors.
    path = write_arch(TINY)
    base = costdsl.load(path).graph("decode")
    fused = costdsl.load(path, passes=["fuse_linear_act()"]).graph("decode")
    assert [n.name for n in nodes(fused)] == ["emb", "[up+act]", "down", "out"]
    f = fused.nodes["[up+act]"]["op"]
    b = S.batch
    assert sympy.expand(f.flops - (2 * b * 4 * 8 + 9 * b * 8)) == 0
    assert sympy.expand(f.vector_flops - 9 * b * 8) == 0
    elements = lambda n: sum(a.elements for a in n.reads + n.writes if a.cls == "act")
    before = elements(base.nodes["up"]["op"]) + elements(base.nodes["act"]["op"])
    assert sympy.expand(before - elements(f) - 16 * b) == 0
    assert f.params == 32 and check(fused) is fused


def test_quantize_and_residual_fusion_on_a_tiny_graph(write_arch):
    # quantize(weights=4, ops="up") halves up's weight bits only; fuse_residual merges down into
    # the add: the down result (b x 4) is neither written nor read: 8 b elements fewer.
    path = write_arch(TINY)
    g = costdsl.load(path, passes=['quantize(weights=4, ops="up")', "fuse_residual()"]).graph(
        "decode")
    assert g.nodes["up"]["op"].bits["weight"] == 4
    assert g.nodes["[down+out]"]["op"].bits["weight"] == S.w_bits
    base = costdsl.load(path).graph("decode")
    elements = lambda n: sum(a.elements for a in n.reads + n.writes if a.cls == "act")
    before = elements(base.nodes["down"]["op"]) + elements(base.nodes["out"]["op"])
    assert sympy.expand(before - elements(g.nodes["[down+out]"]["op"]) - 8 * S.batch) == 0


def test_fuse_qkv_alone_finds_v_through_the_softmax():
    """Without flash_attention, xV is two ops past QK^T (the softmax between): v is still one of
    the three projections fused."""
    m = costdsl.load(MODELS / "llama-2-7b.arch", passes=["fuse_qkv()"])
    names = [n.name for n in nodes(m.graph("decode"))]
    assert "layers[q+k+v]" in names and "layers.v" not in names


# --- the kernels the serving stacks run (fuse_serving) -------------------------------------------

def test_fuse_serving_gives_the_stacks_kernels():
    """vLLM's decoder layer: the residual add that closed the previous layer fused into this
    layer's input RMSNorm, one QKV GEMM, one rotary kernel for q and k, FlashAttention, the
    output GEMM, the residual add fused into the MLP's RMSNorm, one gate_up GEMM, the SwiGLU,
    the down GEMM; the last layer's closing add fused into the final norm (vLLM's
    LlamaModel: `self.norm(hidden_states, residual)`)."""
    m = costdsl.load(LLAMA, passes=["fuse_serving()"])
    assert [n.name for n in nodes(m.graph("decode")) if n.name.startswith("layers")] == [
        "layers[out+attn_norm]", "layers[q+k+v]", "layers[q_rot+k_rot]",
        "layers.attn[qk+softmax+sv]", "layers.o", "layers[h+mlp_norm]", "layers[gate+up]",
        "layers.act", "layers.down"]
    assert "[layers.out+final_norm]" in m.graph("decode")
    assert check(m.graph("prefill")) and check(m.graph("decode"))


def test_the_layer_loop_runs_two_norm_kernels_a_layer():
    """Llama-2-7B decode at batch 1 (H = 4,096, fp16, 32 layers), by hand. Unfused, a layer
    runs its input norm (reads x and the gain, writes n: 3 H elements), the add after
    attention (x, o -> h: 3 H), the MLP norm (3 H) and the closing add (h, down -> out: 3 H),
    and the final norm 3 H once: 32 x 12 H + 3 H in 4 x 32 + 1 kernels. Fused, the add after
    attention and the MLP norm are one kernel (x, o, gain -> h, n: 5 H); rotated, the input norm also adds the previous layer's
    down output and writes the sum (5 H) and the closing add is gone; the last one is in the
    final norm (h, down, gain -> normed; the sum read by nothing else: 4 H): 32 x 10 H + 4 H,
    and 2 x 32 + 1 kernels for 3 x 32 + 1. The first layer's norm has no add before it: its
    extra read and write (2 H) is the price of drawing the layer once."""
    def norm_and_add(model):
        ops = [n for n in nodes(model.graph("decode"))
               if {"add", "rmsnorm"} & set(n.attrs.get("kinds", (n.kind,)))]
        elements = sum(n.repeat * sum(_bytes_at(n, batch=1, a_bits=16, w_bits=16,
                                                kv_bits=16).values()) / 2 for n in ops)
        return sum(n.repeat for n in ops), elements
    assert norm_and_add(costdsl.load(LLAMA)) == (4 * 32 + 1, 32 * 12 * H + 3 * H)
    for passes in (["fuse_add_norm()"], ["fuse_serving()"]):
        assert norm_and_add(costdsl.load(LLAMA, passes=passes)) == (
            2 * 32 + 1, 32 * 10 * H + 4 * H)


def test_a_closing_add_goes_to_the_next_kind_of_layer():
    """DeepSeek-V2-Lite: one dense layer, then 26 MoE layers. The dense layer's closing add
    (its sum read by the MoE loop) merges into the first MoE layer's input norm, whose other 25
    occurrences are the MoE loop's own closing adds; the dense layer, run once, keeps its plain
    input norm (nothing before it is a sum): 1 + 26 + 1 + 26 norm kernels, each add in one."""
    m = costdsl.load(MODELS / "deepseek-v2-lite.arch", passes=["fuse_serving()"])
    g = m.graph("decode")
    kinds = {n.name: (n.attrs.get("kinds", (n.kind,)), n.repeat) for n in nodes(g)}
    assert kinds["dense.attn_norm"] == (("rmsnorm",), 1)
    assert kinds["[dense.out+layers.attn_norm]"] == (("add", "rmsnorm"), 26)
    assert kinds["[layers.out+final_norm]"] == (("add", "rmsnorm"), 1)
    assert "dense.out" not in g and "layers.out" not in g and check(g)


def test_fused_add_norm_writes_the_sum_once_and_never_reads_it_back():
    """Llama-2-7B decode at batch 1 (H = 4,096, fp16): the add reads x and o and writes h; the
    norm reads h and its gain and writes n: 6 x 8,192 bytes apart. Fused, h is still written
    (the next residual add reads it) but handed to the norm in registers: 5 x 8,192 bytes."""
    m = costdsl.load(LLAMA, passes=["fuse_add_norm()"])
    fused = _op(m, "decode", "layers[h+mlp_norm]")
    assert sum(_bytes_at(fused, batch=1, a_bits=16, w_bits=16, kv_bits=16).values()) == \
        5 * 2 * H
    assert set(fused.outputs) == {"layers.h", "layers.mlp_norm"}
    plain = costdsl.load(LLAMA)
    apart = sum(sum(_bytes_at(_op(plain, "decode", n), batch=1, a_bits=16, w_bits=16,
                              kv_bits=16).values()) for n in ("layers.h", "layers.mlp_norm"))
    assert apart == 6 * 2 * H


def test_fused_gate_up_reads_its_input_once():
    """gate and up (4,096 -> 11,008 each) as one GEMM at batch 1: 2 x 4096 x 11008 weights,
    the input once (4,096) and both outputs (2 x 11,008), in fp16; the SwiGLU stays apart."""
    m = costdsl.load(LLAMA, passes=["fuse_gate_up()"])
    fused = _op(m, "decode", "layers[gate+up]")
    assert sum(_bytes_at(fused, batch=1, a_bits=16, w_bits=16, kv_bits=16).values()) == \
        2 * (2 * H * F + H + 2 * F)
    assert "layers.act" in m.graph("decode")


def test_narrow_gemms_take_their_own_figures_fused_or_not():
    """A W8A8 linear layer on the H200 under vLLM 0.24.0 is priced by [efficiency.fp8_gemm]
    (its bandwidth and launch), fused with its residual add or not; a bf16 one by the
    top-level figures. (Prefill: a decode iteration runs as a CUDA graph, its kernels at the
    file's framework graph_launch: tests/test_framework.py.)"""
    hw = load_hardware("nvidia-h200")
    fp8 = hw.efficiency.kinds["fp8_gemm"]
    for passes in ([], ["fuse_residual()"]):
        m = costdsl.load(LLAMA, passes=["quantize(weights=8, acts=8)"] + passes)
        roof = {o.node.name: o for o in m.roofline(hw, "prefill").ops}
        o = roof["layers[o+h]" if passes else "layers.o"]
        assert o.compute_type == "fp8" and o.launch == fp8.launch_s
        assert o.bandwidth == pytest.approx(fp8.bandwidth * hw.bandwidth_Bps)
    plain = {o.node.name: o for o in costdsl.load(LLAMA).roofline(hw, "prefill").ops}
    assert plain["layers.o"].launch == hw.efficiency.launch_s
