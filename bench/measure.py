"""Time a model's real kernels on an NVIDIA GPU and write costdsl's measurement CSV.

    python bench/measure.py MODEL --hw HW --stage decode --batch 1,2,4,...,256 --seq 1024 \\
        [--pass "flash_attention()"] [--repeat 50] -o measured.csv

For every op of the model's graph (after its passes) at each size, runs the kernel PyTorch would
run for it, with the model's shapes and fp16 data: linear layers as torch.matmul, FlashAttention
ops through scaled_dot_product_attention, RMSNorm, SwiGLU, residual adds, RoPE and the embedding
gather. Each kernel is warmed up, then timed with CUDA events `--repeat` times with the L2 cache
flushed (a 256 MiB write) before each run, and the median is written. Ops of other kinds are
skipped and listed. The CSV's `source` names the GPU, driver, CUDA and PyTorch versions.

PyTorch is imported only when the script runs; costdsl does not depend on it. The shapes come
from `kernel_specs`, which needs no GPU and is tested with the package.
"""
from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from pathlib import Path

import sympy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import costdsl  # noqa: E402
from costdsl import symbols as S  # noqa: E402
from costdsl.graph.schema import nodes  # noqa: E402

COLUMNS = ["hardware", "model", "stage", "batch", "seq", "tokens", "w_bits", "a_bits", "kv_bits",
           "op", "time_s", "source"]
TIMED = ("linear", "flash_attention", "rmsnorm", "swiglu", "add", "rope", "embedding")


@dataclass(frozen=True)
class KernelSpec:
    op: str
    kind: str
    shape: dict  # sizes the kernel needs, by name


def _number(expr, values) -> int:
    value = sympy.sympify(sympy.sympify(expr).xreplace(values))
    if not value.is_number:
        raise ValueError(f"{expr} is not bound by {values}")
    return int(value)


def kernel_specs(model, stage: str, batch: int, seq: int, tokens: int | None = None):
    """(timed kernels, skipped op names) of `model`'s `stage` at one size. The sizes come from
    the graph: rows and widths of each op's output, and its attention dimensions."""
    values = {S.batch: batch, S.seq: seq, S.w_bits: 16, S.a_bits: 16, S.kv_bits: 16}
    if tokens is not None:
        values[S.tokens] = tokens
    new = {"prefill": seq, "decode": 1, "step": tokens}[stage]
    cached = {"prefill": 0, "decode": seq, "step": seq}[stage]
    specs, skipped = [], []
    for n in nodes(model.graph(stage)):
        kind = n.kind
        if kind not in TIMED:
            skipped.append(n.name)
            continue
        rows, width = (_number(d, values) for d in n.out_shape[:2]) if kind != \
            "flash_attention" else (0, 0)
        if kind == "linear":
            d_in = _number(n.flops, values) // (2 * rows * width)
            specs.append(KernelSpec(n.name, kind, {"m": rows, "k": d_in, "n": width}))
        elif kind == "flash_attention":
            a = n.attrs
            specs.append(KernelSpec(n.name, kind, {
                "batch": batch, "heads": _number(a["heads"], values),
                "kv_heads": _number(a["kv_heads"], values),
                "head_dim": _number(a["head_dim"], values), "q_len": new,
                "kv_len": cached + new, "causal": stage != "decode"}))
        elif kind == "rope":
            specs.append(KernelSpec(n.name, kind, {"rows": rows, "width": width,
                                                   "head_dim": _number(n.attrs["head_dim"],
                                                                       values)}))
        else:
            specs.append(KernelSpec(n.name, kind, {"rows": rows, "width": width}))
    return specs, skipped


