"""The `costdsl` command: argument parsing wired to the API. No analysis happens here.

Nothing here loads the compiler (sympy, networkx, lark) at import: `_answer` decides what a
command needs, and a model is compiled (`_load`) only where the cache cannot answer.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import re
import sys
from collections import Counter
from dataclasses import replace

import numpy as np

from .report.units import seconds
from .limits import ALL_STAGES, BITS_RANGE, COMPRESSION_ARGS, MAX_SIZE, STAGES, is_bitwidth
from .version import __version__
from .errors import CostDSLError
from .report import FORMATS
from .report.jsonsafe import dumps
from .report.jsonout import devices_dict
from .report.tables import priced_dict, priced_line

FORMULA_FORMATS = ("text", "markdown", "latex", "json")
"""The forms of `formulas` (report.formula_tables.FORMATS, named here so that the parser does
not load the printer)."""


def _positive_int(name):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}")
        if value < 1:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        if value > MAX_SIZE:
            raise argparse.ArgumentTypeError(f"{name} must be at most {MAX_SIZE:.0e}, got "
                                             f"{value}")
        return value
    return parse


def _seed(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a seed is a whole number, got {text!r}")
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"a seed is from 0 to 2^63 - 1, got {value}")
    return value


def _bits(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a bitwidth must be a number, got {text!r}")
    if not is_bitwidth(value):
        raise argparse.ArgumentTypeError(f"a bitwidth must be in {BITS_RANGE}, got {value:g}")
    return int(value) if value.is_integer() else value


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a .arch file")
    p.add_argument("--model", dest="model_name", metavar="NAME",
                   help="which model of the file (default: the last one defined)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="bind a parameter the file leaves free, or override one (repeatable)")
    p.add_argument("--pass", dest="passes", action="append", default=[], metavar="PASS",
                   help='a pass to apply after the file\'s own, e.g. "quantize(weights=4)" or '
                        '"flash_attention()" (repeatable; see `costdsl passes`)')


def _deployment_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hw", required=True, metavar="HW",
                   help="a shipped hardware name (see `costdsl hardware`) or a .toml file")
    _ideal_arg(p)
    p.add_argument("--batch", type=_positive_int("--batch"), default=1)
    p.add_argument("--seq", type=_positive_int("--seq"), default=2048,
                   help="prompt length (prefill) and tokens already cached (decode)")
    _bits_args(p)


def _measurement_args(p: argparse.ArgumentParser, hw_help: str) -> None:
    p.add_argument("measurements", nargs="+",
                   help="measurement CSV files (see the README for their columns)")
    p.add_argument("--hw", required=True, metavar="HW", help=hw_help)
    p.add_argument("--only-model", "--model", dest="only_model", metavar="MODEL",
                   help="use only the rows of this model (as the CSV names it; --model: the "
                        "older spelling)")
    p.add_argument("--pass", dest="passes", action="append", default=[], metavar="PASS",
                   help="a pass applied to every row's model (repeatable)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    _stack_arg(p, "the serving stack the measurements come from, e.g. \"trtllm 1.3.0rc20\": "
                  "calibrate writes its figures as [stack.NAME] (as [efficiency] where the file "
                  "has none or it is the default's stack), validate judges that stack's figures")


def _simulation_args(p: argparse.ArgumentParser, required: bool) -> None:
    """The request stream and the server of `simulate` (and `plot rate|timeline`)."""
    source = p.add_mutually_exclusive_group(required=required)
    source.add_argument("--requests", metavar="FILE.csv",
                        help="arrival_s,prompt_tokens,output_tokens (or an Azure LLM trace: "
                             "TIMESTAMP,ContextTokens,GeneratedTokens)")
    source.add_argument("--rate", type=float, metavar="R", help="Poisson arrivals per second")
    source.add_argument("--sweep-rate", metavar="A:B:N",
                        help="N rates from A to B (or a list): goodput against rate and the "
                             "largest rate meeting --slo")
    p.add_argument("--concurrency", type=_positive_int("--concurrency"), metavar="C",
                   help="at most C requests in flight: a request is sent at its time or when one "
                        "of the C finishes (vllm bench serve --max-concurrency); without "
                        "--rate or --requests, a closed loop of C clients")
    p.add_argument("--n", type=_positive_int("--n"), default=1000, help="synthetic requests")
    p.add_argument("--prompt", default="lognormal(1024, 0.8)", metavar="DIST",
                   help="prompt lengths: lognormal(median, sigma), uniform(a, b), normal(m, sd), "
                        "fixed(n)")
    p.add_argument("--output", default="lognormal(256, 0.6)", metavar="DIST",
                   help="output lengths, as --prompt")
    p.add_argument("--seed", type=_seed, default=1,
                   help="the random generator's seed (a whole number from 0)")
    p.add_argument("--scheduler", type=_scheduler, default=("continuous", 0, 0),
                   metavar="NAME",
                   help="static, continuous, chunked, or disaggregated(prefill=P, decode=D) on a "
                        "system (DistServe: prefill and decode on separate instances)")
    p.add_argument("--chunk", type=_positive_int("--chunk"), default=512,
                   help="token budget per iteration of the chunked scheduler")
    p.add_argument("--max-batch", type=_positive_int("--max-batch"), default=256)
    p.add_argument("--max-tokens", type=_positive_int("--max-tokens"), default=8192,
                   help="new tokens per iteration of the continuous scheduler")
    p.add_argument("--kv-block", type=_positive_int("--kv-block"), default=16)
    p.add_argument("--kv-memory", type=float, default=0.9,
                   help="fraction of the memory left after weights and activations for KV")
    p.add_argument("--preempt", choices=("recompute", "swap"), default="recompute")
    p.add_argument("--replicas", type=_positive_int("--replicas"), default=1,
                   help="instances of the layout behind a router (default 1)")
    p.add_argument("--router", default="least_outstanding",
                   choices=("round_robin", "least_outstanding", "least_kv", "prefix_affinity"),
                   help="how a fleet's router picks a replica (default least_outstanding)")
    p.add_argument("--prefix-cache", choices=("on", "off"), default="on",
                   help="share KV blocks of common prefixes (requests naming hash_ids or a "
                        "session_id); default on, as vLLM, SGLang and TensorRT-LLM run")
    p.add_argument("--slo", metavar="LIST", help='e.g. "ttft=2s,tpot=100ms" (also e2e=)')
    p.add_argument("--attainment", type=float, default=0.9,
                   help="share of requests that must meet the SLO in --sweep-rate (default 0.9)")
    p.add_argument("--workers", type=_positive_int("--workers"), metavar="N",
                   help="--sweep-rate: local processes that simulate a round's rates together "
                        "(default: the machine's cores)")


def _decoding_arg(p: argparse.ArgumentParser, more: str = "") -> None:
    p.add_argument("--decoding", metavar="STRATEGY",
                   help='a decoding strategy, e.g. speculative(draft="tinyllama-1.1b", k=4, '
                        'accept=0.8), medusa(heads=4, accept=0.7), mtp(depth=2, accept=0.8) '
                        "(the model's own MTP module), lookahead(...)" + more)


def _ideal_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ideal", action="store_true",
                   help="ignore the hardware file's [efficiency]: the ideal roofline of the "
                        "datasheet figures")
    _stack_arg(p)
    p.add_argument("--engine", choices=("on", "off"), default="on",
                   help="the serving engine around the kernels, where the stack has its "
                        "figures ([efficiency.framework], fitted to served requests): on "
                        "(default), or off: the kernels alone, as calibrated")


_STACK_HELP = ("the serving stack whose measured kernels price the times (vllm, trtllm, "
               "sglang: those the hardware file has; `costdsl hardware` lists them); default: "
               "the file's [efficiency], vLLM for the shipped files")


def _stack_arg(p: argparse.ArgumentParser, help: str = _STACK_HELP) -> None:
    p.add_argument("--stack", metavar="NAME", help=help)


def _hw(args):
    """The hardware of a model command, ideal when --ideal is given."""
    from .hardware import load_hardware
    return _ideal(load_hardware(args.hw), args)


def _hws(args) -> list:
    """The hardware of a command that takes several (--hw A,B), each ideal under --ideal."""
    from .hardware import load_hardware
    hws = [_ideal(load_hardware(h.strip()), args) for h in args.hw.split(",") if h.strip()]
    if not hws:
        raise CostDSLError(f"--hw {args.hw!r}: no hardware named",
                           hint="e.g. --hw nvidia-a100-80gb,nvidia-h100-sxm")
    return hws


def _ideal(hw, args):
    if getattr(args, "stack", None):
        hw = hw.with_stack(args.stack)
    if getattr(args, "ideal", False):
        return hw.ideal()
    return hw.with_framework(None) if getattr(args, "engine", "on") == "off" else hw


def _bits_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--w-bits", type=_bits, default=16, help="weight bitwidth")
    p.add_argument("--a-bits", type=_bits, default=16, help="activation bitwidth")
    p.add_argument("--kv-bits", type=_bits, default=16, help="KV-cache bitwidth")


def _stage_args(p: argparse.ArgumentParser, default: str, all: bool = True,
                tokens_range: bool = False) -> None:
    """--stage (prefill, decode, the general step, and `all` = prefill and decode) and --tokens,
    the new tokens per sequence of the step stage."""
    choices = ALL_STAGES + (("all",) if all else ())
    p.add_argument("--stage", choices=choices, default=default,
                   help=f"default {default}; step: --tokens new tokens per sequence over --seq "
                        "cached; chunk: the same as a prompt's chunk (a prefill path: a dense "
                        "MLA up-projects its latents); verify: the step with logits for every "
                        "new token"
                        + ("; all: prefill and decode" if all else ""))
    if tokens_range:
        p.add_argument("--tokens", default=None, metavar="RANGE",
                       help="new tokens per sequence of the step stage: 1:16 or 1,4,8")
    else:
        p.add_argument("--tokens", type=_positive_int("--tokens"), default=None,
                       help="new tokens per sequence of the step stage (decode: 1)")


def _stages(choice: str) -> tuple[str, ...]:
    return STAGES if choice == "all" else (choice,)


def _bits_of(args) -> dict:
    return {"w_bits": args.w_bits, "a_bits": args.a_bits, "kv_bits": args.kv_bits}


def _variant(pairs: list[str]) -> dict | None:
    """--variant NAME=EXPR pairs -> parameter values (text, parsed by the language later)."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip().isidentifier() or not value.strip():
            raise CostDSLError(f"--variant {pair!r}: expected PARAM=VALUE, e.g. "
                               "--variant index_heads=0")
        out[name.strip()] = value.strip()
    return out or None


