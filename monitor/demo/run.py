"""``run_demo``: the end-to-end demo, an orchestrator of real processes on loopback.

1. fixture model present (built if missing), SQLite database migrated, probe active (trained if not);
2. starts the fixture server (the "production VLM"), the daemon with its API, and the proxy;
3. replays SynPOPE traffic through the proxy with the ``openai`` client at a steady rate, posting
   ground-truth labels for a share of the responses after a delay; injects the shift part-way;
4. waits for the pipeline to drain, stops the processes, writes the report and the summary.
"""

from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from monitor.demo.plan import DemoPlan
from monitor.demo.progress import StatusLine, alerts_with_samples, format_summary, read_counts
from monitor.demo.services import Services
from monitor.demo.tasks import format_mix
from monitor.demo.setup import Ports, ensure_fixture, ensure_probe, ingest_reference, pin_reference, write_config
from monitor.demo.traffic import LabelSender, Replayer, TrafficStats
from monitor.demo.webhook import WebhookReceiver

__all__ = ["run_demo", "task_summary", "DRIFT_RULES"]

logger = logging.getLogger(__name__)

DRIFT_RULES = ("probe_disagreement_drift", "probe_calibration_drift")


def _say(msg: str) -> None:
    import sys

    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def _status_text(t0: float, stats: TrafficStats, plan: DemoPlan, c: Any) -> str:
    el = time.monotonic() - t0
    phase = "stable" if stats.sent < plan.shift_at else "SHIFTED"
    return (f"[{int(el // 60):02d}:{int(el % 60):02d}] sent {stats.sent}/{plan.total} ({phase}) | "
            f"stored {c.samples} | scored {c.scored} | spot-checked {c.spot_checked} ({c.spot_checked_k_sample} K-sample) | labels {c.labels} | "
            f"windows {c.windows} | alerts {c.alerts_total} ({c.alerts_firing} firing)")


