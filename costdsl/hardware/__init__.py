"""The hardware input: a TOML file (a shipped name or a path) in, a `Hardware` record out.

A stage beside the language: analysis reads both; neither reads the other.
"""
from .device import (Hardware, figures_key, load_hardware, parse_quantity, resolve_path,
                     shipped_names)

__all__ = ["Hardware", "figures_key", "load_hardware", "parse_quantity", "resolve_path", "shipped_names"]
