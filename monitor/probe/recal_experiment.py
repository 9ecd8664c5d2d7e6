"""The recalibration experiment on the demo's shift: does ``probe recalibrate`` restore calibration?

The demo's recipe (:class:`monitor.demo.plan.DemoPlan`): a probe trained on the stable split
(``base_split``) as ``vlmwatch demo`` trains it, then traffic from the shifted split with pixel
noise. Here, through storage and the daemon's own scorer:

1. ``n_fresh`` shifted samples, answered by the model (honest ground-truth labels), are ingested,
   scored by the active probe (:class:`~monitor.probe.scorer.ProbeScorer`, ONNX head) and labelled;
2. optionally ``n_reference`` stable labelled samples are pinned as the probe's reference first,
   as the demo does (else the reference AUROC is the probe's held-out training split);
3. :func:`monitor.probe.recalibrate.recalibrate_probe` runs on them (forced, so the figures exist
   even when the advice is to retrain);
4. ``n_test`` *other* shifted samples are scored by the old and the new artifact's ONNX heads:
   ECE (both binnings) and AUROC before/after, with paired bootstrap CIs of the differences, and
   the ECE each map reaches when fitted on the test set itself (the floor for that shift).

Used by ``tests/probe/test_recalibrate_demo_shift.py`` (small n) and ``bench/recalibration.py``.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from monitor.demo.plan import DemoPlan

__all__ = ["RecalExperiment", "run_recal_experiment", "paired_ece_delta"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecalExperiment:
    plan: DemoPlan = field(default_factory=DemoPlan)  # base split, shift split and noise, probe size, seed
    shift_noise: float | None = None  # None: the demo's plan.shift_noise; 0: the shifted split alone
    probe_train_n: int | None = None  # None: plan.probe_train_n, as the demo trains it
    n_fresh: int = 200  # shifted labelled samples recalibration fits on (<= recalibration.max_labels)
    n_test: int = 1000  # independent shifted samples the before/after is measured on
    n_reference: int = 0  # stable labelled samples pinned as the reference (the demo: plan.reference_n)
    method: str = "auto"
    fresh_seed: int = 1201
    test_seed: int = 1301
    reference_seed: int = 1401
    bootstrap: int = 1000
    batch_size: int = 32


def paired_ece_delta(before: np.ndarray, after: np.ndarray, y: np.ndarray, *, equal_mass: bool, bins: int = 10,
                     n_boot: int = 1000, seed: int = 0) -> tuple[float, tuple[float, float]]:
    """ECE(before) - ECE(after) on the same samples, with a paired-bootstrap 95% CI."""
    from monitor.calibration.metrics import ece

    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_boot, len(y)))
    deltas = np.array([ece(before[i], y[i], bins, equal_mass) - ece(after[i], y[i], bins, equal_mass) for i in idx])
    lo, hi = np.quantile(deltas, [0.025, 0.975])
    return ece(before, y, bins, equal_mass) - ece(after, y, bins, equal_mass), (float(lo), float(hi))


def _labelled(adapter: Any, split: str, n: int, seed: int, noise: float, prefix: str) -> list[Any]:
    """SynPOPE samples answered greedily by the model, labelled against the truth."""
    from monitor.probe.samples import ProbeSample, label_samples
    from monitor.synpope import Shift, iter_examples

    out = []
    for i, ex in enumerate(iter_examples(split, n, seed=seed, shift=Shift(noise=noise))):
        buf = io.BytesIO()
        ex.image.save(buf, format="PNG")
        out.append(ProbeSample(id=f"{prefix}{i:05d}", prompt=ex.prompt, image=buf.getvalue(), answer=None, label=None,
                               truth=ex.truth, group=f"{prefix}{i}", meta={}))
    return label_samples(adapter, out, "auto", progress=False)


def _store_and_score(sessions: Any, adapter: Any, artifact: Any, pv_id: int, model: str, samples: list[Any],
                     t0: Any, batch_size: int) -> tuple[Any, Any]:
    """Ingest labelled samples (ground truth), score them as the daemon does; returns their (start, end)."""
    from monitor.daemon.leases import write_scores
    from monitor.daemon.scoring import ScoreInput
    from monitor.probe.scorer import ProbeScorer, ScorerOptions
    from storage.records import SampleRecord
    from storage.repo_samples import ingest_samples

    records = [SampleRecord(id=s.id, model=model, prompt=s.prompt, answer=s.answer, image=s.image, label=s.label,
                            ts=t0 + timedelta(seconds=i)) for i, s in enumerate(samples)]
    with sessions.begin() as s:
        ingest_samples(s, records, label_source="ground_truth")
    scorer = ProbeScorer(adapter, artifact, served_name=model, probe_version_id=pv_id,
                         options=ScorerOptions(batch_size=batch_size, device="cpu", attention_signals=False,
                                               image_cache_size=0))
    items = [ScoreInput(r.id, model, r.prompt, r.answer, r.image) for r in records]
    rows = [res.score_row(item.sample_id, pv_id) for res, item in zip(scorer.score(items), items)]
    with sessions() as s:
        write_scores(s, "recal-experiment", rows)
    return records[0].ts, records[-1].ts + timedelta(seconds=1)


def _train_probe(adapter: Any, model_dir: Path, work: Path, exp: RecalExperiment) -> Any:
    """The demo's probe: ``plan.probe_train_n`` labelled samples of the stable split (monitor.demo.setup)."""
    from monitor.probe.train import TrainOptions, train_probe
    from monitor.synpope import generate

    plan = exp.plan
    data = work / "probe-data"
    generate(plan.base_split, exp.probe_train_n or plan.probe_train_n, seed=plan.seed + 7, out=data, model=plan.model)
    return train_probe(model_dir, data / "samples.jsonl", work / "probes" / plan.model,
                       TrainOptions(progress=False, seed=plan.seed, bootstrap=200), adapter=adapter)


