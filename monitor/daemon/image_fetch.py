"""Fetching http(s) image URLs for scoring: SSRF-guarded, time- and size-limited, checked with Pillow.

Off the request path: collectors and the API only record an image URL; the score job fetches it
(:mod:`monitor.daemon.sample_images`) when it claims the sample, and the bytes are then stored,
scored and purged like any other image. One fetch:

* refuses anything but http(s), and any host :class:`~monitor.fetch_policy.FetchPolicy`
  refuses (every resolved address is checked); it connects to the address it checked, sending the
  original ``Host`` and TLS server name, so a second DNS answer cannot redirect it;
* follows at most ``image_fetch.max_redirects`` redirects itself, each target checked the same way;
* gives up after ``image_fetch.timeout_seconds`` for the whole exchange (connect, headers, body);
* reads at most ``storage.max_image_bytes`` (``Content-Length`` checked first, then the bytes as
  they arrive; no content decoding, so no decompression bomb) and validates them with Pillow
  (:func:`storage.images.inspect_image`).

Failures are :class:`ImageUnavailable` values with a reason; timeouts, connection errors, 408,
429 and 5xx are ``transient`` (the sample is retried later), the rest are final.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from monitor.config import Settings
from monitor.fetch_policy import FetchPolicy, Refused
from storage.images import ImageError, ImageInfo, inspect_image

__all__ = ["FetchedImage", "ImageFetcher", "ImageUnavailable"]

logger = logging.getLogger(__name__)

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class ImageUnavailable:
    """Why a sample's image cannot be had. ``reason``: refused | http_status | too_large |
    not_an_image | timeout | connection | purged | fetch_disabled."""

    reason: str
    detail: str
    transient: bool = False

    def message(self) -> str:
        return f"image_unavailable: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class FetchedImage:
    data: bytes
    info: ImageInfo


class ImageFetcher:
    """Fetches image URLs under ``policy``. ``transport``: an httpx transport (tests), else the network."""

    def __init__(
        self,
        policy: FetchPolicy,
        *,
        max_bytes: int,
        timeout: float = 10.0,
        max_redirects: int = 3,
        concurrency: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.max_redirects = max_redirects
        self.concurrency = max(1, concurrency)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout), follow_redirects=False, trust_env=False, transport=transport,
            headers={"User-Agent": "vlmwatch-image-fetch", "Accept": "image/*", "Accept-Encoding": "identity"},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageFetcher | None:
        """The fetcher ``settings.image_fetch`` describes, or None when fetching is disabled."""
        cfg = settings.image_fetch
        if not cfg.enabled:
            return None
        return cls(FetchPolicy.from_allow(cfg.allow), max_bytes=settings.storage.max_image_bytes,
                   timeout=cfg.timeout_seconds, max_redirects=cfg.max_redirects, concurrency=cfg.concurrency)

    def close(self) -> None:
        self._client.close()

    def fetch_many(self, urls: Iterable[str]) -> dict[str, FetchedImage | ImageUnavailable]:
        """Fetch distinct ``urls``, ``image_fetch.concurrency`` at a time."""
        todo = list(dict.fromkeys(urls))
        if len(todo) <= 1 or self.concurrency == 1:
            return {u: self.fetch(u) for u in todo}
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(todo)), thread_name_prefix="vlmwatch-fetch") as pool:
            return dict(zip(todo, pool.map(self.fetch, todo)))

    def fetch(self, url: str) -> FetchedImage | ImageUnavailable:
        """The validated image at ``url``, or why not. Never raises for a bad URL or answer."""
        deadline = time.monotonic() + self.timeout
        current = url
        for _ in range(self.max_redirects + 1):
            step = self._get(current, deadline)
            if isinstance(step, str):  # a redirect, already checked to be http(s)
                current = step
                continue
            if isinstance(step, ImageUnavailable):
                logger.info("image %s not fetched: %s", url, step.message())
            return step
        return ImageUnavailable("refused", f"{url}: more than image_fetch.max_redirects={self.max_redirects} redirects")

    def _get(self, url: str, deadline: float) -> FetchedImage | ImageUnavailable | str:
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as e:
            return ImageUnavailable("refused", f"invalid URL {url!r}: {e}")
        if u.scheme not in ("http", "https") or not u.raw_host:
            return ImageUnavailable("refused", f"{url}: only http(s) URLs with a host are fetched")
        host = u.raw_host.decode("ascii")
        try:
            address = self.policy.resolve(host, u.port or (443 if u.scheme == "https" else 80))
        except Refused as e:
            return ImageUnavailable("refused", f"{url}: {e}")
        left = deadline - time.monotonic()
        if left <= 0:
            return ImageUnavailable("timeout", f"{url}: over image_fetch.timeout_seconds={self.timeout}", transient=True)
        ext: dict[str, Any] = {"timeout": {"connect": left, "read": left, "write": left, "pool": left}}
        if u.scheme == "https":
            ext["sni_hostname"] = host  # TLS and its certificate check see the name, not the address
        try:
            with self._client.stream("GET", u.copy_with(host=address), headers={"Host": u.netloc.decode("ascii")},
                                     extensions=ext) as resp:
                if resp.status_code in _REDIRECTS and resp.headers.get("location"):
                    return str(u.join(resp.headers["location"]))
                if resp.status_code != 200:
                    code = resp.status_code
                    return ImageUnavailable("http_status", f"GET {url}: HTTP {code}",
                                            transient=code in _TRANSIENT_STATUSES or code >= 500)
                return self._read(url, resp, deadline)
        except httpx.TimeoutException as e:
            return ImageUnavailable("timeout", f"{url}: {type(e).__name__} after up to {self.timeout} s", transient=True)
        except httpx.HTTPError as e:
            return ImageUnavailable("connection", f"{url}: {type(e).__name__}: {e}", transient=True)

    def _read(self, url: str, resp: httpx.Response, deadline: float) -> FetchedImage | ImageUnavailable:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            return ImageUnavailable("too_large", f"{url}: Content-Length {int(declared):,} over "
                                                 f"storage.max_image_bytes={self.max_bytes:,}")
        buf = bytearray()
        for chunk in resp.iter_raw():
            buf += chunk
            if len(buf) > self.max_bytes:
                return ImageUnavailable("too_large", f"{url}: more than storage.max_image_bytes={self.max_bytes:,} bytes")
            if time.monotonic() > deadline:
                return ImageUnavailable("timeout", f"{url}: body not complete within image_fetch.timeout_seconds="
                                                   f"{self.timeout}", transient=True)
        data = bytes(buf)
        try:
            info = inspect_image(data, self.max_bytes)
        except ImageError as e:
            return ImageUnavailable("not_an_image", f"{url}: {e}")
        return FetchedImage(data, info)
