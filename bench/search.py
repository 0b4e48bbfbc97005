"""The deployment search and the planner, timed as a user meets them: whole processes.

    python bench/search.py [--workers N] [--serial]

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--serial", action="store_true", help="also time --workers 1")
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
    seconds, _ = run(FLEET)
    print(f"simulate 100,000 requests on 10 replicas (Llama-2-7b, A100, chunked): "
          f"{seconds:.1f} s whole process ({seconds / imported:.0f}x the import)")
    seconds, _ = run(PLAN)
    print(f"plan llama-2-70b --hw nvidia-dgx-a100 --max-batch, 3 bitwidths: {seconds:.1f} s "
          f"whole process ({seconds / imported:.0f}x the import)")


if __name__ == "__main__":
    main()
