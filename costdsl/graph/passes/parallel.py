"""Parallelism: the graph one device runs, with the communication between devices as ops.

Each pass rewrites the model's graph into the per-device graph (every op's operations, bytes
and parameters are one device's share) and inserts the collectives (costs.collective) that
the layout needs. The layout nests tensor parallelism innermost, then expert parallelism, then
pipeline stages: a collective of the `tp` group spans tp devices, of the `ep` group tp x ep, a
pipeline send tp x ep x pp; the roofline prices it on the link when that span fits one node and
on the network otherwise.

- tensor_parallel(n): Megatron-LM (Shoeybi et al. 2019): q, k, v and the MLP's feeding linears
  split by columns, o and the MLP's reading linear by rows; query heads split n ways, KV heads
  too where n divides them, else each device keeps one KV head (replicated: kv_heads < n, as
  vLLM does); latent attention (MLA) split by heads with its latent cache replicated; routed
  experts split each expert's width (`experts=ep`: the routed experts spread over the n
  devices instead, E / n each at full width, as vLLM's --enable-expert-parallel runs them under
  TP: every device holds every token, runs the busiest device's share of the token-expert
  pairs, and the same all-reduce combines them; no all-to-all); the LM head split by
  vocabulary. One
  all-reduce of the layer's output after the attention and one after the MLP (or MoE: after the
  add of its routed and shared experts' partial sums), an all-gather of the logits after the
  head. Norms, residual adds, the embedding and the router
  are replicated (each device runs them whole).
- pipeline_parallel(n, microbatches=m): the repeated layers split into n stages; a device holds
  ceil(layers / n) of them (the slowest stage; the embedding and head are counted on it too,
  an upper bound); a batch runs as m microbatches of batch / m sequences; one send/recv of the
  activations per microbatch to the next stage. A synchronous (GPipe) schedule takes
  (m + n - 1) slowest-stage times per step (Huang et al. 2019): n - 1 of them the bubble. A
  decode step with m = 1 takes n stage times: per-token latency does not shrink with n.
- expert_parallel(n): the routed experts spread over n devices, E / n each; the rest of the
  layer runs data-parallel (each device batch / n of the sequences, with their KV cache). Two
  all-to-alls per MoE layer (dispatch, combine). A device's expert work is that of the busiest
  device, whose expected load is costs.busiest_load(m, n) token-expert pairs for m = tokens x
  top_k (the mean m / n plus sqrt(2 (m / n) ln n)); every device waits for it at the combine.
  `load="mean"` takes the mean instead (perfect balance).

n = 1 is the identity for every pass.
"""
from __future__ import annotations

from dataclasses import replace

import networkx as nx
import sympy

from ..costs import Access, busiest_load, experts_touched
from ..schema import Node, nodes
from .prune import (_gate_branch, _scale_all, _scale_headwise, _scale_inside, _scale_reader,
                    kv_side, shrink_attention, shrink_mlp)
from .registry import Arg, PassError, register
from .rewire import comm_node, insert_after, substituted
from .sparsity import _attention_groups, _mlp_groups
from ... import symbols as S

UNSPLIT_KINDS = ("ssm_conv", "ssm_scan", "fused")
"""Op kinds tensor_parallel has no split for (n > 1 refuses them rather than guess), outside
the Gated DeltaNet and Mamba-2 layers it splits by heads."""
HEAD_SPLIT = {"delta_rule": ("k_heads", "heads"), "ssd_scan": ("groups", "heads")}
"""The state-keeping kernels split by heads, with the counts n must divide (Gated DeltaNet's
key and value heads; Mamba-2's groups of B and C, and its heads)."""
SPLIT_KERNELS = ("qk_matmul", "flash_attention", "sparse_attention", *HEAD_SPLIT)
"""Kernels every tensor-parallel layout must split: one left whole is an error, not a guess."""


def _layout(graph: nx.DiGraph, group: str, n) -> dict:
    layout = dict(graph.graph.get("parallel", {}))
    if group in layout:
        raise PassError(f"{_PASS[group]} is applied twice: give one degree")
    return {**layout, group: n}


