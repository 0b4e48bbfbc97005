"""costdsl's serving simulation against real servers: TTFT and TPOT of measured benchmark runs.

    python bench/serving_silicon.py [--fit [--write]] [--ideal-framework] [--together | --phased]
                                    [--only SYSTEM/STACK] [--json OUT]
    python bench/serving_silicon.py --moe [--ideal-framework] [--only SYSTEM/STACK] [--json OUT]

The runs are tests/data/measured/serving-silicon.csv (bench/convert_silicon.py: aiconfigurator-
core 0.12.0's `silicon_sample.csv`; vLLM, SGLang and TensorRT-LLM servers on H100, H200 and
B200 serving Llama-3.1-8B/70B and Qwen3-32B in bf16, FP8 and NVFP4, TP 1 to 8, aggregated,
concurrency 4 to 224, ISL/OSL 1k/100 to 8k/8k). Each run is priced the way it was measured: `costdsl
simulate` with at most `concurrency` requests in flight (the benchmark's clients, each sending
its next request when the last one finishes), the chunked scheduler (8,192 tokens an iteration:
the three stacks' default on these GPUs), the calibrated hardware file with the run's stack,
tensor parallelism on the system file, an FP8 KV cache for the FP8 checkpoints; the mean TTFT
and TPOT of the requests after the first `concurrency` (a warm server). The clients' first
requests are spread over a request's lifetime (E2E from `latency` at that batch), the steady
state of a long benchmark; --together starts them all at once (lockstep waves); --phased starts
them all at once with the first requests' output lengths spread evenly over 1 to OSL tokens
(each client at its own phase of the request cycle: _phased).

Without options: every run against the shipped files (their `[efficiency.framework]` figures,
the serving engine around the kernels); --ideal-framework: the kernels alone (no CUDA graphs,
no engine). --fit: per (chip, stack), the engine's figures from these runs (`request` from the
lightly loaded runs' TTFT, then `graph_launch`, `step` and `per_sequence` from every run's TPOT
by non-negative least squares), 5-fold held-out errors, then every run with them; --write puts
them into the device files. Prints each run's measured and simulated TTFT and TPOT, then per
chip and stack the TPOT mean |ratio - 1| and the TTFT median |ratio - 1|.

--moe: the MoE runs instead (tests/data/measured/serving-silicon-moe.csv, bench/convert_silicon.py
--moe: DeepSeek-R1/V3, GLM-5, Qwen3-235B-A22B, Qwen3.5-397B-A17B and Kimi-K2.5 over one
tensor-parallel group on H200, B200 and B300, the experts split by width or spread whole over
it: tensor_parallel(n, experts="ep")), judged with the shipped figures (the
engine's fitted on the dense runs): the run's GEMMs and experts in its formats (MOE_QUANTIZE),
a bf16 KV cache.
"""
from __future__ import annotations

import csv
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "tests" / "data" / "measured" / "serving-silicon.csv"
MOE_RUNS = ROOT / "tests" / "data" / "measured" / "serving-silicon-moe.csv"
FILES = {"h100": ("nvidia-h100-sxm", "nvidia-dgx-h100"),
         "h200": ("nvidia-h200", "nvidia-hgx-h200"),
         "b200": ("nvidia-b200", "nvidia-hgx-b200"),
         "b300": ("nvidia-b300", "nvidia-hgx-b300"),
         "gb200": ("nvidia-gb200", "nvidia-gb200-nvl72")}
GEMMS = "layers.q,layers.k,layers.v,layers.o,layers.gate,layers.up,layers.down"
QUANTIZE = {"fp8": [f'quantize(weights=8, acts=8, ops="{GEMMS}")'],   # per-tensor scales
            # NVFP4: E2M1 values, one FP8 scale per 16 (weights and the GEMMs' inputs)
            "nvfp4": [f'quantize(weights=4, acts=4, group=16, scale_bits=8, ops="{GEMMS}")']}
