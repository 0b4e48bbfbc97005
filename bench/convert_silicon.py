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


def main(argv: list[str]) -> None:
    source = Path(argv[0]) if argv else _package_csv()
    out = Path(argv[1]) if len(argv) > 1 else ROOT / "tests" / "data" / "measured" / \
        "serving-silicon.csv"
    with open(source, newline="") as f:
        rows = [convert(r) for r in csv.DictReader(f) if kept(r)]
    rows.sort(key=lambda r: tuple(r[k] for k in COLUMNS[:9]))
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} runs to {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
