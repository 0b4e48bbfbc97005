"""One search trial: the largest arrival rate at which one serving instance meets an SLO.

A trial is a plain record (JSON-shaped: numbers, strings, lists and the iteration cost as
expression trees, serving.iteration.cost_record) and so is its answer: this is the function a
worker process or a Dask cluster runs, and nothing else travels. The instance is one of

- `aggregated`: prefill and decode on the same devices (the record's scheduler); the SLO is
  met when the q-quantile of TTFT and of TPOT are both within their targets;
- `prefill`: a disaggregated server's prefill instance, serving prompts only (each request
  ends with its first token); TTFT alone;
- `decode`: its decode instance, serving requests that arrive prefilled; TPOT alone, each
  request's first token dated `transfer` before its arrival (its KV cache crossing the link).

The stream is the record's shape at unit rate (exponential gaps of mean 1 s, lengths drawn
once): a trial at rate r divides the gaps by r, so every rate sees the same requests in the same
order (common random numbers: attainment moves with the rate, not with the draw). The rate is
found by bisection between a light load (1/64 of the record's ceiling) and the ceiling, the
roofline's throughput bound, raised while it still meets the SLO.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import EvaluationError
from .requests import Stream, prefix_from_record
from .simulate import request_metrics, server_of, simulate

KINDS = ("aggregated", "prefill", "decode")
BISECTIONS = 6        # the rate to 1/64 of the ceiling
LIGHT = 1 / 64        # the light load a candidate must meet the SLO at to be feasible
RAISES = 3            # doublings of a ceiling that still meets the SLO


def run_trial(record: dict) -> dict:
    """The largest rate meeting the SLO, its quantiles and what binds (see the module)."""
    kind = record["kind"]
    if kind not in KINDS:
        raise EvaluationError(f"unknown trial kind {kind!r}")
    cost, pool, config = server_of(record)
    shape = record["stream"]
    gaps = np.asarray(shape["gaps"], dtype=float)
    prompt = np.asarray(shape["prompt"], dtype=np.int64)
    output = np.asarray(shape["output"], dtype=np.int64)
    if kind == "prefill":
        output = np.ones_like(output)
    elif kind == "decode":
        keep = output >= 2
        gaps, prompt, output = gaps[keep], prompt[keep], output[keep]
    prefixes = shape.get("prefixes")
    hashes = tuple(prefix_from_record(h) for h in prefixes) if prefixes is not None else None
    if hashes is not None and kind == "decode":
        hashes = tuple(h for h, k in zip(hashes, keep) if k)
    slo = record["slo"]
    transfer = np.asarray(record.get("transfer_s", 0.0)) * prompt if kind == "decode" else 0.0

    def attempt(rate: float) -> dict:
        stream = Stream(np.cumsum(gaps / rate), prompt, output, "search", hashes=hashes)
        try:
            trace = simulate(stream, cost, pool, config, prefilled=kind == "decode")
        except EvaluationError as err:     # a request that never fits the instance's pool
            return {"rate": rate, "met": False, "binding": "memory", "why": err.message}
        return _judge(rate, trace, kind, slo, transfer)

    ceiling = float(record["ceiling"])
    runs = []
    light = attempt(ceiling * LIGHT)
    runs.append(light)
    if not light["met"]:
        return _answer(record, 0.0, None, light, runs)
    high = attempt(ceiling)
    runs.append(high)
    best = light
    for _ in range(RAISES):
        if not high["met"]:
            break
        best = high
        high = attempt(high["rate"] * 2)
        runs.append(high)
    if high["met"]:
        return _answer(record, high["rate"], high, None, runs)
    low = best
    for _ in range(BISECTIONS):
        mid = attempt((low["rate"] + high["rate"]) / 2)
        runs.append(mid)
        low, high = (mid, high) if mid["met"] else (low, mid)
    return _answer(record, low["rate"], low, high, runs)


def _judge(rate: float, trace, kind: str, slo: dict, transfer) -> dict:
    """The trace's q-quantiles against the SLO, and which target it misses most."""
    q = slo["quantile"]
    m = request_metrics(trace)
    # a decode instance's requests emitted their first token `transfer` before arriving
    ttft = m["ttft_s"]
    tpot = m["tpot_s"] + np.where(trace.output > 1, transfer / np.maximum(trace.output - 1, 1),
                                  0.0)
    e2e = m["e2e_s"] + transfer
    out = {"rate": rate, "ttft_s": float(np.quantile(ttft, q)),
           "tpot_s": float(np.quantile(tpot, q)), "tpot_mean_s": float(np.mean(tpot)),
           "e2e_mean_s": float(np.mean(e2e)),
           "preempted": float(np.mean(trace.preemptions > 0))}
    over = {}
    if kind != "decode" and slo.get("ttft") is not None:
        over["ttft"] = out["ttft_s"] / slo["ttft"]
    if kind != "prefill" and slo.get("tpot") is not None:
        over["tpot"] = out["tpot_s"] / slo["tpot"]
    worst = max(over, key=over.get) if over else None
    out["met"] = all(v <= 1 for v in over.values())
    out["binding"] = "memory" if out["preempted"] > 0.05 else worst
    return out


def _answer(record: dict, rate: float, met: dict | None, missed: dict | None,
            runs: list[dict]) -> dict:
    """The trial's plain answer: the rate, the quantiles there, and what stops a higher rate
    (`rate`: the ceiling itself still met the SLO)."""
    binding = missed["binding"] if missed is not None else "rate"
    at = met or {}
    return {"id": record["id"], "rate": rate, "binding": binding,
            "ttft_s": at.get("ttft_s", math.nan), "tpot_s": at.get("tpot_s", math.nan),
            "tpot_mean_s": at.get("tpot_mean_s", math.nan),
            "e2e_mean_s": at.get("e2e_mean_s", math.nan),
            "why": missed.get("why") if missed else None,
            "missed_by": _missed_by(missed) if rate == 0 else None,
            "simulations": len(runs)}


def _missed_by(missed: dict) -> dict:
    """At the light load of an infeasible candidate: each quantile it reached."""
    return {k: missed[k] for k in ("ttft_s", "tpot_s") if k in missed}
