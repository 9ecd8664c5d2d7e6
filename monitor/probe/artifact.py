"""The versioned probe artifact folder: weights, ONNX head, metadata, per-layer AUROC plot.

Layout of ``PROBE_DIR``::

    head.safetensors   weight [H], bias [1], iso_x / iso_y (isotonic table, may be empty)
    head.onnx          Sigmoid(MatMul(hidden, W) + b), input "hidden" [N, H], output "p_correct" [N, 1]
    metadata.json      see ``ProbeMeta`` (format_version 1)
    layer_auroc.png    held-out AUROC per layer, one line per pooling
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from monitor.probe.head import POOLINGS, ProbeHead, export_onnx

__all__ = [
    "FORMAT_VERSION",
    "ProbeMeta",
    "ProbeArtifact",
    "save_artifact",
    "load_artifact",
    "file_sha256",
    "plot_layer_auroc",
]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEAD_FILE = "head.safetensors"
ONNX_FILE = "head.onnx"
META_FILE = "metadata.json"
PLOT_FILE = "layer_auroc.png"


@dataclass(frozen=True)
class ProbeMeta:
    version: str
    model_fingerprint: str
    model_family: str
    num_layers: int
    hidden_size: int
    layer: int
    pooling: str
    threshold: float
    calibration: str
    c: float
    training_data: dict[str, Any]  # path, sha256, n, n_correct
    splits: dict[str, int]
    metrics: dict[str, Any]  # select_auroc, calib split metrics with CIs
    layer_auroc: dict[str, list[float]]  # pooling -> held-out AUROC per entry of ``layers``
    layers: list[int]
    created_at: str
    format_version: int = FORMAT_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProbeMeta:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"probe metadata format_version {data.get('format_version')!r} is not supported "
                f"(this build reads {FORMAT_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        missing = known - set(data) - {"extra"}
        if missing:
            raise ValueError(f"probe metadata lacks {', '.join(sorted(missing))}")
        meta = cls(**{k: v for k, v in data.items() if k in known})
        if meta.pooling not in POOLINGS:
            raise ValueError(f"probe metadata has unknown pooling {meta.pooling!r}")
        return meta


@dataclass(frozen=True)
class ProbeArtifact:
    path: Path
    meta: ProbeMeta
    head: ProbeHead

    @property
    def onnx_path(self) -> Path:
        return self.path / ONNX_FILE


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_artifact(out: str | Path, meta: ProbeMeta, head: ProbeHead, *, plot: bool = True) -> ProbeArtifact:
    """Write the artifact folder (created if needed; files in it are replaced)."""
    from safetensors.numpy import save_file

    if head.hidden_size != meta.hidden_size:
        raise ValueError(f"head has hidden size {head.hidden_size}, metadata says {meta.hidden_size}")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        {
            "weight": head.weight,
            "bias": np.array([head.bias], np.float32),
            "iso_x": head.iso_x,
            "iso_y": head.iso_y,
        },
        str(path / HEAD_FILE),
        metadata={"version": meta.version, "layer": str(meta.layer), "pooling": meta.pooling},
    )
    export_onnx(head, path / ONNX_FILE)
    (path / META_FILE).write_text(json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
    if plot:
        plot_layer_auroc(meta, path / PLOT_FILE)
    log.info("saved probe %s (layer %d, %s) to %s", meta.version, meta.layer, meta.pooling, path)
    return ProbeArtifact(path, meta, head)


def load_artifact(path: str | Path) -> ProbeArtifact:
    """Read an artifact folder; raises ``FileNotFoundError``/``ValueError`` naming what is wrong."""
    from safetensors.numpy import load_file

    p = Path(path)
    for name in (HEAD_FILE, ONNX_FILE, META_FILE):
        if not (p / name).is_file():
            raise FileNotFoundError(f"{p} is not a probe artifact: {name} is missing")
    try:
        meta = ProbeMeta.from_dict(json.loads((p / META_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise ValueError(f"{p / META_FILE} is not valid JSON: {e}") from None
    t = load_file(str(p / HEAD_FILE))
    head = ProbeHead(weight=t["weight"], bias=float(t["bias"][0]), iso_x=t["iso_x"], iso_y=t["iso_y"])
    if head.hidden_size != meta.hidden_size:
        raise ValueError(f"{p}: head weights have size {head.hidden_size}, metadata says {meta.hidden_size}")
    return ProbeArtifact(p, meta, head)


def plot_layer_auroc(meta: ProbeMeta, out: str | Path) -> Path:
    """Held-out AUROC per layer, one line per pooling, the chosen probe marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    # one-token answers make "answer" and "answer_mean" identical: distinct styles keep both visible
    styles = {"answer": ("o", "-"), "prompt_last": ("s", "-"), "answer_mean": ("^", "--"), "answer_stats": ("D", "-"),
              "answer_stats_lp": ("v", "--")}
    for pooling, curve in meta.layer_auroc.items():
        marker, line = styles.get(pooling, ("o", "-"))
        ax.plot(meta.layers, curve, marker=marker, linestyle=line, label=pooling, alpha=0.85)
    chosen = meta.layer_auroc[meta.pooling][meta.layers.index(meta.layer)]
    ax.scatter([meta.layer], [chosen], s=160, facecolors="none", edgecolors="black", zorder=5,
               label=f"chosen: layer {meta.layer}, {meta.pooling} ({chosen:.3f})")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel("held-out AUROC (select split)")
    ax.set_title(f"probe {meta.version}: AUROC by layer")
    ax.set_xticks(meta.layers if len(meta.layers) <= 40 else meta.layers[:: max(1, len(meta.layers) // 20)])
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out