_PASS = {"tp": "tensor_parallel", "pp": "pipeline_parallel", "ep": "expert_parallel"}


def _divides(n, count, what: str, op: str, arg="n") -> None:
    n, count = sympy.sympify(n), sympy.sympify(count)
    if n.is_number and count.is_number and count % n:
        raise PassError(f"{op}: {count} {what} do not split over n={n} devices", arg=arg,
                        hint=f"choose n dividing {count}")


def _out_elements(node: Node) -> sympy.Expr:
    return next(a.elements for a in node.writes if a.tensor == node.output)


# --- tensor parallelism --------------------------------------------------------------------------

def _kv_keep(n, h, hkv, where: str):
    """The share of the KV heads one device holds: 1/n where n divides them, else one head."""
    n, hkv = sympy.sympify(n), sympy.sympify(hkv)
    if not (n.is_number and hkv.is_number):
        return sympy.Max(1 / n, 1 / hkv)
    if hkv % n == 0:
        return 1 / n
    if n % hkv == 0:
        return 1 / hkv  # one KV head per device, each held by n / kv_heads devices
    raise PassError(f"{where}: {hkv} KV heads neither split over n={n} devices nor divide "
                    "them evenly", arg="n", hint=f"choose n dividing {hkv} or a multiple of it")


def _lm_head(graph: nx.DiGraph, grouped: set[str]) -> Node | None:
    """The vocabulary projection: the last linear, writing a tensor no op reads."""
    for node in reversed(nodes(graph)):
        if node.kind == "linear" and node.name not in grouped and not graph.out_degree(node.name):
            return node
    return None


def _successor(graph: nx.DiGraph, node: Node, kinds: tuple[str, ...]) -> Node | None:
    return next((graph.nodes[s]["op"] for s in graph.successors(node.name)
                 if graph.nodes[s]["op"].kind in kinds), None)


def _mla_groups(graph: nx.DiGraph):
    """(query projection, absorption, attention kernels, W_UV up-projection, output projection)
    of every multi-head latent attention."""
    for absorb in nodes(graph):
        if absorb.kind != "mla_absorb":
            continue
        q = next(graph.nodes[p]["op"] for p in graph.predecessors(absorb.name))
        kernels, last = [], absorb
        for kind in ("qk_matmul", "softmax", "sv_matmul"):
            last = _successor(graph, last, (kind,))
            kernels.append(last)
        v_up = _successor(graph, last, ("mla_v_up",))
        o = _successor(graph, v_up, ("linear",)) if v_up is not None else None
        gate = _successor(graph, v_up, ("mul",)) if v_up is not None and o is None else None
        if gate is not None:   # an output gate (Kimi K3's mla_use_output_gate) before o
            o = _successor(graph, gate, ("linear",))
        if None in kernels or v_up is None or o is None or q.kind != "linear":
            raise PassError(f"tensor_parallel cannot split {absorb.name}'s latent attention (a "
                            "fusion pass ran before it?)", arg="n",
                            hint="run tensor_parallel before fusion passes")
        yield q, absorb, kernels, v_up, gate, o


def _split_mla(graph, out, n) -> tuple[list[str], set[str]]:
    """Latent attention over n devices (DeepSeek-V2's inference layout): the query projection
    and the per-head absorption, kernels and W_UV split by heads; the latent projection and its
    cache replicated (one latent serves every head, so each device keeps all of it); the output
    projection split by rows. Returns the ops an all-reduce follows and those split."""
    reduce_after, split = [], set()
    for q, absorb, kernels, v_up, gate, o in list(_mla_groups(graph)):
        _divides(n, kernels[0].attrs["heads"], "attention heads", absorb.name)
        out.nodes[q.name]["op"] = _scale_all(q, 1 / n)
        for node in [absorb] + kernels:
            out.nodes[node.name]["op"] = _scale_inside(node, 1 / n, 1)
        out.nodes[v_up.name]["op"] = _scale_inside(v_up, 1 / n, 1 / n)
        last = v_up
        if gate is not None:   # the gate's projection by columns, its sigmoid and product by heads
            out.nodes[gate.name]["op"] = _scale_inside(gate, 1 / n, 1 / n)
            for g in _gate_branch(graph, gate, [v_up]):
                out.nodes[g.name]["op"] = (_scale_all(g, 1 / n) if g.kind == "linear"
                                           else _scale_inside(g, 1 / n, 1 / n))
                split.add(g.name)
            last = gate
        out.nodes[o.name]["op"] = _scale_reader(o, 1 / n, set(last.outputs))
        reduce_after.append(o.name)
        split |= {q.name, o.name}
    return reduce_after, split


