"""Request latencies from costdsl against an independent composition of measured kernels.

    python bench/request_latency.py --aic-python /tmp/aic/bin/python [--quick] [--chips h200,b200]
                                    [--json OUT]
    python bench/request_latency.py --aic-python PY --ops MODEL,CHIP,FORMAT,TP,BATCH

The composition is NVIDIA's AIConfigurator (`aiconfigurator-core`, Apache-2.0), which prices
every op of a static-batching request from its measured kernel tables (GEMM, attention,
all-reduce, elementwise) for a given GPU and serving stack. It needs its own environment
(`python -m venv /tmp/aic && /tmp/aic/bin/pip install aiconfigurator-core pyarrow`): this script
runs itself there with --worker to get AIConfigurator's numbers, then prices the same requests
with costdsl (`Model.latency`, the calibrated hardware files, `fuse_serving()`: the kernels the
stacks run, tensor parallel on the system files, fp8 as the stacks' W8A8 GEMMs) and prints TTFT
and TPOT side by side with their ratios.

Grid: Llama-3.1-8B (costdsl's llama-3.1-8b) at TP 1 and 2, Llama-3.1-70B (llama-3.1-70b) at
TP 2, 4 and 8; H100 (TensorRT-LLM 1.3.0rc20: AIConfigurator's H100 vLLM tables
are 0.24.0, the H100 file's default figures 0.19), H200, B200, B300, GB200, L40S and RTX PRO 6000
(vLLM 0.24.0) and Intel's Arc Pro B60 (vLLM 0.26.0, up to 4 cards; its FP8 GEMMs
weight-only); `--chips` picks some; bf16 and fp8
GEMMs (per-tensor scales, bf16 activations between them; KV cache bf16); batch 1 to 256;
prompt 1,024, 128 generated tokens.
--ops: one request op by op instead, AIConfigurator's context and generation time per op
(its latency dicts) beside the costdsl ops of the same kind (analyze: the prompt, and the decode
step at the middle of the generated cache times its steps), to find where a gap comes from
(this is how the all-reduce after an FP8 projection was found to move 8 bits, not bf16).
The kernel tables both sides use are the same measurements: this checks that costdsl's closed
forms, fitted to those kernels, compose into the request times the kernels add up to (the
kernels alone: the files' serving-engine figures, fitted to real servers, are left out here).
"""
from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"llama-3.1-8b": ("meta-llama/Meta-Llama-3.1-8B", (1, 2)),
          "llama-3.1-70b": ("meta-llama/Meta-Llama-3.1-70B", (2, 4, 8))}
CHIPS = {   # costdsl device, system; AIConfigurator system, stack, version
    "h100": ("nvidia-h100-sxm", "nvidia-dgx-h100", "h100_sxm", "trtllm", "1.3.0rc20"),
    "h200": ("nvidia-h200", "nvidia-hgx-h200", "h200_sxm", "vllm", "0.24.0"),
    "b200": ("nvidia-b200", "nvidia-hgx-b200", "b200_sxm", "vllm", "0.24.0"),
    "b300": ("nvidia-b300", "nvidia-hgx-b300", "b300_sxm", "vllm", "0.24.0"),
    "gb200": ("nvidia-gb200", "nvidia-gb200-nvl72", "gb200", "vllm", "0.24.0"),
    "l40s": ("nvidia-l40s", "nvidia-l40s-8x", "l40s", "vllm", "0.24.0"),
    "rtxpro6000": ("nvidia-rtx-pro-6000", "nvidia-rtx-pro-6000-8x", "rtx_pro_6000_server", "vllm",
                   "0.24.0"),
    "b60": ("intel-arc-pro-b60", "intel-arc-pro-b60-4x", "b60", "vllm", "0.26.0")}
BATCHES = (1, 8, 64, 256)
FORMATS = ("bf16", "fp8")
PROMPT, GEN = 1024, 128
FP8_GEMMS = "layers.q,layers.k,layers.v,layers.o,layers.gate,layers.up,layers.down"


