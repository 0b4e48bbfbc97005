"""The op vocabulary of the language: each op kind's inputs, attributes and shape rule.

An activation tensor is a matrix of `rows x width`: rows are the tokens an op processes (every
position of every sequence, or only the last position with `tokens=last`), width its features.
Shape rules work on widths, which are sympy expressions whether the user bound them or left them
free. Costs are not here: they are in `costs.py`, one rule per kind.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping

import sympy

from ..errors import ShapeError


@dataclass(frozen=True)
class Dim:
    """A dimension attribute: an expression over parameters. `None` default means required."""
    default: object = None
    infer: bool = False  # may be left out; the shape rule infers it from the inputs
    doc: str = ""


@dataclass(frozen=True)
class Choice:
    """An attribute taking one of a fixed set of bare words, e.g. tokens=last or bias=true."""
    options: tuple[str, ...]
    default: str
    doc: str = ""


@dataclass(frozen=True)
class Ref:
    """An attribute naming another op of the same scope, e.g. tied=embed."""
    kind: str   # the op kind it must name
    doc: str = ""


@dataclass(frozen=True)
class TensorInfo:
    """What a shape rule sees of a tensor."""
    name: str
    width: sympy.Expr
    rows: str  # "all" positions, or only the "last" of each sequence; "ids" for token ids


@dataclass(frozen=True)
class Signature:
    kind: str
    inputs: tuple[str, ...]
    attrs: Mapping[str, Dim | Choice | Ref]
    shape: Callable[[list[TensorInfo], dict], sympy.Expr]
    engine: str  # "matrix" (tensor cores), "vector" (elementwise units) or "memory" (no math)
    operands: tuple[str, ...] = ()  # tensor classes whose bitwidths set a matrix op's type
    doc: str = ""
    internal: bool = False  # produced by expansion, not written by users


SIGNATURES: dict[str, Signature] = {}

BOOL = ("false", "true")


def signature(kind, inputs, engine, operands=(), internal=False, **attrs):
    def register(shape):
        SIGNATURES[kind] = Signature(kind, tuple(inputs), attrs, shape, engine, tuple(operands),
                                     (shape.__doc__ or "").strip(), internal)
        return shape
    return register


def require_equal(a: sympy.Expr, b: sympy.Expr, what: str) -> None:
    """Raise ShapeError unless a == b holds for every value of the free parameters."""
    if sympy.simplify(a - b) != 0:
        raise ShapeError(f"{what}: {a} != {b}")


def _whole(value: sympy.Expr, what: str) -> None:
    """Raise ShapeError when a count that must be whole (heads, head width) is a number that is
    not a positive integer."""
    if value.is_number and not (value.is_integer and value.is_positive):
        raise ShapeError(what)


def _same_width(ins: list[TensorInfo]) -> sympy.Expr:
    first = ins[0]
    for other in ins[1:]:
        require_equal(first.width, other.width,
                      f"inputs {first.name!r} and {other.name!r} differ in width")
    return first.width


# --- model input --------------------------------------------------------------------------------

@signature("embedding", ["ids"], "memory", vocab=Dim(doc="vocabulary size"),
           dim=Dim(doc="embedding width"))
def _embedding(ins, a):
    """Token embedding: one row of a vocab x dim table per token (a gather)."""
    if ins[0].rows != "ids":
        raise ShapeError(f"embedding reads token ids (the model input `tokens`), "
                         f"not the activation {ins[0].name!r}")
    return a["dim"]


@signature("position_embedding", ["x"], "vector",
           positions=Dim(doc="table length (max positions)"), dim=Dim(infer=True))
def _position_embedding(ins, a):
    """Learned absolute positions: adds one row of a positions x dim table to each token."""
    if a["dim"] is not None:
        require_equal(a["dim"], ins[0].width, "dim differs from the input's width")
    return ins[0].width


# --- linear algebra -----------------------------------------------------------------------------

@signature("linear", ["x"], "matrix", operands=("weight", "act"),
           out=Dim(doc="output features"), **{"in": Dim(infer=True, doc="input features")},
           groups=Dim(default=1, doc="block-diagonal groups: group i maps the i-th in/groups "
                                     "features to the i-th out/groups (DeepSeek-V4's wo_a)"),
           bias=Choice(BOOL, "false", "add a bias vector"),
           tokens=Choice(("all", "last"), "all", "which positions it runs on"),
           tied=Ref("embedding", "use the transposed table of this embedding as W"),
           merge=Dim(default=1, doc="consecutive rows read as one: n / merge rows of merge x "
                                    "the input's width (a vision merger's 2 x 2 patches: 4)"))
def _linear(ins, a):
    """y = x W (+ b), W of in x out (groups > 1: a block-diagonal W of groups blocks; merge
    = k: each output row reads k consecutive input rows, W of k in x out)."""
    if a["in"] is not None:
        require_equal(a["in"], ins[0].width, f"in= differs from the width of {ins[0].name!r}")
    if a["merge"] != 1 and ins[0].rows != "all" and not ins[0].rows.startswith("all/"):
        raise ShapeError(f"merge= needs every position's rows; {ins[0].name!r} has only the "
                         "last position's")
    for size, what in ((ins[0].width, "input width"), (a["out"], "out=")):
        per = size / a["groups"]
        if per.is_number and not per.is_integer:
            raise ShapeError(f"the {what} ({size}) does not split into groups={a['groups']}")
    tied = a.get("tied")
    if tied is not None:
        require_equal(tied.attrs["dim"], ins[0].width,
                      f"tied to {tied.name!r}, whose width differs from the input's")
        require_equal(tied.attrs["vocab"], a["out"],
                      f"tied to {tied.name!r}, whose vocabulary differs from out=")
    return a["out"]


@signature("patch_embed", ["ids"], "matrix", operands=("weight", "act"),
           pixels=Dim(doc="values of one patch: channels x temporal x patch x patch (Qwen3.5's "
                          "in_channels x temporal_patch_size x patch_size^2)"),
           dim=Dim(doc="the encoder's width"),
           bias=Choice(BOOL, "true", "a bias vector (the patch convolution's)"))
def _patch_embed(ins, a):
    """A vision encoder's input: each image patch's pixels through one linear map (the patch
    convolution, whose stride is its kernel). Reads the model input: in an encoder model, `seq`
    counts patches per sequence."""
    if ins[0].rows != "ids":
        raise ShapeError(f"patch_embed reads the model input (`tokens`: here the patches), not "
                         f"the activation {ins[0].name!r}")
    return a["dim"]


@signature("attention", ["q", "k", "v"], "matrix", operands=("act", "kv"),
           heads=Dim(doc="query heads"), kv_heads=Dim(infer=True, doc="key/value heads (GQA)"),
           head_dim=Dim(infer=True, doc="width of one head"),
           causal=Choice(BOOL, "true", "causal mask"),
           window=Dim(default="oo", doc="sliding window: keys attended per query (inf: all)"),
           sinks=Choice(BOOL, "false", "a learned logit per head joins each softmax (gpt-oss)"),
           select=Ref("block_index", "a block_index op choosing the cached tokens each query "
                                     "attends (MiniMax-M3's sparse attention)"))
def _attention(ins, a):
    """softmax(Q K^T / sqrt(d)) V per head; expands to qk, softmax and sv ops."""
    q, k, v = ins
    if q.rows not in ("all", "last"):
        raise ShapeError(f"attention over merged rows ({q.name!r}): merge after the encoder's "
                         "attention, as a vision merger does")
    return q.width  # checked in `attention_dims`


def attention_dims(ins: list[TensorInfo], a: dict) -> dict:
    """Fill in head_dim and kv_heads from the inputs where left out, and check all three widths."""
    q, k, v = ins
    heads = a["heads"]
    head_dim = a["head_dim"] if a["head_dim"] is not None else q.width / heads
    _whole(head_dim, f"query {q.name!r} is {q.width} wide: not a multiple of heads={heads}")
    kv_heads = a["kv_heads"] if a["kv_heads"] is not None else k.width / head_dim
    _whole(kv_heads, f"key {k.name!r} is {k.width} wide: not a multiple of head_dim={head_dim}")
    require_equal(q.width, heads * head_dim, f"query {q.name!r} is not heads x head_dim wide")
    require_equal(k.width, kv_heads * head_dim, f"key {k.name!r} is not kv_heads x head_dim wide")
    require_equal(v.width, kv_heads * head_dim,
                  f"value {v.name!r} is not kv_heads x head_dim wide")
    _shared_heads(heads, kv_heads, "kv_heads")
    return {**a, "head_dim": head_dim, "kv_heads": kv_heads}


def _shared_heads(heads, shared, name: str) -> None:
    """Heads share `shared` groups (of keys and values, of B and C) evenly."""
    ratio = heads / shared
    if ratio.is_number and not ratio.is_integer:
        raise ShapeError(f"heads ({heads}) is not a multiple of {name} ({shared})")


ACTIVATIONS = ("swiglu", "geglu", "gelu", "silu", "relu", "relu2")
GATED = ("swiglu", "geglu")


@signature("moe", ["x"], "matrix", operands=("weight", "act"),
           experts=Dim(doc="routed experts"), top_k=Dim(doc="experts each token visits"),
           ffn=Dim(doc="intermediate width of one expert"),
           shared=Dim(default=0, doc="shared experts every token visits"),
           shared_ffn=Dim(infer=True, doc="intermediate width of one shared expert"),
           latent=Dim(default=0, doc="width the routed experts work in (LatentMoE's "
                                     "moe_latent_size): the input is projected down to it "
                                     "and their sum back up; 0: the input's width"),
           latent_norm=Choice(BOOL, "false", "an RMSNorm of the latent projection before "
                                             "the experts (Kimi K3's latent_moe_use_norm)"),
           act=Choice(ACTIVATIONS, "swiglu", "the experts' activation"),
           bias=Choice(BOOL, "false", "biases on the router and every expert linear (gpt-oss)"))
def _moe(ins, a):
    """Mixture of experts: a router picks top_k of `experts` MLPs per token (plus `shared`
    experts every token visits); expands into router, expert and shared-expert ops."""
    over = a["top_k"] - a["experts"]
    if over.is_number and over > 0:
        raise ShapeError(f"top_k={a['top_k']} is more than the {a['experts']} experts")
    if a["latent_norm"] == "true" and a["latent"] == 0:
        raise ShapeError("latent_norm=true needs latent= (the width the norm works on)")
    return ins[0].width


@signature("router", ["x"], "matrix", operands=("weight", "act"), internal=True)
def _router(ins, a):
    """Router logits x W_r, W_r of hidden x experts."""
    return a["experts"]


@signature("expert_linear", ["x"], "matrix", operands=("weight", "act"), internal=True)
def _expert_linear(ins, a):
    """One linear layer of every routed expert, applied to the tokens routed to it."""
    return a["out"]


@signature("expert_act", ["gate", "up"], "vector", internal=True)
def _expert_act(ins, a):
    """The experts' activation on the routed rows."""
    return ins[0].width


