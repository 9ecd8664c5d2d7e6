"""Outbox delivery of alert notifications (``alert_deliveries``): at least once, never lost.

Queueing (:func:`enqueue`) happens in the same transaction as the alert's state change. The
deliverer (:func:`deliver_due`) then:

1. claims due rows — ``pending`` with ``next_attempt_at <= now``, or ``sending`` whose lease ran
   out (the process died mid-send) — by a conditional UPDATE (status and attempt count must still
   match), committed before any request, so two deliverers never send the same attempt;
2. posts the stored body (``X-Vlmwatch-Signature: t=<unix>,v1=<hmac>`` when the channel has a
   secret, signed with the moment of this attempt; ``Idempotency-Key`` = the delivery id on every
   attempt);
3. marks the row ``sent``; or, on 429 / 5xx / connection errors, ``pending`` again after an
   exponential backoff with jitter that honours ``Retry-After``; or ``gave_up`` (recorded in
   ``last_error``) for other statuses and when the next attempt would pass the row's deadline.

Delivery is at-least-once: if the process dies after the receiver accepted a request but before
``sent`` is committed, the row is retried when its lease expires. Receivers deduplicate by the
``Idempotency-Key`` header (Alertmanager deduplicates by labels on its own). A row that reached
``sent`` is never sent again, across any number of restarts.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import httpx
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from alerts.channels import CHANNELS, channel_url
from alerts.payload import SIGNATURE_HEADER, alert_payload, sign
from alerts.settings import AlertsSettings, ChannelSettings
from storage.failopen import report_internal_error
from storage.models import Alert, AlertDelivery, utcnow

__all__ = ["DeliveryStats", "enqueue", "deliver_due", "request_headers", "RETRYABLE_STATUSES", "LEASE_MARGIN_SECONDS"]

log = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504})
LEASE_MARGIN_SECONDS = 30.0  # a 'sending' row is reclaimable this long after its request timeout


@dataclass
class DeliveryStats:
    sent: int = 0
    retried: int = 0
    gave_up: int = 0
    claimed: int = 0


def enqueue(session: Session, config: AlertsSettings, alert: Alert, event: str, now: datetime) -> list[AlertDelivery]:
    """Queue one delivery row per configured channel for ``alert``'s ``event`` (caller commits)."""
    expires = now + timedelta(minutes=2 * float(config.renotify_minutes)) if alert.state == "firing" else None
    payload = alert_payload(alert, event, now, expires_at=expires)
    rows = []
    for ch in config.channels:
        if ch.kind not in CHANNELS:
            log.error("alert channel %s has unknown kind %r; not queued", ch.name, ch.kind)
            continue
        row = AlertDelivery(
            id=uuid.uuid4().hex, alert_id=alert.id, channel=ch.name, event=event,
            body=CHANNELS[ch.kind].render(payload).decode(), status="pending", attempts=0,
            next_attempt_at=now, deadline_at=now + timedelta(minutes=float(config.delivery_deadline_minutes)),
            created_at=now,
        )
        session.add(row)
        rows.append(row)
    return rows


