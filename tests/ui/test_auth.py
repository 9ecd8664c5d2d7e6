"""Read protection of the sample pages on a real uvicorn server: token, session cookie, login form."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import insert

from monitor.ui.auth import COOKIE, session_value
from storage.db import session_factory
from storage.models import Image, Sample, utcnow
from tests.api.helpers import serve_api
from tests.daemon.helpers import png

ENV = "VLMWATCH_TEST_API_TOKEN"
TOKEN = "s3cret-ui"


@pytest.fixture
def sample(engine) -> str:
    data = png(3)
    with session_factory(engine)() as s:
        s.execute(insert(Image), [dict(sha256="a" * 64, size=len(data), format="PNG", width=16, height=16, data=data)])
        s.execute(insert(Sample), [dict(id="smp-1", model="m", ts=utcnow(), prompt="secret prompt",
                                        answer="yes", image_sha256="a" * 64)])
        s.commit()
    return "smp-1"


@pytest.fixture
def api(engine, monkeypatch) -> Iterator[httpx.Client]:
    monkeypatch.setenv(ENV, TOKEN)
    yield from serve_api(engine, ENV)


PROTECTED = ("/ui/samples", "/ui/sample/smp-1", "/ui/image/smp-1")


def test_sample_pages_need_the_token(api: httpx.Client, sample: str) -> None:
    for path in PROTECTED:
        r = api.get(path)
        assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"], path
        r = api.get(path, headers={"Accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login?next=%2Fui%2F"), path
        assert api.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = api.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200, path
    assert b"secret prompt" in api.get("/ui/sample/smp-1", headers={"Authorization": f"Bearer {TOKEN}"}).content
    img = api.get("/ui/image/smp-1", headers={"Authorization": f"Bearer {TOKEN}"})
    assert img.headers["content-type"] == "image/png" and img.content == png(3)
    assert "no-store" in img.headers["cache-control"]
    for path in ("/ui/", "/ui/models/m"):  # metrics pages are open, like the other reads
        assert api.get(path).status_code == 200


def test_login_form_sets_a_derived_httponly_strict_cookie(api: httpx.Client, sample: str) -> None:
    r = api.post("/ui/login", data={"token": "wrong", "next": "/ui/samples"})
    assert r.status_code == 303 and "failed=1" in r.headers["location"] and COOKIE not in r.cookies
    r = api.post("/ui/login", data={"token": TOKEN, "next": "https://evil.example/"})
    assert r.status_code == 303 and r.headers["location"] == "/ui/"  # never sends the browser elsewhere
    header = r.headers["set-cookie"]
    assert "HttpOnly" in header and "SameSite=strict" in header and "Path=/ui" in header and TOKEN not in header
    api.cookies.set(COOKIE, r.cookies[COOKIE])
    assert api.get("/ui/sample/smp-1").status_code == 200
    # a forged or expired session is refused
    api.cookies.set(COOKIE, session_value("another-token", int(time.time()) + 60))
    assert api.get("/ui/sample/smp-1").status_code == 401
    api.cookies.set(COOKIE, session_value(TOKEN, int(time.time()) - 1))
    assert api.get("/ui/sample/smp-1").status_code == 401
    # signing out clears it
    api.cookies.set(COOKIE, session_value(TOKEN, int(time.time()) + 60))
    out = api.post("/ui/logout")
    assert out.status_code == 303 and f'{COOKIE}=""' in out.headers["set-cookie"]


def test_only_the_login_routes_skip_the_write_guard(api: httpx.Client) -> None:
    assert api.post("/ui/login", data={"token": TOKEN}).status_code == 303
    assert api.post("/v1/labels", json={"sample_id": "x", "correct": True, "source": "human"}).status_code == 401
    assert api.post("/ui/samples").status_code == 401  # any other POST still needs the bearer token


def test_without_a_token_every_page_is_open(engine, monkeypatch, sample: str) -> None:
    monkeypatch.delenv(ENV, raising=False)
    for c in serve_api(engine, ENV):
        for path in PROTECTED:
            assert c.get(path).status_code == 200, path
        page = c.get("/ui/samples").text
        assert "Sign in" not in page and "secret prompt" in page


def test_pages_allow_nothing_but_this_origin(api: httpx.Client) -> None:
    r = api.get("/ui/")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "style-src 'self'" in csp and "script-src" not in csp
    assert "<script" not in r.text and "http://" not in r.text.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert float(r.headers["server-timing"].partition("dur=")[2]) > 0