@signature("qk_matmul", ["q", "k"], "matrix", operands=("act", "kv"), internal=True)
def _qk(ins, a):
    """Attention scores S = Q K^T."""
    return sympy.Integer(0)


@signature("softmax", ["scores"], "vector", internal=True)
def _softmax(ins, a):
    """P = softmax(S) over each row of scores."""
    return sympy.Integer(0)


@signature("sv_matmul", ["probs", "v"], "matrix", operands=("act", "kv"), internal=True)
def _sv(ins, a):
    """Attention output O = P V."""
    return sympy.Integer(0)


@signature("mla", ["x"], "matrix", operands=("act", "kv"),
           heads=Dim(doc="query heads"),
           kv_lora_rank=Dim(doc="width of the compressed KV latent (kv_lora_rank)"),
           qk_nope_dim=Dim(doc="per-head query/key width without RoPE (qk_nope_head_dim)"),
           qk_rope_dim=Dim(doc="decoupled RoPE width, shared by the heads (qk_rope_head_dim)"),
           v_dim=Dim(doc="per-head value width (v_head_dim)"),
           q_lora_rank=Dim(default=0, doc="query compression rank (q_lora_rank); 0: none"),
           window=Dim(default="oo", doc="sliding window (inf: all positions)"),
           index_heads=Dim(default=0, doc="DeepSeek Sparse Attention's indexer heads "
                                          "(index_n_heads); 0: dense attention"),
           index_dim=Dim(default=128, doc="width of an indexer head and of its cached key "
                                          "(index_head_dim)"),
           index_topk=Dim(default=2048, doc="cached tokens the indexer selects per query "
                                            "(index_topk)"),
           prefill=Choice(("expanded", "absorbed"), "expanded",
                          "the prompt's form: attention over per-head keys and values "
                          "up-projected from the latent (as vLLM, TensorRT-LLM and DeepSeek's "
                          "inference run it; the shipped stacks' figures price this form), or "
                          "over the latent as in decode; a sparse MLA (index_heads) is "
                          "absorbed in both"))
