"""``probe recalibrate`` restores ECE on the demo's shift (fixture LLaVA, the demo's recipe).

A probe trained on the demo's stable split scores traffic from its shifted split (adversarial
questions plus pixel noise); recalibrating on <= 200 of those labels must make ECE on *other*
shifted samples clearly lower (paired bootstrap CI of the reduction above zero) and leave AUROC
unchanged within its CI. The figures depend on the fixture's weights; the phenomenon must not.
"""

from __future__ import annotations

import json

import pytest

from monitor.probe.recal_experiment import RecalExperiment, run_recal_experiment

EXP = RecalExperiment(probe_train_n=300, n_fresh=200, n_test=600, bootstrap=500)


@pytest.fixture(scope="module")
def experiment(llava_dir, llava, tmp_path_factory):
    return run_recal_experiment(llava_dir, tmp_path_factory.mktemp("recal"), EXP, adapter=llava)


def _brief(doc: dict) -> str:
    held = doc["held_out_shifted"]
    keep = ("ece_mass", "ece_mass_ci", "ece_width", "ece_width_ci", "auroc", "auroc_ci", "mean_score", "accuracy")
    return json.dumps({"before": {k: held["before"][k] for k in keep}, "after": {k: held["after"][k] for k in keep},
                       **{k: v for k, v in held.items() if k.endswith(("_reduction", "_reduction_ci", "_change", "_ci"))},
                       "selection": doc["recalibration"]["selection"]["reason"]}, indent=1)


def test_recalibration_restores_ece_on_held_out_shifted_data(experiment):
    held = experiment["held_out_shifted"]
    before, after = held["before"], held["after"]
    # the premise: the demo's shift does miscalibrate the probe trained on the stable split
    assert before["ece_width_ci"][0] > 0.05, "the demo's shift no longer miscalibrates the probe\n" + _brief(experiment)
    for key in ("ece_mass", "ece_width"):
        assert held[f"{key}_reduction_ci"][0] > 0, _brief(experiment)  # clearly lower, paired on the same samples
        assert after[key] < before[key] - 0.05, _brief(experiment)
    # mean p_correct now tracks the shifted accuracy instead of the stable one
    assert abs(after["mean_score"] - held["accuracy"]) < abs(before["mean_score"] - held["accuracy"])


def test_recalibration_leaves_auroc_unchanged_within_its_ci(experiment):
    held = experiment["held_out_shifted"]
    lo, hi = held["auroc_change_ci"]
    assert lo <= 0.0 <= hi, _brief(experiment)
    ci = held["before"]["auroc_ci"]
    assert ci[0] <= held["after"]["auroc"] <= ci[1], _brief(experiment)


def test_the_command_used_at_most_200_fresh_labels_and_kept_the_head(experiment):
    report = experiment["recalibration"]
    assert report["labels"]["n"] <= 200 and report["labels"]["n"] == EXP.n_fresh
    # its own held-out (out-of-fold) estimate agrees in direction with the independent test set
    assert report["after"]["ece_width"] < report["before"]["ece_width"]
    old, new = experiment["_artifacts"]["old"], experiment["_artifacts"]["new"]
    assert (new.meta.layer, new.meta.pooling) == (old.meta.layer, old.meta.pooling)
    assert new.meta.extra["recalibration"]["recalibrates"]["version"] == old.meta.version
    assert new.meta.version != old.meta.version and new.onnx_path.is_file()
