"""Convert the public measurements in ../shared/measured/ to costdsl's measurement CSV schema.

    python bench/convert_measured.py [SHARED_MEASURED_DIR] [OUT_DIR]

Writes, under tests/data/measured/ by default:
- vidur-linear-a100.csv, vidur-linear-h100.csv: vidur's per-layer kernel times of Llama-2-7B and
  Llama-2-70B at tensor parallelism 1 (microsoft/vidur @ 7d47513363ec447a741ac5e47241580b47724fbf,
  data/profiling/compute/{a100,h100}/meta-llama/Llama-2-{7b,70b}-hf/mlp.csv), against the
  batch's total tokens T = 1..4096: modelled as a prefill of batch 1 and seq T (a linear layer,
  norm or activation sees T rows either way). vidur does not name the SKU; the A100 rows are
  matched to nvidia-a100-80gb and the H100 rows to nvidia-h100-sxm.
- vidur-linear-tp-a100.csv, vidur-linear-tp-h100.csv: the same at tensor parallelism 2, 4 and 8,
  one GPU's kernels (llama-2-*-vidur-tpN.arch: the tensor_parallel pass, then vidur's fusions):
  shapes the calibration never sees, validated on the DGX system files.
- vidur-decode-layer-a100.csv: a decoder layer of Llama-2-70B at TP 2 in decode (batch 1-128 x
  cache 32-4096), assembled from the two vidur files above: the layer's kernels at b tokens and
  the attention decode kernel at (b, s); summed per (b, s) by `validate`.
- vidur-attention-a100.csv: vidur's FlashAttention times for Llama-2-70B's per-GPU geometry at
  TP 2 (microsoft/vidur @ e2d00e9afba96cec9f0e7ea560bbfc4a539fae6a, data/profiling/a100/
  attention.csv): decode (batch x KV length) and prefill chunks over a cache (the step stage).
- aiconfigurator-gemm-{a100,h100}.csv: GEMM times for nine LLM shapes (ai-dynamo/aiconfigurator
  @ 095f58a51c4ca8e61b66ec108d86f223f8d559ce, systems/data/<system>/gemm), bf16, as one linear
  layer of the matching gemm-NxK.arch model.
- aiconfigurator-attention-{a100,h100}.csv: the same source's attention kernels (vLLM 0.14 on the
  A100, 0.19 on the H100; systems/data/<system>/attention): decode ("generation", batch 1-256 x
  KV length 128-32768; bf16 KV, and fp8 KV on the H100 as kv_bits 8) and prefill ("context",
  batch 1-16 x 128-16384 tokens) for five per-GPU head layouts (query x KV heads 32x8, 64x8,
  8x1, 16x2, 32x4; head_dim 128), each as the FlashAttention op of an attention/attn-HxKV.arch
  model. Its kv_len is the context including the new token: the decode stage's seq is
  kv_len - 1.
- llmcompass-a100.csv: a third software stack, PyTorch eager timed by wall clock
  (PrincetonUniversity/LLMCompass @ 2e015fd2ee750e6cad8d7152df52551e5b41ef20,
  ae/figure5/*/real_hardware/*.csv; A100 80GB): its fp16 matmul sweeps (M = 64-32768 at
  K = N = 12288, and M = 8192 at K = N = 64-32768) as gemm/gemm-NxK.arch models, and one layer
  of GPT-3 175B on one of four A100s at tensor parallelism 4 (gpt-3-175b-tp4.arch), op by op:
  prefill of 8 x 2048 tokens with its two measured all-reduces, and decode of batch 8 over 3,072
  cached tokens without them (the source enters its decode all-reduces by hand: not measured).
  Validation only, on the DGX A100 file: it is neither stack the shipped A100 file was fitted on.

Only numbers are taken; the times are milliseconds in the sources and seconds here.
"""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = ["hardware", "model", "stage", "batch", "seq", "tokens", "w_bits", "a_bits", "kv_bits",
           "op", "time_s", "source", "stack"]