def _mla(ins, a):
    """Multi-head latent attention (DeepSeek-V2): the KV cache holds one latent of
    kv_lora_rank + qk_rope_dim per token, shared by all heads; in decode the key and value
    up-projections are absorbed into the query and the output, in prefill (prefill=expanded)
    the latent is up-projected to per-head keys and values. Returns heads x v_dim (the o
    projection is written after it, as after `attention`)."""
    return a["heads"] * a["v_dim"]


@signature("compressed_attention", ["x"], "matrix", operands=("act", "kv"),
           heads=Dim(doc="query heads (num_attention_heads); one shared KV head"),
           head_dim=Dim(doc="width of a head, keys and values alike (head_dim)"),
           rope_dim=Dim(doc="rotated features of a head (qk_rope_head_dim)"),
           q_lora_rank=Dim(doc="query compression rank (q_lora_rank)"),
           window=Dim(doc="recent tokens every query attends (sliding_window)"),
           ratio=Dim(default=0, doc="tokens pooled into one compressed entry (compress_ratios"
                                    "[layer]); 0: the window alone"),
           index_heads=Dim(default=0, doc="indexer heads choosing compressed entries "
                                          "(index_n_heads); 0: every compressed entry"),
           index_dim=Dim(default=128, doc="width of an indexer head (index_head_dim)"),
           index_topk=Dim(default=512, doc="compressed entries the indexer selects "
                                           "(index_topk)"))
