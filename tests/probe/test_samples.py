"""``read_samples``: the probe reads a samples file with the same line parser as ``vlmwatch ingest``."""

from __future__ import annotations

import json

import pytest

from monitor.probe.samples import read_samples


def test_a_synpope_file_gives_truth_meta_and_image_groups(tmp_path):
    from monitor.synpope.generate import SAMPLES_FILE, generate

    records = generate("random", 4, seed=1, out=tmp_path)
    samples = read_samples(tmp_path / SAMPLES_FILE, limit=3)
    assert [s.id for s in samples] == [r["id"] for r in records[:3]]
    assert all(s.truth == r["truth"] and s.answer == r["answer"] for s, r in zip(samples, records))
    assert samples[0].meta["task"] == "yesno" and "truth" not in samples[0].meta
    assert all(s.image and len(s.group) == 64 for s in samples)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"label": "maybe"}, "field 'label'"),
        ({"ts": None}, "field 'ts'"),
        ({"image": "https://example.com/x.png"}, "image URLs are not fetched"),
        ({"truth": 1}, "'truth' must be a string"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path, change, reason):
    from monitor.synpope.generate import generate

    good = generate("random", 1, seed=1, out=tmp_path)[0]
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps({**good, **change}) + "\n")
    with pytest.raises(ValueError, match=f"bad.jsonl:3: .*{reason}"):
        read_samples(path)
