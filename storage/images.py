"""Image references to bytes, and bytes to a validated, content-addressed image.

An image reference is what a samples file or a request carries: a file path (relative to a base
folder), a ``data:`` URL, bare base64, or an http(s) URL (kept as a URL, not fetched here).
Validation opens the bytes with Pillow and ``verify()``s them; every failure is an
:class:`ImageError` whose message says what was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ImageError",
    "ImageInfo",
    "ImageRef",
    "decode_image_ref",
    "inspect_image",
    "url_key",
]

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w.+-]+=[\w.+-]+)*)(?P<b64>;base64)?,", re.I)
_MAX_PATH_LEN = 4096
_MIN_BASE64_LEN = 64  # no real image encodes to less; shorter strings are taken for paths


class ImageError(ValueError):
    """An image reference or image bytes that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A decoded reference: either ``data`` (bytes) or ``url`` (http/https, not fetched)."""

    data: bytes | None = None
    url: str | None = None


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A validated image: its content address and what Pillow saw."""

    sha256: str
    size: int
    format: str | None
    width: int
    height: int


def url_key(url: str) -> str:
    """Key of an image known only by URL (its bytes are not fetched at ingest)."""
    return hashlib.sha256(b"url:" + url.encode("utf-8")).hexdigest()


def _too_big(n: int, max_bytes: int) -> ImageError:
    return ImageError(f"image is {n:,} bytes, over the limit storage.max_image_bytes={max_bytes:,}")


def _b64decode(text: str, max_bytes: int, what: str) -> bytes:
    compact = "".join(text.split())
    estimate = len(compact) * 3 // 4
    if estimate > max_bytes + 2:
        raise _too_big(estimate, max_bytes)
    try:
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError(f"corrupt base64 in {what}: {e}") from None


def decode_image_ref(value: object, base_dir: Path | None = None, max_bytes: int = 20_000_000) -> ImageRef:
    """Turn a path, data URL, bare base64 or http(s) URL into bytes (or a URL). Raises :class:`ImageError`."""
    if not isinstance(value, str):
        raise ImageError(f"image must be a string (path, data URL or base64), got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise ImageError("image is empty")
    if text[:5].lower() == "data:":
        m = _DATA_URL.match(text)
        if not m:
            raise ImageError("malformed data URL (expected data:image/...;base64,...)")
        if not m.group("b64"):
            raise ImageError("data URL is not base64-encoded (expected ;base64,)")
        return ImageRef(data=_b64decode(text[m.end():], max_bytes, "data URL"))
    if text[:7].lower() == "http://" or text[:8].lower() == "https://":
        return ImageRef(url=text)
    if len(text) < _MAX_PATH_LEN:
        path = Path(text)
        try:
            path = path.expanduser()
        except (RuntimeError, ValueError):  # "~name" of no such user, or with a NUL: looked up as given
            pass
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            is_file = path.is_file()
        except (OSError, ValueError):  # a name too long to be a path (long base64), or with a NUL
            is_file = False
        if is_file:
            try:
                size = path.stat().st_size
                if size > max_bytes:
                    raise _too_big(size, max_bytes)
                return ImageRef(data=path.read_bytes())
            except OSError as e:
                raise ImageError(f"cannot read image file {path}: {e.strerror or e}") from None
        # base64 never contains '.', and no image encodes to under _MIN_BASE64_LEN characters
        if "." in text or len(text) < _MIN_BASE64_LEN:
            raise ImageError(f"image file not found: {path}")
    return ImageRef(data=_b64decode(text, max_bytes, "image"))


def inspect_image(data: bytes, max_bytes: int = 20_000_000) -> ImageInfo:
    """Validate ``data`` as an image Pillow can read; returns its sha256, format and size."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise _too_big(len(data), max_bytes)
    if not data:
        raise ImageError("image is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = im.format, im.size
                im.verify()
    except UnidentifiedImageError:
        raise ImageError("not an image (Pillow cannot identify the bytes)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"image rejected as a decompression bomb: {e}") from None
    except Exception as e:  # truncated or corrupt data: Pillow raises many types here
        raise ImageError(f"corrupt image: {e}") from None
    return ImageInfo(
        sha256=hashlib.sha256(data).hexdigest(), size=len(data), format=fmt, width=width, height=height
    )
