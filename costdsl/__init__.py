"""costdsl: a symbolic cost-model compiler for LLM inference.

.arch text -> AST -> design -> op graph per stage (sympy costs) -> roofline -> numbers -> reports.

The compiler (sympy, networkx, lark) is loaded when first used: `import costdsl` alone, the
command line's parser and answers read back from the cache do not load it.
"""
from .errors import CostDSLError
from .version import __version__

__all__ = ["CostDSLError", "Hardware", "Model", "load", "load_hardware"]

_LAZY = {"Model": "api", "load": "api", "Hardware": "hardware", "load_hardware": "hardware"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'costdsl' has no attribute {name!r}")
