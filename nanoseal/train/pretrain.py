"""
`nanoseal pretrain`: base pretraining of a policy on ARC-style few-shot tasks, from a CPU minute to a GPU run.

    nanoseal pretrain --preset tiny                 # 1,100 steps, ~5 min on 2 CPU cores
    nanoseal pretrain --preset tiny --minutes 10    # a time budget instead of the preset's steps
    nanoseal pretrain --preset d12 --device cuda
    torchrun --standalone --nproc_per_node=8 -m nanoseal pretrain --preset d20   # one node, 8 GPUs (README)

Data (nanoseal.train.data): an endless seeded stream of fresh procedural instances of the training families
(nanoseal.arc.gen.TRAIN_FAMILIES; the held-out families are never seen) with grids of min_side..max_side,
plus ARC-AGI-1 training tasks that fit the same sides (arc_frac of the stream), each under a random
geometric view, colour permutation and demonstration order, written as a few-shot conversation (the
demonstrations in the system turn, the test input as the user turn, its output as the answer). The loss is on
every token: each demonstration output is a supervised answer too, which is more signal per token for a model
this small. Checkpoints land in nanochat's layout: <base>/tokenizer/ and <base>/base_checkpoints/d<n_layer>/;
re-running the same command resumes (the stream is seeded), and a finished checkpoint is reused.
Under torchrun the preset's batch_size is the global batch, split over the ranks (nanoseal.train.loop); rank 0
trains the tokenizer and writes the checkpoints, and across nodes the base dir must be shared storage.
"""

import argparse
import os

import torch

from nanoseal import dist
from nanoseal.arc.data import load_arc, select_tasks
from nanoseal.argtypes import POSITIVE_FLOAT, POSITIVE_INT, SEED
from nanoseal.common import (
    NanosealError,
    autodetect_device,
    ensure_dir,
    get_base_dir,
    print0,
    read_json_object,
    seed_everything,
)
from nanoseal.modelcheck import check_model_config
from nanoseal.models import ARCH_NAMES, build_model_from_config
from nanoseal.models.nanochat import GPTConfig, get_arch
from nanoseal.train.data import grid_documents, task_stream
from nanoseal.train.loop import TrainConfig, last_complete_step, save_interval, train
from nanoseal.train.presets import Preset, get_preset
from nanoseal.train.tok_train import get_or_train_tokenizer


def finished(checkpoint_dir: str, arch: str | None = None, selfedit_prior: str | None = None,
             doc_attention: bool | None = None) -> bool:
    """Whether a checkpoint folder holds a final (not mid-run) checkpoint; one of another arch, trained with the
    other attention (doc_attention), or (SFT) with another self-edit prior, is an error (neither reused nor
    resumed). Only complete steps count (model, meta and optimizer saved): a step cut off by a crash is not
    finished."""
    step = last_complete_step(checkpoint_dir)
    if step is None:
        return False
    meta = read_json_object(os.path.join(checkpoint_dir, f"meta_{step:06d}.json"))
    preset = meta.get("preset") or {}
    found = preset.get("arch", "nanochat-2025-10-13")
    if arch is not None and found != arch:
        raise NanosealError(f"{checkpoint_dir} holds a {found} model, not {arch}: use another base dir "
                            "($NANOSEAL_BASE_DIR) to pretrain this architecture")
    found = preset.get("selfedit_prior", "flat")
    if selfedit_prior is not None and found != selfedit_prior:
        raise NanosealError(f"{checkpoint_dir} holds a policy trained with the {found!r} self-edit prior, not "
                            f"{selfedit_prior!r}: use another base dir ($NANOSEAL_BASE_DIR)")
    found = bool(preset.get("doc_attention", False))
    if doc_attention is not None and found != doc_attention:
        said = {True: "attention within each document", False: "attention across the whole row"}
        raise NanosealError(f"{checkpoint_dir} holds a model trained with {said[found]}, not {said[doc_attention]}"
                            " (--doc-attention): use another base dir ($NANOSEAL_BASE_DIR)")
    return bool(meta.get("train_state", {}).get("final"))


def model_config(preset: Preset, vocab_size: int) -> GPTConfig:
    """The GPT shape of a preset (windowed versions use nanochat's default window pattern, SSSL)."""
    return GPTConfig(sequence_len=preset.sequence_len, vocab_size=vocab_size, n_layer=preset.n_layer,
                     n_head=preset.n_head, n_kv_head=preset.n_head, n_embd=preset.n_embd, arch=preset.arch,
                     window_pattern="SSSL" if get_arch(preset.arch).short_window else "L")


