"""Stage 1, the language: `.arch` text in, a `Design` out.

Grammar loading and parsing (Lark, LALR) give an AST of frozen dataclasses with source positions;
the library resolves files and imports; elaboration resolves `extends`, parameters, blocks and
`repeat`, checks shapes against the op vocabulary (`ops`) and returns the stage-independent design
record. Expressions are built into sympy from the parse tree, never evaluated as Python.
"""