def grid(quick: bool, chips: list[str]) -> list[dict]:
    from costdsl.hardware import load_hardware
    cards = {chip: load_hardware(CHIPS[chip][1]).count for chip in chips}   # the system's
    out = []
    for model, (_, tps) in MODELS.items():
        for chip in chips:
            for fmt in FORMATS:
                for tp in (tps[:1] if quick else tps):
                    if tp > cards[chip]:   # more than the system has (the B60's 4)
                        continue
                    for batch in (BATCHES[::3] if quick else BATCHES):
                        out.append({"model": model, "chip": chip, "format": fmt, "tp": tp,
                                    "batch": batch})
    return out


def aiconfigurator(configs: list[dict]) -> list[dict]:
    """AIConfigurator's static-batching TTFT and TPOT (seconds) for each config (run in its own
    environment)."""
    from aiconfigurator_core.sdk import common, config
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.models import get_model
    from aiconfigurator_core.sdk.perf_database import get_database
    out = []
    for c in configs:
        _, _, system, stack, version = CHIPS[c["chip"]]
        try:
            db = get_database(system, stack, version, allow_unlisted_version=True)
            quant = common.GEMMQuantMode.fp8 if c["format"] == "fp8" else None
            model = get_model(MODELS[c["model"]][0],
                              config.ModelConfig(tp_size=c["tp"], gemm_quant_mode=quant), stack)
            summary = get_backend(stack).run_static(
                model, db, config.RuntimeConfig(batch_size=c["batch"], isl=PROMPT, osl=GEN),
                "static").get_summary_df().iloc[0]
            out.append({**c, "ttft_s": float(summary["ttft"]) / 1e3,
                        "tpot_s": float(summary["tpot"]) / 1e3})
        except Exception as err:   # a configuration its tables do not cover
            out.append({**c, "error": f"{type(err).__name__}: {err}"[:200]})
    return out


def aiconfigurator_ops(c: dict) -> dict:
    """AIConfigurator's per-op milliseconds of one request: {"context": {op: ms for the
    prompt}, "generation": {op: ms over its decode steps}} (run in its own environment)."""
    from aiconfigurator_core.sdk import common, config
    from aiconfigurator_core.sdk.backends.factory import get_backend
    from aiconfigurator_core.sdk.models import get_model
    from aiconfigurator_core.sdk.perf_database import get_database
    _, _, system, stack, version = CHIPS[c["chip"]]
    db = get_database(system, stack, version, allow_unlisted_version=True)
    quant = common.GEMMQuantMode.fp8 if c["format"] == "fp8" else None
    model = get_model(MODELS[c["model"]][0],
                      config.ModelConfig(tp_size=c["tp"], gemm_quant_mode=quant), stack)
    result = get_backend(stack).run_static(
        model, db, config.RuntimeConfig(batch_size=c["batch"], isl=PROMPT, osl=GEN), "static")
    return {"context": dict(result.get_context_latency_dict()),
            "generation": dict(result.get_generation_latency_dict())}


def _aic_kind(op: str) -> str:
    """AIConfigurator's op name as the kind --ops compares (its two add+norms as one, its
    all-reduces as one)."""
    kind = op.split("_", 1)[1]
    return {"add_norm_1": "add_norm", "add_norm_2": "add_norm", "ar_1": "all_reduce",
            "ar_2": "all_reduce", "embedding_ar": "all_reduce"}.get(kind, kind)


def _costdsl_kind(name: str, kind: str) -> str:
    """A costdsl op (after fuse_serving and tensor parallelism) as AIConfigurator names its
    kind: the norms and residual adds are its add_norm, rotary its attention."""
    if kind in ("all_reduce", "all_gather", "embedding"):
        return kind
    for part, aic in (("lm_head", "logits_gemm"), ("q+k+v", "qkv_gemm"), ("gate+up",
                      "gate_ffn1_gemm"), ("rot", "attention"), ("attn[", "attention")):
        if part in name:
            return aic
    last = name.rsplit(".", 1)[-1]
    return {"o": "proj_gemm", "down": "ffn2_gemm", "act": "act_gate"}.get(
        last, "add_norm" if "norm" in name or kind == "add" else kind)


