"""The dashboard in a real browser (Debian's chromium via Playwright) over a real fixture run.

The run (``tests/ui/world.py``): the tiny LLaVA served by ``vlmwatch fixture serve``, a probe
trained for it, ``vlmwatch daemon`` scoring, spot-checking, calibrating and detecting, samples and
labels sent through the API. Every page must load without console errors or failed requests
(checked by the ``browser`` fixture), charts must hold the series and points the database says
they should, filters must change the rows, and a firing alert must appear on the overview after
its transition. The first test sees the world before the shift; keep it first.
"""

from __future__ import annotations

import json

import pytest

from tests.ui.world import MODEL, ROUTES, TOKEN

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _firing_ids(world) -> set[str]:
    return {a["id"] for a in world.firing()}


def test_firing_alert_appears_on_the_overview_after_its_transition(browser, ui_world) -> None:
    before = _firing_ids(ui_world)
    page = browser.open("/ui/")
    shown = {a.get_attribute("href").rsplit("/", 1)[1] for a in page.locator("#firing-alerts tr.alert-row a[href^='/ui/alerts/']").all()}
    assert shown == before
    assert page.locator("#firing-count").inner_text() == str(len(before))
    row = page.locator(f"tr.model-row[data-model='{MODEL}']")
    assert row.count() == 1 and ui_world.probe_version in row.inner_text()
    browser.shot("overview-before-shift")

    firing = ui_world.shift()
    new = [a for a in firing if a["id"] not in before]
    assert new, f"no alert fired after the shift (firing: {firing})"
    page.reload()
    for a in new:
        link = page.locator(f"#firing-alerts tr.alert-row[data-rule='{a['rule']}'] a[href='/ui/alerts/{a['id']}']")
        assert link.count() == 1, f"{a['rule']} is not on the overview"
    assert page.locator("#firing-count").inner_text() == str(len(firing))
    assert page.locator(f"tr.model-row[data-model='{MODEL}'] .firing").inner_text() == str(len(firing))
    budget = page.locator("#budget-text").inner_text()
    checks = ui_world.count("SELECT count(*) FROM spot_checks")
    assert f"{checks} checks in the last hour" in budget
    browser.shot("overview")


def _expected_points(world, source: str, column: str) -> int:
    return world.count(f"SELECT count(*) FROM (SELECT {column} FROM calibration_windows WHERE kind = 'time' "
                       f"AND source = '{source}' ORDER BY window_start DESC LIMIT 48) w WHERE {column} IS NOT NULL")


def _series(page, chart: str) -> dict[str, int]:
    svg = page.locator(f"svg.chart[data-chart='{chart}']")
    assert svg.count() == 1, f"no chart {chart}"
    groups = svg.locator("g.series")
    out = {}
    for i in range(groups.count()):
        g = groups.nth(i)
        n = g.locator("circle.pt").count()
        assert int(g.get_attribute("data-points")) == n
        out[g.get_attribute("data-series")] = n
    assert int(svg.get_attribute("data-series")) == len(out)
    return out


def test_model_page_charts_have_a_series_per_source_and_route_and_a_point_per_window(browser, ui_world) -> None:
    alerts = ui_world.shift()
    charts = (("source-auroc", "auroc"), ("source-ece", "ece"), ("source-agreement", "agreement"))
    sources = ("human", "self_consistency", "combined")
    # the world's daemon keeps writing windows: the page shows what was there between these two counts
    before = {(c, s): _expected_points(ui_world, s, c) for _, c in charts for s in sources}
    page = browser.open(f"/ui/models/{MODEL}")
    after = {(c, s): _expected_points(ui_world, s, c) for _, c in charts for s in sources}
    for chart, column in charts:
        got = _series(page, chart)
        assert list(got) == list(sources)
        for source, n in got.items():
            assert before[column, source] <= n <= after[column, source], (chart, source, n)
        assert got["human"] >= 8  # the run spans 8+ four-minute windows
    for chart in ("route-auroc", "route-ece", "route-agreement"):
        got = _series(page, chart)
        assert sorted(got) == sorted(ROUTES) and all(n >= 2 for n in got.values()), got
    # every alert of the model is a mark on each history chart, linking to its page
    n_alerts = ui_world.count(f"SELECT count(*) FROM alerts WHERE model = '{MODEL}'")
    assert n_alerts >= len(alerts) >= 1
    marks = page.locator("svg.chart[data-chart='source-agreement'] line.alert-mark")
    assert marks.count() == n_alerts
    assert page.locator("svg.chart[data-chart='source-agreement'] a[href^='/ui/alerts/']").count() == n_alerts
    reliability = page.locator("svg.chart[data-chart^='reliability-']")
    assert reliability.count() == 6
    for i in range(reliability.count()):
        assert reliability.nth(i).locator("circle.pt").count() >= 1
    browser.shot("model")


def test_alert_page_shows_the_rule_statistic_windows_and_samples(browser, ui_world) -> None:
    alert = sorted(ui_world.shift(), key=lambda a: a["rule"])[0]
    page = browser.open(f"/ui/alerts/{alert['id']}")
    assert alert["rule"] in page.locator("h1").inner_text()
    assert page.locator("#alert-state").inner_text() == "firing"
    gauge = page.locator("svg.gauge")
    assert gauge.count() >= 1 and gauge.first.locator("g.series").get_attribute("data-points") == "1"
    window = json.loads(page.locator("#window-json").inner_text())
    assert window == alert["window"]
    assert _series(page, "alert-windows")  # the windows around it, with the alert's mark
    assert page.locator("svg.chart[data-chart='alert-windows'] line.alert-mark").count() == 1
    evidence = ui_world.rows(f"SELECT evidence FROM alerts WHERE id = '{alert['id']}'")[0][0]
    ids = [str(i) for i in json.loads(evidence).get("sample_ids", [])]
    rows = page.locator("#evidence-samples tr.sample-row")
    assert ids and rows.count() == len(ids)
    browser.shot("alert")
    # the samples behind it are one click away, behind the token
    first = rows.first.locator("a").inner_text()
    rows.first.locator("a").click()
    page.wait_for_load_state()
    browser.sign_in()
    prompt = ui_world.rows(f"SELECT prompt FROM samples WHERE id = '{first}'")[0][0]
    assert page.locator("#prompt").inner_text() == prompt


