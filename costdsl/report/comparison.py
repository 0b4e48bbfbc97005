"""Text and JSON forms of a Comparison (`costdsl compare`)."""
from __future__ import annotations


from ..analysis.compare import Comparison
from .units import seconds, si
from .jsonsafe import dumps
from .tables import priced_dict, priced_line


def text(c: Comparison) -> str:
    a, b = c.before, c.after
    s = a.settings
    lines = [f"{a.model} on {a.hardware.name}: batch={s.batch} seq={s.seq} w_bits={s.w_bits:g} "
             f"a_bits={s.a_bits:g} kv_bits={s.kv_bits:g}",
             "baseline: no passes; transformed: " + ("; ".join(b.passes) or "no passes"),
             priced_line(a.hardware)]
    for name, st in c.stages.items():
        t0, t1 = st.before.total, st.after.total
        lines += ["", f"{name}:",
                  f"  time   {seconds(t0.time_s):>10} -> {seconds(t1.time_s):>10}  "
                  f"({st.speedup:.2f}x faster)" if st.speedup >= 1 else
                  f"  time   {seconds(t0.time_s):>10} -> {seconds(t1.time_s):>10}  "
                  f"({1 / st.speedup:.2f}x slower)",
                  f"  bytes  {si(t0.bytes, 'B'):>10} -> {si(t1.bytes, 'B'):>10}  "
                  f"({100 * (1 - t1.bytes / t0.bytes):.1f}% fewer)",
                  f"  ops    {len(st.before.ops):>10} -> {len(st.after.ops):>10}"]
        changed = st.bound_changes
        lines.append("  bound changed:" if changed else "  no op changed bound")
        for o in changed:
            before = "/".join(sorted(set(o.bound_before)))
            lines.append(f"    {o.name}: {before} -> {o.bound_after} "
                         f"({seconds(o.time_before_s)} -> {seconds(o.time_after_s)})")
    return "\n".join(lines) + "\n"


def to_dict(c: Comparison) -> dict:
    return {
        "model": c.before.model, "hardware": c.before.hardware.key,
        **priced_dict(c.before.hardware),
        "passes": list(c.after.passes),
        "stages": {name: {
            "before": {"time_s": st.before.total.time_s, "bytes": st.before.total.bytes,
                       "ops": len(st.before.ops)},
            "after": {"time_s": st.after.total.time_s, "bytes": st.after.total.bytes,
                      "ops": len(st.after.ops)},
            "speedup": st.speedup,
            "ops": [{"name": o.name, "was": list(o.was), "bound_before": list(o.bound_before),
                     "bound_after": o.bound_after, "changed_bound": o.changed_bound,
                     "time_before_s": o.time_before_s, "time_after_s": o.time_after_s}
                    for o in st.ops],
        } for name, st in c.stages.items()},
    }


def json_text(c: Comparison) -> str:
    return dumps(to_dict(c))
