"""A real Prometheus scrapes a running daemon (with its API) and a running proxy on loopback.

The stack, once per module: a SQLite database where the real calibrate and detect jobs saw a drift
(so windows, detector states and a firing alert exist), a real Daemon subprocess scoring model
``m`` with a hash scorer and serving the API, the ``vlmwatch proxy`` command in front of a canned
OpenAI-compatible upstream, some traffic through both, and Debian's ``prometheus`` binary with
``docs/prometheus/rules.yml`` loaded. The series are read back through Prometheus's HTTP API; the
Grafana dashboard's every query is checked against the live ``/metrics`` and run by Prometheus.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from collectors.canned_upstream import start_canned
from storage.db import make_engine, session_factory
from storage.models import CalibrationWindow
from tests.api.helpers import drift
from tests.daemon.helpers import ROOT, add_probe_version, free_port, png, sqlite_db, start_test_daemon, wait_for
from tests.detect.conftest import make_fast_settings, new_world
from tests.prometheus.conftest import run_promtool

DASHBOARD = ROOT / "docs" / "grafana" / "vlmwatch.json"
RULES = ROOT / "docs" / "prometheus" / "rules.yml"
VLMWATCH = Path(sys.executable).parent / "vlmwatch"


@dataclass
class Stack:
    api: str
    proxy: str
    prom: str
    db_url: str

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prom}/api/v1/query", params={"query": promql}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", (promql, body)
        return body["data"]["result"]

    def value(self, promql: str) -> float:
        res = self.query(promql)
        assert len(res) == 1, (promql, res)
        return float(res[0]["value"][1])


def _chat(model: str, seed: int) -> dict[str, Any]:
    url = "data:image/png;base64," + base64.b64encode(png(seed)).decode()
    return {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": [
        {"type": "text", "text": f"Is there a cat {seed}?"}, {"type": "image_url", "image_url": {"url": url}}]}]}


def _traffic(proxy: str, api: str) -> None:
    with httpx.Client(timeout=10) as c:
        for i in range(6):
            assert c.post(f"{proxy}/v1/chat/completions", json=_chat("m", i)).status_code == 200
        c.post(f"{proxy}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
        assert c.post(f"{proxy}/v1/chat/completions", json=_chat("m", 99), headers={"x-canned-close": "1"}).status_code == 502
        r = c.post(f"{api}/v1/samples", json={"samples": [{"id": "api-1", "model": "m", "prompt": "q", "answer": "a",
                                                           "image": _chat("m", 7)["messages"][0]["content"][1]["image_url"]["url"]}]})
        assert r.status_code == 200, r.text
        assert c.post(f"{api}/v1/labels", json={"sample_id": "api-1", "correct": True}).status_code == 200
        span = {"resourceSpans": [{"scopeSpans": [{"spans": [{
            "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174", "name": "chat m",
            "attributes": [{"key": "gen_ai.request.model", "value": {"stringValue": "m"}}]}]}]}]}  # no messages: dropped
        r = c.post(f"{api}/v1/traces", json=span)
        assert r.status_code == 200 and r.json()["partialSuccess"]["rejectedSpans"] == "1", r.text


def _start(cmd: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(cmd, stdout=open(log, "ab"), stderr=subprocess.STDOUT, env=env, **kw)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def stack(tmp_path_factory, prometheus_bin) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("prom-stack")
    url = sqlite_db(tmp)
    engine = make_engine(url)
    drift(new_world(engine), make_fast_settings())  # windows, tuned detectors, a firing alert for model m1
    add_probe_version(url, "m")  # the daemon's hash scorer scores model m
    engine.dispose()
    procs: list[subprocess.Popen[bytes]] = []
    _, up_port, stop_upstream = start_canned()
    try:
        api_port, proxy_port, prom_port = free_port(), free_port(), free_port()
        procs.append(start_test_daemon(url, tmp, "w1", api_port=api_port))
        cfg = tmp / "vlmwatch.yaml"
        cfg.write_text(json.dumps({"storage": {"url": url}, "spool": {"dir": str(tmp / "spool"), "ship_interval_seconds": 0.5}}))
        procs.append(_start([str(VLMWATCH), "--config", str(cfg), "proxy", "--upstream", f"http://127.0.0.1:{up_port}",
                             "--listen", f"127.0.0.1:{proxy_port}", "--sample-rate", "1"], tmp / "proxy.log"))
        api, proxy, prom = (f"http://127.0.0.1:{p}" for p in (api_port, proxy_port, prom_port))
        wait_for(lambda: _ready(f"{api}/healthz") and _ready(f"{proxy}/metrics"), 60, "daemon API and proxy")
        _traffic(proxy, api)
        prom_cfg = tmp / "prometheus.yml"
        prom_cfg.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [
                {"job_name": "vlmwatch-api", "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}]},
                {"job_name": "vlmwatch-proxy", "static_configs": [{"targets": [f"127.0.0.1:{proxy_port}"]}]},
            ]}))
        procs.append(_start([prometheus_bin, f"--config.file={prom_cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                             f"--web.listen-address=127.0.0.1:{prom_port}"], tmp / "prometheus.log"))
        wait_for(lambda: _ready(f"{prom}/-/ready"), 60, "prometheus ready")
        s = Stack(api, proxy, prom, url)
        # a few scrapes of both targets, so rate() has points; the daemon has scored the proxy's samples
        wait_for(lambda: len(s.query("count_over_time(up[1m]) >= 4")) == 2, 60, "4 scrapes of both targets")
        wait_for(lambda: s.query('vlmwatch_samples_scored_total{model="m"} >= 6'), 90, "proxy samples scored")
        yield s
    finally:
        for p in reversed(procs):
            _stop(p)
        stop_upstream()
        for log in sorted(tmp.glob("*.log")):
            print(f"--- {log.name} (tail)\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:]))


def test_prometheus_reads_back_the_daemon_and_proxy_series(stack: Stack) -> None:
    up = {r["metric"]["job"]: r["value"][1] for r in stack.query("up")}
    assert up == {"vlmwatch-api": "1", "vlmwatch-proxy": "1"}
    assert stack.value('sum(vlmwatch_collector_requests_total{job="vlmwatch-proxy"})') == 8
    assert stack.value('vlmwatch_collector_samples_dropped_total{reason="bad_json"}') == 1
    assert stack.value("sum(vlmwatch_proxy_upstream_errors_total)") == 1
    assert stack.value('sum(vlmwatch_job_runs_total{job="vlmwatch-api", daemon_job="score"})') > 0
    assert stack.query('{exported_job!=""}') == []  # no metric label clashed with the scrape's job label
    assert stack.value('vlmwatch_api_otlp_spans_dropped_total{reason="no_prompt"}') == 1
    # database-backed series: the newest rolling window as stored, the drift's detector and alert
    engine = make_engine(stack.db_url)
    with session_factory(engine)() as s:
        row = s.scalars(select(CalibrationWindow).where(CalibrationWindow.model == "m1", CalibrationWindow.kind == "rolling",
                                                        CalibrationWindow.source == "human")
                        .order_by(CalibrationWindow.window_end.desc(), CalibrationWindow.id.desc())).first()
    engine.dispose()
    sel = 'model="m1", probe_version="v1", source="human", task="all", window="rolling"'
    assert stack.value(f"vlmwatch_calibration_auroc{{{sel}}}") == pytest.approx(row.metrics["auroc"])
    assert stack.value(f"vlmwatch_calibration_auroc_ci_lower{{{sel}}}") == pytest.approx(row.metrics["auroc_ci"][0])
    assert stack.value(f"vlmwatch_calibration_estimated_accuracy{{{sel}}}") == pytest.approx(row.metrics["est_accuracy"])
    assert stack.value('vlmwatch_detector_firing{model="m1", detector="cusum_disagreement", source="human"}') == 1
    assert stack.value('vlmwatch_alert_firing{model="m1", rule="probe_disagreement_drift"}') == 1
    assert stack.value('vlmwatch_scoring_queue_depth{model="m1"}') == 2200  # the world's samples: scored offline
    assert stack.value("vlmwatch_database_up") == 1


def test_the_rules_evaluate_on_the_live_series(stack: Stack) -> None:
    groups = httpx.get(f"{stack.prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 11 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    def alerts(name: str) -> list[dict[str, Any]]:
        return [a for a in httpx.get(f"{stack.prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
                if a["labels"]["alertname"] == name]

    mirrored = wait_for(lambda: alerts("VlmwatchAlertFiring"), 30, "VlmwatchAlertFiring")
    assert {(a["labels"]["rule"], a["state"]) for a in mirrored} >= {("probe_disagreement_drift", "firing")}
    detectors = {(a["labels"]["detector"], a["labels"]["source"]) for a in alerts("VlmwatchDetectorFiring")}
    assert ("cusum_disagreement", "human") in detectors  # pending or firing (for: 1m)
    assert stack.value('vlmwatch:detector_statistic_over_threshold:ratio{model="m1", detector="cusum_disagreement", source="human"}') > 1


_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset",
             "inf", "nan"}


def promql_metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (strings, label matchers, ranges, label lists and functions left out)."""
    m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*\w+\s*\)\s*", expr)  # Grafana's variable query
    if m:
        return promql_metric_names(m.group(1))
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    names = set()
    for tok in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        before = e[tok.start() - 1] if tok.start() else " "
        if before.isdigit() or before in "$." or e[tok.end():].lstrip().startswith("(") or tok.group(0) in _KEYWORDS:
            continue
        names.add(tok.group(0))
    return names


