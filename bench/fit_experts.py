"""The routed experts' own kernel figures, fitted to the measured fused-MoE kernels (and, with
--mla, MLA decode attention's, fitted to the measured MLA kernels the same way; with
--mla-prefill, a prompt's MLA attention's, [efficiency.attention_mla], to the context MLA
kernels of aiconfigurator-mla-context-<chip>-<stack>.csv; with --mla-kv8, MLA decode's over an
FP8 latent cache, [efficiency.decode_attention_mla_kv8], to aiconfigurator-mla-kv8-*.csv).

    python bench/fit_experts.py [--write] [--mla | --mla-prefill | --mla-kv8] [--stack NAME]
                                [CHIP ...]

For each chip and stack with MoE kernel rows (tests/data/measured/aiconfigurator-moe-<chip>
[-<stack>].csv: bench/convert_aiconfigurator.py --moe), costdsl's calibration
(`fit_efficiency`) on those rows alone gives the expert families their figures: the grouped
GEMMs of bf16 experts ([efficiency.expert_linear]), of FP8, block-scaled FP8 and NVFP4 experts
([efficiency.fp8_expert], [efficiency.fp8_block_expert], [efficiency.fp4_block_expert]), and
the activation between them ([efficiency.expert_act]: it also carries what else the fused
kernel runs, the tokens' permutation and the combine, which no op of the graph prices). Only
those families are kept: the rest
of the file (the dense GEMMs', attention's, the top-level figures) stays as `costdsl calibrate`
fitted it, so no other price moves. Prints, per chip and stack, the MAPE of the MoE rows with
the file as it is, with the experts' figures added (all rows), and 5-fold held out (each fold
priced by a fit on the other four); --write puts the families into the hardware file's section
for the stack ([efficiency] for its default, [stack.NAME] otherwise), with their standard
errors and row counts as comments (tomlkit: the rest of the file as it was); a fit with a
compute fraction above the datasheet peak is reported, not written (`physical`).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MEASURED = ROOT / "tests" / "data" / "measured"
SETS = {("h100", "vllm"): "nvidia-h100-sxm", ("h100", "sglang"): "nvidia-h100-sxm",
        ("h100", "trtllm"): "nvidia-h100-sxm",
        ("h200", "vllm"): "nvidia-h200", ("b200", "vllm"): "nvidia-b200",
        ("h200", "sglang"): "nvidia-h200", ("b200", "sglang"): "nvidia-b200",
        ("h200", "trtllm"): "nvidia-h200",
        **{(chip, stack): device for chip, device in (
            ("b300", "nvidia-b300"), ("gb200", "nvidia-gb200"), ("gb300", "nvidia-gb300"))
           for stack in ("vllm", "sglang")},
        ("a100", "sglang"): "nvidia-a100-80gb"}
MLA_SETS = {(chip, stack): device for chip, device in (
    ("h100", "nvidia-h100-sxm"), ("h200", "nvidia-h200"), ("b200", "nvidia-b200"),
    ("b300", "nvidia-b300"), ("gb200", "nvidia-gb200"), ("gb300", "nvidia-gb300"))
    for stack in ("sglang", "trtllm")} | {("a100", "trtllm"): "nvidia-a100-80gb"}
"""The MLA kernel rows (bench/convert_aiconfigurator.py: SGLang's and TensorRT-LLM's
generation_mla and context_mla tables; vLLM's time whole MLA modules) and the files they
price."""
FOLDS = 5
COMPUTE_TYPES = {"mla-kv8": "the kernel computes in FP8, its query quantised (fitted at the "
                            "bf16 peak, the B200's fraction was 1.08 of it)"}
"""Why a family's table names the type its kernel computes in (efficiency COMPUTE_TYPE_NOTE):
kept from the file when the table is rewritten."""
KIND = {"moe": "MoE", "mla": "MLA decode", "mla-context": "MLA prefill",
        "mla-kv8": "MLA decode (FP8 cache)"}


def _sets(kind: str) -> dict:
    return SETS if kind == "moe" else MLA_SETS


def _families(kind: str = "moe"):
    """The families a set of `kind` fits and writes: the experts', MLA decode's or a prompt's
    MLA attention's."""
    from costdsl.hardware.efficiency import EXPERT_FAMILIES, MLA_DECODE, MLA_KV8, MLA_PREFILL
    return {"mla": {MLA_DECODE}, "mla-context": {MLA_PREFILL}, "mla-kv8": {MLA_KV8}}.get(
        kind, EXPERT_FAMILIES | {"expert_act"})


def _csv(chip: str, stack: str, kind: str = "moe") -> Path:
    return MEASURED / f"aiconfigurator-{kind}-{chip}{'' if stack == 'vllm' else '-' + stack}.csv"


def _measured(chip: str, stack: str, kind: str = "moe"):
    from costdsl.analysis.measurements import read_measurements, resolve
    from costdsl.cli import _load_spec
    from costdsl.hardware import load_hardware
    hw = load_hardware(_sets(kind)[chip, stack]).with_stack(stack)
    path = _csv(chip, stack, kind)
    return hw, resolve(read_measurements(path), path, hw, lambda spec: _load_spec(spec, []))


def _with_experts(efficiency, fitted, kind: str = "moe"):
    """The file's figures with the families of `fitted` (a calibration Fit) that a set of
    `kind` fits added."""
    kinds = {k: v for k, v in fitted.efficiency.kinds.items() if k in _families(kind)}
    return replace(efficiency, kinds={**efficiency.kinds, **kinds})


def _mape(measured, efficiency, index=None) -> float:
    from costdsl.analysis.measurements import predict
    chosen = measured if index is None else [measured[i] for i in index]
    predicted = predict(chosen, efficiency)
    times = np.array([m.row.time_s for m in chosen])
    return float(100 * np.mean(np.abs(predicted / times - 1)))


def fit(chip: str, stack: str, kind: str = "moe") -> dict:
    from costdsl.analysis.calibration import fit_efficiency
    hw, measured = _measured(chip, stack, kind)
    source = str(_csv(chip, stack, kind).relative_to(ROOT))
    fitted = fit_efficiency(measured, source=source, sms=hw.sms)
    held = []
    for k in range(FOLDS):
        train = [m for i, m in enumerate(measured) if i % FOLDS != k]
        test = [i for i in range(len(measured)) if i % FOLDS == k]
        fold = fit_efficiency(train, source=source, sms=hw.sms)
        held.append(_mape(measured, _with_experts(hw.efficiency, fold, kind), test) * len(test))
    return {"hw": hw, "fit": fitted, "rows": len(measured), "source": source, "kind": kind,
            "device": _sets(kind)[chip, stack], "before": _mape(measured, hw.efficiency),
            "after": _mape(measured, _with_experts(hw.efficiency, fitted, kind)),
            "held_out": sum(held) / len(measured)}


def physical(r: dict) -> bool:
    """Whether every fitted compute fraction is at most the datasheet peak: a fraction above 1
    says the table times less work than the layer's, and such a fit is reported, not written.
    (The fit bounds a GEMM family's compute at 1 now; H200 TensorRT-LLM's rows fitted 1.29 for
    bf16 experts and 4 for FP8 ones before: at the bound they fit 1.0, expert_act taking the
    rest of the time the tokens add.)"""
    return all(p.value <= 1 for p in r["fit"].parameters
               if p.name.endswith(".compute") and p.name.split(".")[0] in _families(r["kind"]))


def write(results: dict) -> None:
    """Each chip's fitted families into its device file, in the section of each stack (the
    physical fits: `physical`)."""
    from costdsl.report.calibration import with_tables
    by_file: dict[str, list] = {}
    for (chip, stack), r in results.items():
        if physical(r):
            by_file.setdefault(r["device"], []).append((stack, r))
    for device, entries in by_file.items():
        path = ROOT / "hardware" / f"{device}.toml"
        text = path.read_text()
        for stack, r in entries:
            text = with_tables(text, stack, _tables(r))
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


def _tables(r: dict) -> dict:
    """{family: its tomlkit table}: the fitted figures with their standard errors and rows."""
    import tomlkit
    params = {p.name: p for p in r["fit"].parameters}
    out = {}
    for family, own in sorted(r["fit"].efficiency.kinds.items()):
        if family not in _families(r["kind"]):
            continue
        label = KIND[r["kind"]]
        table = tomlkit.table()
        table.add(tomlkit.comment(f"fitted by bench/fit_experts.py to {r['rows']} {label} "
                                  f"kernel rows ({r['source']}); {label} rows held out 5-fold: "
                                  f"{r['held_out']:.1f}%"))
        if r["kind"] == "mla-context":   # whatever form the kernel runs (SGLang's on Hopper)
            table.add(tomlkit.comment("per operation of the expanded form (per-head keys and "
                                      "values), the form costdsl lowers a prompt to"))
        declared = r["hw"].efficiency.kinds.get(family)
        if declared is not None and declared.compute_type:   # the file's, kept: the fit is of it
            item = tomlkit.item(declared.compute_type)
            item.comment(COMPUTE_TYPES.get(r["kind"], "the type the kernel computes in"))
            table.add("compute_type", item)
        for key, value, unit in (("bandwidth", own.bandwidth, ""), ("compute", own.compute, ""),
                                 ("launch", own.launch_s, "s"), ("rows", own.rows, ""),
                                 ("overlap", own.overlap, ""),
                                 ("split_bandwidth", own.split_bandwidth, ""),
                                 ("split_launch", own.split_launch_s, "s")):
            if value is None:
                continue
            p = params.get(f"{family}.{key}")
            item = tomlkit.item(_duration(value) if unit else
                                (value if isinstance(value, bool) else round(value, 4)))
            if key in ("rows", "overlap"):
                item.comment("chosen: fits better")
            elif key == "compute" and value >= 1 - 1e-9 and p is not None:
                # the fused kernel's permutation and combine (expert_act) grow with the
                # tokens as the arithmetic does: the split between them is not pinned
                item.comment(f"fitted: at its bound, the datasheet peak ({p.rows} rows; "
                             "expert_act takes the rest of the time the tokens add)")
            elif p is not None and unit and not 0 < (p.stderr or 0) <= 10 * value:
                # every row launches each of the kernel's parts once: their sum is pinned,
                # not the split
                item.comment(f"fitted: one of the fused kernel's launches, {p.rows} rows")
            elif p is not None and p.stderr is not None:
                spread = _duration(p.stderr) if unit else f"{p.stderr:.4f}"
                item.comment(f"fitted: ± {spread}, {p.rows} rows")
            elif p is not None:   # a singular fit: the figure, but no spread to give
                item.comment(f"fitted: {p.rows} rows, no standard error (collinear with the "
                             "launches)")
            table.add(key, item)
        table.add(tomlkit.nl())
        out[family] = table
    return out


def _duration(seconds: float) -> str:
    return f"{seconds * 1e6:.3g} us" if seconds < 1e-3 else f"{seconds * 1e3:.3g} ms"


def main(argv: list[str]) -> None:
    results = {}
    kind = next((k for flag, k in (("--mla", "mla"), ("--mla-prefill", "mla-context"),
                                   ("--mla-kv8", "mla-kv8")) if flag in argv), "moe")
    only = argv[argv.index("--stack") + 1] if "--stack" in argv[:-1] else None
    if "--stack" in argv and only not in {stack for _, stack in _sets(kind)}:
        sys.exit(f"fit_experts: --stack needs one of "
                 f"{', '.join(sorted({stack for _, stack in _sets(kind)}))}")
    chips = [a for i, a in enumerate(argv) if not a.startswith("--")
             and (i == 0 or argv[i - 1] != "--stack")]   # none: every chip
    for chip, stack in _sets(kind):
        if chips and chip not in chips or only and stack != only:
            continue
        r = results[chip, stack] = fit(chip, stack, kind)
        figures = ", ".join(f"{p.name} {p.value:.4g}" for p in r["fit"].parameters
                            if p.name.split(".")[0] in _families(kind))
        print(f"{chip} {stack} ({r['rows']} rows): MAPE {r['before']:.1f}% as shipped -> "
              f"{r['after']:.1f}% with their own figures ({r['held_out']:.1f}% held out)"
              + ("" if physical(r) else ": a compute fraction above 1, not written")
              + f"\n  {figures}")
    if "--write" in argv:
        write(results)


if __name__ == "__main__":
    main(sys.argv[1:])
