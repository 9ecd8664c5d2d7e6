"""The storage commands through the real CLI: schema refusal, db upgrade, status, labels import.

Most cases call ``monitor.cli.main`` in-process (same code, no interpreter start-up on a busy
2-core runner); one case per behaviour that depends on the process (exit code) uses a subprocess.
"""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime, timezone

from dataclasses import dataclass

import pytest
from sqlalchemy import inspect

from storage.db import make_engine, session_factory, upgrade
from storage.models import JobRun


def _samples_file(path, make_png, n=3):
    b64 = base64.b64encode(make_png()).decode()
    lines = [
        {"id": f"s{i}", "ts": "2026-11-25T10:00:00Z", "model": "m", "image": b64, "prompt": "p", "answer": "yes",
         "response_id": f"r{i}"}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    """Run ``vlmwatch`` in-process: ``cli(*args, db_url=...)`` -> Result."""
    from monitor.cli import main

    def run(*args: str, db_url: str, cwd=None) -> Result:
        monkeypatch.setenv("VLMWATCH_STORAGE__URL", db_url)
        monkeypatch.chdir(cwd or tmp_path)
        capsys.readouterr()
        try:
            rc = main(list(args))
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        out, err = capsys.readouterr()
        return Result(rc, out, err)

    return run


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'migrated.db'}"
    upgrade(url)
    return url


@pytest.mark.parametrize(
    "argv", [("status", "--json"), ("ingest", "x.jsonl"), ("labels", "import", "x.jsonl")],
    ids=["status-json", "ingest", "labels"],
)
def test_commands_refuse_an_unmigrated_database(argv, tmp_path, cli):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    (tmp_path / "x.jsonl").write_text('{"sample_id": "s1", "correct": true}\n')
    res = cli(*argv, db_url=url)
    assert res.returncode == 2, res.stderr
    assert "is not migrated: run `vlmwatch db upgrade`" in res.stderr
    eng = make_engine(url)
    try:
        assert inspect(eng).get_table_names() == []  # nothing was created behind the user's back
    finally:
        eng.dispose()


def test_unmigrated_refusal_exit_code_in_a_real_process(empty_db_url, vlmwatch_cli):
    res = vlmwatch_cli("status", db_url=empty_db_url)
    assert res.returncode == 2, res.stderr
    assert "is not migrated: run `vlmwatch db upgrade`" in res.stderr
    assert "Traceback" not in res.stderr


def test_db_upgrade_works_from_any_directory(empty_db_url, tmp_path, cli, vlmwatch_cli):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = cli("db", "current", db_url=empty_db_url, cwd=elsewhere)
    assert res.returncode == 1 and "needs `vlmwatch db upgrade`" in res.stdout
    res = vlmwatch_cli("db", "upgrade", db_url=empty_db_url, cwd=elsewhere)  # the installed script
    assert res.returncode == 0, res.stderr
    assert "migrated: empty -> 0001_initial" in res.stdout
    res = cli("db", "upgrade", db_url=empty_db_url, cwd=elsewhere)
    assert res.returncode == 0 and "up to date" in res.stdout
    assert cli("db", "current", db_url=empty_db_url, cwd=elsewhere).returncode == 0


def _parse_text_status(out: str) -> dict:
    sections: dict = {}
    current = None
    for line in out.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = sections.setdefault(line[:-1], {})
        elif current is not None and (m := re.match(r"^  (\S+)\s+([\d,]+)$", line)):
            current[m.group(1)] = int(m.group(2).replace(",", ""))
        elif current is not None and (m := re.match(r"^  (\S+)\s+(ok|FAILED|running)\s", line)):
            current[m.group(1)] = m.group(2)
    return sections


