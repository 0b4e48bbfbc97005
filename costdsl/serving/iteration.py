"""The time of one serving iteration over a mixed batch, as one compiled function of a few sums.

A serving iteration runs sequences that each add t_i new tokens over c_i cached ones: a decode
adds 1, a prefill chunk t_i > 1 (c_i = the part of its prompt already prefilled). The compiled
`step` stage (graph.costs: b sequences each adding `tokens` over `seq` cached) gives every op's
compute and memory time as a polynomial in batch, tokens and seq; every cost rule is a sum over
sequences, so each monomial batch x tokens^i x seq^j is the sum over the batch of t^i c^j:

    batch            -> N  = number of sequences           (the LM head on each one's last row)
    batch tokens     -> T  = sum t_i                        (linears, norms, activations)
    batch tokens^2   -> TT = sum t_i^2                      (attention inside the new block)
    batch tokens seq -> TC = sum t_i c_i                    (attention of new tokens on the cache)
    batch seq        -> C  = sum c_i                        (KV cache read)
    1                ->  1                                  (weights: read once per iteration)

and, for the ops on the rows that need logits (the LM head, `tokens=last`, lowered at the
`verify` site where every new token may need them), batch tokens -> L = the rows that need
logits: 1 per sequence, or k + 1 for a sequence verifying k drafted tokens. With L = N this is
the step stage exactly.

so the iteration time, sum over ops of max(compute, memory) (+ launch), is exact in these five
sums for every op whose rule is a polynomial of degree one in batch: the dense kinds, attention
unfused or FlashAttention (its K/V rereads are per sequence), norms and activations. It is not
exact where a rule is not polynomial: a sliding window's min(c + t, window), a routed expert
layer's expected experts touched E (1 - (1 - k/E)^(b t)), contextual sparsity's union 1 - s^n.
Those are evaluated at the batch's mean sequence (b = N, t = T / N, c = C / N). One batched
kernel per op is assumed: a per-sequence attention kernel would add a launch per sequence,
which the efficiency model's launch cost (per op) does not count.

Where an op's form depends on the path a sequence takes (a dense MLA: the stacks run a prompt's
chunk expanded, its latents up-projected, and a decode absorbed, as two kernels of one
iteration), the op is two kernels: the chunk stage's (graph.costs.CHUNK) over the sums of the
sequences in their prompt (PN, PT, PTT, PTC, PC: the same five sums over those alone) and the
step's, with decode's kernels, over the rest (N - PN, ...); each runs, and costs its launch and
its weights' read, only where its part of the batch is not empty.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

import sympy

from ..analysis.compiled import Unsupported, to_tree
from ..analysis.trees import compile_tree
from ..analysis.roofline import StageRoofline, kernel_time, row_count
from .. import symbols as S

N, T, TT, TC, C, L = sympy.symbols("N T TT TC C L", nonnegative=True)
PROMPT_SUMS = sympy.symbols("PN PT PTT PTC PC", nonnegative=True)
"""N, T, TT, TC and C over the sequences in their prompt alone (a prefill path's kernels)."""
AGGREGATES = (N, T, TT, TC, C, L) + PROMPT_SUMS
_MONOMIALS = {(1, 0, 0): N, (1, 1, 0): T, (1, 2, 0): TT, (1, 1, 1): TC, (1, 0, 1): C}
"""(degree in batch, in tokens, in seq) -> the sum it stands for."""
_PROMPT_MONOMIALS = dict(zip(_MONOMIALS, PROMPT_SUMS))
_DECODE_MONOMIALS = {k: v - _PROMPT_MONOMIALS[k] for k, v in _MONOMIALS.items()}
"""The same sums over the prompts' sequences, and over the others (decoding or verifying)."""
_LOGIT_MONOMIALS = {**_MONOMIALS, (1, 1, 0): L}
"""For an op on the rows that need logits (`tokens=last`, lowered at the verify site): its
rows are L = sum of logit rows: 1 per prefilling or decoding sequence, k + 1 per sequence
verifying k drafted tokens."""


NO_PROMPTS = (0, 0, 0, 0, 0)
"""The prompt sums of an iteration whose every sequence is on the decode path."""


@dataclass(frozen=True)
class IterationCost:
    """time(N, T, TT, TC, C, L, PN, PT, PTT, PTC, PC) of one iteration, and the expression it
    compiles."""
    expression: sympy.Expr
    function: Callable[..., float]
    mean_field_ops: tuple[str, ...]     # ops taken at the mean sequence (not exact)
    decode_function: Callable[..., float] | None = None
    """The same with decode's kernels (its attention efficiencies), for an iteration in which
    every sequence decodes one token; None where the hardware prices them alike."""
    decode_expression: sympy.Expr | None = None
    decode_steps: Callable[..., object] | None = None
    """numpy: the times of many iterations in which every sequence decodes (the same six sums,
    as arrays); the simulation's run of repeated decode iterations takes them in one call."""
    request_s: float = 0.0
    """The serving engine's time per request before the scheduler sees it (API server,
    tokenizer: hardware efficiency.Framework.request): a request is admitted that long after
    it is sent, and its TTFT counts it."""

    def __call__(self, n: float, t: float, tt: float, tc: float, c: float,
                 l: float | None = None, prompts: tuple = NO_PROMPTS) -> float:
        """The iteration's time; `prompts`: (PN, PT, PTT, PTC, PC), the five sums over the
        sequences in their prompt (none by default: every sequence on the decode path)."""
        if not n:
            return 0.0
        l = n if l is None else l
        if self.decode_function is not None and t == n and tt == n and l == n:
            return self.decode_function(n, t, tt, tc, c, l, *NO_PROMPTS)
        return self.function(n, t, tt, tc, c, l, *prompts)


def _aggregated(expr: sympy.Expr, monomials=_MONOMIALS) -> sympy.Expr | None:
    """`expr` (in batch, tokens, seq) in the five sums; None where it is not a polynomial of
    degree at most one in batch over the known monomials."""
    expr = sympy.expand(expr)
    try:
        poly = sympy.Poly(expr, S.batch, S.tokens, S.seq)
    except sympy.PolynomialError:
        return None
    out = sympy.Integer(0)
    for monomial, coeff in poly.terms():
        if monomial == (0, 0, 0):
            out += coeff
        elif monomial in monomials:
            out += coeff * monomials[monomial]
        else:
            return None
    return out


def _mean_field(expr: sympy.Expr, logits: bool, monomials=_MONOMIALS) -> sympy.Expr:
    """`expr` at the batch's mean sequence: b = N, t = T / N (L / N for logit rows), c = C / N;
    over a part of the batch (`monomials`: its sums), that part's (which may be empty: b
    divides as at least 1, over sums of 0)."""
    n, t, c = (monomials[k] for k in ((1, 0, 0), (1, 1, 0), (1, 0, 1)))
    per = n if n == N else sympy.Max(1, n)
    return sympy.sympify(expr).xreplace({S.batch: n, S.tokens: (L if logits else t) / per,
                                         S.seq: c / per})


def iteration_cost(step: StageRoofline, bits: Mapping[sympy.Symbol, float],
                   decode: StageRoofline | None = None, request_s: float = 0.0,
                   chunk: StageRoofline | None = None) -> IterationCost:
    """The compiled iteration time of the `verify` (or `step`) stage's roofline with the
    bitwidths bound; `decode`: the same graph's roofline with decode's kernels, used when every
    sequence of an iteration decodes; `request_s`: the engine's time per request before it
    is scheduled; `chunk`: the chunk stage's roofline, whose ops of another form than the
    step's price the prompts' part of the batch (the module's docstring)."""
    total, approximate = _total(step, bits, _path_ops(step, decode or step, chunk))
    decode_total = _total(decode, bits)[0] if decode is not None else None
    try:
        record = cost_record(IterationCost(total, None, (), None, decode_total,
                                           request_s=request_s))
    except Unsupported:   # a node the tree form lacks: sympy's printer, and no vector form
        return IterationCost(total, _lambdified(total), tuple(dict.fromkeys(approximate)),
                             _lambdified(decode_total), decode_total, request_s=request_s)
    return replace(cost_from_record(record), expression=total, decode_expression=decode_total,
                   mean_field_ops=tuple(dict.fromkeys(approximate)))


def _lambdified(expr: sympy.Expr | None):
    return None if expr is None else sympy.lambdify(AGGREGATES, expr, modules="math")


def cost_record(cost: IterationCost) -> dict:
    """The iteration cost as plain data (expression trees, analysis.compiled): what travels to
    a worker process or a cluster, never code or a pickle of a function."""
    return {"symbols": [s.name for s in AGGREGATES], "time": to_tree(cost.expression),
            "decode_time": to_tree(cost.decode_expression)
            if cost.decode_expression is not None else None, "request_s": cost.request_s}


def cost_from_record(record: dict) -> IterationCost:
    """The iteration cost a `cost_record` describes, compiled from its checked trees into
    functions of floats."""
    symbols = record["symbols"]
    decode = record.get("decode_time")
    return IterationCost(None, compile_tree(record["time"], symbols, scalar=True), (),
                         compile_tree(decode, symbols, scalar=True) if decode else None,
                         None, compile_tree(decode or record["time"], symbols),
                         float(record.get("request_s", 0.0)))


def _path_ops(step: StageRoofline, decode: StageRoofline, chunk: StageRoofline | None
              ) -> dict:
    """{op name: (its decode path's op, its prompt path's op)} for the step's ops whose chunk
    form differs (a dense MLA's up-projection and attention); {} without a chunk roofline. The
    ops on the rows that need logits differ in their rows alone (L in both: the verify site's)
    and stay one. The decode path's op is `decode`'s: decode's kernels' figures, with their
    own launch (a mixed iteration runs eagerly, outside the decode step's CUDA graph)."""
    if chunk is None:
        return {}
    steps, decodes = ({op.node.name: op for op in r.ops} for r in (step, decode))
    eager = {name: op if op.eager_launch is None else replace(op, launch=op.eager_launch)
             for name, op in decodes.items()}
    return {op.node.name: (eager[op.node.name], op) for op in chunk.ops
            if op.node.name in steps and op.node.name in decodes
            and op.node.attrs.get("tokens") != "last"
            and _form(op.node) != _form(steps[op.node.name].node)}


def _form(node) -> tuple:
    """What an op costs, as its graph says: operations and each read and write."""
    return (sympy.sympify(node.flops), node.reads, node.writes)


def _total(step: StageRoofline, bits: Mapping[sympy.Symbol, float], paths: dict | None = None):
    """The iteration time in the five sums (and the prompts' five, for the ops in `paths`),
    and the ops taken at the mean sequence."""
    bits = {k: sympy.Float(v) for k, v in bits.items()}
    total, approximate = sympy.Integer(0), []
    for op in step.ops:
        if op.node.name in (paths or {}):
            time, exact = _split_time(*paths[op.node.name], bits)
        else:
            logits = op.node.attrs.get("tokens") == "last"
            time, exact = _op_time(op, bits, _LOGIT_MONOMIALS if logits else _MONOMIALS, logits)
        if not exact:
            approximate.append(op.node.name)
        total += op.node.repeat * time
    # a pipeline's steps (microbatches + stages - 1) count the iteration's sequences; the
    # serving engine's time (step + per sequence) once per iteration
    return (sympy.sympify(step.steps).xreplace({S.batch: N}) * total
            + step.server_time.xreplace({S.batch: N})), approximate


def _split_time(decoding, prompting, bits) -> tuple[sympy.Expr, bool]:
    """An op run as two kernels, each over its part of the batch and only where that part has
    a sequence (Min(1, sequences): 0 or 1), and whether both are exact in the sums."""
    parts, exact = [], True
    for op, monomials in ((decoding, _DECODE_MONOMIALS), (prompting, _PROMPT_MONOMIALS)):
        time, alone = _op_time(op, bits, monomials, False)
        parts.append(sympy.Min(1, monomials[(1, 0, 0)]) * time)
        exact = exact and alone
    return sympy.Add(*parts), exact


def _op_time(op, bits, monomials, logits: bool) -> tuple[sympy.Expr, bool]:
    """One op's time in the sums `monomials` names, and whether that is exact (else at the
    batch's mean sequence)."""
    parts, exact = [], True
    for expr in (op.matrix_time, op.vector_time, op.streaming_time,
                 op.overlapped_transfer, op.serial_transfer + op.serial_work,
                 row_count(op.node)):
        bound = sympy.sympify(expr).xreplace(bits)
        summed = _aggregated(bound, monomials)
        if summed is None:
            summed, exact = _mean_field(bound, logits, monomials), False
        parts.append(summed)
    matrix, vector, streaming, beside, serial, rows = parts
    # one batched kernel over every sequence's rows: the occupancy and the GEMM's waves of
    # their sum
    compute = matrix * op.waves_at(rows) + vector
    memory = op.device_time(streaming, op.occupancy_at(rows)) + beside
    return kernel_time(compute, memory, op.overlap) + op.launch + serial, exact
