"""docs/prometheus/rules.yml is valid (promtool check rules) and does what its unit tests say (promtool test rules)."""

from __future__ import annotations

from pathlib import Path

from tests.prometheus.conftest import run_promtool

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "tests" / "prometheus" / "rules_test.yml"


def test_rules_check(promtool) -> None:
    res = run_promtool(promtool, "check", "rules", str(RULES))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS: 11 rules found" in res.stdout


def test_rules_unit_tests(promtool) -> None:
    res = run_promtool(promtool, "test", "rules", str(RULES_TEST))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout


def test_every_alert_has_a_unit_test() -> None:
    import yaml

    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    tested = {t["alertname"] for case in yaml.safe_load(RULES_TEST.read_text())["tests"]
              for t in case.get("alert_rule_test", []) if t.get("exp_alerts")}
    assert alerts and alerts == tested, alerts ^ tested
