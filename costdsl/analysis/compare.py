"""A baseline against a transformed model: per stage the time and bytes of both, and every op
whose bound changed. A fused op is compared with the ops it was built from."""
from __future__ import annotations

from dataclasses import dataclass

from .records import Analysis, StageResult


@dataclass(frozen=True)
class OpChange:
    name: str                       # the op after the passes
    was: tuple[str, ...]            # the baseline ops it replaces (itself, or those fused)
    bound_before: tuple[str, ...]   # the bound of each of them
    bound_after: str
    time_before_s: float            # all occurrences of the baseline ops
    time_after_s: float

    @property
    def changed_bound(self) -> bool:
        return set(self.bound_before) != {self.bound_after}


@dataclass(frozen=True)
class StageComparison:
    stage: str
    before: StageResult
    after: StageResult
    ops: tuple[OpChange, ...]

    @property
    def speedup(self) -> float:
        return self.before.total.time_s / self.after.total.time_s

    @property
    def bound_changes(self) -> tuple[OpChange, ...]:
        return tuple(o for o in self.ops if o.changed_bound)


@dataclass(frozen=True)
class Comparison:
    before: Analysis
    after: Analysis
    stages: dict[str, StageComparison]


def _changes(before: StageResult, after: StageResult) -> tuple[OpChange, ...]:
    by_name = {o.name: o for o in before.ops}
    out = []
    for op in after.ops:
        was = [by_name[n] for n in (op.fused_from or (op.name,)) if n in by_name]
        if not was:
            continue
        out.append(OpChange(op.name, tuple(o.name for o in was), tuple(o.bound for o in was),
                            op.bound, sum(o.total_time_s for o in was), op.total_time_s))
    return tuple(out)


def compare(before: Analysis, after: Analysis) -> Comparison:
    stages = {s: StageComparison(s, before.stages[s], after.stages[s],
                                 _changes(before.stages[s], after.stages[s]))
              for s in after.stages}
    return Comparison(before, after, stages)
