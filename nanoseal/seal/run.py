"""
`nanoseal seal`: the whole SEAL few-shot loop in one resumable run directory.

    nanoseal seal --checkpoint DIR --tasks gen-train --eval-tasks gen-eval --rounds 1 --self-edits 4 \\
        --run-dir runs/demo --seed 0

Rounds (training tasks): the policy samples K self-edits per task, each is scored by TTT (nanoseal.seal.ttt),
the (prompt, self-edit) pairs with reward 1 are behaviour-cloned into the policy and merged (ReST-EM,
nanoseal.seal.restem); rounds/<i>/policy/ holds the policy after round i (round 0 = the checkpoint).
Each merge is checked for forgetting on a fixed probe of the first training tasks (self-edit documents and
ARC answer grids), before and after; rounds/<i>/summary.json records both parts.
Extension, off by default: `--reward continuous --top-k N` keeps, per task, the N valid self-edits with the
best cell accuracy (ties: lower NLL) among those that beat the unadapted model, instead of SEAL's binary
reward (for scales where exact solves are rare); results.json "extensions" and report.md say so.
The update's size is the checkpoint's preset's (`--restem-recipe auto`; SEAL's 1B recipe by name: `seal`), and
each round records how far it moved the policy (nanoseal.seal.update_size). `--curate` applies SEAL's curation
to the training pool first (keep the tasks ICL fails and an oracle recipe solves, nanoseal.seal.curate).
Extension, off by default: `--prompt-votes` has the writing policy answer each task un-adapted first and puts
how many of its inference views agree on that answer into the self-edit prompt (rows: prompt_note; the ReST-EM
update trains on the prompts as sampled), so that a policy could learn when not to train hard (dev/LOG.md: on
the development seeds it did not).
Evaluation (held-out tasks), methods as in the paper: icl (no adaptation), ttt_fixed (a fixed default
recipe), ttt_selfedit_round0 (self-edits of the un-trained policy), seal_round<r> (the policy after r rounds),
seal (self-edits and TTT of the last round's policy) and oracle (best recipe of a grid: the upper bound). The
same model writes the self-edits and is adapted by them; seal_edits_round0_model (unless --no-split-weight-change)
adapts the un-trained model with the seal policy's very self-edits, which splits SEAL - round 0 into the
self-edits' share and the ReST-EM weight change's. results.json holds every method's per-task scores and
the curated held-out subset (ICL fails, an oracle recipe solves), which nanoseal.seal.effect turns into tables
with intervals. The rows and the work items that write them live in nanoseal.seal.rows.

Run directory: config.json, selfedits.jsonl (one row per self-edit or baseline attempt), events.jsonl +
events.log, rounds/<i>/policy/ and rounds/<i>/summary.json, results.json. Every write is atomic or a
single fsynced append; re-running the same command resumes: rows already written are never redone or
duplicated (each row has a key: phase, round, method, task, k), and a changed config is refused.
(DESIGN.md puts the outer loop in restem.py; it lives here so restem.py stays the policy update alone.)

Under torchrun (`torchrun --nproc_per_node=N -m nanoseal seal <same flags>`, nanoseal.dist) the work items (a
training task's K self-edits, sampled together and trained as K adapters in one TTT call; an evaluation task x
method) go through a shared queue: each rank takes the next item as soon as it has finished one (spread). Each
item is seeded by its task index alone, so the rows are the single-process rows whatever rank computes them.
Rank 0 collects the rows and appends them in item order (a crash loses the items in flight and those finished
after the first of them), decides what is pending on resume,
selects the ReST-EM pairs and alone writes the run directory; the other ranks never touch it. The ReST-EM
update itself is data-parallel (nanoseal.seal.restem). A rank that dies stops the job (torchrun stops the
others; a collective that gets no answer fails after $NANOSEAL_DIST_TIMEOUT seconds); re-run to resume.
"""

import argparse
import copy
import os
import sys
import time
from dataclasses import asdict

import torch
from tqdm import tqdm

