"""Prefix caching: KV blocks kept by the hash of the tokens they hold, shared by the sequences
whose prompts begin alike (vLLM's automatic prefix caching, SGLang's RadixAttention; Kwon et
al. SOSP 2023 and Zheng et al. 2024).

A block is resident while a running sequence holds it (its references) or, once none does,
idle: kept in least-recently-released order and evicted, oldest first, only when the pool has
no free block left. A new sequence whose first k block hashes are resident shares those k blocks
and skips their prefill; the blocks it computes itself join the cache when its prompt (and, at
the end, its whole sequence) fills them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Hashable, Iterable, Sequence


class PrefixCache:
    def __init__(self):
        self.refs: dict[Hashable, int] = {}
        self.idle: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, h: Hashable) -> bool:
        return h in self.refs or h in self.idle

    def match(self, hashes: Sequence[Hashable]) -> int:
        """How many of the leading hashes are resident."""
        k = 0
        for h in hashes:
            if h not in self:
                break
            k += 1
        return k

    def acquire(self, hashes: Iterable[Hashable]) -> None:
        for h in hashes:
            self.idle.pop(h, None)
            self.refs[h] = self.refs.get(h, 0) + 1

    def insert(self, h: Hashable) -> bool:
        """Hold `h` for a sequence that just filled its block: True if the block is new to the
        cache (the sequence's own block becomes it), False if it was resident already (the
        sequence shares that one and its own copy is freed)."""
        new = h not in self
        self.acquire((h,))
        return new

    def release(self, hashes: Iterable[Hashable]) -> None:
        for h in hashes:
            left = self.refs[h] - 1
            if left:
                self.refs[h] = left
            else:
                del self.refs[h]
                self.idle[h] = None

    def evict(self, keep: Sequence[Hashable] = ()) -> bool:
        """Drop the oldest idle block not in `keep`; False when there is none."""
        for h in self.idle:
            if h not in keep:
                del self.idle[h]
                return True
        return False