VIDUR_OPS = {  # vidur's op -> the op of the *-vidur.arch model
    "emb": "embed", "input_layernorm": "layers.attn_norm", "attn_pre_proj": "layers[q+k+v]",
    "attn_rope": "layers[q_rot+k_rot]", "attn_post_proj": "layers.o",
    "post_attention_layernorm": "layers.mlp_norm", "mlp_up_proj": "layers[gate+up]",
    "mlp_act": "layers.act", "mlp_down_proj": "layers.down", "add": "layers.h"}
HARDWARE = {"a100": "nvidia-a100-80gb", "h100": "nvidia-h100-sxm"}


def row(hw, model, stage, batch, seq, op, ms, source, tokens="", stack=""):
    """One measurement row; `stack` the serving stack and version whose kernel it timed
    ("trtllm 1.3.0rc20"; empty where the source is no stack)."""
    return {"hardware": hw, "model": model, "stage": stage, "batch": batch, "seq": seq,
            "tokens": tokens, "w_bits": 16, "a_bits": 16, "kv_bits": 16, "op": op,
            "time_s": f"{ms / 1e3:.6g}", "source": source, "stack": stack}


def vidur_linear(shared: Path, out_dir: Path) -> dict[str, list[dict]]:
    """By file: vidur-linear-<device> (tensor parallelism 1: the calibration data) and
    vidur-linear-tp-<device> (2, 4 and 8: per-GPU shapes the calibration never sees, for
    validation on a system file, through the tensor_parallel pass)."""
    data = json.loads((shared / "vidur_linear_ops_per_layer.json").read_text())
    out: dict[str, list[dict]] = {}
    for table in data["tables"]:
        size = "7b" if "7b" in table["model"] else "70b"
        source = f"vidur {data['source']['commit'][:7]} {table['path']}"
        for r in table["rows"]:
            tp = r["tp"]
            model = f"llama-2-{size}-vidur.arch" if tp == 1 else f"llama-2-{size}-vidur-tp{tp}.arch"
            if tp != 1:
                _tp_model(out_dir / model, size, tp)
            name = f"vidur-linear-{table['device']}" if tp == 1 else \
                f"vidur-linear-tp-{table['device']}"
            for op, node in VIDUR_OPS.items():
                if r.get(op):
                    out.setdefault(name, []).append(
                        row(HARDWARE[table["device"]], model, "prefill", 1, r["num_tokens"],
                            node, r[op], source))
    return out


def _tp_model(path: Path, size: str, tp: int) -> None:
    """Llama-2 as vidur profiles it on one of `tp` GPUs: the split before vidur's fusions (the
    tensor_parallel pass splits unfused linears)."""
    path.write_text(
        f"# One GPU of Llama-2-{size} under tensor parallelism {tp} as vidur profiled its kernels\n"
        f"# (see llama-2-{size}-vidur.arch): the split comes first, then vidur's fused kernels.\n"
        f'import "llama-2-{size}.arch"\n\n'
        f'model "Llama-2-{size}-vidur-tp{tp}" extends "Llama-2-{size}" {{\n  passes {{\n'
        f"    tensor_parallel(n={tp})\n    fuse_qkv()\n"
        f'    fuse(ops="layers.gate,layers.up")\n    fuse(ops="layers.q_rot,layers.k_rot")\n'
        f"  }}\n}}\n")


