"""Language features: parameters and expressions, blocks, extends, import, --set."""
import pytest
import sympy

import costdsl
from costdsl.errors import ArchError, ArchNameError, CostDSLError
from costdsl.graph.schema import check, nodes
from costdsl.language.parser import parse_expr, parse_program

from conftest import MODELS


def test_expressions_are_built_from_the_tree_not_evaluated():
    """2^3 is a power, // floors, min/max/ceil/floor are the only functions; Python syntax that
    is not in the grammar (attribute access, calls of builtins) is a syntax or name error."""
    from costdsl.language.expr import to_sympy
    value = lambda text, **scope: to_sympy(parse_expr(text), scope)
    assert value("2^3 * 4 // 3 + min(7, 5) - ceil(1/2)") == 10 + 5 - 1
    assert value("1_024 * 2.5e1") == 25600
    assert value("hidden / heads", hidden=sympy.Integer(4096), heads=sympy.Integer(32)) == 128
    with pytest.raises(CostDSLError):
        parse_expr("__import__('os').system('true')")
    with pytest.raises(ArchNameError, match="unknown function"):
        value("exec(1, 2)")


def test_free_parameter_and_set(tmp_path):
    """ffn left free: the count is symbolic; --set binds it, and dependent params follow."""
    model = costdsl.load(MODELS / "llama.arch", set={"hidden": 4096, "layers": 32, "heads": 32,
                                                     "ffn": 11008, "vocab": 32000})
    assert model.params() == 6_738_415_616
    bigger = costdsl.load(MODELS / "llama-2-7b.arch", set=["hidden=5120", "heads=40",
                                                            "kv_heads=40", "layers=40",
                                                            "ffn=13824"])
    # Llama-2-13b dimensions (meta-llama/Llama-2-13b-hf config.json): 13,015,864,320 parameters
    assert bigger.params() == 13_015_864_320
    assert bigger.design.params["head_dim"] == 128  # head_dim = hidden / heads follows


def test_extends_overrides_values_in_place(write_arch):
    path = write_arch("""
        model "base" {
          params { d = ? wide = 4 * d }
          x = embedding(tokens, vocab=10, dim=d)
          y = linear(x, out=wide)
        }
        model "child" extends "base" { params { d = 3 } }
    """)
    model = costdsl.load(path)
    assert model.name == "child"
    assert model.design.params["wide"] == 12
    assert costdsl.load(path, model="base").design.free == ("d",)


def test_block_keyword_arguments_override_parameters_inside(write_arch):
    """A block sees the model's params; keyword arguments of the call shadow them inside."""
    path = write_arch("""
        block mlp(x) { u = linear(x, out=ffn) d = linear(u, out=hidden) return d }
        model "m" {
          params { hidden = 8 ffn = 32 }
          x = embedding(tokens, vocab=10, dim=hidden)
          small = mlp(x, ffn=16)
          big = mlp(small)
        }
    """)
    graph = costdsl.load(path).graph("prefill")
    assert graph.nodes["small.u"]["op"].params == 8 * 16
    assert graph.nodes["big.u"]["op"].params == 8 * 32


def test_nested_repeats_multiply(write_arch):
    path = write_arch("""
        block inner(x) { y = rmsnorm(x) return y }
        block outer(x) { z = inner(x) repeat 3 return z }
        model "m" {
          x = embedding(tokens, vocab=10, dim=4)
          w = outer(x) repeat 5
        }
    """)
    node = costdsl.load(path).graph("decode").nodes["w.z.y"]["op"]
    assert node.repeat == 15


def test_import_resolves_relative_then_shipped(tmp_path):
    (tmp_path / "lib.arch").write_text("block b(x) { y = rmsnorm(x) return y }")
    (tmp_path / "m.arch").write_text('import "lib.arch"\nimport "llama.arch"\n'
                                     'model "m" { x = embedding(tokens, vocab=10, dim=4) '
                                     'y = b(x) }')
    assert costdsl.load(tmp_path / "m.arch").params() == 44


def test_import_cycle_and_missing_import(tmp_path):
    (tmp_path / "a.arch").write_text('import "b.arch"\n')
    (tmp_path / "b.arch").write_text('import "a.arch"\n')
    with pytest.raises(ArchError, match="cycle"):
        costdsl.load(tmp_path / "a.arch")
    (tmp_path / "c.arch").write_text('\nimport "missing.arch"\n')
    with pytest.raises(ArchNameError, match="cannot find") as info:
        costdsl.load(tmp_path / "c.arch")
    assert (info.value.line, info.value.column) == (2, 1)


