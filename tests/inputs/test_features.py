"""Input features from bytes and text: what each measures, on inputs whose answer is known."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter

from monitor.inputs.features import (
    EMBEDDING_STORE_DIMS, image_features, pack_embedding, prompt_template, template_id, text_features, unpack_embedding,
)


def _bytes(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _noise_image(w: int = 320, h: int = 200, seed: int = 0) -> Image.Image:
    px = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    return Image.fromarray(px)


@pytest.mark.parametrize("quality", [30, 50, 75, 90])
def test_jpeg_quality_is_read_back_from_the_quantisation_tables(quality: int) -> None:
    f = image_features(_bytes(_noise_image(), "JPEG", quality=quality))
    assert f["format"] == "jpeg" and abs(f["jpeg_quality"] - quality) <= 3


def test_geometry_format_and_pixel_statistics() -> None:
    im = _noise_image(320, 200)
    png = image_features(_bytes(im, "PNG"))
    assert (png["width"], png["height"], png["format"], png["jpeg_quality"]) == (320, 200, "png", None)
    assert png["aspect_ratio"] == pytest.approx(1.6) and png["byte_size"] > 100_000  # noise does not compress
    blurred = image_features(_bytes(im.filter(ImageFilter.GaussianBlur(2)), "PNG"))
    assert blurred["sharpness"] < 0.1 * png["sharpness"]  # blur kills the Laplacian's variance
    grey = image_features(_bytes(Image.new("RGB", (64, 64), (90, 90, 90)), "PNG"))
    assert grey["brightness_mean"] == pytest.approx(90, abs=0.5) and grey["brightness_std"] < 1e-3
    assert grey["colourfulness"] < 1e-3 and png["colourfulness"] > 50  # grey has no colour; noise has lots
    with pytest.raises(ValueError, match="not a readable image"):
        image_features(b"not an image at all")


def test_template_id_masks_objects_numbers_and_quotes_but_not_the_phrasing() -> None:
    assert template_id("Is there a red circle in the image?") == template_id("Is there a dog in the image?")
    assert template_id("Is there a red circle in the image?") != template_id("Does the image contain a red circle?")
    assert prompt_template('How many "blue stars" are there in 3 images?') == "how many <q> are there in <n> images ?"
    f = text_features("Is there a cat in the image?", "yes, a cat", "/v1/chat/completions", {"task": "vqa"})
    assert (f["prompt_tokens"], f["answer_tokens"], f["task"]) == (8, 4, "vqa")
    assert text_features("Hi", "", "/v1/chat/completions", None)["task"] == "/v1/chat/completions"


def test_embedding_is_stored_as_64_float16_values_by_a_fixed_projection() -> None:
    v = np.random.default_rng(0).normal(size=300).astype(np.float32)
    a, b = unpack_embedding(pack_embedding(v)), unpack_embedding(pack_embedding(v.copy()))
    assert a.shape == (EMBEDDING_STORE_DIMS,) and np.array_equal(a, b)
    w = unpack_embedding(pack_embedding(2 * v))
    np.testing.assert_allclose(w, 2 * a, rtol=2e-3, atol=1e-3)  # linear
    with pytest.raises(ValueError, match="not finite"):
        pack_embedding(np.array([1.0, np.nan]))
