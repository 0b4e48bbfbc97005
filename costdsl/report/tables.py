"""Text, Markdown and CSV forms of an Analysis: three formatters over the same rows."""
from __future__ import annotations

import csv
import io

from ..analysis.records import Analysis, StageResult
from .units import count, number, seconds, si

COLUMNS = ("op", "kind", "x", "type", "ops", "bytes", "ops/byte", "attainable", "bound",
           "time", "x time", "share")


def _op_rows(stage: StageResult) -> list[list[str]]:
    rows = []
    for o in stage.ops:
        rows.append([o.name, o.kind, str(o.repeat), o.compute_type or "-", si(o.flops),
                     si(o.bytes, "B"), number(o.intensity),
                     si(o.attainable, "OP/s") if o.compute_type else "-", o.bound,
                     seconds(o.time_s), seconds(o.total_time_s), f"{100 * o.share:.1f}%"])
    t = stage.total
    rows.append(["total", "", "", "", si(t.flops), si(t.bytes, "B"),
                 number(t.flops / t.bytes) if t.bytes else "-", "", "", "",
                 seconds(t.time_s), "100%"])
    return rows


def _headline(a: Analysis) -> list[str]:
    hw, s = a.hardware, a.settings
    ctype = hw.headline_type()
    achieved = hw.peak_for(ctype) / hw.bandwidth_for()  # the GEMMs' ridge under efficiencies
    ridge = f"ridge {hw.ridge(ctype):.1f} ops/byte" + (
        f" ({achieved:.1f} achieved)" if hw.efficiency is not None else "")
    lines = [
        f"{a.model} on {hw.name}: {si(hw.bandwidth_Bps, 'B/s')}, {ctype} "
        f"{si(hw.peak[ctype], 'OP/s')}, {ridge}",
        f"batch={s.batch} seq={s.seq}" + ("" if s.tokens is None else f" tokens={s.tokens}") +
        f" w_bits={s.w_bits:g} a_bits={s.a_bits:g} "
        f"kv_bits={s.kv_bits:g}; parameters {count(a.params_total)}",
    ]
    if hw.count > 1 or (a.devices and a.devices.used > 1):
        lines.append(devices_line(a))
    lines.append("time model: " + time_model(hw, s))
    if a.passes:
        lines.append("passes: " + "; ".join(a.passes))
    return lines


def devices_line(a: Analysis) -> str:
    """The system and the layout, and that every figure is one device's."""
    hw, d = a.hardware, a.devices
    layout = " x ".join(f"{g}={n}" for g, n in d.layout.items() if n != 1) or "one device"
    link = f"; link {si(hw.link.bandwidth_Bps, 'B/s')}" if hw.link else ""
    network = f", network {si(hw.network.bandwidth_Bps, 'B/s')}" if hw.network else ""
    batches = f", {d.microbatches} microbatches" if d.microbatches > 1 else ""
    tp = d.layout.get("tp", 1)
    reduce = (f"; all-reduce: {hw.all_reduce.describe(tp)}"
              if hw.all_reduce is not None and isinstance(tp, int) and tp > 1 else "")
    return (f"devices: {d.used} of {d.count} ({layout}{batches}){link}{network}{reduce}; times, "
            "memory and parameters are per device")


def time_model(hw, settings=None) -> str:
    """One line saying which model the times come from: the file's figures, the compute types
    that borrow another's, and the kernels the settings ask for (an 8-bit cache's decode
    attention, weight-only GEMMs) that borrow another family's."""
    e = hw.efficiency
    if e is None:
        return "ideal roofline (datasheet peak and bandwidth, no launch cost)"
    parts = [f"bandwidth {e.bandwidth:.3g}"] + [f"{c} {v:.3g}" for c, v in e.compute.items()]
    if e.kinds:
        parts.append("own figures for " + ", ".join(sorted(e.kinds)))
    floors = {k: v.floor_s for k, v in sorted(e.kinds.items()) if v.floor_s}
    if floors:   # a call's host time: outside a CUDA graph, the least a GEMM of it takes
        parts.append(", ".join(f"{k} at least {seconds(v)} a call outside CUDA graphs"
                               for k, v in floors.items()))
    one_rows = {k: v.one_row_s for k, v in sorted(e.kinds.items()) if v.one_row_s}
    if one_rows:   # what a call of one row (a decode of one sequence) adds
        parts.append(", ".join(f"{k} {seconds(v)} more at one row" + (
            " outside CUDA graphs" if e.kinds[k].floor_s else "") for k, v in one_rows.items()))
    walks = {k: v.k_latency_s for k, v in sorted(e.kinds.items()) if v.k_latency_s}
    if walks:   # a GEMM's walk of its k (K_LATENCY_NOTE)
        parts.append(", ".join(f"{k} walks its k at {seconds(v)} an element"
                               for k, v in walks.items()))
    splits = {k: v for k, v in sorted(e.kinds.items()) if v.split_k_s and v.split_depth}
    if splits:   # a GEMM that splits a deep k (SPLIT_K_NOTE)
        parts.append(", ".join(f"{k} {seconds(v.split_k_s)} more where k is over "
                               f"{v.split_depth:g} a tile" for k, v in splits.items()))
    stack = f" of {e.stack}'s kernels" if e.stack else ""
    borrowed = {**e.borrowed(c for c in hw.peak if c not in ("fp32", "fp64")),
                **_borrowed_families(e, settings)}
    if borrowed:
        parts.append("unfitted " + ", ".join(
            f"{c} at the GEMMs'" if f == "linear" else f"{c} at {f}'s"
            for c, f in borrowed.items()))
    return (f"achieved fractions{stack} from the hardware file ({', '.join(parts)}; launch "
            f"{seconds(e.launch_s)} per kernel){framework_text(e.framework)}; --ideal for the "
            "datasheet roofline")


