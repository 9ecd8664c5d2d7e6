"""What the report, the JSON summary, ``/metrics`` and the dashboard show of input drift.

Read from each model's active input reference (``input_references``: its tuned thresholds and the
window results the inputs job keeps in ``state``) and the ``input_drift`` alerts.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.models import Alert, Image, InputReference, Sample

__all__ = ["input_drift_summary", "input_drift_metrics", "write_input_drift_page", "INPUT_DRIFT_FILES"]

INPUT_DRIFT_FILES = {"html": "input_drift.html", "timeline": "input_drift.png"}
_THUMBS = 8


def _references(session: Session, model: str | None) -> list[InputReference]:
    q = select(InputReference).where(InputReference.active.is_(True))
    if model:
        q = q.where(InputReference.model == model)
    return list(session.scalars(q.order_by(InputReference.model)))


def input_drift_summary(session: Session, model: str | None = None) -> dict[str, Any]:
    """Per model: the reference, the latest window's per-feature tests, template shares before and
    after, the embedding's MMD² over time, and the firing ``input_drift`` alert (JSON-ready)."""
    out: dict[str, Any] = {}
    for ref in _references(session, model):
        state, stats = ref.state or {}, ref.stats or {}
        windows = state.get("windows") or []
        last = state.get("last") or {}
        alert = session.scalars(select(Alert).where(Alert.rule == "input_drift", Alert.model == ref.model,
                                                    Alert.state == "firing")).first()
        template = (last.get("features") or {}).get("template") or {}
        out[ref.model] = {
            "reference": {"id": ref.id, "pinned": ref.pinned, "n": ref.n, "window_start": ref.window_start.isoformat(),
                          "window_end": ref.window_end.isoformat(), "p_threshold": stats.get("p_threshold"),
                          "effective_tests": stats.get("effective_tests"),
                          "target_false_alarm_rate": stats.get("target_false_alarm_rate"),
                          "horizon": stats.get("horizon"), "window": stats.get("window"),
                          "mmd2_threshold": (stats.get("embedding") or {}).get("mmd2_threshold")},
            "windows_tested": len(windows),
            "windows_drifted": sum(1 for w in windows if w.get("drift")),
            "latest": {k: last.get(k) for k in ("start", "end", "n", "drift", "moved", "min_p")} if last else None,
            "features": {name: {k: f.get(k) for k in ("kind", "test", "p_value", "effect", "drift", "new_share")}
                         for name, f in (last.get("features") or {}).items()},
            "templates": {"reference": template.get("reference_shares"), "latest_window": template.get("window_shares")},
            "embedding_over_time": [{"end": w["end"], "mmd2": w.get("mmd2"), "drift": w.get("drift")} for w in windows],
            "alert": None if alert is None else {"id": alert.id, "started_at": alert.started_at.isoformat(),
                                                 "summary": (alert.evidence or {}).get("summary")},
        }
    return out


_MODEL, _MODEL_FEATURE = ("model",), ("model", "feature")
_FAMILIES = {  # key: (family name, help, labels)
    "p": ("vlmwatch_input_drift_feature_p_value",
          "Evidently drift-test p-value of an input feature in the newest window vs the reference", _MODEL_FEATURE),
    "min_p": ("vlmwatch_input_drift_min_p_value", "Smallest feature p-value of the newest input window", _MODEL),
    "p_thr": ("vlmwatch_input_drift_p_threshold",
              "Feature p-value below which a window drifts (tuned on the reference)", _MODEL),
    "mmd": ("vlmwatch_input_drift_embedding_mmd2",
            "MMD² of the newest window's vision embeddings vs the reference", _MODEL),
    "mmd_thr": ("vlmwatch_input_drift_embedding_mmd2_threshold",
                "MMD² above which the embedding drifts (tuned on the reference)", _MODEL),
    "drift": ("vlmwatch_input_drift_window_drifted",
              "1 when the newest input window drifted from the reference", _MODEL),
    "tested": ("vlmwatch_input_drift_windows_tested", "Input windows tested against the active reference", _MODEL),
}


def input_drift_metrics(session: Session) -> Iterable[Any]:
    """Prometheus families (``monitor.api.db_metrics``): the newest window's tests per model."""
    from prometheus_client.core import GaugeMetricFamily

    fams = {key: GaugeMetricFamily(name, doc, labels=list(labels)) for key, (name, doc, labels) in _FAMILIES.items()}
    for ref in _references(session, None):
        last, stats = (ref.state or {}).get("last") or {}, ref.stats or {}
        m = [ref.model]
        fams["tested"].add_metric(m, float(len((ref.state or {}).get("windows") or [])))
        if stats.get("p_threshold") is not None:
            fams["p_thr"].add_metric(m, float(stats["p_threshold"]))
        if (stats.get("embedding") or {}).get("mmd2_threshold") is not None:
            fams["mmd_thr"].add_metric(m, float(stats["embedding"]["mmd2_threshold"]))
        if not last:
            continue
        fams["min_p"].add_metric(m, float(last["min_p"]))
        fams["drift"].add_metric(m, float(bool(last["drift"])))
        if last.get("mmd2") is not None:
            fams["mmd"].add_metric(m, float(last["mmd2"]))
        for name, f in (last.get("features") or {}).items():
            if f.get("p_value") is not None:
                fams["p"].add_metric([ref.model, name], float(f["p_value"]))
    return list(fams.values())