def _compressed_attention(ins, a):
    """DeepSeek-V4's attention: one KV head of head_dim shared by every query head and serving
    as both key and value, over the last `window` tokens and, with ratio R > 0, over entries
    each pooling R tokens (all of them, or the index_topk an indexer selects); a sink logit per
    head. Returns heads x head_dim per token: write the grouped output projection after it."""
    if a["ratio"] == 0 and a["index_heads"] != 0:
        raise ShapeError("index_heads= selects compressed entries: give ratio= too")
    over = a["rope_dim"] - a["head_dim"]
    if over.is_number and over > 0:
        raise ShapeError(f"rope_dim={a['rope_dim']} is wider than head_dim={a['head_dim']}")
    return a["heads"] * a["head_dim"]


@signature("kv_compress", ["kv_score"], "vector", operands=("act", "kv"), internal=True)
def _kv_compress(ins, a):
    """Gated pooling of `ratio` tokens' projections into one cached entry (DeepSeek-V4's
    Compressor)."""
    return a["head_dim"]


@signature("sparse_attention", ["q", "kv"], "matrix", operands=("act", "kv"), internal=True)
def _sparse_attention(ins, a):
    """One fused kernel over the window's entries and the selected compressed ones."""
    return a["heads"] * a["head_dim"]


@signature("block_index", ["q", "k"], "matrix", operands=("act", "kv"),
           heads=Dim(doc="index heads (sparse_num_index_heads)"),
           dim=Dim(doc="width of an index head and of the cached index key (sparse_index_dim)"),
           topk=Dim(doc="blocks each query attends (sparse_topk_blocks, the local one included)"),
           block=Dim(default=128, doc="tokens per block (sparse_block_size)"))
def _block_index(ins, a):
    """MiniMax Sparse Attention's block selector: each query's index heads score every cached
    token's index key; a block scores its best token; the top `topk` blocks are kept. Its key
    input is cached (one `dim`-wide key per token); `attention(..., select=NAME)` reads only
    the tokens of the blocks it keeps."""
    require_equal(ins[0].width, a["heads"] * a["dim"], f"index query {ins[0].name!r} is not "
                  "heads x dim wide")
    require_equal(ins[1].width, a["dim"], f"index key {ins[1].name!r} is not dim wide")
    return sympy.Integer(0)


@signature("indexer", ["q", "k", "w"], "matrix", operands=("act", "kv"), internal=True)
def _indexer(ins, a):
    """DeepSeek Sparse Attention's lightning indexer: scores every cached token with its heads
    and selects the top-k for the attention."""
    return sympy.Integer(0)


