"""A synthetic served model for recalibration tests (a helper, not a test module).

A probe head on 32-dimensional "hidden states" is registered as the active probe of model ``m``;
labelled samples get the scores that head gives (stored as the daemon stores them) and outcomes
drawn from ``sigmoid(slope * logit + shift)``: slope 1, shift 0 is a calibrated probe; a shift
moves calibration and keeps the ranking; slope 0 breaks the ranking.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

from tests.probe.conftest import make_artifact

__all__ = ["MODEL", "HIDDEN", "T0", "make_probe", "seed_labels", "draw", "config_file"]

MODEL = "m"
HIDDEN = 32
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def draw(head, n: int, *, slope: float, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states and outcomes: ``y ~ Bernoulli(sigmoid(slope * head.logit(x) + shift))``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=2.0, size=(n, HIDDEN)).astype(np.float32)
    z = head.logit(x)
    y = rng.random(n) < 1 / (1 + np.exp(-(slope * z + shift)))
    return x, y


def make_probe(tmp_path: Path, sessions, *, activate: bool = True, model: str = MODEL):
    """Register a probe whose held-out training metrics are its calibrated AUROC (n = 400)."""
    from monitor.calibration.metrics import window_metrics
    from monitor.probe.registry import register_probe

    probe = make_artifact(tmp_path / "probes" / "v1", "f" * 64, HIDDEN, 4, seed=3)
    x, y = draw(probe.head, 400, slope=1.0, shift=0.0, seed=99)
    calib = window_metrics(probe.head.predict(x), y, bootstrap=500)
    probe = make_artifact(tmp_path / "probes" / "v1", "f" * 64, HIDDEN, 4, seed=3,
                          metrics={"calib": {k: calib[k] for k in ("n", "auroc", "auroc_ci", "ece_mass")}})
    with sessions() as s:
        pv = register_probe(s, model, probe, activate=activate)
        s.commit()
        return probe, pv.id


def seed_labels(sessions, head, pv_id: int, n: int, *, slope: float, shift: float, seed: int, start: datetime = T0,
                prefix: str = "s", model: str = MODEL) -> tuple[np.ndarray, np.ndarray]:
    """``n`` labelled samples scored by probe version ``pv_id`` (one a second from ``start``)."""
    from monitor.daemon.leases import write_scores
    from storage.records import SampleRecord
    from storage.repo_samples import ingest_samples

    x, y = draw(head, n, slope=slope, shift=shift, seed=seed)
    p = head.predict(x).astype(np.float32)  # what the ONNX head returns
    records = [SampleRecord(id=f"{prefix}{i:04d}", model=model, prompt="Is there a cat?", answer="yes",
                            ts=start + timedelta(seconds=i), label=bool(y[i])) for i in range(n)]
    with sessions.begin() as s:
        ingest_samples(s, records, label_source="ground_truth")
    with sessions() as s:
        write_scores(s, "test", [{"sample_id": r.id, "probe_version_id": pv_id, "p_correct": float(p[i])}
                                 for i, r in enumerate(records)])
    return x, y


def config_file(tmp_path: Path, db_url: str, extra: str = "", calibration: str = "") -> Path:
    """A config on ``db_url``; ``extra``: more top-level YAML, ``calibration``: more keys of that section."""
    cfg = tmp_path / "vlmwatch.yaml"
    cfg.write_text(f"storage:\n  url: {db_url}\ncalibration:\n  bootstrap: 200\n{calibration}{extra}")
    return cfg
