"""What the demo shows while it runs (a live status line) and at the end (the summary table)."""

from __future__ import annotations

import bisect
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from storage.models import Alert, CalibrationWindow, Label, Sample, Score, SpotCheck

__all__ = ["Counts", "read_counts", "StatusLine", "alerts_with_samples", "format_summary"]


@dataclass
class Counts:
    samples: int = 0
    scored: int = 0
    with_answer_prob: int = 0  # scores whose answer_prob came from logprobs the proxy captured
    spot_checked: int = 0
    spot_checked_k_sample: int = 0  # spot checks that ran the K-sample decode (multi-token answers)
    labels: int = 0
    windows: int = 0
    alerts_firing: int = 0
    alerts_total: int = 0


def read_counts(sessions: sessionmaker[Session]) -> Counts:
    with sessions() as s:
        def n(q: Any) -> int:
            return int(s.scalar(q) or 0)

        return Counts(
            samples=n(select(func.count()).select_from(Sample)),
            scored=n(select(func.count()).select_from(Score)),
            with_answer_prob=n(select(func.count()).select_from(Score).where(Score.answer_prob.is_not(None))),
            spot_checked=n(select(func.count()).select_from(SpotCheck)),
            spot_checked_k_sample=n(select(func.count()).select_from(SpotCheck).where(SpotCheck.one_token.is_(False))),
            labels=n(select(func.count()).select_from(Label).where(Label.source.in_(("ground_truth", "human")))),
            windows=n(select(func.count()).select_from(CalibrationWindow).where(CalibrationWindow.kind == "time")),
            alerts_firing=n(select(func.count()).select_from(Alert).where(Alert.state == "firing")),
            alerts_total=n(select(func.count()).select_from(Alert)),
        )


class StatusLine:
    """One line rewritten in place on a terminal; a plain line every ``every`` seconds otherwise."""

    def __init__(self, stream: TextIO = sys.stderr, every: float = 15.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = every
        self._last = 0.0
        self._width = 0

    def show(self, text: str) -> None:
        if self.tty:
            pad = max(0, self._width - len(text))
            self.stream.write("\r" + text + " " * pad)
            self.stream.flush()
            self._width = len(text)
        elif time.monotonic() - self._last >= self.every:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last = time.monotonic()

    def done(self) -> None:
        if self.tty and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def alerts_with_samples(sessions: sessionmaker[Session], sent_times: list[float], shift_at: int,
                        shift_time: float | None) -> list[dict[str, Any]]:
    """Every alert with the sample index it fired at (requests sent before it started)."""
    times = sorted(t for t in sent_times if t > 0)
    out = []
    with sessions() as s:
        for a in s.scalars(select(Alert).order_by(Alert.started_at)):
            started = a.started_at.timestamp()
            idx = bisect.bisect_right(times, started)
            d: dict[str, Any] = {
                "rule": a.rule, "fired_at_sample": idx, "state": a.state, "severity": a.severity,
                "started_at": a.started_at.isoformat(),
                "resolved_at": a.resolved_at.isoformat() if a.resolved_at else None,
                "after_shift": idx >= shift_at,
            }
            if idx >= shift_at:
                d["delay_samples"] = idx - shift_at
                if shift_time is not None:
                    d["delay_seconds"] = round(started - shift_time, 1)
            out.append(d)
    return out


def format_summary(summary: dict[str, Any]) -> str:
    c = summary["counts"]
    rows = [
        ("samples sent", f"{summary['sent']}  (shift injected at sample {summary['shift_at']})"),
        ("model accuracy", f"{summary['accuracy_before']:.1%} before the shift, {summary['accuracy_after']:.1%} after (all tasks)"),
        ("samples stored", str(c["samples"])),
        ("scored", f"{c['scored']}  ({c['with_answer_prob']} with answer_prob from captured logprobs)"),
        ("spot-checked", f"{c['spot_checked']}  ({c.get('spot_checked_k_sample', 0)} K-sample on free-form answers, "
                         f"the rest the exact one-token path)"),
        ("ground-truth labels", str(c["labels"])),
        ("calibration windows", str(c["windows"])),
        ("alerts", f"{len(summary['alerts'])}  ({len(summary.get('webhook_deliveries', []))} delivered to the demo webhook)"),
    ]
    w = max(len(k) for k, _ in rows)
    lines = ["", "vlmwatch demo — summary", "-" * 60]
    lines += [f"{k:<{w}}  {v}" for k, v in rows]
    lines += _task_lines(summary.get("tasks") or {})
    if summary["alerts"]:
        lines.append("")
        lines.append(f"{'rule':<28} {'severity':<9} {'state':<9} {'fired at':>9}  detection delay")
        for a in summary["alerts"]:
            delay = (f"{a['delay_samples']} samples" + (f" / {a['delay_seconds']:.0f}s" if "delay_seconds" in a else "")
                     if a["after_shift"] else "BEFORE THE SHIFT (false alarm)")
            lines.append(f"{a['rule']:<28} {a['severity']:<9} {a['state']:<9} {a['fired_at_sample']:>9}  {delay}")
    lines.append("")
    verdict = summary["verdict"]
    lines.append(("OK: " if verdict["ok"] else "NOT OK: ") + verdict["text"])
    lines.append(f"report: {summary['report_dir']}")
    lines.append(f"logs and database: {summary['dir']}  ({summary['elapsed_seconds']:.0f}s)")
    return "\n".join(lines)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _f2(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _task_lines(tasks: dict[str, Any]) -> list[str]:
    """The per-task table: accuracy (every answer, by the judge), captions naming an absent object,
    and the probe against the ground-truth labels (mean p_correct, ECE), before -> after the shift."""
    if not tasks:
        return []
    lines = ["", f"{'task':<10} {'share':>5}  {'accuracy':<13} {'CHAIR_s':<13} {'probe mean p':<13} "
                 f"{'probe ECE':<13} spot checks (K-sample), agreement"]
    for task, t in tasks.items():
        b, a = t.get("before", {}), t.get("after", {})
        chair = (f"{_pct(b.get('chair_s'))} -> {_pct(a.get('chair_s'))}" if task == "describe" else "")
        lines.append(
            f"{task:<10} {_pct(t.get('share')):>5}  {_pct(b.get('accuracy')) + ' -> ' + _pct(a.get('accuracy')):<13} "
            f"{chair:<13} {_f2(b.get('mean_score')) + ' -> ' + _f2(a.get('mean_score')):<13} "
            f"{_f2(b.get('ece')) + ' -> ' + _f2(a.get('ece')):<13} "
            f"{t.get('spot_checked', 0)} ({t.get('spot_checked_k_sample', 0)}), "
            f"{_f2(b.get('mean_agreement'))} -> {_f2(a.get('mean_agreement'))}")
    lines.append("  (before -> after the shift; accuracy and CHAIR_s over every answer by the task's judge, "
                 "probe figures against the ground-truth labels, the pinned reference counted before; "
                 "agreement: the spot checks' mean self-consistency)")
    return lines


def _fmt_time(ts: datetime) -> str:
    return ts.strftime("%H:%M:%S")
