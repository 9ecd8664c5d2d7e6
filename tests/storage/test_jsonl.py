"""The samples-file and labels-file line formats."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone

import pytest

from storage.jsonl import LineError, iter_lines, parse_label_line, parse_sample_line


def line(**kw) -> str:
    base = {"id": "s1", "ts": "2026-11-25T10:00:00+02:00", "model": "m", "image": "img.png", "prompt": "p", "answer": "a"}
    return json.dumps({**base, **kw})


def test_sample_line_to_record(tmp_path, make_png):
    data = make_png()
    (tmp_path / "img.png").write_bytes(data)
    rec = parse_sample_line(
        line(id=7, label=False, response_id="chatcmpl-1", truth="no", meta={"split": "popular"}), tmp_path, 10**6
    )
    assert rec.id == "7" and rec.image == data and rec.label is False and rec.response_id == "chatcmpl-1"
    assert rec.ts == datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)
    assert rec.meta == {"truth": "no", "split": "popular"}  # unknown keys are kept in meta
    assert rec.source == "ingest" and rec.route == "/v1/chat/completions"
    naive = parse_sample_line(line(ts="2026-11-25T10:00:00"), tmp_path, 10**6)
    assert naive.ts.tzinfo is not None and naive.ts.hour == 10
    url = parse_sample_line(line(image="https://x/y.jpg"), tmp_path, 10**6)
    assert url.image is None and url.image_url == "https://x/y.jpg"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (line(label="yes"), "field 'label'"),
        (line(ts="yesterday"), "field 'ts'"),
        (json.dumps({"id": "s1"}), "missing field 'ts'; missing field 'model'"),
        (line(model=""), "field 'model'"),
        (line(image="nope.png"), "image file not found"),
        (line(meta=[1]), "field 'meta'"),
    ],
)
def test_bad_sample_lines_say_why(tmp_path, text, reason):
    with pytest.raises(LineError, match=reason):
        parse_sample_line(text, tmp_path, 10**6)


def test_oversized_images_are_refused_with_the_limit_named(tmp_path):
    # far over: the line itself is refused before JSON parsing
    huge = line(image="A" * 1_100_000)
    with pytest.raises(LineError, match=r"line is 1,10\d,\d{3} characters.*storage.max_image_bytes=1,000"):
        parse_sample_line(huge, tmp_path, 1000)
    # a little over: refused from the base64 length, before decoding
    big = line(image=base64.b64encode(b"\0" * 3000).decode())
    with pytest.raises(LineError, match=r"image is .* bytes, over the limit storage.max_image_bytes=1,000"):
        parse_sample_line(big, tmp_path, 1000)


def test_label_lines():
    rec = parse_label_line('{"response_id": "chatcmpl-1", "correct": false, "source": "ground_truth"}')
    assert (rec.response_id, rec.sample_id, rec.correct, rec.source) == ("chatcmpl-1", None, False, "ground_truth")
    assert parse_label_line('{"sample_id": 5, "correct": true}').sample_id == "5"
    assert parse_label_line('{"sample_id": "s", "correct": true}').source == "human"
    for bad, reason in [
        ('{"correct": true}', "sample_id"),
        ('{"sample_id": "s", "correct": 1}', "correct"),
        ('{"sample_id": "s", "correct": true, "colour": "red"}', "unknown field 'colour'"),
    ]:
        with pytest.raises(LineError, match=reason):
            parse_label_line(bad)


def test_iter_lines_skips_blank_lines_and_keeps_numbers(tmp_path):
    p = tmp_path / "f.jsonl"
    p.write_bytes(b'{"a": 1}\n\n   \n{"b": 2}\n\xff\xfe\n')
    got = list(iter_lines(p))
    assert [n for n, _ in got] == [1, 4, 5]
    with pytest.raises(LineError, match="invalid JSON"):
        parse_label_line(got[2][1])
