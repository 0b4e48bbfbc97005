"""Convert the end-to-end serving measurements the `aiconfigurator-core` package ships.

    python bench/convert_silicon.py [PATH/TO/silicon_sample.csv] [OUT.csv]

`aiconfigurator_core/systems/silicon_sample.csv` (ai-dynamo/aiconfigurator, Apache-2.0: the
licence text is in its wheel's `licenses/LICENSE`; package version 0.12.0) holds 5,221 benchmark
runs of real servers: backend and version, GPU system, model, ISL/OSL, concurrency, layout, and
the measured mean TTFT and TPOT (`silicon_ttft_ms`, `silicon_tpot_ms`). This keeps the runs
costdsl can state exactly: aggregated serving (prefill and decode on the same GPUs), tensor
parallelism only (no pipeline stages, no attention data parallelism), dense models it ships
(Llama-3.1-8B and -70B as llama-3-8b / llama-3-70b, the same shapes; Qwen3-32B), bf16, FP8
GEMMs with per-tensor scales or NVFP4 (the B200's), on H100, H200 and B200. Each row names its
run id and the package's source note (its dump date, config id and container image where it
gives them).

Written to tests/data/measured/serving-silicon.csv by default: system, stack, stack_version,
model, format, isl, osl, concurrency, tp, ttft_s, tpot_s, source.

    python bench/convert_silicon.py --moe [PATH/TO/silicon_sample.csv] [OUT.csv]

keeps instead the runs of the mixture-of-experts models costdsl ships, served over one tensor-
parallel group (no attention data parallelism, no pipeline), its experts split by width
(moe_tp_size = tp_size: `experts` "split") or spread whole over the same GPUs (moe_ep_size =
tp_size: "ep", `tensor_parallel(n, experts="ep")`): DeepSeek-R1 and -V3 (the
shipped deepseek-v3.2 without its indexer: `set` index_heads=0, DeepSeek-V3's layout), GLM-5,
Qwen3-235B-A22B (FP8), Qwen3.5-397B-A17B, Kimi-K2.5 and gpt-oss-120b, on H200, B200 and B300,
in each run's GEMM and expert formats (`format` "GEMM+EXPERTS" where they differ: fp8,
fp8_block, nvfp4, int4_wo; the block-scaled FP8 checkpoints' "fp8" as fp8_block, BLOCK_FP8;
gpt-oss-120b as released, "mxfp4", under vLLM only: AS_RELEASED). A measurement listed twice (under its database id
and its source file's) is kept once. Written to tests/data/measured/serving-silicon-moe.csv,
with a `set` column.
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"meta-llama/Llama-3.1-8B-Instruct": "llama-3-8b", "meta-llama/Llama-3.1-70B":
          "llama-3-70b", "nvidia/Llama-3.1-8B-Instruct-FP8": "llama-3-8b", "Qwen/Qwen3-32B":
          "qwen3-32b"}
SYSTEMS = {"h100_sxm": "h100", "h200_sxm": "h200", "b200_sxm": "b200"}
"""(The B300, GB200 and GB300 runs are of MoE models, with attention data parallelism or wide
expert parallelism, but three.)"""
FORMATS = {("", ""): "bf16", ("bf16", ""): "bf16", ("fp8", "fp8"): "fp8",
           ("fp4", "nvfp4"): "nvfp4"}
COLUMNS = ("system", "stack", "stack_version", "model", "format", "isl", "osl", "concurrency",
           "tp", "ttft_s", "tpot_s", "source")
MOE_MODELS = {"deepseek-ai/DeepSeek-R1": ("deepseek-v3.2", "index_heads=0"),
              "deepseek-ai/DeepSeek-V3": ("deepseek-v3.2", "index_heads=0"),
              "zhipuai/GLM-5": ("glm-5", ""), "Qwen/Qwen3-235B-A22B-FP8": ("qwen3-235b-a22b", ""),
              "Qwen/Qwen3.5-397B-A17B": ("qwen3.5-397b-a17b", ""),
              "moonshotai/Kimi-K2.5": ("kimi-k2.5", ""),
              "openai/gpt-oss-120b": ("gpt-oss-120b", "")}
"""The package's MoE checkpoints -> (shipped model, --set values making it that checkpoint)."""
MOE_SYSTEMS = {"h100_sxm": "h100", "h200_sxm": "h200", "b200_sxm": "b200", "b300_sxm": "b300"}
"""(GB200's runs are labelled TP 12 to 72 with every expert split as wide: layouts that cannot
split DeepSeek's 128 heads; the servers ran attention otherwise than the label says.)"""
BLOCK_FP8 = {"deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-V3", "Qwen/Qwen3-235B-A22B-FP8",
             "zhipuai/GLM-5"}
