"""`vlmwatch demo --help`, the demo's plan and the README say the same duration and rate."""

from __future__ import annotations

import re
from pathlib import Path

from monitor.cli import build_parser
from monitor.demo.plan import DemoPlan, parse_duration

README = Path(__file__).resolve().parents[2] / "README.md"


def _demo_help() -> str:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return " ".join(sub.choices["demo"].format_help().split())


def test_help_readme_and_plan_agree_on_duration_and_rate():
    plan = DemoPlan()
    text = _demo_help()
    duration = re.search(r"--duration DURATION .*?\(default (\w+)\)", text).group(1)
    rate = re.search(r"--rate RATE .*?\(default ([\d.]+)\)", text).group(1)
    assert parse_duration(duration) == plan.traffic_seconds
    assert float(rate) == plan.rate
    readme = " ".join(README.read_text().split())
    assert f"({plan.rate:g} requests/s for {plan.traffic_seconds / 60:g} minutes" in readme
