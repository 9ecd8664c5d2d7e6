"""#12 from the command line: generate held-out ``describe`` captions, train a probe on the
fixture's own greedy captions (judged by the task's judge), and compare the signals, with
self-consistency from the K-sample decode and its ``k``."""

import json

from monitor.cli import main


def test_describe_generate_train_compare(tmp_path, llava_dir, capsys):
    train_dir, test_dir = tmp_path / "train", tmp_path / "test"
    for out, seed in ((train_dir, 1), (test_dir, 2)):
        assert main(["synpope", "generate", "--task", "describe", "--n", "160" if seed == 1 else "80",
                     "--seed", str(seed), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    data = next(train_dir.glob("*.jsonl"))
    assert json.loads(data.read_text().splitlines()[0])["meta"]["task"] == "describe"

    probe_dir = tmp_path / "probe"
    rc = main(["probe", "train", "--model", str(llava_dir), "--data", str(data), "--out", str(probe_dir),
               "--answers", "model", "--poolings", "answer,answer_mean,answer_stats,answer_stats_lp", "--refit",
               "--quiet"])
    assert rc == 0, capsys.readouterr()
    capsys.readouterr()
    meta = json.loads((probe_dir / "metadata.json").read_text())
    assert set(meta["layer_auroc"]) == {"answer", "answer_mean", "answer_stats", "answer_stats_lp"}
    assert meta["extra"]["refit"] is True

    rc = main(["probe", "compare", "--model", str(llava_dir), "--probe", str(probe_dir),
               "--data", str(next(test_dir.glob("*.jsonl"))), "--answers", "model", "--quiet", "--json",
               "--bootstrap", "100", "--self-consistency-k", "3"])
    assert rc == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["n"] == 80 and 0 < doc["n_correct"] < 80  # greedy captions, judged: some right, some wrong
    for name in ("probe", "answer_prob", "self_consistency", "attention_sharpness"):
        m = doc["signals"][name]
        assert m["auroc"] is not None and m["auroc_ci"][0] <= m["auroc"] <= m["auroc_ci"][1], name
    sc = doc["signals"]["self_consistency"]
    assert sc["k"] == 3 and sc["compute_ms"] > 0
    assert sc["auroc"] != doc["signals"]["answer_prob"]["auroc"]  # multi-token answers: not the answer probability
    lo, hi = doc["signals"]["probe"]["delta_ci"]
    assert lo <= doc["signals"]["probe"]["delta_vs_answer_prob"] <= hi
    assert set(doc["by_task"]) == {"describe"}
