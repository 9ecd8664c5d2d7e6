"""Issue 2 acceptance: `vlmwatch ingest` of 10,000 lines with 100 malformed ones, run twice.

The real CLI runs in a subprocess against SQLite and PostgreSQL; counts are read from the database.
"""

from __future__ import annotations

import base64
import json
import random
import re

import pytest
from sqlalchemy import func, select

from storage.models import Image, Label, Sample

N_LINES = 10_000
BAD_KINDS = ["broken_json"] * 25 + ["missing_field"] * 25 + ["corrupt_base64"] * 25 + ["not_an_image"] * 24 + ["too_big"]
EXPECTED_REASON = {
    "broken_json": "invalid JSON",
    "missing_field": "missing field",
    "corrupt_base64": "corrupt base64",
    "not_an_image": "not an image",
    "too_big": "over the limit storage.max_image_bytes",
}


def _write_samples_file(tmp_path, make_png) -> tuple[dict[int, str], int]:
    """The samples file; returns {bad line number: kind} and the number of distinct good images."""
    from PIL import Image as PILImage

    images_dir = tmp_path / "images"
    images_dir.mkdir()
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (250, 250, 0), (0, 200, 200)]
    refs = []
    for k, color in enumerate(colors):
        data = make_png(color, (16 + k, 16))
        (images_dir / f"img{k}.png").write_bytes(data)
        b64 = base64.b64encode(data).decode()
        refs += [f"images/img{k}.png", f"data:image/png;base64,{b64}", b64]  # path, data URL, bare base64
    # a real 50 MB image (uncompressed BMP), over the default 20 MB limit
    PILImage.new("RGB", (4096, 4096), (9, 9, 9)).save(images_dir / "huge.bmp")
    assert (images_dir / "huge.bmp").stat().st_size > 50_000_000

    rng = random.Random(20261125)
    bad_lines = dict(zip(sorted(rng.sample(range(1, N_LINES + 1), len(BAD_KINDS))), rng.sample(BAD_KINDS, len(BAD_KINDS))))
    text = base64.b64encode(b"this is a plain text file, not an image at all. " * 4).decode()
    lines = []
    for n in range(1, N_LINES + 1):
        obj = {
            "id": f"sample-{n:05d}", "ts": f"2026-11-25T{n // 3600 % 24:02d}:{n // 60 % 60:02d}:{n % 60:02d}Z",
            "model": "llava-fixture", "image": refs[n % len(refs)], "prompt": "Is there a dog in the image?",
            "answer": "yes" if n % 3 else "no", "response_id": f"chatcmpl-{n}",
        }
        if n % 4 == 0:
            obj["label"] = n % 8 == 0
        kind = bad_lines.get(n)
        if kind == "missing_field":
            del obj[["id", "ts", "model", "image", "prompt", "answer"][n % 6]]
        elif kind == "corrupt_base64":
            b64 = refs[2]
            obj["image"] = b64[:40] + "*" + b64[41:] if n % 2 else "data:image/png;base64," + b64[:-5]
        elif kind == "not_an_image":
            obj["image"] = text
        elif kind == "too_big":
            obj["image"] = "images/huge.bmp"
        line = json.dumps(obj)
        if kind == "broken_json":
            line = line[: len(line) // 2]
        lines.append(line)
    (tmp_path / "samples.jsonl").write_text("\n".join(lines) + "\n")
    return bad_lines, len(colors)


def _reported(stderr: str) -> dict[int, str]:
    return {int(m.group(1)): m.group(2) for m in re.finditer(r"^line (\d+): (.*)$", stderr, re.M)}


@pytest.mark.slow
def test_ingest_10k_lines_with_100_bad_twice(tmp_path, db_url, engine, make_png, vlmwatch_cli):
    bad_lines, n_images = _write_samples_file(tmp_path, make_png)

    first = vlmwatch_cli("ingest", "samples.jsonl", db_url=db_url)
    assert first.returncode == 1, first.stderr[-2000:]
    reported = _reported(first.stderr)
    assert set(reported) == set(bad_lines)
    for n, kind in bad_lines.items():
        assert EXPECTED_REASON[kind] in reported[n], (n, kind, reported[n])
    assert f"{N_LINES} lines, 9900 samples stored, 0 already present, 100 bad lines skipped" in first.stdout

    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Sample)).scalar_one() == 9900
        assert conn.execute(select(func.count()).select_from(Image)).scalar_one() == n_images
        good_labelled = sum(1 for n in range(4, N_LINES + 1, 4) if n not in bad_lines)
        assert conn.execute(select(func.count()).select_from(Label)).scalar_one() == good_labelled
        stored = set(conn.execute(select(Sample.id)).scalars())
    assert stored == {f"sample-{n:05d}" for n in range(1, N_LINES + 1) if n not in bad_lines}

    second = vlmwatch_cli("ingest", "samples.jsonl", db_url=db_url)
    assert second.returncode == 1
    assert set(_reported(second.stderr)) == set(bad_lines)
    assert "0 samples stored, 9900 already present, 100 bad lines skipped" in second.stdout
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Sample)).scalar_one() == 9900
        assert conn.execute(select(func.count()).select_from(Image)).scalar_one() == n_images
        assert conn.execute(select(func.count()).select_from(Label)).scalar_one() == good_labelled
