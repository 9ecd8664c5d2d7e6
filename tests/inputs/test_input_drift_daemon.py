"""The daemon's input-drift path end to end: features recorded by the score job, the inputs job's
reference and windows, and the ``input_drift`` alert (stationary stream: none; changed: one)."""

from __future__ import annotations

import io
import random
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from monitor.config import Settings
from monitor.daemon import Daemon
from monitor.probe.score_result import ScoreResult
from storage.db import session_factory
from storage.models import Alert, InputFeature, InputReference, ProbeVersion
from storage.records import SampleRecord
from storage.repo_samples import ingest_samples
from tests.daemon.helpers import add_probe_version, wait_for

REFERENCE_N, WINDOW = 200, 50
OBJECTS = ("red circle", "blue star", "green square", "yellow triangle", "purple heart")


def _image(rng: random.Random, fmt: str) -> bytes:
    base = rng.randint(120, 200)
    px = np.random.default_rng(rng.randint(0, 2**31)).normal(base, 25, size=(40, 40, 3)).clip(0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, format=fmt, **({"quality": 70} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _stream(n: int, change_at: int | None, seed: int = 0) -> list[SampleRecord]:
    """``n`` samples; from ``change_at`` on the image pipeline re-encodes as JPEG (a new camera app)."""
    rng = random.Random(seed)
    t0 = datetime.now(timezone.utc) - timedelta(hours=2)
    out = []
    for i in range(n):
        fmt = "JPEG" if change_at is not None and i >= change_at else "PNG"
        prompt = (f"Is there a {rng.choice(OBJECTS)} in the image?" if rng.random() < 0.6
                  else f"Does the image contain a {rng.choice(OBJECTS)}?")
        out.append(SampleRecord(id=f"s{i:05d}", model="m", prompt=prompt, answer=rng.choice(("yes", "no")),
                                ts=t0 + timedelta(seconds=i), image=_image(rng, fmt), response_id=f"r{i:05d}"))
    return out


class _Scorer:
    """Scores by a hash and hands over a vision embedding (the image's colour histogram) as the probe scorer does."""

    def __init__(self, pid: int) -> None:
        self.probe_version_id = pid

    def score(self, items):  # type: ignore[no-untyped-def]
        out = []
        for it in items:
            with Image.open(io.BytesIO(it.image)) as im:
                px = np.asarray(im.convert("RGB"), dtype=np.float32)
            hist = np.concatenate([np.histogram(px[..., c], bins=8, range=(0, 255))[0] for c in range(3)]) / px[..., 0].size
            out.append(ScoreResult((hash(it.sample_id) % 1000) / 1000.0, vision_embedding=hist))
        return out


def _run(db_url: str, engine, records: list[SampleRecord]) -> tuple[list[Alert], InputReference, Settings]:
    pid = add_probe_version(db_url)
    with session_factory(engine).begin() as s:
        ingest_samples(s, records)
    settings = Settings(
        storage={"url": db_url}, models={"m": {"path": "-"}}, scoring={"batch_size": 64},
        inputs={"reference_n": REFERENCE_N, "window": WINDOW, "simulations": 40},
        daemon={"score_interval_seconds": 0.1, "inputs_interval_seconds": 0.3, "calibrate_interval_seconds": 3600,
                "detect_interval_seconds": 3600, "spotcheck_interval_seconds": 3600, "report_interval_minutes": 600,
                "retention_interval_minutes": 600, "leader_check_seconds": 0.2, "shutdown_timeout_seconds": 10,
                "start_api": False})
    windows = (len(records) - REFERENCE_N) // WINDOW
    sessions = session_factory(engine)

    def tested() -> InputReference | None:
        with sessions() as s:
            ref = s.scalars(select(InputReference).where(InputReference.active.is_(True))).first()
            return ref if ref is not None and len((ref.state or {}).get("windows") or []) >= windows else None

    d = Daemon(settings, engine=engine, scorer_factory=lambda name, e, st, ss: _Scorer(pid))
    d.start()
    try:
        ref = wait_for(tested, 90, f"{windows} input windows tested")
    finally:
        assert d.stop() is True
    with sessions() as s:
        assert s.scalar(select(ProbeVersion.id)) == pid
        n_features = len(list(s.scalars(select(InputFeature.sample_id))))
        assert n_features == len(records)  # every scored sample has its features
        emb = s.scalars(select(InputFeature.embedding)).first()
        assert emb is not None and len(emb) == 64 * 2  # 64 float16 values
        alerts = list(s.scalars(select(Alert).where(Alert.rule == "input_drift")))
    return alerts, ref, settings


@pytest.mark.timeout(180)
def test_stationary_stream_raises_no_input_drift_alert(db_url: str, engine) -> None:
    alerts, ref, _ = _run(db_url, engine, _stream(REFERENCE_N + 6 * WINDOW, change_at=None))
    assert alerts == []
    assert ref.n == REFERENCE_N and ref.stats["embedding"] is not None
    assert not any(w["drift"] for w in ref.state["windows"])


@pytest.mark.timeout(180)
def test_changed_image_pipeline_raises_input_drift_alert_naming_the_format(db_url: str, engine, tmp_path) -> None:
    change_at = REFERENCE_N + 2 * WINDOW
    alerts, ref, settings = _run(db_url, engine, _stream(REFERENCE_N + 6 * WINDOW, change_at=change_at))
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.state == "firing" and alert.severity == "warning"
    moved = {m["feature"]: m for m in alert.metrics["moved"]}
    assert "format" in moved and moved["format"]["new_categories"] == ["jpeg"]
    assert "jpeg_quality" not in moved  # absent on the PNG reference: not testable, not a false name
    assert "format" in alert.evidence["summary"] and "not enough labels yet" in alert.evidence["summary"]
    flags = [w["drift"] for w in ref.state["windows"]]
    assert flags == [False, False, True, True, True, True]  # caught in the first changed window, none before

    # the operator sees it: report section + JSON summary, and /metrics
    from monitor.api.db_metrics import DatabaseCollector
    from monitor.report import build_report

    sessions = session_factory(engine)
    summary = build_report(sessions, settings, since="1d", out_dir=tmp_path / "report")
    m = summary["input_drift"]["m"]
    assert m["windows_tested"] == 6 and m["windows_drifted"] == 4 and m["alert"]["id"] == alert.id
    assert m["features"]["format"]["drift"] is True and m["features"]["format"]["new_share"] == 1.0
    page = (tmp_path / "report" / summary["files"]["input_drift_html"]).read_text()
    assert "format" in page and "input_drift alert firing" in page and "data:image/png;base64," in page  # thumbnails
    assert (tmp_path / "report" / summary["files"]["input_drift_timeline"]).stat().st_size > 1000
    got = {(f.name, tuple(sorted(smp.labels.items()))): smp.value
           for f in DatabaseCollector(sessions, settings, cache_seconds=0).collect() for smp in f.samples}
    assert got[("vlmwatch_input_drift_window_drifted", (("model", "m"),))] == 1.0
    assert got[("vlmwatch_input_drift_windows_tested", (("model", "m"),))] == 6.0
    assert got[("vlmwatch_input_drift_min_p_value", (("model", "m"),))] < got[("vlmwatch_input_drift_p_threshold", (("model", "m"),))]

    from tests.api.helpers import serve_api

    api = serve_api(engine, "VLMWATCH_TEST_INPUTS_NO_TOKEN")
    page = next(api).get("/ui/models/m")
    next(api, None)  # stops the server
    assert page.status_code == 200 and "Input drift" in page.text and "input_drift firing" in page.text
    assert '<tr class="sev-warning"><td>format</td>' in page.text

    # the operator accepts the new pipeline: pinning a reference on the JPEG traffic resolves the alert
    from monitor.inputs import pin_reference

    with sessions() as s:
        jpeg = [w for w in ref.state["windows"] if w["drift"]]
        start, end = datetime.fromisoformat(jpeg[0]["start"]), datetime.fromisoformat(jpeg[-1]["end"])
        with pytest.raises(ValueError, match="needs at least 100"):
            pin_reference(s, settings, "m", start, start + timedelta(seconds=10))
        new = pin_reference(s, settings, "m", start, end)
        assert new.pinned and new.n == 4 * WINDOW and "jpeg" in new.stats["known_categories"]["format"]
        resolved = s.get(Alert, alert.id)
        assert resolved.state == "resolved" and resolved.metrics["at_resolve"]["reference_id"] == new.id
        assert [r.active for r in s.scalars(select(InputReference).order_by(InputReference.id))] == [False, True]
