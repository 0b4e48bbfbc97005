"""The deployment search and the planner, timed as a user meets them: whole processes.

    python bench/search.py [--workers N] [--serial] [--aic /tmp/aic/bin/aiconfigurator]

Prints, for issue 28's question (Llama-3-70B on DGX H100 nodes, ISL 2048 / OSL 512, 10
requests/s, p90 TTFT <= 1 s, TPOT <= 50 ms): the wall time of `costdsl search` as a whole
process with the default workers (and serially with --serial), the candidates, what each closed
form pruned and the simulations run; a fleet of 10 replicas serving 100,000 requests; then
`costdsl plan` of Llama-2-70B over a DGX A100 with --max-batch. Each figure also as a multiple of `python -c "import costdsl"` in the same run,
so machines compare. Not a test: the targets live in the README.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SEARCH = ["search", "llama-3-70b", "--hw", "nvidia-dgx-h100", "--slo", "ttft=1s,tpot=50ms",
          "--rate", "10", "--isl", "2048", "--osl", "512", "--format", "json"]
FLEET = ["simulate", "llama-2-7b", "--hw", "nvidia-a100-80gb", "--rate", "40", "--n", "100000",
         "--replicas", "10", "--scheduler", "chunked"]
PLAN = ["plan", "llama-2-70b", "--hw", "nvidia-dgx-a100", "--max-batch", "--w-bits", "16,8,4"]


def run(args: list[str]) -> tuple[float, str]:
    env = {**os.environ, "COSTDSL_NO_CACHE": "1"}   # every run compiles, as a first call does
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "costdsl", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    return time.perf_counter() - start, done.stdout


AIC = ["cli", "default", "--model-path", "meta-llama/Meta-Llama-3.1-70B", "--total-gpus", "16",
       "--system", "h100_sxm", "--isl", "2048", "--osl", "512", "--ttft", "1000", "--tpot", "50",
       "--target-request-rate", "10"]
"""The same question to NVIDIA's AIConfigurator (its `cli default`: aggregated and disaggregated
on TensorRT-LLM's measured kernels, 16 H100s to size within), the peer the issue names."""


def aiconfigurator(executable: str, save: str) -> tuple[float, dict]:
    """Its wall time and the top aggregated and disaggregated rows (tokens/s per GPU, per
    user) of its report."""
    start = time.perf_counter()
    done = subprocess.run([executable, *AIC, "--save-dir", save], capture_output=True,
                          text=True, check=True)
    seconds = time.perf_counter() - start
    best, mode = {}, None
    for line in (done.stdout + done.stderr).splitlines():
        if "Top Configurations" in line:
            mode = line.split()[0]
        elif mode and line.startswith("|  1 "):
            cells = [c.strip() for c in line.strip("|").split("|")]
            best[mode] = (float(cells[2]), float(cells[3]))
            mode = None
    return seconds, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--serial", action="store_true", help="also time --workers 1")
    parser.add_argument("--aic", metavar="PATH",
                        help="AIConfigurator's `aiconfigurator` executable (its own venv): "
                             "time the same question there, side by side")
    args = parser.parse_args()
    imported = min(run(["--version"])[0] for _ in range(3))
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"python -m costdsl --version: {imported:.2f} s (the unit below)")
    extra = ["--workers", str(args.workers)] if args.workers else []
    for label, more in [("default workers" if not args.workers else f"{args.workers} workers",
                         extra)] + ([("serial", ["--workers", "1"])] if args.serial else []):
        seconds, out = run(SEARCH + more)
        data = json.loads(out)
        c, best = data["candidates"], data["recommendation"]
        pruned = sum(c["pruned_by"].values())
        print(f"search, {label} ({data['executor']}): {seconds:.1f} s whole process "
              f"({seconds / imported:.0f}x the import); candidates {c['total']}, pruned "
              f"{pruned} ({pruned / c['total']:.0%}: " +
              ", ".join(f"{k} {v}" for k, v in c["pruned_by"].items()) +
              f"), simulated {c['simulated']} ({c['simulations']} simulations)")
        print(f"  recommended: {best['mode']}, {best['gpus']} GPUs, binding {best['binding']}")
    if args.aic:
        import tempfile
        with tempfile.TemporaryDirectory() as save:
            peer, rows = aiconfigurator(args.aic, save)
        ours, out = run(SEARCH + ["--stack", "trtllm"])
        data = json.loads(out)
        mine = {d["mode"]: d for d in data["frontier"] + [data["recommendation"]]
                + ([data["runner_up"]] if data["runner_up"] else [])}
        print(f"side by side with AIConfigurator (TensorRT-LLM tables on both sides): "
              f"costdsl {ours:.1f} s, AIConfigurator {peer:.1f} s (ratio "
              f"{ours / peer:.2f})")
        for mode, key in (("agg", "aggregated"), ("disagg", "disaggregated")):
            if mode in rows and key in mine:
                d = mine[key]
                print(f"  best {key}: tokens/s per GPU {d['tokens_per_s_per_gpu']:.0f} "
                      f"(AIConfigurator {rows[mode][0]:.0f}), per user "
                      f"{d['tokens_per_s_per_user']:.1f} ({rows[mode][1]:.1f})")
    seconds, _ = run(FLEET)
    print(f"simulate 100,000 requests on 10 replicas (Llama-2-7b, A100, chunked): "
          f"{seconds:.1f} s whole process ({seconds / imported:.0f}x the import)")
    seconds, _ = run(PLAN)
    print(f"plan llama-2-70b --hw nvidia-dgx-a100 --max-batch, 3 bitwidths: {seconds:.1f} s "
          f"whole process ({seconds / imported:.0f}x the import)")


if __name__ == "__main__":
    main()
