"""Input-drift benchmark: false alarms on stationary SynPOPE traffic, detection delay under shifts.

What runs: the real :class:`monitor.daemon.Daemon` in this process (scheduler, score job with the
real probe scorer on the tiny-LLaVA fixture, the ``inputs`` job, the alert rules), on a fresh
SQLite database per stream. Traffic is SynPOPE (``monitor.synpope``): each request's served answer
is the fixture model's greedy answer, a deterministic ``LABEL_SHARE`` of them carry a ground-truth
label, and the records are ingested into storage directly (not through the proxy: on the shared
2-core machine, 21,000 requests through proxy + fixture server would not fit; the daemon's side,
which is what is measured, is the same). The calibrate / detect / spot-check / report / retention
jobs are replaced by no-ops, so the CPU goes to scoring and the input-drift job.

Streams (requests in request-time order; the first ``REFERENCE_N`` are the reference):

* ``stationary`` — 3 seeds x 3,000 requests, no change: ``summary.stationary.alerts`` counts
  ``input_drift`` alerts over all three (target 0), and the windows tested. Then, per seed,
  ``--horizons`` simulated stationary horizons (:mod:`monitor.inputs.horizon`): ``detect.horizon``
  requests of tumbling windows resampled from the seed's 2,000 held-out requests (after its
  reference), tested by the production ``test_window`` with the daemon's fitted thresholds and
  alarmed after ``inputs.confirm_windows`` drifted windows in a row:
  ``summary.stationary.false_alarm_rate`` (share of horizons with an alarm, Wilson 95% CI) against
  ``detect.target_false_alarm_rate``.
* shifts — 3,000 requests with the change at request ``CHANGE_AT`` (in the middle of a window, so
  the first changed window is half changed): ``delay_requests`` = last request of the window at which
  the alert fires (``inputs.confirm_windows`` drifted windows in a row) minus the change point + 1
  (null when missed); ``first_drifted_window_delay_requests`` the same for the first drifted window;
  a drifted window before the change counts as a false alarm. SynPOPE knobs: ``pixel_noise`` (noise), ``blur``,
  ``colour_jitter`` (SynPOPE has no colour-jitter knob: ``background=random``, a random colour per
  image, stands in), ``prompt_template`` (``template=contain``). ``agreement`` compares the probe's
  agreement with the labels before and after the change (Wilson 95% CIs; ``moved`` = the CIs are
  disjoint).

Thresholds are the daemon's own (``monitor.inputs.drift.fit_reference``: permutation on the
reference, to ``detect.target_false_alarm_rate`` over ``detect.horizon`` requests).

Run: ``nice .venv/bin/python bench/input_drift.py [--quick]`` -> ``bench/results/input_drift.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine_info  # noqa: E402

log = logging.getLogger("bench.input_drift")

MODEL = "tiny-llava"
N, REFERENCE_N, WINDOW, CHANGE_AT = 3000, 1000, 200, 2100
STATIONARY_SEEDS = (0, 1, 2)
LABEL_SHARE = 0.3
SPLIT = "adversarial"
T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
TARGET_DELAY = 300


def _shifts() -> dict[str, Any]:
    from monitor.synpope.shift import Shift

    return {"pixel_noise": Shift(noise=0.08), "blur": Shift(blur=1.5), "colour_jitter": Shift(background="random"),
            "prompt_template": Shift(template="contain")}


def _labelled(i: int, seed: int) -> bool:
    return int(hashlib.sha256(f"{seed}:{i}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < LABEL_SHARE


def _records(adapter: Any, n: int, seed: int, change_at: int | None, shift: Any) -> list[Any]:
    """SynPOPE requests with the fixture model's greedy answers; after ``change_at`` drawn with ``shift``."""
    from monitor.probe.greedy import greedy_answers
    from monitor.synpope.generate import iter_examples
    from monitor.synpope.judges import judge
    from storage.records import SampleRecord

    base = list(iter_examples(SPLIT, n, seed))
    if change_at is not None:  # same scenes and questions, shifted rendering/phrasing (pair by pair)
        shifted = list(iter_examples(SPLIT, n, seed, shift))
        base = base[:change_at] + shifted[change_at:]
    answers = greedy_answers(adapter, [adapter.encode(ex.image, ex.prompt) for ex in base], batch_size=32)
    out = []
    for i, (ex, ans) in enumerate(zip(base, answers)):
        buf = io.BytesIO()
        ex.image.save(buf, format="PNG")
        out.append(SampleRecord(id=f"q{seed}-{i:05d}", model=MODEL, prompt=ex.prompt, answer=ans.strip(),
                                ts=T0 + timedelta(seconds=i), image=buf.getvalue(), response_id=f"r{seed}-{i:05d}",
                                label=judge(ex.meta["task"], ans, ex.truth).correct if _labelled(i, seed) else None))
    return out


