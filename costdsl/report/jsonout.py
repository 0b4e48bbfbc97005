"""The JSON form of an Analysis: a stable interface other tools read.

Top-level keys: model, hardware (with time_model: "ideal" or "efficiency", and the efficiency
fractions used or null; all_reduce: the stack's all-reduce algorithms by group size, or null
where NCCL's ring over the link prices every all-reduce), settings, params ({"total": int, "active": int}), passes
(the passes applied, as written), memory (weights_bytes, kv_cache_bytes, activation_peak_bytes,
total_bytes, fits, capacity_bytes, headroom_bytes, host_bytes, host_capacity_bytes, and the
same per stage), devices (count, used, nodes, tp, pp, ep, microbatches: every other figure is
one device's), stages. stages.prefill,
stages.decode and stages.step (with settings.tokens, when the step stage is asked for) hold `ops` (name, kind, repeat, flops, bytes, intensity, bound ("memory", "compute", or "link" / "network" /
"host" for transfers), time_s for one occurrence, plus compute_type, attainable, bytes_by_class) and `total` (flops, bytes, time_s
over all occurrences, plus compute_time_s, memory_time_s, transfer_time_s, bubble_s,
server_s (the serving engine's time around the kernels, in time_s; 0 without a hardware
file's framework figures), bytes_by_class); hardware.efficiency.framework holds those figures
(graph_launch_s, step_s, per_sequence_s, request_s) where the file has them. New keys may be
added; existing ones keep their names and meaning.
"""
from __future__ import annotations

import math

from ..analysis.records import Analysis
from .jsonsafe import dumps

SCHEMA_VERSION = 1


def _num(x: float):
    if isinstance(x, float) and (math.isinf(x) or math.isnan(x)):
        return None
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**63:
        return int(x)
    return x


def memory_dict(m) -> dict:
    """weights, KV cache, activation peak and total in bytes; `fits` against the hardware."""
    return {"weights_bytes": _num(m.weights_bytes), "kv_cache_bytes": _num(m.kv_cache_bytes),
            "activation_peak_bytes": _num(m.activation_peak_bytes),
            "total_bytes": _num(m.total_bytes), "fits": m.fits,
            "capacity_bytes": _num(m.capacity_bytes), "headroom_bytes": _num(m.headroom_bytes),
            "host_bytes": _num(m.host_bytes),
            "host_capacity_bytes": _num(m.host_capacity_bytes)
            if m.host_capacity_bytes is not None else None,
            "stages": {k: {kk: _num(vv) for kk, vv in v.items()} for k, v in m.stages.items()}}


def devices_dict(d) -> dict:
    """The device count and parallel layout: every other figure is one device's."""
    return {"count": d.count, "used": d.used, "nodes": d.nodes, "tp": d.layout["tp"],
            "pp": d.layout["pp"], "ep": d.layout["ep"], "microbatches": d.microbatches,
            "per_device": True}


def to_dict(a: Analysis) -> dict:
    hw, s = a.hardware, a.settings
    return {
        "schema_version": SCHEMA_VERSION,
        "model": a.model,
        "file": a.file,
        "hardware": {"key": hw.key, "name": hw.name, "bandwidth": hw.bandwidth_Bps,
                     "memory": hw.memory_bytes, "peak": dict(hw.peak),
                     "time_model": hw.time_model, "stack": hw.stack,
                     "all_reduce": hw.all_reduce.as_dict() if hw.all_reduce else None,
                     "efficiency": hw.efficiency.as_dict() if hw.efficiency else None},
        "settings": {"batch": s.batch, "seq": s.seq, "w_bits": _num(float(s.w_bits)),
                     "a_bits": _num(float(s.a_bits)), "kv_bits": _num(float(s.kv_bits)),
                     **({} if s.tokens is None else {"tokens": s.tokens})},
        "params": {"total": a.params_total, "active": a.params_active},
        "passes": list(a.passes),
        **({"memory": memory_dict(a.memory)} if a.memory else {}),
        **({"devices": devices_dict(a.devices)} if a.devices else {}),
        "model_params": dict(a.params),
        "stages": {name: {
            "description": st.description,
            "ops": [{"name": o.name, "kind": o.kind, "repeat": o.repeat,
                     "flops": _num(o.flops), "bytes": _num(o.bytes),
                     "intensity": _num(o.intensity), "bound": o.bound, "time_s": o.time_s,
                     "compute_type": o.compute_type, "attainable": _num(o.attainable),
                     "bytes_by_class": {k: _num(v) for k, v in o.bytes_by_class.items()},
                     "total_time_s": o.total_time_s,
                     **({"fused_from": list(o.fused_from)} if o.fused_from else {})}
                    for o in st.ops],
            "total": {"flops": _num(st.total.flops), "bytes": _num(st.total.bytes),
                      "time_s": st.total.time_s, "compute_time_s": st.total.compute_time_s,
                      "memory_time_s": st.total.memory_time_s,
                      "transfer_time_s": st.total.transfer_time_s,
                      "bubble_s": st.total.bubble_s, "server_s": st.total.server_s,
                      "bytes_by_class": {k: _num(v) for k, v in st.total.bytes_by_class.items()}},
        } for name, st in a.stages.items()},
    }


def json_text(a: Analysis) -> str:
    return dumps(to_dict(a))
