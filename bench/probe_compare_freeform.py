"""Every correctness signal on the fixture LLaVA's free-form captions, in one run (#12's Done-when).

Two SynPOPE ``describe`` sets are generated (train: adversarial seed 101, ``--n-train``; test:
adversarial seed 202, ``--n-test`` >= 1,000 held out: other scenes, never seen by training or
selection); both are answered with the fixture's own greedy captions and labelled by the describe
judge. The production probe (``monitor.probe.train``: layer x pooling sweep, every pooling incl.
``answer_stats`` and ``answer_stats_lp``, picked on the train file's select split, refit on its train
and select splits, calibrated on its calib split: ``probe train --poolings ... --refit``) is
trained on the train set only. On the test set:

- ``signals``: probe, answer probability, attention sharpness / top-k mass
  (:func:`monitor.probe.compare.compare_signals`) and self-consistency at the largest K, each with
  AUROC, r_pb and 95% bootstrap CIs; the probe's paired ΔAUROC against answer probability;
- ``self_consistency_by_k``: K = 3, 5, 10 from the same 10 sampled answers per caption (the spot
  check's shared-prefill decode, temperature 1, its seeds), each with CIs and ``ms_per_check``, a
  spot check run at that K (:func:`monitor.probe.compare.self_consistency_by_k`);
- ``span``: the span head (:func:`monitor.probe.spans.span_experiment`, trained on the train
  captions at the probe's layer): AUROC for "this named object is present" beside the objects'
  token probability, the sample-level probe and the objects' support among the K=10 samples.

Writes ``bench/results/probe_compare_freeform.{json,md,png}`` and the probe's per-layer AUROC plot
``bench/results/probe_layer_auroc_freeform.png``.

Run: ``nice .venv/bin/python bench/probe_compare_freeform.py [--model DIR] [--n-train 6000] [--n-test 1200]``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KS = (3, 5, 10)
ALL_POOLINGS = ("answer", "prompt_last", "answer_mean", "answer_stats", "answer_stats_lp")


def _ci(ci: list[float]) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def _markdown(doc: dict) -> str:
    from monitor.probe.compare import markdown_table

    rows = [markdown_table(doc), "Self-consistency by K (same draws; ms per spot check at that K):", "",
            "| K | AUROC | AUROC 95% CI | r_pb | r_pb 95% CI | agreement 0 / 1 | ms per check |",
            "| ---: | ---: | --- | ---: | --- | --- | ---: |"]
    for k, r in doc["self_consistency_by_k"].items():
        rows.append(f"| {k} | {r['auroc']:.3f} | {_ci(r['auroc_ci'])} | {r['r_pb']:+.3f} | {_ci(r['r_pb_ci'])} | "
                    f"{r['share_agreement_0']:.3f} / {r['share_agreement_1']:.3f} | {r['ms_per_check']:.1f} |")
    sp = doc["span"]
    rows += ["", f"Span level, \"this named object is present\" ({sp['test']['objects']} named objects, "
                 f"{sp['test']['absent']} absent; span head at layer {sp['layer']}):", "",
             "| signal | AUROC | AUROC 95% CI |", "| --- | ---: | --- |"]
    for name, m in sp["signals"].items():
        rows.append(f"| {name} | {m['auroc']:.3f} | {_ci(m['auroc_ci'])} |")
    d = sp["span_minus_sample"]
    rows += ["", f"Span head − sample probe: ΔAUROC {d['delta_auroc']:+.3f} {_ci(d['ci'])}.", ""]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    from bench._common import cpu_fixture_run, fixture_bench_parser
    from monitor.calibration.metrics import signal_metrics
    from monitor.probe.compare import compare_signals, self_consistency_by_k, write_report
    from monitor.probe.samples import label_samples, read_samples
    from monitor.probe.spans import span_experiment
    from monitor.probe.train import TrainOptions, train_probe
    from monitor.synpope.generate import SAMPLES_FILE, generate

    ap = fixture_bench_parser(__doc__)
    ap.add_argument("--n-train", type=int, default=6000)
    ap.add_argument("--n-test", type=int, default=1200)
    ap.add_argument("--split", default="adversarial", help="SynPOPE split of both sets")
    ap.add_argument("--poolings", default=",".join(ALL_POOLINGS), help="poolings the probe's sweep chooses among")
    ap.add_argument("--timing-n", type=int, default=100, help="captions whose spot check is timed at each K")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--stem", default="probe_compare_freeform")
    args = ap.parse_args(argv)
    if args.n_test < 1000:
        logging.warning("--n-test %d: the Done-when asks for >= 1,000 held-out answers", args.n_test)
    machine, adapter = cpu_fixture_run(args.model, args.threads)
    started = time.perf_counter()
    phases: dict[str, float] = {}

    def phase(name: str, t0: float) -> None:
        phases[name] = round(time.perf_counter() - t0, 1)
        logging.info("%s: %.1f s", name, phases[name])

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        files = {}
        for name, n, seed in (("train", args.n_train, 101), ("test", args.n_test, 202)):
            generate(args.split, n, seed, out=work / name, model=args.model.name, task="describe")
            files[name] = work / name / SAMPLES_FILE
        train = label_samples(adapter, read_samples(files["train"]), "auto", progress=False)
        test = label_samples(adapter, read_samples(files["test"]), "auto", progress=False)
        phase("generate_and_label", t0)

        t0 = time.perf_counter()
        opts = TrainOptions(poolings=tuple(p.strip() for p in args.poolings.split(",")), bootstrap=args.bootstrap,
                            batch_size=32, progress=False, refit=True)
        artifact = train_probe(args.model, files["train"], work / "probe", opts, adapter=adapter, samples=train)
        phase("probe_train", t0)

        t0 = time.perf_counter()
        doc = compare_signals(adapter, artifact, test, served_name=args.model.name, batch_size=32,
                              n_boot=args.bootstrap, progress=False)
        phase("compare_signals", t0)

        t0 = time.perf_counter()
        by_k, draws = self_consistency_by_k(adapter, test, KS, n_boot=args.bootstrap, timing_n=args.timing_n)
        phase("self_consistency", t0)
        y = np.array([bool(s.label) for s in test])
        top = by_k[str(max(KS))]
        sc = signal_metrics(np.asarray(top["_values"]), y, n_boot=args.bootstrap, seed=0).as_dict()
        sc.update(k=max(KS), compute_ms=top["ms_per_check"], cost_ms=top["ms_per_check"] + doc["encode_ms"])
        doc["signals"]["self_consistency"] = sc
        doc["_values"]["self_consistency"] = top["_values"]
        tasks = np.array([str(s.meta.get("task", "")) for s in test])
        for task, row in doc["by_task"].items():  # all describe here; kept general
            if row["signals"]:
                idx = np.flatnonzero(tasks == task)
                row["signals"]["self_consistency"] = signal_metrics(np.asarray(top["_values"])[idx], y[idx],
                                                                    n_boot=args.bootstrap, seed=0).as_dict()

        t0 = time.perf_counter()
        span = span_experiment(adapter, train, test, artifact.meta.layer, np.asarray(doc["_values"]["probe"]),
                               sampled=draws, n_boot=args.bootstrap)
        phase("span", t0)
        shutil.copy(artifact.path / "layer_auroc.png", args.out / f"{args.stem.replace('compare', 'layer_auroc')}.png")

    meta = artifact.meta
    doc["self_consistency_by_k"] = {k: {n: v for n, v in r.items() if not n.startswith("_")} for k, r in by_k.items()}
    doc["span"] = span
    doc["probe"].update(path="(temporary)", hidden_size=meta.hidden_size, c=meta.c,
                        calib_split=meta.metrics["calib"], select_auroc=meta.metrics["select_auroc"])
    doc["experiment"] = {
        "task": "describe", "split": args.split, "train_seed": 101, "test_seed": 202,
        "n_train": len(train), "train_accuracy": float(np.mean([s.label for s in train])),
        "n_test": len(test), "poolings": list(opts.poolings), "bootstrap": args.bootstrap,
        "probe_selection": {"layer_auroc": meta.layer_auroc, "layers": meta.layers, "splits": meta.splits,
                            "note": "layer, pooling and C picked on the train file's select split, the head refit "
                                    "on its train + select splits, Platt calibration on its calib split; "
                                    "the test set is used only here"},
    }
    sig = doc["signals"]
    doc["summary"] = {
        "n_test": len(test),
        "probe_auroc": sig["probe"]["auroc"], "probe_auroc_ci": sig["probe"]["auroc_ci"],
        "probe_minus_answer_prob": sig["probe"]["delta_vs_answer_prob"],
        "probe_minus_answer_prob_ci": sig["probe"]["delta_ci"],
        "self_consistency_auroc_by_k": {k: [r["auroc"], r["auroc_ci"]] for k, r in by_k.items()},
        "self_consistency_ms_per_check_by_k": {k: r["ms_per_check"] for k, r in by_k.items()},
        "probe_compute_ms": sig["probe"]["compute_ms"],
        "span_auroc": span["signals"]["span_probe"]["auroc"], "span_auroc_ci": span["signals"]["span_probe"]["auroc_ci"],
        "attention_r_pb": sig["attention_sharpness"]["r_pb"], "attention_r_pb_ci": sig["attention_sharpness"]["r_pb_ci"],
    }
    doc["phases_s"] = phases
    doc["wall_s"] = round(time.perf_counter() - started, 1)
    doc["machine"] = {**machine, "torch_threads": args.threads, "torch": torch.__version__,
                      "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    write_report(doc, args.out, stem=args.stem)
    (args.out / f"{args.stem}.md").write_text(_markdown(doc))
    logging.info("summary: %s", json.dumps(doc["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