def vidur_attention(shared: Path) -> list[dict]:
    path = shared / "vidur_attention_llama2_70b_tp2_a100_full.csv"
    meta = json.loads((shared / "vidur_attention_llama2_70b_tp2_a100.json").read_text())
    source = f"vidur {meta['source']['commit'][:7]} {meta['source']['path']}"
    model, op = "llama-2-70b-tp2-attention.arch", "layers.attn[qk+softmax+sv]"
    rows = []
    with path.open() as f:
        for r in csv.DictReader(f):
            batch, cached = int(r["batch_size"]), int(r["kv_cache_size"])
            if r["is_prefill"] == "False":
                ms = float(r["attn_decode_median_ms"])
                if batch in (1, 2, 4, 8, 16, 32, 64, 128) and cached >= 32 and \
                        cached & (cached - 1) == 0:
                    rows.append(row("nvidia-a100-80gb", model, "decode", batch, cached, op, ms,
                                    source))
                continue
            chunk = int(r["prefill_chunk_size"])
            if batch != 1 or chunk & (chunk - 1) or chunk < 64 or (cached and cached % 512):
                continue  # a grid of powers of two keeps the file small
            ms = float(r["attn_prefill_median_ms"])
            if cached == 0:
                rows.append(row("nvidia-a100-80gb", model, "prefill", 1, chunk, op, ms, source))
            else:
                rows.append(row("nvidia-a100-80gb", model, "step", 1, cached, op, ms, source,
                                tokens=chunk))
    return rows


def vidur_decode_layer(shared: Path, out_dir: Path) -> list[dict]:
    """One decoder layer of Llama-2-70B on one of two A100s at decode batch b over a cache of s
    tokens, assembled from vidur's kernels: the TP 2 layer kernels at b tokens (a GEMM, norm or
    activation sees b rows in decode as in a prefill of b) and the FlashAttention decode kernel
    at (b, s) of the same geometry. Its sum per (b, s) is the layer's kernel time: the closest
    to a whole decode step these sources give (no all-reduce, no gaps between kernels)."""
    model = "llama-2-70b-vidur-tp2-layer.arch"
    (out_dir / model).write_text(
        "# One GPU of Llama-2-70B under tensor parallelism 2, vidur's fused kernels and\n"
        "# FlashAttention: the layer that vidur-decode-layer-a100.csv times kernel by kernel.\n"
        'import "llama-2-70b.arch"\n\n'
        'model "Llama-2-70b-vidur-tp2-layer" extends "Llama-2-70b" {\n  passes {\n'
        "    tensor_parallel(n=2)\n    fuse_qkv()\n"
        '    fuse(ops="layers.gate,layers.up")\n    fuse(ops="layers.q_rot,layers.k_rot")\n'
        "    flash_attention(block=128)\n  }\n}\n")
    data = json.loads((shared / "vidur_linear_ops_per_layer.json").read_text())
    table = next(t for t in data["tables"] if t["device"] == "a100" and "70b" in t["model"])
    layer = {r["num_tokens"]: r for r in table["rows"] if r["tp"] == 2}
    linear_source = f"vidur {data['source']['commit'][:7]} {table['path']}"
    meta = json.loads((shared / "vidur_attention_llama2_70b_tp2_a100.json").read_text())
    attention_source = f"vidur {meta['source']['commit'][:7]} {meta['source']['path']}"
    rows = []
    with (shared / "vidur_attention_llama2_70b_tp2_a100_full.csv").open() as f:
        for r in csv.DictReader(f):
            batch, cached = int(r["batch_size"]), int(r["kv_cache_size"])
            if r["is_prefill"] != "False" or batch not in layer or cached < 32 or \
                    cached & (cached - 1):
                continue
            for op, node in VIDUR_OPS.items():
                if op != "emb" and layer[batch].get(op):
                    rows.append(row("nvidia-a100-80gb", model, "decode", batch, cached, node,
                                    layer[batch][op], linear_source))
            rows.append(row("nvidia-a100-80gb", model, "decode", batch, cached, ATTENTION_OP,
                            float(r["attn_decode_median_ms"]), attention_source))
    return rows