def _versus(pairs: list[str]) -> dict | None:
    out = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        if name not in ("w_bits", "a_bits", "kv_bits"):
            raise CostDSLError(f"--versus {pair!r}: expected w_bits, a_bits or kv_bits=VALUE")
        try:
            out[name] = _bits(value)
        except argparse.ArgumentTypeError as err:
            raise CostDSLError(f"--versus {pair!r}: {err}") from None
    return out or None


class _Help(argparse.HelpFormatter):
    """Help that shows each option's default (unless its text already says it, or there is
    none to show)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS, []) \
                or action.option_strings == [] or isinstance(action.default, tuple):
            return text
        return text + " (default: %(default)s)"


def _solve_help() -> str:
    """The symbols `crossover --solve` answers for, from what exists."""
    compression = sorted({a for args in COMPRESSION_ARGS.values() for a in args})
    return ("batch, seq, tokens (step stage), w_bits, a_bits, kv_bits, or a model parameter "
            "left free (--free or a `?` in the file); with a pass: sparsity "
            "(contextual_sparsity), offload (offload), " + ", ".join(compression) +
            " (" + ", ".join(sorted(COMPRESSION_ARGS)) + ", with --target-time or "
            "--target-memory; rank alone for low_rank); with --decoding: accept, batch or k")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costdsl", description="Symbolic roofline cost models of LLM inference.")
    parser.add_argument("--version", action="version", version=f"costdsl {__version__}")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither read nor write the compile cache (COSTDSL_NO_CACHE=1)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress line on the terminal during long work")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser = functools.partial(sub.add_parser, formatter_class=_Help)

    p = sub.add_parser("cache", help="the persistent compile cache: where it is, or clear it")
    p.add_argument("action", choices=("info", "clear"))
    p.set_defaults(run=_cache)

    p = sub.add_parser("analyze", help="per-op roofline table of prefill and decode")
    _model_args(p)
    _deployment_args(p)
    _stage_args(p, "all")
    p.add_argument("--format", choices=tuple(FORMATS), default="text")
    p.set_defaults(run=_analyze)

    p = sub.add_parser("compare", help="the model with its passes against no passes, per stage")
    _model_args(p)
    _deployment_args(p)
    _stage_args(p, "all")
    _decoding_arg(p, ": also compares the strategy's time per token with plain decoding")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_compare)

    p = sub.add_parser("fit", help="largest batch and longest context that fit in memory")
    _model_args(p)
    _deployment_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_fit)

    p = sub.add_parser("serve-curve", help="throughput against latency and memory over batch")
    _model_args(p)
    p.add_argument("--hw", required=True, metavar="HW")
    _ideal_arg(p)
    p.add_argument("--seq", type=_positive_int("--seq"), required=True, help="prompt length")
    p.add_argument("--gen", type=_positive_int("--gen"), required=True,
                   help="tokens generated per request")
    p.add_argument("--batch", default=None, metavar="RANGE",
                   help="batch sizes: 1:256, 1:4096:log13 or 1,2,4 (default: powers of two "
                        "up to twice the largest batch that fits)")
    _bits_args(p)
    _decoding_arg(p, ": adds its time per token and speedup at each batch")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_serve_curve)

    p = sub.add_parser("sweep", help="stage times, bound mix and memory over a grid, to CSV/JSON")
    _model_args(p)
    p.add_argument("--hw", required=True, metavar="HW[,HW...]",
                   help="one or more hardware files, comma-separated")
    _ideal_arg(p)
    p.add_argument("--batch", default="1", metavar="RANGE", help="1:1024, 1:1024:log11 or 1,8")
    p.add_argument("--seq", default="2048", metavar="RANGE", help="128:32768:log16 or a list")
    p.add_argument("--w-bits", default="16", metavar="LIST", help="e.g. 4,8,16")
    p.add_argument("--a-bits", default="16", metavar="LIST")
    p.add_argument("--kv-bits", default="16", metavar="LIST")
    _stage_args(p, "all", tokens_range=True)
    _decoding_arg(p, ": adds its time per token and speedup at each point")
    p.add_argument("-o", "--out", metavar="FILE.csv|FILE.parquet|FILE.json|FILE.npz",
                   help="write here (format from the suffix; .npz: one NumPy array per column, "
                        "the fast form for big grids); default: CSV on standard output")
    p.set_defaults(run=_sweep)

    p = sub.add_parser("plot", help="roofline, batch, seq, memory or serving plot (PNG/SVG)")
    p.add_argument("kind", choices=("roofline", "batch", "seq", "memory", "serve",
                                     "speculative", "rate", "timeline"))
    _model_args(p)
    _deployment_args(p)
    _simulation_args(p, required=False)
    _stage_args(p, "decode", all=False)
    p.add_argument("--gen", type=_positive_int("--gen"), default=256,
                   help="generated tokens per request (serve)")
    p.add_argument("--range", dest="sweep", metavar="RANGE",
                   help="x values for batch/seq/memory/serve plots, e.g. 1:4096:log64")
    _decoding_arg(p, " (the speculative plot needs it)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.png|FILE.svg")
    p.set_defaults(run=_plot)

    p = sub.add_parser("calibrate", help="fit the hardware's efficiencies to measured times")
    _measurement_args(p, "the measured hardware")
    p.add_argument("--no-launch", action="store_true", help="fit no launch cost (keep it 0)")
    p.add_argument("-o", "--out", metavar="FILE.toml",
                   help="write the hardware file with the fitted [efficiency] section here")
    p.set_defaults(run=_calibrate)

    p = sub.add_parser("validate", help="predicted against measured times, ideal and calibrated")
    _measurement_args(p, "the hardware; its [efficiency] is the calibrated model judged")
    p.add_argument("--folds", type=_positive_int("--folds"), default=None,
                   help="also k-fold cross-validate a fit: each row predicted by a fit on the "
                        "other folds")
    p.add_argument("--group", choices=("model", "kind", "stage", "file"), default=None,
                   help="fold by model, op kind, stage or measurement file instead of at random: "
                        "judge the fit on a model (or kind, or source) it has not seen")
    p.add_argument("--plot", metavar="FILE.png|FILE.svg",
                   help="predicted against measured, log axes, with y = x")
    p.set_defaults(run=_validate)

    p = sub.add_parser("passes", help="list the passes and their arguments")
    p.set_defaults(run=_passes)

    p = sub.add_parser("crossover", help="where each op changes bound, solved in closed form")
    _model_args(p)
    _deployment_args(p)
    p.add_argument("--solve", required=True, metavar="SYMBOL", help=_solve_help())
    _stage_args(p, "decode")
    p.add_argument("--free", action="append", default=[], metavar="SYMBOL",
                   help="leave this symbol free in the answers instead of bound (repeatable)")
    _decoding_arg(p, "; with it, --solve accept (break-even acceptance rate), batch (where "
                     "speculation stops paying) or k (the best draft length)")
    p.add_argument("--versus", action="append", default=[], metavar="BITS=VALUE",
                   help="also report where this lower bitwidth stops saving time, "
                        "e.g. --w-bits 4 --versus w_bits=2")
    p.add_argument("--variant", action="append", default=[], metavar="PARAM=VALUE",
                   help="also report where the model and this variant of it (its parameters "
                        "set so) take equal stage time, e.g. --variant index_heads=0: "
                        "DeepSeek-V3.2 against dense attention (repeatable)")
    p.add_argument("--target-time", metavar="TIME",
                   help="with --solve on a compression pass's argument: the stage time to reach "
                        "(e.g. 10ms)")
    p.add_argument("--target-memory", metavar="BYTES",
                   help="with --solve on a compression pass's argument: the weights + KV cache "
                        "to reach (e.g. \"10 GB\")")
    p.add_argument("--dense", type=float, default=0.95, metavar="FRACTION",
                   help="with --solve sparsity: the share of the weights at which a batch's "
                        "union of kept rows counts as dense (default 0.95)")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_crossover)

    p = sub.add_parser("latency", help="TTFT, time per output token and end-to-end time")
    _model_args(p)
    _deployment_args(p)
    _decoding_arg(p)
    p.add_argument("--gen", type=_positive_int("--gen"), required=True,
                   help="tokens generated per sequence")
    p.add_argument("--image-tokens", type=_positive_int("--image-tokens"), default=0,
                   metavar="N", help="of the prompt's --seq tokens, N come from images: the "
                                     "first token waits for the model's vision encoder "
                                     "(\"<name>-Vision\") over their patches")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_latency)

    p = sub.add_parser("plan", help="every layout of a system's devices and bitwidth, ranked")
    _model_args(p)
    p.add_argument("--hw", required=True, metavar="SYSTEM",
                   help="a system (or device) hardware file; see `costdsl hardware`")
    _ideal_arg(p)
    p.add_argument("--seq", type=_positive_int("--seq"), default=2048, help="prompt length")
    p.add_argument("--gen", type=_positive_int("--gen"), default=256,
                   help="tokens generated per sequence")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--batch", type=_positive_int("--batch"), default=None,
                      help="every plan at this batch (default 1)")
    size.add_argument("--max-batch", nargs="?", const=MAX_SIZE, default=None, metavar="N",
                      type=_positive_int("--max-batch"),
                      help="each plan at the largest batch that fits it, at most N (as "
                           "simulate's --max-batch: the most sequences in a batch)")
    p.add_argument("--objective", choices=("latency", "throughput"), default="latency")
    p.add_argument("--w-bits", "--bits", dest="bits", default="16,8,4", metavar="LIST",
                   help="weight bitwidths to try, comma-separated (--bits: the older "
                        "spelling)")
    p.add_argument("--kv-bits", type=_bits, default=16)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_plan)

    p = sub.add_parser("simulate", help="serve a request stream: continuous batching, chunked "
                                        "prefill, paged KV; latency percentiles and goodput")
    _model_args(p)
    p.add_argument("--hw", required=True, metavar="HW", help="a hardware or system file")
    _ideal_arg(p)
    _simulation_args(p, required=False)   # or --concurrency alone: _simulate asks for one
    _bits_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("-o", "--out", metavar="FILE.csv", help="write one row per request here")
    p.add_argument("--plot", metavar="FILE.png",
                   help="with --sweep-rate: p99 TTFT and TPOT against rate; otherwise the "
                        "run's timeline of batch size and KV blocks")
    _decoding_arg(p, " (a draft model's chain: the draft's steps and the target's "
                     "verification each iteration)")
    p.set_defaults(run=_simulate)

    p = sub.add_parser("search", help="the deployment meeting an SLO with the fewest GPUs: "
                                      "layouts, replicas, aggregated or disaggregated")
    _model_args(p)
    p.add_argument("--hw", required=True, metavar="SYSTEM[,SYSTEM...]",
                   help="systems (or devices) to deploy on; several: each is searched, and "
                        "a disaggregated server may prefill on one and decode on another")
    _ideal_arg(p)
    p.add_argument("--slo", required=True, metavar="LIST",
                   help='targets and their quantile, e.g. "ttft=1s,tpot=50ms,quantile=p90" '
                        "(default quantile p90)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--rate", type=float, metavar="R", help="requests/s the fleet serves")
    target.add_argument("--concurrency", type=_positive_int("--concurrency"), metavar="C",
                        help="requests in flight the fleet holds")
    p.add_argument("--isl", type=_positive_int("--isl"), metavar="N",
                   help="prompt tokens of every request (or --prompt DIST)")
    p.add_argument("--osl", type=_positive_int("--osl"), metavar="N",
                   help="output tokens of every request (or --output DIST)")
    p.add_argument("--prompt", metavar="DIST", help="prompt lengths, as simulate's --prompt")
    p.add_argument("--output", metavar="DIST", help="output lengths, as simulate's --output")
    p.add_argument("--requests", metavar="FILE.csv",
                   help="take the lengths (and hash_ids or session_id prefixes) from a "
                        "request file: its first --n rows")
    p.add_argument("--n", type=_positive_int("--n"), default=200,
                   help="requests simulated per trial (default 200)")
    p.add_argument("--seed", type=_seed, default=1)
    p.add_argument("--gpus", type=_positive_int("--gpus"), metavar="N",
                   help="the most GPUs the deployment may use")
    p.add_argument("--price", metavar="LIST",
                   help='$ per GPU-hour by hardware, e.g. "nvidia-dgx-h100=2.5"')
    p.add_argument("--w-bits", "--bits", dest="bits", default="16", metavar="LIST",
                   help="weight bitwidths to try, comma-separated (default 16)")
    p.add_argument("--kv-bits", dest="kv_bits_list", default="16", metavar="LIST",
                   help="KV-cache bitwidths to try (default 16)")
    p.add_argument("--mode", default="aggregated,disaggregated", metavar="LIST",
                   help="aggregated, disaggregated or both (default both)")
    p.add_argument("--schedulers", default="continuous,chunked", metavar="LIST",
                   help="schedulers of an aggregated instance (default continuous,chunked)")
    p.add_argument("--chunk", type=_positive_int("--chunk"), default=2048,
                   help="token budget per iteration of the chunked scheduler (default 2048)")
    p.add_argument("--objective", choices=("gpus", "cost", "throughput_per_gpu"),
                   default="gpus")
    workers = p.add_mutually_exclusive_group()
    workers.add_argument("--workers", type=_positive_int("--workers"), metavar="N",
                         help="local worker processes (default: the machine's cores)")
    workers.add_argument("--cluster", metavar="ADDRESS",
                         help="a running Dask scheduler, e.g. tcp://10.0.0.5:8786 (needs "
                              "costdsl[cluster])")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument("--out", metavar="FILE.csv", help="write the Pareto frontier as CSV")
    p.add_argument("--plot", metavar="FILE.png", help="plot the deployments and the frontier")
    p.set_defaults(run=_search)

    p = sub.add_parser("report", help="one self-contained HTML report: graph, roofline, "
                                      "tables, crossovers and formulas")
    _model_args(p)
    _deployment_args(p)
    p.add_argument("--stage", choices=("prefill", "decode", "all"), default="all")
    p.add_argument("--live", action="store_true",
                   help="controls that recompute every op in the page (batch, seq, bitwidths, "
                        "the hardware among --hw A,B,...), the view kept in the URL")
    p.add_argument("--compare", metavar="MODEL",
                   help="with --live: a second model the page compares with (the model without "
                        "its passes is offered too, where it has some)")
    p.add_argument("-o", "--out", required=True, metavar="FILE.html")
    p.set_defaults(run=_report)

    p = sub.add_parser("graph", help="the op graph with formulas as attributes: DOT, GraphML, "
                                     "JSON")
    _model_args(p)
    p.add_argument("--stage", choices=ALL_STAGES, default="decode")
    p.add_argument("--format", choices=("dot", "graphml", "json"), default="dot")
    p.add_argument("-o", "--out", metavar="FILE", help="write here (default: standard output)")
    p.set_defaults(run=_graph)

    p = sub.add_parser("formulas", help="per-op cost formulas for documentation")
    _model_args(p)
    _stage_args(p, "all")
    p.add_argument("--keep", default="", metavar="A,B,...",
                   help="model parameters to keep as symbols (the others are bound)")
    p.add_argument("--format", choices=FORMULA_FORMATS, default="text")
    p.set_defaults(run=_formulas)

    p = sub.add_parser("sensitivity", help="elasticity of stage time to each knob")
    _model_args(p)
    _deployment_args(p)
    _stage_args(p, "all")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_sensitivity)

    p = sub.add_parser("check", help="parse and compile a .arch file; print a summary")
    _model_args(p)
    p.set_defaults(run=_check)

    p = sub.add_parser("params", help="total and active parameters, by op")
    _model_args(p)
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(run=_params)

    p = sub.add_parser("import", help="write a .arch file from a Hugging Face config.json")
    p.add_argument("config", help="a config.json")
    p.add_argument("--name", help="the model's name (default: _name_or_path or the folder)")
    p.add_argument("-o", "--out", help="write here instead of standard output")
    p.set_defaults(run=_import)

    p = sub.add_parser("hardware", help="list the shipped hardware files")
    p.set_defaults(run=_hardware)
    _show_defaults(sub)
    return parser


def _show_defaults(sub) -> None:
    """An option with no help text still shows its default (argparse prints nothing for it)."""
    for command in sub.choices.values():
        for action in command._actions:
            if action.help is None and action.option_strings and \
                    action.default not in (None, False, argparse.SUPPRESS):
                action.help = f"(default: {action.default})"


def _analyze(args) -> str:
    """From the cache where it holds this model's record (the compiler is not loaded), else
    compiled and kept; the numbers come from the record either way."""
    from . import recall
    from .analysis.programs import AnalysisProgram
    from .analysis.records import Settings, check_stages
    hw, inputs = _recall_inputs(args)
    stages = _stages(args.stage)
    check_stages(args.tokens, stages)
    settings = Settings(args.batch, args.seq, tokens=args.tokens, **_bits_of(args)).validate()
    program = recall.recalled(
        "analyze", {**inputs, "stages": stages, "bits": _bits_of(args)},
        lambda: _load(args).analysis_record(hw, stages, settings),
        lambda record: AnalysisProgram(record).compile())
    return FORMATS[args.format](program.analysis(hw, settings))


def _recall_inputs(args):
    """The hardware of a command answered from a record (recall), and what names the record:
    the model as given and the hardware's figures. A broken model file is reported before a
    broken hardware file, as the commands that compile first report it."""
    from . import recall
    from .hardware import figures_key
    try:
        hw = _hw(args)
    except CostDSLError:
        _load(args)
        raise
    return hw, {**recall.model_inputs(args.model, args.model_name, args.set, args.passes),
                "hardware": figures_key(hw)}


def _compare(args) -> str:
    from .report import answers as answers_report
    from .report import comparison
    model = _load(args)
    decoding = model.decoding_strategy(args.decoding)
    if not model.passes and decoding is None:
        raise CostDSLError("compare needs passes or a decoding strategy: give --pass or "
                           "--decoding, or a file with a passes or decoding section",
                           hint='e.g. --pass "quantize(weights=4)" --pass "flash_attention()"')
    hw = _hw(args)
    spec = None if decoding is None else model.speculate(hw, decoding, args.batch, args.seq,
                                                         **_bits_of(args))
    if not model.passes:  # the strategy against plain decoding, nothing else changed
        if args.format == "json":
            return dumps({"model": model.name, "hardware": hw.key,
                          "decoding": answers_report.speculation_dict(spec)})
        return "\n".join(answers_report.speculation_lines(spec)) + "\n"
    result = model.compare(hw, args.batch, args.seq, stages=_stages(args.stage),
                           tokens=args.tokens, **_bits_of(args))
    if args.format == "json":
        out = comparison.to_dict(result)
        if spec is not None:
            out["decoding"] = answers_report.speculation_dict(spec)
        return dumps(out)
    return comparison.text(result) + ("\n" + "\n".join(answers_report.speculation_lines(spec))
                                      + "\n" if spec is not None else "")


def _fit(args) -> str:
    from .report import answers as answers_report
    model = _load(args)
    hw = _hw(args)
    result = model.fit(hw, args.seq, args.batch, **_bits_of(args))
    if args.format == "json":
        return dumps(answers_report.fit_dict(model.name, hw, result))
    return answers_report.fit_text(model.name, hw, result, _bits_of(args))


def _serve_curve(args) -> str:
    """Plain decoding: from the curve's record (recall), which answers any batch sizes; a
    decoding strategy needs the compiled model."""
    from . import recall
    from .ranges import parse_range
    from .report import answers as answers_report
    from .serving.curve import serve_curve, speculative_serving
    hw, inputs = _recall_inputs(args)
    bits = _bits_of(args)
    batches = parse_range(args.batch, "batch") if args.batch else None
    spec = None
    if args.decoding:
        model = _load(args)
        decoding = model.decoding_strategy(args.decoding)
        curve = serve_curve(model, hw, args.seq, args.gen, batches, bits)
        spec = speculative_serving(model, hw, decoding, curve, bits)
        name, devices = model.name, model.devices(hw) if hw.count > 1 else None
    else:
        def build():
            model = _load(args)
            devices = model.devices(hw) if hw.count > 1 else None
            return {"name": model.name, "devices": devices and devices.record(),
                    "curve": model.serve_record(hw, args.seq, args.gen, bits)}
        name, devices, program = recall.recalled(
            "serve-curve", {**inputs, "bits": bits, "seq": args.seq, "gen": args.gen}, build,
            _curve_of)
        curve = program.curve(hw, args.seq, args.gen, batches, bits)
    if args.format == "json":
        out = answers_report.serve_dict(name, hw, curve, spec)
        if devices is not None:
            out["devices"] = devices_dict(devices)
        return dumps(out)
    return answers_report.serve_text(name, hw, curve, spec, devices)


def _curve_of(record: dict):
    """(model name, devices, ServeProgram) of a serve-curve record."""
    from .analysis.records import Devices
    from .serving.curve import ServeProgram
    devices = record["devices"]
    return (str(record["name"]), devices and Devices.of_record(devices),
            ServeProgram(record["curve"]))


def _sweep(args) -> str:
    from .report import sweepout
    from .analysis.sweep import bit_combinations, parse_range, sweep
    model = _load(args)
    hws = _hws(args)
    notes: list[str] = []
    tokens = parse_range(args.tokens, "tokens", notes=notes) if args.tokens else None
    batches, seqs = parse_range(args.batch, "batch", notes=notes), parse_range(args.seq, "seq",
                                                                               notes=notes)
    for note in notes:
        print(f"costdsl: note: {note}", file=sys.stderr)
    table = sweep(model, hws, batches, seqs,
                  bit_combinations(args.w_bits, args.a_bits, args.kv_bits), _stages(args.stage),
                  tokens, model.decoding_strategy(args.decoding))
    out = args.out or ""
    meta = {"model": model.name, "passes": [c.text or c.name for c in model.passes]}
    if out.endswith((".npz", ".parquet", ".csv")):
        writer = {".npz": lambda: sweepout.write_npz(table, out, meta),
                  ".parquet": lambda: _parquet(sweepout, table, out, meta),
                  ".csv": lambda: sweepout.write_csv(table, out)}[out[out.rindex("."):]]
        try:
            writer()
        except OSError as err:
            raise CostDSLError(f"cannot write {out}: {err.strerror or err}") from None
        return f"wrote {out}: {len(table):,} rows\n"
    if out.endswith(".json"):
        text = sweepout.json_text(table, meta)
    elif not out:
        text = sweepout.csv_text(table)
    else:
        raise CostDSLError(f"--out {out}: expected a .csv, .parquet, .json or .npz file name")
    if not out:
        return text
    _write(out, text)
    return f"wrote {out}: {len(table):,} rows\n"


def _parquet(sweepout, table, out: str, meta: dict) -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CostDSLError("--out *.parquet needs pyarrow",
                           hint="pip install 'costdsl[parquet]'") from None
    sweepout.write_parquet(table, out, meta)


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError as err:
        raise CostDSLError(f"cannot write {path}: {err.strerror or err}") from None


_PLOT_RANGES = {"batch": "1:4096:log64", "seq": "128:131072:log64",
                "memory": "128:131072:log64", "serve": None, "speculative": None}


def _plot(args) -> str:
    from .analysis import curves
    from . import plots
    from .analysis.sweep import parse_range
    model = _load(args)
    hw = _hw(args)
    bits = _bits_of(args)
    if args.kind in ("rate", "timeline"):
        return _simulate(args, plot=args.out)
    spec = args.sweep or _PLOT_RANGES.get(args.kind)
    values = parse_range(spec, "range") if spec else None
    if args.kind == "roofline":
        analysis = model.analyze(hw, args.batch, args.seq, stages=(args.stage,),
                                 tokens=args.tokens, **bits)
        path = plots.roofline(analysis, args.stage, args.out)
    elif args.kind in ("batch", "seq"):
        fixed = {"seq": args.seq} if args.kind == "batch" else {"batch": args.batch}
        if args.tokens is not None:
            fixed["tokens"] = args.tokens
        curve = curves.stage_curve(model, hw, args.stage, args.kind, values, fixed, bits)
        path = plots.stage(curve, args.out)
    elif args.kind == "speculative":
        import numpy as np
        decoding = model.decoding_strategy(args.decoding)
        if decoding is not None and decoding.lookahead:
            raise CostDSLError("plot speculative draws speculation with a draft model over "
                               "draft lengths; lookahead has no draft length",
                               hint="use serve-curve or crossover --decoding for lookahead")
        if decoding is None:
            raise CostDSLError("plot speculative needs --decoding",
                               hint='e.g. --decoding \'speculative(draft="tinyllama-1.1b", k=4, '
                                    'accept=0.8)\'')
        batches = values if values is not None else 2.0 ** np.arange(0, 11)
        data = curves.speculative_curves(model, hw, decoding, args.batch, args.seq, bits,
                                         batches)
        path = plots.speculative(data, args.out)
    elif args.kind == "memory":
        path = plots.memory(curves.memory_curve(model, hw, args.batch, values, bits), args.out)
    else:
        from .serving.curve import serve_curve
        curve = serve_curve(model, hw, args.seq, args.gen, values, bits)
        path = plots.serve(curve, model.name, hw, args.out)
    return f"wrote {path}\n"


def _measured(args, pick_stack: bool = True):
    """The measurement rows (filtered by --model) resolved against the hardware (priced by
    --stack's figures where `pick_stack`)."""
    from .analysis.measurements import MeasurementError, read_measurements, resolve
    from .hardware import load_hardware
    hw = load_hardware(args.hw)
    if pick_stack and args.stack:
        hw = hw.with_stack(args.stack)
    measured = []
    for path in args.measurements:
        rows = read_measurements(path)
        if args.only_model:
            rows = [r for r in rows if r.model == args.only_model]
        measured += resolve(rows, path, hw, lambda spec: _load_spec(spec, args.passes))
    if not measured:
        raise MeasurementError(f"--model {args.only_model}: no row names this model",
                               file=", ".join(args.measurements))
    return hw, measured


def _calibrate(args) -> str:
    from .analysis.calibration import fit_efficiency
    from .analysis.measurements import predict, stack_of_rows
    from .analysis.validation import errors
    from .files import read_user_text
    from .report import calibration as report
    hw, measured = _measured(args, pick_stack=False)
    source = ", ".join(args.measurements)
    stack = stack_of_rows([m.row for m in measured], args.stack or (
        hw.efficiency.stack if hw.efficiency else ""))
    from .hardware.stacks import section_for
    into = section_for(hw.efficiency, args.stack)
    tile = hw.efficiency.tile if hw.efficiency and into is None else None
    fit = fit_efficiency(measured, source=source, launch=not args.no_launch, sms=hw.sms,
                         tile=tile)
    before = errors(measured, predict(measured, None))
    after = errors(measured, predict(measured, fit.efficiency))
    tail = ""
    if args.out:
        text = report.calibrated_toml(read_user_text(hw.source, "hardware file"), fit, source,
                                      after, hw.efficiency.measured_as if hw.efficiency and
                                      hw.efficiency.measured_as else hw.key,
                                      stack=stack, into_stack=into)
        _write(args.out, text)
        tail = f"wrote {args.out}\n"
    if args.format == "json":
        return dumps(report.fit_dict(hw.key, fit, before, after))
    return report.fit_text(hw.name, fit, before, after) + tail


def _validate(args) -> str:
    from .analysis.measurements import predict
    from .analysis.validation import cross_validate, errors
    from .report import calibration as report
    hw, measured = _measured(args)
    columns = [("ideal", predict(measured, None))]
    if hw.efficiency is not None:
        columns.append(("calibrated", predict(measured, hw.efficiency)))
    folds = None
    if args.folds or args.group:
        held, folds = cross_validate(measured, args.folds or 5, args.group, sms=hw.sms,
                                     tile=hw.efficiency.tile if hw.efficiency else None)
        columns.append((f"{'by ' + args.group if args.group else str(folds) + '-fold'} held-out",
                        held))
    tables = [(name, errors(measured, values)) for name, values in columns]
    if args.plot:
        from . import plots
        plots.predicted_vs_measured(measured, columns, hw.name, args.plot)
    measured_under = Counter(m.row.stack for m in measured if m.row.stack)
    if args.format == "json":
        return dumps({"hardware": hw.key, "rows": len(measured), "folds": folds,
                      "group": args.group, "stack": hw.stack,
                      "measured_stacks": dict(measured_under),
                      "models": {name: report.error_dict(t) for name, t in tables}})
    stack = f" ({hw.stack}'s figures)" if hw.stack else ""
    head = (f"{len(measured)} measured rows on {hw.name}{stack}; absolute percentage error of "
            "the predicted times:")
    lines = [head, *report.error_lines(*tables)]
    others = {s: n for s, n in measured_under.items() if s != hw.stack}
    if others:
        lines.append("note: rows measured under " + ", ".join(
            f"{s} ({n})" for s, n in sorted(others.items())) + ", not the stack whose "
            f"figures judged them ({hw.stack or 'none named'})")
    if args.plot:
        lines.append(f"wrote {args.plot}")
    return "\n".join(lines) + "\n"


def _passes(args) -> str:
    from .graph.passes import PASSES
    lines = []
    for name in sorted(PASSES):
        spec = PASSES[name]
        sig = ", ".join(f"{a}=" + ("" if arg.default is None else str(arg.default))
                        for a, arg in spec.args.items())
        lines += [f"{name}({sig})", "    " + spec.doc.replace("\n", "\n    ")]
        lines += [f"      {a}: {arg.help}" for a, arg in spec.args.items() if arg.help]
        lines.append("")
    return "\n".join(lines)


def _load(args):
    """The model of a command: with _load_spec, the one place a command loads the compiler
    (`analyze` asks the cache first: recall)."""
    from . import api
    return api.load(args.model, args.model_name, args.set, passes=args.passes)


def _load_spec(spec: str, passes=()):
    from . import api
    return api.load(spec, passes=passes)


def _speculative_crossover(args, model) -> str:
    from .report import answers as answers_report
    hw = _hw(args)
    bits = _bits_of(args)
    decoding = model.decoding_strategy(args.decoding, args.solve)
    spec = model.speculate(hw, decoding, args.batch, args.seq, **bits)
    if args.solve == "accept":
        answer = answers_report.speculation_answer(
            "accept", spec, spec.break_even,
            None if spec.break_even is not None else
            "E(accept) runs from 1 to k + 1; a target step costs "
            f"{(spec.k * spec.draft_step_s + spec.verify_s) / spec.decode_s:.4g} plain steps",
            spec.break_even_expr, spec.break_even_closed)
    elif args.solve == "batch":
        limit = model.speculation_batch_limit(hw, args.decoding, args.seq, **bits)
        answer = answers_report.speculation_answer(
            "batch", spec, limit, None if limit is not None else
            f"speculation pays at every batch up to {MAX_SIZE:.0e} at this cache length "
            "(the verification stays as cheap, relative to a plain step, as it is here)")
    else:
        k, t = model.best_draft_length(hw, args.decoding, args.batch, args.seq, **bits)
        searched = f"heads = 1 to {spec.medusa[0]}" if spec.medusa else "k = 1 to 16"
        answer = answers_report.speculation_answer(
            "k", spec, k, f"{seconds(t)} per token, searched {searched}; no closed form (k "
            "sits in an exponent of E and in the verification's size)")
    if args.format == "json":
        return dumps(answer)
    return answers_report.speculation_answer_text(answer, spec)


def _sparsity_crossover(args, model) -> str:
    from .report import answers as answers_report
    if args.decoding or args.free or args.versus:
        raise CostDSLError("--solve sparsity takes no --decoding, --free or --versus")
    stage = args.stage if args.stage != "all" else "decode"
    answers = model.sparsity_answers(_hw(args), args.batch, args.seq, stage,
                                     tokens=args.tokens, dense_fraction=args.dense,
                                     **_bits_of(args))
    settings = {"stage": stage, "batch": args.batch, "seq": args.seq,
                **({"tokens": args.tokens} if args.tokens is not None else {})}
    if args.format == "json":
        return dumps(answers_report.sparsity_dict(answers, settings))
    return answers_report.sparsity_text(answers, settings)


_DURATION = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}


