"""``vlmwatch probe train|activate|list|compare|recalibrate``: hidden-state correctness probes."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from monitor.commands import CommandError, add_actions, add_command

__all__ = ["register"]


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _register(args: argparse.Namespace, artifact, database) -> int:  # noqa: ANN001
    from monitor.probe.registry import register_probe

    with database.sessions() as s:
        row = register_probe(s, args.served_name, artifact, activate=True)
        s.commit()
        print(f"registered and activated probe {row.version} for model {args.served_name} (id {row.id})")
    return 0


def _train(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from monitor.commands._storage import open_database

    if args.register and not args.served_name:
        raise CommandError("--register needs --served-name NAME (the model name clients send)")
    # with --register, refuse an unmigrated database before minutes of training, not after
    with open_database(args) if args.register else nullcontext() as database:
        return _train_and_register(args, database)


def _train_and_register(args: argparse.Namespace, database) -> int:  # noqa: ANN001
    from monitor.probe.head import DEFAULT_POOLINGS
    from monitor.probe.train import MIN_TRAIN_SAMPLES, TrainOptions, train_probe

    _threads(args)
    poolings = tuple(p.strip() for p in args.poolings.split(",")) if args.poolings else DEFAULT_POOLINGS
    opts = TrainOptions(layers=args.layers, poolings=poolings, answers=args.answers, calibration=args.calibration,
                        batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
                        refit=args.refit)
    try:
        art = train_probe(args.model, args.data, args.out, opts, device=args.device, dtype=args.dtype)
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(f"probe train: {e}") from None
    m = art.meta
    calib = m.metrics["calib"]
    print(
        f"probe {m.version}: layer {m.layer}/{m.num_layers}, pooling {m.pooling}, "
        f"held-out AUROC {calib['auroc']:.3f} [{calib['auroc_ci'][0]:.3f}, {calib['auroc_ci'][1]:.3f}] "
        f"(calib split, n={calib['n']}), ECE {calib['ece']:.3f} -> {art.path}"
    )
    n = m.training_data["n"]
    if n < MIN_TRAIN_SAMPLES:
        lo, hi = calib["auroc_ci"]
        print(f"vlmwatch: warning: probe trained on {n} labelled samples (under {MIN_TRAIN_SAMPLES}): its held-out "
              f"AUROC {calib['auroc']:.3f} rests on {calib['n']} samples, 95% CI [{lo:.3f}, {hi:.3f}] "
              f"(width {hi - lo:.2f}); train on more before relying on it", file=sys.stderr)
    if args.register:
        return _register(args, art, database)
    return 0


def _activate(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database
    from monitor.probe.artifact import load_artifact
    from monitor.probe.registry import ProbeNotFoundError, activate_probe, register_probe

    if bool(args.version) == bool(args.probe):
        raise CommandError("probe activate needs exactly one of --version V or --probe DIR")
    with open_database(args) as database, database.sessions() as s:
        try:
            if args.probe:
                row = register_probe(s, args.served_name, load_artifact(args.probe), activate=True)
            else:
                row = activate_probe(s, args.served_name, args.version)
        except (ProbeNotFoundError, FileNotFoundError, ValueError) as e:
            raise CommandError(str(e)) from None
        s.commit()
        print(f"active probe for model {args.served_name}: {row.version} (layer {row.layer}, {row.pooling})")
    return 0


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from monitor.commands._storage import open_database
    from storage.models import ProbeVersion

    with open_database(args) as database, database.sessions() as s:
        q = select(ProbeVersion).order_by(ProbeVersion.model, ProbeVersion.created_at)
        if args.served_name:
            q = q.where(ProbeVersion.model == args.served_name)
        for r in s.scalars(q):
            mark = "*" if r.active else " "
            print(f"{mark} {r.model}\t{r.version}\tlayer {r.layer}\t{r.pooling}\t{r.path}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    from monitor.adapter import load_vlm
    from monitor.probe.artifact import load_artifact
    from monitor.probe.compare import compare_signals, markdown_table, write_report
    from monitor.probe.samples import label_samples, read_samples
    from monitor.probe.stale import ProbeStaleError

    _threads(args)
    try:
        artifact = load_artifact(args.probe)
        adapter = load_vlm(args.model, device=args.device, dtype=args.dtype)
        samples = label_samples(adapter, read_samples(args.data, limit=args.limit), args.answers,
                                progress=not args.quiet)
        doc = compare_signals(adapter, artifact, samples, batch_size=args.batch_size, n_boot=args.bootstrap,
                              self_consistency_k=args.self_consistency_k, progress=not args.quiet)
    except ProbeStaleError as e:
        raise CommandError(str(e), code=3) from None
    except (ValueError, FileNotFoundError) as e:
        raise CommandError(f"probe compare: {e}") from None
    if args.out:
        write_report(doc, args.out)
    public = {k: v for k, v in doc.items() if not k.startswith("_")}
    print(json.dumps(public, indent=2, sort_keys=True) if args.json else markdown_table(doc), end="" if not args.json else "\n")
    return 0


def _since(text: str) -> datetime:
    """--since: an ISO 8601 time (UTC when no offset) or a duration back from now (90m, 6h, 2d)."""
    from monitor.calibration.history import parse_duration

    try:
        ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        return ts if ts.tzinfo else ts.replace(tzinfo=timezone.utc)
    except ValueError:
        pass
    try:
        return datetime.now(timezone.utc) - parse_duration(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since must be an ISO 8601 time or a duration like 6h, got {text!r}") from None


def _recalibrate(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database
    from monitor.probe.recalibrate import RecalibrationError, RecalibrationRequest, recalibrate_probe

    request = RecalibrationRequest(model=args.model, since=args.since, max_labels=args.max_labels, method=args.method,
                                   activate=args.activate, force=args.force, out=args.out)
    with open_database(args) as database, database.sessions() as s:
        try:
            res = recalibrate_probe(s, database.settings, request)
        except RecalibrationError as e:
            if args.json:
                print(json.dumps(e.as_dict(), indent=2))
            raise CommandError(f"probe recalibrate: {e}") from None
        s.commit()
    print(json.dumps({"status": res.status, **res.report}, indent=2) if args.json else _recal_text(res.status, res.report))
    return 3 if res.status == "retrain" else 0


def _ci(m: dict, key: str) -> str:
    v, ci = m.get(key), m.get(f"{key}_ci") or [None, None]
    if v is None:
        return "n/a"
    return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if None not in ci else f"{v:.3f}"


def _recal_text(status: str, r: dict) -> str:
    lab, sel, before, after = r["labels"], r["selection"], r["before"], r["after"]
    lines = [f"probe {r['probe']['version']} of {r['model']}: {lab['n']} freshest labels ({lab['n_correct']} correct), "
             f"{lab['first_ts']} .. {lab['last_ts']}",
             f"calibration chosen on held-out labels ({r['held_out']}):"]
    for c in sel["candidates"]:
        mark = "  <- " + sel["reason"] if c["method"] == sel["method"] else ""
        fig = f"log-loss {c['log_loss']:.4f}  Brier {c['brier']:.4f}" if c["log_loss"] is not None else c["error"]
        lines.append(f"  {c['method']:<12} {fig}{mark}")
    lines.append("before -> after (held-out):")
    for key, name in (("ece_mass", "ECE equal-mass"), ("ece_width", "ECE equal-width"), ("brier", "Brier"),
                      ("auroc", "AUROC")):
        lines.append(f"  {name:<16} {_ci(before, key)} -> {_ci(after, key)}")
    lines.append(f"  {'mean p_correct':<16} {before['mean_score']:.3f} -> {after['mean_score']:.3f} "
                 f"(accuracy {before['accuracy']:.3f})")
    lines.append(f"ranking vs {r['reference']['what']}: {r['advice']['text']}")
    new = r.get("new_probe")
    if status == "retrain":
        lines.append("nothing written (--force writes the recalibrated version anyway)")
    elif new:
        state = "registered and activated" if new["active"] else (
            f"registered, not active: `vlmwatch probe activate --served-name {r['model']} --version {new['version']}`")
        lines.append(f"new probe version {new['version']} -> {new['path']} ({state})")
        lines.append("its detectors start from a fresh reference: the first calibration.reference_n labelled samples "
                     "it scores")
    if r.get("note"):
        lines.append(r["note"])
    return "\n".join(lines) + "\n"


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="DIR", help="local model folder (save_pretrained layout)")
    p.add_argument("--data", required=True, metavar="FILE.jsonl", help="samples file (SynPOPE lines carry 'truth')")
    p.add_argument("--answers", choices=("auto", "file", "model"), default="auto",
                   help="auto: lines with 'truth' get the model's own greedy answer (honest labels); "
                   "file: keep the file's answers and labels; model: regenerate every answer")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--dtype", default="auto", help="auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    sub = add_actions(subparsers, "probe", help="hidden-state correctness probes: train, activate, list, compare, recalibrate")

    tr = add_command(sub, "train", _train, help="sweep layers x poolings, calibrate, save a versioned probe artifact")
    _model_args(tr)
    tr.add_argument("--out", required=True, metavar="PROBE_DIR", help="artifact folder to write")
    tr.add_argument("--layers", default="all", help="'all' (0 = embeddings .. L) or comma-separated layer indices")
    tr.add_argument("--poolings", default=None,
                    help="comma-separated poolings to sweep among answer, prompt_last, answer_mean, answer_stats and "
                         "answer_stats_lp (default: answer,prompt_last,answer_mean; on free-form answers add answer_stats "
                         "and answer_stats_lp, whose probe is scored by the full pass)")
    tr.add_argument("--refit", action="store_true",
                    help="refit the chosen layer/pooling/C on the train and select splits before calibrating")
    tr.add_argument("--calibration", choices=("platt", "temperature", "isotonic"), default="platt",
                    help="calibration fitted on the held-out calib split (default: platt)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--register", action="store_true", help="register in storage and make it the active probe")
    tr.add_argument("--served-name", default=None, help="served model name (as clients send it in 'model')")

    ac = add_command(sub, "activate", _activate, help="make a probe version the active one for a served model")
    ac.add_argument("--served-name", required=True)
    ac.add_argument("--version", default=None, help="a registered version")
    ac.add_argument("--probe", default=None, metavar="PROBE_DIR", help="register this artifact and activate it")

    ls = add_command(sub, "list", _list, help="registered probe versions (* = active)")
    ls.add_argument("--served-name", default=None)

    cp = add_command(sub, "compare", _compare, help="probe vs answer probability vs attention sharpness (vs self-consistency)")
    _model_args(cp)
    cp.add_argument("--probe", required=True, metavar="PROBE_DIR")
    cp.add_argument("--json", action="store_true", help="print the JSON document instead of the Markdown table")
    cp.add_argument("--out", default=None, metavar="DIR", help="also write probe_compare.json/.md/.png here")
    cp.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    cp.add_argument("--limit", type=int, default=None, help="use the first N samples only")
    cp.add_argument("--self-consistency-k", type=int, default=0,
                    help="K sampled answers per sample for the self_consistency signal (0: skip it)")

    rc = add_command(
        sub, "recalibrate", _recalibrate, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="refit the active probe's calibration on the freshest labels, as a new probe version",
        description=(
            "Refit the calibration of MODEL's active probe on its freshest human / ground-truth labels (the\n"
            "stored scores of that probe; no model pass), choosing Platt, temperature or isotonic scaling on\n"
            "held-out folds. Shows ECE (equal-mass and equal-width), Brier and AUROC with 95% CIs before and\n"
            "after, and writes a new probe version with the same head (layer, pooling, linear direction).\n"
            "When ranking broke (AUROC below the probe's reference by more than\n"
            "recalibration.max_auroc_drop, beyond noise) it says retrain instead and writes nothing.\n\n"
            "exit status: 0 written, 2 refused (unknown model, no active probe, too few labels), 3 retrain advised"),
    )
    rc.add_argument("--model", "--served-name", dest="model", required=True, metavar="NAME",
                    help="served model name (as clients send it in 'model')")
    rc.add_argument("--since", type=_since, default=None, metavar="TIME",
                    help="only labels of samples from TIME on: ISO 8601 or a duration back from now (6h, 2d)")
    rc.add_argument("--max-labels", type=int, default=None, metavar="N",
                    help="freshest labelled samples to fit on (default: recalibration.max_labels, 200)")
    rc.add_argument("--method", choices=("auto", "platt", "temperature", "isotonic"), default="auto",
                    help="auto: the lowest held-out log-loss, a simpler map within one standard error preferred")
    rc.add_argument("--activate", action="store_true", help="make the new version the active probe")
    rc.add_argument("--force", action="store_true", help="write the new version even when the advice is to retrain")
    rc.add_argument("--out", type=Path, default=None, metavar="PROBE_DIR",
                    help="artifact folder (default: recalibration.probe_dir, else beside the active probe's folder)")
    rc.add_argument("--json", action="store_true", help="print the report as JSON")
