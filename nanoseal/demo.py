"""
`nanoseal demo`: the whole story on a laptop CPU in one command. It takes the shipped tiny policy (or trains one
with --from-scratch), runs SEAL on procedural training tasks (ReST-EM rounds), then the baseline table on held-out
tasks with 95 % intervals, on all of them and on the curated subset, and prints the table and the report's path.

    nanoseal demo                                   # shipped tiny policy, 2 ReST-EM rounds (README)
    nanoseal demo --run-dir runs/demo --seed 1      # where the run goes; another seed
    nanoseal demo --from-scratch                    # train the tiny policy first (tokenizer, pretraining, SFT)
    nanoseal demo --tasks seal-arc                  # SEAL's own ARC-AGI-1 tasks instead of procedural ones
    nanoseal demo --preset d12 --device cuda --train-tasks 8 --eval-tasks 8 --self-edits 15
    nanoseal demo --procs 1                         # one process (default on a CPU: 2, each with half the threads)

Steps: the policy - nanoseal/policies/tiny (what `--from-scratch` trains with --policy-seed 0, shipped so the
demo's minutes go to SEAL) or `nanoseal train-tokenizer`, `pretrain` and `sft` for the preset (each reused when its
finished checkpoint is cached under $NANOSEAL_BASE_DIR, default ~/.cache/nanoseal) - then `nanoseal seal` with
  --tasks       <family>-<seed>-s<lo>-<hi>,...  --train-tasks instances of each family (seeds 1000 S, 1000 S + 1,
                ... for --seed S); the families are held-out ones (nanoseal.arc.gen.EVAL_FAMILIES, never in
                pretraining or SFT: the tasks are new to the model, as SEAL's ARC tasks are): by default those some
                oracle recipe solves with the preset's policy (Preset.reachable; SEAL filtered its ARC tasks the
                same way for its model), with --families held-out all ten, with --families preset the preset's own
  --eval-tasks  the same for --eval-tasks held-out instances (seeds from 1,000,000 + 1000 S: other instances of
                those families), never drawn by pretraining, SFT or the SEAL rounds
  --curate      SEAL's curation of the training pool (keep the tasks ICL fails and an oracle recipe solves)
and the preset's ReST-EM update size (nanoseal.seal.update_size). On a CPU the shipped-policy demo runs as 2
processes (nanoseal.dist.spawn_local; the same rows as one process, 1.25x faster on 2 cores). The run directory
(--run-dir, default <base>/runs/demo-<timestamp>) holds results.json and report.md; re-running the same command
resumes it.
`nanoseal report RUN1 RUN2 RUN3` pools seeds. dev/LOG.md has how these defaults were chosen: the rounds, K and the
update on development seeds 1 and 2 (2026-12-01, second entry), the reachable families and instances a family from
the development seeds' oracle rows (2026-12-02, third entry).
"""

import argparse
import os
import time

import torch

from nanoseal import dist
from nanoseal.arc.gen import EVAL_FAMILIES, feasible_families, instance_id
from nanoseal.argtypes import (
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TEMPERATURE,
    OneLineParser,
    float_in,
    int_in,
)
from nanoseal.common import autodetect_device, get_base_dir, print0
from nanoseal.seal import run as seal_run
from nanoseal.seal.curate import RULES as CURATION_RULES
from nanoseal.train.presets import get_preset
from nanoseal.train.pretrain import add_common_args, budget
from nanoseal.train.sft import add_prior_arg, sft

