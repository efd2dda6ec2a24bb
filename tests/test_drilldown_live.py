"""The drill-down from a live capture: a classification and a regression route behind a running
proxy with `capture:`, labels posted, /report.html fetched and rendered in headless Chromium;
each shadow's card shows its real disagreeing requests, which classes flip (classification) and
the largest differences (regression). With REPORT_SCREENSHOTS set, the screenshots are kept
there as drilldown-live-<route>.png."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import orjson

from proxy.report.html import render_html
from tests.conftest import Answer, FakeModelFactory, ProxyFactory, Received
from tests.test_report_page import _Tree, chromium

CLASSES = "/v1/models/iris:predict"
PRICES = "/v1/models/price:predict"
SPECIES = ("setosa", "versicolor", "virginica")


def _rows(request: Received) -> list[int]:
    return [int(v) for v in request.json()["instances"]]


def iris_lr(request: Received) -> Answer:
    return Answer(body=orjson.dumps({"predictions": [SPECIES[x % 3] for x in _rows(request)]}))


def iris_rf(request: Received) -> Answer:
    """Disagrees on every fourth instance: versicolor there where production says setosa."""
    out = [SPECIES[x % 3] if x % 4 else "versicolor" for x in _rows(request)]
    return Answer(body=orjson.dumps({"predictions": out}))


def price_lr(request: Received) -> Answer:
    return Answer(body=orjson.dumps({"predictions": [x * 10.0 for x in _rows(request)]}))


def price_gbm(request: Received) -> Answer:
    """Off by x / 2 on the odd instances."""
    out = [x * 10.0 + (x / 2 if x % 2 else 0.0) for x in _rows(request)]
    return Answer(body=orjson.dumps({"predictions": out}))


async def test_the_drilldown_of_a_live_capture_in_chromium(
    fake_model: FakeModelFactory, proxy: ProxyFactory, tmp_path: Path
) -> None:
    models = {
        name: await fake_model(script)
        for name, script in (
            ("iris-lr", iris_lr), ("iris-rf", iris_rf), ("price-lr", price_lr),
            ("price-gbm", price_gbm),
        )
    }  # fmt: skip

    def route(match: str, kind: str, production: str, shadow: str) -> str:
        return (
            f"  - {{match: '{match}', protocol: kserve-v1, record: 100%, compare: {{kind: {kind}}},"
            f" production: {{name: {production}, url: '{models[production].url}{match}'}},"
            f" shadows: [{{name: {shadow}, url: '{models[shadow].url}{match}'}}]}}\n"
        )

    p = await proxy(
        f"store: {{path: '{tmp_path / 'p.db'}'}}\n"
        f"capture: {{path: '{tmp_path / 'c.db'}', agreements: 0%, max_per_second: 1000}}\n"
        "routes:\n"
        + route(CLASSES, "classification", "iris-lr", "iris-rf")
        + route(PRICES, "regression", "price-lr", "price-gbm")
    )
    labels = []
    for i in range(24):
        rows = [3 * i, 3 * i + 1]
        for match in (CLASSES, PRICES):
            rid = f"{match.split('/')[3].split(':')[0]}-{i}"
            status, _, _ = await p.post(match, {"instances": rows}, headers={"X-Request-ID": rid})
            assert status == 200
            truth = [SPECIES[x % 3] for x in rows] if match == CLASSES else [x * 10.0 for x in rows]
            if i % 2 == 0:
                labels.append({"request_id": rid, "label": truth})
    await p.settled()
    status, _, _ = await p.post("/labels", labels)
    assert status == 200
    async with p.session.get(p.url + "/report.html") as resp:
        html = await resp.text()

    kept = os.environ.get("REPORT_SCREENSHOTS")
    page = tmp_path / "report.html"
    await asyncio.to_thread(page.write_text, html)
    dom = _Tree(await asyncio.to_thread(chromium, "--dump-dom", page.as_uri())).root
    cards = {a.one("h3").text(): a for a in dom.all("article", "card")}

    def disagrees(x: int) -> bool:
        return x % 4 == 0 and SPECIES[x % 3] != "versicolor"

    expected = [f"iris-{i}" for i in range(24) if disagrees(3 * i) or disagrees(3 * i + 1)]
    iris = cards["iris-rf"].one("section", "drilldown")
    shown = iris.all("div", "exchange")
    # The latest ten disagreeing requests, newest first.
    assert [s.one("a").text() for s in shown] == expected[::-1][:10]
    flips = iris.one("table", "flips")
    assert "versicolor" in flips.text()
    differing = [row for row in iris.all("tr") if "≠" in row.text()]
    assert len(differing) == sum(
        disagrees(x)
        for rid in expected[::-1][:10]
        for x in (3 * int(rid[5:]), 3 * int(rid[5:]) + 1)
    )

    price = cards["price-gbm"].one("section", "drilldown")
    assert price.all("div", "exchange")
    largest = price.one("table", "largest")
    first = largest.all("tr")[1].text()
    assert "+34.5" in first  # instance 69 (the largest odd one), off by 69 / 2

    if kept:  # each route's page alone, from the same report as JSON
        async with p.session.get(p.url + "/report") as resp:
            report = orjson.loads(await resp.read())
        for name, match in (("classification", CLASSES), ("regression", PRICES)):
            one = {**report, "routes": [r for r in report["routes"] if r["route"] == match]}
            single = tmp_path / f"{name}.html"
            await asyncio.to_thread(single.write_text, render_html(one))
            shot = Path(kept) / f"drilldown-live-{name}.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(
                chromium, f"--screenshot={shot}", "--window-size=1280,3000", single.as_uri()
            )
