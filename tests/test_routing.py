from __future__ import annotations

from proxy.core.routing import Router


def test_longest_prefix_wins_whatever_the_order() -> None:
    router = Router([("/v2", None, "meta"), ("/v2/models/iris/infer", None, "iris")])
    assert router.match("/v2/models/iris/infer", "POST") == ("/v2/models/iris/infer", "iris")
    assert router.match("/v2/models/iris/infer?x=1", "POST") == ("/v2/models/iris/infer", "iris")
    assert router.match("/v2/health/ready", "GET") == ("/v2", "meta")
    assert router.match("/v1/models/x:predict", "POST") is None


def test_methods_restrict_a_route_and_fall_through_to_shorter_ones() -> None:
    router = Router(
        [("/v1/models/m", frozenset({"POST"}), "predict"), ("/v1", frozenset({"GET"}), "meta")]
    )
    assert router.match("/v1/models/m:predict", "POST") == ("/v1/models/m", "predict")
    assert router.match("/v1/models/m", "GET") == ("/v1", "meta")
    assert router.match("/v1/models/m", "DELETE") is None
