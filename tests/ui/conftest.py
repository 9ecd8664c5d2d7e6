"""Browser fixtures: Debian's chromium driven by Playwright, one fixture run shared by the module.

Every page a test opens through :class:`Browser` is checked for console errors, uncaught page
errors and failed requests (HTTP >= 400) when the test ends, and screenshotted into the
session's ``ui-shots`` folder (copied to ``$VLMWATCH_UI_SHOTS`` when that is set).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.world import TOKEN, World

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def shots_dir(tmp_path_factory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("ui-shots")
    yield out
    target = os.environ.get("VLMWATCH_UI_SHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        for f in out.glob("*.png"):
            shutil.copy2(f, Path(target) / f.name)


@pytest.fixture(scope="module")
def chromium(chromium_binary) -> Iterator[Any]:
    # module scope: Playwright's sync API keeps an asyncio loop running until it stops, which
    # would break later tests' asyncio.run() in the same session
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_binary, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def ui_world(chromium, tmp_path_factory) -> Iterator[World]:
    """The fixture run (stable phase); ``ui_world.shift()`` adds the shifted phase once."""
    world = World(tmp_path_factory.mktemp("ui-world"))
    try:
        yield world.build()
    finally:
        world.close()


class Browser:
    """A fresh browser context (no cookies) on the world's API, watching every page for errors."""

    def __init__(self, chromium: Any, base: str, shots: Path, test: str) -> None:
        self.context = chromium.new_context(viewport={"width": 1400, "height": 900}, base_url=base)
        self.base, self.shots, self.test = base, shots, test
        self.problems: list[str] = []
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status} for {r.url}")
                     if r.status >= 400 else None)
        self.page.on("requestfailed", self._request_failed)

    def _request_failed(self, request: Any) -> None:
        # Chromium fetches the favicon on its own schedule and cancels it (net::ERR_ABORTED) when the
        # page navigates first, as a form submit does: that is the browser's doing, not the server's.
        # Every other failed request, and a favicon that fails any other way, is a problem.
        if request.url.endswith("/favicon.svg") and request.failure == "net::ERR_ABORTED":
            return
        self.problems.append(f"request failed: {request.url} ({request.failure})")

    def open(self, path: str) -> Any:
        resp = self.page.goto(path)
        assert resp is not None and resp.ok, f"{path}: HTTP {resp.status if resp else '?'}"
        return self.page

    def sign_in(self, token: str = TOKEN) -> None:
        """Answer the login form the browser was sent to."""
        assert "/ui/login" in self.page.url, self.page.url
        self.page.fill("input[name=token]", token)
        self.page.click("form.login button[type=submit]")
        self.page.wait_for_load_state()

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def server_ms(self, path: str) -> float:
        resp = self.context.request.get(path)
        timing = resp.headers.get("server-timing", "")
        return float(timing.partition("dur=")[2] or "nan")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def browser(chromium, ui_world, shots_dir, request) -> Iterator[Browser]:
    b = Browser(chromium, ui_world.api, shots_dir, request.node.name)
    try:
        yield b
    finally:
        b.close()
    assert not b.problems, "the pages reported problems:\n" + "\n".join(b.problems)
