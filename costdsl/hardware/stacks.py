"""Serving stacks: one device's kernels as a named software stack runs them.

A calibration describes one GPU under one stack (its GEMM library, attention backend and
collectives): vLLM's kernels are not TensorRT-LLM's. A hardware file keeps the datasheet
figures once and a set of achieved fractions per stack:

    [efficiency]                 # the default stack, used when none is asked for
    stack = "vllm 0.24.0"        # which stack and version these figures describe
    ...
    [stack.trtllm]               # another stack's figures: the same keys as [efficiency]
    stack = "trtllm 1.3.0rc20"
    ...
    [stack.trtllm.decode_attention]

`--stack NAME` (or `Hardware.with_stack`) picks one by its name, the first word of its `stack`;
the ideal roofline (`--ideal`) ignores them all.
"""
from __future__ import annotations

from typing import Mapping

from ..errors import HardwareError
from .efficiency import Efficiency

DEFAULT = "default"
"""The name of an [efficiency] section that does not say its stack."""


def stack_name(e: Efficiency | None) -> str | None:
    """The name a stack is picked by: the first word of its `stack`, lower-cased."""
    if e is None:
        return None
    return e.stack.split()[0].lower() if e.stack.strip() else DEFAULT


def offered(default: Efficiency | None, stacks: Mapping[str, Efficiency]) -> list[str]:
    """The stacks a file offers: the default's name first, then its [stack.NAME] tables."""
    return ([stack_name(default)] if default is not None else []) + sorted(stacks)


def located(fail, name: str):
    """`fail` for a [stack.NAME] table: the keys and messages of [efficiency] moved there."""
    def stack_fail(message, key=None, hint=None):
        key = key.replace("efficiency", f"stack.{name}", 1) if key else key
        return fail(message.replace("[efficiency", f"[stack.{name}")
                    .replace("efficiency ", f"stack.{name} "), key, hint)
    return stack_fail


def parse_stacks(data: dict, parse_one, fail) -> dict[str, Efficiency]:
    """The file's [stack.NAME] tables, each read by `parse_one(table, fail)` as [efficiency]."""
    if "stack" not in data:
        return {}
    if not isinstance(data["stack"], dict):
        raise fail("[stack] must hold one table per stack, e.g. [stack.trtllm]", "stack")
    out = {}
    for name, table in data["stack"].items():
        if not isinstance(table, dict):
            raise fail(f"[stack.{name}] must be a table", f"stack.{name}")
        e = parse_one(table, located(fail, name))
        if stack_name(e) not in (DEFAULT, name.lower()):
            raise fail(f"[stack.{name}] says stack = {e.stack!r}: its first word must be its "
                       f"name, {name!r}", f"stack.{name}.stack")
        out[name.lower()] = e
    return out


def section_for(default: Efficiency | None, stack: str | None) -> str | None:
    """Where figures calibrated for `stack` are written: None for [efficiency] (no stack asked,
    no default yet, a default that names no stack, or the default's own stack), else the name
    of its [stack.NAME]."""
    if not stack or not stack.strip():
        return None
    name = stack.split()[0].lower()
    if default is None or stack_name(default) in (name, DEFAULT):
        return None
    return name


def pick(default: Efficiency | None, stacks: Mapping[str, Efficiency], name: str,
         hardware: str) -> Efficiency:
    """The figures of stack `name`; an error names the stacks the file has."""
    key = name.strip().split()[0].lower() if name.strip() else ""
    if default is not None and key == stack_name(default):
        return default
    if key in stacks:
        return stacks[key]
    have = offered(default, stacks)
    raise HardwareError(f"{hardware} has no figures for the stack {name!r}",
                        hint=("its stacks: " + ", ".join(have)) if have else
                        "the file is not calibrated: `costdsl calibrate MEASURED.csv --hw "
                        f"{hardware} --stack {key or 'NAME'} -o FILE.toml` makes one")