@signature("mla_absorb", ["q"], "matrix", operands=("weight", "act"), internal=True)
def _mla_absorb(ins, a):
    """q_nope W_UK^T per head (into the latent space) and RoPE on q_pe."""
    return a["heads"] * (a["kv_lora_rank"] + a["qk_rope_dim"])


@signature("mla_cache", ["kv_a"], "vector", internal=True)
def _mla_cache(ins, a):
    """RMSNorm of the latent and RoPE of the decoupled key: the KV cache entry."""
    return ins[0].width


@signature("mla_v_up", ["o_latent"], "matrix", operands=("weight", "act"), internal=True)
def _mla_v_up(ins, a):
    """o_latent W_UV per head: back from the latent to the value width."""
    return a["heads"] * a["v_dim"]


@signature("mamba", ["x"], "matrix", operands=("weight", "act"),
           d_inner=Dim(doc="expanded width (expand x d_model)"),
           d_state=Dim(default=16, doc="SSM state per channel (d_state)"),
           d_conv=Dim(default=4, doc="causal convolution width (d_conv)"),
           dt_rank=Dim(doc="rank of the step-size projection (dt_rank)"))
def _mamba(ins, a):
    """Mamba selective state-space mixer (Gu and Dao 2023): in_proj, causal conv, x_proj,
    dt_proj, selective scan with gating, out_proj. Its recurrent state (d_inner x d_state per
    sequence, plus the conv window) replaces the KV cache and does not grow with context."""
    return ins[0].width


@signature("ssm_conv", ["xz"], "vector", internal=True)
def _ssm_conv(ins, a):
    """Depthwise causal conv1d over d_conv positions, then SiLU."""
    return a["d_inner"]


@signature("ssm_scan", ["u", "dt", "bc", "xz"], "vector", internal=True)
def _ssm_scan(ins, a):
    """Selective scan: h = exp(dt A) h + dt B u, y = C h + D u, gated by silu(z)."""
    return a["d_inner"]


@signature("mamba2", ["x"], "matrix", operands=("weight", "act"),
           heads=Dim(doc="SSM heads (mamba_num_heads)"),
           head_dim=Dim(doc="channels per head (mamba_head_dim)"),
           d_state=Dim(default=128, doc="state per channel (ssm_state_size)"),
           groups=Dim(default=1, doc="groups sharing B and C (n_groups)"),
           d_conv=Dim(default=4, doc="causal convolution width (conv_kernel)"),
           chunk=Dim(default=128, doc="tokens per chunk of the SSD prefill kernel (chunk_size)"))
def _mamba2(ins, a):
    """Mamba-2 (Dao and Gu 2024, "Transformers are SSMs"): z and x, B, C, dt projected from x,
    a causal conv over x, B and C, the SSD scan over a head_dim x d_state state per head, a
    gated RMSNorm and the output projection. Its state replaces the KV cache."""
    _shared_heads(a["heads"], a["groups"], "groups")
    return ins[0].width


@signature("ssd_scan", ["u", "zxbcdt"], "matrix", operands=("act", "kv"), internal=True)
def _ssd_scan(ins, a):
    """The SSD scan of Mamba-2 over each head's head_dim x d_state state."""
    return a["heads"] * a["head_dim"]


@signature("deltanet", ["x"], "matrix", operands=("weight", "act"),
           heads=Dim(doc="value heads, each with its own state (linear_num_value_heads)"),
           k_heads=Dim(doc="query/key heads, shared by heads / k_heads value heads "
                           "(linear_num_key_heads)"),
           k_dim=Dim(doc="query/key head width (linear_key_head_dim)"),
           v_dim=Dim(doc="value head width (linear_value_head_dim)"),
           d_conv=Dim(default=4, doc="causal convolution width (linear_conv_kernel_dim)"),
           chunk=Dim(default=64, doc="tokens per chunk of the chunkwise prefill kernel"))
def _deltanet(ins, a):
    """Gated DeltaNet linear attention (Yang, Kautz and Hatamizadeh 2024; Qwen3-Next and
    Qwen3.5's linear_attention layers): q, k, v, the output gate z and the per-head decay and
    step (a, b) projected from x, a causal conv over q, k and v, the gated delta rule over a
    k_dim x v_dim state per value head, a gated RMSNorm and the output projection. Its state
    replaces the KV cache and does not grow with the context."""
    _shared_heads(a["heads"], a["k_heads"], "k_heads")
    return ins[0].width