"""The layers' GEMMs in the run's format; the LM head, attention and the rest stay bf16."""
MOE_QUANTIZE = {"fp8": "weights=8, acts=8",
                # DeepSeek's block scales: one fp32 scale per 128 x 128 weights
                "fp8_block": "weights=8, acts=8, group=16384, scale_bits=32",
                "nvfp4": "weights=4, acts=4, group=16, scale_bits=8",
                # Kimi K2.5's INT4 QAT: 4-bit weights, a bf16 scale per 32, bf16 activations
                "int4_wo": "weights=4, group=32, scale_bits=16"}
"""A MoE run's formats ("GEMM+EXPERTS", or one for both): the dense linears but the LM head
(the router, the latent attention's per-head products and attention itself stay bf16), then
the routed experts."""
MLP_ONLY = {"nvfp4"}
"""Formats whose checkpoints keep the attention's linears bf16: NVIDIA's NVFP4 checkpoints
(ModelOpt) list every layer's `self_attn*` in exclude_modules beside lm_head (hf_quant_config.json
of nvidia/DeepSeek-R1-0528-NVFP4, nvidia/GLM-4.7-NVFP4, nvidia/MiniMax-M2.5-NVFP4): only the
MLPs' linears (the dense layers' and the shared experts') and the routed experts are NVFP4."""
MLP_LINEARS = {"gate", "up", "down", "shared_gate", "shared_up", "shared_down"}
EXPERTS_ONLY = {"int4_wo"}
"""Formats whose checkpoints quantise the routed experts alone: Kimi K2.5's INT4 QAT (Moonshot:
INT4 weight-only "to the MoE components"; config.json's compressed-tensors quantization_config
ignores lm_head, self_attn, shared_experts and the dense layer's mlp.(gate|up|down)_proj), so
its attention, shared experts and first dense MLP stay bf16."""
CHUNK = 8192
TOGETHER = "--together" in sys.argv
PHASED = "--phased" in sys.argv
_MODELS: dict = {}


def _moe_passes(path: Path, values: str, fmt: str) -> list[str]:
    """quantize() passes naming the model's linears (but the LM head; in an MLP_ONLY format,
    the MLPs' alone; in an EXPERTS_ONLY one, none) and its experts."""
    import costdsl
    from costdsl.graph.schema import nodes
    graph = costdsl.load(path, set=[values] if values else None).graph("decode")
    linears = [n.name for n in nodes(graph) if n.kind == "linear" and graph.out_degree(n.name)]
    experts = [n.name for n in nodes(graph) if n.kind == "expert_linear"]
    gemm, _, moe = fmt.partition("+")
    if gemm in MLP_ONLY:
        linears = [n for n in linears if n.rpartition(".")[2] in MLP_LINEARS]
    if gemm in EXPERTS_ONLY:
        linears = []
    return [f'quantize({MOE_QUANTIZE[f]}, ops="{",".join(names)}")'
            for f, names in ((gemm, linears), (moe or gemm, experts))
            if f in MOE_QUANTIZE and names]


def _model(name: str, fmt: str, tp: int, values: str = "", experts: str = "split"):
    import costdsl
    key = (name, fmt, tp, values, experts)
    if key not in _MODELS:
        path = ROOT / "models" / f"{name}.arch"
        quantize = _moe_passes(path, values, fmt) if name in MOE_MODELS \
            else QUANTIZE.get(fmt, [])
        model = costdsl.load(path, set=[values] if values else None,
                             passes=quantize + ["fuse_serving()"])
        layout = f'tensor_parallel(n={tp}, experts="{experts}")' if experts != "split" \
            else f"tensor_parallel(n={tp})"
        _MODELS[key] = model.with_layout([layout]) if tp > 1 else model
    return _MODELS[key]


MOE_MODELS = ("deepseek-v3.2", "glm-5", "qwen3-235b-a22b", "qwen3.5-397b-a17b", "kimi-k2.5")
"""The MoE models of serving-silicon-moe.csv: their formats name every linear and expert."""