# the tiny policy `nanoseal demo --from-scratch` trains with --policy-seed 0 (tokenizer, 1,100 pretraining and 250 SFT
# steps), shipped so the demo spends its minutes on SEAL; policies/tiny/SHA256SUMS lists its files
SHIPPED_POLICY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "policies", "tiny")
HELDOUT_SEED = 1_000_000  # held-out instances: seeds far from the training tasks' (0...) and pretraining's (1e7...)
SEED_STRIDE = 1000  # --seed S draws instance seeds from S * 1000 on (training) and 1e6 + S * 1000 on (held out)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal demo`."""
    add_common_args(parser)
    parser.add_argument("--tasks", default="gen", choices=["gen", "seal-arc"],
                        help="gen: procedural tasks; seal-arc: SEAL's 12 training / 10 evaluation ARC-AGI-1 tasks")
    parser.add_argument("--families", default="reachable", choices=["reachable", "held-out", "preset"],
                        help="held-out: the families no preset trains on (nanoseal.arc.gen.EVAL_FAMILIES; training and "
                             "held-out tasks are different instances of them); reachable (default): those of them "
                             "some oracle recipe solves with the preset's policy (Preset.reachable; all of them "
                             "where the preset names none); preset: the preset's own families")
    parser.add_argument("--run-dir", default=None, help="default: <base>/runs/demo-<timestamp>")
    parser.add_argument("--rounds", type=NON_NEGATIVE_INT, default=2, help="ReST-EM rounds")
    parser.add_argument("--self-edits", type=POSITIVE_INT, default=12,
                        help="K self-edits per training task (SEAL: 15)")
    parser.add_argument("--train-tasks", type=POSITIVE_INT, default=3, help="training instances per family")
    parser.add_argument("--eval-tasks", type=POSITIVE_INT, default=4, help="held-out instances per family")
    parser.add_argument("--eval-self-edits", type=POSITIVE_INT, default=3,
                        help="self-edits each policy samples per held-out task (SEAL: 5)")
    parser.add_argument("--split-weight-change", action="store_true",
                        help="also adapt the un-trained model with SEAL's self-edits (a held-out row that splits "
                             "SEAL's difference into the self-edits' and the weight change's share)")
    parser.add_argument("--max-views", type=int_in(1, 7), default=None, help="inference views (default all 7)")
    parser.add_argument("--oracle-grid", default="prior", choices=["seal", "prior"],
                        help="prior: 10 recipes (default, cheap); seal: SEAL's 24")
    parser.add_argument("--curate", action=argparse.BooleanOptionalAction, default=True,
                        help="SEAL's curation of the training tasks (keep those ICL fails and an oracle recipe "
                             "solves; default on); the held-out tables always show the curated subset too")
    parser.add_argument("--curate-rule", default="seal", choices=list(CURATION_RULES),
                        help="seal: SEAL's rule; contrast: also keep training tasks ICL solves and an oracle recipe "
                             "breaks (nanoseal.seal.curate)")
    parser.add_argument("--restem-replay", type=float_in(0, 10.0), default=0.0,
                        help="grid-answer documents trained on per kept self-edit in each ReST-EM update (0: SEAL's)")
    parser.add_argument("--restem-max-per-task", type=NON_NEGATIVE_INT, default=0,
                        help="successful self-edits of one training task kept for an update at most (0: all)")
    parser.add_argument("--restem-min-steps", type=NON_NEGATIVE_INT, default=None,
                        help="optimizer steps of each ReST-EM update at least (default: the recipe's; the tiny "
                             "preset's 80)")
    parser.add_argument("--restem-head", action="store_true",
                        help="the ReST-EM update also trains the output head (nanoseal seal --restem-head)")
    parser.add_argument("--prompt-votes", action="store_true",
                        help="extension: each self-edit prompt says how many of the policy's own inference views "
                             "agree on its un-adapted answer (nanoseal seal --prompt-votes)")
    parser.add_argument("--eval-temperature", type=TEMPERATURE, default=None,
                        help="sampling temperature of every policy's held-out self-edits (default: the training "
                             "rounds' 0.8, as SEAL)")
    parser.add_argument("--restem-recipe", default="auto",
                        help="ReST-EM update size: auto (the preset's), seal (SEAL's 1B recipe) or a preset name")
    parser.add_argument("--procs", type=POSITIVE_INT, default=None,
                        help="processes sharing the work (ranks on this machine, as torchrun starts them), the "
                             "machine's torch threads split among them; default 2 on a CPU with >= 2 threads and the "
                             "shipped policy, else 1")
    parser.add_argument("--from-scratch", action="store_true",
                        help="train the policy (tokenizer, pretraining, SFT; cached in the base dir) instead of using "
                             "the shipped tiny policy")
    parser.add_argument("--policy-seed", type=SEED, default=0,
                        help="with --from-scratch: seed of tokenizer/pretraining/SFT (cached per base dir)")
    parser.add_argument("--pretrain-minutes", type=POSITIVE_FLOAT, default=None,
                        help="a time budget instead of the preset's steps")
    parser.add_argument("--sft-minutes", type=POSITIVE_FLOAT, default=None,
                        help="a time budget instead of the preset's steps")
    add_prior_arg(parser)


def shipped_policy(args: argparse.Namespace) -> bool:
    """Whether the demo runs on the shipped tiny policy (the tiny preset's own steps, no --from-scratch)."""
    custom = args.from_scratch or args.preset != "tiny" or args.policy_seed != 0 or args.pretrain_minutes is not None \
        or args.sft_minutes is not None or args.selfedit_prior not in (None, "flat") \
        or args.doc_attention not in (None, get_preset("tiny").doc_attention)
    return not custom


def default_procs(args: argparse.Namespace) -> int:
    """--procs, else 2 ranks on a CPU with >= 2 torch threads when the demo uses the shipped policy (its work items
    run two at a time: 1.25x on the 2-core development machine), else 1 (a GPU; or training a policy, which stays
    on one process so that --from-scratch gives the shipped weights)."""
    if args.procs is not None:
        return args.procs
    if not shipped_policy(args) or autodetect_device(args.device).type != "cpu":
        return 1
    return 2 if torch.get_num_threads() >= 2 else 1