def request_headers(channel: ChannelSettings, delivery_id: str, event: str, body: bytes, now: datetime) -> dict[str, str]:
    """The headers of one delivery attempt to ``channel`` (signed when it has a secret)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "vlmwatch-alerts",
        "Idempotency-Key": delivery_id,
        "X-Vlmwatch-Delivery": delivery_id,
        "X-Vlmwatch-Event": event,
    }
    secret = os.environ.get(channel.secret_env) if channel.secret_env else None
    if secret:  # the moment of this attempt, so a receiver can refuse a replay of an old one
        headers[SIGNATURE_HEADER] = sign(body, secret, timestamp=int(now.timestamp()))
    return headers


def _retry_after(resp: httpx.Response, now: datetime) -> float | None:
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _backoff(config: AlertsSettings, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    base = min(float(config.backoff_max_seconds), float(config.backoff_initial_seconds) * 2 ** max(0, attempts - 1))
    return base / 2 + rng.uniform(0, base / 2)


def _claim(factory: sessionmaker[Session], now: datetime, lease: timedelta, limit: int) -> list[AlertDelivery]:
    claimed = []
    with factory() as s:
        due = s.scalars(
            select(AlertDelivery)
            .where(or_(AlertDelivery.status == "pending", AlertDelivery.status == "sending"),
                   AlertDelivery.next_attempt_at <= now)
            .order_by(AlertDelivery.next_attempt_at, AlertDelivery.id)
            .limit(limit)
        ).all()
        for row in due:
            res = s.execute(
                update(AlertDelivery)
                .where(AlertDelivery.id == row.id, AlertDelivery.status == row.status,
                       AlertDelivery.attempts == row.attempts)
                .values(status="sending", attempts=row.attempts + 1, next_attempt_at=now + lease)
                .execution_options(synchronize_session=False)
            )
            if res.rowcount == 1:
                if row.status == "sending":
                    log.warning("delivery %s was left sending (crash?); retrying", row.id)
                claimed.append((row.id, row.attempts + 1))
        s.commit()
        return [s.get(AlertDelivery, rid, populate_existing=True) for rid, _ in claimed]


def _finish(factory: sessionmaker[Session], row_id: str, attempts: int, **values: Any) -> None:
    with factory() as s:
        s.execute(
            update(AlertDelivery)
            .where(AlertDelivery.id == row_id, AlertDelivery.status == "sending", AlertDelivery.attempts == attempts)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        s.commit()


def deliver_due(
    session_factory: sessionmaker[Session],
    config: AlertsSettings,
    now: datetime | None = None,
    *,
    client: httpx.Client | None = None,
    rng: random.Random | None = None,
    limit: int = 100,
    clock: Callable[[], datetime] = utcnow,
) -> DeliveryStats:
    """Send every due outbox row once (one attempt each); see the module doc for the policy."""
    now = now or clock()
    started = time.monotonic()  # `now` on the monotonic clock: retries count from each answer's arrival
    rng = rng or random.Random()
    channels = {c.name: c for c in config.channels}
    timeout = max([float(c.timeout_seconds) for c in config.channels] or [10.0])
    lease = timedelta(seconds=timeout + LEASE_MARGIN_SECONDS)
    stats = DeliveryStats()
    own_client = client is None
    http = client or httpx.Client(follow_redirects=False)
    try:
        for row in _claim(session_factory, now, lease, limit):
            stats.claimed += 1
            try:
                _deliver_one(session_factory, config, channels, http, row, now, started, rng, stats, clock)
            except Exception as exc:  # one bad row must not stop the others; it is retried after its lease
                report_internal_error(log, f"alert delivery {row.id}", exc)
    finally:
        if own_client:
            http.close()
    return stats


def _deliver_one(factory: sessionmaker[Session], config: AlertsSettings, channels: dict[str, ChannelSettings],
                 http: httpx.Client, row: AlertDelivery, now: datetime, started: float, rng: random.Random,
                 stats: DeliveryStats, clock: Callable[[], datetime]) -> None:
    ch = channels.get(row.channel)
    if ch is None:
        _finish(factory, row.id, row.attempts, status="gave_up", last_error=f"channel {row.channel!r} is not configured")
        stats.gave_up += 1
        log.error("delivery %s gave up: channel %s is not configured", row.id, row.channel)
        return
    if now >= row.deadline_at:
        _finish(factory, row.id, row.attempts, status="gave_up", last_error=f"deadline passed; {row.last_error}")
        stats.gave_up += 1
        log.error("delivery %s to %s gave up at its deadline: %s", row.id, row.channel, row.last_error)
        return
    body = row.body.encode()
    headers = request_headers(ch, row.id, row.event, body, clock())
    retry_resp = None  # a retryable answer, whose Retry-After counts
    try:
        resp = http.post(channel_url(ch.kind, ch.url), content=body, headers=headers, timeout=float(ch.timeout_seconds))
    except httpx.TransportError as exc:
        error, retryable = f"{type(exc).__name__}: {exc}", True
    else:
        if 200 <= resp.status_code < 300:
            _finish(factory, row.id, row.attempts, status="sent", sent_at=now, last_error=None)
            stats.sent += 1
            log.info("delivered %s %s to %s (attempt %d)", row.event, row.alert_id, row.channel, row.attempts)
            return
        error = f"HTTP {resp.status_code}: {resp.text[:200]}"
        retryable = resp.status_code in RETRYABLE_STATUSES
        retry_resp = resp if retryable else None
    # the wait runs from when this attempt ended, not from the start of the batch: earlier rows'
    # deliveries and this request's own time must not eat into the receiver's Retry-After
    ended = now + timedelta(seconds=time.monotonic() - started)
    retry_after = _retry_after(retry_resp, ended) if retry_resp is not None else None
    delay = _backoff(config, row.attempts, rng)
    if retry_after is not None:
        delay = max(delay, retry_after)
    next_at = ended + timedelta(seconds=delay)
    if not retryable or next_at > row.deadline_at:
        why = "not retryable" if not retryable else "next attempt would pass the deadline"
        _finish(factory, row.id, row.attempts, status="gave_up", last_error=f"{error} ({why})")
        stats.gave_up += 1
        log.error("delivery %s to %s gave up after %d attempt(s): %s (%s)", row.id, row.channel, row.attempts, error, why)
        return
    _finish(factory, row.id, row.attempts, status="pending", next_attempt_at=next_at, last_error=error)
    stats.retried += 1
    log.warning("delivery %s to %s failed (%s); retry in %.1fs", row.id, row.channel, error, delay)
