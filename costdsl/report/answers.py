"""Text and JSON forms of crossover, latency and sensitivity answers."""
from __future__ import annotations

import math

from typing import TYPE_CHECKING

from . import printing
from .units import seconds, si
from .jsonsafe import dumps
from .jsonout import devices_dict, memory_dict
from .tables import memory_text, priced_by

if TYPE_CHECKING:
    from ..analysis.crossover import CrossoverAnswer
    from ..analysis.latency import Latency
    from ..analysis.sensitivity import Sensitivity


def _value(v):
    return None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


def crossover_dict(answers: list[CrossoverAnswer]) -> dict:
    first = answers[0]
    out = {"solve": first.symbol.name, "bound": dict(first.bound),
           "time_model": first.time_model, "stack": first.stack, "stages": {}}
    for a in answers:
        s = a.summary
        stage = {
            "crossovers": [{
                "op": c.op, "kind": c.kind, "expression": str(c.expression)
                if c.expression is not None else None, "latex": c.latex,
                "value": _value(c.value), "rounded": list(c.rounded) if c.rounded else None,
                "direction": c.direction, "compute_type": c.compute_type, "ridge": c.ridge,
                "reason": c.reason, "limit": str(c.limit) if c.limit is not None else None,
                "closed_form": c.closed_form, "unquantised_value": _value(c.unquantised)}
                for c in a.ops],
            "stage": {
                "balance": str(s.balance) if s.balance is not None else None,
                "balance_value": _value(s.balance_value), "balance_reason": s.balance_reason,
                "first_compute_bound": None if s.first_compute_bound is None else {
                    "op": s.first_compute_bound.op, "value": s.first_compute_bound.value},
                "time": str(s.time) if s.time is not None else None,
                "time_latex": printing.latex(s.time) if s.time is not None else None,
                "breakpoints": list(s.breakpoints), "note": s.note},
        }
        if a.quantization is not None:
            stage["quantization"] = {"versus": dict(a.versus), "ops": [
                {"op": q.op, "expression": str(q.expression) if q.expression is not None
                 else None, "value": _value(q.value), "reason": q.reason}
                for q in a.quantization]}
        if a.variant is not None:
            stage["variant"] = {"set": dict(a.variant), "note": a.variant_note, "crossings": [
                {"expression": str(c.expression), "value": c.value,
                 "faster_above": c.faster_above} for c in a.variant_crossings]}
        out["stages"][a.stage] = stage
    # the flat form, for a single stage
    if len(answers) == 1:
        out["crossovers"] = out["stages"][first.stage]["crossovers"]
        out["stage"] = out["stages"][first.stage]["stage"]
    return out


def crossover_json(answers: list[CrossoverAnswer]) -> str:
    return dumps(crossover_dict(answers))


def crossover_text(answers: list[CrossoverAnswer]) -> str:
    from ..analysis.crossover import BIT_SYMBOLS   # answers carry sympy: it is loaded
    first = answers[0]
    x = first.symbol.name
    bound = ", ".join(f"{k}={v:g}" for k, v in first.bound.items())
    achieved = f" (achieved: {first.stack}'s kernels as the hardware file fits them)" \
        if first.time_model != "ideal" and first.stack else \
        " (achieved: the hardware file's efficiencies)" if first.time_model != "ideal" \
        else ""
    lines = [f"crossovers in {x} ({bound}); P = peak of the op's compute type, "
             f"B = bandwidth{achieved}; " + printing.LEGEND]
    for a in answers:
        lines += ["", f"{a.stage}:"]
        for c in a.ops:
            if c.expression is None:
                lines.append(f"  {c.op:24s} none: {c.reason}")
                continue
            value = f"{c.value:.6g}" if c.value is not None else "(depends on free symbols)"
            rounded = f" (integer: {c.rounded[1]})" if c.rounded else ""
            direction = c.direction or "direction depends on the free symbols"
            formula = (f"{printing.text(c.expression)} = " if c.closed_form
                       else "(no closed form: x in an exponent; solved numerically) ")
            if c.unquantised is not None:   # a tile model: the root is smooth, the turn a step
                formula = (f"{printing.text(c.expression)} = {c.unquantised:.6g} without wave "
                           f"quantisation; with it a step at ")
                rounded = ""
            # A bitwidth changes the compute type: the same formula holds in each type's range
            # with that type's peak, so the row says which peak it is.
            peak = (f" (peak of {c.compute_type})" if first.symbol in BIT_SYMBOLS
                    and c.compute_type else "")
            lines.append(f"  {c.op:24s} {x} = {formula}{value}{rounded}{peak}, {direction}")
        s = a.summary
        if s.first_compute_bound:
            lines.append(f"  first op to turn compute-bound: {s.first_compute_bound.op} at "
                         f"{x} = {s.first_compute_bound.value:.6g}")
        else:
            lines.append(f"  no op turns compute-bound as {x} grows")
        if s.balance is not None:
            value = f" = {s.balance_value:.6g}" if s.balance_value is not None else ""
            lines.append(f"  stage compute time = memory time at {x} = "
                         f"{printing.text(s.balance)}{value}")
        else:
            lines.append(f"  stage balance: {s.balance_reason}")
        if s.time is not None:
            lines.append(f"  stage time (s) = {printing.text(s.time)}")
        if s.note:
            lines.append(f"  note: {s.note}")
        if a.quantization is not None:
            versus = ", ".join(f"{k}={v:g}" for k, v in a.versus.items())
            lines.append(f"  lower bitwidth ({versus}) stops saving time:")
            for q in a.quantization:
                what = (f"above {x} = {q.value:.6g} ({printing.text(q.expression)})"
                        if q.expression is not None else q.reason)
                lines.append(f"    {q.op:22s} {what}")
        if a.variant is not None:
            lines += _variant_lines(a, x)
    return "\n".join(lines) + "\n"