def _target(text: str | None, flag: str) -> float | None:
    """--target-time "10ms" (seconds by default) or --target-memory "10 GB" (bytes)."""
    import math
    import re
    from .hardware.device import parse_quantity
    if text is None:
        return None
    try:
        if flag == "--target-time":
            m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(ns|us|ms|s)?\s*", text)
            if not m:
                raise ValueError(f"{flag} {text!r}: expected a duration such as 10ms or 0.5s")
            value = float(m[1]) * _DURATION[m[2] or "s"]
        else:
            value = parse_quantity(text, "bytes", flag)
    except ValueError as err:
        raise CostDSLError(str(err)) from None
    if not (math.isfinite(value) and value > 0):
        raise CostDSLError(f"{flag} must be positive, got {text!r}")
    return value


def _compression_crossover(args, model) -> str:
    from .report import answers as answers_report
    if args.decoding or args.free or args.versus:
        raise CostDSLError(f"--solve {args.solve} on a compression pass takes no --decoding, "
                           "--free or --versus")
    stage = args.stage if args.stage != "all" else "decode"
    answers = model.compression_answers(
        args.solve, _hw(args), args.batch, args.seq, stage, tokens=args.tokens,
        target_time=_target(args.target_time, "--target-time"),
        target_memory=_target(args.target_memory, "--target-memory"), **_bits_of(args))
    settings = {"stage": stage, "batch": args.batch, "seq": args.seq,
                **({"tokens": args.tokens} if args.tokens is not None else {})}
    if args.format == "json":
        return dumps(answers_report.compression_dict(args.solve, answers, settings))
    return answers_report.compression_text(args.solve, answers, settings)