def test_status_text_and_json_agree(db_url, tmp_path, make_png, cli, vlmwatch_cli):
    assert cli("ingest", str(_samples_file(tmp_path / "s.jsonl", make_png)), db_url=db_url).returncode == 0
    (tmp_path / "l.jsonl").write_text(
        '{"sample_id": "s1", "correct": true}\n{"response_id": "r-later", "correct": false, "source": "ground_truth"}\n'
    )
    assert cli("labels", "import", "l.jsonl", db_url=db_url).returncode == 0
    eng = make_engine(db_url)
    try:
        with session_factory(eng).begin() as s:
            t = datetime(2026, 11, 25, 12, tzinfo=timezone.utc)
            s.add_all([
                JobRun(job="score", worker="w1", started_at=t, finished_at=t, ok=True, processed=3),
                JobRun(job="score", worker="w1", started_at=t.replace(hour=13), ok=False, processed=0, error="boom"),
            ])
    finally:
        eng.dispose()

    as_json = vlmwatch_cli("status", "--json", db_url=db_url)
    as_text = cli("status", db_url=db_url)
    assert as_json.returncode == 0 and as_text.returncode == 0, as_json.stderr + as_text.stderr
    report = json.loads(as_json.stdout)
    assert report["tables"]["samples"] == 3 and report["tables"]["images"] == 1
    assert report["tables"]["labels"] == 2 and report["tables"]["job_runs"] == 2
    assert report["pending"] == {"samples_pending_scoring": 3, "samples_image_unavailable": 0, "deliveries_pending": 0,
                                 "labels_waiting_for_sample": 1}
    assert report["jobs"]["score"]["ok"] is False and report["jobs"]["score"]["error"] == "boom"
    text = _parse_text_status(as_text.stdout)
    assert text["tables"] == report["tables"]
    assert text["pending"] == report["pending"]
    assert report["totals"] == {"labels_expired_unjoined": 0} and text["totals"] == report["totals"]
    assert text["last job runs"] == {"score": "FAILED"}


def test_labels_import_reports_bad_lines(sqlite_url, tmp_path, make_png, cli):
    db_url = sqlite_url
    cli("ingest", str(_samples_file(tmp_path / "s.jsonl", make_png)), db_url=db_url)
    (tmp_path / "l.jsonl").write_text(
        '{"sample_id": "s0", "correct": true}\n'
        "not json\n"
        '{"sample_id": "s1", "correct": "maybe"}\n'
        '{"response_id": "r2", "correct": false, "source": "crowd"}\n'
        '{"sample_id": "ghost", "correct": true}\n'
        "\n"
        '{"correct": true}\n'
    )
    res = cli("labels", "import", "l.jsonl", db_url=db_url)
    assert res.returncode == 1
    reasons = dict(re.findall(r"^line (\d+): (.*)$", res.stderr, re.M))
    assert set(reasons) == {"2", "3", "4", "5", "7"}
    assert "invalid JSON" in reasons["2"] and "'correct'" in reasons["3"] and "crowd" in reasons["4"]
    assert "unknown sample_id" in reasons["5"] and "sample_id" in reasons["7"]
    assert "1 labels stored" in res.stdout and "5 bad lines" in res.stdout


def test_missing_input_file_is_exit_2(sqlite_url, cli):
    res = cli("ingest", "nope.jsonl", db_url=sqlite_url)
    assert res.returncode == 2 and "samples file not found" in res.stderr


def test_ingest_reports_a_record_the_database_refuses_and_stores_the_rest(db_url, tmp_path, make_png, cli):
    from sqlalchemy import select

    from storage.models import Sample
    from tests.storage_refusal import refusing

    path = _samples_file(tmp_path / "s.jsonl", make_png, n=4)
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace('"prompt": "p"', '"prompt": "poison"')
    path.write_text("\n".join(lines) + "\n")
    eng = make_engine(db_url)
    try:
        with refusing(eng, "poison"):
            res = cli("ingest", str(path), db_url=db_url)
        with eng.connect() as c:
            stored = sorted(c.execute(select(Sample.id)).scalars())
    finally:
        eng.dispose()
    assert res.returncode == 1
    assert "line 3: storage refused the record" in res.stderr and "refused by a test trigger" in res.stderr
    assert stored == ["s0", "s1", "s3"]