def _visible_rows(page) -> list[dict[str, str]]:
    rows = page.locator("#samples tr.sample-row")
    return [{k: rows.nth(i).get_attribute(f"data-{k}") for k in ("id", "score", "label", "agreement")}
            | {"class": rows.nth(i).get_attribute("class")} for i in range(rows.count())]


def test_samples_browser_filters_change_the_rows(browser, ui_world) -> None:
    ui_world.shift()
    page = browser.page
    page.goto("/ui/samples")
    browser.sign_in()
    assert page.url.endswith("/ui/samples")
    everything = _visible_rows(page)
    assert len(everything) == 50
    newest = ui_world.rows("SELECT id FROM samples ORDER BY ts DESC, id DESC LIMIT 50")
    assert [r["id"] for r in everything] == [r[0] for r in newest]
    browser.shot("samples")

    page.select_option("select[name=label]", "disagree")
    page.click("#apply")
    page.wait_for_load_state()
    disagree = _visible_rows(page)
    expected = ui_world.rows(
        "SELECT s.id FROM samples s JOIN scores sc ON sc.sample_id = s.id JOIN labels l ON l.sample_id = s.id "
        "AND l.source = 'ground_truth' WHERE (sc.p_correct >= 0.5) != l.correct ORDER BY s.ts DESC, s.id DESC LIMIT 50")
    assert [r["id"] for r in disagree] == [r[0] for r in expected] and disagree
    assert all("disagree" in r["class"] for r in disagree)
    browser.shot("samples-disagree")

    page.select_option("select[name=label]", "any")
    page.select_option("select[name=spotcheck]", "checked")
    page.fill("input[name=score_min]", "0.8")
    page.click("#apply")
    page.wait_for_load_state()
    checked = _visible_rows(page)
    expected = ui_world.rows("SELECT s.id FROM samples s JOIN scores sc ON sc.sample_id = s.id JOIN spot_checks c "
                             "ON c.sample_id = s.id WHERE sc.p_correct >= 0.8 ORDER BY s.ts DESC, s.id DESC LIMIT 50")
    assert [r["id"] for r in checked] == [r[0] for r in expected] and checked
    assert all(r["agreement"] and float(r["score"]) >= 0.8 for r in checked)

    # keyset paging: the second page continues where the first stopped
    page.goto("/ui/samples")
    page.click("#next")
    page.wait_for_load_state()
    second = [r["id"] for r in _visible_rows(page)]
    more = ui_world.rows("SELECT id FROM samples ORDER BY ts DESC, id DESC LIMIT 50 OFFSET 50")
    assert second == [r[0] for r in more]

    page.goto("/ui/samples?score_min=2")
    assert "score_min must lie in [0, 1]" in page.locator("#filter-error").inner_text()
    browser.problems = [p for p in browser.problems if "HTTP 422" not in p and "status of 422" not in p]


def test_sample_page_shows_prompt_answer_scores_spot_check_and_image(browser, ui_world) -> None:
    sid, prompt, answer, groups = ui_world.rows(
        "SELECT s.id, s.prompt, s.answer, c.groups FROM samples s JOIN spot_checks c ON c.sample_id = s.id "
        "ORDER BY s.ts DESC LIMIT 1")[0]
    page = browser.page
    page.goto(f"/ui/sample/{sid}")
    browser.sign_in()
    assert page.locator("#prompt").inner_text() == prompt and page.locator("#answer").inner_text() == answer
    groups = json.loads(groups) if isinstance(groups, str) else groups
    assert page.locator("#spot-groups tbody tr").count() == len(groups)
    img = page.locator("#sample-image")
    assert img.count() == 1
    assert img.evaluate("el => el.complete && el.naturalWidth") == 64
    score = ui_world.rows(f"SELECT p_correct FROM scores WHERE sample_id = '{sid}'")[0][0]
    assert f"{score:.3f}" in page.locator("#scores").inner_text()
    browser.shot("sample")


def test_sample_pages_need_the_token_and_metrics_pages_do_not(browser, ui_world) -> None:
    page = browser.page
    sid = ui_world.rows("SELECT id FROM samples LIMIT 1")[0][0]
    for path in ("/ui/", f"/ui/models/{MODEL}"):  # metrics pages stay open without signing in
        page.goto(path)
        assert page.url.endswith(path) and page.locator("h1").count() == 1
    for path in ("/ui/samples", f"/ui/sample/{sid}"):
        page.goto(path)
        assert "/ui/login" in page.url, f"{path} showed without the token"
    assert browser.context.request.get(f"/ui/image/{sid}").status == 401
    assert browser.context.request.get(f"/ui/image/{sid}", headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
    browser.shot("login")
    browser.sign_in("not-the-token")
    assert page.locator("#login-failed").count() == 1
    browser.sign_in()
    assert page.url.endswith(f"/ui/sample/{sid}")
    cookie = next(c for c in browser.context.cookies() if c["name"] == "vlmwatch_ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and TOKEN not in cookie["value"]
