"""The dashboard's SVG charts: well-formed, one group per series, one circle per finite point."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone

from monitor.ui import charts

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def _parse(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))


def test_time_chart_series_points_bands_and_marks() -> None:
    a = charts.Series("human", [charts.Point(T0 + timedelta(minutes=i), 0.8 + 0.01 * i, 0.7, 0.9, hollow=i == 0)
                                for i in range(5)])
    b = charts.Series("self <consistency>", [charts.Point(T0, 0.5), charts.Point(T0 + timedelta(minutes=1), None),
                                             charts.Point(T0 + timedelta(minutes=2), float("nan")),
                                             charts.Point(T0 + timedelta(minutes=3), 0.6)])
    empty = charts.Series("combined", [])
    svg = _parse(charts.time_chart("auroc", "AUROC", [a, b, empty],
                                   [charts.Mark(T0 + timedelta(minutes=2), "drift", href="/ui/alerts/x"),
                                    charts.Mark(T0 + timedelta(minutes=4), "old", resolved=True)]))
    assert svg.get("data-series") == "3"
    groups = svg.findall(".//s:g[@class='series']", NS)
    assert [g.get("data-series") for g in groups] == ["human", "self <consistency>", "combined"]
    assert [g.get("data-points") for g in groups] == ["5", "2", "0"]  # None and NaN are gaps, not points
    assert [len(g.findall("s:circle", NS)) for g in groups] == [5, 2, 0]
    assert len(groups[0].findall("s:polygon[@class='band']", NS)) == 1
    assert groups[0].find("s:circle", NS).get("class") == "pt partial"  # the partial window is hollow
    marks = svg.findall(".//s:line", NS)
    mark_classes = [m.get("class") for m in marks if "alert-mark" in (m.get("class") or "")]
    assert mark_classes == ["alert-mark", "alert-mark resolved"]
    assert svg.find(".//s:a", NS).get("href") == "/ui/alerts/x"
    # points sit inside the plot area, higher values higher up
    ys = [float(c.get("cy")) for c in groups[0].findall("s:circle", NS)]
    assert ys == sorted(ys, reverse=True) and all(26 <= y <= 230 - 40 for y in ys)


def test_time_chart_escapes_names() -> None:
    out = str(charts.time_chart("x", "<b>AUROC</b>", [charts.Series("<script>", [charts.Point(T0, 0.5)])]))
    assert "<script>" not in out and "<b>" not in out
    _parse(out)


def test_reliability_chart_points_are_non_empty_bins() -> None:
    table = {"edges": [i / 10 for i in range(11)], "mean_p": [0.05, None, 0.25] + [None] * 6 + [0.95],
             "freq": [0.1, None, 0.3] + [None] * 6 + [0.9], "count": [4, 0, 6] + [0] * 6 + [10], "ece": 0.05, "n": 20}
    svg = _parse(charts.reliability_chart("r", "window", table))
    g = svg.find(".//s:g[@class='series']", NS)
    assert g.get("data-points") == "3" and len(g.findall("s:circle", NS)) == 3
    assert len(svg.findall(".//s:rect[@class='count']", NS)) == 3


def test_gauge_marks_a_statistic_over_its_threshold() -> None:
    over = _parse(charts.gauge("g", "CUSUM", 7.5, 5.0))
    assert over.find(".//s:rect[@class='bar over']", NS) is not None
    assert over.find(".//s:line[@class='threshold']", NS) is not None
    under = _parse(charts.gauge("g", "CUSUM", 2.0, 5.0))
    assert under.find(".//s:rect[@class='bar']", NS) is not None
    none = _parse(charts.gauge("g", "CUSUM", None, None))
    assert none.find(".//s:g[@class='series']", NS).get("data-points") == "0"