def _wilson(k: int, n: int) -> list[float] | None:
    from monitor.calibration.metrics import wilson_interval

    return list(wilson_interval(k, n)) if n else None


def _agreement(session: Any, start: int, end: int) -> dict[str, Any]:
    from sqlalchemy import select

    from storage.models import Label, ProbeVersion, Sample, Score

    thr = session.scalar(select(ProbeVersion.threshold).where(ProbeVersion.active.is_(True)))
    rows = session.execute(select(Sample.ts, Score.p_correct, Label.correct).join(Score, Score.sample_id == Sample.id)
                           .join(Label, Label.sample_id == Sample.id)).all()
    agree = [(p >= thr) == bool(c) for ts, p, c in rows if start <= int((ts - T0).total_seconds()) < end]
    k = sum(agree)
    return {"n": len(agree), "agreement": k / len(agree) if agree else None, "ci": _wilson(k, len(agree))}


def _run_stream(name: str, records: list[Any], artifact: Any, model_dir: Path, settings_extra: dict[str, Any],
                change_at: int | None, horizons: int = 0) -> dict[str, Any]:
    """One stream through the daemon; a stationary one (``change_at`` None) then simulates ``horizons``
    horizons from its held-out requests (``_horizons``: the :class:`HorizonSimulation`)."""
    import numpy as np
    from sqlalchemy import select

    from monitor.config import Settings
    from monitor.daemon import Daemon
    from monitor.daemon.runner import JobResult
    from monitor.inputs.horizon import simulate_horizons
    from monitor.inputs.job import reference_tables
    from monitor.probe.registry import register_probe
    from storage.db import make_engine, session_factory, upgrade
    from storage.models import Alert, InputReference
    from storage.repo_samples import ingest_samples

    reference_n, window = settings_extra["reference_n"], settings_extra["window"]
    expected_windows = (len(records) - reference_n) // window
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        upgrade(url)
        engine = make_engine(url)
        sessions = session_factory(engine)
        with sessions.begin() as s:
            register_probe(s, MODEL, artifact, activate=True)
        with sessions.begin() as s:
            ingest_samples(s, records, label_source="ground_truth")
        settings = Settings(storage={"url": url}, models={MODEL: {"path": str(model_dir)}},
                            scoring={"batch_size": 32, "device": "cpu", "dtype": "float32"},
                            inputs=settings_extra,
                            daemon={"score_interval_seconds": 0.2, "inputs_interval_seconds": 1.0, "start_api": False,
                                    "job_time_budget_seconds": 120, "shutdown_timeout_seconds": 30})
        noop = lambda ctx: JobResult()  # noqa: E731
        d = Daemon(settings, engine=engine, jobs={j: noop for j in ("calibrate", "detect", "spotcheck", "report", "retention")})
        t0 = time.perf_counter()
        d.start()
        try:
            while True:
                with sessions() as s:
                    ref = s.scalars(select(InputReference).where(InputReference.active.is_(True))).first()
                    done = ref is not None and len((ref.state or {}).get("windows") or []) >= expected_windows
                if done:
                    break
                if time.perf_counter() - t0 > 1800:
                    raise RuntimeError(f"{name}: windows not all tested after 30 min")
                time.sleep(1.0)
        finally:
            d.stop()
        seconds = time.perf_counter() - t0
        with sessions() as s:
            ref = s.scalars(select(InputReference).where(InputReference.active.is_(True))).one()
            alerts = list(s.scalars(select(Alert).where(Alert.rule == "input_drift")))
            windows = ref.state["windows"]
            out: dict[str, Any] = {
                "requests": len(records), "seconds": round(seconds, 1), "windows_tested": len(windows),
                "reference": {"n": ref.n, "p_threshold": ref.stats["p_threshold"],
                              "effective_tests": ref.stats["effective_tests"],
                              "per_window_false_alarm_budget": ref.stats["per_window_rate"],
                              "mmd2_threshold": (ref.stats.get("embedding") or {}).get("mmd2_threshold")},
                "input_drift_alerts": len(alerts),
                "windows": [{"first_request": int((datetime.fromisoformat(w["start"]) - T0).total_seconds()),
                             "last_request": int((datetime.fromisoformat(w["end"]) - T0).total_seconds()),
                             "drift": w["drift"], "moved": w["moved"], "min_p": w["min_p"], "mmd2": w["mmd2"]}
                            for w in windows],
                "alert_summaries": [a.evidence.get("summary") for a in alerts],
            }
            if change_at is None and horizons:
                t1 = time.perf_counter()
                ref_table, pool = reference_tables(s, ref)
                sim = simulate_horizons(ref_table, pool, ref.stats, horizons=horizons,
                                        confirm=settings.inputs.confirm_windows, rng=np.random.default_rng(len(pool)))
                out["horizon_simulation"] = {**sim.summary(settings.detect.target_false_alarm_rate),
                                             "pool_requests": len(pool), "seconds": round(time.perf_counter() - t1, 1)}
                out["_horizons"] = sim
            if change_at is not None:
                out["agreement_before"] = _agreement(s, reference_n, change_at)
                out["agreement_after"] = _agreement(s, change_at, len(records))
        engine.dispose()
    return out


