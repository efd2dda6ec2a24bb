from __future__ import annotations

import pytest

from proxy.core.sampling import BUCKETS, Sampler, WeightedSplit, bucket


def test_bucket_is_stable_across_processes() -> None:
    # blake2b-64 of the key, big-endian: fixed forever, so replicas agree on every decision.
    assert bucket("req-1") == bucket("req-1")
    assert bucket("req-1") == int.from_bytes(
        __import__("hashlib").blake2b(b"req-1", digest_size=8).digest(), "big"
    )
    assert 0 <= bucket("anything") < BUCKETS


def test_sampler_edges() -> None:
    assert Sampler(0.0).threshold == 0
    assert Sampler(1.0).threshold == BUCKETS
    assert not Sampler(0.0).admits(0)
    assert Sampler(1.0).admits(BUCKETS - 1)


def test_sampler_rates_are_nested_and_close_to_nominal() -> None:
    keys = [f"req-{i}" for i in range(20_000)]
    at10 = {k for k in keys if Sampler(0.1).admits(bucket(k))}
    at30 = {k for k in keys if Sampler(0.3).admits(bucket(k))}
    assert at10 <= at30
    assert len(at10) == 1976
    assert len(at30) == 5993


def test_weighted_split_is_sticky_and_proportional() -> None:
    split = WeightedSplit.of([(90, "stable"), (10, "canary")])
    assert split.single is None
    picks = [split.pick(bucket(f"user-{i}")) for i in range(10_000)]
    assert picks.count("canary") == 993
    assert [split.pick(bucket(f"user-{i}")) for i in range(10_000)] == picks
    assert WeightedSplit.of([(1, "only")]).single == "only"
    assert split.pick(BUCKETS - 1) == "canary"
    assert split.pick(0) == "stable"


@pytest.mark.parametrize("weights", [[], [(0, "a")], [(-1, "a"), (2, "b")]])
def test_weighted_split_rejects_bad_weights(weights: list[tuple[float, str]]) -> None:
    with pytest.raises(ValueError, match="weights must be non-negative"):
        WeightedSplit.of(weights)
