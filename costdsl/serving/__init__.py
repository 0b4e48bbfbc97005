"""Serving: requests, the iteration cost, the schedulers, the fleet and the deployment search.

A stage above analysis: it consumes the compiled iteration-cost function and the closed forms
analysis gives (fit, the TPOT root, prefill time) and never loops over ops.
"""