def _hardware(run: dict, framework):
    """The run's calibrated hardware under its stack; `framework` "file" keeps the file's
    serving-engine figures, None drops them, a Framework replaces them."""
    from costdsl.hardware import load_hardware
    device, system = FILES[run["system"]]
    hw = load_hardware(system if int(run["tp"]) > 1 else device).with_stack(run["stack"])
    return hw if framework == "file" else hw.with_framework(framework)


def simulate(run: dict, framework="file") -> dict:
    """The run's mean TTFT and TPOT (seconds) from costdsl's simulation of its benchmark, and
    what the fit needs: the kernels a decode iteration launches and the mean batch."""
    from costdsl.errors import CostDSLError
    c, tp, isl, osl = (int(run[k]) for k in ("concurrency", "tp", "isl", "osl"))
    hw = _hardware(run, framework)
    moe = run["model"] in MOE_MODELS
    try:
        return _simulated(run, hw, moe, c, tp, isl, osl)
    except CostDSLError as err:   # (a layout costdsl cannot split, e.g. 128 heads over 72
        # devices; a run the KV pool cannot hold: said, not priced)
        return {**run, "error": str(err).splitlines()[0]}


def _simulated(run: dict, hw, moe: bool, c: int, tp: int, isl: int, osl: int) -> dict:
    import numpy as np
    from costdsl.serving.requests import synthetic
    from costdsl.serving.simulate import Config
    model = _model(run["model"], run["format"], tp, run.get("set", ""),
                   run.get("experts") or "split")
    # the FP8 and NVFP4 checkpoints' servers keep an FP8 KV cache (NVIDIA's checkpoints
    # quantise it; vLLM reads their kv_cache scheme); the MoE releases' (their makers' own
    # checkpoints) a bf16 one
    kv_bits = 8 if run["format"] in QUANTIZE and not moe else 16
    stream = synthetic(1.0, max(6 * c, 48), f"fixed({isl})", f"fixed({osl})", 1)
    if TOGETHER or PHASED:   # every client at once: the prompts of a wave prefilled together
        stream = replace(stream, arrival_s=np.zeros(len(stream)))
        if PHASED:
            stream = replace(stream, output=_phased(stream.output, c, osl))
    else:          # the clients' first requests at the rate a request's lifetime allows
        static = model.latency(hw, batch=c, seq=isl, gen=osl, kv_bits=kv_bits)
        lifetime = static.ttft_s / c + (osl - 1) * static.tpot_s   # prefills interleaved
        stream = replace(stream, arrival_s=stream.arrival_s * lifetime / c)
    config = Config("chunked", chunk=CHUNK, max_batch=max(c, 256), concurrency=c)
    trace, _ = model.simulate(hw, stream, config, kv_bits=kv_bits)
    warm = slice(c, None)
    ttft = trace.first_token[warm] - trace.arrival[warm]
    tpot = (trace.finish[warm] - trace.first_token[warm]) / (trace.output[warm] - 1)
    kernels = sum(float(o.node.repeat) for o in model.roofline(hw, "decode", kv_bits=kv_bits).ops
                  if o.node.engine != "link")
    return {**run, "sim_ttft_s": float(np.mean(ttft)), "sim_tpot_s": float(np.mean(tpot)),
            "sim_batch": float(np.mean(trace.iteration_batch)), "decode_kernels": kernels}


def _phased(output, clients: int, osl: int):
    """The output lengths with the clients' first requests (the warm-up, not reported) spread
    evenly over 1 to `osl` tokens, so that each client runs at its own phase of the request
    cycle and no wave forms from the start (requests prefilled together finish, are sent again
    and queue together)."""
    import numpy as np
    out = output.copy()
    first = min(clients, len(out))
    out[:first] = np.maximum(1, np.round(osl * np.arange(1, first + 1) / first))
    return out


