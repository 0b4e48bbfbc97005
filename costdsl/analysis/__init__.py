"""Stage 3, analysis: op graphs and a `Hardware` record in, result records out.

Symbolic first (roofline, crossovers, memory, formulas, parameter counts), numbers last (one
lambdify per stage, vectorised with numpy: evaluation, sweeps, serving curves, latency). The
records in `records` and the answers of each module are what reports and plots format.
"""
