"""Ingest throughput (samples/s) into SQLite and PostgreSQL, without image bytes.

Runs the production path (:func:`storage.repo_samples.ingest_samples`, one transaction per
batch) into a fresh, migrated database per backend, then re-sends everything (all duplicates).
Writes ``bench/results/ingest.json`` with the machine it ran on. Target: >= 5,000 samples/s.

    .venv/bin/python bench/ingest_throughput.py [--n 50000] [--batch 1000] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_info, scratch_postgres  # noqa: E402
from storage.db import make_engine, session_factory, upgrade  # noqa: E402
from storage.records import SampleRecord  # noqa: E402
from storage.repo_samples import ingest_samples  # noqa: E402

log = logging.getLogger("bench.ingest")

RESULTS = Path(__file__).resolve().parent / "results" / "ingest.json"
TARGET = 5000.0


def records(n: int) -> list[SampleRecord]:
    t0 = datetime(2026, 11, 25, tzinfo=timezone.utc)
    return [
        SampleRecord(
            id=f"bench-{i:08d}", model="llava-fixture", prompt="Is there a dog in the image?",
            answer="yes" if i % 3 else "no", ts=t0 + timedelta(milliseconds=i), response_id=f"chatcmpl-{i:08d}",
            label=(i % 2 == 0) if i % 10 == 0 else None, meta={"split": "adversarial", "object": "dog"},
        )
        for i in range(n)
    ]


def run(url: str, recs: list[SampleRecord], batch: int) -> dict[str, Any]:
    upgrade(url)
    engine = make_engine(url)
    factory = session_factory(engine)
    out: dict[str, Any] = {}
    try:
        with factory() as s:  # one pooled connection serves the whole run (pool size 1 in use)
            server_pid = s.execute(text("SELECT pg_backend_pid()")).scalar() if engine.dialect.name == "postgresql" else None
        for phase in ("new", "duplicates"):
            stored = 0
            server0, cpu0, t0 = _proc_cpu(server_pid), time.process_time(), time.perf_counter()
            for i in range(0, len(recs), batch):
                with factory.begin() as s:
                    stored += len(ingest_samples(s, recs[i : i + batch]).inserted)
            secs, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            server = _proc_cpu(server_pid) - server0 if server_pid else 0.0
            out[phase] = {
                "samples": len(recs), "stored": stored, "seconds": round(secs, 3),
                "samples_per_s": round(len(recs) / secs, 1),
                "client_cpu_seconds": round(cpu, 3), "server_cpu_seconds": round(server, 3) if server_pid else None,
                # load-independent figure: samples per CPU-second spent by client + database server
                "samples_per_cpu_s": round(len(recs) / (cpu + server), 1),
            }
            log.info("%s %s: %.0f samples/s (%.0f per CPU-second)", engine.dialect.name, phase,
                     len(recs) / secs, len(recs) / (cpu + server))
    finally:
        engine.dispose()
    return out


def _proc_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by a local process (the PostgreSQL backend)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--pg-url", default=os.environ.get("VLMWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    import psycopg
    import sqlalchemy

    info = machine_info()
    recs = records(args.n)
    result: dict[str, Any] = {
        "benchmark": "ingest_samples without image bytes, one transaction per batch",
        "note": "samples_per_s is wall clock and depends on how busy the machine is (see load_average); "
                "samples_per_cpu_s counts the CPU time of this process plus the PostgreSQL backend",
        "batch": args.batch, "target_samples_per_s": TARGET, "machine": info,
        "versions": {"sqlalchemy": sqlalchemy.__version__, "psycopg": psycopg.__version__},
        "backends": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["backends"]["sqlite"] = run(f"sqlite:///{tmp}/bench.db", recs, args.batch)
    with scratch_postgres(args.pg_url, "vw_bench") as (url, server):
        result["backends"]["postgresql"] = run(url, recs, args.batch)
        result["versions"]["postgresql_server"] = server
    info["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    try:
        info["cpu_model"] = next(
            line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    result["meets_target"] = all(b["new"]["samples_per_s"] >= TARGET for b in result["backends"].values())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
