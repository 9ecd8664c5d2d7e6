"""Write protection for the whole API: bearer token on writes, bounded bodies, exposure check.

:class:`WriteGuard` is ASGI middleware around the app, so every route gets it, including write
routes added later by other modules (``POST /v1/traces``, ...), with nothing to declare:

* any request that is not ``GET``/``HEAD``/``OPTIONS`` needs ``Authorization: Bearer <token>``
  when the environment variable named by ``api.token_env`` is set (401 otherwise), checked
  before a byte of the body is read;
* a path in ``self_checked`` is let through without the header: its route checks the token
  itself (the dashboard's login form, which a browser cannot send a bearer header with, and
  which changes nothing but the caller's cookie);
* every request body is bounded by ``api.max_body_bytes`` (413): a ``Content-Length`` over the
  limit is refused from the header alone, and a chunked body is counted as it streams in and
  refused as soon as it passes the limit, so neither is ever held in memory whole.

:func:`check_exposure` is the start-up rule: open writes (no token) on an ``api.listen`` that is
not loopback refuse to start unless ``api.allow_open_writes`` says so.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from monitor.config import ConfigError, Settings

__all__ = ["WriteGuard", "check_exposure", "is_loopback", "writes_open"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class _BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes the limit (its 413 is already sent)."""


def writes_open(settings: Settings) -> bool:
    """True when no bearer token is configured: anyone who reaches the API may write."""
    return settings.secret(settings.api.token_env) is None


def is_loopback(host: str) -> bool:
    """True when ``host`` (an address or a name) is reachable only from this machine."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addrs = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addrs) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addrs)


def check_exposure(settings: Settings, host: str) -> bool:
    """Refuse (:class:`ConfigError`) open writes on a non-loopback ``host`` unless allowed; returns
    whether writes are open."""
    open_ = writes_open(settings)
    if open_ and not is_loopback(host) and not settings.api.allow_open_writes:
        env = settings.api.token_env
        raise ConfigError(
            f"api.listen {host!r} is not a loopback address and writes are open (${env} is not set): anyone "
            f"who reaches it could write samples and ground-truth labels. Set ${env} to a bearer token, "
            "listen on 127.0.0.1, or set api.allow_open_writes: true to accept open writes"
        )
    return open_


async def _answer(send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": error}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class WriteGuard:
    """ASGI middleware: ``token()`` gives the bearer token writes need (None: open)."""

    def __init__(self, app: Any, *, token: Callable[[], str | None], max_body_bytes: int,
                 self_checked: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.self_checked = self_checked

    def _too_large(self) -> str:
        return f"request body over api.max_body_bytes={self.max_body_bytes:,} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if scope["method"] not in SAFE_METHODS and scope.get("path") not in self.self_checked:
            token = self.token()
            scheme, _, given = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
            if token is not None and not (scheme.lower() == "bearer"
                                          and hmac.compare_digest(given.strip().encode(), token.encode())):
                await _answer(send, 401, "missing or wrong bearer token (api.token_env)",
                              [(b"www-authenticate", b"Bearer")])
                return
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(length) > self.max_body_bytes:
                await _answer(send, 413, self._too_large())
                return
        await self._call_bounded(scope, receive, send)

    async def _call_bounded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        started = False  # the app began its response
        answered = False  # our 413 went out: whatever the app sends after it is dropped

        async def bounded_receive() -> Message:
            nonlocal received, answered
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    if not started and not answered:
                        answered = True
                        await _answer(send, 413, self._too_large())
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if not answered:
                started = started or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, bounded_receive, guarded_send)
        except _BodyTooLarge:
            pass
