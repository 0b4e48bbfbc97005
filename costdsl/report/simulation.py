"""Text, JSON and CSV forms of a serving simulation (serving.simulate)."""
from __future__ import annotations

import csv
import io

from ..serving.simulate import request_metrics
from .units import seconds


def summary_dict(s) -> dict:
    """The summary's keys: ttft_s, tpot_s and e2e_s each with mean, p50, p90, p99; throughput;
    mean batch; KV-block use; pre-emptions; goodput_rps (null without an SLO)."""
    return {"requests": s.requests, "duration_s": s.duration_s,
            "ttft_s": s.ttft_s, "tpot_s": s.tpot_s, "e2e_s": s.e2e_s,
            "p50": {k: getattr(s, k)["p50"] for k in ("ttft_s", "tpot_s", "e2e_s")},
            "p90": {k: getattr(s, k)["p90"] for k in ("ttft_s", "tpot_s", "e2e_s")},
            "p99": {k: getattr(s, k)["p99"] for k in ("ttft_s", "tpot_s", "e2e_s")},
            "requests_per_s": s.requests_per_s, "input_tokens_per_s": s.input_tokens_per_s,
            "output_tokens_per_s": s.output_tokens_per_s, "mean_batch": s.mean_batch,
            "kv_utilisation": s.kv_utilisation, "kv_peak_blocks": s.kv_peak_blocks,
            "kv_pool_blocks": s.kv_pool_blocks, "preemptions": s.preemptions,
            "goodput_rps": s.goodput_rps, "slo_attainment": s.slo_attainment,
            "arrival_rate": s.arrival_rate, "mean_in_system": s.mean_in_system,
            "reordered_rows": s.reordered, "prefix_hit_rate": s.prefix_hit_rate,
            "prefill_tokens_saved": s.prefill_tokens_saved}


def request_rows(trace) -> list[dict]:
    m = request_metrics(trace)
    return [{"request": i, "arrival_s": float(trace.arrival[i]),
             "prompt_tokens": int(trace.prompt[i]), "output_tokens": int(trace.output[i]),
             "first_token_s": float(trace.first_token[i]), "finish_s": float(trace.finish[i]),
             "ttft_s": float(m["ttft_s"][i]), "tpot_s": float(m["tpot_s"][i]),
             "e2e_s": float(m["e2e_s"][i]), "preemptions": int(trace.preemptions[i])}
            for i in range(len(trace.arrival))]


def requests_csv(trace) -> str:
    rows = request_rows(trace)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return out.getvalue()


def _arriving(rate: float | None) -> str:
    return "all arriving at once" if rate is None else f"arriving at {rate:.3g}/s"


def summary_text(title: str, s, slo: dict | None) -> str:
    lines = [title]
    if s.reordered:
        lines.append(f"note: {s.reordered} request rows were out of arrival order; sorted")
    lines.append(f"{s.requests} requests over {seconds(s.duration_s)}: {s.requests_per_s:.3g} "
                 f"requests/s ({_arriving(s.arrival_rate)}), {s.input_tokens_per_s:,.0f} "
                 f"tokens/s in, {s.output_tokens_per_s:,.0f} out")
    lines.append(f"{'':6s}{'mean':>10s}{'p50':>10s}{'p90':>10s}{'p99':>10s}")
    for name, key in (("TTFT", "ttft_s"), ("TPOT", "tpot_s"), ("E2E", "e2e_s")):
        q = getattr(s, key)
        lines.append(f"{name:6s}" + "".join(f"{seconds(q[p]):>10s}"
                                           for p in ("mean", "p50", "p90", "p99")))
    lines.append(f"mean batch {s.mean_batch:.1f}; KV blocks {100 * s.kv_utilisation:.0f}% used on "
                 f"average, peak {s.kv_peak_blocks:,} of {s.kv_pool_blocks:,}; "
                 f"{s.preemptions} pre-emptions")
    if s.prefill_tokens_saved:
        lines.append(f"prefix cache: {100 * s.prefix_hit_rate:.1f}% of prompt tokens found "
                     f"cached, {s.prefill_tokens_saved:,} tokens not prefilled")
    if slo:
        shown = ", ".join(f"{k} <= {seconds(v)}" for k, v in slo.items())
        lines.append(f"goodput {s.goodput_rps:.3g} requests/s meet the SLO ({shown}): "
                     f"{100 * s.slo_attainment:.1f}% of requests")
    return "\n".join(lines) + "\n"


def replicas_text(replicas: list, router: str) -> str:
    """One line per replica of a fleet: its share of the requests and its latencies."""
    lines = [f"{len(replicas)} replicas behind the {router} router:",
             f"{'replica':>8s}{'requests':>10s}{'p90 TTFT':>11s}{'p90 TPOT':>11s}"
             f"{'mean batch':>12s}{'prefix hit':>12s}"]
    for i, s in enumerate(replicas):
        if s is None:
            lines.append(f"{i:8d}{0:10d}")
            continue
        hit = f"{100 * s.prefix_hit_rate:.1f}%" if s.prefix_hit_rate is not None else "-"
        lines.append(f"{i:8d}{s.requests:10d}{seconds(s.ttft_s['p90']):>11s}"
                     f"{seconds(s.tpot_s['p90']):>11s}{s.mean_batch:12.1f}{hit:>12s}")
    return "\n".join(lines) + "\n"


def rate_sweep_text(rows: list[dict], best: float | None, slo: dict, attainment: float) -> str:
    lines = [f"{'rate':>8s}{'goodput':>10s}{'attained':>10s}{'p99 TTFT':>11s}{'p99 TPOT':>11s}"]
    for r in rows:
        lines.append(f"{r['rate']:8.3g}{r['goodput_rps']:10.3g}"
                     f"{100 * r['slo_attainment']:9.1f}%{seconds(r['p99']['ttft_s']):>11s}"
                     f"{seconds(r['p99']['tpot_s']):>11s}")
    lines.append("largest rate with " + f"{100 * attainment:.0f}% of requests meeting the SLO: " +
                 (f"{best:.3g} requests/s" if best is not None else "none in the range"))
    return "\n".join(lines) + "\n"

