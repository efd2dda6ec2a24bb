"""Deterministic hash bucketing of a request key, for shadow sampling and target splits. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

BUCKETS = 1 << 64
"""Buckets are 64-bit integers: a fraction f admits the buckets below f * BUCKETS."""

T = TypeVar("T")


def bucket(key: str) -> int:
    """The bucket of a request key: the same key gives the same bucket in every process and replica.

    >>> bucket("3f1c...") < Sampler(0.3).threshold   # admitted at 30%
    """
    # surrogateescape: a request id that was not UTF-8 keeps its bytes (proxy.front.hot_path).
    raw = key.encode("utf-8", "surrogateescape")
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Sampler:
    """Admits a fixed fraction of buckets. Sets are nested: what 10% admits, 30% admits too,
    so every shadow sampled at a rate sees the same subset, and raising a rate only adds requests.

    >>> Sampler(0.3).admits(bucket(request_id))
    """

    rate: float
    threshold: int = field(init=False)  # buckets below it are admitted

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", round(self.rate * BUCKETS))

    @property
    def everything(self) -> bool:
        """Whether it admits every bucket, so that callers can skip hashing."""
        return self.threshold >= BUCKETS

    def admits(self, b: int) -> bool:
        return b < self.threshold


@dataclass(frozen=True, slots=True)
class WeightedSplit(Generic[T]):
    """Hash-sticky weighted choice among targets (canary and A/B splits): a key always lands
    on the same target while the weights stay the same.

    >>> split = WeightedSplit.of([(90, stable), (10, canary)])
    >>> split.pick(bucket(request_id))
    """

    targets: tuple[T, ...]
    upper_bounds: tuple[int, ...]

    @classmethod
    def of(cls, weighted: Sequence[tuple[float, T]]) -> WeightedSplit[T]:
        total = sum(w for w, _ in weighted)
        if not weighted or total <= 0 or any(w < 0 for w, _ in weighted):
            raise ValueError("weights must be non-negative and add up to more than 0")
        bounds, acc = [], 0.0
        for w, _ in weighted:
            acc += w
            bounds.append(round(acc / total * BUCKETS))
        return cls(tuple(t for _, t in weighted), tuple(bounds))

    @property
    def single(self) -> T | None:
        """The target when there is only one, so callers can skip hashing."""
        return self.targets[0] if len(self.targets) == 1 else None

    def pick(self, b: int) -> T:
        for target, upper in zip(self.targets, self.upper_bounds, strict=True):
            if b < upper:
                return target
        return self.targets[-1]
