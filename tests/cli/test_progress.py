"""Long commands show progress one way: a bar with rate and time left on a terminal, a line per
stage otherwise, nothing with --quiet or --json."""

from __future__ import annotations

import io
import json

from monitor.progress import progress, track


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_a_bar_with_rate_and_time_left():
    out = _Terminal()
    with progress(50, "encoding", "sample", stream=out, mininterval=0) as bar:
        for _ in range(50):
            bar.update(1)
    text = out.getvalue()
    assert "encoding" in text and "50/50" in text
    assert "sample/s" in text  # rate
    assert "<00:00" in text  # elapsed<time left, tqdm's layout


def test_not_a_terminal_gets_one_line_per_stage():
    out = io.StringIO()
    assert list(track(range(7), desc="layer sweep", unit="layer", stream=out)) == list(range(7))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("layer sweep: 7 layer in ") and "layer/s" in lines[0]


def test_an_unfinished_stage_says_how_far_it_got():
    out = io.StringIO()
    bar = progress(10, "ingest x.jsonl", "B", stream=out)
    bar.update(4)
    bar.close()
    bar.close()  # closing twice writes once
    assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("ingest x.jsonl: 4/10 B in ")


def test_disabled_writes_nothing():
    out = _Terminal()
    assert list(track([1, 2], desc="x", enabled=False, stream=out)) == [1, 2]
    assert out.getvalue() == ""


def test_synpope_generate_prints_a_stage_line_and_is_quiet_with_quiet(vlmwatch_cli, tmp_path):
    res = vlmwatch_cli("synpope", "generate", "--split", "random", "--n", "12", "--out", str(tmp_path / "a"))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["n"] == 12  # stdout stays the one JSON line
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("synpope random: 12 sample in ")], res.stderr
    quiet = vlmwatch_cli("synpope", "generate", "--split", "random", "--n", "12", "--out", str(tmp_path / "b"),
                         "--quiet")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_fixture_eval_shows_progress_but_not_with_json(vlmwatch_cli):
    plain = vlmwatch_cli("fixture", "eval", "--n", "4", "--fixture", "tiny-llava")
    assert plain.returncode == 0, plain.stderr
    assert "eval tiny-llava: 12 question in " in plain.stderr
    js = vlmwatch_cli("fixture", "eval", "--n", "4", "--fixture", "tiny-llava", "--json")
    assert js.returncode == 0, js.stderr
    assert "question" not in js.stderr
    assert set(json.loads(js.stdout)["tiny-llava"]) >= {"random", "popular", "adversarial"}


def test_ingest_of_a_large_file_shows_progress_and_not_with_quiet(vlmwatch_cli, tmp_path):
    import base64

    import numpy as np
    from PIL import Image

    from monitor.commands.ingest import PROGRESS_BYTES

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (400, 400, 3), dtype=np.uint8)).save(buf, "PNG")
    image = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    big = tmp_path / "big.jsonl"
    with big.open("w") as f:
        for i in range(3):
            f.write(json.dumps({"id": f"b{i}", "ts": "2026-11-25T10:00:00Z", "model": "m", "image": image,
                                "prompt": "Is there a dog?", "answer": "no"}) + "\n")
    assert big.stat().st_size >= PROGRESS_BYTES
    url = f"sqlite:///{tmp_path / 'i.db'}"
    assert vlmwatch_cli("db", "upgrade", db_url=url).returncode == 0
    res = vlmwatch_cli("ingest", str(big), db_url=url)
    assert res.returncode == 0, res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("ingest big.jsonl: ") and " B in " in ln], res.stderr
    assert "3 samples stored" in res.stdout
    quiet = vlmwatch_cli("ingest", str(big), "--quiet", db_url=url)
    assert quiet.returncode == 0 and quiet.stderr == "" and "3 already present" in quiet.stdout
