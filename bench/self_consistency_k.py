"""How many samples self-consistency needs on free-form answers: K = 3, 5 and 10 on captions.

The fixture's greedy captions of a held-out SynPOPE ``describe`` set (seed 202) are labelled by
the describe judge; for each caption the spot check draws 10 sampled answers (temperature 1, one
shared prefill, the spot check's own seeds) and groups them by the describe judge's answer key
(the same objects in any order are one answer). Agreement with the served caption over the
first K of the 10 streams gives the K-sample signal, so every K sees the same draws. Reported per
K: AUROC and point-biserial r with 95% bootstrap CIs, and the share of captions whose agreement
is exactly 0 or 1. Writes ``bench/results/self_consistency_k.json``.

Run: ``nice .venv/bin/python bench/self_consistency_k.py [--n 1200]``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KS = (3, 5, 10)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from bench._common import cpu_fixture_run, fixture_bench_parser, spot_check_answers
    from monitor.calibration.metrics import signal_metrics
    from monitor.probe.samples import label_samples, read_samples
    from monitor.spotcheck.answers import group_stats
    from monitor.synpope.generate import SAMPLES_FILE, generate
    from monitor.synpope.judges import answer_key

    ap = fixture_bench_parser(__doc__)
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "self_consistency_k.json")
    args = ap.parse_args(argv)
    machine, adapter = cpu_fixture_run(args.model, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        generate("random", args.n, 202, out=tmp, model=args.model.name, task="describe")
        samples = label_samples(adapter, read_samples(Path(tmp) / SAMPLES_FILE), "auto", progress=False)
    key = partial(answer_key, "describe")
    t0 = time.perf_counter()
    draws = [spot_check_answers(adapter, s, max(KS), equivalence=key).answers for s in samples]
    seconds = time.perf_counter() - t0
    y = np.array([bool(s.label) for s in samples])
    rows = {}
    for k in KS:
        agree = np.array([group_stats(s.answer or "", d[:k], key=key).agreement for s, d in zip(samples, draws)])
        m = signal_metrics(agree, y, n_boot=1000, seed=0).as_dict()
        rows[str(k)] = {"auroc": m["auroc"], "auroc_ci": m["auroc_ci"], "r_pb": m["r_pb"], "r_pb_ci": m["r_pb_ci"],
                        "ece": m["ece"], "share_agreement_0": float((agree == 0).mean()),
                        "share_agreement_1": float((agree == 1).mean())}
    doc = {
        "benchmark": "self-consistency on free-form answers (SynPOPE describe) by K",
        "model": args.model.name, "n": len(samples), "accuracy": float(y.mean()), "temperature": 1.0,
        "equivalence": "describe judge's answer key (object set)", "by_k": rows,
        "sampling_seconds_for_k10": round(seconds, 2),
        "machine": {**machine, "torch_threads": args.threads, "torch": torch.__version__},
    }
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    for k, r in rows.items():
        logging.info("K=%s: AUROC %.3f %s, r_pb %+.3f %s", k, r["auroc"], r["auroc_ci"], r["r_pb"], r["r_pb_ci"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
