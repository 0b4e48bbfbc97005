"""Stage 2, the op graph: a `Design` and a step in, a networkx op graph out.

`lower` turns the design into one graph per step (prefill, decode, or the general step of
`tokens` new tokens over `seq` cached ones), each node carrying its cost rule's sympy expressions
(`costs`) under the schema and check of `schema`; `passes` rewrite graph -> graph.
"""