"""Checkpoints whose FP8 weights carry one scale per 128 x 128 block (their config.json:
quant_method fp8, weight_block_size [128, 128], as the package's model_configs copy them;
GLM-5's FP8 release zai-org/GLM-5-FP8): an "fp8" run of them is block-scaled FP8, whatever
kernel family the package's label names."""
MOE_FORMATS = {"fp8", "fp8_block", "nvfp4", "int4_wo"}
AS_RELEASED = {"openai/gpt-oss-120b": ("mxfp4", {"vllm"})}
"""Checkpoints served in the one format they ship in, whatever the runs' label says, and the
stacks whose kernels for it are known: gpt-oss-120b's experts are MXFP4 (E2M1 weights, an
8-bit scale per 32: its config's quant_method mxfp4), the rest bf16; the package labels its runs
"nvfp4" on Hopper too, where no FP4 tensor core exists. vLLM runs them as W4A16 (OpenAI's Triton
MXFP4 MoE on Hopper, FlashInfer's MXFP4 x bf16 on Blackwell: the kernels of the package's
w4a16_mxfp4 tables); TensorRT-LLM's runs are left out (W4A16 or W4A8 by configuration, which
the runs do not record). `format` "mxfp4": the model file as shipped, no quantize pass."""
MOE_COLUMNS = COLUMNS[:5] + ("set",) + COLUMNS[5:9] + ("experts",) + COLUMNS[9:]


def _package_csv() -> Path:
    import aiconfigurator_core
    return Path(aiconfigurator_core.__file__).parent / "systems" / "silicon_sample.csv"


def kept(r: dict) -> bool:
    return (r["mode"] == "agg" and r["model_path"] in MODELS and r["system"] in SYSTEMS
            and r["pp_size"] == "1" and r["attention_dp_size"] in ("", "1")
            and (r["precision"], r["gemm_quant_mode"]) in FORMATS
            and float(r["silicon_ttft_ms"]) > 0 and float(r["silicon_tpot_ms"]) > 0)


def convert(r: dict) -> dict:
    fmt = FORMATS[(r["precision"], r["gemm_quant_mode"])]
    if r["model_path"].endswith("-FP8"):   # NVIDIA's FP8 checkpoint: FP8 GEMMs
        fmt = "fp8"
    return {"system": SYSTEMS[r["system"]], "stack": r["backend"],
            "stack_version": r["backend_version"], "model": MODELS[r["model_path"]],
            "format": fmt, "isl": int(r["isl"]), "osl": int(r["osl"]),
            "concurrency": int(r["batch_size"]), "tp": int(r["tp_size"]),
            "ttft_s": f"{float(r['silicon_ttft_ms']) / 1e3:.6g}",
            "tpot_s": f"{float(r['silicon_tpot_ms']) / 1e3:.6g}",
            "source": f"aiconfigurator-core 0.12.0 systems/silicon_sample.csv id={r['id']}; "
                      + r["silicon_data_source"].split(";")[0]}


def _experts(r: dict) -> str | None:
    """How a MoE run lays out its experts over the TP group: "split" (each expert's width over
    the GPUs: moe_tp_size = tp_size), "ep" (whole experts spread over them: moe_ep_size =
    tp_size, vLLM's --enable-expert-parallel), None for any other layout."""
    tp, ep, mtp = r["tp_size"], r["moe_ep_size"] or "1", r["moe_tp_size"] or "1"
    if mtp == tp and ep == "1":
        return "split"
    if ep == tp and mtp == "1" and tp != "1":
        return "ep"
    return None


def kept_moe(r: dict) -> bool:
    released = AS_RELEASED.get(r["model_path"])
    if released and r["backend"] not in released[1]:
        return False
    return (r["mode"] == "agg" and r["model_path"] in MOE_MODELS and r["system"] in MOE_SYSTEMS
            and r["pp_size"] == "1" and r["attention_dp_size"] in ("", "1")
            and _experts(r) is not None
            and {r["gemm_quant_mode"], r["moe_quant_mode"]} <= MOE_FORMATS
            and float(r["silicon_ttft_ms"]) > 0 and float(r["silicon_tpot_ms"]) > 0)


def convert_moe(r: dict) -> dict:
    gemm, experts = r["gemm_quant_mode"], r["moe_quant_mode"]
    if r["model_path"] in AS_RELEASED:
        gemm = experts = AS_RELEASED[r["model_path"]][0]
    if r["model_path"] in BLOCK_FP8:
        gemm, experts = (("fp8_block" if f == "fp8" else f) for f in (gemm, experts))
    model, values = MOE_MODELS[r["model_path"]]
    # the columns a dense run has, read through convert(), then the MoE run's own
    row = convert({**r, "model_path": "Qwen/Qwen3-32B", "system": "h100_sxm",
                   "precision": "", "gemm_quant_mode": ""})
    return {**row, "system": MOE_SYSTEMS[r["system"]], "model": model, "set": values,
            "format": gemm if gemm == experts else f"{gemm}+{experts}",
            "experts": _experts(r)}


def main(argv: list[str]) -> None:
    moe = "--moe" in argv
    argv = [a for a in argv if a != "--moe"]
    source = Path(argv[0]) if argv else _package_csv()
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "tests" / "data" / "measured" / \
        ("serving-silicon-moe.csv" if moe else "serving-silicon.csv")
    keep, change, columns = (kept_moe, convert_moe, MOE_COLUMNS) if moe else \
        (kept, convert, COLUMNS)
    with open(source, newline="") as f:
        rows = [change(r) for r in csv.DictReader(f) if keep(r)]
    if moe:   # the same measurement under two ids (the database dump and its source file)
        rows = list({tuple(r[k] for k in columns if k not in ("stack_version", "source")): r
                     for r in reversed(rows)}.values())
    rows.sort(key=lambda r: tuple(r[k] for k in columns[:10]))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} runs to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