@signature("kda", ["x"], "matrix", operands=("weight", "act"),
           heads=Dim(doc="heads, each with its own state (linear_attn_config.num_heads)"),
           head_dim=Dim(doc="query/key and value head width (linear_attn_config.head_dim)"),
           d_conv=Dim(default=4, doc="causal convolution width (short_conv_kernel_size)"),
           gate_rank=Dim(default=0, doc="rank of the output gate's two projections; 0: one "
                                        "full-rank projection (use_full_rank_gate)"),
           chunk=Dim(default=64, doc="tokens per chunk of the chunkwise prefill kernel"))
def _kda(ins, a):
    """Kimi Delta Attention (Kimi Team 2025, "Kimi Linear", arXiv:2510.26692; Kimi K3's
    kda_layers): Gated DeltaNet with a decay per key channel instead of per head. q, k, v and
    the output gate projected from x, the decay through a rank-head_dim pair (f_a, f_b), the
    step b per head, a causal conv over q, k and v, the delta rule over a head_dim x head_dim
    state per head, a sigmoid-gated RMSNorm and the output projection. Its state replaces the
    KV cache and does not grow with the context."""
    _whole(a["heads"], f"heads={a['heads']} is not a positive whole number")
    return ins[0].width


@signature("delta_rule", ["u", "ab"], "matrix", operands=("act", "kv"), internal=True)
def _delta_rule(ins, a):
    """The gated delta rule over each value head's k_dim x v_dim state."""
    return a["heads"] * a["v_dim"]


@signature("attn_res", ["x"], "vector",
           block=Dim(doc="layers per block (attn_res_block_size)"),
           layers=Dim(doc="the decoder's layers (num_hidden_layers): with `block`, how many "
                          "sources each module attends"),
           output=Choice(BOOL, "false", "the output's aggregation over every block (after the "
                                        "last layer), not a module's"))
def _attn_res(ins, a):
    """Block Attention Residuals (Kimi Team 2026, "Attention Residuals", arXiv:2603.15031;
    Kimi K3's attn_res_block_size): a module's input is a softmax over the earlier block
    representations (the embedding, the sealed blocks and the current block's partial sum),
    weighted by a learned pseudo-query against their RMS-normed keys, in place of the running
    residual sum. Priced at the mean number of sources over the layers' modules."""
    return ins[0].width


@signature("gated_rmsnorm", ["y", "z"], "vector", internal=True)
def _gated_rmsnorm(ins, a):
    """RMSNorm of each v_dim head of y, times silu(z)."""
    return ins[0].width


# --- elementwise --------------------------------------------------------------------------------

@signature("rmsnorm", ["x"], "vector",
           dim=Dim(infer=True, doc="features normalised together (the gain's length); less "
                                   "than the width: per head, e.g. QK-norm over head_dim"),
           gain=Choice(BOOL, "true", "a learned gain (false: the norm alone, no parameters: "
                                     "Llama 4's L2 QK-norm)"))
def _rmsnorm(ins, a):
    """x / sqrt(mean(x^2) + eps) * g, over groups of `dim` features sharing one gain g."""
    if a["dim"] is not None:
        groups = ins[0].width / a["dim"]
        if groups.is_number and not (groups.is_integer and groups >= 1):
            raise ShapeError(f"dim={a['dim']} does not divide the input's width {ins[0].width}")
    return ins[0].width


@signature("layernorm", ["x"], "vector", dim=Dim(infer=True))
def _layernorm(ins, a):
    """(x - mean) / sqrt(var + eps) * g + b."""
    if a["dim"] is not None:
        require_equal(a["dim"], ins[0].width, "dim differs from the input's width")
    return ins[0].width


@signature("rope", ["x"], "vector", head_dim=Dim(doc="width of one head"),
           rotary_dim=Dim(infer=True, doc="features of a head that rotate (partial_rotary_factor "
                                          "x head_dim); the rest pass through"))
def _rope(ins, a):
    """Rotary position embedding: x * cos + rotate_half(x) * sin, on rotary_dim of each head."""
    if a["rotary_dim"] is not None:
        over = a["rotary_dim"] - a["head_dim"]
        if over.is_number and over > 0:
            raise ShapeError(f"rotary_dim={a['rotary_dim']} is wider than head_dim="
                             f"{a['head_dim']}")
    return ins[0].width


