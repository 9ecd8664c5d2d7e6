"""Signed deliveries a receiver can check for replays: ``t=<unix>,v1=<HMAC of "t.body">``.

The README's verification snippet is executed here against real deliveries to a loopback receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from alerts.lifecycle import evaluate
from alerts.outbox import deliver_due
from alerts.payload import SIGNATURE_HEADER, sign, verify_signature
from storage.db import session_factory
from storage.models import utcnow

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec-for-tests"


def _readme_verifier() -> Any:
    """The Python block after ``<!-- receiver-verification -->`` in the README, executed."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- receiver-verification -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README has no receiver verification snippet"
    scope: dict[str, Any] = {}
    exec(compile(m.group(1), "README.md", "exec"), scope)  # noqa: S102 - the documented snippet itself
    return scope["verify_vlmwatch_signature"]


def _fire(factory, cfg, make_signal, now) -> None:
    with factory() as s:
        evaluate(s, cfg, [make_signal("firing")], now)
        s.commit()


def test_every_attempt_signs_its_own_timestamp(engine, receiver, make_config, make_signal, monkeypatch) -> None:
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url, "secret_env": "TEST_HOOK_SECRET"}])
    receiver.script = [(503, {})]  # the first attempt fails: the retry is a new, newly signed request
    factory = session_factory(engine)
    t0 = utcnow()
    _fire(factory, cfg, make_signal, t0)
    ticks = iter([datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2026, 1, 1, 0, 0, 7, tzinfo=timezone.utc)])
    deliver_due(factory, cfg, now=t0, clock=lambda: next(ticks))
    deliver_due(factory, cfg, now=t0 + timedelta(minutes=1), clock=lambda: next(ticks))
    assert [r.status for r in receiver.requests] == [503, 200]
    stamps = []
    for req in receiver.requests:
        header = req.headers[SIGNATURE_HEADER]
        m = re.fullmatch(r"t=(\d+),v1=([0-9a-f]{64})", header)
        assert m, header
        t, mac = int(m.group(1)), m.group(2)
        assert mac == hmac.new(SECRET.encode(), f"{t}.".encode() + req.body, hashlib.sha256).hexdigest()
        stamps.append(t)
    start = int(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp())
    assert stamps == [start, start + 7]  # the moment of each attempt, not of the first one


def test_readme_snippet_accepts_a_real_delivery_and_refuses_replays(engine, receiver, make_config, make_signal,
                                                                      monkeypatch) -> None:
    verify = _readme_verifier()
    monkeypatch.setenv("TEST_HOOK_SECRET", SECRET)
    cfg = make_config([{"name": "hook", "kind": "webhook", "url": receiver.url, "secret_env": "TEST_HOOK_SECRET"}])
    factory = session_factory(engine)
    _fire(factory, cfg, make_signal, utcnow())
    deliver_due(factory, cfg)
    [req] = receiver.requests
    header = req.headers[SIGNATURE_HEADER]
    assert verify(req.body, header, SECRET) is True
    assert verify_signature(req.body, header, SECRET)  # the library helper agrees
    assert verify(req.body + b" ", header, SECRET) is False  # tampered body
    assert verify(req.body, header, "another secret") is False
    assert verify(req.body, None, SECRET) is False and verify(req.body, "sha256=" + "0" * 64, SECRET) is False
    # the same request replayed ten minutes later is outside the 5-minute window
    later = time.time() + 600
    assert verify(req.body, header, SECRET, now=later) is False
    assert not verify_signature(req.body, header, SECRET, now=later)
    # the old MAC under a fresh timestamp does not verify: re-stamping needs the secret
    t = int(header.split(",")[0][2:]) + 60
    forged = f"t={t},v1=" + header.split("v1=")[1]
    assert verify(req.body, forged, SECRET) is False


def test_sign_and_verify_round_trip_and_tolerance() -> None:
    body = b'{"id":"a1"}'
    header = sign(body, "k", timestamp=1_700_000_000)
    assert header == "t=1700000000,v1=" + hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert verify_signature(body, header, "k", now=1_700_000_100)
    assert not verify_signature(body, header, "k", now=1_700_000_301)  # default tolerance 300 s
    assert verify_signature(body, header, "k", now=1_700_000_301, tolerance_seconds=600)
    assert not verify_signature(body, header, "k", now=1_699_999_000)  # from the future beyond the window
    # secret rotation: several v1 entries, any may match
    rotated = header + ",v1=" + "ab" * 32
    assert verify_signature(body, rotated, "k", now=1_700_000_000)
