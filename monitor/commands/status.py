"""``vlmwatch status [--json]``: row counts per table, pending work, running totals, last job runs,
and per active probe which detectors are armed, what each still needs and when the label-based
ones arm (an estimate; :mod:`monitor.detect.readiness`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from monitor.commands import add_command

__all__ = ["register", "render_text"]


def render_text(report: dict[str, Any]) -> str:
    """The human form of the report ``--json`` prints."""
    lines = [f"database: {report['database']} (revision {report['revision']})", "tables:"]
    width = max(len(k) for k in [*report["tables"], *report["pending"], *report["totals"]]) + 2
    lines += [f"  {name:<{width}}{n:>10,}" for name, n in report["tables"].items()]
    lines.append("pending:")
    lines += [f"  {name:<{width}}{n:>10,}" for name, n in report["pending"].items()]
    lines.append("totals:")
    lines += [f"  {name:<{width}}{n:>10,}" for name, n in report["totals"].items()]
    lines.append("last job runs:")
    if not report["jobs"]:
        lines.append("  (none yet)")
    for job, r in report["jobs"].items():
        state = "running" if r["ok"] is None else ("ok" if r["ok"] else "FAILED")
        line = f"  {job:<{width}}{state:<8} started {r['started_at']}  processed {r['processed']}  on {r['worker']}"
        if r["error"]:
            line += f"  error: {r['error'].splitlines()[0][:200]}"
        lines.append(line)
    lines.append("detectors:")
    if not report["detectors"]:
        lines.append("  (no active probe: `vlmwatch probe train --register` or `probe activate`)")
    for p in report["detectors"]:
        lines.append(f"  {p['model']} probe {p['probe_version']}: human-label detectors {_arming_text(p)}")
        for d in p["detectors"]:
            state = "armed" if d["armed"] else f"not armed: needs {d['needs']}"
            lines.append(f"    {d['detector']:<36}{state}")
    return "\n".join(lines)


def _arming_text(d: dict[str, Any]) -> str:
    ref = {"none": "no reference yet", "pinned": "pinned reference", "default": "default reference"}[d["reference"]]
    if d["labels_armed"]:
        return f"armed ({ref}, {d['labelled']:,} labelled samples)"
    text = f"not armed: {ref} has {d['labelled']:,} of {d['needed']:,} labelled samples"
    if d["eta_hours"] is not None:
        text += f"; at the last hour's {d['labels_last_hour']:,} labels/h, in about {d['eta_hours']:.1f} h"
    else:
        text += "; no labels in the last hour"
    if d["reference"] != "pinned":
        text += "; `vlmwatch reference set` pins one now"
    return text


def _status(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from monitor.commands._storage import open_database
    from monitor.detect.readiness import readiness
    from storage import db
    from storage.repo_status import status_report

    with open_database(args) as database, database.sessions() as session:
        engine = database.engine
        report = {"database": db.safe_url(engine.url), "revision": db.current_revision(engine)}
        report.update(status_report(session))
        report["detectors"] = [asdict(p) for p in readiness(session, database.settings)]
    print(json.dumps(report, indent=2) if args.json else render_text(report))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, "status", _status, help="row counts per table, pending work, running totals, when label detectors arm, detectors armed, last job runs")
    p.add_argument("--json", action="store_true", help="print the same report as JSON")