def _costdsl_model(c: dict):
    """(the costdsl model of a config, its hardware), as the stacks run it."""
    import costdsl
    from costdsl.hardware import load_hardware
    device, system, _, stack, _ = CHIPS[c["chip"]]
    # the kernels alone: AIConfigurator's static composition adds no serving engine
    # (bench/serving_silicon.py judges the engine's figures against real servers)
    hw = load_hardware(system if c["tp"] > 1 else device).with_stack(stack).with_framework(None)
    # fp8: the stacks' W8A8 GEMMs (weights and the GEMM's input in FP8, quantised on the
    # fly); the activations between them, the all-reduces and the LM head stay bf16
    # a chip without FP8 matrix units (no fp8 peak: the B60) runs FP8 GEMMs weight-only
    acts = "acts=8, " if "fp8" in hw.peak else ""
    fp8 = [f'quantize(weights=8, {acts}ops="{FP8_GEMMS}")'] if c["format"] == "fp8" else []
    model = costdsl.load(ROOT / "models" / f"{c['model']}.arch", passes=fp8 + ["fuse_serving()"])
    if c["tp"] > 1:   # placed before the fusion, as `plan` does
        model = model.with_layout([f"tensor_parallel(n={c['tp']})"])
    return model, hw


def compare_ops(python: str, spec: str) -> None:
    """--ops: one request's time by op kind, AIConfigurator beside costdsl."""
    model_name, chip, fmt, tp, batch = spec.split(",")
    c = {"model": model_name, "chip": chip, "format": fmt, "tp": int(tp), "batch": int(batch)}
    done = subprocess.run([python, __file__, "--worker-ops"], input=json.dumps(c),
                          capture_output=True, text=True)
    if done.returncode:   # a configuration its tables do not cover: its own last line says why
        lines = done.stderr.strip().splitlines() or ["no output"]
        sys.exit(f"request_latency.py: AIConfigurator could not price {spec}: {lines[-1]}")
    peer = json.loads(done.stdout)
    model, hw = _costdsl_model(c)
    steps = GEN - 1
    ours = {"context": model.analyze(hw, batch=c["batch"], seq=PROMPT, stages=["prefill"])
            .stages["prefill"],
            "generation": model.analyze(hw, batch=c["batch"], seq=PROMPT + GEN // 2,
                                        stages=["decode"]).stages["decode"]}
    print(f"{spec}: ms per request (generation: {steps} decode steps; costdsl's at the middle "
          f"of the cache)")
    for phase, scale in (("context", 1), ("generation", steps)):
        theirs: dict[str, float] = {}
        for op, ms in peer[phase].items():
            theirs[_aic_kind(op)] = theirs.get(_aic_kind(op), 0.0) + ms
        mine: dict[str, float] = {}
        for o in ours[phase].ops:
            kind = _costdsl_kind(o.name, o.kind)
            mine[kind] = mine.get(kind, 0.0) + o.total_time_s * scale * 1e3
        print(f"\n{phase:16} {'AIConfigurator':>14} {'costdsl':>10} {'ratio':>6}")
        for kind in sorted(set(theirs) | set(mine), key=lambda k: -theirs.get(k, 0.0)):
            t, m = theirs.get(kind, 0.0), mine.get(kind, 0.0)
            ratio = f"{m / t:6.3f}" if t else f"{'-':>6}"   # an op only costdsl prices
            print(f"{kind:16} {t:12.3f}ms {m:8.3f}ms {ratio}")
        total_t, total_m = sum(theirs.values()), sum(mine.values())
        print(f"{'total':16} {total_t:12.3f}ms {total_m:8.3f}ms {total_m / total_t:6.3f}")


def costdsl_latency(configs: list[dict]) -> list[dict]:
    out = []
    for c in configs:
        model, hw = _costdsl_model(c)
        start = time.perf_counter()
        lat = model.latency(hw, batch=c["batch"], seq=PROMPT, gen=GEN)
        out.append({**c, "ttft_s": lat.ttft_s, "tpot_s": lat.tpot_s,
                    "seconds": time.perf_counter() - start})
    return out