def demo_families(preset, which: str) -> list[str]:
    """The procedural families the demo draws its tasks from: the held-out ones (all, or those the preset's policy
    can reach) or the preset's own."""
    if which == "preset":
        return preset.family_names()
    families = preset.reachable if which == "reachable" and preset.reachable else EVAL_FAMILIES
    assert set(families) <= set(EVAL_FAMILIES), f"{preset.name}: reachable families must be held-out ones"
    return feasible_families(families, preset.min_side, preset.max_side)


def instance_ids(preset, families: list[str], first_seed: int, n: int) -> str:
    """Comma-separated ids of n instances (seeds first_seed...) of each family, at the preset's grid sides."""
    return ",".join(instance_id(f, first_seed + i, preset.min_side, preset.max_side)
                    for f in families for i in range(n))


def seal_argv(args: argparse.Namespace, checkpoint: str, preset) -> list[str]:
    """The `nanoseal seal` flags the demo runs with."""
    if args.tasks == "seal-arc":
        tasks, eval_tasks = "seal-arc-train", "seal-arc-eval"
    else:
        families = demo_families(preset, args.families)
        tasks = instance_ids(preset, families, SEED_STRIDE * args.seed, args.train_tasks)
        eval_tasks = instance_ids(preset, families, HELDOUT_SEED + SEED_STRIDE * args.seed, args.eval_tasks)
    argv = ["--checkpoint", checkpoint, "--tasks", tasks, "--eval-tasks", eval_tasks, "--rounds", str(args.rounds),
            "--self-edits", str(args.self_edits), "--eval-self-edits", str(args.eval_self_edits),
            "--seed", str(args.seed), "--dtype", args.dtype,
            "--n-max", str(preset.ttt_n_max), "--oracle-grid", args.oracle_grid,
            "--restem-recipe", args.restem_recipe]
    if args.curate:
        argv += ["--curate", "--curate-rule", args.curate_rule]
    if args.restem_replay:
        argv += ["--restem-replay", str(args.restem_replay)]
    if args.restem_max_per_task:
        argv += ["--restem-max-per-task", str(args.restem_max_per_task)]
    if args.restem_min_steps is not None:
        argv += ["--restem-min-steps", str(args.restem_min_steps)]
    if args.restem_head:
        argv.append("--restem-head")
    if args.prompt_votes:
        argv.append("--prompt-votes")
    if args.eval_temperature is not None:
        argv += ["--eval-temperature", str(args.eval_temperature)]
    if not args.split_weight_change:
        argv.append("--no-split-weight-change")
    if args.max_views:
        argv += ["--max-views", str(args.max_views)]
    if args.run_dir:
        argv += ["--run-dir", args.run_dir]
    if args.device:
        argv += ["--device", args.device]
    return argv


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal demo`."""
    t0 = time.time()
    procs = default_procs(args)
    if procs > 1 and not dist.is_distributed():  # re-run as --procs ranks of 1/procs of the threads each
        if args.run_dir is None:
            args.run_dir = f"{get_base_dir()}/runs/demo-{time.strftime('%Y%m%d-%H%M%S')}"
        argv = list(getattr(args, "argv", None) or [])
        assert argv and argv[0] == "demo", f"the demo re-runs itself from its own command line, got {argv!r}"
        threads = max(1, torch.get_num_threads() // procs)
        print0(f"running as {procs} processes of {threads} thread(s) each (--procs 1: one process); "
               f"run dir {args.run_dir}")
        return dist.spawn_local(argv + ["--run-dir", args.run_dir], procs, threads)  # the last --run-dir wins
    pre_s, pre_steps = budget(args.pretrain_minutes, None)
    sft_s, sft_steps = budget(args.sft_minutes, None)
    preset = get_preset(args.preset, pretrain_seconds=pre_s, pretrain_steps=pre_steps, sft_seconds=sft_s,
                        sft_steps=sft_steps, selfedit_prior=args.selfedit_prior, doc_attention=args.doc_attention)
    base = get_base_dir()
    if args.run_dir is None:  # under torchrun every rank takes rank 0's timestamp
        args.run_dir = dist.broadcast_object(f"{base}/runs/demo-{time.strftime('%Y%m%d-%H%M%S')}")
    if shipped_policy(args):
        checkpoint = SHIPPED_POLICY
        print0(f"policy: the shipped tiny policy ({checkpoint}); `nanoseal demo --from-scratch` trains it anew")
    else:
        checkpoint = sft(preset, base, args.policy_seed, dist.local_device(autodetect_device(args.device)), args.dtype)
    parser = OneLineParser(prog="nanoseal seal")
    seal_run.add_args(parser)
    status = seal_run.run(parser.parse_args(seal_argv(args, checkpoint, preset)))
    print0(f"demo finished in {time.time() - t0:.0f}s")
    return status