def _thumbnails(session: Session, sample_ids: list[str]) -> list[str]:
    """Data URLs of up to ``_THUMBS`` images of these samples that are still kept (not purged)."""
    from PIL import Image as PILImage

    rows = session.execute(select(Image.data).join(Sample, Sample.image_sha256 == Image.sha256)
                           .where(Sample.id.in_(sample_ids[:50]), Image.data.is_not(None)).limit(_THUMBS)).all()
    out = []
    for (data,) in rows:
        with PILImage.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            im.thumbnail((96, 96))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
        out.append("data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def _plot(summary: dict[str, Any], path: Path) -> bool:
    series = {m: s["embedding_over_time"] for m, s in summary.items() if s["embedding_over_time"]}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    fig, ax = plt.subplots(figsize=(9, 3))
    for m, pts in series.items():
        xs = pd.to_datetime([p["end"] for p in pts])
        ax.plot(xs, [p["mmd2"] for p in pts], marker=".", label=f"{m} MMD²")
        thr = summary[m]["reference"]["mmd2_threshold"]
        if thr is not None:
            ax.axhline(thr, ls="--", lw=1, color="grey")
        for x, p in zip(xs, pts):
            if p["drift"]:
                ax.axvline(x, color="#e67e22", alpha=0.3, lw=2)
    ax.set_title("vision-embedding drift per input window (dashed: tuned threshold; orange: drifted window)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def write_input_drift_page(session: Session, summary: dict[str, Any], out_dir: Path) -> dict[str, str]:
    """``input_drift.html`` (per-feature table, template shares, thumbnails) and ``input_drift.png``."""
    files = {"html": INPUT_DRIFT_FILES["html"]}
    if _plot(summary, out_dir / INPUT_DRIFT_FILES["timeline"]):
        files["timeline"] = INPUT_DRIFT_FILES["timeline"]
    esc = html.escape
    parts = ["<!doctype html><meta charset='utf-8'><title>vlmwatch input drift</title>",
             "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 8px;border-bottom:1px solid #ddd}"
             ".drift{color:#c0392b;font-weight:bold}</style><h1>Input drift</h1>"]
    if not summary:
        parts.append("<p>No input reference yet: it is made from the first <code>inputs.reference_n</code> scored samples.</p>")
    if "timeline" in files:
        parts.append(f"<img src='{files['timeline']}' alt='embedding drift over time'>")
    for model, s in summary.items():
        ref, latest = s["reference"], s["latest"] or {}
        parts.append(f"<h2>{esc(model)}</h2><p>reference #{ref['id']} ({'pinned' if ref['pinned'] else 'first samples'}, "
                     f"{ref['n']} samples, {esc(ref['window_start'])} – {esc(ref['window_end'])}); "
                     f"{s['windows_tested']} windows tested, {s['windows_drifted']} drifted; feature p-value threshold "
                     f"{ref['p_threshold']:.2e} (target false-alarm rate {ref['target_false_alarm_rate']} per "
                     f"{ref['horizon']} requests)</p>")
        if s["alert"]:
            parts.append(f"<p class='drift'>input_drift alert firing since {esc(s['alert']['started_at'])}: "
                         f"{esc(s['alert']['summary'] or '')}</p>")
        parts.append(f"<h3>Newest window ({esc(str(latest.get('start')))} – {esc(str(latest.get('end')))})</h3>"
                     "<table><tr><th>feature</th><th>test</th><th>p-value</th><th>effect</th><th>new share</th></tr>")
        for name, f in s["features"].items():
            cls = " class='drift'" if f.get("drift") else ""
            p = f"{f['p_value']:.2e}" if f.get("p_value") is not None else "–"
            eff = f"{f['effect']:+.3f}" if f.get("effect") is not None else "–"
            new = f"{f['new_share']:.0%}" if f.get("new_share") is not None else ""
            parts.append(f"<tr{cls}><td>{esc(name)}</td><td>{esc(str(f.get('test')))}</td><td>{p}</td><td>{eff}</td>"
                         f"<td>{new}</td></tr>")
        parts.append("</table><h3>Prompt templates (shares)</h3><table><tr><th>template id</th><th>reference</th>"
                     "<th>newest window</th></tr>")
        t_ref, t_cur = s["templates"]["reference"] or {}, s["templates"]["latest_window"] or {}
        for t in sorted(set(t_ref) | set(t_cur)):
            parts.append(f"<tr><td><code>{esc(t)}</code></td><td>{t_ref.get(t, 0):.1%}</td><td>{t_cur.get(t, 0):.1%}</td></tr>")
        parts.append("</table>")
        alert_row = session.scalars(select(Alert).where(Alert.rule == "input_drift", Alert.model == model)
                                    .order_by(Alert.started_at.desc())).first()
        ids = list(((alert_row.evidence or {}).get("sample_ids") or [])) if alert_row is not None else []
        thumbs = _thumbnails(session, ids) if ids else []
        if thumbs:
            parts.append("<h3>Samples of the drifted window (images still kept)</h3>"
                         + "".join(f"<img src='{u}' width='96' style='margin:2px'>" for u in thumbs))
    (out_dir / INPUT_DRIFT_FILES["html"]).write_text("\n".join(parts), encoding="utf-8")
    return files