def task_summary(stats: TrafficStats, by_task: dict[str, Any]) -> dict[str, Any]:
    """Per task: its share of the answered traffic; before and after the shift, the accuracy of
    every answer (the task's judge) and, for captions, CHAIR_s / CHAIR_i, beside the report's
    figures of the probe against the ground-truth labels; its spot checks (K-sample ones apart)."""
    answered = sum(p.get("answered", 0) for t in stats.by_task.values() for p in t.values())
    out: dict[str, Any] = {}
    for task in sorted(stats.by_task):
        periods = stats.by_task[task]
        rep = by_task.get(task, {})
        row: dict[str, Any] = {"share": sum(p["answered"] for p in periods.values()) / max(1, answered)}
        for period in ("before", "after"):
            p = periods.get(period, {})
            n = p.get("answered", 0)
            fig: dict[str, Any] = {"answered": n, "accuracy": p["correct"] / n if n else None}
            if task == "describe":
                fig["chair_s"] = p["hallucinating"] / n if n else None  # captions naming an absent object
                fig["chair_i"] = p["hallucinated"] / p["named"] if p.get("named") else None  # named objects absent
            r = rep.get(period, {})
            fig.update({k: r.get(k) for k in ("labelled", "mean_score", "ece", "auroc", "disagreement",
                                              "spot_checked", "mean_agreement")})
            row[period] = fig
        row["spot_checked"] = rep.get("all", {}).get("spot_checked", 0)
        row["spot_checked_k_sample"] = rep.get("all", {}).get("spot_checked_k_sample", 0)
        out[task] = row
    return out


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_demo(plan: DemoPlan, workdir: str | Path | None = None, summary_json: str | Path | None = None,
             drain_timeout: float = 90.0) -> dict[str, Any]:
    """Run the demo; returns the summary (also printed, and written to ``summary_json``)."""
    from storage.db import make_engine, session_factory, upgrade

    t_start = time.monotonic()
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vlmwatch-demo-"))
    wd.mkdir(parents=True, exist_ok=True)
    wd = wd.resolve()
    url = f"sqlite:///{wd / 'vlmwatch.db'}"
    _say(f"working in {wd}")
    upgrade(url)
    if plan.model_dir:  # served under plan.model: the fixture server names a model by its folder
        import shutil

        model_dir = wd / "served" / plan.model
        if not model_dir.exists():
            shutil.copytree(Path(plan.model_dir).resolve(), model_dir)
    else:
        model_dir = ensure_fixture(plan.model, _say)
    marks: dict[str, float] = {}  # seconds since the start at the end of each stage
    probe = ensure_probe(url, plan.model, model_dir, wd, plan, _say)
    marks["probe"] = time.monotonic() - t_start
    ref_window = ingest_reference(url, plan.model, model_dir, plan, _say)
    marks["reference_answered"] = time.monotonic() - t_start
    ports = Ports()
    hook = WebhookReceiver().start()
    cfg = write_config(wd, url, plan.model, model_dir, ports, plan, webhook_url=hook.url)
    svc = Services(wd, cfg)
    svc.add("vlm-server", [*svc.vlmwatch("fixture", "serve", "--model", str(model_dir), "--port", str(ports.server))],
            f"http://127.0.0.1:{ports.server}/health")
    # the API in its own process: label posts then never wait behind the daemon's scoring (GIL)
    svc.add("daemon", svc.vlmwatch("daemon", "--no-api"), "log: started (")
    svc.add("api", svc.vlmwatch("api"), f"http://127.0.0.1:{ports.api}/healthz")
    svc.add("proxy", svc.vlmwatch("proxy"), f"http://127.0.0.1:{ports.proxy}/metrics")
    stop = threading.Event()
    stats = TrafficStats()
    sessions = session_factory(make_engine(url, password_env=None))
    status = StatusLine()
    interrupted = False
    shift_time: float | None = None
    report_dir = wd / "report"
    prev_term = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is threading.main_thread() else None
    try:
        _say("starting the fixture VLM server, the daemon, the API and the proxy")
        svc.start_all()
        if ref_window is not None:
            from monitor.config import load_config as _load

            pin_reference(url, _load(cfg), plan.model, ref_window, _say)
        labels = LabelSender(f"http://127.0.0.1:{ports.api}", stats, stop)
        labels.start()
        replayer = Replayer(plan, f"http://127.0.0.1:{ports.proxy}/v1", labels, stats, stop)
        _say(f"replaying {plan.total} requests ({format_mix(plan.tasks)}) at {plan.rate:g}/s through the proxy; "
             f"shift at sample {plan.shift_at} ({plan.shift_split} split + noise {plan.shift_noise} + "
             f"co-occurrence seed {plan.shift_cooc_seed}); "
             f"{plan.label_share:.0%} labelled after {plan.label_delay_seconds:g}s")
        traffic = threading.Thread(target=replayer.run, name="demo-traffic", daemon=True)
        t0 = time.monotonic()
        marks["services_started"] = t0 - t_start
        traffic.start()
        while traffic.is_alive():
            traffic.join(1.0)
            if stats.errors >= 20 and stats.ok == 0:
                raise RuntimeError(f"the first {stats.errors} requests all failed; see {wd}/*.log")
            status.show(_status_text(t0, stats, plan, read_counts(sessions)))
        labels.close()
        marks["traffic"] = time.monotonic() - t_start
        # let the pipeline drain: shipped, scored, labels joined, windows and detectors caught up
        deadline = time.monotonic() + drain_timeout
        settled = 0
        while time.monotonic() < deadline:
            c = read_counts(sessions)
            status.show(_status_text(t0, stats, plan, c) + " | draining")
            if c.samples >= stats.ok and c.scored >= c.samples and labels.pending() == 0:
                settled += 1
                if settled >= 6:  # a few calibrate/detect cycles after the last score
                    break
            time.sleep(1.0)
        status.done()
        marks["drained"] = time.monotonic() - t_start
    except KeyboardInterrupt:
        interrupted = True
        status.done()
        _say("interrupted: stopping everything")
    finally:
        stop.set()
        if prev_term is not None:
            signal.signal(signal.SIGTERM, prev_term)
        codes = svc.stop_all()
        hook.stop()
        logger.debug("service exit codes: %s", codes)
    if stats.sent_times and plan.shift_at < len(stats.sent_times) and stats.sent_times[plan.shift_at] > 0:
        shift_time = stats.sent_times[plan.shift_at]
    if interrupted:
        raise KeyboardInterrupt
    _say("writing the calibration drift report")
    from monitor.config import load_config
    from monitor.report import build_report

    settings = load_config(cfg)
    since = f"{int(time.monotonic() - t_start) + 1800}s"  # covers the reference set (stamped 10 min early)
    from monitor.demo.tasks import task_of_prompt

    report = build_report(sessions, settings, since=since, out_dir=report_dir, task_of=task_of_prompt,
                          shift_at=datetime.fromtimestamp(shift_time, timezone.utc) if shift_time else None)
    marks["report"] = time.monotonic() - t_start
    alerts = alerts_with_samples(sessions, stats.sent_times, plan.shift_at, shift_time)
    before = [a for a in alerts if not a["after_shift"]]
    drift_after = [a for a in alerts if a["after_shift"] and a["rule"] in DRIFT_RULES]
    ok = bool(drift_after) and not before
    if ok:
        text = f"drift alert fired {drift_after[0]['delay_samples']} samples after the shift, none before it"
    elif before:
        text = f"{len(before)} alert(s) fired before the shift"
    else:
        text = "no drift alert fired after the shift"
    acc_b = stats.correct_before[0] / max(1, stats.correct_before[1])
    acc_a = stats.correct_after[0] / max(1, stats.correct_after[1])
    summary = {
        "shift_at": plan.shift_at,
        "sent": stats.sent,
        "errors": stats.errors,
        "labels_sent": stats.labels_sent,
        "reference_samples": plan.reference_n,  # labelled reference set, stored before the traffic
        "accuracy_before": acc_b,
        "accuracy_after": acc_a,
        "tasks": task_summary(stats, report.get("by_task") or {}),
        "counts": read_counts(sessions).__dict__,
        "alerts": alerts,
        "webhook_deliveries": [{"rule": d.get("rule"), "state": d.get("state")} for d in hook.received],
        "verdict": {"ok": ok, "text": text},
        "probe": {"version": probe["version"], "trained": probe["trained"]},
        "plan": plan.__dict__,
        "report_dir": str(report_dir),
        "dir": str(wd),
        "elapsed_seconds": round(time.monotonic() - t_start, 1),
        # end of each stage, seconds since the start: probe trained, reference answered, services up
        # and the reference pinned, traffic replayed, pipeline drained, report written
        "stage_seconds": {k: round(v, 1) for k, v in marks.items()},
    }
    print(format_summary(summary), flush=True)
    if summary_json:
        Path(summary_json).write_text(json.dumps(summary, indent=2, default=str))
    return summary