@signature("sigmoid", ["x"], "vector")
def _sigmoid(ins, a):
    """1 / (1 + exp(-x)) (an output gate's squashing)."""
    return ins[0].width


@signature("silu", ["x"], "vector")
def _silu(ins, a):
    """x * sigmoid(x)."""
    return ins[0].width


@signature("gelu", ["x"], "vector")
def _gelu(ins, a):
    """GELU, tanh approximation."""
    return ins[0].width


@signature("relu2", ["x"], "vector")
def _relu2(ins, a):
    """max(x, 0)^2 (squared ReLU: Nemotron-H's MLPs)."""
    return ins[0].width


@signature("relu", ["x"], "vector")
def _relu(ins, a):
    """max(x, 0)."""
    return ins[0].width


@signature("swiglu", ["gate", "up"], "vector")
def _swiglu(ins, a):
    """silu(gate) * up (gated MLP of Llama)."""
    return _same_width(ins)


@signature("geglu", ["gate", "up"], "vector")
def _geglu(ins, a):
    """gelu(gate) * up."""
    return _same_width(ins)


@signature("add", ["a", "b"], "vector")
def _add(ins, a):
    """a + b (residual connection)."""
    return _same_width(ins)


@signature("mul", ["a", "b"], "vector",
           heads=Dim(infer=True, doc="b holds one factor per head, each scaling its head's "
                                     "features of a (a head-wise gate: Step-3.5's g_proj)"))
def _mul(ins, a):
    """a * b elementwise; with heads=H, b is H wide and scales each head of a."""
    if a["heads"] is None:
        return _same_width(ins)
    require_equal(ins[1].width, a["heads"], f"{ins[1].name!r} is not one factor per head")
    per_head = ins[0].width / a["heads"]
    if per_head.is_number and not (per_head.is_integer and per_head > 0):
        raise ShapeError(f"heads={a['heads']} does not divide {ins[0].name!r}'s width "
                         f"{ins[0].width}")
    return ins[0].width


@signature("concat", ["a", "b"], "memory")
def _concat(ins, a):
    """[a; b] along the features (DeepSeek-V3's MTP module joins the normed embedding and the
    normed hidden state before eh_proj): width a + b."""
    return ins[0].width + ins[1].width


# --- hyper-connections (DeepSeek-V4: hc_mult residual streams) ------------------------------------

@signature("hc_expand", ["x"], "memory", hc=Dim(doc="residual streams (hc_mult)"))
def _hc_expand(ins, a):
    """The embedding copied into `hc` residual streams: width hc x the input's."""
    return a["hc"] * ins[0].width


@signature("hc_pre", ["streams"], "vector", hc=Dim(doc="residual streams (hc_mult)"),
           head=Choice(BOOL, "false", "the head's reduction (hc mixes, a sigmoid), not a "
                                      "layer's ((2 + hc) hc mixes, Sinkhorn)"),
           iters=Dim(default=20, doc="Sinkhorn iterations (hc_sinkhorn_iters)"))
def _hc_pre(ins, a):
    """Hyper-connections' input side: the streams mixed into the one input of the sublayer."""
    width = ins[0].width / a["hc"]
    if width.is_number and not width.is_integer:
        raise ShapeError(f"the streams' width {ins[0].width} is not a multiple of hc={a['hc']}")
    return width


@signature("hc_post", ["x", "streams"], "vector", hc=Dim(doc="residual streams (hc_mult)"))
def _hc_post(ins, a):
    """Hyper-connections' output side: the sublayer's output spread over the streams and the
    streams mixed among themselves (the residual)."""
    require_equal(ins[0].width * a["hc"], ins[1].width,
                  f"the streams {ins[1].name!r} are not hc={a['hc']} times {ins[0].name!r}")
    return ins[1].width


COMPOSITE_KINDS = ("attention", "moe", "mla", "mamba", "mamba2", "deltanet", "kda",
                   "compressed_attention")
"""User kinds that lower into others: none of them is a node of the op graph."""


def user_kinds() -> list[str]:
    return sorted(k for k, s in SIGNATURES.items() if not s.internal)