from nanoseal import dist
from nanoseal.arc.grids import STYLES
from nanoseal.arc.prompts import few_shot_prompt
from nanoseal.argtypes import (
    LEARNING_RATE,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SEED,
    TEMPERATURE,
    float_in,
    int_in,
)
from nanoseal.checkpoint import build_model, load_model, save_checkpoint
from nanoseal.common import (
    NanosealError,
    atomic_write_json,
    autodetect_device,
    ensure_dir,
    get_base_dir,
    read_json_object,
)
from nanoseal.logs import EventLog
from nanoseal.lora import DEFAULT_TARGETS, SEAL_TARGETS, match_modules
from nanoseal.report import write_report
from nanoseal.seal.curate import RULES as CURATION_RULES
from nanoseal.seal.curate import curate_rows
from nanoseal.seal.guard import gated_per_task, hedged_per_task
from nanoseal.seal.restem import (
    RESTEM_RECIPES,
    TOPK_SELECTION,
    RestemConfig,
    forgetting_probe,
    grid_answer_documents,
    restem_config,
    restem_update,
    select_pairs,
    select_pairs_topk,
)
from nanoseal.seal.rows import (
    Rows,
    icl_group,
    kept_edits,
    own_votes_note,
    per_task_success,
    recipe_group,
    selfedit_group,
    summarise,
)
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, ORACLE_GRIDS, recipe_grid
from nanoseal.seal.tasks import resolve_tasks
from nanoseal.seal.ttt import TTTConfig, count_tokens_fn
from nanoseal.seal.update_size import (
    field_distributions,
    field_nll,
    field_nll_summary,
    sample_distribution,
    shift_summary,
)

METHODS = ("icl", "ttt_fixed", "ttt_selfedit_round0", "seal", "oracle")  # plus seal_round<r> for 0 < r < rounds
# SEAL's policy writes the self-edits, the un-trained model is adapted: what better self-edits alone are worth, apart
# from what the ReST-EM update did to the model's own answers (seal - this = the weight change's share)
EDITS_ON_ROUND0 = "seal_edits_round0_model"
RUN_CONFIG_KEYS = ("checkpoint", "source", "tasks", "eval_tasks", "rounds", "self_edits", "seed", "temperature",
                   "n_max", "max_views", "lora_rank", "restem_lr", "restem_epochs", "no_oracle", "dtype")
# keys added later, with the value a run dir that predates them was run with (so such a run still resumes)
LATER_CONFIG_DEFAULTS = {"reward": "binary", "top_k": 0, "oracle_grid": "seal", "restem_rank": None,
                         "restem_recipe": "seal", "curate": False, "shift_samples": 0, "eval_self_edits": None,
                         "lora_alpha": None, "ttt_targets": "default", "grid_style": "compact",
                         "restem_min_steps": None, "split_weight_change": True, "curate_rule": "seal",
                         "restem_max_per_task": 0, "restem_replay": 0.0, "prompt_votes": False,
                         "eval_temperature": None, "restem_head": False}