def test_block_without_return_and_wrong_arity(write_arch):
    with pytest.raises(ArchError, match="must end with `return"):
        costdsl.load(write_arch('block b(x) { y = rmsnorm(x) }\n'
                                'model "m" { x = embedding(tokens, vocab=1, dim=1) y = b(x) }'))
    with pytest.raises(ArchError, match="takes 1 input"):
        costdsl.load(write_arch('block b(x) { y = rmsnorm(x) return y }\n'
                                'model "m" { x = embedding(tokens, vocab=1, dim=1) y = b(x, x) }'))


def test_file_without_model(write_arch):
    with pytest.raises(CostDSLError, match="defines no model"):
        costdsl.load(write_arch("block b(x) { y = rmsnorm(x) return y }"))


def test_comments_and_free_layout():
    program = parse_program('# a comment\nmodel m{x=embedding(tokens,vocab=2,dim=2,)# trailing\n}')
    assert program.models[0].name == "m"


def test_lowered_graphs_are_valid_and_edges_follow_tensors():
    model = costdsl.load(MODELS / "llama-3-8b.arch")
    for stage in ("prefill", "decode"):
        graph = check(model.graph(stage))
        assert graph.has_edge("layers.k_rot", "layers.attn.qk")
        assert graph.has_edge("layers.attn.qk", "layers.attn.softmax")
        assert graph.has_edge("layers.v", "layers.attn.sv")
        assert graph.edges["layers.q", "layers.q_rot"]["tensors"] == ("layers.q",)
        assert [n.name for n in nodes(graph)][0] == "embed"
        assert [n.name for n in nodes(graph)][-1] == "lm_head"


def test_graph_check_rejects_a_broken_graph():
    from costdsl.graph.schema import GraphError
    graph = costdsl.load(MODELS / "llama-2-7b.arch").graph("decode").copy()
    graph.add_edge("lm_head", "embed", tensors=("lm_head",))
    with pytest.raises(GraphError, match="cycle"):
        check(graph)
    graph = costdsl.load(MODELS / "llama-2-7b.arch").graph("decode").copy()
    graph.remove_edge("layers.q", "layers.q_rot")
    with pytest.raises(GraphError, match="no edge"):
        check(graph)


def test_inline_keeps_names_and_rejects_collisions(write_arch):
    path = write_arch("""
        block half(x) { n = rmsnorm(x) return n }
        model "m" {
          x = embedding(tokens, vocab=10, dim=4)
          y = half(x) inline
        }""")
    assert "n" in costdsl.load(path).graph("decode").nodes  # no `y.` prefix
    with pytest.raises(ArchError, match="'n' is already defined"):
        costdsl.load(write_arch("""
            block half(x) { n = rmsnorm(x) return n }
            model "m" {
              x = embedding(tokens, vocab=10, dim=4)
              n = rmsnorm(x)
              y = half(n) inline
            }"""))
    with pytest.raises(ArchError, match="`inline` applies to blocks"):
        costdsl.load(write_arch('model "m" { x = embedding(tokens, vocab=1, dim=1) inline }'))


def test_parallel_attention_and_mlp_block(write_arch):
    """GPT-J style: one LayerNorm feeds attention and the MLP side by side; both branches are
    added to the residual. hidden 8, 2 heads, ffn 16, 1 layer: ln 16, q/k/v/o 4 x 64, fc 128,
    proj 128 = 528 per layer. The two branches' outputs are live together before the adds."""
    path = write_arch("""
block parallel(x) {
  ln   = layernorm(x)
  q    = linear(ln, out=hidden)
  k    = linear(ln, out=hidden)
  v    = linear(ln, out=hidden)
  att  = attention(q, k, v, heads=2)
  o    = linear(att, out=hidden)
  fc   = linear(ln, out=ffn)
  act  = gelu(fc)
  mlp  = linear(act, out=hidden)
  both = add(o, mlp)
  out  = add(x, both)
  return out
}
model "pj" {
  params { hidden = 8  ffn = 16  vocab = 10 }
  emb    = embedding(tokens, vocab=vocab, dim=hidden)
  layers = parallel(emb) repeat 1
  head   = linear(layers, out=vocab, tokens=last)
}
""")
    m = costdsl.load(path)
    assert m.params() == 80 + 528 + 80
    graph = m.graph("decode")
    assert set(graph.successors("layers.ln")) == {"layers.q", "layers.k", "layers.v", "layers.fc"}


def test_explicit_head_dim_wider_than_hidden_over_heads(write_arch):
    """hidden 3072, 16 heads of 256 (Gemma-style): q projects to 4096 and o back from it."""
    path = write_arch("""
import "llama.arch"
model "wide" extends "llama" {
  params { hidden = 3072  layers = 1  heads = 16  head_dim = 256  ffn = 8  vocab = 4 }
}
""")
    by_op = {o.name: o.params for o in costdsl.load(path).params_by_op()}
    assert by_op["layers.q"] == by_op["layers.o"] == 3072 * 4096
    assert by_op["layers.k"] == 3072 * 4096
