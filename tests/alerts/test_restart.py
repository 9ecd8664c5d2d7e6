"""Nothing is lost or sent twice across a deliverer restart (new process and engine, same DB)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from alerts.outbox import deliver_due

from alerts.lifecycle import evaluate
from storage.db import session_factory
from storage.models import AlertDelivery, utcnow

ROOT = Path(__file__).resolve().parents[2]
DELIVER = """
import json, sys
from datetime import datetime
from alerts.outbox import deliver_due
from monitor.config import AlertsConfig
from storage.db import make_engine, session_factory
url, cfg, now = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
engine = make_engine(url)
stats = deliver_due(session_factory(engine), AlertsConfig(**cfg), now=datetime.fromisoformat(now) if now else None)
print(json.dumps(stats.__dict__))
"""


def _deliver_in_new_process(db_url: str, cfg: dict, now=None) -> dict:
    out = subprocess.run([sys.executable, "-c", DELIVER, db_url, json.dumps(cfg), now.isoformat() if now else ""],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_no_resend_across_restart(db_url, engine, receiver, make_config, make_signal):
    raw = {"channels": [{"name": "hook", "kind": "webhook", "url": receiver.url}]}
    cfg = make_config(raw["channels"])
    factory = session_factory(engine)
    t0 = utcnow()
    with factory() as s:
        evaluate(s, cfg, [make_signal("firing"), make_signal("firing", model="m2")], t0)
        s.commit()
    assert deliver_due(factory, cfg).sent == 2  # the daemon before the restart
    # a deliverer that then died after claiming a third row (status 'sending', lease running)
    with factory() as s:
        evaluate(s, cfg, [make_signal("firing", model="m3")], t0)
        s.commit()
        row = s.scalars(select(AlertDelivery).where(AlertDelivery.status == "pending")).one()
        lease_end = utcnow() + timedelta(seconds=40)
        s.execute(update(AlertDelivery).where(AlertDelivery.id == row.id)
                  .values(status="sending", attempts=1, next_attempt_at=lease_end))
        s.commit()
    assert deliver_due(factory, cfg).claimed == 0  # still leased: not sent twice concurrently
    # restart: a new process with its own engine, after the lease ran out
    stats = _deliver_in_new_process(db_url, raw, now=lease_end + timedelta(seconds=1))
    assert stats["sent"] == 1 and stats["claimed"] == 1  # only the crashed row; sent rows stay sent
    assert deliver_due(factory, cfg, now=lease_end + timedelta(seconds=2)).claimed == 0
    assert len(receiver.requests) == 3
    assert sorted(r.json()["model"] for r in receiver.requests) == ["m1", "m2", "m3"]
    assert receiver.requests[-1].headers["Idempotency-Key"] == row.id
    with factory() as s:
        done = s.get(AlertDelivery, row.id)
        assert (done.status, done.attempts) == ("sent", 2)