def _split_compressed(graph, out, n) -> tuple[list[str], set[str]]:
    """DeepSeek-V4's attention over n devices (its reference's layout): wq_b, the per-head
    scaling and RoPE, the kernel and the output's inverse RoPE split by heads; the grouped
    wo_a by groups (n must divide o_groups); wo_b by rows, an all-reduce after it. The one KV
    head, its window cache and the compressed entries are replicated (every head reads them),
    and so is the indexer (its scores need every head: as DeepSeek Sparse Attention's here).
    Returns the ops an all-reduce follows and those split."""
    reduce_after, split = [], set()
    for kernel in [n_ for n_ in nodes(graph) if n_.kind == "sparse_attention"]:
        part = lambda suffix: graph.nodes[f"{kernel.group}.{suffix}"]["op"]
        q, scale, rope, o_rope = part("q"), part("q_scale"), part("q_rope"), part("o_rope")
        o_a = _successor(graph, o_rope, ("linear",))
        o = _successor(graph, o_a, ("linear",)) if o_a is not None else None
        if o is None:
            raise PassError(f"tensor_parallel cannot split {kernel.name}: its output is not "
                            "projected by a grouped linear and a linear (wo_a, wo_b)", arg="n")
        _divides(n, kernel.attrs["heads"], "attention heads", kernel.name)
        _divides(n, o_a.attrs.get("groups", 1), "output groups (o_groups)", o_a.name)
        out.nodes[q.name]["op"] = _scale_all(q, 1 / n)
        for node in (scale, rope, o_rope):
            out.nodes[node.name]["op"] = _scale_headwise(node, 1 / n)
        out.nodes[kernel.name]["op"] = _scale_inside(kernel, 1 / n, 1)
        out.nodes[o_a.name]["op"] = _scale_all(o_a, 1 / n)
        out.nodes[o.name]["op"] = _scale_reader(o, 1 / n, set(o_a.outputs))
        reduce_after.append(o.name)
        split |= {q.name, o_a.name, o.name}
    return reduce_after, split


def _moe_groups(graph: nx.DiGraph):
    """(expert linears feeding the activation, activation, combining linear) per MoE."""
    for act in nodes(graph):
        if act.kind != "expert_act":
            continue
        feeders = [graph.nodes[p]["op"] for p in graph.predecessors(act.name)
                   if graph.nodes[p]["op"].kind == "expert_linear"]
        readers = [graph.nodes[s]["op"] for s in graph.successors(act.name)
                   if graph.nodes[s]["op"].kind == "expert_linear"]
        yield feeders, act, readers


@register("tensor_parallel",
          n=Arg("degree", 1, help="devices the layers are split over (a number, or a new name "
                                  "left free: crossover --solve NAME)"),
          overlap=Arg("flag", 0, help="1: a collective overlaps the compute since the last one"),
          experts=Arg("pattern", "split", help='"split": each routed expert\'s width over the n '
                                               'devices (default); "ep": the experts spread over '
                                               'them, E / n each at full width'))