def _delay(run: dict[str, Any], change_at: int, confirm: int) -> tuple[int | None, int | None, int]:
    """(alert delay: the window where ``confirm`` drifted windows in a row end, first drifted window's
    delay, drifted windows before the change)."""
    ws = run["windows"]
    early = sum(1 for w in ws if w["drift"] and w["last_request"] < change_at)
    first = next((w["last_request"] - change_at + 1 for w in ws if w["drift"] and w["last_request"] >= change_at), None)
    for i, w in enumerate(ws):
        if w["last_request"] >= change_at and i + 1 >= confirm and all(x["drift"] for x in ws[i + 1 - confirm:i + 1]):
            return w["last_request"] - change_at + 1, first, early
    return None, first, early


def _train_probe(adapter: Any, model_dir: Path, work: Path, n: int) -> Any:
    from monitor.probe.train import TrainOptions, train_probe
    from monitor.synpope import generate

    generate("random", n, seed=101, out=work / "probe-data", model=MODEL)
    return train_probe(model_dir, work / "probe-data" / "samples.jsonl", work / "probe",
                       TrainOptions(progress=False, seed=0, bootstrap=200), adapter=adapter)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="short streams (smoke run; not the recorded figures)")
    ap.add_argument("--horizons", type=int, default=40, help="simulated stationary horizons per stationary seed")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "input_drift.json"))
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("monitor").setLevel(logging.WARNING)
    import torch

    torch.set_num_threads(1)
    from monitor.adapter.shared import shared_vlm
    from monitor.config import Settings
    from monitor.fixtures.registry import fixture_dir

    n, reference_n, window, change_at = (N, REFERENCE_N, WINDOW, CHANGE_AT) if not a.quick else (600, 200, 50, 425)
    seeds = STATIONARY_SEEDS if not a.quick else (0,)
    extra = {"reference_n": reference_n, "window": window}
    defaults = Settings()
    info: dict[str, Any] = {"benchmark": "input_drift", "machine": machine_info(), "quick": a.quick,
                            "setup": {"requests_per_stream": n, "reference_n": reference_n, "window": window,
                                      "change_at": change_at, "label_share": LABEL_SHARE, "split": SPLIT,
                                      "simulations": defaults.inputs.simulations,
                                      "confirm_windows": defaults.inputs.confirm_windows,
                                      "target_false_alarm_rate": defaults.detect.target_false_alarm_rate,
                                      "horizon_requests": defaults.detect.horizon,
                                      "path": "in-process real Daemon (scheduler, score job with the real probe scorer "
                                              "on tiny-llava, inputs job, alert rules); records ingested into "
                                              "storage directly, not through the proxy; calibrate/detect/spotcheck/"
                                              "report/retention jobs stubbed"}}
    model_dir = fixture_dir(MODEL)
    adapter = shared_vlm(model_dir, device="cpu", dtype="float32")
    with tempfile.TemporaryDirectory() as work:
        t = time.perf_counter()
        artifact = _train_probe(adapter, model_dir, Path(work), 300 if a.quick else 800)
        info["probe"] = {"version": artifact.meta.version, "layer": artifact.meta.layer, "pooling": artifact.meta.pooling,
                         "train_seconds": round(time.perf_counter() - t, 1)}
        stationary = {}
        for seed in seeds:
            log.info("stationary seed %d", seed)
            stationary[f"seed_{seed}"] = _run_stream(f"stationary-{seed}", _records(adapter, n, seed, None, None),
                                                     artifact, model_dir, extra, None, a.horizons if not a.quick else 1)
        shifts = {}
        for name, shift in _shifts().items():
            log.info("shift %s", name)
            run = _run_stream(name, _records(adapter, n, 7, change_at, shift), artifact, model_dir, extra, change_at)
            run["shift"] = shift.changed()
            shifts[name] = run
    windows = sum(r["windows_tested"] for r in stationary.values())
    sims = [r.pop("_horizons") for r in stationary.values()]
    horizon_sim = sims[0]
    for sim in sims[1:]:
        horizon_sim = horizon_sim.merge(sim)
    fa = horizon_sim.summary(defaults.detect.target_false_alarm_rate)
    summary: dict[str, Any] = {
        "stationary": {"runs": len(stationary), "requests_per_run": n, "alerts": sum(r["input_drift_alerts"] for r in stationary.values()),
                       "windows_tested": windows,
                       "windows_drifted": sum(w["drift"] for r in stationary.values() for w in r["windows"]),
                       "target_alerts": 0,
                       "false_alarm_budget_per_horizon": defaults.detect.target_false_alarm_rate,
                       "false_alarm_rate": fa["false_alarm_rate"], "false_alarm_rate_ci": fa["false_alarm_rate_ci"],
                       "horizons_simulated": fa["horizons"], "false_alarm_rate_target": fa["target"],
                       "within_target": fa["false_alarm_rate_ci"][1] <= fa["target"],  # the CI's upper end
                       "horizon_simulation": fa,
                       "note": "alerts/windows: the observed stationary runs. false_alarm_rate: share of simulated "
                               "stationary horizons (detect.horizon requests = windows_per_horizon tumbling windows, "
                               "each resampled from the run's held-out requests after its reference, tested by the "
                               "production test_window with the daemon's fitted thresholds, alarmed after "
                               "inputs.confirm_windows drifted windows in a row) with an input_drift alarm, Wilson "
                               "95% CI; false_alarm_rate_from_window_rate: the same from the per-window drift rate "
                               "over all simulated windows (windows are independent given the reference)"},
        "shifts": {},
    }
    for name, run in shifts.items():
        delay, first_window, early = _delay(run, change_at, defaults.inputs.confirm_windows)
        before, after = run["agreement_before"], run["agreement_after"]
        moved = (before["ci"] is not None and after["ci"] is not None
                 and (after["ci"][1] < before["ci"][0] or after["ci"][0] > before["ci"][1]))
        first = next((w for w in run["windows"] if w["drift"] and w["last_request"] >= change_at), None)
        summary["shifts"][name] = {"delay_requests": delay, "first_drifted_window_delay_requests": first_window,
                                   "target_delay_requests": TARGET_DELAY,
                                   "within_target": delay is not None and delay <= TARGET_DELAY,
                                   "false_alarm_windows_before_change": early,
                                   "moved_features": first["moved"] if first else [],
                                   "agreement_before": before, "agreement_after": after, "agreement_moved": moved,
                                   "alerts": run["input_drift_alerts"]}
    info["summary"] = summary
    info["runs"] = {"stationary": stationary, "shifts": shifts}
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2, default=str) + "\n")
    log.info("wrote %s: %s", out, json.dumps(summary, default=str)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
