"""Jinja2 filters of the dashboard's templates: numbers with CIs, times, durations, shares."""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

__all__ = ["install", "num", "ci", "when", "duration", "pct"]


def num(v: Any, digits: int = 3) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return str(v) if isinstance(v, int) else f"{v:.{digits}f}"


def ci(v: Any, digits: int = 3) -> str:
    """``[lo, hi]`` of a two-number list, or an empty string."""
    if isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        return f"[{v[0]:.{digits}f}, {v[1]:.{digits}f}]"
    return ""


def when(v: datetime | None) -> str:
    if v is None:
        return "–"
    return v.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "–"
    s = max(0.0, float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def pct(v: Any, digits: int = 0) -> str:
    return "–" if not isinstance(v, (int, float)) else f"{100 * v:.{digits}f}%"


def install(env: Any) -> None:
    env.filters.update(num=num, ci=ci, when=when, duration=duration, pct=pct)