def report(peer: list[dict], ours: list[dict]) -> dict:
    print(f"{'model':12} {'chip':5} {'fmt':4} {'tp':>2} {'batch':>5}  {'TTFT aic':>9} "
          f"{'costdsl':>9} {'ratio':>6}  {'TPOT aic':>9} {'costdsl':>9} {'ratio':>6}")
    ratios = {"ttft": [], "tpot": []}
    by_group: dict[tuple, list[float]] = {}
    for p, o in zip(peer, ours):
        if "error" in p:
            print(f"{p['model']:12} {p['chip']:5} {p['format']:4} {p['tp']:2} {p['batch']:5}  "
                  f"AIConfigurator: {p['error'][:70]}")
            continue
        rt, rp = o["ttft_s"] / p["ttft_s"], o["tpot_s"] / p["tpot_s"]
        ratios["ttft"].append(rt)
        ratios["tpot"].append(rp)
        by_group.setdefault((p["chip"], p["format"]), []).extend([rt, rp])
        print(f"{p['model']:12} {p['chip']:5} {p['format']:4} {p['tp']:2} {p['batch']:5}  "
              f"{p['ttft_s'] * 1e3:7.1f}ms {o['ttft_s'] * 1e3:7.1f}ms {rt:6.3f}  "
              f"{p['tpot_s'] * 1e3:7.2f}ms {o['tpot_s'] * 1e3:7.2f}ms {rp:6.3f}")
    summary = {}
    print()
    for key, values in [(("all",), ratios["ttft"] + ratios["tpot"]), (("ttft",), ratios["ttft"]),
                        (("tpot",), ratios["tpot"])] + sorted(by_group.items()):
        errors = [abs(r - 1) for r in values]
        within = sum(e <= 0.10 for e in errors) / len(errors)
        name = " ".join(key)
        summary[name] = {"n": len(values), "median_abs_error": statistics.median(errors),
                         "mean_abs_error": statistics.fmean(errors), "max_abs_error": max(errors),
                         "within_10pct": within}
        print(f"{name:10} n={len(values):3}  mean |ratio-1| {100 * statistics.fmean(errors):5.1f}%"
              f"  median {100 * statistics.median(errors):5.1f}%  max {100 * max(errors):5.1f}%"
              f"  within 10%: {100 * within:3.0f}%")
    return summary


def main(argv: list[str]) -> None:
    if "--worker" in argv:
        json.dump(aiconfigurator(json.load(sys.stdin)), sys.stdout)
        return
    if "--worker-ops" in argv:
        json.dump(aiconfigurator_ops(json.load(sys.stdin)), sys.stdout)
        return
    if "--aic-python" not in argv:
        sys.exit("usage: request_latency.py --aic-python PATH [--quick] [--chips A,B] [--json OUT] "
                 "| --ops MODEL,CHIP,FORMAT,TP,BATCH (PATH: a Python with aiconfigurator-core "
                 "installed)")
    python = argv[argv.index("--aic-python") + 1]
    if "--ops" in argv:
        spec = argv[argv.index("--ops") + 1] if argv.index("--ops") + 1 < len(argv) else ""
        parts = spec.split(",")
        if len(parts) != 5 or parts[0] not in MODELS or parts[1] not in CHIPS \
                or parts[2] not in FORMATS or not (parts[3] + parts[4]).isdigit():
            sys.exit(f"request_latency.py: --ops MODEL,CHIP,FORMAT,TP,BATCH (models: "
                     f"{', '.join(MODELS)}; chips: {', '.join(CHIPS)}; formats: "
                     f"{', '.join(FORMATS)}), not {spec!r}")
        compare_ops(python, spec)
        return
    chips = argv[argv.index("--chips") + 1].split(",") if "--chips" in argv else list(CHIPS)
    unknown = [c for c in chips if c not in CHIPS]
    if unknown:
        sys.exit(f"request_latency.py: unknown chip {', '.join(unknown)} (chips: "
                 f"{', '.join(CHIPS)})")
    configs = grid("--quick" in argv, chips)
    start = time.perf_counter()
    done = subprocess.run([python, __file__, "--worker"], input=json.dumps(configs),
                          capture_output=True, text=True, check=True)
    peer = json.loads(done.stdout)
    peer_s = time.perf_counter() - start
    start = time.perf_counter()
    ours = costdsl_latency(configs)
    ours_s = time.perf_counter() - start
    summary = report(peer, ours)
    print(f"\n{len(configs)} requests: AIConfigurator {peer_s:.1f} s (one process), costdsl "
          f"{ours_s:.1f} s (in process)")
    if "--json" in argv:
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps(
            {"configs": peer, "costdsl": ours, "summary": summary}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
