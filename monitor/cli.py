"""The ``vlmwatch`` command line.

Each sub-command lives in ``monitor/commands/<name>.py`` and exposes ``register(subparsers)``.
Command modules import only the standard library and light helpers at module level, so that
``vlmwatch --help`` answers fast; torch, transformers and evidently are imported inside the
functions that run a command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

__all__ = ["main", "build_parser"]

# Order is the order shown by --help.
COMMAND_MODULES = (
    "monitor.commands.init",
    "monitor.commands.demo",
    "monitor.commands.daemon",
    "monitor.commands.api",
    "monitor.commands.db",
    "monitor.commands.status",
    "monitor.commands.ingest",
    "monitor.commands.labels",
    "monitor.commands.probe",
    "monitor.commands.reference",
    "monitor.commands.inputs",
    "monitor.commands.detect",
    "monitor.commands.alerts",
    "monitor.commands.report",
    "monitor.commands.proxy",
    "monitor.commands.tail",
    "monitor.commands.fixture",
    "monitor.commands.synpope",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlmwatch",
        description="Continuous monitoring agent for vision-language models in production.",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        default=None,
        help="YAML config file (default: ./vlmwatch.yaml if present, else built-in defaults); "
        "VLMWATCH_<SECTION>__<KEY> environment variables override it",
    )
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # command not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from monitor.commands import CommandError
    from monitor.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    quiet = getattr(args, "quiet", False)  # --quiet: warnings and errors only, unless --log-level says otherwise
    if quiet:  # nor the progress bars of Hugging Face libraries (weight loading), read when they are imported
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    logging.basicConfig(
        level=(args.log_level or ("WARNING" if quiet else "INFO")).upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if (args.log_level or "").upper() != "DEBUG":  # libraries' INFO lines (Alembic's plugins, httpx's
        for noisy in ("alembic", "httpx"):             # every request) are noise for operators
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        rc = args.func(args)
    except ConfigError as e:
        print(f"vlmwatch: {e}", file=sys.stderr)
        return 2
    except CommandError as e:
        print(e.line, file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("vlmwatch: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
