"""Probe test fixtures: a private copy of the tiny LLaVA fixture and a probe artifact for it."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # the CI box has 2 cores shared by every job: more threads only oversubscribe them
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def llava_dir(tmp_path_factory):
    """A copy of the shipped tiny LLaVA (tests may 'redeploy' it by rewriting its weights)."""
    from monitor.fixtures.registry import fixture_dir

    dst = tmp_path_factory.mktemp("models") / "tiny-llava"
    shutil.copytree(fixture_dir("tiny-llava"), dst)
    return dst


@pytest.fixture(scope="session")
def llava(llava_dir):
    from monitor.adapter import load_vlm

    return load_vlm(llava_dir, device="cpu", dtype="float32")


def make_artifact(out, fingerprint: str, hidden: int, num_layers: int, layer: int = 2, pooling: str = "answer",
                  seed: int = 0, metrics: dict | None = None):
    """A probe artifact with random (unsaturated) weights for a given model fingerprint."""
    from monitor.probe.artifact import ProbeMeta, save_artifact
    from monitor.probe.head import ProbeHead

    rng = np.random.default_rng(seed)
    head = ProbeHead(weight=rng.normal(scale=0.2, size=hidden), bias=0.1)
    meta = ProbeMeta(
        version=f"test-l{layer}-{pooling}-{seed}", model_fingerprint=fingerprint, model_family="llava",
        num_layers=num_layers, hidden_size=hidden, layer=layer, pooling=pooling, threshold=0.5,
        calibration="platt", c=0.1, training_data={"sha256": "0" * 64, "n": 0}, splits={},
        metrics=metrics or {}, layer_auroc={pooling: [0.5] * (num_layers + 1)}, layers=list(range(num_layers + 1)),
        created_at=datetime.now(timezone.utc).isoformat(),
    )
    return save_artifact(out, meta, head, plot=False)


@pytest.fixture()
def synpope_items():
    """A few SynPOPE questions about rendered images, as daemon ScoreInput-like items."""
    import io

    from monitor.daemon.scoring import ScoreInput
    from monitor.synpope.generate import iter_examples

    items = []
    for i, ex in enumerate(iter_examples("adversarial", 9, seed=5)):
        buf = io.BytesIO()
        ex.image.save(buf, format="PNG")
        # vary the answer length so that length bucketing has something to sort
        answer = ex.truth if i % 3 else f"{ex.truth}, I think there is"
        items.append(ScoreInput(f"s{i}", "tiny-llava", ex.prompt, answer, buf.getvalue(), {}))
    return items


def redeploy(model_dir):
    """Rewrite the weights with one tensor nudged: a new deploy of 'the same' model."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    tensors = load_file(str(path))
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(path), metadata={"format": "pt"})


def deploy_with_probe(tmp_path, llava_dir, llava, sessions, **settings_kw):
    """A private copy of the tiny LLaVA served as ``tiny-llava`` with a registered probe for it.

    Returns ``(deploy folder, probe artifact, Settings)``; ``settings_kw`` adds config sections.
    """
    import shutil

    from monitor.config import ModelEntry, Settings
    from monitor.probe.registry import register_probe

    deploy = tmp_path / "deploy"
    shutil.copytree(llava_dir, deploy)
    art = make_artifact(tmp_path / "probe", llava.fingerprint, llava.model.config.get_text_config().hidden_size,
                        llava.num_layers)
    with sessions() as s:
        register_probe(s, "tiny-llava", art)
        s.commit()
    settings = Settings(scoring={"device": "cpu", "dtype": "float32"},
                        models={"tiny-llava": ModelEntry(path=str(deploy))}, **settings_kw)
    return deploy, art, settings
