"""Recalibration on few labels, measured on the demo's shift: ECE before/after, AUROC unchanged.

The demo's recipe on the fixture LLaVA (``monitor.probe.recal_experiment``): the probe trained on
the stable split as ``vlmwatch demo`` trains it (500 labelled samples), the demo's 400-sample
stable reference pinned, then ``probe recalibrate`` on the 200 freshest labels of shifted traffic,
and before/after on 1,000 other shifted samples. Two shifts:

* ``demo_shift``: the demo's own (adversarial questions + pixel noise 0.45);
* ``adversarial_only``: the adversarial questions without the noise (ranking mostly holds).

Each is repeated over several draws of the 200 fresh labels (the test set and probe stay fixed),
so the spread of "after" is visible. Writes ``bench/results/recalibration.json``.

Run: ``nice .venv/bin/python bench/recalibration.py [--runs 5]``.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import fixture_bench_parser, torch_machine_info  # noqa: E402

SCENARIOS = {"demo_shift": None, "adversarial_only": 0.0}  # shift_noise: None = the demo's
_KEYS = ("ece_mass", "ece_mass_ci", "ece_width", "ece_width_ci", "brier", "auroc", "auroc_ci", "mean_score",
         "accuracy", "n")


def _run_row(doc: dict[str, Any]) -> dict[str, Any]:
    held, rep = doc["held_out_shifted"], doc["recalibration"]
    return {
        "fresh_seed": doc["experiment"]["fresh_seed"],
        "method": rep["selection"]["method"],
        "why": rep["selection"]["reason"],
        "candidates": rep["selection"]["candidates"],
        "advice": rep["advice"]["action"],
        "advice_text": rep["advice"]["text"],
        "reference": rep["reference"],
        "command_held_out": {"before": {k: rep["before"][k] for k in _KEYS if k in rep["before"]},
                             "after": {k: rep["after"][k] for k in _KEYS if k in rep["after"]}},
        "test": {"n": held["n"], "accuracy": held["accuracy"],
                 "before": {k: held["before"].get(k) for k in _KEYS}, "after": {k: held["after"].get(k) for k in _KEYS},
                 "in_sample_ece_mass": held["in_sample_ece_mass"],
                 **{k: v for k, v in held.items() if k.endswith(("_reduction", "_reduction_ci", "_change", "_change_ci"))}},
    }


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def med(path: tuple[str, ...]) -> float:
        vals = []
        for r in rows:
            v: Any = r
            for p in path:
                v = v[p]
            vals.append(v)
        return round(statistics.median(vals), 4)

    t = [r["test"] for r in rows]
    return {
        "runs": len(rows),
        "n_fresh_labels": rows[0]["command_held_out"]["before"]["n"],
        "n_test": t[0]["n"],
        "test_accuracy": round(t[0]["accuracy"], 4),
        "ece_mass_before": med(("test", "before", "ece_mass")),
        "ece_mass_after_median": med(("test", "after", "ece_mass")),
        "ece_mass_after_range": [round(min(x["after"]["ece_mass"] for x in t), 4),
                                 round(max(x["after"]["ece_mass"] for x in t), 4)],
        "ece_width_before": med(("test", "before", "ece_width")),
        "ece_width_after_median": med(("test", "after", "ece_width")),
        "ece_width_after_range": [round(min(x["after"]["ece_width"] for x in t), 4),
                                  round(max(x["after"]["ece_width"] for x in t), 4)],
        "in_sample_ece_mass_floor": {m: round(v, 4) for m, v in t[0]["in_sample_ece_mass"].items()},
        "runs_with_ece_reduction_ci_above_0": sum(x["ece_mass_reduction_ci"][0] > 0 and x["ece_width_reduction_ci"][0] > 0
                                                   for x in t),
        "auroc_before": round(t[0]["before"]["auroc"], 4),
        "auroc_before_ci": [round(v, 4) for v in t[0]["before"]["auroc_ci"]],
        "auroc_change_max_abs": round(max(abs(x["auroc_change"]) for x in t), 4),
        "runs_with_auroc_change_ci_containing_0": sum(x["auroc_change_ci"][0] <= 0 <= x["auroc_change_ci"][1] for x in t),
        "reference_auroc": rows[0]["reference"]["auroc"],
        "methods": {m: sum(r["method"] == m for r in rows) for m in sorted({r["method"] for r in rows})},
        "advice": {a: sum(r["advice"] == a for r in rows) for a in sorted({r["advice"] for r in rows})},
    }


def main(argv: list[str] | None = None) -> int:
    import torch

    from monitor.adapter import load_vlm
    from monitor.probe.recal_experiment import RecalExperiment, run_recal_experiment

    ap = fixture_bench_parser(__doc__)
    ap.add_argument("--runs", type=int, default=5, help="draws of the fresh labels per scenario")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "recalibration.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("monitor.probe.sweep", "monitor.probe.calibrators", "monitor.probe.samples", "monitor.probe.artifact"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    adapter = load_vlm(args.model, device="cpu", dtype="float32")
    base = RecalExperiment(n_fresh=200, n_test=1000, n_reference=400, bootstrap=1000)
    doc: dict[str, Any] = {"benchmark": "recalibration", "command": "bench/recalibration.py " + " ".join(argv or sys.argv[1:]),
                           "summary": {}, "runs": {}}
    probe = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, noise in SCENARIOS.items():
            rows = []
            for i in range(args.runs):
                exp = RecalExperiment(**{**base.__dict__, "shift_noise": noise, "fresh_seed": base.fresh_seed + i})
                res = run_recal_experiment(args.model, Path(tmp) / f"{name}-{i}", exp, adapter=adapter, probe=probe)
                probe = res["_artifacts"]["old"]
                doc.setdefault("probe", res["probe"])
                doc.setdefault("setup", {k: v for k, v in res["experiment"].items() if k not in ("shift_noise", "fresh_seed")})
                rows.append(_run_row(res))
            doc["runs"][name] = rows
            doc["summary"][name] = {"shift_noise": base.plan.shift_noise if noise is None else noise, **_summary(rows)}
            logging.info("%s: %s", name, json.dumps(doc["summary"][name]))
    doc["machine"] = torch_machine_info(args.threads, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    logging.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