def arc_pool(preset: Preset) -> list:
    """ARC-AGI-1 training tasks whose grids all fit the preset's sides."""
    return select_tasks(load_arc("arcagi1", "train"), max_side=preset.max_side)


def pretrain(preset: Preset, base_dir: str, seed: int = 0, device=None, dtype: str = "auto",
             arc_frac: float = 0.1) -> str:
    """Pretrain (or resume, or reuse) the preset's base model; returns its checkpoint folder."""
    device = device or autodetect_device()
    ckpt_dir = os.path.join(base_dir, "base_checkpoints", f"d{preset.n_layer}")
    if finished(ckpt_dir, preset.arch, doc_attention=preset.doc_attention):
        print0(f"pretrain: reusing the finished checkpoint in {ckpt_dir}")
        return ckpt_dir
    ensure_dir(base_dir, "base dir", writable=True)  # before any work: a file, read-only, ... is one line
    seed_everything(seed)
    with dist.rank0_first():  # rank 0 trains and saves the tokenizer, the other ranks then load it
        tokenizer = get_or_train_tokenizer(base_dir, preset, seed)
    config = model_config(preset, tokenizer.get_vocab_size())
    check_model_config(config, f"preset {preset.name}", device, training=True)  # before anything is allocated
    model = build_model_from_config(config).to(device)
    model.init_weights()
    print0(f"pretrain: {model.num_params() / 1e6:.2f}M parameters, preset {preset.name}, {preset.arch}")
    pool = arc_pool(preset)
    tasks = task_stream(preset.family_names(), seed, preset.min_side, preset.max_side, pool=pool,
                        pool_frac=arc_frac if pool else 0.0)
    docs = grid_documents(tasks, tokenizer, preset.sequence_len, seed, train_on="all")
    # rows span the whole context (fewer rows per step instead of shorter rows), so every position the self-edit
    # prompts reach is trained
    cfg = TrainConfig(batch_size=preset.pretrain_rows or preset.batch_size, seq_len=preset.sequence_len,
                      max_steps=preset.pretrain_steps,
                      max_seconds=preset.pretrain_seconds, dtype=dtype, doc_attention=preset.doc_attention,
                      save_every=save_interval(preset.pretrain_steps), log_every=50)
    meta = {"source": "pretrain", "preset": preset.to_dict(), "seed": seed,
            "data": f"procedural train families + {len(pool)} ARC-AGI-1 train tasks, sides <= {preset.max_side}"}
    s = train(model, docs, cfg, ckpt_dir, meta, pad_id=tokenizer.get_bos_token_id(), device=device)
    print0(f"pretrain: {s['step']} steps, {s['tokens']:,} tokens, loss {s['loss']:.3f}, {s['seconds']:.0f}s "
           f"-> {ckpt_dir}")
    return ckpt_dir


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Flags shared by pretrain, sft and demo."""
    parser.add_argument("--preset", default="tiny", help="micro | tiny | d12 | d20")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N | mps (default: autodetect)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--doc-attention", action=argparse.BooleanOptionalAction, default=None,
                        help="pretraining and SFT attend within each packed document only (its positions from 0), "
                             "a step one row of whole documents: 1.4-1.6x the tokens/s of attention across whole rows "
                             "(--no-doc-attention, as nanochat trains) and a lower loss per token (dev/LOG.md); "
                             "default: the preset's (tiny: on, as the shipped policy was trained)")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal pretrain`."""
    add_common_args(parser)
    parser.add_argument("--minutes", type=POSITIVE_FLOAT, default=None,
                        help="time budget; alone, it replaces the preset's step count")
    parser.add_argument("--steps", type=POSITIVE_INT, default=None, help="step budget (default: the preset's)")
    parser.add_argument("--arch", default=None, choices=ARCH_NAMES,
                        help="architecture version (default: the preset's, nanochat-2025-10-13)")


def budget(minutes: float | None, steps: int | None) -> tuple[float | None, int | None]:
    """(seconds, steps) overrides from --minutes/--steps: minutes alone lifts the step cap."""
    seconds = minutes * 60 if minutes is not None else None
    if seconds is not None and steps is None:
        steps = 10**9
    return seconds, steps


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal pretrain`."""
    seconds, steps = budget(args.minutes, args.steps)
    preset = get_preset(args.preset, pretrain_seconds=seconds, pretrain_steps=steps, arch=getattr(args, "arch", None),
                        doc_attention=args.doc_attention)
    torch.set_float32_matmul_precision("high")
    pretrain(preset, get_base_dir(), args.seed, dist.local_device(autodetect_device(args.device)), args.dtype)
    return 0
