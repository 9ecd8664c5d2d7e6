"""Helpers for the storage tests: real PNG bytes made with Pillow."""

from __future__ import annotations

import io

import pytest


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (12, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def make_png():
    """``make_png(color, size) -> bytes`` of a real PNG."""
    return png
