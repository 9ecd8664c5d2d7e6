"""Report figures (matplotlib, Agg): reliability diagrams per window, metric timelines with alerts."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["report_windows", "reliability_table", "plot_reliability", "plot_timelines", "TIMELINE_METRICS"]

logger = logging.getLogger(__name__)

# (column in calibration history, its CI column in metrics, axis label)
TIMELINE_METRICS = (
    ("auroc", "auroc_ci", "AUROC (probe vs labels)"),
    ("ece", "ece_width_ci", "ECE (equal-width bins)"),
    ("agreement", "agreement_ci", "probe–label agreement"),
)
_SEVERITY_COLOURS = {"critical": "#c0392b", "warning": "#e67e22", "info": "#7f8c8d"}
_SOURCE_COLOURS = {"human": "#1f77b4", "combined": "#2ca02c", "self_consistency": "#9467bd"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def report_windows(labelled: pd.DataFrame, history: pd.DataFrame, max_windows: int = 6) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Windows for reliability diagrams: the calibration history's time windows when there are
    2..12 of them with labels, else ``max_windows`` consecutive windows of equal label count."""
    if labelled.empty:
        return []
    if not history.empty and "kind" in history:
        tw = history[history["kind"] == "time"][["window_start", "window_end"]].drop_duplicates().sort_values("window_start")
        spans = [(r.window_start, r.window_end) for r in tw.itertuples()
                 if ((labelled["ts"] >= r.window_start) & (labelled["ts"] < r.window_end)).sum() >= 10]
        if 2 <= len(spans) <= 12:
            return spans
    k = max(1, min(max_windows, len(labelled) // 30))
    parts = np.array_split(labelled.sort_values("ts")["ts"].to_numpy(), k)
    spans = []
    for i, p in enumerate(parts):
        lo = pd.Timestamp(p[0])
        hi = pd.Timestamp(parts[i + 1][0]) if i + 1 < len(parts) else pd.Timestamp(p[-1]) + pd.Timedelta(microseconds=1)
        spans.append((lo, hi))
    return spans


def reliability_table(p: np.ndarray, y: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Equal-width reliability bins: mean predicted, observed frequency, count, and the ECE."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    mean_p, freq, cnt = [], [], []
    for b in range(bins):
        m = idx == b
        cnt.append(int(m.sum()))
        mean_p.append(float(p[m].mean()) if m.any() else None)
        freq.append(float(y[m].mean()) if m.any() else None)
    ece = float(sum(c * abs(mp - f) for c, mp, f in zip(cnt, mean_p, freq) if c) / max(1, len(p)))
    return {"edges": edges.tolist(), "mean_p": mean_p, "freq": freq, "count": cnt, "ece": ece, "n": int(len(p)),
            "accuracy": float(y.mean()) if len(y) else None, "mean_score": float(p.mean()) if len(p) else None}


def plot_reliability(labelled: pd.DataFrame, spans: list[tuple[pd.Timestamp, pd.Timestamp]], out: Path,
                     bins: int = 10, shift_at: pd.Timestamp | None = None) -> list[dict[str, Any]]:
    """One reliability diagram per window in a grid; returns the per-window tables."""
    plt = _plt()
    n = max(1, len(spans))
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 4.2 * rows), squeeze=False)
    tables = []
    for i, (lo, hi) in enumerate(spans):
        ax = axes[i // cols][i % cols]
        w = labelled[(labelled["ts"] >= lo) & (labelled["ts"] < hi)]
        t = reliability_table(w["p_correct"].to_numpy(float), w["correct"].to_numpy(float), bins)
        t.update(window_start=lo.isoformat(), window_end=hi.isoformat())
        tables.append(t)
        centres = (np.array(t["edges"][:-1]) + np.array(t["edges"][1:])) / 2
        freq = np.array([np.nan if f is None else f for f in t["freq"]])
        ax.bar(centres, np.nan_to_num(freq), width=1.0 / bins, edgecolor="#1f77b4", color="#aec7e8", label="observed accuracy")
        ax.plot([0, 1], [0, 1], "--", color="grey", lw=1, label="perfect calibration")
        mp = np.array([np.nan if v is None else v for v in t["mean_p"]])
        ax.plot(mp, freq, "o-", color="#d62728", ms=3, lw=1, label="mean score → accuracy")
        for c, f, k in zip(centres, freq, t["count"]):
            if k:
                ax.text(c, min(0.97, (0 if np.isnan(f) else f) + 0.02), str(k), ha="center", fontsize=6, color="#555")
        after = shift_at is not None and lo >= shift_at
        ax.set_title(f"{lo:%m-%d %H:%M:%S} – {hi:%H:%M:%S}\nn={t['n']}  ECE={t['ece']:.3f}  acc={t['accuracy'] or 0:.2f}"
                     + ("  (after shift)" if after else ""), fontsize=8, color="#c0392b" if after else "black")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("probe p_correct", fontsize=8)
        ax.set_ylabel("fraction correct (labels)", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6, loc="upper left")
    for j in range(len(spans), rows * cols):
        axes[j // cols][j % cols].axis("off")
    if not spans:
        axes[0][0].text(0.5, 0.5, "no labelled samples in the period", ha="center", va="center")
    fig.suptitle("Reliability diagrams per window (probe score vs ground-truth/human labels)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return tables


def _ci(series: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = [], []
    for v in series:
        if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] is not None and v[1] is not None:
            lo.append(float(v[0]))
            hi.append(float(v[1]))
        else:
            lo.append(np.nan)
            hi.append(np.nan)
    return np.array(lo), np.array(hi)


def plot_timelines(history: pd.DataFrame, alerts: pd.DataFrame, out: Path, shift_at: pd.Timestamp | None = None) -> dict[str, Any]:
    """AUROC / ECE / agreement over time (line: estimate, band: 95% CI) with alert markers."""
    plt = _plt()
    fig, axes = plt.subplots(len(TIMELINE_METRICS), 1, figsize=(10, 8.5), sharex=True)
    drawn: dict[str, Any] = {"series": {}, "alerts": 0}
    h = history
    kind = None
    if not h.empty:
        # time windows give one point per window over the whole period; the rolling row of a
        # source keeps one key until calibration.rolling_n labels exist, so it is a short series
        n_time = h[h["kind"] == "time"]["window_start"].nunique()
        kind = "time" if n_time >= 3 or not (h["kind"] == "rolling").any() else "rolling"
        h = h[(h["kind"] == kind)]
    for ax, (col, ci_col, label) in zip(axes, TIMELINE_METRICS):
        if not h.empty and col in h:
            for (model, source), g in h.groupby(["model", "source"]):
                g = g.sort_values("window_end")
                g = g[g[col].notna()]
                if g.empty:
                    continue
                x = g["window_end"].dt.tz_convert(None)
                colour = _SOURCE_COLOURS.get(str(source), None)
                ax.plot(x, g[col], "-o", ms=2.5, lw=1.2, color=colour, label=f"{model} · {source}")
                if ci_col in g:
                    lo, hi = _ci(g[ci_col])
                    ax.fill_between(x, lo, hi, color=colour, alpha=0.2, lw=0)
                part = g[g["partial"].astype(bool)]
                if not part.empty:
                    ax.plot(part["window_end"].dt.tz_convert(None), part[col], "o", ms=4, mfc="white",
                            color=colour, label="partial window (too few labels to alert)")
                drawn["series"][f"{col}:{model}:{source}"] = int(len(g))
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for i, a in enumerate(alerts.itertuples() if not alerts.empty else ()):
        colour = _SEVERITY_COLOURS.get(a.severity, "black")
        for ax in axes:
            ax.axvline(a.started_at.tz_convert(None), color=colour, lw=1.4, ls="-", alpha=0.9)
            if pd.notna(a.resolved_at):
                ax.axvline(a.resolved_at.tz_convert(None), color=colour, lw=1.0, ls=":", alpha=0.8)
        axes[i % len(axes)].annotate(f"{a.rule} ({a.severity})", xy=(a.started_at.tz_convert(None), 0.97),
                                     xycoords=("data", "axes fraction"), fontsize=7, color=colour, rotation=0,
                                     ha="left", va="top", backgroundcolor=(1, 1, 1, 0.7))
        drawn["alerts"] += 1
    if shift_at is not None:
        for ax in axes:
            ax.axvline(shift_at.tz_convert(None), color="black", ls="--", lw=1)
        axes[-1].annotate("shift injected", xy=(shift_at.tz_convert(None), 0.02), xycoords=("data", "axes fraction"),
                          fontsize=7, ha="right", rotation=90)
    if h.empty:
        axes[0].text(0.5, 0.5, "no calibration history in the period", transform=axes[0].transAxes, ha="center")
    uniq: dict[str, Any] = {}
    for ax in axes:
        handles, labels = ax.get_legend_handles_labels()
        uniq.update(zip(labels, handles))
    if uniq:
        axes[0].legend(uniq.values(), uniq.keys(), fontsize=7, loc="lower left")
    axes[-1].set_xlabel("window end (UTC)", fontsize=8)
    fig.suptitle(f"Calibration history ({kind or 'none'} windows): estimate with 95% CI band; "
                 "vertical lines = alerts (solid fired, dotted resolved)", fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn
