import json

import numpy as np
import pytest
import torch

from monitor.probe.artifact import ProbeMeta, load_artifact, save_artifact
from monitor.probe.head import ProbeHead, export_onnx, torch_head
from monitor.probe.runner import OnnxHeadRunner


def _head(h=64, seed=0):
    rng = np.random.default_rng(seed)
    return ProbeHead(weight=rng.normal(scale=0.3, size=h), bias=0.2)


def _meta(head, **kw):
    base = dict(
        version="v-test", model_fingerprint="ab" * 32, model_family="llava", num_layers=4,
        hidden_size=head.hidden_size, layer=2, pooling="answer", threshold=0.5, calibration="platt",
        c=0.1, training_data={"sha256": "0" * 64, "n": 10}, splits={"train": 6, "select": 2, "calib": 2},
        metrics={"select_auroc": 0.9}, layer_auroc={"answer": [0.5, 0.6, 0.9, 0.8, 0.7]},
        layers=[0, 1, 2, 3, 4], created_at="2026-01-01T00:00:00+00:00",
    )
    base.update(kw)
    return ProbeMeta(**base)


def test_onnx_and_torch_heads_agree_within_1e_5(tmp_path):
    head = _head()
    rng = np.random.default_rng(1)
    # hidden states of a real decoder have large-norm outliers; include some
    x = rng.normal(scale=3.0, size=(257, head.hidden_size)).astype(np.float32)
    x[:5] *= 20
    runner = OnnxHeadRunner(export_onnx(head, tmp_path / "h.onnx"), head, device="cpu")
    assert runner.providers == ["CPUExecutionProvider"]
    with torch.inference_mode():
        ref = torch_head(head)(torch.from_numpy(x))[:, 0].numpy()
    got = runner(x)
    assert np.abs(got - ref).max() < 1e-5
    assert np.abs(got - head.predict(x)).max() < 1e-5
    assert 0.01 < got.mean() < 0.99  # not saturated: the comparison means something


def test_onnx_runner_rejects_wrong_width(tmp_path):
    head = _head()
    runner = OnnxHeadRunner(export_onnx(head, tmp_path / "h.onnx"), head, device="cpu")
    with pytest.raises(ValueError, match=r"\[N, 64\]"):
        runner(np.zeros((3, 32), np.float32))


def test_platt_and_standardisation_fold_into_weights():
    rng = np.random.default_rng(2)
    mean, scale = rng.normal(size=8), rng.uniform(0.5, 2, size=8)
    coef, icpt = rng.normal(size=8), 0.3
    head = ProbeHead.from_standardised(coef, icpt, mean, scale).with_platt(0.7, -0.1)
    x = rng.normal(size=(20, 8))
    want = 0.7 * (((x - mean) / scale) @ coef + icpt) - 0.1
    assert np.allclose(head.logit(x), want, atol=1e-5)


def test_artifact_roundtrip_with_isotonic_table(tmp_path):
    head = _head().with_isotonic(np.array([0.0, 0.5, 1.0]), np.array([0.1, 0.2, 0.9]))
    art = save_artifact(tmp_path / "probe", _meta(head, calibration="isotonic"), head)
    assert (art.path / "layer_auroc.png").stat().st_size > 1000
    back = load_artifact(art.path)
    assert back.meta == art.meta
    x = np.random.default_rng(4).normal(size=(9, 64)).astype(np.float32)
    runner = OnnxHeadRunner(back.onnx_path, back.head, device="cpu")
    assert np.abs(runner(x) - head.predict(x)).max() < 1e-5
    assert np.all((runner(x) >= 0.1 - 1e-6) & (runner(x) <= 0.9 + 1e-6))


def test_load_artifact_names_what_is_wrong(tmp_path):
    head = _head()
    art = save_artifact(tmp_path / "p", _meta(head), head, plot=False)
    (art.path / "head.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="head.onnx is missing"):
        load_artifact(art.path)
    art = save_artifact(tmp_path / "q", _meta(head), head, plot=False)
    data = json.loads((art.path / "metadata.json").read_text())
    data["format_version"] = 99
    (art.path / "metadata.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="format_version 99"):
        load_artifact(art.path)
