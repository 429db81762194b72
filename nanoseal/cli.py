"""
`nanoseal <command>`: the command-line entry point.

    nanoseal --help
    nanoseal chat --checkpoint DIR [-p PROMPT]

Every command's handler returns an exit status. A NanosealError (bad input: which file, which field,
what was expected) is printed as one line on stderr with exit status 2, never as a traceback.

Under torchrun (`torchrun --nproc_per_node=N -m nanoseal pretrain|sft|seal|demo ...`) each process joins the
process group before its command runs and leaves it after (nanoseal.dist); other commands refuse to run on
several processes. An error on a rank other than 0 is prefixed with "[rank N]".
"""

import argparse
import sys

from nanoseal import dist
from nanoseal.common import NanosealError

DIST_COMMANDS = ("pretrain", "sft", "seal", "demo")  # the commands that spread their work over torchrun's ranks


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    from nanoseal import chat, demo, lora, report
    from nanoseal.arc import cli as arc_cli
    from nanoseal.seal import run as seal_run
    from nanoseal.train import pretrain, sft, tok_train
    from nanoseal.web import serve

    parser = argparse.ArgumentParser(prog="nanoseal", description="SEAL-style self-adapting few-shot learning "
                                     "for nanochat-style GPT models (ARC tasks).")
    sub = parser.add_subparsers(dest="command", metavar="<command>")
    sub.required = True

    commands = [  # (name, help, add its flags, run it)
        ("chat", "chat with a checkpoint (interactive, or one-shot with -p)", chat.add_args, chat.run),
        ("demo", "train (or reuse) a tiny policy, run SEAL and the baseline table, write the report",
         demo.add_args, demo.run),
        ("train-tokenizer", "train the BPE tokenizer for a preset", tok_train.add_args, tok_train.run),
        ("pretrain", "pretrain a policy on procedural ARC-style tasks (resumable)", pretrain.add_args, pretrain.run),
        ("sft", "teach a pretrained policy to write self-edit JSON and answer grids (resumable)",
         sft.add_args, sft.run),
        ("seal", "the SEAL loop: self-edits, TTT, ReST-EM rounds, baselines (resumable)",
         seal_run.add_args, seal_run.run),
        ("report", "write report.md + plots/*.png for a seal run directory", report.add_args, report.run),
        ("lora-info", "LoRA trainable parameter counts and memory for a GPT config",
         lora.add_lora_info_args, lora.lora_info_main),
        ("serve", "web UI on localhost: chat (base / adapters / round policies), ARC viewer, runs",
         serve.add_args, serve.run),
    ]
    for name, help_text, add_args, run in commands:
        p = sub.add_parser(name, help=help_text)
        add_args(p)
        p.set_defaults(func=run)
    arc_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse argv, run the command, turn NanosealError into a one-line message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    where = f"[rank {dist.rank()}] " if dist.rank() else ""
    try:
        if dist.is_distributed():
            if args.command not in DIST_COMMANDS:
                raise NanosealError(f"runs on one process; under torchrun only {', '.join(DIST_COMMANDS)} do")
            dist.init()
        status = int(args.func(args) or 0)
        dist.teardown()
        return status
    except NanosealError as e:
        print(f"{where}nanoseal {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nanoseal {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
