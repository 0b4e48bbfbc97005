"""Cost rules: one function per op kind, each a formula for one occurrence of the op.

Conventions (every rule follows them; tests derive expected values from them by hand):
- A multiply-add counts as 2 operations; a transcendental function (exp, tanh, rsqrt) as 1.
- Every rule is written for one general step: each of b = batch sequences adds t new tokens
  over c already cached (the `Site`). Prefill is the step with c = 0 and t = seq, decode the
  step with t = 1 and c = seq, and the `step` stage leaves t = tokens and c = seq.
- n is the number of token rows an op processes: b t, or b for an op marked `tokens=last`.
- In attention, Lq is the number of query positions per sequence (t, or 1 for `tokens=last`)
  and Lk the positions attended, the cache and the new block: c + t (at most the sliding
  window). The causal mask inside the new block is not subtracted (as an unmasked kernel
  computes it): a prefill of N tokens counts N x N scores. H query heads, Hkv key/value heads,
  d head width.
- Every tensor is read from and written to memory once per op (no caching between ops): that is
  what an unfused kernel does. Fusion passes remove the traffic of the intermediates.
- Counts are elements; bytes = elements x bits / 8 of the tensor's class (weights: w_bits,
  activations: a_bits, KV cache: kv_bits). The K and V fed to attention are the KV cache: the op
  that produces them writes the cache, and attention reads all Lk positions of it.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import sympy

from ..language.design import OpInstance, Tensor
from .. import symbols as S


@dataclass(frozen=True)
class Site:
    """Where an op runs: a step of `new` tokens per sequence over `cached` ones."""
    stage: str             # "prefill", "decode", "step", "chunk" or "verify"
    new: sympy.Expr        # new tokens per sequence: seq in prefill, 1 in decode, tokens
    cached: sympy.Expr     # tokens already in the cache: 0 in prefill, seq otherwise
    last: sympy.Expr = sympy.Integer(1)  # rows per sequence of an op marked tokens=last

    @property
    def context(self) -> sympy.Expr:
        """Positions the new tokens attend: the cache and the new block."""
        return self.cached + self.new

    def rows(self, rows: str) -> sympy.Expr:
        """Rows of a tensor: every new position ("all"), the last ("last"), or every k-th
        ("all/k": a vision merger's rows, k patches read as one)."""
        whole, _, divisor = rows.partition("/")
        per_sequence = self.new if whole == "all" else self.last
        return S.batch * per_sequence / int(divisor or 1)


PREFILL = Site("prefill", S.seq, sympy.Integer(0))
DECODE = Site("decode", sympy.Integer(1), S.seq)
STEP = Site("step", S.tokens, S.seq)
CHUNK = Site("chunk", S.tokens, S.seq)
"""A prompt chunk: the step as the stacks' prefill path runs it (chunked prefill, or a prompt
over a prefix found in the cache). It differs from `step` only where a kernel's form depends on
the path (EXPANDED_STAGES: a dense MLA up-projects its latents)."""
VERIFY = Site("verify", S.tokens, S.seq, S.tokens)
"""A speculative verification: the step whose every new token needs its logits, so an op marked
tokens=last (the LM head) runs on all `tokens` rows, not only the last."""
SITES = {"prefill": PREFILL, "decode": DECODE, "step": STEP, "chunk": CHUNK, "verify": VERIFY}


@dataclass(frozen=True)
class Access:
    """A read or write of one tensor: its name, class (weight, act, kv) and element count."""
    tensor: str
    cls: str
    elements: sympy.Expr


@dataclass(frozen=True)
class Cost:
    flops: sympy.Expr
    reads: tuple[Access, ...]
    writes: tuple[Access, ...]
    params: sympy.Expr            # parameters held by the op (not what it reads)
    out_shape: tuple[sympy.Expr, ...]
    active: sympy.Expr | None = None  # parameters one token uses (MoE: fewer); None: all
    vector: sympy.Expr | None = None  # the part of flops on the vector units, where a fused
                                      # kernel's rule counts it (None: the members' sum)

RULES: dict[str, Callable[[OpInstance, list[Tensor], Tensor, Site], Cost]] = {}


def rule(kind: str):
    def register(fn):
        RULES[kind] = fn
        return fn
    return register


def cost_of(op: OpInstance, ins: list[Tensor], out: Tensor, site: Site) -> Cost:
    return RULES[op.kind](op, ins, out, site)


# --- helpers: the traffic of an ordinary token-major tensor -----------------------------------

def _rows_of(t: Tensor, site: Site) -> sympy.Expr:
    return site.rows(t.rows)


def _read(t: Tensor, n: sympy.Expr) -> Access:
    return Access(t.name, t.cls, n * t.width)


def _write(t: Tensor, site: Site) -> Access:
    return Access(t.name, t.cls, _rows_of(t, site) * t.width)


def _weight(op: OpInstance, part: str, elements: sympy.Expr) -> Access:
    return Access(f"{op.name}.{part}", "weight", elements)


def _elementwise(op, ins, out, site, ops_per_element, weights=()):
    """An op touching each element of its inputs once: `ops_per_element` x n x width."""
    n = _rows_of(out, site)
    params = sum((e for _, e in weights), sympy.Integer(0))
    return Cost(
        flops=ops_per_element * n * out.width,
        reads=tuple(_read(t, n) for t in ins) + tuple(_weight(op, p, e) for p, e in weights),
        writes=(_write(out, site),),
        params=params,
        out_shape=(n, out.width))


# --- the rules ----------------------------------------------------------------------------------

@rule("embedding")
def embedding(op, ins, out, site):
    """Gather: reads the n rows it needs of the vocab x dim table (n x dim weight elements) and
    writes n x dim. No arithmetic. Holds vocab x dim parameters."""
    n, dim = _rows_of(out, site), op.attrs["dim"]
    return Cost(sympy.Integer(0), (_weight(op, "weight", n * dim),), (_write(out, site),),
                op.attrs["vocab"] * dim, (n, dim))


@rule("patch_embed")
def patch_embed(op, ins, out, site):
    """A vision encoder's patches through the patch convolution (a linear map of P pixel
    values to D): operations 2 n P D (+ n D for the bias); reads the n x P pixels (activations)
    and the P x D weights (+ D); writes n x D. Holds P D (+ D) parameters."""
    n, p, d = _rows_of(out, site), op.attrs["pixels"], out.width
    bias = op.attrs["bias"] == "true"
    return Cost(2 * n * p * d + (n * d if bias else 0),
                (Access(f"{op.name}.pixels", "act", n * p), _weight(op, "weight", p * d))
                + ((_weight(op, "bias", d),) if bias else ()),
                (_write(out, site),), p * d + (d if bias else 0), (n, d))


@rule("position_embedding")
def position_embedding(op, ins, out, site):
    """x + P[position]: 1 operation per element; reads n rows of the positions x dim table."""
    n, dim = _rows_of(out, site), out.width
    base = _elementwise(op, ins, out, site, 1)
    return Cost(base.flops, base.reads + (_weight(op, "weight", n * dim),), base.writes,
                op.attrs["positions"] * dim, base.out_shape)


@rule("linear")
def linear(op, ins, out, site):
    """y = x W (+ b) with W of in x out:
    operations 2 n in out (+ n out for the bias); reads n x in activations and in x out weights
    (+ out bias); writes n x out. Holds in x out (+ out) parameters.
    With tied=E, W is embedding E's table: it is read in full as here, but it belongs to E, so
    this op holds no parameters for it (the table is counted once)."""
    (x,) = ins
    # in= below the input's width: the op reads the first `in` features (Mamba's dt_proj);
    # merge = k: an output row reads k input rows, one k x in wide row
    d_in = (op.attrs["in"] if op.attrs.get("in") is not None else x.width) \
        * op.attrs.get("merge", 1)
    n, d_out = _rows_of(out, site), out.width
    bias = op.attrs["bias"] == "true"
    tied = op.attrs.get("tied")
    # groups > 1: block-diagonal, each output feature reads in / groups inputs
    matrix_size = d_in * d_out / op.attrs.get("groups", 1)
    matrix = (Access(f"{tied.name}.weight", "weight", matrix_size) if tied
              else _weight(op, "weight", matrix_size))
    return Cost(
        flops=2 * n * matrix_size + (n * d_out if bias else 0),
        reads=(Access(x.name, x.cls, n * d_in), matrix) +
              ((_weight(op, "bias", d_out),) if bias else ()),
        writes=(_write(out, site),),
        params=(0 if tied else matrix_size) + (d_out if bias else 0),
        out_shape=(n, d_out))


EXPANDED_STAGES = ("prefill", "chunk")
"""The stages where a dense MLA attends expanded keys and values: a prompt, and a chunk of one
over a cache (the stacks' prefill path up-projects the cached latents too: vLLM's MLA backend,
TensorRT-LLM's chunked context). Decode, a speculative verification and the general step attend
the latent (absorbed), as the stacks run a query of a few tokens (vLLM's MLA sends a request
down its decode path up to its decode threshold; a step of one token is a decode step). A
serving iteration prices its prompts' chunks on the chunk stage and its decodes on the step's
(serving.iteration)."""


def expands(attrs, site: Site) -> bool:
    """Whether a dense MLA's op runs expanded at `site` (in prefill)."""
    return attrs.get("expanded") == "true" and site.stage in EXPANDED_STAGES


def attention_form(attrs, site: Site):
    """An attention op's attributes as its kernel runs at `site`: a dense MLA's in prefill over
    expanded keys and values, one per query head (kv_heads = heads) of expanded_dim, not over
    the latent (TensorRT-LLM's context MLA times as such a kernel: 571 TFLOP/s counted so on the
    H200 at 8,192 tokens, where the absorbed form's operations would be 1,941, twice the
    peak); any other attention's unchanged."""
    if not expands(attrs, site):
        return attrs
    return {**attrs, "kv_heads": attrs["heads"], "head_dim": attrs["expanded_dim"]}


def _kv_source(attrs, tensor: Tensor, site: Site) -> tuple[str, str]:
    """(name, class) of the keys or values an attention op reads: the cache it is given, or a
    dense MLA's expanded keys and values in prefill (activations the absorption op wrote)."""
    return (attrs["expanded_kv"], "act") if expands(attrs, site) else (tensor.name, tensor.cls)


def _attention_sizes(a, rows: str, site: Site):
    """b, H, Hkv, d, Lq, Lk of an attention op whose queries cover `rows` positions.
    With a sliding window W, Lk = min(context, W): a decode step reads at most W cached
    positions (a rolling cache), and in prefill each query's row of scores is W wide at most
    (a banded kernel; the full seq x seq matrix is not formed)."""
    lq = site.new if rows == "all" else site.last
    return S.batch, a["heads"], a["kv_heads"], a["head_dim"], lq, attended(site.context, a)


def attended(context, attrs) -> sympy.Expr:
    """Cached positions a query attends: the context, at most the sliding window, and at most
    the `select` tokens a sparse attention's indexer picks (DeepSeek Sparse Attention)."""
    return sympy.Min(context, attrs["window"], attrs.get("select", sympy.oo))


@rule("qk_matmul")
def qk_matmul(op, ins, out, site):
    """S = Q K^T for every head: operations 2 b H Lq Lk d; reads Q (b Lq H d) and the cached K
    (b Lk Hkv d, read once per KV head: query heads of a group share it); writes the full
    score matrix b H Lq Lk, mask included."""
    q, k, *selected = ins
    b, h, hkv, d, lq, lk = _attention_sizes(attention_form(op.attrs, site), q.rows, site)
    return Cost(2 * b * h * lq * lk * d,
                (Access(q.name, q.cls, b * lq * h * d),
                 Access(*_kv_source(op.attrs, k, site), b * lk * hkv * d))
                + tuple(Access(t.name, t.cls, b * lq * lk) for t in selected),
                (Access(out.name, out.cls, b * h * lq * lk),), sympy.Integer(0),
                (b, h, lq, lk))


@rule("indexer")
def indexer(op, ins, out, site):
    """DeepSeek Sparse Attention's indexer (DeepSeek-AI 2025, "DeepSeek-V3.2: Pushing the
    Frontier of Open Large Language Models", section 2.1): each query scores every attended
    cached token, Lk = min(context, window) of them, with Hi heads of width di:
    I = sum_j w_j ReLU(q_j . k), then keeps the top `select`. Operations per query
    2 Hi di Lk (the dot products), 3 Hi Lk (ReLU, weight, sum) and Lk (the selection); reads
    the queries (Hi di) and head weights (Hi) of its rows and the cached keys (b Lk di, KV
    class); writes the selected positions (b Lq min(Lk, select)). Unfused: the score matrix
    stays in the kernel, as DeepSeek's released kernels keep it."""
    q, k, *weights = ins
    a = op.attrs
    hi, di, rows = a["heads"], a["head_dim"], q.rows
    b = S.batch
    lq = site.new if rows == "all" else site.last
    # DeepSeek-V4's indexer scores compressed entries, one per `ratio` tokens
    lk = sympy.Min(site.context / a.get("ratio", 1), a["window"])
    # MiniMax-M3's block selector (no head weights) keeps whole blocks: one index per block
    kept = sympy.Min(lk, a["select"]) / a.get("block", 1)
    return Cost(b * lq * lk * (2 * hi * di + 3 * hi + 1),
                (Access(q.name, q.cls, b * lq * hi * di), Access(k.name, k.cls, b * lk * di))
                + tuple(Access(w.name, w.cls, b * lq * hi) for w in weights),
                (Access(out.name, out.cls, b * lq * kept),),
                sympy.Integer(0), (b, lq, kept))


# --- DeepSeek-V4's compressed attention (DeepSeek-AI 2026, DeepSeek-V4 inference/model.py) -------

@rule("kv_compress")
def kv_compress(op, ins, out, site):
    """The Compressor: every `ratio` tokens' projected values and gate scores (2 o d each, o = 2
    where windows overlap at ratio 4, else 1; projected by the linear before it) are pooled into
    one d-wide entry: the position bias added (o d per token), a softmax over the pooled
    window per feature and the weighted sum (7 o d per token), then the entry's RMSNorm and
    RoPE on its rope_dim features (4 d + 3 r per entry). Reads the projections; writes one
    entry per `ratio` tokens to the cache (KV class). Holds the position bias (ratio o d) and
    the norm's gain (d). Not counted: its per-sequence state of the window being pooled
    (2 o ratio x o d values in float32, fixed per sequence and layer)."""
    (x,) = ins
    a = op.attrs
    d, r, ratio, o = a["head_dim"], a["rope_dim"], a["ratio"], a["overlap"]
    n = _rows_of(out, site)
    entries = n / ratio
    return Cost(n * 8 * o * d + entries * (4 * d + 3 * r),
                (_read(x, n), _weight(op, "position_bias", ratio * o * d),
                 _weight(op, "norm", d), Access(f"{op.name}.cos_sin", "act", 2 * entries * r)),
                (Access(out.name, out.cls, entries * d),), ratio * o * d + d, (entries, d))


@rule("sparse_attention")
def sparse_attention(op, ins, out, site):
    """DeepSeek-V4's attention kernel (its sparse_attn): each query's H heads over one d-wide KV
    head that serves as key and value, attending the last `window` tokens' entries and the
    compressed entries (one per `ratio` tokens: all of them, or the `select` the indexer picks),
    with a sink logit per head. Causal: a prompt's query at position p attends min(p, W) window
    entries and min(p / R, select) compressed ones, (new + 1) / 2 positions on average.
        operations  2 b H Lq Lk (d + d) on the matrix units (scores and values over the same
                    entries) and 5 b H Lq (Lk + 1) (the softmax with the sink) on the vector
                    units, Lk = window entries + compressed entries; nothing written between
        bytes       Q and O (b Lq H d), each query's attended entries (b Lq Lk d, KV class:
                    every query gathers its own selection; in decode Lq = 1), the indices the
                    indexer selected, the H sinks."""
    q, window_kv, *rest = ins
    a = op.attrs
    b, h, d, w, ratio = S.batch, a["heads"], a["head_dim"], a["window"], a["ratio"]
    lq = site.new if q.rows == "all" else site.last
    position = site.cached + (site.new + 1) / 2 if q.rows == "all" else site.context
    in_window = sympy.Min(position, w)
    compressed = (sympy.Min(position / ratio, a["select"]) if ratio != 0 else sympy.Integer(0))
    reads = [Access(q.name, q.cls, b * lq * h * d),
             Access(window_kv.name, window_kv.cls, b * lq * in_window * d)]
    if rest:
        reads.append(Access(rest[0].name, rest[0].cls, b * lq * compressed * d))
    reads += [Access(t.name, t.cls, b * lq * compressed) for t in rest[1:]]
    reads.append(Access(f"{op.name}.sinks", "weight", h))
    lk = in_window + compressed
    softmax_ops = 5 * b * h * lq * (lk + 1)
    return Cost(4 * b * h * lq * lk * d + softmax_ops, tuple(reads),
                (Access(out.name, out.cls, b * lq * h * d),), h, (b * lq, h * d),
                vector=softmax_ops)


def window_of(node, tensor: str):
    """The most positions of a cached `tensor` that `node` (a consumer) attends: its window,
    except for DeepSeek-V4's compressed entries, which its kernel reads beyond the window."""
    if node.kind == "sparse_attention" and tensor != node.inputs[1]:
        return sympy.oo
    return node.attrs.get("window", sympy.oo)


# --- hyper-connections (DeepSeek-V4: Xie et al. 2025, "mHC: Manifold-Constrained
# Hyper-Connections"; the Block's hc_pre / hc_post) ------------------------------------------------

@rule("hc_expand")
def hc_expand(op, ins, out, site):
    """The embedding copied into hc streams: reads n d, writes n hc d; no arithmetic."""
    return _elementwise(op, ins, out, site, 0)


@rule("hc_pre")
def hc_pre(op, ins, out, site):
    """The streams (n x hc d) mixed into one d-wide input: an RMS scale of the streams (3 hc d),
    m mixing logits from them (2 hc d m, a matrix product; m = (2 + hc) hc in a layer: the
    pre-weights, post-weights and the hc x hc combination; hc at the head), their scale, bias
    and sigmoid (4 m), in a layer the Sinkhorn normalisation of the combination (iters x 4 hc^2)
    and the weighted sum of the streams (2 hc d). Holds the mixing matrix (m hc d), its bias
    (m) and scales (3 in a layer, 1 at the head); reads the streams; writes n d. The post- and
    combination weights it passes to hc_post (hc + hc^2 per token) are not counted."""
    (x,) = ins
    a = op.attrs
    hc, head = a["hc"], a["head"] == "true"
    m = hc if head else (2 + hc) * hc
    width = x.width
    n = _rows_of(out, site)
    sinkhorn = 0 if head else a["iters"] * 4 * hc ** 2
    vector = n * (3 * width + 4 * m + sinkhorn + 2 * width)
    params = m * width + m + (1 if head else 3)
    return Cost(2 * n * width * m + vector,
                (_read(x, n), _weight(op, "weight", params)),
                (_write(out, site),), params, (n, out.width), vector=vector)


@rule("hc_post")
def hc_post(op, ins, out, site):
    """The sublayer's output x (n x d) spread over the hc streams by the post-weights and the
    streams mixed by the hc x hc combination: y_i = post_i x + sum_j comb_ij s_j, 2 hc d +
    2 hc^2 d operations per row; reads x and the streams, writes the n x hc d streams."""
    x, streams = ins
    hc = op.attrs["hc"]
    n = _rows_of(out, site)
    d = x.width
    return Cost(n * (2 * hc * d + 2 * hc * hc * d), (_read(x, n), _read(streams, n)),
                (_write(out, site),), sympy.Integer(0), (n, out.width))


@rule("block_index")
def block_index(op, ins, out, site):
    """MiniMax Sparse Attention's block selector (MiniMax-M3): the indexer's work, every cached
    token's index key scored by each query's `heads` index heads of `dim` (2 Hi di + 3 Hi + 1
    operations per pair: the dot products, their combination, the selection), without head
    weights; writes the `topk` blocks kept per query (the attention then reads topk x block
    tokens)."""
    a = op.attrs
    index = {"heads": a["heads"], "head_dim": a["dim"], "window": sympy.oo,
             "select": a["topk"] * a["block"], "block": a["block"]}
    return indexer(replace(op, attrs=index), ins, out, site)


def sink_logits(attrs) -> sympy.Expr:
    """Logits a softmax row holds beyond the scores: 1 with attention sinks (gpt-oss: a
    learned logit per head joins each row's denominator and is dropped after), else 0."""
    return sympy.Integer(1 if attrs.get("sinks") == "true" else 0)


def sink_weights(op_name: str, attrs) -> tuple[Access, ...]:
    """The sinks' H parameters, read by the softmax (none without sinks)."""
    if attrs.get("sinks") != "true":
        return ()
    return (Access(f"{op_name}.sinks", "weight", attrs["heads"]),)


@rule("softmax")
def softmax(op, ins, out, site):
    """P = softmax(S) row by row: 5 operations per logit (max, subtract, exp, sum, divide);
    reads and writes b H Lq Lk. With sinks=true each row also holds its head's sink logit
    (5 b H Lq more operations) and the op holds and reads the H sinks."""
    (s,) = ins
    b, h, _, _, lq, lk = _attention_sizes(op.attrs, s.rows, site)
    elements = b * h * lq * lk
    sinks = sink_weights(op.name, op.attrs)
    return Cost(5 * b * h * lq * (lk + sink_logits(op.attrs)),
                (Access(s.name, s.cls, elements),) + sinks,
                (Access(out.name, out.cls, elements),),
                sum((a.elements for a in sinks), sympy.Integer(0)), (b, h, lq, lk))


@rule("sv_matmul")
def sv_matmul(op, ins, out, site):
    """O = P V for every head: operations 2 b H Lq Lk d; reads P (b H Lq Lk) and the cached V
    (b Lk Hkv d); writes O (b Lq H d)."""
    p, v = ins
    b, h, hkv, d, lq, lk = _attention_sizes(attention_form(op.attrs, site), p.rows, site)
    return Cost(2 * b * h * lq * lk * d,
                (Access(p.name, p.cls, b * h * lq * lk),
                 Access(*_kv_source(op.attrs, v, site), b * lk * hkv * d)),
                (Access(out.name, out.cls, b * lq * h * d),), sympy.Integer(0),
                (b * lq, h * d))


FLASH_MIN_ROWS = 16
"""The fewest query rows a FlashAttention block can hold: the M dimension of the smallest
tensor-core MMA tile (m16n8k16). With less on-chip memory the fusion is not applicable."""


def flash_rows(head_dim, a_bits, kv_bits):
    """Br: query rows per block. A block keeps Q and O tiles (activation bits) and one K and one V
    tile (KV bits) of Br x head_dim each in M bytes: Br = 8 M / (2 head_dim (a_bits + kv_bits)),
    i.e. M / (4 head_dim) elements at equal widths, the block size of FlashAttention's
    Algorithm 1 (Dao et al., NeurIPS 2022)."""
    return 8 * S.sram / (2 * head_dim * (a_bits + kv_bits))


def flash_sram_needed(head_dim, a_bits, kv_bits, rows=FLASH_MIN_ROWS):
    """On-chip bytes a block of `rows` query rows needs (Q, O, K and V tiles)."""
    return rows * 2 * head_dim * (a_bits + kv_bits) / 8


def off_chip_passes(passes, head_bytes):
    """Passes over the keys and values that reach off-chip memory. The blocks running at once
    work on the query rows of one KV head or a few (FlashAttention-2's grid walks a head's query
    blocks together), so when one KV head's keys and values of one sequence (`head_bytes`) fit
    in the chip's L2 only the first pass misses it and the rest are served on chip; when they
    do not, each pass evicts what the next needs and every pass reads memory (the IO count of
    the FlashAttention paper, which assumes no cache between HBM and SRAM). No L2 figure
    (S.l2 = 0): every pass. The L2's own bandwidth is not a roof here: vendors publish none
    for these chips, and the re-reads' intensity (Br operations per byte) keeps them near it."""
    if passes == 1:
        return passes
    return sympy.Piecewise((1, head_bytes <= S.l2), (passes, True))


def flash_attention(attrs, q: str, k: str, v: str, out: str, rows: str, site: Site,
                    v_dim=None, block_rows=None, causal: bool = True, name: str = "",
                    selected: tuple[str, ...] = (), expanded: bool = False) -> Cost:
    """FlashAttention: QK^T, softmax and xV in one kernel; the score matrix stays on chip.

    Loop order of FlashAttention-2: each thread block holds Br query rows (Q and O tiles) and
    streams the K and V tiles of the attended positions past them. The g = H / Hkv query heads
    that share a KV head are packed into the same blocks (as decode kernels do), so the keys and
    values of one KV head are read T = max(1, g Lq / Br) times, Br = flash_rows(...) or the
    `block_rows` a kernel is known to use (the ceiling is dropped so that crossovers stay in
    closed form; it is off by less than one block):
        bytes   Q: b Lq H d, O: b Lq H dv (activations); K: b Hkv Lk d T, V: b Hkv Lk dv T
                (KV cache; an MLA latent serves as both K and V and is read once per pass),
                T counting the passes that reach off-chip memory (off_chip_passes: one
                while a KV head fits in the L2)
    In prefill (Lq = Lk = N) the K/V term is 2 b Hkv N^2 g d / Br = Theta(N^2 d^2 / M), the IO
    complexity of the paper's Theorem 2 (Dao et al., NeurIPS 2022). In decode (Lq = 1, g <= Br)
    T = 1: the cache is read once.
    Causal (the default): the kernel skips the key tiles above the diagonal (FlashAttention-2,
    Dao 2023, section 3.1.1), so a new token attends the cache and the new positions up to its
    own: Lk = cached + (new + 1) / 2 on average, for both the scores and the K/V passes
    (prefill: (N + 1) / 2, about half; decode: the whole context, unchanged; with a window W,
    min(that, W)). causal=False counts every position, as a kernel that masks without skipping.
        operations  2 b H Lq Lk (d + dv) on the matrix units (QK^T and xV) and 5 b H Lq Lk
                    (softmax) on the vector units, as the three unfused ops; no score matrix
                    is written. dv is the value width (d unless given). With sinks, each
                    softmax row holds one logit more and the H sinks (of op `name`) are read;
                    a sparse attention reads the positions its indexer selected (b Lq Lk).
    `expanded`: a dense MLA in prefill (attention_form): its keys and values are the
    activations its absorption op wrote (`attrs` expanded_kv), one per query head, not a cache."""
    b, h, hkv, d, lq, lk = _attention_sizes(attrs, rows, site)
    if causal and rows == "all":
        lk = attended(site.cached + (site.new + 1) / 2, attrs)
    dv = d if v_dim is None else v_dim
    group = h / hkv
    kv_bits = S.a_bits if expanded else S.kv_bits
    rows_per_block = block_rows if block_rows is not None else flash_rows(d, S.a_bits, kv_bits)
    passes = sympy.Max(1, group * lq / rows_per_block)
    shared = k == v and not expanded     # an MLA latent: keys and values in one row
    head_bytes = lk * (d if shared else d + dv) * kv_bits / 8
    passes = off_chip_passes(passes, head_bytes)
    scores = b * h * lq * lk
    if expanded:
        k = v = attrs["expanded_kv"]
    cls = "act" if expanded else "kv"
    kv_reads = ((Access(k, cls, b * lk * hkv * d * passes),) if shared else
                (Access(k, cls, b * lk * hkv * d * passes),
                 Access(v, cls, b * lk * hkv * dv * passes)))
    logits = scores + b * h * lq * sink_logits(attrs)
    sinks = sink_weights(name, attrs)
    picks = tuple(Access(t, "act", b * lq * lk) for t in selected)
    return Cost(2 * scores * (d + dv) + 5 * logits,
                (Access(q, "act", b * lq * h * d),) + kv_reads + sinks + picks,
                (Access(out, "act", b * lq * h * dv),),
                sum((a.elements for a in sinks), sympy.Integer(0)), (b * lq, h * dv),
                vector=5 * logits)


def experts_touched(experts, top_k, tokens):
    """Expected distinct experts that `tokens` tokens visit when each picks top_k of `experts`
    uniformly and independently: E (1 - (1 - k/E)^n). One token: k; many: all E. This is the
    weight traffic model of a routed expert layer: only touched experts' weights are read."""
    return experts * (1 - (1 - top_k / experts) ** tokens)


@rule("router")
def router(op, ins, out, site):
    """Router logits x W_r (+ b_r): 2 n hidden E operations (+ n E with the bias); reads
    n x hidden and hidden x E weights (+ E); writes n x E. The top-k selection on the logits is
    not counted (O(n E))."""
    (x,) = ins
    n, e = _rows_of(out, site), op.attrs["experts"]
    bias = op.attrs.get("bias") == "true"
    return Cost(2 * n * x.width * e + (n * e if bias else 0),
                (_read(x, n), _weight(op, "weight", x.width * e))
                + ((_weight(op, "bias", e),) if bias else ()),
                (_write(out, site),), x.width * e + (e if bias else 0), (n, e))


@rule("expert_linear")
def expert_linear(op, ins, out, site):
    """One linear of every routed expert, in x out each, over n tokens routed to k experts:
    operations 2 n k in out; reads n k x in activations (each token once per expert it
    visits) and the weights of the experts touched, experts_touched(E, k, n) x in x out;
    writes n k x out, or, for the last linear (combine), the weighted sum of the k results:
    n x out, with 2 n k out more operations. Holds E in out parameters; a token uses k in out.
    With bias=true every expert adds its out-wide bias: n k out operations, the touched
    experts' biases read, E out parameters held (k out used)."""
    (x,) = ins
    a = op.attrs
    n, e, k = _rows_of(out, site), a["experts"], a["top_k"]
    d_in, d_out = x.width, a["out"]
    combine = a["combine"]
    bias = d_out if a.get("bias") == "true" else 0
    touched = experts_touched(e, k, n)
    written = n * d_out if combine else n * k * d_out
    return Cost(
        flops=2 * n * k * d_in * d_out + n * k * bias + (2 * n * k * d_out if combine else 0),
        reads=(Access(x.name, x.cls, n * k * d_in),
               _weight(op, "weight", touched * (d_in * d_out + bias))),
        writes=(Access(out.name, out.cls, written),),
        params=e * (d_in * d_out + bias), out_shape=(n if combine else n * k, d_out),
        active=k * (d_in * d_out + bias))


# --- multi-head latent attention (DeepSeek-V2, arXiv:2405.04434, section 2.1) ------------------
# H heads, C = kv_lora_rank, Dn = qk_nope_dim, Dr = qk_rope_dim, Dv = v_dim. Inference absorbs
# W_UK into the query and W_UV into the output, so attention runs over the cached latent:
# scores over C + Dr dims with a single KV head, xV over the C dims (see elaborate._mla_parts).

@rule("mla_absorb")
def mla_absorb(op, ins, out, site):
    """q_nope W_UK^T for each head (Dn -> C) and RoPE on q_pe (Dr): operations 2 n H Dn C +
    3 n H Dr; reads q (n H (Dn + Dr)), W_UK (H Dn C) and the cos/sin rows (2 n Dr); writes
    n H (C + Dr). Holds H Dn C parameters: the key half of kv_b_proj.
    Expanded (a dense MLA in prefill, EXPANDED_STAGES): no absorption; the context's
    latents (L = b (cached + new) rows of C: the prompt's) are up-projected by both halves of
    kv_b_proj, as one GEMM: operations 2 L C H (Dn + Dv) + 3 n H Dr; reads q, the latent rows
    (KV class), W_UK and W_UV (the value half, held by `v_up`) and the cos/sin rows; writes the
    rotated query (n H (Dn + Dr)) and the keys and values, L H (Dn + Dr + Dv) (each head's key
    takes the shared rotary part, as the stacks concatenate it)."""
    (q,) = ins
    a = op.attrs
    n, h, c, dn, dr = _rows_of(out, site), a["heads"], a["kv_lora_rank"], a["qk_nope_dim"], \
        a["qk_rope_dim"]
    rope, cos_sin = 3 * n * h * dr, Access(f"{op.name}.cos_sin", "act", 2 * n * dr)
    if expands(a, site):
        dv, context = a["v_dim"], S.batch * site.context
        written = n * h * (dn + dr) + context * h * (dn + dr + dv)
        return Cost(2 * context * c * h * (dn + dv) + rope,
                    (_read(q, n), Access(f"{op.group}.latent", "kv", context * c),
                     _weight(op, "w_uk", h * dn * c),
                     Access(f"{op.group}.v_up.w_uv", "weight", h * c * dv), cos_sin),
                    (Access(out.name, out.cls, written),), h * dn * c, (n, out.width))
    return Cost(2 * n * h * dn * c + rope, (_read(q, n), _weight(op, "w_uk", h * dn * c), cos_sin),
                (_write(out, site),), h * dn * c, (n, out.width))


@rule("mla_cache")
def mla_cache(op, ins, out, site):
    """The cache entry of a token: RMSNorm of the latent (C wide, 4 operations per element) and
    RoPE of the decoupled key (Dr wide, 3 per element); reads n (C + Dr), the gain (C) and the
    cos/sin rows (2 n Dr); writes n (C + Dr) to the KV cache. Holds C parameters."""
    (x,) = ins
    a = op.attrs
    n, c, dr = _rows_of(out, site), a["kv_lora_rank"], a["qk_rope_dim"]
    return Cost(4 * n * c + 3 * n * dr,
                (_read(x, n), _weight(op, "weight", c),
                 Access(f"{op.name}.cos_sin", "act", 2 * n * dr)),
                (_write(out, site),), c, (n, out.width))


@rule("mla_v_up")
def mla_v_up(op, ins, out, site):
    """o_latent W_UV for each head (C -> Dv): operations 2 n H C Dv; reads n H C and W_UV
    (H C Dv); writes n H Dv. Holds H C Dv parameters: the value half of kv_b_proj.
    Expanded (a dense MLA in prefill): the values were up-projected before the attention (by
    `absorb`), whose output is already n H Dv: this op only lays it out for the output
    projection (reads and writes n H Dv, no arithmetic: vLLM's copy of the output where its
    FlashAttention-2 path pads the value width to the key's; TensorRT-LLM's kernel writes the
    layout itself, where this is one pass over the output too many: 5% of the attention's time
    at 4,096 tokens, under 1% at 32,768, at DeepSeek-V3's shapes on the H200)."""
    (x,) = ins
    a = op.attrs
    n, h, c, dv = _rows_of(out, site), a["heads"], a["kv_lora_rank"], a["v_dim"]
    if expands(a, site):
        return Cost(sympy.Integer(0), (Access(x.name, x.cls, n * h * dv),),
                    (_write(out, site),), h * c * dv, (n, out.width))
    return Cost(2 * n * h * c * dv, (_read(x, n), _weight(op, "w_uv", h * c * dv)),
                (_write(out, site),), h * c * dv, (n, out.width))


# --- Mamba (Gu and Dao, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces",
# 2023, Algorithm 2 and section 3.3). Di = d_inner, N = d_state, K = d_conv, R = dt_rank. The
# recurrent state (the conv window and the SSM state) is KV-class memory of a fixed size: in
# prefill the fused scan keeps it on chip and writes the final state once; a decode step reads
# and writes it. It does not grow with the context.

def _state_site_accesses(name, elements, site):
    """The recurrent state's traffic: a step over a cache reads and writes it; a step with
    nothing cached (prefill) starts from zeros and only writes it."""
    state = Access(name, "kv", elements)
    return ((state,) if site.cached != 0 else ()), (state,)


@rule("ssm_conv")
def ssm_conv(op, ins, out, site):
    """Depthwise causal conv1d of width K on Di channels (Mamba: the x half of in_proj; Gated
    DeltaNet: q, k and v), then SiLU: operations n Di (2 K + 1 + 4), the 1 for the bias;
    reads n Di, weights Di K + bias Di; writes n Di. State: the last K - 1 inputs of each
    channel, b Di (K - 1). Holds Di K + Di parameters; without a bias (conv_bias false: Gated
    DeltaNet) n Di fewer operations and Di fewer parameters."""
    (xz,) = ins
    a = op.attrs
    n, di, k = _rows_of(out, site), a["d_inner"], a["d_conv"]
    bias = 0 if a.get("conv_bias") is False else 1
    state_reads, state_writes = _state_site_accesses(f"{op.name}.state", S.batch * di * (k - 1),
                                                     site)
    held = di * k + bias * di
    return Cost(n * di * (2 * k + 4 + bias),
                (Access(xz.name, xz.cls, n * di), _weight(op, "weight", held)) + state_reads,
                (_write(out, site),) + state_writes, held, (n, di))


@rule("ssm_scan")
def ssm_scan(op, ins, out, site):
    """Selective scan with the D skip and the SiLU gate. Per token and channel: softplus(dt) 3
    operations, D u 2, y silu(z) 5; per token, channel and state: exp(dt A) 2, dt B u 2,
    h = A_bar h + B_bar u 2, y += C h 2. Operations n Di (8 N + 10). Reads u and dt (n Di each),
    B and C (n 2N of x_proj's output), z (n Di of in_proj's), A (Di N) and D (Di); writes
    y (n Di). State: b Di N. Holds A_log and D: Di N + Di parameters."""
    u, dt, bc, xz = ins
    a = op.attrs
    n, di, ns = _rows_of(out, site), a["d_inner"], a["d_state"]
    state_reads, state_writes = _state_site_accesses(f"{op.name}.state", S.batch * di * ns,
                                                     site)
    return Cost(n * di * (8 * ns + 10),
                (Access(u.name, u.cls, n * di), Access(dt.name, dt.cls, n * di),
                 Access(bc.name, bc.cls, n * 2 * ns), Access(xz.name, xz.cls, n * di),
                 _weight(op, "A", di * ns), _weight(op, "D", di)) + state_reads,
                (_write(out, site),) + state_writes, di * ns + di, (n, di))


# --- Gated DeltaNet (Yang, Kautz and Hatamizadeh, "Gated Delta Networks: Improving Mamba2 with
# Delta Rule", ICLR 2025; the chunkwise form of Yang et al., "Parallelizing Linear Transformers
# with the Delta Rule over Sequence Length", NeurIPS 2024, section 3, as flash-linear-attention's
# chunk_gated_delta_rule runs it). Hv value heads, Hk query/key heads, dk, dv head widths, C
# the chunk. Per value head the state S is dk x dv; per token S <- a S (I - b k k^T) + b v k^T
# and o = S^T q.

DELTA_GATES = 9
"""Operations per value head and token for its decay and step: the decay g = -exp(A_log)
softplus(a + dt_bias) (add, softplus 3, multiply, exp: 6) and beta = sigmoid(b) (3)."""


def by_form(site: Site, recurrent, chunked):
    """A linear-attention or SSM kernel's figure by the form it runs: the recurrent step for
    one new token (decode), the chunked form for more (a prefill, a step of `tokens`): a
    Piecewise in the new tokens where their count is a symbol, so that a one-token step or
    prompt prices as the decode step it is."""
    if site.new == 1:
        return recurrent
    return sympy.Piecewise((recurrent, site.new <= 1), (chunked, True))


def delta_rule_flops(hv, hk, dk, dv, new, chunk) -> sympy.Expr:
    """(recurrent, chunked) operations per token of the gated delta rule. Both forms
    L2-normalise q and k (3 operations per element each: 6 Hk dk) and compute the gates
    (DELTA_GATES per value head).
    - One new token (decode): the recurrent step per value head: the decay a S (dk dv), k^T S
      (2 dk dv), the correction b (v - k^T S) (2 dv), the rank-1 update (2 dk dv) and the
      readout S^T q (2 dk dv): 7 dk dv + 2 dv.
    - Several (prefill, a step of t tokens): the chunkwise form with chunks of c = min(C, t):
      per chunk and value head K K^T (2 c^2 dk), the triangular inverse of the UT transform
      (c^3 / 3), W = T (b K) and U = T (b V) (2 c^2 dk + 2 c^2 dv), U - W S (2 c dk dv), the
      causal Q K^T and its product with the corrected values (2 c^2 dk + 2 c^2 dv), Q S
      (2 c dk dv), the state update K^T U (2 c dk dv) and the decay masks (2 c^2): per token
      6 dk dv + c (6 dk + 4 dv + 2) + c^2 / 3."""
    common = 6 * hk * dk + DELTA_GATES * hv
    c = sympy.Min(chunk, new)
    return (hv * (7 * dk * dv + 2 * dv) + common,
            hv * (6 * dk * dv + c * (6 * dk + 4 * dv + 2) + c ** 2 / 3) + common)


def _chunk_states(op, state, chunk, site: Site) -> tuple[Access, ...]:
    """The states a chunked kernel writes at every chunk boundary and reads back: `state`
    elements t / min(C, t) times (none for a one-token step)."""
    if site.new == 1:
        return ()
    per_step = by_form(site, sympy.Integer(0), state * site.new / sympy.Min(chunk, site.new))
    return (Access(f"{op.name}.chunk_states", "act", per_step),)


def _state_scan(op, out, site: Site, state, per_token, inputs, gates) -> Cost:
    """A scan over n tokens that keeps `state` elements per sequence (KV class): operations
    n x per_token in the form the step runs (by_form); reads `inputs(n)` and `gates`
    parameters; writes its output; the state read and written by a step over a cache, written
    once by a prefill; a chunked form's chunk states written and read back."""
    n = _rows_of(out, site)
    state = S.batch * state
    state_reads, state_writes = _state_site_accesses(f"{op.name}.state", state, site)
    chunks = _chunk_states(op, state, op.attrs["chunk"], site)
    return Cost(n * by_form(site, *per_token),
                inputs(n) + (_weight(op, "gates", gates),) + chunks + state_reads,
                (_write(out, site),) + chunks + state_writes, gates, (n, out.width))


KDA_CHANNEL_GATE = 7
"""Operations per key channel and token of Kimi Delta Attention's decay in its safe-gate form,
g = lower_bound sigmoid(exp(A_log) (f + dt_bias)), then exp(g): add, multiply, sigmoid 3,
multiply, exp."""


@rule("delta_rule")
def delta_rule(op, ins, out, site):
    """The gated delta rule over n tokens: operations n x delta_rule_flops(...). Reads q, k, v
    (the conv's output, n (2 Hk dk + Hv dv)), a and b (n 2 Hv) and A_log and dt_bias (2 Hv
    parameters); writes o (n Hv dv). State (KV class): b Hv dk dv, read and written by a step
    over a cache, written once by a prefill. The chunkwise form also writes and reads back the
    state at every chunk boundary (b Hv (t / c) dk dv each way: flash-linear-attention keeps
    them in memory between its state and output kernels). Holds 2 Hv parameters.
    decay="channel" (Kimi Delta Attention): the decay is per key channel, so the gates read
    f (n Hv dk) and b (n Hv, the step's part of the fused f_a/b projection), cost
    KDA_CHANNEL_GATE per channel and 3 per head (b's sigmoid) in place of DELTA_GATES per head,
    and hold A_log (Hv) and dt_bias (Hv dk). A diagonal decay of the state costs what a scalar
    one does (dk dv multiplies per head), so both forms keep Gated DeltaNet's counts otherwise:
    an assumption for the chunkwise form, whose KDA kernel also applies the decay inside each
    chunk's products (Kimi Linear, section 3)."""
    u, *gates = ins
    a = op.attrs
    hv, hk, dk, dv = a["heads"], a["k_heads"], a["k_dim"], a["v_dim"]
    recurrent, chunked = delta_rule_flops(hv, hk, dk, dv, site.new, a["chunk"])
    if a.get("decay") == "channel":
        extra = hv * (KDA_CHANNEL_GATE * dk + 3) - DELTA_GATES * hv
        f, fa_b = gates
        return _state_scan(op, out, site, hv * dk * dv, (recurrent + extra, chunked + extra),
                           lambda n: (_read(f, n), Access(fa_b.name, fa_b.cls, n * hv),
                                      _read(u, n)),
                           hv + hv * dk)
    (ab,) = gates
    return _state_scan(op, out, site, hv * dk * dv, (recurrent, chunked),
                       lambda n: (_read(u, n), _read(ab, n)), 2 * hv)


def attn_res_sources(block, layers, output) -> sympy.Expr:
    """The mean number of sources a module of Block Attention Residuals attends, over the two
    modules (attention, feed-forward) of each of `layers` layers in blocks of `block` layers:
    in block n (from 0) the first module attends the embedding and the n sealed blocks (n + 1),
    every later one the current block's partial sum too (n + 2). A full block contributes
    (n + 1) + (2 B - 1)(n + 2); the last, of r = L - B floor(L / B) layers where r > 0,
    (N + 1) + (2 r - 1)(N + 2) with N = floor(L / B). The output's aggregation attends the
    embedding and every block: ceil(L / B) + 1."""
    full = sympy.floor(layers / block)
    if output:
        return sympy.ceiling(layers / block) + 1
    # the full blocks' sum over n < N of (n + 1) + (2 B - 1)(n + 2) = 2 B n + 4 B - 1
    whole = block * full * (full - 1) + full * (4 * block - 1)
    rest = layers - block * full
    last = sympy.Piecewise((0, sympy.Eq(rest, 0)), ((full + 1) + (2 * rest - 1) * (full + 2), True))
    return sympy.simplify((whole + last) / (2 * layers))


ATTN_RES_SOURCE_OPS = 7
"""Operations per source element of an Attention Residuals module: the key's sum of squares (2),
its gain and the dot product with the pseudo-query (3) and the weighted sum (2); the 1/rms
scale and the softmax are per source (5)."""


@rule("attn_res")
def attn_res(op, ins, out, site):
    """A module's input over S sources (attn_res_sources): operations n S (7 d + 5); reads the
    S source rows of d each (n S d: the block representations, as activations) and the
    pseudo-query and the key norm's gain (2 d parameters); writes n d. The sources other than
    the running sum are not tensors of the graph: their traffic is counted on its input."""
    (x,) = ins
    a = op.attrs
    d, n = x.width, _rows_of(out, site)
    s = attn_res_sources(a["block"], a["layers"], a["output"] == "true")
    return Cost(n * s * (ATTN_RES_SOURCE_OPS * d + 5),
                (Access(x.name, x.cls, n * s * d), _weight(op, "weight", 2 * d)),
                (_write(out, site),), 2 * d, (n, d))


@rule("gated_rmsnorm")
def gated_rmsnorm(op, ins, out, site):
    """RMSNorm of y in groups, times silu(z): 4 + 4 + 1 = 9 operations per element; reads y, z
    and the gain; writes the result. Holds the gain, `gain` parameters (Gated DeltaNet: one
    dv-wide gain its heads share; Mamba-2: one per channel)."""
    return _elementwise(op, ins, out, site, 9, [("weight", op.attrs["gain"])])


# --- Mamba-2 (Dao and Gu, "Transformers are SSMs: Generalized Models and Efficient Algorithms
# Through Structured State Space Duality", ICML 2024, sections 6-7: the SSD algorithm). H heads
# of P channels, N the state per channel, G groups sharing B and C, Q the chunk. Per head the
# state h is P x N, its decay a scalar exp(dt A) per token.

def ssd_flops(h, p, n, g, new, chunk) -> sympy.Expr:
    """(recurrent, chunked) operations per token of the SSD scan. Both forms: dt's softplus
    with its bias (3 per head) and the D skip (2 P per head).
    - One new token (decode): per head the decay exp(dt A) (2), the update h = a h + (dt x) B^T
      (P for dt x, 3 P N) and the readout y = h C (2 P N): 5 P N + P + 2.
    - Several: the chunked SSD with chunks of q = min(Q, t): per token the intra-chunk C B^T
      per group (2 q N G), the decay mask per head (2 q) and its product with x (2 q P), the
      chunk states B^T x and their readout C h (4 P N per head), and the state passing between
      chunks (2 P N / q per head)."""
    common = h * (3 + 2 * p)
    q = sympy.Min(chunk, new)
    return (h * (5 * p * n + p + 2) + common,
            h * (4 * p * n + 2 * q * p + 2 * q + 2 * p * n / q) + 2 * q * n * g + common)


@rule("ssd_scan")
def ssd_scan(op, ins, out, site):
    """The SSD scan over n tokens: operations n x ssd_flops(...). Reads x, B and C (the conv's
    output, n (H P + 2 G N)), dt (n H of the projection) and A_log, D and dt_bias (3 H
    parameters); writes y (n H P). State (KV class): b H P N, read and written by a step over a
    cache, written once by a prefill; the chunked form also writes and reads back each chunk's
    state (b H (t / q) P N each way). Holds 3 H parameters."""
    u, zx = ins
    a = op.attrs
    h, p, n, g = a["heads"], a["head_dim"], a["d_state"], a["groups"]
    return _state_scan(op, out, site, h * p * n, ssd_flops(h, p, n, g, site.new, a["chunk"]),
                       lambda rows: (_read(u, rows), Access(zx.name, zx.cls, rows * h)), 3 * h)


ACT_OPS = {"swiglu": 5, "geglu": 10, "gelu": 9, "silu": 4, "relu": 1, "relu2": 2}  # per element, as below


@rule("expert_act")
def expert_act(op, ins, out, site):
    """The experts' activation on n k routed rows of the expert width: the per-element count of
    the named activation (swiglu 5, geglu 10, gelu 9, silu 4, relu 1, relu2 2)."""
    n, k, width = _rows_of(out, site), op.attrs["top_k"], out.width
    rows = n * k
    return Cost(ACT_OPS[op.attrs["act"]] * rows * width,
                tuple(Access(t.name, t.cls, rows * width) for t in ins),
                (Access(out.name, out.cls, rows * width),), sympy.Integer(0), (rows, width))


@rule("rmsnorm")
def rmsnorm(op, ins, out, site):
    """x / sqrt(mean(x^2) + eps) * g: 4 operations per element (square, sum, scale, gain);
    the per-row rsqrt is negligible. Reads x and g, writes y. Holds the gain: `dim` parameters
    (the width, or one head's width for a per-head norm such as Qwen3's QK-norm, whose heads
    share the gain). `gain=false`: 3 operations per element, nothing held or read but x."""
    if op.attrs.get("gain") == "false":   # the normalisation alone (an L2 norm): no gain
        return _elementwise(op, ins, out, site, 3)
    gain = op.attrs.get("dim") if op.attrs.get("dim") is not None else out.width
    return _elementwise(op, ins, out, site, 4, [("weight", gain)])


@rule("layernorm")
def layernorm(op, ins, out, site):
    """(x - mean) / sqrt(var + eps) * g + b: 7 operations per element (sum, subtract, square,
    sum, scale, gain, shift). Reads x, g, b; writes y. Holds 2 x width parameters."""
    return _elementwise(op, ins, out, site, 7, [("weight", out.width), ("bias", out.width)])


@rule("rope")
def rope(op, ins, out, site):
    """x cos + rotate_half(x) sin (RoFormer, Su et al. 2021): 3 operations per rotated element;
    reads x and the cos and sin rows of each token's position (2 n r); writes the rotated x.
    r = rotary_dim (head_dim unless a partial rotary factor leaves the rest unrotated: those
    features are read and written, not computed)."""
    d = op.attrs["head_dim"]
    r = op.attrs.get("rotary_dim") if op.attrs.get("rotary_dim") is not None else d
    base = _elementwise(op, ins, out, site, 3)
    tables = Access(f"{op.name}.cos_sin", "act", 2 * base.out_shape[0] * r)
    return Cost(base.flops * r / d, base.reads + (tables,), base.writes, base.params,
                base.out_shape)


@rule("sigmoid")
def sigmoid(op, ins, out, site):
    """1 / (1 + exp(-x)): 3 operations per element (exp, add, divide)."""
    return _elementwise(op, ins, out, site, 3)


@rule("silu")
def silu(op, ins, out, site):
    """x sigmoid(x) = x / (1 + exp(-x)): 4 operations per element (exp, add, divide, multiply)."""
    return _elementwise(op, ins, out, site, 4)


@rule("gelu")
def gelu(op, ins, out, site):
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))): 9 operations per element."""
    return _elementwise(op, ins, out, site, 9)


@rule("relu2")
def relu2(op, ins, out, site):
    """max(x, 0)^2: 2 operations per element."""
    return _elementwise(op, ins, out, site, 2)


@rule("relu")
def relu(op, ins, out, site):
    """max(x, 0): 1 operation per element."""
    return _elementwise(op, ins, out, site, 1)


@rule("swiglu")
def swiglu(op, ins, out, site):
    """silu(gate) x up: 5 operations per element of the MLP's intermediate width; reads gate
    and up, writes one."""
    return _elementwise(op, ins, out, site, 5)


@rule("geglu")
def geglu(op, ins, out, site):
    """gelu(gate) x up: 10 operations per element."""
    return _elementwise(op, ins, out, site, 10)


@rule("add")
def add(op, ins, out, site):
    """a + b: 1 operation per element; reads both, writes one."""
    return _elementwise(op, ins, out, site, 1)


@rule("mul")
def mul(op, ins, out, site):
    """a x b: 1 operation per element; reads both, writes one."""
    return _elementwise(op, ins, out, site, 1)


@rule("concat")
def concat(op, ins, out, site):
    """[a; b]: a copy, no arithmetic; reads both, writes n x (a + b)."""
    return _elementwise(op, ins, out, site, 0)


# --- communication between devices (the parallelism passes insert these ops) ------------------
# An alpha-beta model per collective over n devices (Thakur, Rabenseifner, Gropp, "Optimization
# of Collective Communication Operations in MPICH", IJHPCA 2005; NCCL's ring algorithms): a
# message step costs alpha (the link's latency), a byte crossing one device's link costs 1 / B.
# S is the message: the bytes each device holds of the tensor before the collective (for
# all-gather, the bytes of the gathered result).

COMM_KINDS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv")


def collective(kind: str, message: sympy.Expr, n: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """(message steps, bytes each device sends over its link) of one collective.

    - all_reduce, ring: a reduce-scatter then an all-gather, each n - 1 steps moving S / n:
      2 (n - 1) steps, 2 (n - 1) S / n bytes; time 2 (n - 1) (alpha + S / (n B)).
    - all_gather and reduce_scatter: n - 1 steps of S / n; time (n - 1) (alpha + S / (n B)).
    - all_to_all: each device sends (n - 1) / n of its S, one peer per step; time
      (n - 1) (alpha + S / (n B)).
    - send_recv: one step of S; time alpha + S / B.
    n = 1 costs nothing (no step, no byte)."""
    if kind == "send_recv":
        return sympy.Integer(1), message
    steps = 2 * (n - 1) if kind == "all_reduce" else n - 1
    return steps, steps * message / n


def all_reduce_terms(algorithm: str, message: sympy.Expr, n: sympy.Expr
                     ) -> tuple[sympy.Expr, sympy.Expr]:
    """(message steps, bytes each device receives) of an all-reduce of S bytes over n devices by
    `algorithm` (the custom all-reduce kernels of vLLM and TensorRT-LLM, NCCL's ring):
    - one_shot: every device reads the other n - 1 buffers whole and reduces locally: one step,
      (n - 1) S bytes.
    - two_shot: a reduce-scatter then an all-gather through peer memory, each one step moving
      (n - 1) S / n: 2 steps, 2 (n - 1) S / n bytes.
    - ring: as `collective("all_reduce")`, 2 (n - 1) steps of S / n."""
    if algorithm == "one_shot":
        return sympy.Integer(1), (n - 1) * message
    if algorithm == "two_shot":
        return sympy.Integer(2), 2 * (n - 1) * message / n
    return collective("all_reduce", message, n)


def busiest_load(pairs: sympy.Expr, n: sympy.Expr) -> sympy.Expr:
    """Expected token-expert pairs on the busiest of n devices when `pairs` pairs fall uniformly
    and independently: m / n + sqrt(2 (m / n) ln n), at most m (Raab and Steger, "Balls into Bins
    -- A Simple and Tight Analysis", RANDOM 1998, for m >= n ln n; for fewer pairs it
    overestimates a little, and the cap keeps it at most every pair). n = 1 gives m. Every
    device waits for the busiest at the all-to-all that follows, so expert parallelism pays
    this, not the mean m / n."""
    mean = pairs / n
    return sympy.Min(pairs, mean + sympy.sqrt(2 * mean * sympy.log(n)))
