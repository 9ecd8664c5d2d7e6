"""The probe experiment on the fixture LLaVA, written as a committed report.

Trains a probe on one adversarial SynPOPE set (honest labels: the model's own greedy answers)
and compares probe, answer probability and attention sharpness on ≥ 1,000 held-out samples of
another adversarial set. Writes ``bench/results/probe_compare.{json,md,png}`` and the probe's
per-layer AUROC plot as ``bench/results/probe_layer_auroc.png``.

Run: ``nice .venv/bin/python bench/probe_compare.py [--model DIR] [--self-consistency-k 10] [--task describe]``
(a free-form task writes ``probe_compare_<task>.*`` and ``probe_layer_auroc_<task>.png``; the full
comparison on ``describe`` captions, with self-consistency by K and the span head, is
``bench/probe_compare_freeform.py``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import torch

    from bench._common import fixture_bench_parser
    from monitor.probe.compare import write_report
    from monitor.probe.experiment import Experiment, run_experiment

    ap = fixture_bench_parser(__doc__)
    ap.add_argument("--self-consistency-k", type=int, default=0)
    ap.add_argument("--task", default="yesno", help="SynPOPE task of both sets (yesno, describe, count, attribute, list, mix)")
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=1200)
    ap.add_argument("--stem", default=None, help="result file stem (default probe_compare; probe_compare_<task> otherwise)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    exp = Experiment(self_consistency_k=args.self_consistency_k, task=args.task, n_train=args.n_train, n_test=args.n_test)
    stem = args.stem or ("probe_compare" if args.task == "yesno" else f"probe_compare_{args.task}")
    with tempfile.TemporaryDirectory() as tmp:
        doc, artifact = run_experiment(args.model, tmp, exp, progress=True)
        doc["machine"] = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                          "cpu_count": os.cpu_count(), "torch_threads": args.threads, "torch": torch.__version__,
                          "load_average_after": os.getloadavg()}
        doc["probe"]["path"] = "(temporary)"
        write_report(doc, args.out, stem=stem)
        shutil.copy(artifact.path / "layer_auroc.png", args.out / f"{stem.replace('compare', 'layer_auroc')}.png")
    sig = doc["signals"]
    logging.info("probe AUROC %.3f %s, answer_prob %.3f, delta %+.3f %s, attention r_pb %+.3f %s",
                 sig["probe"]["auroc"], sig["probe"]["auroc_ci"], sig["answer_prob"]["auroc"],
                 sig["probe"]["delta_vs_answer_prob"], sig["probe"]["delta_ci"],
                 sig["attention_sharpness"]["r_pb"], sig["attention_sharpness"]["r_pb_ci"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