def aiconfigurator_gemm(shared: Path, out_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for system, hw in (("a100_sxm", "nvidia-a100-80gb"), ("h100_sxm", "nvidia-h100-sxm")):
        data = json.loads((shared / "aiconfigurator" / f"{system}.json").read_text())
        source = f"aiconfigurator {data['source']['commit'][:7]} {data['source']['paths']['gemm']}"
        for g in data["tables"]["gemm"]:
            if g["dtype"] != "bfloat16":
                continue
            out.setdefault(system[:4], []).append(
                _gemm_row(out_dir, hw, g["m"], g["n"], g["k"], g["latency_ms"], source))
    return out


ATTENTION_OP = "layers.attn[qk+softmax+sv]"


def aiconfigurator_attention(shared: Path, out_dir: Path) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for system, hw in (("a100_sxm", "nvidia-a100-80gb"), ("h100_sxm", "nvidia-h100-sxm")):
        data = json.loads((shared / "aiconfigurator" / f"{system}.json").read_text())
        rows = out.setdefault(system[:4], [])
        for table, stage in (("generation_attention", "decode"), ("context_attention", "prefill")):
            source = (f"aiconfigurator {data['source']['commit'][:7]} "
                      f"{data['source']['paths'][table]}")
            for a in data["tables"][table]:
                model = f"attention/attn-{a['num_heads']}x{a['num_kv_heads']}.arch"
                _attention_model(out_dir / model, a["num_heads"], a["num_kv_heads"],
                                 a["head_dim"])
                if stage == "decode":
                    r = row(hw, model, stage, a["batch_size"], a["kv_len"] - 1, ATTENTION_OP,
                            a["latency_ms"], source)
                    r["kv_bits"] = {"bfloat16": 16, "fp8": 8}[a["kv_cache_dtype"]]
                else:
                    r = row(hw, model, stage, a["batch_size"], a["isl"], ATTENTION_OP,
                            a["latency_ms"], source)
                rows.append(r)
    return out


ATTENTION_BASE = ("../llama-2-70b-tp2-attention.arch", "Llama-2-70b-tp2-attention")
"""(file, model) the attention models extend: one GPU's Llama-2-70B attention layer."""


def _attention_model(path: Path, heads: int, kv_heads: int, head_dim: int,
                     base: tuple[str, str] = ATTENTION_BASE) -> None:
    """attn-HxK[-tile64].arch: the (file, model) `base` with this head layout."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name.removesuffix(".arch")
    path.write_text(
        f"# One GPU's attention with {heads} query and {kv_heads} KV heads of {head_dim}, as\n"
        f"# aiconfigurator times it (vLLM's FlashAttention kernels). Only the attention op is\n"
        f"# measured; the rest of the layer is here to make a model.\n"
        f'import "{base[0]}"\n\n'
        f'model "{name}" extends "{base[1]}" {{\n'
        f"  params {{\n    hidden   = {heads * head_dim}\n    heads    = {heads}\n"
        f"    kv_heads = {kv_heads}\n  }}\n}}\n")


def _gemm_row(out_dir: Path, hw: str, m: int, n: int, k: int, ms: float, source: str,
              bits: int = 16, stack: str = "") -> dict:
    """C[m, n] = A[m, k] x B[k, n] as the `proj` of gemm/gemm-NxK.arch (written if new); an
    8-bit GEMM (FP8, per-tensor scales) as W8A8."""
    model = f"gemm-{n}x{k}.arch"
    _gemm_model(out_dir / "gemm" / model, n, k)
    out = row(hw, f"gemm/{model}", "prefill", 1, m, "proj", ms, source, stack=stack)
    out["w_bits"] = out["a_bits"] = bits
    return out


def _gemm_model(path: Path, n: int, k: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# One GEMM C[m, {n}] = A[m, {k}] x B[{k}, {n}] as aiconfigurator and LLMCompass time it\n"
        f"# (m = tokens: the seq of a prefill of batch 1). Only `proj` is measured.\n"
        f'model "gemm-{n}x{k}" {{\n  params {{ k = {k}\n    n = {n} }}\n'
        f"  x    = embedding(tokens, vocab=2, dim=k)\n  proj = linear(x, out=n)\n}}\n")


LLMCOMPASS_OPS = {  # LLMCompass's op -> the op of gpt-3-175b-tp4.arch
    "LayerNorm_MHA": "layers.ln_1", "Q_K_V": "layers[q+k+v]", "Q_mul_K": "layers.attn.qk",
    "Softmax": "layers.attn.softmax", "A_mul_V": "layers.attn.sv", "Wo_proj": "layers.proj",
    "AllReduce_MHA": "layers.proj.all_reduce", "LayerNorm_FFN": "layers.ln_2",
    "W1_proj": "layers.fc", "GeLU": "layers.act", "W2_proj": "layers.mlp",
    "AllReduce_FFN": "layers.mlp.all_reduce"}
LLMCOMPASS_LAYERS = {  # table -> stage, batch, seq (decode: cached tokens), all-reduces measured
    "transformer_A100": ("prefill", 8, 2048, True),
    "transformerAR_A100": ("decode", 8, 3072, False)}


def llmcompass(shared: Path, out_dir: Path) -> list[dict]:
    data = json.loads((shared / "llmcompass_real_hw_kernels.json").read_text())
    commit = data["source"]["commit"][:7]
    hw = "nvidia-a100-80gb"
    rows = []
    matmul = data["tables"]["matmul_A100"]
    for g in matmul["rows"]:
        rows.append(_gemm_row(out_dir, hw, g["M"], g["N"], g["K"], g["latency_ms"],
                              f"llmcompass {commit} {matmul['path']}"))
    _gpt3_model(out_dir / "gpt-3-175b-tp4.arch")
    for name, (stage, batch, seq, all_reduce) in LLMCOMPASS_LAYERS.items():
        table = data["tables"][name]
        for op, node in LLMCOMPASS_OPS.items():
            if op.startswith("AllReduce") and not all_reduce:
                continue
            rows.append(row(hw, "gpt-3-175b-tp4.arch", stage, batch, seq, node,
                            1e3 * table["per_op_seconds"][op],
                            f"llmcompass {commit} {table['path']}"))
    return rows


def _gpt3_model(path: Path) -> None:
    path.write_text(
        "# One GPU of GPT-3 175B under tensor parallelism 4, as LLMCompass times it in PyTorch:\n"
        "# q, k and v in one GEMM, attention unfused (QK^T, softmax, xV as batched GEMMs).\n"
        "# Dimensions: Brown et al. 2020, \"Language Models are Few-Shot Learners\", Table 2.1\n"
        "# (GPT-3 175B: 96 layers, d_model 12288, 96 heads of 128, context 2048); GPT-2's layer\n"
        "# and vocabulary (the paper: the same model and architecture as GPT-2).\n"
        'import "gpt2.arch"\n\n'
        'model "GPT-3-175b-tp4" extends "gpt2" {\n  params {\n    hidden    = 12288\n'
        "    layers    = 96\n    heads     = 96\n    positions = 2048\n  }\n"
        "  passes {\n    tensor_parallel(n=4)\n    fuse_qkv()\n  }\n}\n")


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        recorded = any(r.get("stack") for r in rows)   # no stack column where none is known
        w = csv.DictWriter(f, COLUMNS if recorded else COLUMNS[:-1], restval="",
                           extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}: {len(rows)} rows")


def main(argv: list[str]) -> None:
    shared = Path(argv[0]) if argv else ROOT.parent / "shared" / "measured"
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "tests" / "data" / "measured"
    out.mkdir(parents=True, exist_ok=True)
    for name, rows in vidur_linear(shared, out).items():
        write(out / f"{name}.csv", rows)
    write(out / "vidur-attention-a100.csv", vidur_attention(shared))
    write(out / "vidur-decode-layer-a100.csv", vidur_decode_layer(shared, out))
    for device, rows in aiconfigurator_gemm(shared, out).items():
        write(out / f"aiconfigurator-gemm-{device}.csv", rows)
    for device, rows in aiconfigurator_attention(shared, out).items():
        write(out / f"aiconfigurator-attention-{device}.csv", rows)
    write(out / "llmcompass-a100.csv", llmcompass(shared, out))


if __name__ == "__main__":
    main(sys.argv[1:])