def _simulate_all(runs: list[dict], framework="file") -> list[dict]:
    """Every run simulated; `framework` one for all, or a function of the run."""
    chosen = [framework(r) if callable(framework) else framework for r in runs]
    with ProcessPoolExecutor() as pool:
        return list(pool.map(simulate, runs, chosen, chunksize=4))


OVERLOADED = 5.0
"""A run whose measured TTFT is this many times the simulated one queued for KV memory or
the server's admission limits, which the simulation does not share: the report counts it
apart."""


def _features(r: dict) -> list[float]:
    """The TPOT terms the framework adds to a run: per decode kernel, per iteration, per
    sequence of an iteration."""
    return [r["decode_kernels"], 1.0, r["sim_batch"]]


def fit_tpot(results: list[dict]) -> list[float]:
    """(graph_launch, step, per_sequence) in seconds: non-negative least squares of the
    measured TPOT less the simulated one (decode kernels with no launch, no iteration terms),
    in relative terms, over every subset of the terms (three: enumerating them is exact)."""
    import itertools
    import numpy as np
    rows = [r for r in results if "error" not in r]
    if not rows:
        return [0.0, 0.0, 0.0]
    weight = np.array([1 / float(r["tpot_s"]) for r in rows])
    a = np.array([_features(r) for r in rows]) * weight[:, None]
    b = np.array([float(r["tpot_s"]) - r["sim_tpot_s"] for r in rows]) * weight
    best, best_error = [0.0, 0.0, 0.0], float(np.sum(b ** 2))
    for k in range(1, 4):
        for subset in itertools.combinations(range(3), k):
            x, *_ = np.linalg.lstsq(a[:, subset], b, rcond=None)
            if np.any(x < 0):
                continue
            full = [0.0, 0.0, 0.0]
            for i, v in zip(subset, x):
                full[i] = float(v)
            error = float(np.sum((a @ np.array(full) - b) ** 2))
            if error < best_error:
                best, best_error = full, error
    return best


LIGHT = 8
"""Concurrency up to which a run's TTFT is its own prefill and the server's cost per request:
the `request` figure is fitted there, where the clients' phasing adds little queueing."""


def fit_request(results: list[dict]) -> float:
    """Seconds per request before its first token: the median of measured less simulated
    TTFT over the lightly loaded runs (the servers' own queueing noise makes the mean a poor
    centre), at least 0."""
    import numpy as np
    gaps = [float(r["ttft_s"]) - r["sim_ttft_s"] for r in results if "error" not in r
            and int(r["concurrency"]) <= LIGHT]
    return max(0.0, float(np.median(gaps))) if gaps else 0.0


