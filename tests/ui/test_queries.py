"""The dashboard's queries on SQLite and PostgreSQL: keyset pages, filters, the bounded scan,
model names by loose index scan, the overview's lags and budget."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert

from monitor.config import Settings
from monitor.ui import queries, sample_queries
from monitor.ui.sample_queries import SampleFilter
from storage.db import session_factory
from storage.models import Alert, Label, ProbeVersion, Sample, Score, SpotCheck

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
N = 40


def _score(i: int) -> float:
    return (i * 37 % 100) / 100


def _label(i: int) -> bool | None:
    return None if i % 3 == 0 else (i % 2 == 0)


@pytest.fixture
def sessions(engine):
    factory = session_factory(engine)
    with factory() as s:
        pv = ProbeVersion(model="m", version="v1", path="-", model_fingerprint="0" * 64, layer=1, pooling="answer",
                          threshold=0.5, active=True, activated_at=T0)
        s.add(pv)
        s.flush()
        # two samples share a timestamp: the keyset must order them by id too
        s.execute(insert(Sample), [dict(id=f"s{i:03d}", model="m", ts=T0 + timedelta(minutes=i - (i == 7)),
                                        prompt=f"q{i}", answer="yes", route="/a" if i % 2 else "/b",
                                        status="scored" if i < N - 3 else "pending") for i in range(N)]
                  + [dict(id="other-1", model="z-other", ts=T0, prompt="q", answer="no")])
        s.execute(insert(Score), [dict(sample_id=f"s{i:03d}", probe_version_id=pv.id, p_correct=_score(i))
                                  for i in range(N - 3)])
        s.execute(insert(Label), [dict(sample_id=f"s{i:03d}", correct=_label(i), source="ground_truth",
                                       created_at=T0 + timedelta(minutes=i + 10)) for i in range(N) if _label(i) is not None])
        s.execute(insert(SpotCheck), [dict(sample_id=f"s{i:03d}", k=6, one_token=True, agreement=0.2 if i % 10 == 0 else 0.9,
                                           entropy=0.3, inclusion_prob=0.5, reason="uniform", compute_seconds=1.5,
                                           created_at=datetime.now(timezone.utc)) for i in range(0, N, 5)])
        s.add(Alert(id="a1", fingerprint="f", rule="probe_disagreement_drift", state="firing", severity="critical",
                    model="m", probe_version="v1", started_at=T0, metrics={"statistic": 7.2, "threshold": 5.1}))
        s.commit()
        pv_id = pv.id
    return factory, pv_id


def _all_pages(s, f: SampleFilter, page: int, scan: int = 10_000) -> list[str]:
    ids: list[str] = []
    for _ in range(100):
        p = sample_queries.samples_page(s, f, page=page, scan=scan)
        ids += [r.id for r in p.rows]
        if p.next_before is None:
            return ids
        f = SampleFilter(**{**f.__dict__, "before": p.next_before})
    raise AssertionError("pagination did not end")


def _expected(pred) -> list[str]:
    order = sorted(range(N), key=lambda i: (T0 + timedelta(minutes=i - (i == 7)), f"s{i:03d}"), reverse=True)
    return [f"s{i:03d}" for i in order if pred(i)]


def test_keyset_pages_visit_every_sample_once_newest_first(sessions) -> None:
    factory, pv = sessions
    with factory() as s:
        got = _all_pages(s, SampleFilter("m", pv), page=7)
    assert got == _expected(lambda i: True)


@pytest.mark.parametrize("kw,pred", [
    ({"label": "disagree"}, lambda i: i < N - 3 and _label(i) is not None and (_score(i) >= 0.5) != _label(i)),
    ({"label": "agree"}, lambda i: i < N - 3 and _label(i) is not None and (_score(i) >= 0.5) == _label(i)),
    ({"label": "unlabelled"}, lambda i: _label(i) is None),
    ({"spotcheck": "inconsistent"}, lambda i: i % 10 == 0),
    ({"spotcheck": "consistent"}, lambda i: i % 5 == 0 and i % 10 != 0),
    ({"spotcheck": "unchecked"}, lambda i: i % 5 != 0),
    ({"score_min": 0.3, "score_max": 0.6}, lambda i: i < N - 3 and 0.3 <= _score(i) <= 0.6),
    ({"route": "/a", "label": "labelled"}, lambda i: i % 2 == 1 and _label(i) is not None),
])
def test_filters_select_exactly_the_matching_samples(sessions, kw, pred) -> None:
    factory, pv = sessions
    with factory() as s:
        got = _all_pages(s, SampleFilter("m", pv, **kw), page=4)
    assert got == _expected(pred) and got


def test_a_rare_filter_stops_at_the_scan_limit_and_continues_from_there(sessions) -> None:
    factory, pv = sessions
    f = SampleFilter("m", pv, spotcheck="inconsistent")  # s000, s010, s020, s030
    with factory() as s:
        first = sample_queries.samples_page(s, f, page=50, scan=12)
        assert [r.id for r in first.rows] == ["s030"]  # s039..s028 searched
        assert first.searched_to is not None and first.next_before == (first.searched_to, "s028")
        assert _all_pages(s, f, page=50, scan=12) == ["s030", "s020", "s010", "s000"]


def test_bad_filters_name_the_field() -> None:
    with pytest.raises(ValueError, match="label must be one of"):
        SampleFilter("m", 1, label="maybe")
    with pytest.raises(ValueError, match="score_min must lie in"):
        SampleFilter("m", 1, score_min=1.5)


def test_sample_detail_and_alert_evidence_rows(sessions) -> None:
    factory, pv = sessions
    with factory() as s:
        d = sample_queries.sample_detail(s, "s010")
        assert d["sample"].prompt == "q10" and d["spot"].agreement == 0.2 and len(d["labels"]) == 1
        assert [v for _, v, _, _ in d["scores"]] == ["v1"]
        assert sample_queries.sample_detail(s, "nope") is None
        rows = sample_queries.rows_for_ids(s, ["s001", "s002", "missing"], pv)
        assert [r.id for r in rows] == ["s002", "s001"] and rows[0].label is True


def test_overview_models_lags_budget_and_firing(sessions) -> None:
    factory, _ = sessions
    settings = Settings(models={"configured-only": {"path": "-"}}, spotcheck={"gpu_seconds_per_hour": 30})
    now = T0 + timedelta(minutes=N + 5)
    with factory() as s:
        assert queries.model_names(s, ["configured-only"]) == ["configured-only", "m", "z-other"]
        ov = queries.overview(s, settings, now)
    m = next(x for x in ov.models if x.name == "m")
    assert m.pending == 3 and m.oldest_pending == T0 + timedelta(minutes=N - 3)
    assert m.scoring_lag_seconds(now) == pytest.approx(8 * 60)
    assert m.label_lag_seconds == pytest.approx(600) and m.labels_measured == sum(_label(i) is not None for i in range(N))
    assert m.firing == 1 and [a.id for a in ov.firing] == ["a1"]
    assert ov.spot_checks_last_hour == 8 and ov.spot_seconds_last_hour == pytest.approx(12.0)
    assert ov.spot_budget_share == pytest.approx(0.4)
    assert queries.alert_statistics(ov.firing[0]) == [("CUSUM statistic", 7.2, 5.1)]
    glr = Alert(id="g", fingerprint="g", rule="r", state="firing", severity="warning", model="m", probe_version="v1",
                started_at=T0, metrics={"statistic": 9.4, "threshold": 8.8, "window_labels": 1600})
    assert queries.alert_statistics(glr) == [("GLR statistic, last 1600 labels (after the window penalty)", 9.4, 8.8)]


def test_reliability_evidence_is_one_verdict_per_sample_from_the_evidence_loader(sessions) -> None:
    from monitor.calibration.evidence import dedupe_human, load_evidence
    from monitor.ui.model_queries import _window_evidence

    factory, pv = sessions
    start, end = T0 + timedelta(minutes=3), T0 + timedelta(minutes=33)
    with factory() as s:
        ours = _window_evidence(s, "m", pv, start, end)
        theirs = {r.sample_id: r for r in load_evidence(s, "m", pv, "self_consistency", start=start, end=end)}
        theirs.update({r.sample_id: r for r in dedupe_human(load_evidence(s, "m", pv, "human", start=start, end=end))})
    assert sorted(ours) == sorted((r.score, r.correct) for r in theirs.values()) and len(ours) > 10


def test_route_buckets_split_each_routes_labels(sessions) -> None:
    from monitor.ui.model_queries import route_buckets

    factory, pv = sessions
    with factory() as s:
        got = route_buckets(s, "m", pv, threshold=0.5, bins=10)
    labelled = [i for i in range(N - 3) if _label(i) is not None]
    assert sorted(got) == ["/a", "/b"]
    for route, odd in (("/a", 1), ("/b", 0)):
        assert sum(b.metrics["n"] for b in got[route]) == sum(1 for i in labelled if i % 2 == odd)