def _kernel(torch, spec: KernelSpec):
    """A zero-argument callable running the spec's kernel on fresh fp16 tensors."""
    F = torch.nn.functional
    dev, half = "cuda", torch.float16
    s = spec.shape
    if spec.kind == "linear":
        x, w = torch.randn(s["m"], s["k"], device=dev, dtype=half), \
            torch.randn(s["k"], s["n"], device=dev, dtype=half)
        return lambda: torch.matmul(x, w)
    if spec.kind == "flash_attention":
        q = torch.randn(s["batch"], s["heads"], s["q_len"], s["head_dim"], device=dev, dtype=half)
        k = torch.randn(s["batch"], s["kv_heads"], s["kv_len"], s["head_dim"], device=dev,
                        dtype=half)
        v = torch.randn_like(k)
        gqa = s["heads"] != s["kv_heads"]
        causal = s["causal"] and s["q_len"] == s["kv_len"]  # a chunk over a cache: no mask
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)
    x = torch.randn(s["rows"], s["width"], device=dev, dtype=half)
    if spec.kind == "rmsnorm":
        g = torch.ones(s["width"], device=dev, dtype=half)
        return lambda: F.rms_norm(x, (s["width"],), g)
    if spec.kind == "swiglu":
        y = torch.randn_like(x)
        return lambda: F.silu(x) * y
    if spec.kind == "add":
        y = torch.randn_like(x)
        return lambda: x + y
    if spec.kind == "rope":
        cos = torch.randn(s["rows"], s["width"], device=dev, dtype=half)
        sin = torch.randn_like(cos)
        half_dim = s["head_dim"] // 2

        def rope():
            h = x.view(s["rows"], -1, s["head_dim"])
            rotated = torch.cat((-h[..., half_dim:], h[..., :half_dim]), dim=-1).view_as(x)
            return x * cos + rotated * sin
        return rope
    if spec.kind == "embedding":
        table = torch.randn(32000, s["width"], device=dev, dtype=half)
        ids = torch.randint(0, 32000, (s["rows"],), device=dev)
        return lambda: F.embedding(ids, table)
    raise ValueError(spec.kind)


def time_kernel(torch, run, repeat: int, flush) -> float:
    """Median seconds of `run` over `repeat` timed runs, the L2 cache flushed before each."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeat):
        flush.zero_()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return times[len(times) // 2]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--hw", required=True, help="the hardware key to write in the CSV")
    p.add_argument("--stage", choices=("prefill", "decode", "step"), default="decode")
    p.add_argument("--batch", default="1")
    p.add_argument("--seq", default="1024")
    p.add_argument("--tokens", default=None, help="step stage: new tokens per sequence")
    p.add_argument("--pass", dest="passes", action="append", default=[])
    p.add_argument("--repeat", type=int, default=50)
    p.add_argument("-o", "--out", required=True)
    args = p.parse_args(argv)
    import torch  # only here: the package never needs it
    if not torch.cuda.is_available():
        print("measure.py needs an NVIDIA GPU with CUDA", file=sys.stderr)
        return 2
    model = costdsl.load(args.model, passes=args.passes)
    props = torch.cuda.get_device_properties(0)
    driver = getattr(torch.cuda, "driver_version", lambda: "?")
    source = (f"bench/measure.py on {props.name} (driver {driver() if callable(driver) else '?'},"
              f" CUDA {torch.version.cuda}, torch {torch.__version__}), median of {args.repeat}"
              ", L2 flushed")
    flush = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    skipped_all = set()
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        tokens_list = _ints(args.tokens) if args.tokens else [None]
        for batch in _ints(args.batch):
            for seq in _ints(args.seq):
                for tokens in tokens_list:
                    specs, skipped = kernel_specs(model, args.stage, batch, seq, tokens)
                    skipped_all.update(skipped)
                    for spec in specs:
                        t = time_kernel(torch, _kernel(torch, spec), args.repeat, flush)
                        writer.writerow([args.hw, args.model, args.stage, batch, seq,
                                         tokens or "", 16, 16, 16, spec.op, f"{t:.6g}", source])
    if skipped_all:
        print("not timed (no kernel mapped): " + ", ".join(sorted(skipped_all)), file=sys.stderr)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
