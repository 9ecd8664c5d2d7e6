"""``vlmwatch demo``: the end-to-end demo (the README's main job)."""

from __future__ import annotations

import argparse

from monitor.commands import add_command

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "demo", run,
        help="end-to-end demo: fixture VLM behind the proxy, daemon + API, SynPOPE traffic, a shift, alerts, report",
        description="Run the whole pipeline on this machine (SQLite, loopback): the shipped fixture VLM served "
        "as the production model, the sampling proxy in front of it, the daemon and its API; replay SynPOPE "
        "traffic (60%% yes/no questions, 40%% captions by default) with the openai client, label 10%% of it late, inject a shift part-way, and show the alerts, "
        "their detection delay and the calibration drift report. Ctrl-C stops everything.",
    )
    p.add_argument("--dir", default=None, help="working folder (database, logs, report); default: a new temp folder")
    p.add_argument("--summary-json", default=None, metavar="FILE", help="also write the closing summary as JSON")
    p.add_argument("--duration", default=None, help="traffic replay time, e.g. 3m or 5m30s (default 5m)")
    p.add_argument("--rate", type=float, default=None, help="requests per second (default 10)")
    p.add_argument("--model", default=None, help="fixture to serve: tiny-llava (default) or tiny-paligemma")
    p.add_argument("--model-dir", default=None, help="serve this model folder (save_pretrained layout) under --model's name")
    p.add_argument("--seed", type=int, default=None, help="traffic and label seed (default 0)")
    p.add_argument("--tasks", default=None, metavar="MIX",
                   help="SynPOPE task mix of the traffic as task:share pairs (default yesno:0.6,describe:0.4; "
                   "tasks: yesno, describe, count, attribute, list)")


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import logging
    import os

    from monitor.commands import CommandError
    from monitor.demo import DemoPlan, parse_duration, run_demo

    import signal

    # Ctrl-C stops the demo even when started from a shell that ignores SIGINT in background jobs
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.log_level is None:  # the demo speaks through its status line and summary
        logging.getLogger().setLevel(logging.WARNING)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    plan = DemoPlan()
    try:
        if args.duration:
            plan = plan.with_duration(parse_duration(args.duration))
    except ValueError as e:
        raise CommandError(str(e), command="demo") from None
    if args.rate is not None:
        if args.rate <= 0:
            raise CommandError("--rate must be > 0", command="demo")
        plan = replace(plan, rate=args.rate)
    if args.model:
        plan = replace(plan, model=args.model)
    if args.model_dir:
        plan = replace(plan, model_dir=args.model_dir)
    if args.seed is not None:
        plan = replace(plan, seed=args.seed)
    if args.tasks is not None:
        from monitor.demo.tasks import parse_mix

        try:
            plan = replace(plan, tasks=parse_mix(args.tasks))
        except ValueError as e:
            raise CommandError(str(e), command="demo") from None
    try:
        summary = run_demo(plan, workdir=args.dir, summary_json=args.summary_json)
    except RuntimeError as e:  # a service did not start, or the traffic could not get through
        raise CommandError(str(e), command="demo", code=1) from None
    return 0 if summary["verdict"]["ok"] else 1
