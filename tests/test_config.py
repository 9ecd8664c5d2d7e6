"""config.example.yaml and the Settings model agree key for key; env overrides; invalid config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.config import ConfigError, ModelEntry, Settings, ChannelConfig, TaskPattern, load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.yaml"


@pytest.fixture(autouse=True)
def _no_vlmwatch_env(monkeypatch, tmp_path):
    """Defaults only: no VLMWATCH_<SECTION>__<KEY> from the caller, no ./vlmwatch.yaml."""
    import os

    for k in list(os.environ):
        if k.startswith("VLMWATCH_") and "__" in k:
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def _diff(example: Any, default: Any, path: str = "") -> list[str]:
    where = path or "<top>"
    if isinstance(default, dict) or isinstance(example, dict):
        if not (isinstance(default, dict) and isinstance(example, dict)):
            return [f"{where}: example has {example!r}, model default is {default!r}"]
        out = [f"{path}{'.' if path else ''}{k}: in the model, missing from config.example.yaml" for k in default.keys() - example.keys()]
        out += [f"{path}{'.' if path else ''}{k}: in config.example.yaml, not in the model" for k in example.keys() - default.keys()]
        for k in default.keys() & example.keys():
            out += _diff(example[k], default[k], f"{path}{'.' if path else ''}{k}")
        return out
    if isinstance(default, list) and isinstance(example, list) and len(default) == len(example):
        return [d for i, (e, m) in enumerate(zip(example, default)) for d in _diff(e, m, f"{where}[{i}]")]
    if example != default or type(example) is bool and type(default) is not bool:
        return [f"{where}: config.example.yaml says {example!r}, model default is {default!r}"]
    return []


def test_example_and_model_agree_key_for_key_with_the_same_defaults():
    example = yaml.safe_load(EXAMPLE.read_text())
    defaults = Settings().model_dump(mode="json")
    problems = _diff(example, defaults)
    assert not problems, "config.example.yaml and monitor/config.py disagree:\n  " + "\n  ".join(problems)


def test_example_documents_the_fields_of_entries_that_default_to_empty():
    # models: {} and alerts.channels: [] have no entries by default; the example shows one, commented
    text = EXAMPLE.read_text()
    for model_cls, section in ((ModelEntry, "models"), (ChannelConfig, "alerts.channels"),
                               (TaskPattern, "collectors.tasks")):
        for name in model_cls.model_fields:
            assert f"#    {name}:" in text or f"#  - {name}:" in text, f"{section}: field {name!r} not shown in the example"


def test_example_loads_to_the_defaults():
    assert load_config(EXAMPLE) == Settings()


def test_defaults_without_a_file(tmp_path):
    assert load_config() == Settings()
    assert load_config().storage.url == "sqlite:///vlmwatch.db"


def test_env_overrides_defaults_and_the_file(monkeypatch, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("storage:\n  url: sqlite:///from-file.db\n  max_image_bytes: 123\n")
    assert load_config(cfg).storage.url == "sqlite:///from-file.db"
    monkeypatch.setenv("VLMWATCH_STORAGE__URL", "postgresql+psycopg://vlm@db/prod")
    s = load_config(cfg)
    assert s.storage.url == "postgresql+psycopg://vlm@db/prod"
    assert s.storage.max_image_bytes == 123  # the file's other keys still apply
    assert load_config().storage.url == "postgresql+psycopg://vlm@db/prod"
    monkeypatch.setenv("VLMWATCH_SCORING__BATCH_SIZE", "4")
    assert load_config().scoring.batch_size == 4


def test_default_path_is_read_from_the_working_directory(tmp_path):
    (tmp_path / "vlmwatch.yaml").write_text("log_level: DEBUG\n")
    assert load_config().log_level == "DEBUG"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("storage:\n  max_image_bytes: lots\n", "storage.max_image_bytes"),
        ("storage:\n  urll: sqlite:///x.db\n", "storage.urll"),
        ("alerts:\n  rules:\n    - name: r\n      detector: cusum_disagreement\n      severity: loud\n", "alerts.rules.0.severity"),
        ("bogus_section: {}\n", "bogus_section"),
        # metric rules name their source; combined_shares are checked
        ("alerts:\n  rules:\n    - name: low\n      detector: metric\n      metric: auroc\n      threshold: 0.8\n",
         "detector=metric needs source"),
        ("calibration:\n  combined_shares: {human: 1.0, spotchecks: 1.0}\n", "unknown evidence source(s) ['spotchecks']"),
        ("calibration:\n  combined_shares: {human: 0.0}\n", "positive total"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, text, key):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert key in str(err.value) and str(cfg) in str(err.value)


def test_unreadable_config_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("storage: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_cli_exits_2_with_one_message_and_starts_nothing(tmp_path):
    cfg = tmp_path / "bad.yaml"
    db = tmp_path / "should-not-exist.db"
    cfg.write_text(f"storage:\n  url: sqlite:///{db}\n  max_image_bytes: -lots\n")
    exe = Path(sys.executable).parent / "vlmwatch"
    res = subprocess.run(
        [str(exe), "--config", str(cfg), "db", "upgrade"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 2
    assert "storage.max_image_bytes" in res.stderr
    assert res.stderr.count("invalid configuration") == 1 and "Traceback" not in res.stderr
    assert res.stdout == ""
    assert not db.exists()
