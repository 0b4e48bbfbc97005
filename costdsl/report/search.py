"""Text, JSON and CSV forms of a deployment search (serving.search)."""
from __future__ import annotations

import csv
import io

from .tables import priced_by
from .units import seconds

_BINDING = {"ttft": "TTFT", "tpot": "TPOT", "memory": "memory (KV blocks: requests pre-empted)",
            "rate": "the roofline's throughput ceiling (the SLO holds up to it)"}


def search_dict(r) -> dict:
    """The JSON contract: recommendation, runner_up, frontier (the same records), candidates
    {total, pruned_by, simulated}; keys are only ever added."""
    return {"model": r.model,
            "slo": {"ttft_s": r.slo.ttft_s, "tpot_s": r.slo.tpot_s,
                    "quantile": r.slo.quantile},
            "target": {"rate": r.rate, "concurrency": r.concurrency},
            "workload": r.workload, "objective": r.objective,
            "recommendation": r.recommendation.as_dict(),
            "runner_up": r.runner_up.as_dict() if r.runner_up else None,
            "frontier": [d.as_dict() for d in r.frontier],
            "time_models": {key: {"time_model": model, "stack": stack}
                            for key, model, stack, _ in r.priced},
            "candidates": {"total": r.total, "pruned_by": dict(sorted(r.pruned_by.items())),
                           "simulated": r.simulated, "simulations": r.simulations},
            "executor": r.executor}


def _layout(layout: dict) -> str:
    return "tp={tp} pp={pp} ".format(**layout) + (
        "experts spread over tp" if layout.get("experts") == "ep" else f"ep={layout['ep']}")


def _gpus(n: int) -> str:
    return f"{n} GPU{'s' if n != 1 else ''}"


def _short(layout: dict) -> str:
    """tp4, tp2pp2, tp1ep8: the degrees above 1 after tp; tp8+ep: the experts spread over tp."""
    return f"tp{layout['tp']}" + "".join(f"{k}{layout[k]}" for k in ("pp", "ep")
                                         if layout[k] > 1) + \
        ("+ep" if layout.get("experts") == "ep" else "")


def describe(d) -> str:
    """One line: what to deploy."""
    bits = f"{d.w_bits:g}-bit weights, {d.kv_bits:g}-bit KV"
    if d.mode == "disaggregated":
        p, q = d.prefill, d.decode
        return (f"disaggregated: {p['instances']} prefill x {_layout(p['layout'])} on "
                f"{p['hardware']} + {q['instances']} decode x {_layout(q['layout'])} on "
                f"{q['hardware']} (decode batch <= {d.max_batch}), {bits}: {_gpus(d.gpus)}")
    return (f"aggregated: {d.replicas} replica{'s' if d.replicas > 1 else ''} x "
            f"{_layout(d.layout)} on {d.hardware}, {d.scheduler} scheduler, batch <= "
            f"{d.max_batch}, {bits}: {_gpus(d.gpus)}")


def _money(d) -> str:
    if d.cost_per_hour is None:
        return ""
    return f"; ${d.cost_per_hour:,.2f}/hour, ${d.cost_per_million_tokens:,.3g} per million " \
           f"output tokens"


def _figures(d, q: str) -> list[str]:
    unit = "replica" if d.mode == "aggregated" else "deployment"
    return [f"  {d.rate_per_replica:.3g} requests/s per {unit} at most (headroom "
            f"{d.headroom * 100:.0f}% over the target); {q} TTFT {seconds(d.ttft_s)}, {q} TPOT "
            f"{seconds(d.tpot_s)} there",
            f"  {d.tokens_per_s_per_gpu:,.0f} tokens/s per GPU, {d.tokens_per_s_per_user:.1f} "
            f"tokens/s per user{_money(d)}",
            f"  binding: {_BINDING.get(d.binding, d.binding)}"]


def search_text(r) -> str:
    q = f"p{r.slo.quantile * 100:g}"
    targets = ", ".join(f"{name} <= {seconds(v)}" for name, v in
                        (("TTFT", r.slo.ttft_s), ("TPOT", r.slo.tpot_s)) if v is not None)
    target = f"{r.rate:g} requests/s" if r.rate is not None else \
        f"{r.concurrency} requests in flight"
    pruned = ", ".join(f"{k} {v}" for k, v in sorted(r.pruned_by.items())) or "none"
    lines = [f"{r.model}: {target} ({r.workload}) under {targets} at {q}, fewest "
             f"{'GPUs' if r.objective == 'gpus' else r.objective.replace('_', ' ')}",
             f"candidates: {r.total}; pruned by closed forms: {pruned}; simulated "
             f"{r.simulated} ({r.simulations} simulations on {r.executor})",
             *(f"time model{f' of {key}' if len(r.priced) > 1 else ''}: "
               f"{priced_by(model, stack, framework)}"
               for key, model, stack, framework in r.priced), "",
             "recommended: " + describe(r.recommendation), *_figures(r.recommendation, q)]
    if r.runner_up is not None:
        lines += ["", f"runner-up ({r.runner_up.mode}): " + describe(r.runner_up),
                  *_figures(r.runner_up, q)]
    lines += ["", "Pareto frontier (tokens/s per GPU against tokens/s per user):",
              f"{'mode':>13s} {'instances':>20s} {'scheduler':>14s} {'batch':>6s} "
              f"{'GPUs':>5s} {'tok/s/GPU':>10s} {'tok/s/user':>11s} {q + ' TTFT':>10s} "
              f"{q + ' TPOT':>10s}"]
    for d in r.frontier:
        layout = f"{d.replicas} x {_short(d.layout)}" if d.mode == "aggregated" else \
            f"{d.prefill['instances']} x {_short(d.prefill['layout'])} + " \
            f"{d.decode['instances']} x {_short(d.decode['layout'])}"
        lines.append(f"{d.mode:>13s} {layout:>20s} {d.scheduler:>14s} {d.max_batch:6d} "
                     f"{d.gpus:5d} {d.tokens_per_s_per_gpu:10,.0f} "
                     f"{d.tokens_per_s_per_user:11.1f} {seconds(d.ttft_s):>10s} "
                     f"{seconds(d.tpot_s):>10s}")
    return "\n".join(lines) + "\n"


FIELDS = ("mode", "hardware", "tp", "pp", "ep", "prefill_instances", "prefill_layout",
          "decode_instances", "decode_layout", "replicas", "gpus", "w_bits", "kv_bits",
          "scheduler", "max_batch", "rate_per_replica", "tokens_per_s_per_gpu",
          "tokens_per_s_per_user", "ttft_s", "tpot_s", "cost_per_hour",
          "cost_per_million_tokens", "binding", "headroom", "experts")


def frontier_csv(r) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for d in r.frontier:
        row = {k: v for k, v in d.as_dict().items() if k in FIELDS}
        row.update(d.layout)
        if d.mode == "disaggregated":
            row.update(prefill_instances=d.prefill["instances"],
                       prefill_layout=_layout(d.prefill["layout"]),
                       decode_instances=d.decode["instances"],
                       decode_layout=_layout(d.decode["layout"]))
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()
