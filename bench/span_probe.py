"""Which named object is hallucinated: the span-level probe on the fixture's captions.

Generates SynPOPE ``describe`` sets (train seed 101, test seed 202), answers them with the
fixture's greedy captions, labels each caption with the describe judge, trains the sample-level
probe on the train set, then trains the span head (:mod:`monitor.probe.spans`) at the probe's layer
and compares, on the test set's named objects, AUROC for "this named object is present" of the
span head, the object's own token probability, the sample-level probe, and (``--support-k``, default
10) the object's support: the share of K spot-check samples (temperature 1, the spot check's own
decode and seeds) that name it, SelfCheckGPT-style. Writes
``bench/results/span_probe.json``.

Run: ``nice .venv/bin/python bench/span_probe.py [--model DIR] [--n-train 1500] [--n-test 1200]``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from bench._common import cpu_fixture_run, fixture_bench_parser, spot_check_answers
    from monitor.probe.runner import OnnxHeadRunner
    from monitor.probe.samples import label_samples, read_samples
    from monitor.probe.spans import span_experiment
    from monitor.probe.train import TrainOptions, encode_samples, train_probe
    from monitor.probe.extract import run_pass
    from monitor.synpope.generate import SAMPLES_FILE, generate

    ap = fixture_bench_parser(__doc__)
    ap.add_argument("--n-train", type=int, default=1500)
    ap.add_argument("--n-test", type=int, default=1200)
    ap.add_argument("--support-k", type=int, default=10, help="sampled answers per caption for object support (0: skip)")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "span_probe.json")
    args = ap.parse_args(argv)
    machine, adapter = cpu_fixture_run(args.model, args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, n, seed in (("train", args.n_train, 101), ("test", args.n_test, 202)):
            generate("random", n, seed, out=work / name, model=args.model.name, task="describe")
        train_file, test_file = work / "train" / SAMPLES_FILE, work / "test" / SAMPLES_FILE
        artifact = train_probe(args.model, train_file, work / "probe", TrainOptions(progress=False), adapter=adapter)
        train = label_samples(adapter, read_samples(train_file), "auto", progress=False)
        test = label_samples(adapter, read_samples(test_file), "auto", progress=False)
        meta = artifact.meta
        feats = run_pass(adapter, encode_samples(adapter, test, False), [meta.layer], [meta.pooling],
                         stop_at=meta.layer).features[meta.pooling][:, 0]
        sample_scores = OnnxHeadRunner(artifact.onnx_path, artifact.head)(feats)
        sampled = [spot_check_answers(adapter, s, args.support_k).answers for s in test] if args.support_k else None
        result = span_experiment(adapter, train, test, meta.layer, np.asarray(sample_scores), sampled=sampled)
    result["model"] = str(args.model.name)
    result["sample_probe"] = {"version": meta.version, "layer": meta.layer, "pooling": meta.pooling}
    result["caption_accuracy"] = {"train": float(np.mean([s.label for s in train])),
                                  "test": float(np.mean([s.label for s in test]))}
    result["machine"] = {**machine, "torch_threads": args.threads, "torch": torch.__version__}
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    sig = result["signals"]
    logging.info("present-object AUROC: %s (test: %d objects, %d absent)",
                 ", ".join(f"{k} {v['auroc']:.3f}" for k, v in sig.items()), result["test"]["objects"],
                 result["test"]["absent"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
