"""Acceptance: on the trained fixture LLaVA, a probe trained on one adversarial SynPOPE set beats
answer probability on >= 1,000 held-out samples of another (honest labels)."""

import json

import pytest

from monitor.fixtures.registry import fixture_dir

pytestmark = pytest.mark.slow


def test_probe_beats_answer_probability_on_held_out_synpope(tmp_path):
    # the shipped fixture is trained (monitor.fixtures.train writes build_info.json); a missing one is a failure
    assert (fixture_dir("tiny-llava") / "build_info.json").is_file()
    from monitor.probe.experiment import Experiment, run_experiment

    exp = Experiment(bootstrap=1000)
    doc, artifact = run_experiment(fixture_dir("tiny-llava"), tmp_path, exp)
    sig = doc["signals"]
    assert doc["n"] >= 1000
    assert 0.05 < doc["accuracy"] < 0.95  # both classes well represented: the AUROCs mean something
    probe = sig["probe"]
    assert probe["auroc"] >= 0.80, json.dumps(sig, indent=1)
    assert probe["delta_vs_answer_prob"] > 0 and probe["delta_ci"][0] > 0, json.dumps(sig, indent=1)
    att = sig["attention_sharpness"]
    assert att["r_pb_ci"][0] <= att["r_pb"] <= att["r_pb_ci"][1]
    for name in ("probe", "answer_prob", "attention_sharpness"):
        assert set(sig[name]) >= {"auroc", "auroc_ci", "r_pb", "r_pb_ci", "ece", "brier", "cost_ms"}
    # early exit pays: the probe costs less per sample than the full pass answer probability needs
    assert artifact.meta.layer <= artifact.meta.num_layers