def _variant_lines(a: CrossoverAnswer, x: str) -> list[str]:
    variant = ", ".join(f"{k}={v}" for k, v in a.variant.items())
    lines = [f"  against the variant with {variant}:"]
    for c in a.variant_crossings:
        faster = "this model" if c.faster_above == "model" else "the variant"
        lines.append(f"    equal stage time at {x} = {c.value:.6g}: above it {faster} is faster")
    if not a.variant_crossings:
        lines.append("    the stage times never cross")
    lines.append(f"    {a.variant_note}")
    return lines


def latency_dict(l: Latency) -> dict:
    s = l.settings
    return {"settings": {"batch": s.batch, "seq": s.seq, "gen": l.gen, "w_bits": s.w_bits,
                         "a_bits": s.a_bits, "kv_bits": s.kv_bits},
            "ttft_s": l.ttft_s, "tpot_s": l.tpot_s, "e2e_s": l.e2e_s,
            "tokens_per_s_per_user": l.tokens_per_s_per_user, "tokens_per_s": l.tokens_per_s,
            "decode_step_time": str(l.step_time), "decode_total": str(l.decode_total),
            "request_total": str(l.request_total),
            "request_total_latex": printing.latex(l.request_total),
            "time_model": l.time_model, "stack": l.stack,
            "framework": l.framework.as_dict() if l.framework is not None else None,
            "encoder": None if l.encoder is None else {
                "model": l.encoder.model, "image_tokens": l.encoder.image_tokens,
                "patches": l.encoder.patches, "time_s": l.encoder.time_s},
            "memory": memory_dict(l.memory) if l.memory is not None else None}


def with_strategy(l: Latency, spec) -> dict:
    """The request's figures under a decoding strategy: its time per output token (taken at
    the request's mean cache length, where step times linear in the cache equal their mean)
    over the gen - 1 tokens after the first; TTFT is plain prefill's."""
    tpot = spec.time_per_token_s
    e2e = l.ttft_s + (l.gen - 1) * tpot
    return {"tpot_s": tpot, "e2e_s": e2e, "tokens_per_s_per_user": l.gen / e2e,
            "tokens_per_s": l.settings.batch * l.gen / e2e, "speedup": l.tpot_s / tpot}


