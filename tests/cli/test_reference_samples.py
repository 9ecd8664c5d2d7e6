"""`vlmwatch reference set --samples FILE`: refusals that name what is missing (the quickstart test
pins a reference this way against a running daemon)."""

from __future__ import annotations

import json


def test_samples_not_scored_in_time_name_the_daemon(vlmwatch_cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    assert vlmwatch_cli("db", "upgrade", db_url=url).returncode == 0
    res = vlmwatch_cli("synpope", "generate", "--split", "random", "--n", "5", "--out", str(tmp_path / "d"), "--quiet")
    assert res.returncode == 0, res.stderr
    src = tmp_path / "d" / "samples.jsonl"
    lines = [dict(json.loads(x), label=True) for x in src.read_text().splitlines()]
    (tmp_path / "d" / "ref.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    res = vlmwatch_cli("reference", "set", "--model", "tiny-llava", "--samples", str(tmp_path / "d" / "ref.jsonl"),
                       "--wait", "0", db_url=url)
    assert res.returncode == 3, res.stderr
    assert "5 stored" in res.stderr and "5 of 5 reference samples are not scored yet" in res.stderr
    assert "vlmwatch daemon" in res.stderr


def test_window_or_samples_exactly_one(vlmwatch_cli, tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    res = vlmwatch_cli("reference", "set", "--model", "m", db_url=url)
    assert res.returncode == 2 and "exactly one of --window START..END or --samples FILE" in res.stderr
    res = vlmwatch_cli("reference", "set", "--model", "m", "--samples", str(tmp_path / "none.jsonl"), db_url=url)
    assert res.returncode == 2 and "samples file not found" in res.stderr
