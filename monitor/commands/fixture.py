"""``vlmwatch fixture build|list|eval|serve``: the tiny fixture VLMs trained on SynPOPE."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from monitor.commands import CommandError, add_command
from monitor.progress import add_quiet_flag, wanted

__all__ = ["register"]

_FAMILY_FIXTURE = {"llava": "tiny-llava", "paligemma": "tiny-paligemma"}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("fixture", help="build, list, evaluate and serve the tiny fixture VLMs")
    sub = parser.add_subparsers(dest="fixture_command", metavar="SUBCOMMAND")

    build = add_command(sub, "build", _build, help="train fixture models from scratch on SynPOPE (CPU, ~30 min each)")
    build.add_argument("--family", choices=tuple(_FAMILY_FIXTURE), default=None, help="one family (default: both)")
    build.add_argument("--seed", type=int, default=0, help="training seed (default 0, the shipped checkpoints)")
    build.add_argument("--out", metavar="DIR", default=None,
                       help="parent folder for the built models (default: the shipped folder monitor/fixtures/models)")
    build.add_argument("--checkpoints", metavar="DIR", default=None, help="save the model after each phase under DIR/<name>/<phase>")
    build.add_argument("--resume", action="store_true", help="with --checkpoints: restart after the last saved phase")
    build.add_argument("--threads", type=int, default=1, help="torch threads (default 1: run one build per core)")
    add_quiet_flag(build)

    lst = add_command(sub, "list", _list, help="names and folders of the built fixtures")
    lst.add_argument("--json", action="store_true", help="print JSON")

    ev = add_command(sub, "eval", _eval, help="held-out accuracy per fixture and SynPOPE split")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.add_argument("--n", type=int, default=1000, help="questions per split (default 1000)")
    ev.add_argument("--seed", type=int, default=None, help="held-out seed (default: the evaluation seed)")
    ev.add_argument("--tasks", default="describe,count,attribute,list", metavar="LIST",
                    help="free-form SynPOPE tasks to judge greedy answers on, comma-separated; '' for yes/no only "
                    "(default describe,count,attribute,list)")
    ev.add_argument("--task-n", type=int, default=300, help="examples per free-form task (default 300)")
    ev.add_argument("--fixture", action="append", default=None, metavar="NAME_OR_DIR",
                    help="fixture name or model folder (repeatable; default: all built fixtures)")
    add_quiet_flag(ev)

    serve = add_command(
        sub, "serve", _serve, help="serve a fixture with an OpenAI-compatible Chat Completions API",
        description="Serve a fixture (or model folder) at http://HOST:PORT/v1/chat/completions. Like most servers "
        "it samples at temperature 1.0 when a request sends none; probes are trained on greedy answers, so "
        "clients whose answers a probe scores should send temperature 0 (the demo and the quickstart do).")
    serve.add_argument("--model", required=True, metavar="NAME_OR_DIR", help="fixture name (tiny-llava, tiny-paligemma) or model folder")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--served-name", default=None, metavar="NAME",
                       help="model name clients send and the server answers with (default: the fixture's name, "
                       "or the folder's name)")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _resolve(name_or_dir: str) -> tuple[str, Path]:
    from monitor.fixtures.registry import FIXTURES, fixture_dir

    if name_or_dir in FIXTURES:
        return name_or_dir, fixture_dir(name_or_dir)
    path = Path(name_or_dir)
    if (path / "config.json").is_file():
        return path.name, path
    raise CommandError(f"{name_or_dir!r} is neither a fixture name ({', '.join(FIXTURES)}) "
                       "nor a model folder with config.json", command="fixture", code=1)


def _build(args: argparse.Namespace) -> int:
    # Passive OpenMP waiting: spinning worker threads collapse throughput on a shared machine.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from dataclasses import replace

    from monitor.fixtures.registry import MODELS_DIR
    from monitor.fixtures.train import Recipe, train_fixture

    families = [args.family] if args.family else list(_FAMILY_FIXTURE)
    parent = Path(args.out) if args.out else MODELS_DIR
    recipe = replace(Recipe(), threads=args.threads)
    summary = {}
    for family in families:
        out = parent / _FAMILY_FIXTURE[family]
        ck = Path(args.checkpoints) / _FAMILY_FIXTURE[family] if args.checkpoints else None
        info = train_fixture(family, out, seed=args.seed, recipe=recipe, checkpoints=ck, resume=args.resume,
                             progress=(lambda m: print(m, file=sys.stderr, flush=True)) if wanted(args) else (lambda m: None),
                             bar=wanted(args))
        summary[_FAMILY_FIXTURE[family]] = {"path": str(out), "build_seconds": info["build_seconds"], "eval": info["phases"][-1]["eval"]}
    print(json.dumps(summary, indent=2))
    return 0


def _list(args: argparse.Namespace) -> int:
    from monitor.fixtures.registry import FIXTURES, built_fixtures

    built = built_fixtures()
    rows = {name: {"family": FIXTURES[name], "path": str(path)} for name, path in built.items()}
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for name, row in rows.items():
            print(f"{name}\t{row['family']}\t{row['path']}")
        if not rows:
            print("no fixtures built; run `vlmwatch fixture build`", file=sys.stderr)
    return 0


def _eval(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from monitor.fixtures.evaluate import EVAL_SEED, evaluate_dir
    from monitor.fixtures.registry import built_fixtures
    from monitor.synpope import FREEFORM_TASKS

    for flag, value in (("--n", args.n), ("--task-n", args.task_n)):
        if value <= 0:
            raise CommandError(f"{flag} must be > 0, got {value}", command="fixture eval")
    targets = [_resolve(x) for x in args.fixture] if args.fixture else list(built_fixtures().items())
    if not targets:
        raise CommandError("no fixtures built; run `vlmwatch fixture build`", command="fixture eval", code=1)
    seed = EVAL_SEED if args.seed is None else args.seed
    tasks = tuple(t for t in args.tasks.split(",") if t) if args.tasks else ()
    unknown = sorted(set(tasks) - set(FREEFORM_TASKS))
    if unknown:
        raise CommandError(f"unknown task(s) {', '.join(unknown)}; expected {', '.join(FREEFORM_TASKS)}",
                           command="fixture eval")
    result = {name: evaluate_dir(path, n=args.n, seed=seed, tasks=tasks, task_n=args.task_n, progress=wanted(args))
              for name, path in targets}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for name, acc in result.items():
            splits = ", ".join(f"{s} {acc[s]:.3f} (yes {acc['yes_ratio'][s]:.2f})" for s in acc["yes_ratio"])
            print(f"{name}: yes/no {splits}")
            for task, row in acc.get("tasks", {}).items():
                chair = f", CHAIR_s {row['chair_s']:.3f}" if "chair_s" in row else ""
                print(f"{name}: {task} {row['accuracy']:.3f}{chair}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    # as for build and eval: spinning OpenMP threads cut a shared machine's throughput ~15x (0.9 vs 15 req/s)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from monitor.fixtures.server import serve

    name, path = _resolve(args.model)
    serve(path, args.host, args.port, model_name=args.served_name or name)
    return 0
