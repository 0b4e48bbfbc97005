"""Passes: graph -> graph transformations, declared in a .arch file (`passes { ... }`) or with
`--pass`. Each module registers its passes by name; `apply_passes` runs a parsed pipeline."""
from .registry import PASSES, PassDef, PassError, apply_pass, apply_passes
from . import (quantize, fusion, add_norm, flash, presets, early_exit, sparsity,  # noqa: F401
               medusa, weight_sparsity, low_rank, prune, parallel, offload)  # (registration)

__all__ = ["PASSES", "PassDef", "PassError", "apply_pass", "apply_passes"]
