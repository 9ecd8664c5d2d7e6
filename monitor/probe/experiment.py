"""The SynPOPE probe experiment: train on one adversarial set, compare signals on another.

Used by the acceptance test (``tests/probe/test_acceptance.py``) and by ``bench/probe_compare.py``,
which commits the measured report. Both sets are honest (the model's own greedy answers,
labelled against the truth) and drawn with different seeds, so the test set's scenes and
questions are unseen.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Experiment", "run_experiment"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Experiment:
    train_split: str = "adversarial"
    test_split: str = "adversarial"
    train_seed: int = 101
    test_seed: int = 202
    n_train: int = 1500
    n_test: int = 1200  # >= 1,000 held-out samples: AUROC CIs narrower than about +-0.035
    bootstrap: int = 1000
    batch_size: int = 32
    self_consistency_k: int = 0
    task: str = "yesno"  # a SynPOPE task, or "mix"


def _write_split(split: str, n: int, seed: int, out: Path, model_name: str, task: str) -> Path:
    from monitor.synpope.generate import SAMPLES_FILE, generate

    generate(split, n, seed, out=out, model=model_name, task=task)
    return out / SAMPLES_FILE


def run_experiment(model_dir: str | Path, work: str | Path, exp: Experiment = Experiment(), *,
                   progress: bool = False, device: str = "cpu") -> tuple[dict[str, Any], Any]:
    """Train a probe and compare the signals; returns (compare document, probe artifact)."""
    from monitor.adapter import load_vlm
    from monitor.probe.compare import compare_signals
    from monitor.probe.samples import label_samples, read_samples
    from monitor.probe.train import TrainOptions, train_probe

    work = Path(work)
    name = Path(model_dir).name
    train_file = _write_split(exp.train_split, exp.n_train, exp.train_seed, work / "train", name, exp.task)
    test_file = _write_split(exp.test_split, exp.n_test, exp.test_seed, work / "test", name, exp.task)
    adapter = load_vlm(model_dir, device=device, dtype="float32" if device == "cpu" else "auto")
    artifact = train_probe(model_dir, train_file, work / "probe",
                           TrainOptions(batch_size=exp.batch_size, bootstrap=exp.bootstrap, progress=progress),
                           adapter=adapter)
    test = label_samples(adapter, read_samples(test_file), "auto", progress=progress)
    doc = compare_signals(adapter, artifact, test, served_name=name, batch_size=exp.batch_size,
                          n_boot=exp.bootstrap, self_consistency_k=exp.self_consistency_k, progress=progress)
    doc["experiment"] = {
        **exp.__dict__,
        "train": {"file": train_file.name, "n": artifact.meta.training_data["n"],
                  "n_correct": artifact.meta.training_data["n_correct"]},
        "probe_selection": {"layer_auroc": artifact.meta.layer_auroc, "layers": artifact.meta.layers,
                            "calib_split": artifact.meta.metrics["calib"]},
    }
    log.info("experiment: %s", json.dumps({k: doc["signals"][k]["auroc"] for k in doc["signals"]}))
    return doc, artifact
