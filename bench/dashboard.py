"""Server time of every dashboard page on a database of 1,000,000 samples (SQLite, PostgreSQL).

Builds a migrated database with bulk inserts of realistic rows: two models over 30 days of
traffic on three routes, a score per sample (the newest 1,000 still pending), ground-truth
labels on ~10%, spot checks on ~5% (with their self-consistency labels and answer groups),
hourly calibration windows per evidence source plus accumulated rolling windows, alerts with
their metrics, detector, window and evidence JSON, and image bytes for the newest samples.
Then requests each page through the real app (ASGI, in process) and records the handler's
``Server-Timing`` (query + render), median and max of ``--rounds`` warm requests.
Writes ``bench/results/dashboard.json`` with the machine it ran on.

    .venv/bin/python bench/dashboard.py [--n 1000000] [--rounds 5] [--no-postgres]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_info, scratch_postgres  # noqa: E402

log = logging.getLogger("bench.dashboard")
RESULTS = Path(__file__).resolve().parent / "results" / "dashboard.json"
MODELS = (("llava-prod", 0.7), ("paligemma-prod", 0.3))
ROUTES = ("/v1/chat/completions", "/tasks/captions", "/tasks/counting")
DAYS = 30
CHUNK = 20_000
PENDING = 1_000
KEPT_IMAGES = 500
TOKEN = "bench-token"


def _metrics(rng: np.random.Generator, n: int) -> dict[str, Any]:
    from monitor.calibration.metrics import window_metrics

    s = rng.beta(5, 2, n)
    y = (rng.random(n) < s).astype(float)
    m = window_metrics(s, y, bootstrap=50, rng=rng)
    m["sample_ids_tail"] = [f"x{i}" for i in range(20)]
    return m


def build(url: str, n: int, seed: int = 0) -> dict[str, Any]:
    """Fill a migrated database; returns ids the pages are asked about."""
    from sqlalchemy import insert

    from storage.db import make_engine, upgrade
    from storage.models import Alert, CalibrationWindow, Image, Label, ProbeVersion, Sample, Score, SpotCheck
    from tests.daemon.helpers import png

    upgrade(url)
    engine = make_engine(url)
    rng = np.random.default_rng(seed)
    end = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
    start = end - timedelta(days=DAYS)
    step = (end - start) / n
    t_build = time.perf_counter()
    with engine.begin() as c:
        pvs = {}
        for model, _ in MODELS:
            r = c.execute(insert(ProbeVersion).returning(ProbeVersion.id), [dict(
                model=model, version="v3", path="/probes/" + model, model_fingerprint="f" * 64, layer=14, pooling="answer",
                threshold=0.5, active=True, activated_at=start - timedelta(days=1))])
            pvs[model] = r.scalar_one()
    image_rows = [dict(sha256=f"{i:064x}", size=len(png(i)), format="PNG", width=16, height=16, data=png(i))
                  for i in range(KEPT_IMAGES)]
    with engine.begin() as c:
        c.execute(insert(Image), image_rows)
    names = [m for m, _ in MODELS]
    probs = [p for _, p in MODELS]
    n_labels = n_checks = 0
    for lo in range(0, n, CHUNK):
        idx = np.arange(lo, min(n, lo + CHUNK))
        model_of = rng.choice(len(names), size=idx.size, p=probs)
        p = rng.beta(5, 2, idx.size)
        correct = rng.random(idx.size) < p
        labelled = rng.random(idx.size) < 0.10
        checked = rng.random(idx.size) < 0.05
        agree = np.clip(p + rng.normal(0, 0.2, idx.size), 0, 1)
        samples, scores, labels, checks = [], [], [], []
        for j, i in enumerate(idx):
            sid = f"smp-{i:07d}"
            ts = start + step * int(i)
            pending = i >= n - PENDING
            model = names[model_of[j]]
            samples.append(dict(
                id=sid, response_id=f"chatcmpl-{i:07d}", model=model, route=ROUTES[i % 3], source="proxy", ts=ts,
                received_at=ts, prompt=f"Is there a {('dog', 'cat', 'bicycle', 'person')[i % 4]} in the image? "
                "Answer with one word.", answer="yes" if correct[j] else "no",
                image_sha256=f"{(n - 1 - i):064x}" if n - 1 - i < KEPT_IMAGES else None,
                status="pending" if pending else "scored", spotcheck_status="done" if checked[j] else "skipped",
                meta={"answer_logprobs": [-0.1]}))
            if pending:
                continue
            scores.append(dict(sample_id=sid, probe_version_id=pvs[model], p_correct=float(p[j]), answer_prob=float(p[j]),
                               attn_entropy=3.1, attn_topk_mass=0.3, latency_ms=12.0, created_at=ts))
            if labelled[j]:
                labels.append(dict(sample_id=sid, response_id=f"chatcmpl-{i:07d}", correct=bool(correct[j]),
                                   source="ground_truth", value=None, created_at=ts + timedelta(minutes=30)))
            if checked[j]:
                a = float(agree[j])
                checks.append(dict(sample_id=sid, k=10, one_token=True, agreement=a, entropy=0.4,
                                   majority_answer="yes" if a >= 0.5 else "no",
                                   groups={"yes": a, "no": 1 - a}, inclusion_prob=0.05, reason="uniform",
                                   compute_seconds=0.2, created_at=ts + timedelta(seconds=20)))
                labels.append(dict(sample_id=sid, response_id=None, correct=a >= 0.5, source="self_consistency",
                                   value=a, created_at=ts + timedelta(seconds=20)))
        with engine.begin() as c:
            c.execute(insert(Sample), samples)
            c.execute(insert(Score), scores)
            if checks:
                c.execute(insert(SpotCheck), checks)
            if labels:
                c.execute(insert(Label), labels)
        n_labels += sum(1 for x in labels if x["source"] == "ground_truth")
        n_checks += len(checks)
        if lo % 200_000 == 0:
            log.info("  %d / %d samples", lo + idx.size, n)
    templates = {src: _metrics(rng, 200) for src in ("human", "self_consistency", "combined")}
    windows = []
    for model in names:
        for h in range(DAYS * 24):
            ws = start + timedelta(hours=h)
            for src, m in templates.items():
                windows.append(dict(model=model, probe_version_id=pvs[model], kind="time", source=src, window_start=ws,
                                    window_end=ws + timedelta(hours=1), n=int(m["n"]), partial=False, auroc=m["auroc"],
                                    ece=m["ece_mass"], brier=m["brier"], agreement=m["agreement"],
                                    mean_score=m["mean_score"], metrics=m))
        for k in range(5000):  # rolling rows accumulate, one per calibrate run that moved the window
            ws = start + timedelta(minutes=8 * k)
            for src, m in templates.items():
                windows.append(dict(model=model, probe_version_id=pvs[model], kind="rolling", source=src,
                                    window_start=ws, window_end=ws + timedelta(hours=2), n=500, partial=False,
                                    auroc=m["auroc"], ece=m["ece_mass"], brier=m["brier"], agreement=m["agreement"],
                                    mean_score=m["mean_score"], metrics=m))
    alerts = []
    for k in range(300):
        model = names[k % 2]
        at = start + timedelta(hours=2.4 * k)
        firing = k >= 297
        ids = [f"smp-{int(i):07d}" for i in rng.integers(0, n - PENDING, 20)]
        alerts.append(dict(
            id=uuid.UUID(int=k).hex, fingerprint=f"{k % 6:064x}", rule=("probe_disagreement_drift", "probe_score_shift")[k % 2],
            state="firing" if firing else "resolved", severity="critical", model=model, probe_version="v3",
            window={"source": "human", "kind": "sequential", "from_id": 1, "to_id": 2, "consumed": 400},
            metrics={"statistic": 6.1, "threshold": 5.2, "n_consumed": 4000, "calibration_window": templates["human"]},
            detector={"name": "cusum_disagreement:human", "s": 6.1, "h": 5.2, "p0": 0.12, "p1": 0.19},
            evidence={"sample_ids": ids, "summary": "probe-evidence disagreement 0.21 over 400 samples"},
            started_at=at, resolved_at=None if firing else at + timedelta(hours=1), updated_at=at))
    with engine.begin() as c:
        for i in range(0, len(windows), CHUNK):
            c.execute(insert(CalibrationWindow), windows[i:i + CHUNK])
        c.execute(insert(Alert), alerts)
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.exec_driver_sql("VACUUM ANALYZE")
    else:
        with engine.begin() as c:
            c.exec_driver_sql("ANALYZE")
    engine.dispose()
    return {"samples": n, "labels": n_labels, "spot_checks": n_checks, "calibration_windows": len(windows),
            "alerts": len(alerts), "kept_images": KEPT_IMAGES, "pending": PENDING,
            "firing_alert": alerts[-1]["id"], "build_seconds": round(time.perf_counter() - t_build, 1),
            "middle": f"smp-{n // 2:07d}", "middle_ts": (start + step * (n // 2)).isoformat(),
            "newest_with_image": f"smp-{n - 1:07d}"}


def pages(info: dict[str, Any]) -> dict[str, str]:
    from urllib.parse import urlencode

    m = "llava-prod"
    return {
        "overview": "/ui/",
        "model": f"/ui/models/{m}",
        "alert": f"/ui/alerts/{info['firing_alert']}",
        "samples": f"/ui/samples?model={m}",
        "samples_disagree": f"/ui/samples?model={m}&label=disagree",
        "samples_spotcheck_inconsistent": f"/ui/samples?model={m}&spotcheck=inconsistent",
        "samples_score_range": f"/ui/samples?model={m}&score_min=0.2&score_max=0.3",
        "samples_deep_page": "/ui/samples?" + urlencode({"model": m, "before_ts": info["middle_ts"],
                                                          "before_id": info["middle"]}),
        "sample": f"/ui/sample/{info['newest_with_image']}",
        "image": f"/ui/image/{info['newest_with_image']}",
    }


def measure(url: str, info: dict[str, Any], rounds: int) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from monitor.api import create_app
    from monitor.config import Settings

    os.environ["VLMWATCH_BENCH_TOKEN"] = TOKEN
    settings = Settings(storage={"url": url}, api={"token_env": "VLMWATCH_BENCH_TOKEN"})
    out: dict[str, Any] = {}
    with TestClient(create_app(settings)) as c:
        headers = {"Authorization": f"Bearer {TOKEN}"}
        for name, path in pages(info).items():
            server, wall, cpu = [], [], []
            for r in range(rounds + 1):
                c0, t0 = time.process_time(), time.perf_counter()
                resp = c.get(path, headers=headers)
                took = (time.perf_counter() - t0) * 1000
                cpu_ms = (time.process_time() - c0) * 1000
                assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
                if r == 0:
                    continue  # the first request of a page pays imports and cold caches
                wall.append(took)
                cpu.append(cpu_ms)
                timing = resp.headers.get("server-timing")
                server.append(float(timing.partition("dur=")[2]) if timing else took)
            out[name] = {"path": path, "server_ms_median": round(statistics.median(server), 1),
                         "server_ms_max": round(max(server), 1), "wall_ms_median": round(statistics.median(wall), 1),
                         "process_cpu_ms_median": round(statistics.median(cpu), 1),
                         "bytes": len(resp.content)}
            log.info("  %-32s %8.1f ms (max %.1f)", name, out[name]["server_ms_median"], out[name]["server_ms_max"])
    slowest = max(out, key=lambda k: out[k]["server_ms_median"])
    return {"pages": out, "slowest_page": slowest, "slowest_server_ms_median": out[slowest]["server_ms_median"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--pg-url", default=os.environ.get("VLMWATCH_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("storage.db").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result: dict[str, Any] = {"benchmark": "dashboard page server time (Server-Timing: queries + rendering), warm",
                              "note": "median of the rounds after one warm-up request per page; samples pages scan at "
                                      "most monitor.ui.sample_queries.SCAN_ROWS rows each. server_ms is wall time and "
                                      "grows with the machine's load (see machine.load_average_*); process_cpu_ms is "
                                      "this process's CPU time per request (SQLite work included, PostgreSQL's "
                                      "server process not)",
                              "rounds": args.rounds, "machine": machine_info(), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/dashboard.db"
        log.info("sqlite: building %d samples", args.n)
        info = build(url, args.n)
        log.info("sqlite: built in %.0f s; measuring", info["build_seconds"])
        result["backends"]["sqlite"] = {"data": info, **measure(url, info, args.rounds)}
    if not args.no_postgres:
        with scratch_postgres(args.pg_url, "vw_bench_ui") as (url, server):
            log.info("postgresql: building %d samples", args.n)
            info = build(url, args.n)
            log.info("postgresql: built in %.0f s; measuring", info["build_seconds"])
            result["backends"]["postgresql"] = {"data": info, "server_version": server, **measure(url, info, args.rounds)}
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
