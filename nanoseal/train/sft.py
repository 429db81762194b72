"""
`nanoseal sft`: chat fine-tuning of a pretrained base model into a policy that (1) answers the self-edit prompt
with a valid self-edit JSON and (2) answers few-shot grid prompts.

    nanoseal sft --preset tiny                      # after `nanoseal pretrain --preset tiny`

The mixture (nanoseal.train.data): selfedit_frac of the documents are self-edit prompts of fresh procedural
training-family tasks answered with a self-edit drawn from a broad prior that ignores the task (each
augmentation flag Bernoulli(1/2), both strategies, learning rate log-uniform over 1e-4..1e-2, 1..5 epochs;
nanoseal.seal.selfedit.random_self_edit_text): the policy learns the format and starts with no preference
among settings, which is what ReST-EM then selects from. `--selfedit-prior fields` (Preset.selfedit_prior) draws
the flags and the strategy a little off 1/2 instead, so that the policy's output rows for true/false and for the
two strategies differ and a ReST-EM update can move those fields (dev/LOG.md, 2026-12-02).
The rest are few-shot grid prompts with the loss
on the answer. Starts from <base>/base_checkpoints/d<n>, writes <base>/chatsft_checkpoints/d<n> (resumable;
a finished checkpoint is reused), then reports the share of valid self-edits the policy samples on held-out
tasks.
Under torchrun it trains data-parallel like pretraining (nanoseal.train.loop); rank 0 alone measures the share
of valid self-edits.
"""

import argparse
import os
import random

import torch

from nanoseal import dist
from nanoseal.arc.gen import EVAL_FAMILIES, feasible_families
from nanoseal.checkpoint import load_model
from nanoseal.common import autodetect_device, get_base_dir, print0, seed_everything
from nanoseal.engine import Engine
from nanoseal.seal.selfedit import PRIORS
from nanoseal.train.data import grid_documents, mix, selfedit_documents, task_stream
from nanoseal.train.loop import TrainConfig, last_complete_step, save_interval, train
from nanoseal.train.presets import Preset, get_preset
from nanoseal.train.pretrain import add_args as pretrain_add_args
from nanoseal.train.pretrain import budget, finished, pretrain


def sft(preset: Preset, base_dir: str, seed: int = 0, device=None, dtype: str = "auto") -> str:
    """Fine-tune the preset's base model into a self-edit-writing policy; returns its checkpoint folder."""
    device = device or autodetect_device()
    ckpt_dir = os.path.join(base_dir, "chatsft_checkpoints", f"d{preset.n_layer}")
    if finished(ckpt_dir, selfedit_prior=preset.selfedit_prior, doc_attention=preset.doc_attention):
        print0(f"sft: reusing the finished checkpoint in {ckpt_dir}")
        return ckpt_dir
    base_ckpt = pretrain(preset, base_dir, seed, device, dtype)
    seed_everything(seed)
    model, tokenizer, _ = load_model(base_ckpt, step=last_complete_step(base_ckpt), device=device, phase="train")
    L = preset.sequence_len
    selfedits = selfedit_documents(task_stream(preset.family_names(), seed + 1, preset.min_side, preset.max_side),
                                   tokenizer, L, seed, preset.selfedit_prior)
    grids = grid_documents(task_stream(preset.family_names(), seed + 2, preset.min_side, preset.max_side), tokenizer, L,
                           seed + 1, train_on="assistant")
    docs = mix([selfedits, grids], [preset.selfedit_frac, 1 - preset.selfedit_frac], seed)
    # nanochat's SFT: same optimizers, smaller learning rates, warm-down to zero
    cfg = TrainConfig(batch_size=preset.batch_size, seq_len=L, max_steps=preset.sft_steps,
                      max_seconds=preset.sft_seconds, matrix_lr=0.01, embedding_lr=0.1, unembedding_lr=0.002,
                      warmdown_frac=0.5, dtype=dtype, save_every=save_interval(preset.sft_steps), log_every=25,
                      doc_attention=preset.doc_attention)
    meta = {"source": "sft", "preset": preset.to_dict(), "seed": seed, "base": base_ckpt,
            "data": f"self-edit prior ({preset.selfedit_frac:.0%}) + grid answers, procedural train families"}
    s = train(model, docs, cfg, ckpt_dir, meta, pad_id=tokenizer.get_bos_token_id(), device=device)
    print0(f"sft: {s['step']} steps, loss {s['loss']:.3f}, {s['seconds']:.0f}s -> {ckpt_dir}")
    model.eval()
    if dist.rank() == 0:
        rate = valid_selfedit_rate(model, tokenizer, preset, n_tasks=8, k=4, seed=seed)
        print0(f"sft: {rate:.0%} of self-edits sampled on 8 held-out-family tasks parse as valid")
    return ckpt_dir


@torch.inference_mode()
def valid_selfedit_rate(model, tokenizer, preset: Preset, n_tasks: int, k: int, seed: int = 0,
                        temperature: float = 0.8) -> float:
    """Share of k sampled self-edits per task that parse and validate, on held-out-family tasks."""
    from nanoseal.arc.gen import make_task
    from nanoseal.seal.selfedit import sample_self_edits

    rng = random.Random(seed)
    families = feasible_families(EVAL_FAMILIES, preset.min_side, preset.max_side)
    engine = Engine(model, tokenizer)
    valid = total = 0
    for i in range(n_tasks):
        task = make_task(families[i % len(families)], 2_000_000 + rng.randrange(10**6), min_side=preset.min_side,
                         max_side=preset.max_side)
        samples = sample_self_edits(engine, tokenizer, task, k, temperature=temperature, seed=seed + i)
        valid += sum(s["self_edit"] is not None for s in samples)
        total += len(samples)
    return valid / max(1, total)


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal sft`: pretrain's (preset, seed, device, dtype, --minutes, --steps) and the prior."""
    pretrain_add_args(parser)
    add_prior_arg(parser)


def add_prior_arg(parser: argparse.ArgumentParser) -> None:
    """--selfedit-prior (sft and demo --from-scratch)."""
    parser.add_argument("--selfedit-prior", default=None, choices=PRIORS,
                        help="the self-edits of the SFT documents: flat (every flag and the strategy 50/50, the "
                             "shipped policy's) or fields (flags and strategy a little off 1/2, dev/LOG.md); "
                             "default: the preset's")


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal sft`."""
    seconds, steps = budget(args.minutes, args.steps)
    preset = get_preset(args.preset, sft_seconds=seconds, sft_steps=steps, selfedit_prior=args.selfedit_prior,
                        doc_attention=args.doc_attention)
    sft(preset, get_base_dir(), args.seed, dist.local_device(autodetect_device(args.device)), args.dtype)
    return 0