def tensor_parallel(graph: nx.DiGraph, n, overlap, experts) -> nx.DiGraph:
    """Megatron-style tensor parallelism over n devices (see the module's documentation)."""
    n = sympy.sympify(n)
    if experts not in ("split", "ep"):
        raise PassError(f'tensor_parallel(experts="{experts}"): expected "split" or "ep"',
                        arg="experts")
    if experts == "ep" and not n.is_Integer:
        raise PassError("tensor_parallel(experts=ep) spreads whole experts: n must be a number",
                        arg="n")
    mixers = {node.group: node for node in nodes(graph) if node.kind in HEAD_SPLIT}
    if n != 1:
        for node in nodes(graph):
            if node.kind in UNSPLIT_KINDS and node.group not in mixers:
                raise PassError(f"tensor_parallel has no split for {node.name} ({node.kind})",
                                arg="n", hint="run tensor_parallel before fusion passes; "
                                "state-space (Mamba) layers are not split yet")
    out = graph.copy()
    reduce_after, grouped = [], set()
    for q, kernels, o in list(_attention_groups(graph)):
        h, hkv = kernels[0].attrs["heads"], kernels[0].attrs["kv_heads"]
        _divides(n, h, "attention heads", q.name)
        side = kv_side(graph, kernels)
        shrink_attention(graph, out, q, kernels, o, side, 1 / n, _kv_keep(n, h, hkv, q.name))
        reduce_after.append(o.name)
        grouped |= {q.name, o.name} | {p.name for p in side}
    for split_attention in (_split_mla, _split_compressed):
        more_reduce, more_split = split_attention(graph, out, n)
        reduce_after += more_reduce
        grouped |= more_split
    for group, kernel in sorted(mixers.items()):
        reduce_after.append(_split_mixer(graph, out, kernel, n))
    for feeders, act, readers in list(_mlp_groups(graph)):
        _divides(n, act.out_shape[1], "MLP channels", act.name)
        shrink_mlp(out, feeders, act, readers, 1 / n)
        reduce_after += [r.name for r in readers]
        grouped |= {f.name for f in feeders + readers}
    for feeders, act, readers in list(_moe_groups(graph)):
        if experts == "ep":   # whole experts per device, every token on every device: each
            # runs its own experts' share of the token-expert pairs (the busiest device's)
            _divides(n, act.attrs["experts"], "experts", act.name)
            for node in feeders + [act] + readers:
                out.nodes[node.name]["op"] = _expert_share(node, int(n), "max")
        else:
            _divides(n, act.out_shape[1], "expert channels", act.name)
            for f in feeders:
                out.nodes[f.name]["op"] = _scale_all(f, 1 / n)
            out.nodes[act.name]["op"] = _scale_inside(act, 1 / n, 1 / n)
            for r in readers:
                out.nodes[r.name]["op"] = _scale_reader(r, 1 / n, set(act.outputs))
        reduce_after += [r.name for r in readers]
    head = _lm_head(graph, grouped)
    if head is not None:
        out.nodes[head.name]["op"] = _scale_all(head, 1 / n)
    out.graph["parallel"] = _layout(graph, "tp", n)
    if n == 1:
        return out
    _check_split(graph, out)
    for name in _merge_partial_sums(out, reduce_after):
        op = out.nodes[name]["op"]
        out = insert_after(out, name, op.output, comm_node("all_reduce", op, op.output,
                                                          _out_elements(op), n, "tp",
                                                          overlap=bool(overlap)))
    if head is not None:  # every device's slice of the logits, gathered
        op = out.nodes[head.name]["op"]
        out = insert_after(out, head.name, op.output, comm_node(
            "all_gather", op, op.output, _out_elements(op) * n, n, "tp", overlap=False))
    return out


def _split_mixer(graph: nx.DiGraph, out: nx.DiGraph, kernel: Node, n) -> str:
    """A Gated DeltaNet or Mamba-2 layer over n devices by heads (as vLLM splits Qwen3-Next and
    Nemotron-H): its input projections by columns, the conv, the scan (with its state) and the
    gated norm by heads, out_proj by rows. The norm's gain splits with the channels where it
    has one per channel (Mamba-2) and stays whole where the heads share it (Gated DeltaNet).
    Returns out_proj, which an all-reduce follows."""
    for count in HEAD_SPLIT[kernel.kind]:
        _divides(n, kernel.attrs[count], count.replace("_", " "), kernel.name)
    members = [node for node in nodes(graph) if node.group == kernel.group]
    *feeders, out_proj = [m for m in members if m.kind == "linear"]
    for f in feeders:
        out.nodes[f.name]["op"] = _scale_all(f, 1 / n)
    norm = next(m for m in members if m.kind == "gated_rmsnorm")
    for m in members:
        if m.kind in ("ssm_conv", kernel.kind):
            out.nodes[m.name]["op"] = _scale_inside(m, 1 / n, 1 / n)
    shared_gain = norm.attrs["gain"] != norm.out_shape[1]
    out.nodes[norm.name]["op"] = (_scale_headwise(norm, 1 / n) if shared_gain
                                  else _scale_inside(norm, 1 / n, 1 / n))
    out.nodes[out_proj.name]["op"] = _scale_reader(out_proj, 1 / n, set(norm.outputs))
    return out_proj.name