def report(results: list[dict]) -> dict:
    groups: dict[str, list[tuple[float, float]]] = {}
    for r in results:
        if "error" in r:
            print(f"{r['system']} {r['stack']} {r['model']} {r['format']} tp{r['tp']} "
                  f"{r['isl']}/{r['osl']} c{r['concurrency']}: {r['error'][:90]}")
            continue
        rt = r["sim_ttft_s"] / float(r["ttft_s"])
        rp = r["sim_tpot_s"] / float(r["tpot_s"])
        groups.setdefault(f"{r['system']} {r['stack']}", []).append((rt, rp))
        groups.setdefault(f"{r['system']} {r['stack']} {r['format']}", []).append((rt, rp))
        if r.get("experts") == "ep":
            groups.setdefault(f"{r['system']} {r['stack']} experts ep", []).append((rt, rp))
        groups.setdefault("all", []).append((rt, rp))
        print(f"{r['system']} {r['stack']:6} {r['model']:11} {r['format']:4} tp{r['tp']} "
              f"{r['isl']:>5}/{r['osl']:<5} c{r['concurrency']:<4} TTFT "
              f"{float(r['ttft_s']) * 1e3:8.1f} ms sim {r['sim_ttft_s'] * 1e3:8.1f} ({rt:5.2f})  TPOT "
              f"{float(r['tpot_s']) * 1e3:7.2f} ms sim {r['sim_tpot_s'] * 1e3:7.2f} ({rp:5.2f})")
    summary = {}
    print("\nper chip and stack: TPOT mean |ratio - 1|, TTFT median |ratio - 1| (its spread is the "
          "servers' queueing), share within 25%; runs whose measured TTFT is over "
          f"{OVERLOADED:g}x the simulated one (queued for admission) counted apart")
    for name, pairs in sorted(groups.items()):
        kept = [(a, b) for a, b in pairs if a * OVERLOADED > 1]
        ttft = [abs(a - 1) for a, _ in kept]
        tpot = [abs(b - 1) for _, b in kept]
        summary[name] = {"n": len(kept), "overloaded": len(pairs) - len(kept),
                         "tpot_mean_abs_error": statistics.fmean(tpot) if tpot else math.nan,
                         "tpot_mean_abs_error_all": statistics.fmean(abs(b - 1)
                                                                     for _, b in pairs),
                         "tpot_within_25pct": sum(e <= 0.25 for e in tpot) / max(len(tpot), 1),
                         "ttft_median_abs_error": statistics.median(ttft) if ttft else math.nan,
                         "ttft_within_25pct": sum(e <= 0.25 for e in ttft) / max(len(ttft), 1)}
        s = summary[name]
        print(f"{name:20} n={s['n']:3} (+{s['overloaded']:2} overloaded)  TPOT "
              f"{100 * s['tpot_mean_abs_error']:5.1f}% ({100 * s['tpot_within_25pct']:3.0f}% within"
              f" 25%; all runs {100 * s['tpot_mean_abs_error_all']:5.1f}%)  TTFT "
              f"{100 * s['ttft_median_abs_error']:5.1f}% "
              f"({100 * s['ttft_within_25pct']:3.0f}% within 25%)")
    return summary


def _group(r: dict) -> tuple[str, str]:
    return r["system"], r["stack"]


def held_out(staged: list[dict], base: list[dict], folds: int = 5) -> dict:
    """|ratio - 1| of TPOT (mean) and TTFT (median) on runs left out of the fit, `folds`-fold
    (runs assigned by index): TPOT from the simulation with the request's time in place plus
    the iteration terms fitted on the others, TTFT from the kernels alone plus the request's
    time fitted on the others (linear: no new simulation)."""
    import numpy as np
    errors = {"tpot": [], "ttft": []}
    for k in range(folds):
        train = [i for i in range(len(base)) if i % folds != k]
        test = [i for i in range(len(base)) if i % folds == k]
        terms = np.array(fit_tpot([staged[i] for i in train]))
        request = fit_request([base[i] for i in train])
        for i in test:
            s, b = staged[i], base[i]
            if "error" in s or "error" in b:
                continue
            tpot = s["sim_tpot_s"] + float(np.array(_features(s)) @ terms)
            errors["tpot"].append(abs(tpot / float(s["tpot_s"]) - 1))
            errors["ttft"].append(abs((b["sim_ttft_s"] + request) / float(b["ttft_s"]) - 1))
    return {"tpot": statistics.fmean(errors["tpot"]) if errors["tpot"] else math.nan,
            "ttft": statistics.median(errors["ttft"]) if errors["ttft"] else math.nan}


FIT_FORMATS = ("bf16", "fp8")
"""The runs the figures are fitted to; the B200's NVFP4 runs are judged with them, not used."""


