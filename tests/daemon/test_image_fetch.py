"""Images given by URL: fetched by the daemon (SSRF-guarded, time- and size-limited, checked with
Pillow), never scored without them; purged bytes likewise; the retention race is closed.

A real HTTP image server runs on loopback; the tests that fetch from it allow 127.0.0.0/8
explicitly, as an operator would allow an internal image store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import event, select, update

from monitor import metrics
from monitor.config import ConfigError, Settings, load_config
from monitor.fetch_policy import FetchPolicy, Refused
from monitor.daemon.image_fetch import FetchedImage, ImageFetcher, ImageUnavailable
from monitor.daemon.retention import purge_images
from monitor.daemon.runner import JobContext
from monitor.daemon.scoring import ScoreJob
from monitor.probe.score_result import ScoreResult
from storage.db import session_factory
from storage.models import Image, Sample, utcnow
from storage.records import SampleRecord
from storage.repo_samples import ingest_samples
from storage.repo_status import pending_work
from tests.daemon.helpers import add_probe_version, png

MAX = 20_000
OK_PNG = png(3, size=32)
LOOPBACK = {"allow": ["127.0.0.0/8"], "timeout_seconds": 0.5, "retry_seconds": 0.0}


@dataclass
class ImageServer:
    url: str = ""
    seen: list[str] = field(default_factory=list)


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    srv = ImageServer()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _send(self, status: int, body: bytes, ctype: str = "image/png", **headers: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            srv.seen.append(self.path)
            try:
                self._route()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the fetcher hung up on purpose (too large, too slow)

        def _route(self) -> None:
            p = self.path
            if p.startswith("/ok"):
                self._send(200, OK_PNG)
            elif p == "/redirect-ok":
                self._send(302, b"", Location="/ok.png?via=redirect")
            elif p == "/redirect-metadata":  # the classic SSRF target: cloud instance metadata
                self._send(302, b"", Location="http://169.254.169.254/latest/meta-data/")
            elif p == "/redirect-loop":
                self._send(302, b"", Location="/redirect-loop")
            elif p == "/missing":
                self._send(404, b"no such image", "text/plain")
            elif p == "/broken":
                self._send(503, b"try later", "text/plain")
            elif p == "/text":
                self._send(200, b"hello, this is not an image" * 10, "text/plain")
            elif p == "/big":
                self._send(200, b"\x89PNG" + b"\0" * MAX)
            elif p == "/big-chunked":  # no Content-Length: the limit must hold while reading
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for _ in range(8):
                    part = b"\0" * 8192
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
            elif p == "/slow":
                time.sleep(2.0)
                self._send(200, OK_PNG)
            elif p == "/drip":  # each byte well within the read timeout, the whole far beyond the limit
                self.send_response(200)
                self.send_header("Content-Length", str(len(OK_PNG)))
                self.end_headers()
                for b in OK_PNG[:12]:
                    self.wfile.write(bytes([b]))
                    self.wfile.flush()
                    time.sleep(0.15)
            else:
                self._send(404, b"")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    srv.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield srv
    server.shutdown()
    server.server_close()


def _fetcher(**kw: Any) -> ImageFetcher:
    allow = kw.pop("allow", ["127.0.0.0/8"])
    return ImageFetcher(FetchPolicy.from_allow(allow, **kw.pop("policy", {})), max_bytes=MAX,
                        timeout=kw.pop("timeout", 0.5), **kw)


# --- the address rule -------------------------------------------------------------------------

def test_policy_refuses_private_loopback_and_link_local_unless_a_network_allows_them() -> None:
    public = FetchPolicy.from_allow([], resolver=lambda h, p: {"img.example.com": ["93.184.216.34"],
                                                                "rebind.example.com": ["93.184.216.34", "127.0.0.1"],
                                                                "v6.example.com": ["::ffff:10.1.2.3"]}[h])
    assert public.resolve("img.example.com", 443) == "93.184.216.34"
    for host in ("127.0.0.1", "10.0.0.7", "169.254.169.254", "192.168.1.1", "100.64.0.1", "::1", "fe80::1", "0.0.0.0",
                 "224.0.0.1", "rebind.example.com", "v6.example.com"):
        with pytest.raises(Refused):
            public.resolve(host, 80)
    internal = FetchPolicy.from_allow(["10.0.0.0/8", "*.cdn.example.com"],
                                      resolver=lambda h, p: {"a.cdn.example.com": ["93.184.216.35"],
                                                             "evil.cdn.example.com": ["169.254.169.254"],
                                                             "img.example.com": ["93.184.216.34"]}[h])
    assert internal.resolve("10.1.2.3", 80) == "10.1.2.3"
    assert internal.resolve("a.cdn.example.com", 80) == "93.184.216.35"
    with pytest.raises(Refused, match="169.254.169.254"):  # a listed name never opens a private address
        internal.resolve("evil.cdn.example.com", 80)
    with pytest.raises(Refused):  # with an allow-list, unlisted public hosts are refused too
        internal.resolve("img.example.com", 80)
    with pytest.raises(Refused):
        internal.resolve("127.0.0.1", 80)


def test_allow_entries_are_validated_at_config_load(tmp_path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("image_fetch:\n  allow: ['10.0.0.0/8', 'not a host!']\n")
    with pytest.raises(ConfigError, match="image_fetch.allow"):
        load_config(cfg)


# --- the fetch --------------------------------------------------------------------------------

def test_fetch_ok_redirect_and_every_refusal(image_server: ImageServer) -> None:
    f = _fetcher()
    try:
        got = f.fetch(image_server.url + "/ok.png")
        assert isinstance(got, FetchedImage) and got.data == OK_PNG and got.info.format == "PNG"
        assert isinstance(f.fetch(image_server.url + "/redirect-ok"), FetchedImage)
        cases = {
            "/missing": ("http_status", False), "/broken": ("http_status", True), "/text": ("not_an_image", False),
            "/big": ("too_large", False), "/big-chunked": ("too_large", False), "/slow": ("timeout", True),
            "/drip": ("timeout", True), "/redirect-metadata": ("refused", False), "/redirect-loop": ("refused", False),
        }
        for path, (reason, transient) in cases.items():
            t0 = time.monotonic()
            res = f.fetch(image_server.url + path)
            assert isinstance(res, ImageUnavailable), path
            assert (res.reason, res.transient) == (reason, transient), (path, res)
            assert time.monotonic() - t0 < 2.0, path  # time-limited (0.5 s; a drip gets one chunk's grace)
        assert "169.254.169.254" in f.fetch(image_server.url + "/redirect-metadata").detail
        assert f.fetch("ftp://127.0.0.1/x.png").reason == "refused"
        assert f.fetch("file:///etc/passwd").reason == "refused"
    finally:
        f.close()


def test_loopback_is_refused_unless_allowed_and_nothing_is_sent(image_server: ImageServer) -> None:
    f = _fetcher(allow=[])
    try:
        port = image_server.url.rsplit(":", 1)[1]
        for host in ("127.0.0.1", "localhost", "LOCALHOST.", "[::1]", "[::ffff:127.0.0.1]", "0x7f000001",
                     "2130706433", "127.1"):  # the spellings of loopback an attacker would try
            res = f.fetch(f"http://{host}:{port}/ok.png")
            assert isinstance(res, ImageUnavailable) and res.reason == "refused", (host, res)
        assert image_server.seen == []  # refused before any connection
    finally:
        f.close()


# --- the score job ----------------------------------------------------------------------------

class _RecordingScorer:
    def __init__(self, pid: int) -> None:
        self.probe_version_id = pid
        self.seen: dict[str, bytes | None] = {}

    def score(self, items):  # type: ignore[no-untyped-def]
        for it in items:
            self.seen[it.sample_id] = it.image
        return [ScoreResult(0.6) for _ in items]


def _ingest(url: str, records: list[SampleRecord]) -> None:
    from storage.db import make_engine

    eng = make_engine(url)
    with session_factory(eng).begin() as s:
        res = ingest_samples(s, records, max_image_bytes=MAX)
    eng.dispose()
    assert not res.rejected, res.rejected


def _rec(sid: str, **kw: Any) -> SampleRecord:
    return SampleRecord(id=sid, model="m", prompt="Is there a cat?", answer="yes", ts=utcnow() - timedelta(hours=1), **kw)


def _job(db_url: str, **image_fetch: Any) -> tuple[ScoreJob, _RecordingScorer, Settings]:
    pid = add_probe_version(db_url)
    settings = Settings(storage={"url": db_url, "max_image_bytes": MAX}, models={"m": {"path": "-"}},
                        daemon={"max_attempts": 2}, **({"image_fetch": image_fetch} if image_fetch else {}))
    scorer = _RecordingScorer(pid)
    return ScoreJob(settings, lambda *a: scorer, max_attempts=2), scorer, settings


def _run(job: ScoreJob, engine) -> int:
    return job(JobContext("score", "w", session_factory(engine), 30.0, threading.Event())).processed


def _statuses(engine) -> dict[str, tuple[str, str | None]]:
    with session_factory(engine)() as s:
        return {r.id: (r.status, r.error) for r in s.scalars(select(Sample))}


def _unavailable_count(reason: str) -> float:
    return metrics.SAMPLES_IMAGE_UNAVAILABLE.labels("m", reason)._value.get()


def test_url_images_are_fetched_scored_with_their_bytes_and_purged_after(db_url, engine, image_server) -> None:
    job, scorer, settings = _job(db_url, **LOOPBACK)
    before = {r: _unavailable_count(r) for r in ("http_status", "not_an_image", "too_large", "refused")}
    _ingest(db_url, [
        _rec("ok", image_url=image_server.url + "/ok.png"),
        _rec("ok-again", image_url=image_server.url + "/ok.png"),  # same URL: fetched once
        _rec("missing", image_url=image_server.url + "/missing"),
        _rec("text", image_url=image_server.url + "/text"),
        _rec("big", image_url=image_server.url + "/big-chunked"),
        _rec("metadata", image_url="http://169.254.169.254/latest/meta-data/"),
        _rec("no-image"),
    ])
    assert _run(job, engine) == 3
    assert scorer.seen == {"ok": OK_PNG, "ok-again": OK_PNG, "no-image": None}  # never one without its image
    assert image_server.seen.count("/ok.png") == 1
    st = _statuses(engine)
    assert {k: v[0] for k, v in st.items()} == {"ok": "scored", "ok-again": "scored", "no-image": "scored",
                                                 "missing": "image_unavailable", "text": "image_unavailable",
                                                 "big": "image_unavailable", "metadata": "image_unavailable"}
    assert "image_unavailable: http_status" in st["missing"][1] and "HTTP 404" in st["missing"][1]
    assert "not_an_image" in st["text"][1] and "too_large" in st["big"][1] and "refused" in st["metadata"][1]
    for reason, n in (("http_status", 1), ("not_an_image", 1), ("too_large", 1), ("refused", 1)):
        assert _unavailable_count(reason) - before[reason] == n
    with session_factory(engine)() as s:
        assert pending_work(s)["samples_image_unavailable"] == 4
        row = s.scalars(select(Image).where(Image.url == image_server.url + "/ok.png")).one()
        assert row.format == "PNG" and row.size == len(OK_PNG)
    # scored (and spot-check decided): retention purges the fetched bytes like any other image
    with session_factory(engine)() as s:
        s.execute(update(Sample).values(spotcheck_status="skipped"))
        s.commit()
        purge_images(s, settings)
    with session_factory(engine)() as s:
        row = s.scalars(select(Image).where(Image.url == image_server.url + "/ok.png")).one()
        assert row.data is None and row.purged_at is not None and row.url  # the URL stays, the bytes go


def test_default_config_refuses_loopback_urls_and_scores_nothing_without_the_image(db_url, engine, image_server):
    job, scorer, _ = _job(db_url)  # no image_fetch section: defaults
    _ingest(db_url, [_rec("internal", image_url=image_server.url + "/ok.png")])
    _run(job, engine)
    assert scorer.seen == {}
    status, error = _statuses(engine)["internal"]
    assert status == "image_unavailable" and "refused" in (error or "")
    assert image_server.seen == []


def test_transient_failures_retry_then_give_up(db_url, engine, image_server) -> None:
    job, scorer, _ = _job(db_url, **{**LOOPBACK, "retry_seconds": 60.0})
    _ingest(db_url, [_rec("slow", image_url=image_server.url + "/slow")])
    _run(job, engine)
    with session_factory(engine)() as s:
        row = s.get(Sample, "slow")
        assert row.status == "pending" and "timeout" in (row.error or "")  # a blip does not lose the sample
        assert row.lease_expires_at > utcnow() + timedelta(seconds=50)  # it waits image_fetch.retry_seconds
        row.lease_expires_at = utcnow() - timedelta(seconds=1)  # ... which passes
        s.commit()
    _run(job, engine)  # daemon.max_attempts = 2: the second timeout gives up
    assert _statuses(engine)["slow"][0] == "image_unavailable" and scorer.seen == {}


def test_purged_bytes_are_never_scored_without_them(db_url, engine) -> None:
    job, scorer, settings = _job(db_url)
    _ingest(db_url, [_rec("late", image=png(9)), _rec("fresh", image=png(10))])
    with session_factory(engine)() as s:  # 'late' waited past storage.image_ttl_hours while pending
        purge_images(s, settings, now=utcnow() + timedelta(hours=settings.storage.image_ttl_hours + 1), limit=1)
    _run(job, engine)
    st = _statuses(engine)
    purged = next(k for k in ("late", "fresh") if st[k][0] == "image_unavailable")
    assert "purged" in (st[purged][1] or "")
    assert list(scorer.seen) == [k for k in ("late", "fresh") if k != purged] and None not in scorer.seen.values()


def test_retention_does_not_purge_an_image_a_sample_gains_meanwhile(db_url, engine) -> None:
    """Retention picks an image nobody needs; before it purges, a new pending sample with the same
    image is stored by another connection. The image must keep (or regain) its bytes."""
    _, _, settings = _job(db_url)
    _ingest(db_url, [_rec("old", image=png(5))])
    with session_factory(engine)() as s:
        s.execute(update(Sample).values(status="scored", spotcheck_status="done"))
        s.commit()
    racer: list[threading.Thread] = []

    def before_purge(conn, cursor, statement, params, context, executemany) -> None:
        if statement.lstrip().upper().startswith("UPDATE IMAGES") and not racer:
            t = threading.Thread(target=_ingest, args=(db_url, [_rec("new", image=png(5))]))
            racer.append(t)
            t.start()
            t.join(1.5)  # on PostgreSQL the racer may wait on retention's row lock: let it

    event.listen(engine, "before_cursor_execute", before_purge)
    try:
        with session_factory(engine)() as s:
            purge_images(s, settings)
    finally:
        event.remove(engine, "before_cursor_execute", before_purge)
    assert racer, "retention never tried to purge"
    racer[0].join(30)
    with session_factory(engine)() as s:
        new = s.get(Sample, "new")
        data = s.scalar(select(Image.data).where(Image.sha256 == new.image_sha256))
    assert new.status == "pending" and data == png(5)