def _check_split(graph: nx.DiGraph, out: nx.DiGraph) -> None:
    """Every attention and linear-attention kernel was split: one the layout did not recognise
    (a shape of layer it has no rule for) would silently run whole on every device."""
    for node in nodes(graph):
        if node.kind in SPLIT_KERNELS and out.nodes[node.name]["op"] is node:
            raise PassError(f"tensor_parallel cannot split {node.name}: the ops around it are "
                            "not an attention it knows (projection, head-wise ops, kernels, "
                            "output projection)", arg="n",
                            hint="run tensor_parallel before fusion passes")


def _merge_partial_sums(graph: nx.DiGraph, partial: list[str]) -> list[str]:
    """Where the ops to reduce are summed by an add of partial sums alone (a MoE's routed and
    shared experts), one all-reduce after that add serves both: a reduction is linear."""
    out = []
    for name in partial:
        after = [graph.nodes[s]["op"] for s in graph.successors(name)]
        add = after[0] if len(after) == 1 and after[0].kind == "add" else None
        if add is not None and all(p in partial for p in graph.predecessors(add.name)):
            if add.name not in out:
                out.append(add.name)
        else:
            out.append(name)
    return out


# --- pipeline parallelism ------------------------------------------------------------------------

@register("pipeline_parallel",
          n=Arg("count", 1, help="pipeline stages (devices in a row)"),
          microbatches=Arg("count", 1, help="microbatches a batch is split into"))
def pipeline_parallel(graph: nx.DiGraph, n, microbatches) -> nx.DiGraph:
    """The repeated layers over n pipeline stages, a batch as `microbatches` microbatches (see
    the module's documentation for the schedule)."""
    n, m = int(n), int(microbatches)
    repeated = [node for node in nodes(graph) if node.repeat != 1]
    if n > 1 and not repeated:
        raise PassError("pipeline_parallel found no repeated layers to split into stages",
                        arg="n")
    for node in repeated:
        if node.repeat.is_number and n > node.repeat:
            raise PassError(f"pipeline_parallel(n={n}): {node.name} repeats {node.repeat} "
                            f"times, fewer than the {n} stages", arg="n")
    out = nx.DiGraph(**graph.graph)
    out.graph["parallel"] = _layout(graph, "pp", n)
    out.graph["pipeline"] = (n, m)
    # A batch of b sequences runs as min(m, b) microbatches of ceil(b / min(m, b)) sequences
    # each: never a fraction of a sequence, and never more microbatches than sequences.
    per_batch = {S.batch: sympy.ceiling(S.batch / sympy.Min(m, S.batch))} if m != 1 else {}
    for key, data in graph.nodes(data=True):
        node = data["op"]
        if node.repeat != 1:
            r = node.repeat
            node = replace(node, repeat=sympy.ceiling(r / n) if r.is_number else r / n)
        out.add_node(key, op=substituted(node, per_batch) if per_batch else node)
    out.add_edges_from(graph.edges(data=True))
    if n == 1:
        return out
    for last in _stack_ends(out, repeated):
        op = out.nodes[last]["op"]
        send = comm_node("send_recv", op, op.output, _out_elements(op), n, "pp")
        # once a stage boundary, not once a layer: the stage's last layer hands its output on
        out = insert_after(out, last, op.output, replace(send, repeat=sympy.Integer(1)))
    return out


