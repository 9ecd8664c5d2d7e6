"""``vlmwatch probe train / activate / list / compare`` through the real CLI entry point."""

import json
import random

import pytest

from monitor.cli import main


@pytest.fixture(scope="module")
def labelled_file(tmp_path_factory):
    """SynPOPE questions with coin-flip answers labelled against the truth (answers=file)."""
    from monitor.synpope.generate import generate

    out = tmp_path_factory.mktemp("synpope")
    records = generate("adversarial", 160, seed=3, out=out)
    rng = random.Random(0)
    path = out / "labelled.jsonl"
    with path.open("w") as f:
        for r in records:
            r["answer"] = rng.choice(["yes", "no"])
            f.write(json.dumps(r) + "\n")
    return path


def test_train_register_compare(tmp_path, labelled_file, llava_dir, capsys):
    from storage.db import upgrade

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    cfg = tmp_path / "vlmwatch.yaml"
    cfg.write_text(f"storage:\n  url: {url}\n")
    probe_dir = tmp_path / "probe"
    rc = main(["--config", str(cfg), "probe", "train", "--model", str(llava_dir), "--data", str(labelled_file),
               "--out", str(probe_dir), "--answers", "file", "--quiet", "--register", "--served-name", "tiny-llava"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "registered and activated probe" in out
    meta = json.loads((probe_dir / "metadata.json").read_text())
    assert meta["layers"] == [0, 1, 2, 3, 4] and set(meta["layer_auroc"]) == {"answer", "prompt_last", "answer_mean"}
    assert meta["training_data"]["n"] == 160 and len(meta["training_data"]["sha256"]) == 64
    assert (probe_dir / "head.onnx").is_file() and (probe_dir / "layer_auroc.png").is_file()

    assert main(["--config", str(cfg), "probe", "list"]) == 0
    assert f"* tiny-llava\t{meta['version']}" in capsys.readouterr().out

    rc = main(["probe", "compare", "--model", str(llava_dir), "--probe", str(probe_dir), "--data", str(labelled_file),
               "--answers", "file", "--quiet", "--json", "--bootstrap", "200", "--out", str(tmp_path / "report")])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    for name in ("probe", "answer_prob", "attention_sharpness"):
        m = doc["signals"][name]
        assert set(m) >= {"auroc", "auroc_ci", "r_pb", "r_pb_ci", "ece", "brier", "cost_ms"}
        assert m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1]
        assert m["cost_ms"] > 0
    assert doc["signals"]["probe"]["delta_ci"][0] <= doc["signals"]["probe"]["delta_vs_answer_prob"]
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"probe_compare.json", "probe_compare.md", "probe_compare.png"}


def test_cli_errors_name_what_is_wrong(tmp_path, labelled_file, llava_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    good = json.loads(labelled_file.read_text().splitlines()[0])
    bad.write_text(json.dumps({**good, "image": str(labelled_file.parent / good["image"]), "label": "maybe"}) + "\n")
    rc = main(["probe", "train", "--model", str(llava_dir), "--data", str(bad), "--out", str(tmp_path / "p"),
               "--answers", "file", "--quiet"])
    assert rc == 2
    assert "bad.jsonl:1: field 'label': Input should be a valid boolean" in capsys.readouterr().err
    bad.write_text('{"prompt": "Is there a cat?", "answer": "yes"}\n')
    rc = main(["probe", "train", "--model", str(llava_dir), "--data", str(bad), "--out", str(tmp_path / "p"),
               "--answers", "file", "--quiet"])
    assert rc == 2
    assert "bad.jsonl:1: missing field 'id'; missing field 'ts'" in capsys.readouterr().err
    rc = main(["probe", "train", "--model", str(llava_dir), "--data", str(bad), "--out", str(tmp_path / "p"),
               "--register"])
    assert rc == 2 and "--served-name" in capsys.readouterr().err


def test_register_refuses_an_unmigrated_database_before_training(tmp_path, labelled_file, llava_dir, capsys):
    cfg = tmp_path / "vlmwatch.yaml"
    cfg.write_text(f"storage:\n  url: sqlite:///{tmp_path / 'never-migrated.db'}\n")
    rc = main(["--config", str(cfg), "probe", "train", "--model", str(llava_dir), "--data", str(labelled_file),
               "--out", str(tmp_path / "probe"), "--answers", "file", "--quiet", "--register", "--served-name", "m"])
    assert rc == 2
    assert "vlmwatch db upgrade" in capsys.readouterr().err
    assert not (tmp_path / "probe").exists()  # nothing was trained or written


def test_a_probe_on_few_samples_warns_with_its_auroc_ci(tmp_path, labelled_file, llava_dir, capsys):
    from monitor.probe.train import MIN_TRAIN_SAMPLES

    rc = main(["probe", "train", "--model", str(llava_dir), "--data", str(labelled_file), "--out", str(tmp_path / "p"),
               "--answers", "file", "--quiet", "--layers", "1,2", "--poolings", "answer"])
    assert rc == 0
    err = capsys.readouterr().err
    meta = json.loads((tmp_path / "p" / "metadata.json").read_text())
    lo, hi = meta["metrics"]["calib"]["auroc_ci"]
    assert f"probe trained on 160 labelled samples (under {MIN_TRAIN_SAMPLES})" in err
    assert f"95% CI [{lo:.3f}, {hi:.3f}]" in err