def fit(runs: list[dict]) -> dict:
    """Per (chip, stack): the framework figures and their held-out errors. The request's time
    first (from the lightly loaded runs' TTFT, against the kernels alone), then the iteration
    terms (TPOT) with it in place: a request that reaches the engine later leaves the batch a
    sequence short meanwhile, so the two interact the one way."""
    from costdsl.hardware.efficiency import Framework
    runs = [r for r in runs if r["format"] in FIT_FORMATS]
    base = _simulate_all(runs, Framework(graph_launch_s=0.0))
    groups: dict[tuple, list[dict]] = {}
    for r in base:
        groups.setdefault(_group(r), []).append(r)
    figures = {key: {"request_s": fit_request(members), "runs": len(members)}
               for key, members in sorted(groups.items())}
    staged = _simulate_all(runs, lambda r: Framework(
        graph_launch_s=0.0, request_s=figures[_group(r)]["request_s"]))
    for key, f in figures.items():
        members = [r for r in staged if _group(r) == key]
        f["graph_launch_s"], f["step_s"], f["per_sequence_s"] = fit_tpot(members)
        f["held_out"] = held_out(members, [r for r in base if _group(r) == key])
    return figures


def framework_of(figures: dict):
    from costdsl.hardware.efficiency import Framework
    return Framework(figures["graph_launch_s"], figures["step_s"], figures["per_sequence_s"],
                     figures["request_s"])


def framework_table(figures: dict):
    """The [framework] table of one chip and stack, with where its figures come from."""
    import tomlkit
    h = figures["held_out"]
    table = tomlkit.table()
    for line in ("The serving engine around the kernels: fitted by bench/serving_silicon.py "
                 "--fit", f"to {figures['runs']} served runs (tests/data/measured/serving-"
                 "silicon.csv, the stack", f"versions measured there); held out 5-fold: TPOT "
                 f"mean {100 * h['tpot']:.1f}%, TTFT median {100 * h['ttft']:.1f}%"):
        table.add(tomlkit.comment(line))
    for key, comment in (("graph_launch", "per kernel of a decode iteration (CUDA graph)"),
                         ("step", "per iteration"),
                         ("per_sequence", "per sequence of an iteration"),
                         ("request", "per request, before its first token")):
        item = tomlkit.item(_duration(figures[key + "_s"]))
        item.comment(comment)
        table.add(key, item)
    table.add(tomlkit.nl())
    return table


def _duration(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms" if seconds >= 1e-3 else f"{seconds * 1e6:.3g} us"


def write(figures: dict) -> None:
    """Each device file's framework tables, in the sections of their stacks (tomlkit: the rest
    of the file as it was)."""
    from costdsl.report.calibration import with_tables
    by_file: dict[str, list] = {}
    for (system, stack), f in figures.items():
        by_file.setdefault(FILES[system][0], []).append((stack, f))
    for device, tables in by_file.items():
        path = ROOT / "hardware" / f"{device}.toml"
        text = path.read_text()
        for stack, f in tables:
            text = with_tables(text, stack, {"framework": framework_table(f)})
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


def main(argv: list[str]) -> None:
    if "--moe" in argv and "--fit" in argv:
        sys.exit("--moe judges the MoE runs with the shipped figures; --fit fits the dense runs")
    with open(MOE_RUNS if "--moe" in argv else RUNS, newline="") as f:
        runs = list(csv.DictReader(f))
    if "--only" in argv:
        system, stack = argv[argv.index("--only") + 1].split("/")
        runs = [r for r in runs if r["system"] == system and r["stack"] == stack]
    start = time.perf_counter()
    figures = {}
    if "--fit" in argv:
        figures = fit(runs)
        for (system, stack), f in figures.items():
            print(f"{system} {stack}: " + ", ".join(
                f"{k} {f[k + '_s'] * 1e6:.2f} us" for k in ("graph_launch", "step",
                                                           "per_sequence", "request")))
        if "--write" in argv:
            write(figures)
        results = _simulate_all(runs, lambda r: framework_of(figures[_group(r)]))
    else:
        results = _simulate_all(runs, None if "--ideal-framework" in argv else "file")
    summary = report(results)
    print(f"\n{len(runs)} runs simulated in {time.perf_counter() - start:.0f} s")
    if "--json" in argv:
        Path(argv[argv.index("--json") + 1]).write_text(json.dumps(
            {"results": results, "summary": summary,
             "figures": {"/".join(k): f for k, f in figures.items()}}, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
