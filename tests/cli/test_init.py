"""`vlmwatch init` writes a config that loads, sized to the expected traffic, and prints the next steps."""

from __future__ import annotations

import pytest

from monitor.config import load_config
from monitor.fixtures.registry import fixture_dir
from monitor.init_config import Traffic, derive


def test_a_trial_with_few_labels_gets_short_windows_and_a_small_horizon():
    # 120 requests/min, all sampled, 10% labelled: 12 labels a minute
    d = derive(Traffic(requests_per_minute=120, sample_rate=1.0, label_share=0.1, trial_hours=2))
    assert d["calibration"] == {"window": "10m", "min_labels": 100, "rolling_n": 360, "reference_n": 720}
    assert d["detect"] == {"horizon": 1440}  # 12/min over 2 h
    assert d["daemon"] == {"calibrate_interval_seconds": 30.0, "detect_interval_seconds": 30.0}
    # 0.6 labels a minute: an hour holds 36, which becomes min_labels; slower jobs
    slow = derive(Traffic())
    assert slow["calibration"]["window"] == "1h" and slow["calibration"]["min_labels"] == 36
    # busy: 600 labels a minute: 1 min windows, intervals of a few seconds, the full horizon
    busy = derive(Traffic(requests_per_minute=6000, sample_rate=1.0, label_share=0.1, trial_hours=24))
    assert busy["calibration"]["window"] == "1m" and busy["detect"]["horizon"] == 20_000
    assert busy["daemon"]["detect_interval_seconds"] == 2.0
    with pytest.raises(ValueError, match="label share"):
        Traffic(label_share=0)


def test_init_writes_a_loadable_commented_config_and_the_next_commands(vlmwatch_cli, tmp_path):
    model = fixture_dir("tiny-llava")
    res = vlmwatch_cli("init", "--upstream", "http://127.0.0.1:8000/", "--served-name", "llava-prod", "--model-dir",
                       str(model), "--requests-per-minute", "120", "--sample-rate", "1", "--label-share", "0.1",
                       "--trial-hours", "2", "--webhook", "http://127.0.0.1:9999/hook")
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "vlmwatch.yaml").read_text()
    assert text.count("#") > 15  # commented
    s = load_config(tmp_path / "vlmwatch.yaml")
    assert s.models["llava-prod"].path == str(model.resolve())
    assert (s.proxy.upstream_url, s.proxy.sample_rate) == ("http://127.0.0.1:8000", 1.0)
    assert (s.calibration.window, s.calibration.min_labels, s.detect.horizon) == ("10m", 100, 1440)
    assert s.alerts.channels[0].url == "http://127.0.0.1:9999/hook"
    order = [line.strip().split()[1] for line in res.stdout.splitlines() if line.strip().startswith("vlmwatch ")]
    assert order == ["db", "probe", "daemon", "reference", "proxy", "alerts", "status"]
    again = vlmwatch_cli("init", "--served-name", "x", "--model-dir", str(model))
    assert again.returncode == 2 and "exists; --force overwrites it" in again.stderr


def test_without_a_terminal_a_missing_answer_names_its_flag(vlmwatch_cli, tmp_path):
    res = vlmwatch_cli("init", "--upstream", "http://127.0.0.1:8000")
    assert res.returncode == 2 and "--served-name is needed" in res.stderr
    res = vlmwatch_cli("init", "--served-name", "m", "--model-dir", str(tmp_path))
    assert res.returncode == 2 and "has no config.json" in res.stderr
    assert not (tmp_path / "vlmwatch.yaml").exists()
