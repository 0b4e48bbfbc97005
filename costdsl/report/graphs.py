"""The op graph for graph tools: DOT (Graphviz), GraphML and node-link JSON.

Each node carries its kind, repeat count and cost formulas (operations and bytes by class, as
text in the report's short names) as attributes; each edge the tensors it carries. GraphML and
JSON go through networkx's own writers; DOT is written here (a few lines; no pydot needed)."""
from __future__ import annotations

import io
import json

import networkx as nx

from ..graph.schema import nodes
from . import printing


def export_graph(graph: nx.DiGraph) -> nx.DiGraph:
    """A copy with plain attributes (strings and numbers) that every writer accepts."""
    out = nx.DiGraph(model=str(graph.graph.get("model", "")), stage=graph.graph.get("stage", ""))
    for n in nodes(graph):
        by_class = n.bytes_of(n.reads + n.writes)
        out.add_node(n.name, kind=n.kind, repeat=printing.text(n.repeat),
                     operations=printing.text(n.flops),
                     weight_bytes=printing.text(by_class["weight"]),
                     activation_bytes=printing.text(by_class["act"]),
                     kv_bytes=printing.text(by_class["kv"]),
                     fused_from=",".join(n.fused_from))
    for src, dst, data in graph.edges(data=True):
        out.add_edge(src, dst, tensors=",".join(data["tensors"]))
    return out


def graphml(graph: nx.DiGraph) -> str:
    buffer = io.BytesIO()
    nx.write_graphml(export_graph(graph), buffer)
    return buffer.getvalue().decode()


def node_link_json(graph: nx.DiGraph) -> str:
    return json.dumps(nx.node_link_data(export_graph(graph), edges="edges"), indent=2) + "\n"


def _quoted(text: str) -> str:
    return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _lines(*parts: str) -> str:
    """A DOT label of several lines (DOT's own \\n line break between them)."""
    return "\\n".join(_quoted(p)[1:-1] for p in parts).join('""')


def dot(graph: nx.DiGraph) -> str:
    g = export_graph(graph)
    lines = [f"digraph {_quoted(g.graph['model'] + ' ' + g.graph['stage'])} {{",
             "  node [shape=box, style=rounded, fontname=Helvetica];"]
    for name, a in g.nodes(data=True):
        repeat = f" x{a['repeat']}" if a["repeat"] != "1" else ""
        label = _lines(name, a["kind"] + repeat, "ops " + a["operations"])
        attrs = ", ".join(f"{k}={_quoted(v)}" for k, v in a.items())
        lines.append(f"  {_quoted(name)} [label={label}, {attrs}];")
    for src, dst, a in g.edges(data=True):
        lines.append(f"  {_quoted(src)} -> {_quoted(dst)} [label={_quoted(a['tensors'])}];")
    return "\n".join(lines + ["}"]) + "\n"


FORMATS = {"dot": dot, "graphml": graphml, "json": node_link_json}