def latency_text(l: Latency, spec=None, strategy: str | None = None,
                 scores_kept: bool = False) -> str:
    s = l.settings
    head = [f"batch={s.batch} prompt={s.seq} generated={l.gen} "
            f"(w_bits={s.w_bits:g} a_bits={s.a_bits:g} kv_bits={s.kv_bits:g})",
            f"time to first token   {seconds(l.ttft_s)}"]
    if l.encoder is not None:
        e = l.encoder
        head[-1] += (f" (of it the vision encoder {e.model!r}: {seconds(e.time_s)} over "
                     f"{e.patches:,} patches for the {e.image_tokens:,} image tokens)")
    if spec is None:
        head += [f"time per output token {seconds(l.tpot_s)} (mean over {l.gen - 1} decode "
                 f"steps)",
                 f"end to end            {seconds(l.e2e_s)}",
                 f"tokens/s per user     {l.tokens_per_s_per_user:.4g}",
                 f"tokens/s in total     {l.tokens_per_s:.4g}"]
    else:
        d = with_strategy(l, spec)
        head += [f"with {strategy or spec.strategy} (plain decoding beside it):",
                 f"time per output token {seconds(d['tpot_s'])} (plain {seconds(l.tpot_s)}: "
                 f"{d['speedup']:.3g}x)",
                 f"end to end            {seconds(d['e2e_s'])} (plain {seconds(l.e2e_s)})",
                 f"tokens/s per user     {d['tokens_per_s_per_user']:.4g} (plain "
                 f"{l.tokens_per_s_per_user:.4g})",
                 f"tokens/s in total     {d['tokens_per_s']:.4g} (plain {l.tokens_per_s:.4g})"]
    if l.memory is not None:
        head.append(memory_text(l.memory, {
            "prefill": "the prompt's prefill",
            "decode": f"the last decode step, {s.seq + l.gen - 1:,} tokens cached"},
            scores_kept))
    return "\n".join(head + [
        f"one decode step with s cached tokens (s) = {printing.text(l.step_time)}",
        f"whole request in g generated tokens (s)  = {printing.text(l.request_total)}",
        f"time model: {priced_by(l.time_model, l.stack, l.framework)}",
    ]) + "\n"


def sensitivity_dict(items: list[Sensitivity]) -> dict:
    return {x.stage: {"time_s": x.time_s, "elasticity": dict(x.elasticity)} for x in items}


def sensitivity_text(items: list[Sensitivity]) -> str:
    lines = ["elasticity d log(time) / d log(knob) at this operating point "
             "(+1: time grows in proportion; -1: doubling the knob halves the time)"]
    for x in items:
        lines += ["", f"{x.stage}: time {seconds(x.time_s)}"]
        for knob, e in sorted(x.elasticity.items(), key=lambda kv: -abs(kv[1])):
            lines.append(f"  {knob:10s} {e:+.3f}")
    return "\n".join(lines) + "\n"


def fit_dict(model: str, hw, f) -> dict:
    return {"model": model, "hardware": hw.key, "seq": f.seq, "batch": f.batch,
            "capacity_bytes": f.capacity_bytes, "weights_bytes": f.weights_bytes,
            "per_sequence": None if f.per_sequence is None else str(f.per_sequence),
            "per_sequence_bytes": f.per_sequence_bytes,
            "max_batch": f.max_batch, "max_batch_method": f.max_batch_method,
            "fused_attention_max_batch": f.fused_max_batch,
            "devices": None if f.devices is None else devices_dict(f.devices),
            "max_seq": f.max_seq, "max_seq_reason": f.max_seq_reason,
            "kv_crossover": {"expression": None if f.kv_crossover is None else str(f.kv_crossover),
                             "latex": None if f.kv_crossover is None else _latex(f.kv_crossover),
                             "value": f.kv_crossover_value, "reason": f.kv_crossover_reason}}


def _latex(expr) -> str:
    import sympy   # the expression is sympy's: the compiler is loaded already
    return sympy.latex(expr)


def fit_text(model: str, hw, f, bits: dict) -> str:
    setting = " ".join(f"{k}={v:g}" for k, v in bits.items())
    lines = [f"{model} on {hw.name} ({si(f.capacity_bytes, 'B')}"
             f"{' per device' if f.devices else ''}), {setting}"]
    if f.devices is not None:
        lines.append(_devices_note(f.devices))
    lines += [f"weights: {si(f.weights_bytes, 'B')}; one sequence at seq {f.seq}: "
              f"{si(f.per_sequence_bytes, 'B')} (KV cache + activation peak, larger stage)",
              f"largest batch at seq {f.seq}: {f.max_batch}" +
              ("   = floor((memory - weights) / per_sequence(seq))" if f.max_batch_method is None
               else f" ({f.max_batch_method})")]
    if f.fused_max_batch is not None:
        lines.append(f"  the attention is unfused: its score matrix (batch x heads x seq^2) "
                     f"dominates the memory; with flash_attention() the largest batch is "
                     f"{f.fused_max_batch}")
    if f.max_seq is not None:
        lines.append(f"longest context at batch {f.batch}: {f.max_seq:,} tokens"
                     + (f" ({f.max_seq_reason})" if f.max_seq_reason else ""))
    else:
        lines.append(f"longest context at batch {f.batch}: unbounded ({f.max_seq_reason})")
    if f.kv_crossover is not None:
        lines.append(f"KV cache outweighs the weights at batch {f.batch} from seq = "
                     f"{f.kv_crossover} = {f.kv_crossover_value:,.0f} tokens")
    else:
        lines.append(f"KV cache against weights: {f.kv_crossover_reason}")
    if f.per_sequence is not None:
        lines.append(f"per_sequence(seq) = {f.per_sequence} bytes")
    return "\n".join(lines) + "\n"