def _crossover(args) -> str:
    from .report import answers as answers_report
    model = _load(args)
    if args.solve == "sparsity":
        return _sparsity_crossover(args, model)
    if args.solve == "offload":
        return _offload_crossover(args, model)
    if any(args.solve in COMPRESSION_ARGS.get(c.name, ()) for c in model.passes):
        return _compression_crossover(args, model)
    if args.target_time or args.target_memory:
        raise CostDSLError("--target-time and --target-memory go with --solve on a compression "
                           "pass's argument", hint="e.g. --pass 'prune(ffn=0.5)' --solve ffn "
                                                   "--target-time 10ms")
    if args.solve in ("accept", "batch", "k") and model.decoding_strategy(args.decoding,
                                                                          args.solve):
        return _speculative_crossover(args, model)
    if args.decoding:
        raise CostDSLError(f"--solve {args.solve} with --decoding: solve for accept, batch or k")
    answers = [model.crossover(args.solve, _hw(args), stage, batch=args.batch, seq=args.seq,
                               free=args.free, versus=_versus(args.versus), tokens=args.tokens,
                               variant=_variant(args.variant), **_bits_of(args))
               for stage in _stages(args.stage)]
    return (answers_report.crossover_json if args.format == "json"
            else answers_report.crossover_text)(answers)