def priced_by(time_model: str, stack: str | None, framework=None) -> str:
    """Which model priced an answer that lists no per-op figures (latency, plan, simulate...):
    the ideal roofline, or the stack whose kernels the hardware file's figures describe, and
    its serving engine's figures."""
    if time_model == "ideal":
        return "ideal roofline (datasheet peak and bandwidth, no launch cost)"
    kernels = f"{stack}'s kernels: " if stack else ""
    return (f"{time_model} ({kernels}achieved fractions and launch costs of the hardware file"
            f"{framework_text(framework)}; --ideal for the datasheet roofline)")


def priced_line(hw) -> str:
    """The time-model line for hardware `hw` (a device or a system)."""
    return "time model: " + priced_by(hw.time_model, hw.stack, hw.framework)


def priced_dict(hw) -> dict:
    """The same, as the JSON keys `latency` writes: time_model, stack."""
    return {"time_model": hw.time_model, "stack": hw.stack}


def _borrowed_families(e, settings) -> dict[str, str]:
    """{family: the family whose figures it takes} for the kernels `settings`' bitwidths make
    (decode over a narrow cache, weight-only GEMMs and experts) that the file has none for."""
    if settings is None:
        return {}
    from ..hardware.efficiency import kv_family, weight_only_family
    wanted = [kv_family("decode_attention", settings.kv_bits)]
    if settings.a_bits >= 16:
        wanted += [weight_only_family(f, "fp16", settings.w_bits)
                   for f in ("linear", "expert_linear")]
    out = {}
    for family in wanted:
        if family not in ("decode_attention", "linear", "expert_linear"):
            source = e.borrowed_family(family)
            if source:
                out[family] = source
    return out


def framework_text(f) -> str:
    """The serving engine's figures, as the time-model line names them."""
    if f is None:
        return ""
    graphs = ("" if f.graph_launch_s is None else
              "decode in CUDA graphs with no cost per kernel, " if f.graph_launch_s == 0 else
              f"decode in CUDA graphs at {seconds(f.graph_launch_s)} per kernel, ")
    return (f"; serving engine: {graphs}{seconds(f.step_s)} per iteration, "
            f"{seconds(f.per_sequence_s)} per sequence, {seconds(f.request_s)} per request "
            "before its first token")


def _stage_summary(stage: StageResult) -> str:
    t = stage.total
    b = t.bytes_by_class
    extra = ""
    if t.transfer_time_s:
        extra += f"; transfers {seconds(t.transfer_time_s)} ({100 * t.transfer_time_s / t.time_s:.0f}%)"
    if t.bubble_s:
        extra += f"; pipeline bubble {seconds(t.bubble_s)}"
    if t.server_s:
        extra += f"; serving engine {seconds(t.server_s)} ({100 * t.server_s / t.time_s:.0f}%)"
    return (f"time {seconds(t.time_s)} (all compute-bound would be {seconds(t.compute_time_s)}, "
            f"all memory-bound {seconds(t.memory_time_s)}){extra}; bytes: weights "
            f"{si(b['weight'], 'B')}, activations {si(b['act'], 'B')}, KV cache {si(b['kv'], 'B')}")


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    numeric = {2, 4, 5, 6, 7, 9, 10, 11}
    out = []
    for r in rows:
        cells = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in
                 enumerate(zip(r, widths))]
        out.append("  ".join(cells).rstrip())
    return out