def run_recal_experiment(model_dir: str | Path, work: str | Path, exp: RecalExperiment = RecalExperiment(), *,
                         adapter: Any = None, probe: Any = None) -> dict[str, Any]:
    """Run the experiment in ``work`` (a fresh folder); ``probe``: an artifact to reuse instead of training."""
    from monitor.adapter import load_vlm
    from monitor.calibration.metrics import ece, paired_auroc_delta, window_metrics
    from monitor.calibration.reference import set_reference
    from monitor.config import ModelEntry, Settings
    from monitor.probe.calibrators import METHODS, fit_calibrator, logit
    from monitor.probe.extract import probe_pass_args, run_pass
    from monitor.probe.recalibrate import RecalibrationRequest, recalibrate_probe
    from monitor.probe.registry import register_probe
    from monitor.probe.runner import OnnxHeadRunner
    from monitor.probe.train import encode_samples
    from storage.db import engine_for, session_factory, upgrade
    from storage.models import utcnow

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    plan = exp.plan
    noise = plan.shift_noise if exp.shift_noise is None else exp.shift_noise
    adapter = adapter or load_vlm(model_dir, device="cpu", dtype="float32")
    probe = probe or _train_probe(adapter, Path(model_dir), work, exp)
    url = f"sqlite:///{work / 'recal.sqlite'}"
    upgrade(url)
    settings = Settings(storage={"url": url}, models={plan.model: ModelEntry(path=str(model_dir))},
                        calibration={"bootstrap": exp.bootstrap}, recalibration={"max_labels": exp.n_fresh,
                                                                                  "probe_dir": str(work / "recalibrated")})
    engine = engine_for(settings.storage)
    sessions = session_factory(engine)
    try:
        with sessions() as s:
            pv_id = register_probe(s, plan.model, probe, activate=True).id
            s.commit()
        t0 = utcnow() - timedelta(hours=2)
        if exp.n_reference:
            ref_samples = _labelled(adapter, plan.base_split, exp.n_reference, exp.reference_seed, 0.0, "ref-")
            window = _store_and_score(sessions, adapter, probe, pv_id, plan.model, ref_samples, t0, exp.batch_size)
            with sessions() as s:
                set_reference(s, settings, plan.model, *window)
                s.commit()
        fresh = _labelled(adapter, plan.shift_split, exp.n_fresh, exp.fresh_seed, noise, "fresh-")
        _store_and_score(sessions, adapter, probe, pv_id, plan.model, fresh, t0 + timedelta(hours=1), exp.batch_size)
        with sessions() as s:
            result = recalibrate_probe(s, settings, RecalibrationRequest(model=plan.model, method=exp.method, force=True))
            s.commit()
    finally:
        engine.dispose()
    test = _labelled(adapter, plan.shift_split, exp.n_test, exp.test_seed, noise, "test-")
    meta = probe.meta
    feats = run_pass(adapter, encode_samples(adapter, test, False), [meta.layer], [meta.pooling],
                     **probe_pass_args(meta.layer, meta.pooling),
                     batch_size=exp.batch_size).features[meta.pooling][:, 0]
    y = np.array([bool(t.label) for t in test], dtype=float)
    new = result.artifact
    p_old = OnnxHeadRunner(probe.onnx_path, probe.head, device="cpu")(feats)
    p_new = OnnxHeadRunner(new.onnx_path, new.head, device="cpu")(feats)
    bins = settings.calibration.bins
    held_out: dict[str, Any] = {
        "n": len(y), "accuracy": float(y.mean()),
        "before": window_metrics(p_old, y, threshold=meta.threshold, bins=bins, bootstrap=exp.bootstrap),
        "after": window_metrics(p_new, y, threshold=meta.threshold, bins=bins, bootstrap=exp.bootstrap),
    }
    for key, mass in (("ece_mass", True), ("ece_width", False)):
        d, ci = paired_ece_delta(p_old, p_new, y, equal_mass=mass, bins=bins, n_boot=exp.bootstrap)
        held_out[f"{key}_reduction"], held_out[f"{key}_reduction_ci"] = d, list(ci)
    # what each map reaches when fitted on the test set itself: the floor for this shift and n
    held_out["in_sample_ece_mass"] = {m: ece(fit_calibrator(m, logit(p_old), y).apply(logit(p_old)), y, bins, True)
                                      for m in METHODS}
    d, ci = paired_auroc_delta(p_new, p_old, y, n_boot=exp.bootstrap)
    held_out["auroc_change"], held_out["auroc_change_ci"] = d, list(ci)
    report = result.report
    log.info("recalibration experiment (noise %.2f): %s, held-out ECE %.3f -> %.3f, AUROC %.3f -> %.3f; advice %s",
             noise, report["selection"]["method"], held_out["before"]["ece_mass"], held_out["after"]["ece_mass"],
             held_out["before"]["auroc"], held_out["after"]["auroc"], report["advice"]["action"])
    return {
        "experiment": {**asdict(exp), "shift_noise": noise, "plan": asdict(plan)},
        "probe": {"version": meta.version, "layer": meta.layer, "pooling": meta.pooling,
                  "train_split": plan.base_split, "calib": meta.metrics.get("calib")},
        "recalibration": report,  # what `vlmwatch probe recalibrate --json` prints
        "new_version": new.meta.version,
        "held_out_shifted": held_out,
        "_artifacts": {"old": probe, "new": new},
    }