def _devices_note(d) -> str:
    """What a fit on a system measures: one device, split as the model's passes say."""
    layout = " x ".join(f"{g}={n}" for g, n in d.layout.items() if n != 1)
    if d.used > 1:
        return (f"devices: {d.used} of {d.count} ({layout}); memory, weights and sequences are "
                "per device")
    return (f"devices: the model on one of the {d.count} devices (no parallelism pass); give "
            f"--pass 'tensor_parallel(n={d.count})' to split it, or see `costdsl plan`")


def serve_dict(model: str, hw, c, spec=None) -> dict:
    out = _serve_dict(model, hw, c)
    if spec is not None:
        out["decoding"] = spec.params
        for point, t, s in zip(out["points"], spec.tpot_s, spec.speedup):
            point["decoding"] = {"tpot_s": float(t), "speedup": float(s),
                                 "tokens_per_s": float(point["batch"] / t)}
    return out


def _serve_dict(model: str, hw, c) -> dict:
    return {"model": model, "hardware": hw.key, "time_model": hw.time_model, "stack": hw.stack,
            "seq": c.seq, "gen": c.gen,
            "capacity_bytes": c.capacity_bytes, "max_batch": c.max_batch,
            "decode_balance_batch": c.decode_balance_batch,
            "first_compute_bound": {"op": c.first_compute_op, "batch": c.first_compute_batch},
            "points": [{"batch": int(b), "ttft_s": float(t), "tpot_s": float(p),
                        "e2e_s": float(e), "tokens_per_s_per_user": float(u),
                        "tokens_per_s": float(r), "memory_bytes": float(m), "fits": bool(f),
                        "decode_compute_share": float(sh)}
                       for b, t, p, e, u, r, m, f, sh in zip(
                           c.batch, c.ttft_s, c.tpot_s, c.e2e_s, c.tokens_per_s_per_user,
                           c.tokens_per_s, c.memory_bytes, c.fits, c.decode_compute_share)]}