def _stack_ends(graph: nx.DiGraph, repeated: list[Node]) -> list[str]:
    """The repeated ops whose output leaves the layer stack (the stage boundary): the last
    layer's output, or, where fuse_add_norm has put its closing add after the loop, the hidden
    state and the residual it adds, each sent."""
    names = {r.name for r in repeated}
    return [r.name for r in nodes(graph) if r.name in names
            and any(s not in names for s in graph.successors(r.name))]


# --- expert parallelism --------------------------------------------------------------------------

EXPERT_KINDS = ("expert_linear", "expert_act")


@register("expert_parallel",
          n=Arg("count", 1, help="devices the routed experts are spread over"),
          load=Arg("pattern", "max", help='"max": the busiest device (default); "mean"'))
def expert_parallel(graph: nx.DiGraph, n, load) -> nx.DiGraph:
    """Routed experts over n devices, the rest data-parallel (see the module's documentation)."""
    n = int(n)
    if load not in ("max", "mean"):
        raise PassError(f'expert_parallel(load="{load}"): expected "max" or "mean"', arg="load")
    experts = [node for node in nodes(graph) if node.kind in EXPERT_KINDS]
    if n > 1 and not experts:
        raise PassError("expert_parallel found no routed experts (a moe op) to spread", arg="n")
    out = nx.DiGraph(**graph.graph)
    out.graph["parallel"] = _layout(graph, "ep", n)
    per_device = {S.batch: S.batch / n} if n != 1 else {}
    for key, data in graph.nodes(data=True):
        node = data["op"]
        if node.kind in EXPERT_KINDS:
            _divides(n, node.attrs["experts"], "experts", node.name)
            node = _expert_share(node, n, load)
        elif per_device:
            node = substituted(node, per_device)
        out.add_node(key, op=node)
    out.add_edges_from(graph.edges(data=True))
    if n == 1:
        return out
    for feeders, act, readers in list(_moe_groups(graph)):
        source = feeders[0].inputs[0]
        producer = next(p for p in out.predecessors(feeders[0].name)
                        if source in out.edges[p, feeders[0].name]["tensors"])
        held = out.nodes[producer]["op"]
        tokens = _out_elements(held) * feeders[0].attrs["top_k"]  # each row sent to k experts
        out = insert_after(out, producer, source,
                           comm_node("all_to_all", held, source, tokens, n, "ep",
                                     role="dispatch"), [f.name for f in feeders])
        for r in readers:
            op = out.nodes[r.name]["op"]
            out = insert_after(out, r.name, op.output,
                               comm_node("all_to_all", op, op.output,
                                         _out_elements(op) / n * r.attrs["top_k"], n, "ep",
                                         role="combine"))
    return out


def _expert_share(node: Node, n: int, load: str) -> Node:
    """An expert op on one device: E / n experts, the busiest device's (or the mean) share of
    the token-expert pairs, and the weights of its local experts those pairs touch."""
    if n == 1:
        return node
    e, k = node.attrs["experts"], node.attrs["top_k"]
    rows = _token_rows(node)
    pairs = rows * k
    local = pairs / n if load == "mean" else busiest_load(pairs, n)
    share = local / pairs

    def scale(a: Access) -> Access:
        if a.cls == "weight":
            per_expert = a.elements / experts_touched(e, k, rows)
            return Access(a.tensor, a.cls, experts_touched(sympy.Integer(e) / n, 1, local)
                          * per_expert)
        return Access(a.tensor, a.cls, a.elements * share)
    return replace(node, flops=node.flops * share, vector_flops=node.vector_flops * share,
                   reads=tuple(scale(a) for a in node.reads),
                   writes=tuple(scale(a) for a in node.writes),
                   params=node.params / n, attrs={**node.attrs, "ep_load": load})


def _token_rows(node: Node) -> sympy.Expr:
    """Tokens an expert op serves: its output rows, divided by k where it writes one row per
    token-expert pair."""
    rows = node.out_shape[0]
    return rows if node.attrs.get("combine") else rows / node.attrs["top_k"]
