"""``vlmwatch synpope generate``: POPE-style samples files with shift knobs."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from monitor.commands import add_command
from monitor.progress import add_quiet_flag, wanted

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("synpope", help="generate SynPOPE data (synthetic POPE with shift knobs)")
    sub = parser.add_subparsers(dest="synpope_command", metavar="SUBCOMMAND")
    gen = add_command(
        sub, "generate", _generate,
        help="write DIR/samples.jsonl and DIR/images/*.png",
        description="Honest questions about coloured shapes: POPE-style yes/no, or free-form tasks "
        "(describe: a caption; count; attribute: the colour of a shape; list: the shapes of a colour; mix: "
        "all of them). answer and truth hold the canonical true answer; meta holds task, split, objects and "
        "shift. Deterministic by seed.",
    )
    gen.add_argument("--task", default="yesno", choices=("yesno", "describe", "count", "attribute", "list", "mix"),
                     help="what is asked (default yesno)")
    gen.add_argument("--split", default="random", choices=("random", "popular", "adversarial"),
                     help="how yes/no negatives are drawn (default random)")
    gen.add_argument("--n", type=int, required=True, help="number of questions")
    gen.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    gen.add_argument("--out", required=True, metavar="DIR", help="output folder")
    gen.add_argument("--model", default="tiny-llava", help="model name written in each record (default tiny-llava)")
    add_quiet_flag(gen)
    knobs = gen.add_argument_group("shift knobs (defaults: no shift)")
    knobs.add_argument("--noise", type=float, default=0.0, help="Gaussian pixel noise std, fraction of 255")
    knobs.add_argument("--blur", type=float, default=0.0, help="Gaussian blur radius in px")
    knobs.add_argument("--contrast", type=float, default=1.0, help="contrast factor (1 = unchanged)")
    knobs.add_argument("--background", default="plain", choices=("plain", "dark", "random", "textured"))
    knobs.add_argument("--cooc-seed", type=int, default=0, help="partner pairing: a new co-occurrence matrix (hardness)")
    knobs.add_argument("--yes-rate", type=float, default=0.5, help="share of questions whose truth is yes")
    knobs.add_argument("--concept", default="none", choices=("none", "colours", "shapes"), help="remap colours or glyphs")
    knobs.add_argument("--template", default="pope", help="prompt template style of every task: pope, contain, see, present")
    knobs.add_argument("--label-noise", type=float, default=0.0, help="share of ground-truth answers made wrong")
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _generate(args: argparse.Namespace) -> int:
    from monitor.commands import CommandError
    from monitor.synpope import Shift, generate

    if args.n < 0:
        raise CommandError(f"--n must be >= 0, got {args.n}", command="synpope")
    try:
        shift = Shift(
            noise=args.noise,
            blur=args.blur,
            contrast=args.contrast,
            background=args.background,
            cooc_seed=args.cooc_seed,
            yes_rate=args.yes_rate,
            concept=args.concept,
            template=args.template,
            label_noise=args.label_noise,
        )
    except ValueError as e:
        raise CommandError(str(e), command="synpope") from None
    records = generate(args.split, args.n, args.seed, shift=shift, out=args.out, model=args.model, task=args.task,
                       progress=wanted(args))
    tasks = Counter(r["meta"]["task"] for r in records)
    yes = sum(r["truth"] == "yes" for r in records if r["meta"]["task"] == "yesno")
    print(json.dumps({"out": args.out, "n": len(records), "task": args.task, "tasks": dict(sorted(tasks.items())),
                      "split": args.split, "yes": yes, "shift": shift.changed()}))
    return 0