def memory_line(a: Analysis) -> str:
    if a.memory is None:
        return ""
    scores = any(o.kind == "qk_matmul" for stage in a.stages.values() for o in stage.ops)
    return memory_text(a.memory, scores_kept=scores)


SCORES_NOTE = ("; the graph keeps attention's scores (unfused): FlashAttention keeps none, as "
               "the serving stacks run it (--pass \"fuse_serving()\")")
"""Said where memory does not fit and the graph materialises attention's scores: a prompt of
8,192 tokens holds 32 x 8,192^2 scores a sequence in a Llama-3-8B layer (4.3 GB in 16 bits),
which no stack keeps."""


def memory_text(m, stage_names: dict[str, str] | None = None, scores_kept: bool = False) -> str:
    """One device's peak bytes against its memory, and whether they fit (MemoryNumbers);
    `stage_names` says what each stage stands for where the peak is named; `scores_kept`: the
    graph runs attention unfused (said where activations are what does not fit)."""
    peak_stage = max(m.stages, key=lambda s: m.stages[s]["total_bytes"])
    held = m.weights_bytes + m.stages[peak_stage]["kv_cache_bytes"]   # what no fusion frees
    verdict = (f"fits ({si(m.headroom_bytes, 'B')} free)" if m.fits else
               f"does NOT fit: {si(-m.headroom_bytes, 'B')} over"
               + (SCORES_NOTE if scores_kept and held <= m.capacity_bytes else ""))
    where = (stage_names or {}).get(peak_stage, peak_stage)
    return (f"memory (peak, {where}): weights {si(m.weights_bytes, 'B')} + KV cache "
            f"{si(m.stages[peak_stage]['kv_cache_bytes'], 'B')} + activations "
            f"{si(m.stages[peak_stage]['activation_peak_bytes'], 'B')} = "
            f"{si(m.total_bytes, 'B')} of {si(m.capacity_bytes, 'B')}: {verdict}")


def text(a: Analysis) -> str:
    lines = _headline(a)
    if a.memory:
        lines.append(memory_line(a))
    for stage in a.stages.values():
        lines += ["", f"{stage.stage}: {stage.description}"]
        body = _align([list(COLUMNS)] + _op_rows(stage))
        rule = "-" * max(len(l) for l in body)
        lines += [body[0], rule] + body[1:-1] + [rule, body[-1]]
        lines.append(_stage_summary(stage))
    return "\n".join(lines) + "\n"


def _md_escape(cell: str) -> str:
    return cell.replace("|", "\\|")


def markdown(a: Analysis) -> str:
    lines = [f"**{l}**" if i == 0 else l for i, l in enumerate(_headline(a))]
    if a.memory:
        lines.append(memory_line(a))
    for stage in a.stages.values():
        lines += ["", f"### {stage.stage}", "", stage.description, "",
                  "| " + " | ".join(COLUMNS) + " |",
                  "|" + "|".join("---:" if i in {2, 4, 5, 6, 7, 9, 10, 11} else "---"
                                 for i in range(len(COLUMNS))) + "|"]
        for row in _op_rows(stage):
            if row[0] == "total":
                row = [f"**{c}**" if c else c for c in row]
            lines.append("| " + " | ".join(_md_escape(c) for c in row) + " |")
        lines += ["", _stage_summary(stage)]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ("stage", "name", "kind", "repeat", "compute_type", "flops", "bytes",
              "weight_bytes", "act_bytes", "kv_bytes", "intensity", "attainable_ops_per_s",
              "bound", "time_s", "total_time_s", "share")


def csv_table(a: Analysis) -> str:
    """One row per op per stage (numbers for one occurrence), then one `total` row per stage."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for stage in a.stages.values():
        for o in stage.ops:
            b = o.bytes_by_class
            w.writerow([stage.stage, o.name, o.kind, o.repeat, o.compute_type or "", repr(o.flops),
                        repr(o.bytes), repr(b["weight"]), repr(b["act"]), repr(b["kv"]),
                        repr(o.intensity), repr(o.attainable), o.bound, repr(o.time_s),
                        repr(o.total_time_s), repr(o.share)])
        t, b = stage.total, stage.total.bytes_by_class
        w.writerow([stage.stage, "total", "", "", "", repr(t.flops), repr(t.bytes),
                    repr(b["weight"]), repr(b["act"]), repr(b["kv"]),
                    repr(t.flops / t.bytes if t.bytes else 0.0), "", "", repr(t.time_s),
                    repr(t.time_s), "1.0"])
    return buf.getvalue()