def _offload_crossover(args, model) -> str:
    from .report import offloads
    answers = {stage: model.offload_answers(_hw(args), args.batch, args.seq, stage,
                                            tokens=args.tokens, **_bits_of(args))
               for stage in _stages(args.stage)}
    if args.format == "json":
        return dumps(offloads.offload_dict(answers, args.batch))
    return offloads.offload_text(answers, args.batch)


def _latency(args) -> str:
    from .report import answers as answers_report
    model = _load(args)
    hw = _hw(args)
    result = model.latency(hw, args.batch, args.seq, args.gen, **_bits_of(args),
                           image_tokens=args.image_tokens)
    spec = None
    if model.decoding_strategy(args.decoding):  # at the request's mean cache length (step
        # times are linear in it)
        spec = model.speculate(hw, args.decoding, args.batch, args.seq + (args.gen - 1) // 2,
                               **_bits_of(args))
    if args.format == "json":
        out = answers_report.latency_dict(result)
        if spec is not None:
            out["decoding"] = {**answers_report.speculation_dict(spec),
                               "request": answers_report.with_strategy(result, spec)}
        return dumps(out)
    text = answers_report.latency_text(result, spec, args.decoding,
                                       model.keeps_attention_scores())
    return text + ("\n".join(answers_report.speculation_lines(spec)) + "\n" if spec else "")