SHIFT_PROMPTS = 16  # held-out self-edit prompts the per-round policy shift is measured on
DIE_AFTER_ENV = "NANOSEAL_TEST_DIE_AFTER"  # tests only: see die_hook
_items_done = [0]  # work items this process has finished (for die_hook)
_spread_calls = [0]  # spread() calls so far in this process: each call's queue has its own name


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal seal`."""
    parser.add_argument("--checkpoint", default=None, help="policy checkpoint (base dir, phase dir or folder)")
    parser.add_argument("--source", default=None, choices=["base", "mid", "sft", "rl"])
    parser.add_argument("--arch", default=None, help="nanochat architecture version where the weights cannot tell "
                        "(e.g. nanochat-2026-03-02; default: detected from the checkpoint)")
    parser.add_argument("--tasks", default="gen-train:1", help="training task SPEC (see nanoseal.seal.tasks)")
    parser.add_argument("--eval-tasks", default="gen-eval:1", help="held-out task SPEC")
    parser.add_argument("--rounds", type=NON_NEGATIVE_INT, default=1)
    parser.add_argument("--self-edits", type=POSITIVE_INT, default=4, help="K self-edits sampled per task")
    parser.add_argument("--run-dir", default=None, help="default: <base>/runs/seal-<timestamp>")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--temperature", type=TEMPERATURE, default=0.8, help="sampling temperature of the self-edits")
    parser.add_argument("--eval-temperature", type=TEMPERATURE, default=None,
                        help="sampling temperature of the held-out self-edits, every policy alike (default: "
                             "--temperature, as SEAL: 0.8 for both); lower samples each policy nearer its mode")
    parser.add_argument("--n-max", type=POSITIVE_INT, default=250, help="TTT examples per self-edit at most")
    parser.add_argument("--max-views", type=int_in(1, 7), default=None, help="inference views used (default all 7)")
    parser.add_argument("--eval-self-edits", type=POSITIVE_INT, default=None,
                        help="self-edits sampled per held-out task by each policy (default: --self-edits; SEAL: 5)")
    parser.add_argument("--lora-rank", type=POSITIVE_INT, default=16, help="rank of the TTT adapters")
    parser.add_argument("--lora-alpha", type=POSITIVE_FLOAT, default=None,
                        help="alpha of the TTT adapters (default: the rank; SEAL: rank 128, alpha 16)")
    parser.add_argument("--ttt-targets", default="default", choices=["default", "seal"],
                        help="TTT LoRA targets: default (every attention and MLP projection) or seal (SEAL's: q, v "
                             "and the MLP's up/gate and down projections)")
    parser.add_argument("--grid-style", default="compact", choices=list(STYLES),
                        help="grids as text: compact digit rows, or seal (SEAL's numpy-style text)")
    parser.add_argument("--restem-recipe", default="auto",
                        help="size of the ReST-EM update: auto (the checkpoint's preset's, else SEAL's), seal "
                             "(SEAL's 1B recipe: LoRA r=16, lr 5e-5, 8 epochs), or a preset name")
    parser.add_argument("--restem-lr", type=LEARNING_RATE, default=None, help="override the recipe's learning rate")
    parser.add_argument("--restem-epochs", type=POSITIVE_INT, default=None, help="override the recipe's epochs")
    parser.add_argument("--restem-min-steps", type=NON_NEGATIVE_INT, default=None,
                        help="override the recipe's least number of update steps (few kept pairs run more epochs)")
    parser.add_argument("--restem-rank", type=NON_NEGATIVE_INT, default=None,
                        help="override the recipe's LoRA rank (0 = full fine-tuning)")
    parser.add_argument("--restem-head", action="store_true",
                        help="the ReST-EM update's LoRA also trains the output head (lm_head); a small policy's "
                             "rows for a 50/50 choice of its prior can be the same vector (dev/LOG.md 2026-12-02)")
    parser.add_argument("--curate", action="store_true",
                        help="SEAL's curation of the training pool: keep the tasks ICL fails and an oracle recipe "
                             "solves (round-0 policy); the held-out tables always show the curated subset too")
    parser.add_argument("--curate-rule", default="seal", choices=list(CURATION_RULES),
                        help="with --curate: seal (SEAL's rule) or contrast (also keep the tasks ICL solves and an "
                             "oracle recipe breaks: their kept self-edits say when not to train hard)")
    parser.add_argument("--restem-replay", type=float_in(0, 10.0), default=0.0,
                        help="grid-answer documents (the training pool's demonstrations, leave-one-out) trained on "
                             "per kept self-edit in each update, so it does not unlearn answering (0: SEAL's update)")
    parser.add_argument("--restem-max-per-task", type=NON_NEGATIVE_INT, default=0,
                        help="keep at most this many successful self-edits of one task for the update (0: all, as "
                             "SEAL; binary reward only)")
    parser.add_argument("--prompt-votes", action="store_true",
                        help="extension: the policy answers each task un-adapted first and its self-edit prompt says "
                             "how many of its inference views agree on that answer (nanoseal.seal.selfedit."
                             "votes_note), so a policy can learn when not to train hard")
    parser.add_argument("--shift-samples", type=NON_NEGATIVE_INT, default=4,
                        help=f"self-edits sampled per held-out prompt (first {SHIFT_PROMPTS}) before and after each "
                             "update, to measure how far it moved the policy (0: off)")
    parser.add_argument("--split-weight-change", action=argparse.BooleanOptionalAction, default=True,
                        help=f"also adapt the un-trained model with the last policy's self-edits ({EDITS_ON_ROUND0}): "
                             "SEAL - that row is the share of the ReST-EM weight change")
    parser.add_argument("--no-oracle", action="store_true", help="skip the oracle's recipe grid")
    parser.add_argument("--oracle-grid", default="seal", choices=ORACLE_GRIDS,
                        help="seal: 24 recipes; prior: 10 (the SFT prior's learning rates x 1 or 3 epochs)")
    parser.add_argument("--reward", default="binary", choices=["binary", "continuous"],
                        help="binary: SEAL's (keep self-edits with reward 1); continuous: extension, off by default "
                             "(top-k per task by cell accuracy among edits beating the unadapted model; see --top-k)")
    parser.add_argument("--top-k", type=NON_NEGATIVE_INT, default=0,
                        help="with --reward continuous: self-edits kept per task (default 0 = not used)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])


def run_config(args: argparse.Namespace) -> dict:
    """What defines a run (compared on resume; run_dir and device excluded)."""
    config = {k: getattr(args, k) for k in RUN_CONFIG_KEYS}
    config.update({k: getattr(args, k, default) for k, default in LATER_CONFIG_DEFAULTS.items()})
    return config


def check_reward_args(args: argparse.Namespace) -> None:
    """Refuse inconsistent --reward / --top-k flags with one line."""
    reward, top_k = args.reward, args.top_k
    if reward == "continuous" and top_k < 1:
        raise NanosealError("--reward continuous needs --top-k N (N >= 1 self-edits kept per task)")
    if reward == "binary" and top_k:
        raise NanosealError("--top-k applies only with --reward continuous (SEAL's binary reward keeps every "
                            "self-edit with reward 1)")


def reward_extensions(args: argparse.Namespace) -> list[dict]:
    """The results.json "extensions" entries of the reward flags (empty for SEAL's binary reward)."""
    if args.reward != "continuous":
        return []
    return [{"name": "continuous_reward_topk", "k": args.top_k, "selection": TOPK_SELECTION}]


def fits(model, tokenizer, task, style: str) -> bool:
    """Whether a task's test prompt fits the model's context with at least one demonstration."""
    count = count_tokens_fn(tokenizer)
    return all(few_shot_prompt(task, t, model.config.sequence_len, count, style).fits for t in range(len(task.test)))


def load_round_policy(run_dir: str, rnd: int, device) -> torch.nn.Module | None:
    """The saved policy after round rnd (None if not saved yet)."""
    folder = os.path.join(run_dir, "rounds", str(rnd), "policy")
    if not os.path.exists(os.path.join(folder, "meta_000000.json")):
        return None
    model, _ = build_model(folder, 0, device)
    return model


class _NoLog:
    """The event log of ranks other than 0: they write nothing."""

    def log(self, *args, **kwargs) -> None:
        """Drop the event."""


def die_hook(rank: int, world: int) -> None:
    """Tests only: with NANOSEAL_TEST_DIE_AFTER=N the last rank exits (status 1, no goodbye) before its item N+1."""
    after = os.environ.get(DIE_AFTER_ENV)
    if after is not None and rank == world - 1 and _items_done[0] >= int(after):
        print(f"rank {rank}: {DIE_AFTER_ENV}={after} reached: exiting without a word", file=sys.stderr, flush=True)
        os._exit(1)


def spread(items: list, work, on_done, desc: str) -> None:
    """work(item) -> rows for every item, over the ranks as a shared queue: each rank takes the next item as soon
    as it finishes one (no rank waits for a slower one). Rank 0 hands the rows to on_done(item, rows) in item order
    as they arrive, so a crash loses the items in flight and those finished after the first of them. On one
    process: each item in turn, as a plain loop."""
    rank, world = dist.rank(), dist.world_size()
    bar = tqdm(total=len(items), desc=desc, leave=False, disable=rank != 0)
    if world == 1:
        for item in items:
            die_hook(rank, world)
            on_done(item, work(item))
            _items_done[0] += 1
            bar.update(1)
        bar.close()
        return
    _spread_calls[0] += 1  # every rank calls spread in the same order, so the names agree
    name = f"spread{_spread_calls[0]}"
    finished: dict[int, list[dict]] = {}  # rank 0: rows of items not yet handed on
    handed = 0  # rank 0: items handed to on_done (in item order)

    def hand_on(wait: bool) -> None:  # rank 0: the next items in order whose rows are here (wait: all of them)
        nonlocal handed
        while handed < len(items):
            if handed not in finished:
                key = f"{name}/rows/{handed}"
                if not wait and not dist.ready(key):
                    return
                finished[handed] = dist.take(key)
            on_done(items[handed], finished.pop(handed))
            handed += 1
            bar.update(1)

    while True:
        die_hook(rank, world)
        j = dist.claim(f"{name}/next")
        if j >= len(items):
            break
        new = work(items[j])
        _items_done[0] += 1
        if rank == 0:
            finished[j] = new
            hand_on(wait=False)
        else:
            dist.put(f"{name}/rows/{j}", new)
    if rank == 0:
        hand_on(wait=True)
    bar.close()


def check_config(run_dir: str, config: dict) -> None:
    """Write config.json, or refuse (one line) a run directory started with other settings."""
    os.makedirs(run_dir, exist_ok=True)
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(config_path):
        old = {**LATER_CONFIG_DEFAULTS, **read_json_object(config_path)}
        changed = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
        if changed:
            raise NanosealError(f"{config_path}: this run was started with different settings ({', '.join(changed)});"
                                " use another --run-dir or the original flags")
    else:
        atomic_write_json(config_path, config)


def resolve_restem(args: argparse.Namespace, meta: dict) -> RestemConfig:
    """The ReST-EM update size: the named recipe (auto: the checkpoint's preset's, else SEAL's) with the flags'
    overrides (results.json "restem" records the resolved numbers and recipe)."""
    from nanoseal.train.presets import PRESETS

    recipe = args.restem_recipe
    if recipe == "auto":
        preset = meta["preset"].get("name") if isinstance(meta.get("preset"), dict) else None
        recipe = preset if preset in PRESETS and PRESETS[preset].restem else "seal"
    if recipe in PRESETS:
        if not PRESETS[recipe].restem:
            raise NanosealError(f"--restem-recipe {recipe}: that preset has no ReST-EM recipe of its own; use seal")
        fields = dict(PRESETS[recipe].restem)
    elif recipe in RESTEM_RECIPES:
        fields = dict(RESTEM_RECIPES[recipe])
    else:
        raise NanosealError(f"--restem-recipe {recipe!r}: expected auto, {', '.join(RESTEM_RECIPES)} or a preset "
                            f"({', '.join(p for p in PRESETS if PRESETS[p].restem)})")
    cfg = restem_config(fields, rank=args.restem_rank, learning_rate=args.restem_lr, epochs=args.restem_epochs,
                        min_steps=args.restem_min_steps, style=args.grid_style, dtype=args.dtype,
                        replay=args.restem_replay)
    if cfg.rank < 0 or cfg.epochs < 1 or not (0 < cfg.learning_rate < 1):
        raise NanosealError(f"ReST-EM update: rank must be >= 0, epochs >= 1 and 0 < lr < 1; got rank {cfg.rank}, "
                            f"epochs {cfg.epochs}, lr {cfg.learning_rate}")
    if args.restem_head and "lm_head" not in cfg.targets:
        cfg.targets = tuple(cfg.targets) + ("lm_head",)
    cfg.recipe = recipe
    return cfg


def check_restem_head(model, cfg: RestemConfig, where: str) -> None:
    """With lm_head among the update's LoRA targets, the model must have a separate output head (one line if not)."""
    if cfg.rank == 0 or "lm_head" not in cfg.targets:
        return
    try:
        match_modules(model, ["lm_head"])
    except NanosealError:
        raise NanosealError(f"--restem-head: {where}: the model has no separate output head (its input and output "
                            "embeddings are tied); run without --restem-head") from None


def round_method(rnd: int, rounds: int) -> str:
    """The evaluation method of the policy after rnd ReST-EM rounds."""
    return "ttt_selfedit_round0" if rnd == 0 else "seal" if rnd == rounds else f"seal_round{rnd}"


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal seal`."""
    check_reward_args(args)
    rank = dist.rank()
    device = dist.local_device(autodetect_device(args.device))
    # rank 0 alone owns the run directory: the other ranks never read or write it (no shared storage needed)
    run_dir = dist.broadcast_object(args.run_dir or os.path.join(get_base_dir(), "runs",
                                                                 time.strftime("seal-%Y%m%d-%H%M%S")))
    config = run_config(args)
    error = None
    if rank == 0:
        try:
            ensure_dir(run_dir, "--run-dir", writable=True)
            check_config(run_dir, config)
        except NanosealError as e:
            error = str(e)
    error = dist.broadcast_object(error)
    if error:  # rank 0 says why; the other ranks stop quietly with the same status
        raise NanosealError(error) if rank == 0 else SystemExit(2)
    log = EventLog(run_dir) if rank == 0 else _NoLog()
    model, tokenizer, meta = load_model(args.checkpoint or get_base_dir(), device=device, source=args.source,
                                        arch=getattr(args, "arch", None))
    restem_cfg = resolve_restem(args, meta)
    check_restem_head(model, restem_cfg, args.checkpoint or get_base_dir())
    style = args.grid_style
    ttt_cfg = TTTConfig(rank=args.lora_rank, alpha=args.lora_alpha or float(args.lora_rank), n_max=args.n_max,
                        max_views=args.max_views, dtype=args.dtype, style=style,
                        targets=SEAL_TARGETS if args.ttt_targets == "seal" else DEFAULT_TARGETS)
    skipped = []

    def usable(tasks):
        keep = []
        for t in tasks:
            if fits(model, tokenizer, t, style):
                keep.append(t)
            else:
                skipped.append({"task": t.id, "reason": f"prompt does not fit {model.config.sequence_len} tokens"})
                log.log(f"task {t.id} skipped: prompt does not fit the context", db_phase="sample")
        return keep

    train_tasks, eval_tasks = usable(resolve_tasks(args.tasks)), usable(resolve_tasks(args.eval_tasks))
    if not eval_tasks:
        raise NanosealError(f"none of the evaluation tasks ({args.eval_tasks}) fits the model's context "
                            f"of {model.config.sequence_len} tokens")
    if args.curate and args.no_oracle:
        raise NanosealError("--curate needs the oracle grid (it keeps tasks an oracle recipe solves): drop --no-oracle")
    rows = Rows(os.path.join(run_dir, "selfedits.jsonl")) if rank == 0 else None
    K = args.self_edits
    K_eval = args.eval_self_edits or K  # self-edits per held-out task (SEAL: 15 on training tasks, 5 held out)
    round0 = model  # the un-trained policy, for the baselines (each update works on a copy of the policy)
    grid = [] if args.no_oracle else recipe_grid(args.oracle_grid)
    rounds_summary = []
    policy = model
    curation = {}

    pool_tasks = list(train_tasks)
    # ---- SEAL's curation of the training pool (round-0 policy): ICL and the oracle grid on every candidate
    if args.curate:
        def curate_item(i: int) -> list[dict]:
            task, seed = train_tasks[i], args.seed * 7919 + 50_000 + i
            return (icl_group(round0, tokenizer, task, ("curate", 0, "icl", task.id), ttt_cfg, seed)
                    + recipe_group(round0, tokenizer, task, ("curate", 0, "oracle", task.id), grid, ttt_cfg, seed))

        pending = [i for i, t in enumerate(train_tasks) if not (rows.done(("curate", 0, "icl", t.id), 1) and
                                                               rows.done(("curate", 0, "oracle", t.id), len(grid)))] \
            if rank == 0 else None
        spread(dist.broadcast_object(pending), curate_item, lambda i, new: rows.add(new), "curation")
        record = None
        if rank == 0:
            cur_rows = [r for r in rows.rows if r["key"][0] == "curate"]
            record = curate_rows([t.id for t in train_tasks], cur_rows, args.curate_rule)
            record["seconds"] = round(sum(sum(r["seconds"].values()) for r in cur_rows), 1)
            record["ttt_runs"] = len(cur_rows)
            log.log(f"curation: kept {len(record['kept'])} of {len(train_tasks)} training tasks "
                    f"({record['seconds']:.0f}s of TTT and evaluation)", db_phase="eval")
        record = dist.broadcast_object(record)
        curation["train"] = record
        keep = set(record["kept"])
        train_tasks = [t for t in train_tasks if t.id in keep]
    replay_docs = grid_answer_documents(tokenizer, pool_tasks, style, model.config.sequence_len, every_query=True) \
        if restem_cfg.replay else None  # the whole pool's demonstrations: what the update may train answers on
    probe = forgetting_probe(tokenizer, train_tasks, restem_cfg, model.config.sequence_len)  # fixed, a handful
    shift_tasks = eval_tasks[:SHIFT_PROMPTS]

    def shift_notes(m) -> dict[str, str] | None:  # with --prompt-votes the shift prompts carry the note too
        if not args.prompt_votes:
            return None
        return {t.id: own_votes_note(m, tokenizer, t, ttt_cfg, args.seed * 7919 + 100_000 + i)[0]
                for i, t in enumerate(shift_tasks)}

    def train_item(item: tuple[int, int]) -> list[dict]:  # (round, task index): K self-edits of the policy, TTT'd
        rnd, i = item
        return selfedit_group(policy, tokenizer, train_tasks[i], ("train", rnd, "seal", train_tasks[i].id), K, args,
                              ttt_cfg, args.seed * 7919 + i)

    def train_done(item: tuple[int, int], new: list[dict]) -> None:
        key = ("train", item[0], "seal", train_tasks[item[1]].id)
        rows.add(new)
        log.log(f"round {item[0]} task {key[3]}: rewards {[r['reward'] for r in rows.select(*key[:3])][-K:]}",
                db_phase="ttt", method="seal")

    # ---- ReST-EM rounds on the training tasks: one work item per task (its K self-edits train as K adapters)
    round_policies = {0: round0}  # policy after r rounds, for the held-out table of every round
    for rnd in range(args.rounds):
        saved = load_round_policy(run_dir, rnd + 1, device) if rank == 0 else None
        if dist.broadcast_object(saved is not None):
            if rank == 0:
                policy = saved
                rounds_summary.append(read_json_object(os.path.join(run_dir, "rounds", str(rnd + 1), "summary.json")))
            else:
                policy = copy.deepcopy(policy)
            dist.broadcast_module(policy)  # the other ranks receive rank 0's saved policy
            round_policies[rnd + 1] = policy
            continue
        pending = [(rnd, i) for i, t in enumerate(train_tasks) if not rows.done(("train", rnd, "seal", t.id), K)] \
            if rank == 0 else None
        spread(dist.broadcast_object(pending), train_item, train_done, f"round {rnd} sample+ttt")
        pairs = None
        if rank == 0:
            round_rows = rows.select("train", rnd, "seal")
            if args.reward == "continuous":
                pairs = select_pairs_topk(round_rows, args.top_k)
            else:
                pairs = select_pairs(round_rows, args.restem_max_per_task)
        pairs = dist.broadcast_object(pairs)
        policy = copy.deepcopy(policy)  # round_policies keeps each round's policy; the update works on a copy
        shift_seed = args.seed * 7919 + 200_000 + rnd * 1000
        before = None
        if rank == 0 and args.shift_samples and pairs:
            before = sample_distribution(policy, tokenizer, shift_tasks, args.shift_samples, shift_seed, style,
                                         args.temperature, shift_notes(policy))
        notes = {r["task"]: r.get("prompt_note", "") for r in round_rows} if rank == 0 else None
        tasks_by_id = {t.id: t for t in train_tasks}
        fields_before = field_nll(policy, tokenizer, tasks_by_id, pairs, restem_cfg, notes) \
            if rank == 0 and pairs else None
        summary = restem_update(policy, tokenizer, tasks_by_id, pairs, restem_cfg,
                                seed=args.seed + rnd, forgetting_docs=probe, replay_docs=replay_docs,
                                notes=dist.broadcast_object(notes))  # data-parallel over the ranks
        round_policies[rnd + 1] = policy
        if rank != 0:
            continue
        kept = field_distributions(kept_edits(round_rows, pairs))  # what the update clones
        if before is not None:
            after = sample_distribution(policy, tokenizer, shift_tasks, args.shift_samples, shift_seed, style,
                                        args.temperature, shift_notes(policy))
            summary["shift"] = shift_summary(before, after, kept)
        if fields_before is not None:  # the kept pairs' loss per field, and what fitting their marginals reaches
            after_fields = field_nll(policy, tokenizer, tasks_by_id, pairs, restem_cfg, notes)["fields"]
            summary["field_nll"] = field_nll_summary(fields_before["fields"], after_fields, kept)
        stats = summarise(round_rows, train_tasks, K)
        summary.update(round=rnd, success_rate=stats["success_rate"], n_pairs=stats["n_pairs"], reward=args.reward,
                       n_tasks=len(train_tasks))
        fg = summary["forgetting"]
        degraded = [name for name, part in (fg or {}).get("parts", {}).items() if part["degraded"]]
        note = f"; forgetting probe degraded: {', '.join(degraded)}" if degraded else ""
        moved = f"; policy moved TV {summary['shift']['mean']['tv_moved']:.3f}" if summary.get("shift") else ""
        log.log(f"round {rnd}: {len(pairs)} pairs kept ({args.reward} reward); "
                f"{summary['skipped'] or 'policy updated'}{moved}{note}", db_phase="restem", method="seal")
        folder = os.path.join(run_dir, "rounds", str(rnd + 1))
        atomic_write_json(os.path.join(folder, "summary.json"), summary)
        save_checkpoint(os.path.join(folder, "policy"), 0, policy.state_dict(), None,
                        {"model_config": policy.config.to_dict(), "round": rnd + 1, "source": meta["checkpoint_dir"]})
        rounds_summary.append(summary)
    # ---- evaluation on held-out tasks: one work item per (task, method)
    methods = {"icl": (round0, 1), "ttt_fixed": (round0, 1)}
    for r in range(args.rounds + 1):  # the policy after every round: round 0 (un-trained) ... SEAL (the last)
        methods[round_method(r, args.rounds)] = (round_policies[r], K_eval)
    # the last policy's self-edits on the un-trained model: better self-edits alone, no weight change
    if args.rounds and args.split_weight_change:
        methods[EDITS_ON_ROUND0] = (round_policies[args.rounds], K_eval)
    if grid:
        methods["oracle"] = (round0, len(grid))

    def eval_item(item: tuple[int, str]) -> list[dict]:
        i, method = item
        task, (m, _) = eval_tasks[i], methods[method]
        key, seed = ("eval", 0, method, task.id), args.seed * 7919 + 100_000 + i
        if method == "icl":
            return icl_group(m, tokenizer, task, key, ttt_cfg, seed)
        if method == "ttt_fixed":
            return recipe_group(m, tokenizer, task, key, [DEFAULT_SELF_EDIT], ttt_cfg, seed)
        if method == "oracle":
            return recipe_group(m, tokenizer, task, key, grid, ttt_cfg, seed)
        if method == EDITS_ON_ROUND0:  # the seal method's seed: the very self-edits of its rows, adapting round 0
            return selfedit_group(m, tokenizer, task, key, K_eval, args, ttt_cfg, seed, adapted=round0,
                                  temperature=args.eval_temperature)
        return selfedit_group(m, tokenizer, task, key, K_eval, args, ttt_cfg, seed, temperature=args.eval_temperature)

    remaining = [0] * len(eval_tasks)  # rank 0: pending items per task, to log each task once it is complete

    def eval_done(item: tuple[int, str], new: list[dict]) -> None:
        rows.add(new)
        remaining[item[0]] -= 1
        if remaining[item[0]] == 0:
            log.log(f"evaluated task {eval_tasks[item[0]].id}", db_phase="eval")

    pending = None
    if rank == 0:
        pending = [(i, method) for i, task in enumerate(eval_tasks) for method, (_, n) in methods.items()
                   if not rows.done(("eval", 0, method, task.id), n)]
        if dist.world_size() > 1:  # the costliest items first, so the last ones the ranks take are short
            pending.sort(key=lambda item: -methods[item[1]][1])
        for i, task in enumerate(eval_tasks):
            remaining[i] = sum(1 for j, _ in pending if j == i)
            if not remaining[i]:
                log.log(f"evaluated task {task.id}", db_phase="eval")
    spread(dist.broadcast_object(pending), eval_item, eval_done, "evaluation")
    if rank != 0:
        return 0
    results = {"methods": {}, "per_task": {}, "rounds": rounds_summary, "config": config, "skipped_tasks": skipped,
               "seed": args.seed, "extensions": reward_extensions(args), "ttt_config": asdict(ttt_cfg),
               "restem": asdict(restem_cfg), "world_size": dist.world_size()}
    for method, (_, n) in methods.items():
        method_rows = rows.select("eval", 0, method)
        s = summarise(method_rows, eval_tasks, n)
        if method == "oracle":  # upper bound: a task counts as solved when any recipe of the grid solves it
            s["success_rate"] = s["tasks_solved_any"] / max(1, len(eval_tasks))
        results["methods"][method] = s
        results["per_task"][method] = per_task_success(method_rows, eval_tasks, method)
    eval_rows = [r for r in rows.rows if r["key"][0] == "eval"]
    results["per_task_hedged"] = hedged_per_task(eval_rows, eval_tasks)  # two more views, nanoseal.seal.guard
    results["per_task_gated"] = gated_per_task(eval_rows, eval_tasks)
    if grid:  # SEAL's protocol on the held-out side: the subset ICL fails and an oracle recipe solves
        curation["eval"] = curate_rows([t.id for t in eval_tasks], eval_rows)
        kept = curation["eval"]["kept"]
        results["curated"] = {m: {"success_rate": sum(results["per_task"][m][t] for t in kept) / len(kept)
                                  if kept else None, "n_tasks": len(kept)} for m in methods}
    results["curation"] = curation
    atomic_write_json(os.path.join(run_dir, "results.json"), results)
    report_path = write_report(run_dir)
    log.log(f"results and report written: {report_path}", db_phase="report")
    gated = results["per_task_gated"] or {}
    print(f"{'method':<25}{'success':>9}{'solved(any)':>13}{'tasks':>7}{'curated':>9}{'gated':>8}")
    for method, s in results["methods"].items():
        cur = results.get("curated", {}).get(method, {}).get("success_rate")
        cur_text = f"{cur:>9.3f}" if cur is not None else f"{'–':>9}"
        g = gated.get(method)
        gated_text = f"{sum(g.values()) / len(g):>8.3f}" if g else f"{'–':>8}"
        print(f"{method:<25}{s['success_rate']:>9.3f}{s['tasks_solved_any']:>13d}{s['n_tasks']:>7d}{cur_text}"
              f"{gated_text}")
    if "curated" in results:
        print(f"curated subset (ICL fails, an oracle recipe solves): {len(curation['eval']['kept'])} of "
              f"{len(eval_tasks)} held-out tasks")
    if gated:
        print("gated: TTT rows take the ICL result where more than half of its views agree (report.md)")
    print(f"run directory: {run_dir}\nreport: {report_path}")
    return 0
