"""``probe train``: label, extract every layer, sweep, calibrate, save the artifact."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from monitor.calibration.metrics import signal_metrics
from monitor.probe.artifact import ProbeArtifact, ProbeMeta, file_sha256, save_artifact
from monitor.probe.extract import run_pass
from monitor.probe.head import DEFAULT_POOLINGS, LOGPROB_POOLINGS
from monitor.probe.samples import AnswerSource, ProbeSample, label_samples, open_image, read_samples
from monitor.probe.sweep import DEFAULT_CS, DEFAULT_LAYER_TOLERANCE, calibrate_head, make_splits, sweep

__all__ = ["MIN_TRAIN_SAMPLES", "TrainOptions", "parse_layers", "encode_samples", "train_probe", "train_on_features"]

log = logging.getLogger(__name__)


MIN_TRAIN_SAMPLES = 500  # under this `probe train` warns: its calib split (a fifth, under 100) gives AUROC CIs of +-0.1 or wider


@dataclass(frozen=True)
class TrainOptions:
    layers: str = "all"  # "all" or comma-separated layer indices (0 = embeddings)
    poolings: tuple[str, ...] = DEFAULT_POOLINGS  # answer_stats(_lp) only when asked for
    answers: AnswerSource = "auto"
    calibration: str = "platt"  # platt | temperature | isotonic (monitor.probe.calibrators)
    cs: tuple[float, ...] = DEFAULT_CS
    layer_tolerance: float = DEFAULT_LAYER_TOLERANCE  # prefer an earlier layer within this AUROC of the best
    batch_size: int = 16
    seed: int = 0
    threshold: float = 0.5  # on calibrated p_correct: >= threshold predicts "correct"
    bootstrap: int = 1000
    progress: bool = True
    # refit the chosen (layer, pooling, C) on train + select before calibrating: more data for the
    # head; the calib split, which neither fitting nor selection saw, still gives the honest estimate
    refit: bool = False


def parse_layers(spec: str, num_layers: int) -> list[int]:
    if spec.strip() == "all":
        return list(range(num_layers + 1))
    try:
        layers = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise ValueError(f"--layers must be 'all' or comma-separated integers, got {spec!r}") from None
    bad = [l for l in layers if not 0 <= l <= num_layers]
    if not layers or bad:
        raise ValueError(f"--layers {spec!r}: layers must lie in 0..{num_layers} (0 = embeddings)")
    return layers


def encode_samples(adapter: Any, samples: Sequence[ProbeSample], progress: bool = True) -> list[Any]:
    from monitor.progress import track

    return [
        adapter.encode(open_image(s.image), s.prompt, s.answer)
        for s in track(samples, desc="encoding", unit="sample", enabled=progress)
    ]


def _labels_sha256(samples: Sequence[ProbeSample]) -> str:
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps([s.id, s.answer, s.label]).encode() + b"\n")
    return h.hexdigest()


def train_on_features(
    features: dict[str, np.ndarray],
    labels: np.ndarray,
    groups: Sequence[str],
    layers: list[int],
    *,
    adapter_info: dict[str, Any],
    training_data: dict[str, Any],
    options: TrainOptions,
    out: str | Path,
) -> ProbeArtifact:
    """Sweep, calibrate and save, given pooled features ``[N, len(layers), H]`` per pooling."""
    y = np.asarray(labels).astype(bool)
    splits = make_splits(y, groups, seed=options.seed)
    res = sweep(features, y, splits, layers, cs=options.cs, seed=options.seed, layer_tolerance=options.layer_tolerance,
                progress=options.progress)
    j = layers.index(res.layer)
    x = features[res.pooling][:, j]
    fitted = res.head
    if options.refit:
        from monitor.probe.sweep import fit_head
        from threadpoolctl import threadpool_limits

        both = np.concatenate([splits.train, splits.select])
        with threadpool_limits(limits=1 if x.shape[1] < 1024 else None):
            fitted = fit_head(x[both], y[both], res.c, options.seed)
    head = calibrate_head(fitted, x[splits.calib], y[splits.calib], options.calibration)
    calib = signal_metrics(head.predict(x[splits.calib]), y[splits.calib], n_boot=options.bootstrap, seed=options.seed)
    select = signal_metrics(res.head.logit(x[splits.select]), y[splits.select], n_boot=options.bootstrap,
                            seed=options.seed)
    fp = adapter_info["fingerprint"]
    created = datetime.now(timezone.utc)
    digest = hashlib.sha256(head.weight.tobytes() + fp.encode() + training_data["sha256"].encode()).hexdigest()
    meta = ProbeMeta(
        version=f"{created:%Y%m%dT%H%M%SZ}-l{res.layer}-{res.pooling}-{digest[:8]}",
        model_fingerprint=fp,
        model_family=adapter_info["family"],
        num_layers=adapter_info["num_layers"],
        hidden_size=head.hidden_size,
        layer=res.layer,
        pooling=res.pooling,
        threshold=options.threshold,
        calibration=options.calibration,
        c=res.c,
        training_data=training_data,
        splits={"train": len(splits.train), "select": len(splits.select), "calib": len(splits.calib)},
        metrics={
            "select_auroc": res.select_auroc,
            # selection picked the best of many candidates on this split: optimistic
            "select": {k: v for k, v in select.as_dict().items() if k in ("n", "auroc", "auroc_ci")},
            # neither fitting nor selection saw this split: the honest in-distribution estimate
            "calib": calib.as_dict(),
            "base_rate": float(y.mean()),
        },
        layer_auroc={k: [float(v) for v in c] for k, c in res.curves.items()},
        layers=list(layers),
        created_at=created.isoformat(),
        extra={"model_path": adapter_info.get("path"), "seed": options.seed, "cs": list(options.cs),
               "layer_tolerance": options.layer_tolerance, "refit": options.refit},
    )
    return save_artifact(out, meta, head)


def train_probe(model_dir: str | Path, data: str | Path, out: str | Path, options: TrainOptions = TrainOptions(),
                *, device: str = "auto", dtype: str = "auto", adapter: Any = None,
                samples: Sequence[ProbeSample] | None = None) -> ProbeArtifact:
    """The whole ``probe train`` pipeline; ``adapter`` may be passed in to reuse a loaded model, and
    ``samples``, the samples of ``data`` already labelled (:func:`label_samples`), to skip labelling again."""
    from monitor.adapter import load_vlm

    if adapter is None:
        adapter = load_vlm(model_dir, device=device, dtype=dtype)
    layers = parse_layers(options.layers, adapter.num_layers)
    if samples is None:
        samples = label_samples(adapter, read_samples(data), options.answers, progress=options.progress)
    elif any(s.label is None or s.answer is None for s in samples):
        raise ValueError("train_probe: the samples given must be labelled and answered (label_samples)")
    samples = list(samples)
    encs = encode_samples(adapter, samples, options.progress)
    full = any(p in LOGPROB_POOLINGS for p in options.poolings)  # those read the LM head: the full pass
    out_pass = run_pass(adapter, encs, layers, options.poolings, stop_at=None if full else max(layers), logits=full,
                        batch_size=options.batch_size, progress=options.progress)
    labels = np.array([bool(s.label) for s in samples])
    return train_on_features(
        out_pass.features, labels, [s.group for s in samples], layers,
        adapter_info={"fingerprint": adapter.fingerprint, "family": adapter.family,
                      "num_layers": adapter.num_layers, "path": str(Path(model_dir).resolve())},
        training_data={
            "path": str(Path(data).resolve()),
            "sha256": file_sha256(data),
            "labels_sha256": _labels_sha256(samples),
            "answers": options.answers,
            "n": len(samples),
            "n_correct": int(labels.sum()),
        },
        options=options,
        out=out,
    )