def _plan(args) -> str:
    from .report import plans as plans_report
    model = _load(args)
    bits = _bits_list(args.bits, "--bits")
    batch = None if args.max_batch else (args.batch or 1)
    result = model.plan(_hw(args), args.seq, args.gen, batch, args.objective, bits,
                        args.kv_bits, max_batch=args.max_batch or MAX_SIZE)
    if args.format == "json":
        return dumps(plans_report.plan_dict(result))
    return plans_report.plan_text(result)


def _scheduler(text: str) -> tuple[str, int, int]:
    """("chunked", 0, 0), or ("disaggregated", P, D) from "disaggregated(prefill=P, decode=D)"."""
    text = text.strip()
    if text in ("static", "continuous", "chunked"):
        return text, 0, 0
    m = re.fullmatch(r"disaggregated\(\s*prefill\s*=\s*(\d+)\s*,\s*decode\s*=\s*(\d+)\s*\)",
                     text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected static, continuous, chunked or disaggregated(prefill=P, "
            "decode=D)")
    return "disaggregated", int(m.group(1)), int(m.group(2))


_SLO_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


def _slo(text: str | None) -> dict | None:
    """{"ttft": s, "tpot": s, "e2e": s} from "ttft=2s,tpot=100ms"."""
    if text is None:
        return None
    out = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name, value = name.strip(), value.strip()
        m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(us|ms|s)", value)
        if name not in ("ttft", "tpot", "e2e") or not m:
            raise CostDSLError(f"--slo {text!r}: expected ttft=, tpot= or e2e= with a duration "
                               f"such as 2s or 100ms, got {part.strip()!r}")
        out[name] = float(m.group(1)) * _SLO_UNITS[m.group(2)]
        if not 0 < out[name] < 1e7:
            raise CostDSLError(f"--slo {text!r}: {name} must be a positive duration")
    return out


def _search(args) -> str:
    from .serving.executor import default_workers
    from .serving.search import MODES, SCHEDULERS, Workload
    from .report import search as search_report
    from . import plots
    model = _load(args)
    systems = _hws(args)
    workload = Workload.from_stream(_search_stream(args), args.rate, args.concurrency)
    space = dict(w_bits=tuple(_bits_list(args.bits, "--bits")),
                 kv_bits=tuple(_bits_list(args.kv_bits_list, "--kv-bits")),
                 schedulers=_choices(args.schedulers, SCHEDULERS, "--schedulers"),
                 modes=_choices(args.mode, MODES, "--mode"), chunk=args.chunk,
                 gpus=args.gpus, prices=_prices(args.price), objective=args.objective)
    result = model.search(systems, _search_slo(args.slo), workload,
                          workers=args.workers or default_workers(), cluster=args.cluster,
                          **space)
    wrote = []
    if args.out:
        _write(args.out, search_report.frontier_csv(result))
        wrote.append(args.out)
    if args.plot:
        wrote.append(plots.pareto(result, args.plot))
    if args.format == "json":
        return dumps(search_report.search_dict(result))
    return search_report.search_text(result) + "".join(f"wrote {w}\n" for w in wrote)


def _search_stream(args):
    """The requests' lengths: fixed (--isl/--osl), drawn (--prompt/--output), or a file's."""
    from .serving.requests import Stream, read_requests, synthetic
    if args.requests:
        if any(v is not None for v in (args.isl, args.osl, args.prompt, args.output)):
            raise CostDSLError("--requests gives the lengths: drop --isl, --osl, --prompt and "
                               "--output")
        trace = read_requests(args.requests)
        n = min(args.n, len(trace))     # its first rows, in order: a chat's turns stay turns
        hashes = trace.hashes[:n] if trace.hashes is not None else None
        return Stream(np.zeros(n), trace.prompt[:n], trace.output[:n],
                      f"the first {n} requests of {args.requests}", hashes=hashes)
    if args.isl is not None and args.prompt is not None:
        raise CostDSLError("give --isl N or --prompt DIST, not both")
    if args.osl is not None and args.output is not None:
        raise CostDSLError("give --osl N or --output DIST, not both")
    prompt = args.prompt or (f"fixed({args.isl})" if args.isl else None)
    output = args.output or (f"fixed({args.osl})" if args.osl else None)
    if prompt is None or output is None:
        raise CostDSLError("give the request lengths: --isl N --osl N, --prompt DIST --output "
                           "DIST, or --requests FILE.csv")
    stream = synthetic(1.0, args.n, prompt, output, args.seed)
    if args.isl is not None and args.osl is not None:
        return replace(stream, source=f"ISL {args.isl}, OSL {args.osl}")
    return replace(stream, source=f"prompt {prompt}, output {output}")


_QUANTILE = re.compile(r"p([0-9]+(?:\.[0-9]+)?)|(0?\.[0-9]+)")


def _search_slo(text: str):
    """SLO(ttft, tpot, quantile) from "ttft=1s,tpot=50ms,quantile=p90"."""
    from .serving.search import SLO
    parts = [p.strip() for p in text.split(",") if p.strip()]
    quantile, rest = 0.9, []
    for part in parts:
        name, _, value = part.partition("=")
        if name.strip() != "quantile":
            rest.append(part)
            continue
        m = _QUANTILE.fullmatch(value.strip())
        if not m:
            raise CostDSLError(f"--slo {text!r}: quantile must be pNN (p90, p99.9) or a "
                               f"fraction such as 0.9, got {value.strip()!r}")
        quantile = float(m.group(1)) / 100 if m.group(1) else float(m.group(2))
    targets = _slo(",".join(rest)) if rest else {}
    if "e2e" in targets:
        raise CostDSLError(f"--slo {text!r}: search takes ttft= and tpot= targets")
    return SLO(targets.get("ttft"), targets.get("tpot"), quantile).validate()


def _bits_list(text: str, flag: str) -> list[float]:
    """Bitwidths from a comma-separated list (plan's and search's --bits)."""
    out = []
    for part in text.split(","):
        try:
            out.append(_bits(part.strip()))
        except argparse.ArgumentTypeError as err:
            raise CostDSLError(f"{flag} {text!r}: {err}") from None
    return out


def _choices(text: str, known: tuple[str, ...], flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise CostDSLError(f"{flag} {text!r}: expected some of " + ", ".join(known))
    return names


def _prices(text: str | None) -> dict:
    """{hardware key: $ per GPU-hour} from "nvidia-dgx-h100=2.5,nvidia-hgx-h200=3.5"."""
    out = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, value = part.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = math.nan
        if not name.strip() or not (math.isfinite(price) and price > 0):
            raise CostDSLError(f"--price {text!r}: expected HARDWARE=DOLLARS_PER_GPU_HOUR, got "
                               f"{part.strip()!r}")
        out[name.strip()] = price
    return out


def _rates(text: str) -> list[float]:
    """A:B:N (N rates, linear) or a comma list."""
    try:
        if ":" in text:
            low, high, count = text.split(":")
            values = list(np.linspace(float(low), float(high), int(count)))
        else:
            values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CostDSLError(f"--sweep-rate {text!r}: expected A:B:N or a list of rates") from None
    if not values or len(values) > 1000 or not all(math.isfinite(v) and v > 0 for v in values):
        raise CostDSLError(f"--sweep-rate {text!r}: 1 to 1,000 positive rates")
    return values


def _simulate(args, plot: str | None = None) -> str:
    """`simulate`, and `plot rate|timeline` (plot: the image to write)."""
    from .serving.requests import read_requests, synthetic
    from .serving.simulate import Config
    from .report import simulation as sim_report
    from . import plots
    plot = plot or getattr(args, "plot", None)
    if plot is not None and getattr(args, "kind", None) == "rate" and not args.sweep_rate:
        raise CostDSLError("plot rate needs --sweep-rate A:B:N and --slo")
    concurrency = getattr(args, "concurrency", None) or 0
    if not (args.requests or args.rate is not None or args.sweep_rate or concurrency):
        raise CostDSLError("give the requests: --requests FILE.csv, --rate R, --concurrency C "
                           "or --sweep-rate")
    if concurrency and args.replicas > 1:
        raise CostDSLError("--concurrency drives one instance; a fleet (--replicas) takes a "
                           "--rate or a --requests file")
    model = _load(args)
    hw = _hw(args)
    slo = _slo(args.slo)
    name, prefill, decode = args.scheduler
    config = Config(name, args.chunk, args.max_batch, args.max_tokens, args.kv_block,
                    args.kv_memory, args.preempt, prefill, decode,
                    prefix_cache=args.prefix_cache == "on", concurrency=concurrency).validate()
    bits = _bits_of(args)
    if args.sweep_rate:
        from .serving.executor import default_workers
        rows, best = model.rate_sweep(hw, _rates(args.sweep_rate), args.n, args.prompt,
                                      args.output, args.seed, config, slo, args.attainment,
                                      decoding=getattr(args, "decoding", None),
                                      workers=args.workers or default_workers(), **bits)
        table = [{"rate": r, **sim_report.summary_dict(s)} for r, s in rows]
        wrote = plots.rate(table, best, slo, model.name, hw.name, plot) if plot else None
        if getattr(args, "kind", None) == "rate":  # `plot rate`: the image is the answer
            return f"wrote {wrote}\n"
        if args.format == "json":
            return dumps({"rates": table, "max_rate": best, "slo": slo,
                          "attainment": args.attainment, **priced_dict(hw)})
        return priced_line(hw) + "\n" + \
            sim_report.rate_sweep_text(table, best, slo, args.attainment) + \
            (f"wrote {wrote}\n" if wrote else "")
    stream = (read_requests(args.requests) if args.requests else
              synthetic(1.0 if args.rate is None else args.rate, args.n, args.prompt,
                        args.output, args.seed))
    if concurrency and not args.requests and args.rate is None:   # every client starts at once
        stream = replace(stream, arrival_s=np.zeros(len(stream)),
                         source=stream.source.replace("Poisson 1/s, ", "all at once, "))
    replicas = None
    if args.replicas > 1:
        if getattr(args, "decoding", None) is not None:
            raise CostDSLError("--replicas serves plain decoding: drop --decoding")
        trace, summary, replicas = model.simulate_fleet(hw, stream, args.replicas, args.router,
                                                        config, slo, **bits)
    else:
        trace, summary = model.simulate(hw, stream, config, slo,
                                        decoding=getattr(args, "decoding", None), **bits)
    wrote = []
    if plot:
        wrote.append(plots.timeline(trace, model.name, hw.name, name, plot))
    if getattr(args, "kind", None) == "timeline":  # `plot timeline`: the image is the answer
        return f"wrote {wrote[0]}\n"
    if args.out:
        _write(args.out, sim_report.requests_csv(trace))
        wrote.append(args.out)
    if args.format == "json":
        out = {"summary": sim_report.summary_dict(summary),
               "requests": sim_report.request_rows(trace), **priced_dict(hw)}
        if replicas is not None:
            out["replicas"] = [sim_report.summary_dict(s) if s is not None else None
                               for s in replicas]
            out["router"] = args.router
        return dumps(out)
    scheduler = name if name != "disaggregated" else f"disaggregated({prefill} prefill, " \
        f"{decode} decode)"
    source = stream.source + (f", at most {concurrency} in flight" if concurrency else "")
    title = f"{model.name} on {hw.name}, {scheduler} scheduler; requests: {source}\n" + \
        priced_line(hw)
    fleet = sim_report.replicas_text(replicas, args.router) if replicas is not None else ""
    return sim_report.summary_text(title, summary, slo) + fleet + \
        "".join(f"wrote {w}\n" for w in wrote)


def _report(args) -> str:
    from .report import html as html_report
    model = _load(args)
    systems = _hws(args)
    if len(systems) > 1 and not args.live:
        raise CostDSLError("several --hw make a live report: add --live")
    data = model.report_data(systems[0], args.batch, args.seq, stages=_stages(args.stage),
                             **_bits_of(args))
    if args.live:   # (a free parameter has stopped report_data already, with its name)
        data["live"] = _live_configs(args, model, systems)
    _write(args.out, html_report.render(data))
    return f"wrote {args.out}\n"


def _live_configs(args, model, systems) -> dict:
    """The live page's configurations: the model; without its passes, where it has some; and
    the --compare model, each on every --hw."""
    stages = _stages(args.stage) + ("step",)   # the step: `tokens` new over `seq` cached
    configs = [(model.name, model)]
    if model.passes:
        configs.append((f"{model.name} without passes", model.without_passes()))
    if args.compare:
        other = _load_spec(args.compare)
        configs.append((other.name if other.name != model.name else f"{other.name} "
                        f"({args.compare})", other))
    at = (args.w_bits, args.a_bits, args.kv_bits)   # the markers: the model's, at these bits
    out = [{"label": label, **m.live_data(systems, stages, crossover_bits=at if i == 0 else None)}
           for i, (label, m) in enumerate(configs)]
    return {"bits": out[0]["bits"], "configs": out}


def _graph(args) -> str:
    from .report.graphs import FORMATS as GRAPH_FORMATS
    text = GRAPH_FORMATS[args.format](_load(args).graph(args.stage))
    if args.out:
        _write(args.out, text)
        return f"wrote {args.out}\n"
    return text


def _cache(args) -> str:
    from . import cache
    directory, why = cache.cache_status()
    if directory is None:
        return f"the compile cache is off: {why}\n"
    if args.action == "clear":
        return f"removed {cache.clear()} entries from {directory}\n"
    entries = cache.entries(directory)
    size = sum(e.stat().st_size for e in entries)
    return f"{directory}: {len(entries)} entries, {size / 1e6:.1f} MB\n"


def _formulas(args) -> str:
    model = _load(args)
    keep = [k.strip() for k in args.keep.split(",") if k.strip()]
    tables = [model.formulas(stage, keep, args.tokens) for stage in _stages(args.stage)]
    from .report.formula_tables import FORMATS as FORMULA_FORMATS
    return FORMULA_FORMATS[args.format](tables)


def _sensitivity(args) -> str:
    from .report import answers as answers_report
    model = _load(args)
    hw = _hw(args)
    items = [model.sensitivity(hw, args.batch, args.seq, stage, tokens=args.tokens,
                               **_bits_of(args))
             for stage in _stages(args.stage)]
    if args.format == "json":
        return dumps(answers_report.sensitivity_dict(items))   # keyed by stage alone
    return priced_line(hw) + "\n" + answers_report.sensitivity_text(items)


def _check(args) -> str:
    model = _load(args)
    graph = model.graph("prefill")
    total = model.params()
    free = model.design.free
    params = f"{int(total):,} parameters" if total.is_number else f"parameters = {total}"
    tail = f"; free: {', '.join(free)}" if free else ""
    passes = graph.graph["passes"]
    tail += f"; passes: {'; '.join(passes)}" if passes else ""
    return (f"{args.model}: ok: model {model.name!r}, {graph.number_of_nodes()} ops, "
            f"{params}{tail}\n")


def _params(args) -> str:
    model = _load(args)
    total, active, ops = model.params(), model.active_params(), model.params_by_op()
    number = lambda e: int(e) if e.is_number else str(e)
    mtp, vision = model.mtp_module(), model.vision_module()
    mtp_total = mtp.params() if mtp is not None else None
    vision_total = vision.params() if vision is not None else None
    if args.format == "json":
        return dumps({"model": model.name, "total": number(total), "active": number(active),
                      "mtp": None if mtp is None else {"model": mtp.name,
                                                       "total": number(mtp_total)},
                      "vision": None if vision is None else {"model": vision.name,
                                                             "total": number(vision_total)},
                      "ops": [{"name": o.name, "kind": o.kind, "repeat": number(o.repeat),
                               "params": number(o.params), "active": number(o.active),
                               "total": number(o.params * o.repeat)} for o in ops]})
    fmt = lambda e: f"{int(e):,}" if e.is_number else str(e)
    rows = [("op", "kind", "x", "params", "x params", "share")]
    for o in ops:
        share = f"{100 * float(o.params * o.repeat / total):.2f}%" if total.is_number else ""
        rows.append((o.name, o.kind, fmt(o.repeat), fmt(o.params), fmt(o.params * o.repeat),
                     share))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{model.name}: {fmt(total)} parameters, {fmt(active)} active per token"]
    if mtp is not None:
        lines.append(f"its multi-token-prediction module {mtp.name!r}: {fmt(mtp_total)} "
                     f"parameters more, not counted above (with it: {fmt(total + mtp_total)})")
    if vision is not None:
        lines.append(f"its vision encoder {vision.name!r}: {fmt(vision_total)} parameters "
                     f"more, not counted above (with it: {fmt(total + vision_total)})")
    lines.append("")
    lines += ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in
                        enumerate(zip(r, widths))).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def _import(args) -> str:
    from .language.importer import check_imported, read_config, to_arch
    text = to_arch(read_config(args.config), args.config, args.name)
    check_imported(text, args.config)  # what we write must compile
    if args.out:
        _write(args.out, text)
        return f"wrote {args.out}\n"
    return text


def _hardware(args) -> str:
    from .hardware import load_hardware, shipped_names
    from .report.units import si
    rows = [("name", "device", "fp16 (bf16)", "bandwidth", "memory", "host link",
             "ridge (ops/byte)", "SMs", "time model", "stacks (default first)",
             "fitted types", "fitted experts", "fitted KV caches")]
    systems = [("system", "devices", "count", "bandwidth (all)", "memory (all)", "link",
                "network")]
    for key in shipped_names():
        hw = load_hardware(key)
        if hw.is_system:
            systems.append((key, hw.device_key, f"{hw.count}" + (f" ({hw.nodes} nodes)"
                                                                  if hw.nodes > 1 else ""),
                            si(hw.count * hw.bandwidth_Bps, "B/s"),
                            si(hw.count * hw.memory_bytes, "B"),
                            si(hw.link.bandwidth_Bps, "B/s") if hw.link else "-",
                            si(hw.network.bandwidth_Bps, "B/s") if hw.network else "-"))
            continue
        half = "fp16" if "fp16" in hw.peak else "bf16" if "bf16" in hw.peak else None
        rows.append((key, hw.name,
                     si(hw.peak[half], "OP/s") + ("" if half == "fp16" else " (bf16)")
                     if half else "-",
                     si(hw.bandwidth_Bps, "B/s"), si(hw.memory_bytes, "B"),
                     si(hw.host.bandwidth_Bps, "B/s") if hw.host else "-",
                     f"{hw.ridge(half):.1f}" if half else "-", str(hw.sms or "-"),
                     "calibrated" if hw.efficiency else "ideal",
                     ", ".join(hw.stack_names) or "-", _fitted_types(hw),
                     _fitted_experts(hw), _fitted_caches(hw)))
    return _columns(rows) + "\n" + _columns(systems)


def _figure_sets(hw) -> list:
    """The file's fitted figures, one set per stack, the default's first ([] uncalibrated)."""
    return [hw.efficiency] + [hw.stacks[n] for n in sorted(hw.stacks)] if hw.efficiency else []


def _fitted_types(hw) -> str:
    """The compute types with a fitted fraction, over the file's stacks (default first), and
    the block-scaled and weight-only GEMM formats (fp8-block, fp4-block: NVFP4; w4a16, w8a16)
    with figures of their own."""
    from .hardware.efficiency import WEIGHT_ONLY_GEMMS
    sets = _figure_sets(hw)
    types = [c for e in sets for c in e.compute]
    types += [k.removesuffix("_gemm").replace("_", "-") for e in sets for k in sorted(e.kinds)
              if (k.endswith("_block_gemm") or k in WEIGHT_ONLY_GEMMS)
              and e.kinds[k].compute is not None]
    return ", ".join(dict.fromkeys(types)) or "-"


def _fitted_experts(hw) -> str:
    """The routed experts' formats with figures of their own (bench/fit_experts.py), over the
    file's stacks: bf16 (expert_linear), fp8, fp8-block, fp4-block (NVFP4)."""
    sets = _figure_sets(hw)
    names = {"expert_linear": "bf16"}
    found = [names.get(k, k.removesuffix("_expert").replace("_", "-")) for e in sets
             for k in sorted(e.kinds) if (k == "expert_linear" or k.endswith("_expert"))
             and e.kinds[k].compute is not None]
    return ", ".join(dict.fromkeys(found)) or "-"


def _fitted_caches(hw) -> str:
    """The KV caches decode's attention has figures of its own for, over the file's stacks: bf16
    (decode_attention), fp8 (decode_attention_kv8), fp4 (_kv4), an MLA latent cache (mla) and
    an FP8 one (mla-fp8)."""
    sets = _figure_sets(hw)
    names = {"decode_attention": "bf16", "decode_attention_kv8": "fp8",
             "decode_attention_kv4": "fp4", "decode_attention_mla": "mla",
             "decode_attention_mla_kv8": "mla-fp8"}
    found = [names[k] for k in names for e in sets if k in e.kinds]
    return ", ".join(dict.fromkeys(found)) or "-"


def _columns(rows) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in rows) + "\n"


INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in costdsl, never the user's mistake

REMEMBERED = ("crossover", "fit", "plan", "latency", "formulas", "sensitivity",
              "compare", "params")
"""Commands whose printed answer is a function of their arguments and the files they read
alone: asked again, it is read back from the cache (recall) without loading the compiler.
`analyze` and `serve-curve` keep a record instead, which answers any batch and context; the
rest always run."""


def _answer(args) -> str:
    """What the command prints: this is where a command's needs are decided (the compiler is
    loaded by _load only, on a miss)."""
    if args.command not in REMEMBERED or getattr(args, "out", None) or \
            getattr(args, "plot", None):
        return args.run(args)
    from . import recall
    inputs = {"command": args.command, "cwd": os.getcwd(),
              "args": {k: v for k, v in sorted(vars(args).items()) if k != "run"}}
    return recall.recalled_text(inputs, lambda: args.run(args))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_cache:
        os.environ["COSTDSL_NO_CACHE"] = "1"
    from . import progress
    progress.enable(not args.quiet and sys.stderr.isatty())
    try:
        out = _answer(args)
    except CostDSLError as err:
        print(f"costdsl: {err}", file=sys.stderr)
        return 2
    except (RecursionError, MemoryError) as err:  # a limit costdsl failed to state: a bug
        print(f"costdsl: internal error: the input is too large or too deeply nested to "
              f"analyse ({type(err).__name__})\nhint: this is a bug in costdsl: every limit "
              "should be stated; please report it with the input", file=sys.stderr)
        return INTERNAL_ERROR
    except Exception as err:  # the last line of defence: a bug gets one line, not a traceback
        if os.environ.get("COSTDSL_DEBUG"):
            raise
        print(f"costdsl: internal error: {type(err).__name__}: {err}\n"
              "hint: this is a bug in costdsl; rerun with COSTDSL_DEBUG=1 for the traceback "
              "and report it with the input", file=sys.stderr)
        return INTERNAL_ERROR
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
