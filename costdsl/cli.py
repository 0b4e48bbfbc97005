"""The `costdsl` command: argument parsing wired to the API. No analysis happens here."""
from __future__ import annotations

import argparse
import sys

from . import api
from .errors import CostDSLError
from .lower import STAGES
from .report import FORMATS


def _positive_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        return value
    return parse


def _bits(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a bitwidth must be a number, got {text!r}")
    if not 0 < value <= 64:
        raise argparse.ArgumentTypeError(f"a bitwidth must be in (0, 64], got {value:g}")
    return int(value) if value.is_integer() else value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .arch file")
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="which model of the file (default: the last one defined)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="bind a parameter the file leaves free, or override one (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costdsl", description="Symbolic roofline cost models of LLM inference.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="per-op roofline table of prefill and decode")
    _model_args(p)
    p.add_argument("--hw", required=True, metavar="HW",
                   help="a shipped hardware name (see `costdsl hardware`) or a .toml file")
    p.add_argument("--batch", type=_positive_int("--batch"), default=1)
    p.add_argument("--seq", type=_positive_int("--seq"), default=2048,
                   help="prompt length (prefill) and tokens already cached (decode)")
    p.add_argument("--w-bits", type=_bits, default=16, help="weight bitwidth (default 16)")
    p.add_argument("--a-bits", type=_bits, default=16, help="activation bitwidth (default 16)")
    p.add_argument("--kv-bits", type=_bits, default=16, help="KV-cache bitwidth (default 16)")
    p.add_argument("--stage", choices=("prefill", "decode", "all"), default="all")
    p.add_argument("--format", choices=tuple(FORMATS), default="text")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("check", help="parse and compile a .arch file; print a summary")
    _model_args(p)
    p.set_defaults(run=_check)

    p = sub.add_parser("hardware", help="list the shipped hardware files")
    p.set_defaults(run=_hardware)
    return parser


def _analyze(args) -> str:
    model = api.load(args.model, args.model_name, args.set)
    stages = STAGES if args.stage == "all" else (args.stage,)
    analysis = model.analyze(args.hw, batch=args.batch, seq=args.seq, w_bits=args.w_bits,
                             a_bits=args.a_bits, kv_bits=args.kv_bits, stages=stages)
    return FORMATS[args.format](analysis)


def _check(args) -> str:
    model = api.load(args.model, args.model_name, args.set)
    graph = model.graph("prefill")
    total = model.params()
    free = model.design.free
    params = f"{int(total):,} parameters" if total.is_number else f"parameters = {total}"
    tail = f"; free: {', '.join(free)}" if free else ""
    return (f"{args.model}: ok: model {model.name!r}, {graph.number_of_nodes()} ops, "
            f"{params}{tail}\n")


def _hardware(args) -> str:
    from .hardware import load_hardware, shipped_names
    from .report.units import si
    rows = [("name", "device", "fp16", "bandwidth", "memory", "ridge (ops/byte)")]
    for key in shipped_names():
        hw = load_hardware(key)
        fp16 = hw.peak.get("fp16")
        rows.append((key, hw.name, si(fp16, "OP/s") if fp16 else "-",
                     si(hw.bandwidth_Bps, "B/s"), f"{hw.memory_bytes / 2**30:g} GiB",
                     f"{hw.ridge('fp16'):.1f}" if fp16 else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = args.run(args)
    except CostDSLError as err:
        print(f"costdsl: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
