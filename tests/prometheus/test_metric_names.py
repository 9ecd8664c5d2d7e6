"""Metric declarations follow one convention: prometheus_client's counter naming, Prometheus's labels.

``Counter("vlmwatch_x", ...)`` is exposed as ``vlmwatch_x_total``; declaring ``"vlmwatch_x_total"``
gives the same exposition, so two conventions could live side by side unnoticed. This scans every
metric declaration in the packages and holds them to the one convention.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("monitor", "collectors", "storage", "alerts")


def _labels(node: ast.Call) -> list[str]:
    """Label names given as a literal list (third argument, or ``labelnames=`` / ``labels=``)."""
    value = node.args[2] if len(node.args) > 2 else next(
        (k.value for k in node.keywords if k.arg in ("labelnames", "labels")), None)
    if isinstance(value, (ast.List, ast.Tuple)):
        return [e.value for e in value.elts if isinstance(e, ast.Constant)]
    if isinstance(value, ast.Name):  # a module constant such as _CAL_LABELS
        return [f"<{value.id}>"]
    return []


def _declarations() -> list[tuple[str, str, str, list[str]]]:
    """(file:line, class name, metric name, label names) of every Counter/Gauge/Histogram/Summary(...) call."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            imported = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                        and n.module and n.module.startswith("prometheus_client") for a in n.names}
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                fn = node.func
                name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else ""
                first = node.args[0]
                if (name in {"Counter", "Gauge", "Histogram", "Summary", "CounterMetricFamily", "GaugeMetricFamily"}
                        and (name in imported or isinstance(fn, ast.Attribute))
                        and isinstance(first, ast.Constant) and isinstance(first.value, str)):
                    out.append((f"{path.relative_to(ROOT)}:{node.lineno}", name, first.value, _labels(node)))
    return out


def test_declarations_are_found() -> None:
    decls = _declarations()
    files = {d[0].split(":")[0] for d in decls}
    assert {"monitor/metrics.py", "collectors/metrics.py"} <= files, files
    assert len(decls) >= 20


def test_counters_are_declared_without_total_suffix() -> None:
    bad = [d for d in _declarations() if d[1] in {"Counter", "CounterMetricFamily"} and d[2].endswith("_total")]
    assert not bad, f"declare counters without _total (prometheus_client adds it): {bad}"


def test_every_metric_is_namespaced() -> None:
    bad = [d for d in _declarations() if not d[2].startswith("vlmwatch_")]
    assert not bad, bad


def test_no_metric_uses_a_target_label() -> None:
    """``job`` and ``instance`` are the labels Prometheus gives every scraped series; a metric's own
    ``job`` label would be renamed ``exported_job`` at scrape time."""
    decls = _declarations()
    assert any(d[3] for d in decls), "no label names found: the scan is broken"
    bad = [d for d in decls if {"job", "instance"} & set(d[3])]
    assert not bad, bad
