"""costdsl: a symbolic cost-model compiler for LLM inference.

.arch text -> AST -> design -> op graph per stage (sympy costs) -> roofline -> numbers -> reports.
"""
from .api import Model, load
from .errors import CostDSLError
from .hardware import Hardware, load_hardware
from .version import __version__
from .report import notebook as _notebook

_notebook.install()   # notebook display of the result records (_repr_html_, _repr_latex_)

__all__ = ["CostDSLError", "Hardware", "Model", "load", "load_hardware"]
