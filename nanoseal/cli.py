"""
`nanoseal <command>`: the command-line entry point.

    nanoseal --help
    nanoseal chat --checkpoint DIR [-p PROMPT]

Every command's handler returns an exit status. Bad input never ends in a traceback, always in one line on stderr:
- a bad flag (unknown, missing, out of range: nanoseal.argtypes) -> `nanoseal <command>: error: ...`, status 2;
- a NanosealError (bad input: which file, which field, what was expected) -> status 2;
- an OSError the command did not expect (a file where a folder should be, no permission, a full disk) -> the
  path and the system's reason, status 2;
- running out of memory -> one line, status 1; anything else is a bug: one line saying so, status 1
  (NANOSEAL_DEBUG=1 re-raises it, with its traceback).

Under torchrun (`torchrun --nproc_per_node=N -m nanoseal pretrain|sft|seal|demo ...`) each process joins the
process group before its command runs and leaves it after (nanoseal.dist); other commands refuse to run on
several processes. An error on a rank other than 0 is prefixed with "[rank N]".
"""

import argparse
import errno
import os
import sys

from nanoseal import dist
from nanoseal.argtypes import OneLineParser
from nanoseal.common import NanosealError

DIST_COMMANDS = ("pretrain", "sft", "seal", "demo")  # the commands that spread their work over torchrun's ranks


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of every subcommand."""
    from nanoseal import chat, demo, lora, report
    from nanoseal.arc import cli as arc_cli
    from nanoseal.seal import run as seal_run
    from nanoseal.train import pretrain, sft, tok_train
    from nanoseal.web import serve

    parser = OneLineParser(prog="nanoseal", description="SEAL-style self-adapting few-shot learning "
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


def describe_os_error(e: OSError) -> str:
    """An OSError as one line: the path(s) and the system's reason (with a hint for a full disk)."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        reason += " (free some space and rerun: finished steps are kept)"
    return f"{where}: {reason}" if where else reason


def main(argv: list[str] | None = None) -> int:
    """Parse argv, run the command, turn every failure into a one-line message and an exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (a command may re-run itself)
    except SystemExit as e:  # --help (0) or a bad flag (2, already printed in one line)
        return e.code if isinstance(e.code, int) else 2
    where = f"[rank {dist.rank()}] " if dist.rank() else ""
    prefix = f"{where}nanoseal {args.command}: "
    try:
        if dist.is_distributed():
            if args.command not in DIST_COMMANDS:
                raise NanosealError(f"runs on one process; under torchrun only {', '.join(DIST_COMMANDS)} do")
            dist.init()
        status = int(args.func(args) or 0)
        dist.teardown()
        return status
    except NanosealError as e:
        print(f"{prefix}error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nanoseal {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"{prefix}error: {describe_os_error(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print(f"{prefix}error: out of memory", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - a bug, not bad input: still one line, unless debugging
        if os.environ.get("NANOSEAL_DEBUG"):
            raise
        if type(e).__name__ == "OutOfMemoryError":  # torch's, on an accelerator
            print(f"{prefix}error: out of memory on the device ({one_line(e)})", file=sys.stderr)
            return 1
        print(f"{prefix}internal error: {type(e).__name__}: {one_line(e)} (a bug; NANOSEAL_DEBUG=1 shows the "
              "traceback)", file=sys.stderr)
        return 1


def one_line(e: BaseException) -> str:
    """An exception's message as one line (its first line, at most 500 characters)."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:500]


if __name__ == "__main__":
    sys.exit(main())
