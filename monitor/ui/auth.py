"""Read protection for the dashboard pages that show prompts, answers or images.

When the API token is configured (the variable named by ``api.token_env``), those pages (the
samples browser, a sample, its image) need the token too: reads of samples are not open just
because metrics are. A client sends it as ``Authorization: Bearer <token>``, as for writes; a
browser signs in once on ``/ui/login``, which sets a session cookie:

* the value is ``<expiry unix seconds>.<hex HMAC-SHA256(token, "vlmwatch-ui-session:<expiry>")>``,
  derived from the token and never the token itself, so changing the token signs everyone out,
  and the cookie is worth nothing after ``SESSION_SECONDS``;
* ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it),
  ``Path=/ui``, and ``Secure`` when the request came over HTTPS.

The login form posts the token; :class:`monitor.api.guard.WriteGuard` lets ``LOGIN_PATHS``
through without a bearer header (a form cannot send one) because these routes check the token
themselves and change nothing but the caller's cookie. Without a configured token every page is
open, as writes are (the API then serves loopback only unless told otherwise).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from typing import Callable
from urllib.parse import parse_qs, quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response

__all__ = ["COOKIE", "LOGIN_PATHS", "SESSION_SECONDS", "ReadGuard", "NeedsLogin", "session_value", "safe_next"]

COOKIE = "vlmwatch_ui"
SESSION_SECONDS = 12 * 3600  # a browser session lasts a working day
LOGIN_PATHS = frozenset({"/ui/login", "/ui/logout"})
FAILED_LOGIN_DELAY = 0.5  # seconds, slows down guessing the token through the form


class NeedsLogin(Exception):
    """A protected page was asked for without the token (the app answers with a redirect or 401)."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def session_value(token: str, expires: int) -> str:
    mac = hmac.new(token.encode(), f"vlmwatch-ui-session:{expires}".encode(), hashlib.sha256).hexdigest()
    return f"{expires}.{mac}"


def _valid_session(token: str, value: str | None, now: float) -> bool:
    if not value:
        return False
    stamp, _, _mac = value.partition(".")
    if not stamp.isdigit() or int(stamp) < now:
        return False
    return hmac.compare_digest(value.encode(), session_value(token, int(stamp)).encode())


def safe_next(value: str | None) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if value and value.startswith("/ui") and not value.startswith("//") and "\\" not in value:
        return value
    return "/ui/"


class ReadGuard:
    """Decides whether a request may read the protected pages; ``token()`` as for writes."""

    def __init__(self, token: Callable[[], str | None]) -> None:
        self.token = token

    def required(self) -> bool:
        return self.token() is not None

    def allowed(self, request: Request) -> bool:
        token = self.token()
        if token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True
        return _valid_session(token, request.cookies.get(COOKIE), time.time())

    def check(self, request: Request) -> None:
        """Raise :class:`NeedsLogin` unless the request carries the token or a valid session."""
        if not self.allowed(request):
            path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise NeedsLogin(path)

    async def login(self, request: Request) -> Response:
        """``POST /ui/login`` (form: ``token``, ``next``): set the session cookie, or say no."""
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0]
        nxt = safe_next((form.get("next") or [None])[0])
        token = self.token()
        if token is None:
            return RedirectResponse(nxt, status_code=303)
        if not hmac.compare_digest(given.strip().encode(), token.encode()):
            await asyncio.sleep(FAILED_LOGIN_DELAY)
            return RedirectResponse(f"/ui/login?failed=1&next={quote(nxt)}", status_code=303)
        resp = RedirectResponse(nxt, status_code=303)
        expires = int(time.time()) + SESSION_SECONDS
        resp.set_cookie(COOKIE, session_value(token, expires), max_age=SESSION_SECONDS, path="/ui",
                        httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return resp

    @staticmethod
    def logout() -> Response:
        resp = RedirectResponse("/ui/", status_code=303)
        resp.delete_cookie(COOKIE, path="/ui", httponly=True, samesite="strict")
        return resp
