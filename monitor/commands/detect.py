"""``vlmwatch detect tune|run``: tune detector thresholds by simulation; run the detectors once."""

from __future__ import annotations

import argparse
import json
import sys

from monitor.commands import add_actions, add_command
from monitor.progress import add_quiet_flag, wanted

__all__ = ["register"]


def _tune(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from monitor.commands import CommandError
    from monitor.commands._storage import open_database
    from monitor.detect.tune import tune_detectors
    from monitor.progress import track
    from storage.models import ProbeVersion

    with open_database(args) as database:
        settings = database.settings
        with database.sessions() as s:  # one model at a time, so that progress can be shown per model
            q = select(ProbeVersion.model).where(ProbeVersion.active.is_(True)).distinct()
            models = sorted(s.scalars(q.where(ProbeVersion.model == args.model) if args.model else q)) or [args.model]
        try:
            rows = [r for m in track(models, desc="detect tune", unit="model", enabled=wanted(args))
                    for r in tune_detectors(database.sessions, settings, model=m, seed=args.seed)]
        except ValueError as e:
            raise CommandError(str(e)) from None
    out = [{"model": r.model, "probe_version_id": r.probe_version_id, "reference_id": r.reference_id,
            "detector": r.detector, "params": r.params, "simulated_false_alarm_rate": r.simulated_false_alarm_rate}
           for r in rows]
    print(json.dumps(out, indent=2))
    if not out:
        print("nothing tuned: no active probe has a complete reference yet "
              f"(calibration.reference_n={settings.calibration.reference_n} labelled samples)", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from monitor.calibration.history import run_calibrate
    from monitor.commands._storage import open_database
    from monitor.detect import run_detect

    with open_database(args) as database:
        run_calibrate(database.sessions, database.settings)
        res = run_detect(database.sessions, database.settings)
        if args.deliver:
            from alerts.outbox import deliver_due

            deliver_due(database.sessions, database.settings.alerts)
    out = {"signals": [{"detector": s.detector, "model": s.model, "probe_version": s.probe_version,
                        "status": s.status, "summary": s.summary} for s in res.signals],
           "transitions": [t.__dict__ for t in res.transitions]}
    print(json.dumps(out, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "detect", help="tune drift detectors by simulation, or run them once")
    t = add_command(sub, "tune", _tune, help="tune every detector on the active reference to detect.target_false_alarm_rate")
    t.add_argument("--model", default=None, help="only this served model")
    t.add_argument("--seed", type=int, default=None, help="RNG seed of the simulation")
    add_quiet_flag(t)
    r = add_command(sub, "run", _run, help="update calibration history and run the detectors once (what the daemon does)")
    r.add_argument("--deliver", action="store_true", help="also send due alert notifications")
