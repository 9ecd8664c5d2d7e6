"""``vlmwatch probe train|activate|list|compare``: hidden-state correctness probes."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["register"]


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _register(args: argparse.Namespace, artifact) -> int:  # noqa: ANN001
    from monitor.commands._storage import open_database
    from monitor.probe.registry import register_probe
    from storage.db import session_factory

    _, engine = open_database(args)
    try:
        with session_factory(engine)() as s:
            row = register_probe(s, args.served_name, artifact, activate=True)
            s.commit()
            print(f"registered and activated probe {row.version} for model {args.served_name} (id {row.id})")
    finally:
        engine.dispose()
    return 0


def _train(args: argparse.Namespace) -> int:
    from monitor.probe.head import POOLINGS
    from monitor.probe.train import TrainOptions, train_probe

    if args.register and not args.served_name:
        print("vlmwatch: --register needs --served-name NAME (the model name clients send)", file=sys.stderr)
        return 2
    _threads(args)
    poolings = tuple(p.strip() for p in args.poolings.split(",")) if args.poolings else POOLINGS
    opts = TrainOptions(layers=args.layers, poolings=poolings, answers=args.answers, calibration=args.calibration,
                        batch_size=args.batch_size, seed=args.seed, progress=not args.quiet)
    try:
        art = train_probe(args.model, args.data, args.out, opts, device=args.device, dtype=args.dtype)
    except (ValueError, FileNotFoundError) as e:
        print(f"vlmwatch: probe train: {e}", file=sys.stderr)
        return 2
    m = art.meta
    calib = m.metrics["calib"]
    print(
        f"probe {m.version}: layer {m.layer}/{m.num_layers}, pooling {m.pooling}, "
        f"held-out AUROC {calib['auroc']:.3f} [{calib['auroc_ci'][0]:.3f}, {calib['auroc_ci'][1]:.3f}] "
        f"(calib split, n={calib['n']}), ECE {calib['ece']:.3f} -> {art.path}"
    )
    if args.register:
        return _register(args, art)
    return 0


def _activate(args: argparse.Namespace) -> int:
    from monitor.commands._storage import open_database
    from monitor.probe.artifact import load_artifact
    from monitor.probe.registry import ProbeNotFoundError, activate_probe, register_probe
    from storage.db import session_factory

    if bool(args.version) == bool(args.probe):
        print("vlmwatch: probe activate needs exactly one of --version V or --probe DIR", file=sys.stderr)
        return 2
    _, engine = open_database(args)
    try:
        with session_factory(engine)() as s:
            if args.probe:
                row = register_probe(s, args.served_name, load_artifact(args.probe), activate=True)
            else:
                row = activate_probe(s, args.served_name, args.version)
            s.commit()
            print(f"active probe for model {args.served_name}: {row.version} (layer {row.layer}, {row.pooling})")
    except (ProbeNotFoundError, FileNotFoundError, ValueError) as e:
        print(f"vlmwatch: {e}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    return 0


def _list(args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from monitor.commands._storage import open_database
    from storage.db import session_factory
    from storage.models import ProbeVersion

    _, engine = open_database(args)
    try:
        with session_factory(engine)() as s:
            q = select(ProbeVersion).order_by(ProbeVersion.model, ProbeVersion.created_at)
            if args.served_name:
                q = q.where(ProbeVersion.model == args.served_name)
            for r in s.scalars(q):
                mark = "*" if r.active else " "
                print(f"{mark} {r.model}\t{r.version}\tlayer {r.layer}\t{r.pooling}\t{r.path}")
    finally:
        engine.dispose()
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
        print(f"vlmwatch: {e}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError) as e:
        print(f"vlmwatch: probe compare: {e}", file=sys.stderr)
        return 2
    if args.out:
        write_report(doc, args.out)
    public = {k: v for k, v in doc.items() if not k.startswith("_")}
    print(json.dumps(public, indent=2, sort_keys=True) if args.json else markdown_table(doc), end="" if not args.json else "\n")
    return 0


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
    p = subparsers.add_parser("probe", help="hidden-state correctness probes: train, activate, list, compare")
    sub = p.add_subparsers(dest="probe_command", metavar="ACTION", required=True)

    tr = sub.add_parser("train", help="sweep layers x poolings, calibrate, save a versioned probe artifact")
    _model_args(tr)
    tr.add_argument("--out", required=True, metavar="PROBE_DIR", help="artifact folder to write")
    tr.add_argument("--layers", default="all", help="'all' (0 = embeddings .. L) or comma-separated layer indices")
    tr.add_argument("--poolings", default=None, help="comma-separated subset of answer,prompt_last,answer_mean")
    tr.add_argument("--calibration", choices=("platt", "isotonic"), default="platt")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--register", action="store_true", help="register in storage and make it the active probe")
    tr.add_argument("--served-name", default=None, help="served model name (as clients send it in 'model')")
    tr.set_defaults(func=_train)

    ac = sub.add_parser("activate", help="make a probe version the active one for a served model")
    ac.add_argument("--served-name", required=True)
    ac.add_argument("--version", default=None, help="a registered version")
    ac.add_argument("--probe", default=None, metavar="PROBE_DIR", help="register this artifact and activate it")
    ac.set_defaults(func=_activate)

    ls = sub.add_parser("list", help="registered probe versions (* = active)")
    ls.add_argument("--served-name", default=None)
    ls.set_defaults(func=_list)

    cp = sub.add_parser("compare", help="probe vs answer probability vs attention sharpness (vs self-consistency)")
    _model_args(cp)
    cp.add_argument("--probe", required=True, metavar="PROBE_DIR")
    cp.add_argument("--json", action="store_true", help="print the JSON document instead of the Markdown table")
    cp.add_argument("--out", default=None, metavar="DIR", help="also write probe_compare.json/.md/.png here")
    cp.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for CIs")
    cp.add_argument("--limit", type=int, default=None, help="use the first N samples only")
    cp.add_argument("--self-consistency-k", type=int, default=0,
                    help="K sampled answers per sample for the self_consistency signal (0: skip it)")
    cp.set_defaults(func=_compare)