def serve_text(model: str, hw, c, spec=None, devices=None) -> str:
    lines = [f"{model} on {hw.name}: prompt {c.seq}, {c.gen} generated tokens per request "
             f"({hw.time_model} time model" + (f", {hw.stack}'s kernels" if hw.stack else "") +
             ")"]
    if devices is not None:
        lines.append(_devices_note(devices))
    lines.append(f"memory runs out above batch {c.max_batch} "
                 f"({si(c.capacity_bytes, 'B')}, cache at its longest)" if c.max_batch else
                 f"not even one request fits in {si(c.capacity_bytes, 'B')}")
    if c.first_compute_batch is not None:
        lines.append(f"decode: {c.first_compute_op} turns compute-bound at batch "
                     f"{c.first_compute_batch:.1f}")
    lines.append("decode: compute and memory time balance at batch "
                 f"{c.decode_balance_batch:.1f}" if c.decode_balance_batch is not None else
                 "decode: memory time exceeds compute time at every batch")
    extra = ("spec TPOT", "speedup") if spec is not None else ()
    rows = [("batch", "TTFT", "TPOT", "e2e", "tok/s/user", "tok/s", "memory", "compute%")
            + extra + ("note",)]
    for i, b in enumerate(c.batch):
        notes = []
        if not c.fits[i]:
            notes.append("out of memory")
        if c.first_compute_batch is not None and b >= c.first_compute_batch and (
                i == 0 or c.batch[i - 1] < c.first_compute_batch):
            notes.append("first decode op compute-bound")
        if c.decode_balance_batch is not None and b >= c.decode_balance_batch and (
                i == 0 or c.batch[i - 1] < c.decode_balance_batch):
            notes.append("decode compute-bound")
        cells = (seconds(spec.tpot_s[i]), f"{spec.speedup[i]:.2f}x") if spec is not None else ()
        rows.append((str(int(b)), seconds(c.ttft_s[i]), seconds(c.tpot_s[i]),
                     seconds(c.e2e_s[i]), f"{c.tokens_per_s_per_user[i]:.1f}",
                     f"{c.tokens_per_s[i]:.0f}", si(c.memory_bytes[i], "B"),
                     f"{100 * c.decode_compute_share[i]:.0f}%") + cells + (", ".join(notes),))
    if spec is not None:
        p = dict(spec.params)
        strategy = p.pop("strategy")
        lines.append(f"{strategy} decoding: " + ", ".join(f"{k}={v}" for k, v in p.items())
                     + " (at the request's mean cache length)")
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    numeric = len(rows[0]) - 1
    lines.append("")
    lines += ["  ".join(x.rjust(w) if k < numeric else x for k, (x, w) in
                        enumerate(zip(r, widths))).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def speculation_dict(s) -> dict:
    """The `decoding` block of latency and crossover JSON."""
    tree = {"tree": list(s.tree)} if s.tree else {}
    params = {"speculative": {"draft": s.draft, "k": s.k, "accept": s.accept, **tree},
              "medusa": {**dict(zip(("heads", "layers", "lm_head"), s.medusa or ())),
                         "k": s.k, "accept": s.accept, **tree},
              "lookahead": {"accept_per_step": s.accept},
              "mtp": {"module": s.draft, "depth": s.k, "accept": s.accept, **tree}}[s.strategy]
    known = lambda v: None if math.isnan(s.accept) else v  # accept solved for: no figure
    if math.isnan(s.accept):
        params = {**params, "accept" if "accept" in params else "accept_per_step": None}
    return {"strategy": s.strategy, "params": params,
            "verified_tokens": s.verified,
            "batch": s.batch, "seq": s.seq, "tokens_per_step": known(s.tokens_per_step),
            "time_per_token_s": known(s.time_per_token_s), "speedup": known(s.speedup),
            "draft_step_s": s.draft_step_s, "verify_s": s.verify_s,
            "plain_decode_step_s": s.decode_s,
            "speedup_expression": str(s.speedup_expr),
            "speedup_latex": printing.latex(s.speedup_expr)}


def speculation_lines(s) -> list[str]:
    if s.strategy == "lookahead":
        return [f"lookahead decoding ({s.verified} tokens per step, {s.accept:g} accepted) at "
                f"batch {s.batch}, {s.seq} cached:",
                f"  one step {seconds(s.verify_s)} against a plain decode step "
                f"{seconds(s.decode_s)}",
                f"  time per output token {seconds(s.time_per_token_s)}: speedup "
                f"{s.speedup:.3g}x; it pays above {s.break_even:.4g} tokens accepted per step",
                f"  speedup(accept) = {printing.text(s.speedup_expr)}"]
    tree = f", tree={list(s.tree)}" if s.tree else ""
    unknown = math.isnan(s.accept)   # the unknown of --solve accept: only what does not need it
    accept = "accept solved for" if unknown else f"accept={s.accept:g}"
    if s.strategy == "medusa":
        tokens = "" if unknown else f"tokens per step E = {s.tokens_per_step:.4g}; "
        head = [f"Medusa decoding ({s.k} heads' candidates{tree}, {accept}) at "
                f"batch {s.batch}, {s.seq} cached:",
                f"  {tokens}one step verifying {s.verified} tokens with the heads "
                f"{seconds(s.verify_s)}, plain decode step {seconds(s.decode_s)}"]
    else:
        tokens = "" if unknown else f"tokens per target step E = {s.tokens_per_step:.4g}; "
        what = (f"MTP decoding (module {s.draft}, depth={s.k}" if s.strategy == "mtp" else
                f"speculative decoding (draft {s.draft}, k={s.k}")
        head = [f"{what}{tree}, {accept}) "
                f"at batch {s.batch}, {s.seq} cached:",
                f"  {tokens}draft step {seconds(s.draft_step_s)}, verification of "
                f"{s.verified} tokens {seconds(s.verify_s)}, plain decode step "
                f"{seconds(s.decode_s)}"]
    speed = [] if unknown else [f"  time per output token {seconds(s.time_per_token_s)} against "
                                f"{seconds(s.decode_s)}: speedup {s.speedup:.3g}x"]
    return head + speed + [f"  speedup(accept) = {printing.text(s.speedup_expr)}"]


def speculation_answer(solve: str, s, value, reason: str | None, expression=None,
                       closed: bool = False) -> dict:
    return {"solve": solve, "decoding": speculation_dict(s),
            "crossovers": [{"op": "speculative", "expression": None if expression is None
                            else str(expression),
                            "latex": None if expression is None else printing.latex(expression),
                            "value": _value(value), "closed_form": closed, "reason": reason}]}


def speculation_answer_text(answer: dict, s) -> str:
    c = answer["crossovers"][0]
    what = {"accept": "break-even acceptance rate (speedup = 1)",
            "batch": "batch above which the strategy is slower than plain decoding",
            "k": "heads to use (of those trained) with the least time per token"
            if s.strategy == "medusa" else
            "draft length with the least time per token"}[answer["solve"]]
    lines = speculation_lines(s) + [""]
    if c["value"] is None:
        lines.append(f"{what}: none: {c['reason']}")
    else:
        how = "" if c["closed_form"] or answer["solve"] != "accept" else \
            " (a polynomial root of degree > 2: solved numerically)"
        lines.append(f"{what}: {answer['solve']} = {c['value']:.6g}{how}"
                     + (f"; {c['reason']}" if c["reason"] else ""))
    return "\n".join(lines) + "\n"


SPARSITY_QUESTIONS = {
    "break_even_sparsity": "sparsity where the predictor eats the saving, at this batch",
    "stop_paying_batch": "batch above which this sparsity stops paying",
    "dense_batch": "batch at which the union of kept rows is dense"}


def sparsity_dict(answers, settings: dict) -> dict:
    """`crossover --solve sparsity` JSON: one entry per group and question."""
    return {"solve": "sparsity", "bound": settings, "crossovers": [{
        "op": a.group, "question": a.question,
        "expression": None if a.expression is None else str(a.expression),
        "latex": None if a.expression is None else printing.latex(a.expression),
        "closed_form_value": _value(a.closed_value), "value": _value(a.value),
        "note": a.note} for a in answers]}


def sparsity_text(answers, settings: dict) -> str:
    bound = ", ".join(f"{k}={v}" for k, v in settings.items())
    lines = [f"when contextual sparsity pays ({bound}); each group asked about alone. Closed "
             "form: the weights-only balance W s^n = P (P predictor, W the group's weights, n "
             "token rows); exact: the whole time model"]
    for group in dict.fromkeys(a.group for a in answers):
        lines += ["", f"{group}:"]
        for a in (a for a in answers if a.group == group):
            exact = "none" if a.value is None else f"{a.value:.4g}"
            closed = "" if a.closed_value is None else f" = {a.closed_value:.4g}"
            lines.append(f"  {SPARSITY_QUESTIONS[a.question]}:")
            lines.append(f"    {printing.text(a.expression)}{closed}; exact {exact}"
                         + (f" ({a.note})" if a.note else ""))
    return "\n".join(lines) + "\n"


COMPRESSION_QUESTIONS = {
    "weights_rank": "rank below which the factorised pair stores fewer weights",
    "time_rank": "rank at which the pair's time equals the dense op's",
    "target_time": "value reaching the target stage time",
    "target_memory": "value reaching the target weights + KV cache"}


def compression_dict(solve: str, answers, settings: dict) -> dict:
    """`crossover --solve ARG` on a compression pass: one entry per op and question."""
    return {"solve": solve, "bound": settings, "crossovers": [{
        "op": a.op, "question": a.question,
        "expression": None if a.expression is None else str(a.expression),
        "latex": None if a.expression is None else printing.latex(a.expression),
        "closed_form_value": _value(a.closed_value), "value": _value(a.value),
        "note": a.note} for a in answers]}


def compression_text(solve: str, answers, settings: dict) -> str:
    bound = ", ".join(f"{k}={v}" for k, v in settings.items())
    lines = [f"{solve}: where compression pays ({bound}); closed form, and the exact value "
             "from the whole time model"]
    for a in answers:
        exact = "" if a.value is None and a.question == "weights_rank" else \
            f"; exact {'none' if a.value is None else format(a.value, '.6g')}"
        closed = "" if a.closed_value is None else f" = {a.closed_value:.6g}"
        lines.append(f"  {a.op:20s} {COMPRESSION_QUESTIONS[a.question]}: "
                     f"{printing.text(a.expression) if a.expression is not None else 'none'}"
                     f"{closed}{exact}" + (f" ({a.note})" if a.note else ""))
    return "\n".join(lines) + "\n"