def test_promql_metric_names() -> None:
    assert promql_metric_names('histogram_quantile(0.95, sum by (daemon_job, le) (rate(vlmwatch_job_duration_seconds_bucket'
                               '{x="a b(c)"}[$__rate_interval])))') == {"vlmwatch_job_duration_seconds_bucket"}
    assert promql_metric_names("max(a_used) / max(b) > 1e-9 unless on (m) c offset 5m") == {"a_used", "b", "c"}
    assert promql_metric_names("label_values(vlmwatch_probe_info, model)") == {"vlmwatch_probe_info"}


def _dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return exprs


def _exported(text: str) -> set[str]:
    names = set()
    for fam in text_string_to_metric_families(text):
        names |= {smp.name for smp in fam.samples}
        names |= {fam.name + "_total"} if fam.type == "counter" else {fam.name + s for s in ("_bucket", "_sum", "_count")} \
            if fam.type == "histogram" else {fam.name}
    return names


def test_grafana_dashboard_names_only_exported_metrics(stack: Stack) -> None:
    exported = _exported(httpx.get(f"{stack.api}/metrics").text) | _exported(httpx.get(f"{stack.proxy}/metrics").text)
    queries = _dashboard_queries()
    assert len(queries) >= 40
    named = set().union(*(promql_metric_names(q) for q in queries))
    assert len(named) >= 35 and not (named - exported), sorted(named - exported)
    # and Prometheus runs every query (Grafana's variables filled in) and finds series for it
    fill = {"$model": ".*", "$source": "combined|human", "$window": "rolling", "$__rate_interval": "30s"}
    empty = []
    for q in queries:
        if q.startswith("label_values("):
            continue
        for var, value in fill.items():
            q = q.replace(var, value)
        if not stack.query(q):
            empty.append(q)
    assert not empty, "no series for dashboard queries:\n" + "\n".join(empty)


def test_promtool_check_metrics_is_clean_on_both_targets(stack: Stack, promtool) -> None:
    for url in (f"{stack.api}/metrics", f"{stack.proxy}/metrics"):
        text = httpx.get(url).content
        assert b"vlmwatch_" in text
        res = run_promtool(promtool, "check", "metrics", stdin=text)
        assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), (url, res.stdout, res.stderr)
