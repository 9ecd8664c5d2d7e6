"""Image bytes for claimed samples: what storage holds, else fetched from the sample's URL.

The rule the score job builds on: a sample that shows an image is scored with that image or not
at all. For each image a batch needs, :func:`load_images` gives its bytes or an
:class:`~monitor.daemon.image_fetch.ImageUnavailable`:

* bytes in ``images.data``: used as they are;
* no bytes but a URL (never fetched, or fetched and purged since): fetched now, validated, and
  stored in the same row (``created_at`` restarts, so ``storage.image_ttl_hours`` counts from the
  fetch), to be purged after scoring like any other image;
* no bytes and no URL: the bytes were purged before the sample was scored (``purged``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from monitor import metrics
from monitor.daemon.image_fetch import FetchedImage, ImageFetcher, ImageUnavailable
from storage.models import Image, utcnow

__all__ = ["load_images"]

PURGED = ImageUnavailable("purged", "image bytes were deleted before the sample was scored "
                                    "(storage.image_ttl_hours, or retention)")
DISABLED = ImageUnavailable("fetch_disabled", "the image is an http(s) URL and image_fetch.enabled is false")


def load_images(
    sessions: sessionmaker[Session], shas: Iterable[str], fetcher: ImageFetcher | None
) -> dict[str, bytes | ImageUnavailable]:
    """Bytes (or why not) for each image key in ``shas``; fetches URL images with ``fetcher``."""
    wanted = sorted(set(shas))
    if not wanted:
        return {}
    with sessions() as s:
        rows = s.execute(select(Image.sha256, Image.data, Image.url).where(Image.sha256.in_(wanted))).all()
    out: dict[str, bytes | ImageUnavailable] = {sha: PURGED for sha in wanted}
    urls: dict[str, str] = {}
    for sha, data, url in rows:
        if data is not None:
            out[sha] = data
        elif url:
            urls[sha] = url
    if not urls:
        return out
    if fetcher is None:
        out.update({sha: DISABLED for sha in urls})
        return out
    fetched = fetcher.fetch_many(urls.values())
    got: dict[str, FetchedImage] = {}
    for sha, url in urls.items():
        res = fetched[url]
        metrics.IMAGE_FETCHES.labels("ok" if isinstance(res, FetchedImage) else res.reason).inc()
        if isinstance(res, FetchedImage):
            got[sha] = res
            out[sha] = res.data
        else:
            out[sha] = res
    if got:
        now = utcnow()
        with sessions.begin() as s:
            for sha, img in got.items():
                s.execute(
                    update(Image).where(Image.sha256 == sha)
                    .values(data=img.data, size=img.info.size, format=img.info.format, width=img.info.width,
                            height=img.info.height, purged_at=None, created_at=now)
                    .execution_options(synchronize_session=False)
                )
    return out
