"""Image references (path, data URL, base64, URL) and Pillow validation, with clear reasons."""

from __future__ import annotations

import base64
import hashlib

import pytest

from storage.images import ImageError, decode_image_ref, inspect_image, url_key


def test_path_relative_to_base_dir_data_url_and_base64_give_the_same_bytes(tmp_path, make_png):
    data = make_png()
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "a.png").write_bytes(data)
    b64 = base64.b64encode(data).decode()
    assert decode_image_ref("imgs/a.png", tmp_path).data == data
    assert decode_image_ref(str(tmp_path / "imgs" / "a.png")).data == data
    assert decode_image_ref(f"data:image/png;base64,{b64}").data == data
    assert decode_image_ref(b64).data == data
    # base64 wrapped over lines still decodes
    assert decode_image_ref("\n".join(b64[i : i + 20] for i in range(0, len(b64), 20))).data == data


def test_http_url_is_kept_not_fetched():
    ref = decode_image_ref("https://cdn.example/cat.jpg")
    assert ref.url == "https://cdn.example/cat.jpg" and ref.data is None
    assert url_key(ref.url) != url_key("https://cdn.example/dog.jpg")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("missing.png", "image file not found"),
        ("", "image is empty"),
        ("data:image/png,abc", "not base64-encoded"),
        ("data:;;;", "malformed data URL"),
        ("data:image/png;base64," + "A" * 63 + "!", "corrupt base64"),
        ("QUJD" * 30 + "Q", "corrupt base64"),
        ("~nosuchuser0/cat.png", "image file not found"),  # found by tests/robustness: was a RuntimeError
        ("~a\x00b/cat.png", "image file not found"),  # found by atheris: was a ValueError (embedded null byte)
        ("cat\x00.png", "image file not found"),
    ],
)
def test_bad_references_say_what_is_wrong(tmp_path, value, reason):
    with pytest.raises(ImageError, match=reason):
        decode_image_ref(value, tmp_path)


def test_non_string_reference_is_refused():
    with pytest.raises(ImageError, match="must be a string"):
        decode_image_ref(123)


def test_size_limit_applies_before_reading_or_decoding(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\0" * 5000)
    with pytest.raises(ImageError, match="over the limit storage.max_image_bytes=4,096"):
        decode_image_ref("big.bin", tmp_path, max_bytes=4096)
    with pytest.raises(ImageError, match="over the limit"):
        decode_image_ref(base64.b64encode(b"\0" * 5000).decode(), tmp_path, max_bytes=4096)


def test_inspect_image_reads_format_size_and_content_address(make_png):
    data = make_png(size=(13, 7))
    info = inspect_image(data)
    assert (info.format, info.width, info.height, info.size) == ("PNG", 13, 7, len(data))
    assert info.sha256 == hashlib.sha256(data).hexdigest()


def test_inspect_image_refuses_non_images_truncated_and_oversized(make_png):
    with pytest.raises(ImageError, match="not an image"):
        inspect_image(b"hello, this is text" * 10)
    with pytest.raises(ImageError, match="image is empty"):
        inspect_image(b"")
    data = make_png(size=(64, 64))
    with pytest.raises(ImageError, match="corrupt image"):
        inspect_image(data[: len(data) - 30])
    with pytest.raises(ImageError, match="over the limit"):
        inspect_image(data, max_bytes=10)
