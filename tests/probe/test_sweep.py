import numpy as np
import pytest

from monitor.calibration.metrics import auroc, ece
from monitor.probe.sweep import calibrate_head, make_splits, sweep


def _features(n=900, layers=4, h=16, seed=0):
    """Correctness is linearly readable at layer 2 with 'answer' pooling only."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.65
    feats = {p: rng.normal(size=(n, layers, h)) for p in ("answer", "prompt_last")}
    direction = rng.normal(size=h)
    feats["answer"][:, 2] += 1.2 * np.outer(y - 0.5, direction) / np.linalg.norm(direction) * 2
    feats["answer"][:, 1] += 0.3 * np.outer(y - 0.5, direction) / np.linalg.norm(direction) * 2
    groups = [f"img{i // 3}" for i in range(n)]
    return feats, y, groups


def test_splits_keep_groups_together_and_are_disjoint():
    _, y, groups = _features()
    s = make_splits(y, groups, seed=1)
    parts = [set(np.asarray(groups)[i]) for i in (s.train, s.select, s.calib)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(s.train) + len(s.select) + len(s.calib) == len(y)


def test_splits_refuse_single_class_data():
    with pytest.raises(ValueError, match="lacks correct or incorrect"):
        make_splits(np.ones(30, bool))


def test_sweep_finds_the_informative_layer_and_pooling():
    feats, y, groups = _features()
    s = make_splits(y, groups)
    res = sweep(feats, y, s, layers=[0, 1, 2, 3])
    assert (res.layer, res.pooling) == (2, "answer")
    assert res.select_auroc > 0.85
    assert res.curves["answer"][2] == pytest.approx(res.select_auroc)
    assert max(res.curves["prompt_last"]) < 0.65  # noise layers stay near chance


def test_the_layer_sweep_reports_progress_per_layer_and_pooling(capsys):
    feats, y, groups = _features(n=300)
    s = make_splits(y, groups)
    sweep(feats, y, s, layers=[0, 1, 2, 3], progress=True)
    err = capsys.readouterr().err  # not a terminal here: one line for the stage
    assert err.startswith("layer sweep: 8 layer in ") and err.count("\n") == 1
    sweep(feats, y, s, layers=[0, 1, 2, 3])
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic"])
def test_calibration_on_a_separate_split_lowers_ece(method):
    feats, y, groups = _features(n=1500)
    s = make_splits(y, groups)
    res = sweep({"answer": feats["answer"]}, y, s, layers=[0, 1, 2, 3])
    x_cal, y_cal = feats["answer"][s.calib, res.layer], y[s.calib]
    # a deliberately overconfident head: scale the logit by 4
    hot = res.head.with_platt(4.0, 0.0)
    cal = calibrate_head(hot, x_cal, y_cal, method)
    x_sel, y_sel = feats["answer"][s.select, res.layer], y[s.select]
    assert ece(cal.predict(x_sel), y_sel) < ece(hot.predict(x_sel), y_sel)
    assert auroc(cal.predict(x_sel), y_sel) == pytest.approx(auroc(hot.predict(x_sel), y_sel), abs=0.01)


def test_sweep_prefers_an_earlier_layer_within_tolerance():
    feats, y, groups = _features()
    feats["answer"][:, 3] = feats["answer"][:, 2]  # layer 3 exactly as good as layer 2
    feats["answer"][:, 3] += 0.01 * np.random.default_rng(9).normal(size=feats["answer"][:, 3].shape)
    s = make_splits(y, groups)
    res = sweep(feats, y, s, layers=[0, 1, 2, 3], layer_tolerance=0.02)
    assert res.layer == 2
    assert abs(res.curves["answer"][3] - res.curves["answer"][2]) < 0.02
    with pytest.raises(ValueError, match="layer_tolerance"):
        sweep(feats, y, s, layers=[0, 1, 2, 3], layer_tolerance=-1)


def test_refit_uses_train_and_select_but_never_the_calib_split(tmp_path):
    from monitor.probe.train import TrainOptions, train_on_features

    feats, y, groups = _features()
    common = dict(adapter_info={"fingerprint": "f" * 64, "family": "llava", "num_layers": 3},
                  training_data={"sha256": "0" * 64, "n": len(y), "n_correct": int(y.sum())})
    plain = train_on_features(feats, y, groups, [0, 1, 2, 3], options=TrainOptions(progress=False, bootstrap=50),
                              out=tmp_path / "plain", **common)
    refit = train_on_features(feats, y, groups, [0, 1, 2, 3], out=tmp_path / "refit",
                              options=TrainOptions(progress=False, bootstrap=50, refit=True), **common)
    assert (refit.meta.layer, refit.meta.pooling, refit.meta.c) == (plain.meta.layer, plain.meta.pooling, plain.meta.c)
    assert refit.meta.extra["refit"] and not plain.meta.extra["refit"]
    assert not np.allclose(refit.head.weight, plain.head.weight)  # more data: another head
    # the calib split is the same one and still held out: changing its labels moves only the calibration
    s = make_splits(y, groups)
    y2 = y.copy()
    y2[s.calib] = ~y2[s.calib]
    flipped = train_on_features(feats, y2, groups, [0, 1, 2, 3], out=tmp_path / "flipped",
                                options=TrainOptions(progress=False, bootstrap=50, refit=True), **common)
    cos = np.dot(flipped.head.weight, refit.head.weight) / np.linalg.norm(flipped.head.weight) / np.linalg.norm(refit.head.weight)
    assert cos == pytest.approx(-1.0, abs=1e-4)  # same direction, the Platt slope flips its sign
