"""``vlmwatch init``: write a commented vlmwatch.yaml for an existing server and print the next steps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from monitor.commands import add_command

__all__ = ["register"]

# (flag dest, question, default) asked on a terminal when the flag is not given
_QUESTIONS = (
    ("upstream", "URL of your OpenAI-compatible server (no path)", "http://127.0.0.1:8000"),
    ("served_name", "model name clients send in `model`", None),
    ("model_dir", "local folder with the model's weights (save_pretrained layout)", None),
    ("requests_per_minute", "expected requests per minute", "60"),
    ("sample_rate", "share of requests the proxy stores and scores", "0.1"),
    ("label_share", "share of stored responses you will label", "0.1"),
    ("trial_hours", "how long the trial runs, in hours", "24"),
)
_NUMBERS = ("requests_per_minute", "sample_rate", "label_share", "trial_hours")


def _ask(args: argparse.Namespace) -> str | None:
    """Fill missing answers: asked on a terminal, else their default; the flag still missing, if any."""
    interactive = sys.stdin.isatty()
    for dest, question, default in _QUESTIONS:
        if getattr(args, dest) is not None:
            continue
        answer = None
        if interactive:
            answer = input(f"{question}{f' [{default}]' if default else ''}: ").strip() or None
        answer = answer or default
        if answer is None:
            return "--" + dest.replace("_", "-")
        setattr(args, dest, float(answer) if dest in _NUMBERS else answer)
    return None


def _init(args: argparse.Namespace) -> int:
    from monitor.commands import CommandError
    from monitor.config import ConfigError, load_config
    from monitor.init_config import Traffic, next_steps, render_config

    out = Path(args.out)
    if out.exists() and not args.force:
        raise CommandError(f"{out} exists; --force overwrites it", command="init")
    missing = _ask(args)
    if missing:
        raise CommandError(f"{missing} is needed (or run init on a terminal to be asked)", command="init")
    if not (Path(args.model_dir) / "config.json").is_file():
        raise CommandError(f"--model-dir {args.model_dir} has no config.json: not a save_pretrained model folder",
                           command="init")
    try:
        traffic = Traffic(args.requests_per_minute, args.sample_rate, args.label_share, args.trial_hours)
    except ValueError as e:
        raise CommandError(str(e), command="init") from None
    text = render_config(upstream=args.upstream.rstrip("/"), model_name=args.served_name,
                         model_dir=str(Path(args.model_dir).resolve()), traffic=traffic, database=args.database,
                         proxy_listen=args.proxy_listen, api_listen=args.api_listen, webhook=args.webhook)
    out.write_text(text)
    try:
        load_config(out)
    except ConfigError as e:  # a value given that the config refuses (e.g. a malformed listen address)
        out.unlink()
        raise CommandError(str(e), command="init") from None
    print(f"wrote {out} for {args.served_name} behind {args.upstream} "
          f"({traffic.labels_per_minute:.2f} labels/min expected). Next, in this order:")
    for i, (what, cmd) in enumerate(next_steps(str(out), args.served_name, args.model_dir, args.api_listen), 1):
        print(f"  {i}. {what}:\n       {cmd}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(
        subparsers, "init", _init, help="write a commented vlmwatch.yaml for your server and model, and print the next steps",
        description="Write a commented vlmwatch.yaml for an existing OpenAI-compatible server and a local copy of "
        "its model, sized to the traffic and label rates you expect (calibration window, min_labels, rolling_n, "
        "reference_n, detect horizon and intervals; see docs/quickstart.md), then print the next commands in "
        "order. Flags not given are asked on a terminal (else their defaults; --served-name and --model-dir "
        "have none).")
    p.add_argument("--upstream", default=None, metavar="URL", help="your server, e.g. http://127.0.0.1:8000")
    p.add_argument("--served-name", default=None, metavar="NAME", help="model name clients send in `model`")
    p.add_argument("--model-dir", default=None, metavar="DIR", help="local model folder (save_pretrained layout)")
    p.add_argument("--requests-per-minute", type=float, default=None, metavar="R", help="expected traffic (default 60)")
    p.add_argument("--sample-rate", type=float, default=None, metavar="S",
                   help="share of requests the proxy stores (proxy.sample_rate, default 0.1)")
    p.add_argument("--label-share", type=float, default=None, metavar="F",
                   help="share of stored responses that get a label (default 0.1)")
    p.add_argument("--trial-hours", type=float, default=None, metavar="H", help="length of the trial (default 24)")
    p.add_argument("--database", default="sqlite:///vlmwatch.db", metavar="URL", help="storage.url (default SQLite here)")
    p.add_argument("--proxy-listen", default="127.0.0.1:8081", metavar="HOST:PORT", help="proxy.listen")
    p.add_argument("--api-listen", default="127.0.0.1:8090", metavar="HOST:PORT", help="api.listen")
    p.add_argument("--webhook", default=None, metavar="URL", help="alert webhook (alerts.channels)")
    p.add_argument("--out", default="vlmwatch.yaml", metavar="FILE", help="where to write (default ./vlmwatch.yaml)")
    p.add_argument("--force", action="store_true", help="overwrite --out")
