"""
Tokenizer training and tiny-model pretraining on ARC tasks, on the CPU in minutes.

    nanoseal quickstart                     # tokenizer + tiny GPT on ARC-AGI-1 training tasks, then samples
    nanoseal quickstart --minutes 5 --n-layer 4 --n-embd 192

Data: ARC-AGI-1 training tasks whose grids are at most --max-side per side, written in the compact grid
style. Each document is one task in leave-one-out form (a random demonstration becomes the query, the
others are the context), under a random geometric view, colour permutation (0 fixed) and demonstration
order; the loss is on every token (demonstration grids included: more signal per token for a
model this small). The stream is seeded, so a run resumes exactly where it
stopped (re-run the same command). The tokenizer (rustbpe, one digit per token) and the checkpoint land
in nanochat's layout under $NANOSEAL_BASE_DIR (default ~/.cache/nanoseal):
`tokenizer/` and `base_checkpoints/d<n_layer>/`.
"""

import argparse
import os
import random
import time
from collections.abc import Iterator

import torch

from nanoseal.arc.augment import GEOMETRIC_VIEWS, apply_to_task, random_colour_permutation, shuffle_demos
from nanoseal.arc.data import Task, load_arc, select_tasks
from nanoseal.arc.grids import format_example, parse_grid
from nanoseal.arc.prompts import few_shot_prompt, task_conversation, training_conversation
from nanoseal.arc.ttt_data import leave_n_out
from nanoseal.arc.vote import cell_accuracy
from nanoseal.common import autodetect_device, get_base_dir, print0, seed_everything
from nanoseal.gpt import GPT, GPTConfig
from nanoseal.tokenizer import DIGIT_SPLIT_PATTERN, Tokenizer
from nanoseal.train.loop import TrainConfig, train

STYLE = "compact"


def tokenizer_corpus(tasks: list[Task]) -> Iterator[str]:
    """Texts the tokenizer learns from: every task rendered as a few-shot conversation."""
    for task in tasks:
        for inp, out in task.test:
            conv = task_conversation(task.train, inp, out, style=STYLE)
            yield "\n\n".join(m["content"] for m in conv["messages"])


def get_or_train_tokenizer(base_dir: str, tasks: list[Task], vocab_size: int) -> Tokenizer:
    """Load <base>/tokenizer, or train one on the tasks' text and save it there."""
    folder = os.path.join(base_dir, "tokenizer")
    if os.path.exists(os.path.join(folder, "tokenizer.pkl")):
        return Tokenizer.from_directory(folder)
    t0 = time.time()
    tok = Tokenizer.train_from_iterator(tokenizer_corpus(tasks), vocab_size=vocab_size, pattern=DIGIT_SPLIT_PATTERN)
    tok.save(folder)
    print0(f"trained a {tok.get_vocab_size()}-token tokenizer in {time.time() - t0:.1f}s -> {folder}")
    return tok


def task_documents(tasks: list[Task], tokenizer: Tokenizer, max_tokens: int, seed: int
                   ) -> Iterator[tuple[list[int], list[int]]]:
    """Endless seeded stream of augmented leave-one-out tasks as (ids, mask), loss on every token."""
    rng = random.Random(seed)
    while True:
        task = rng.choice(tasks)
        task = apply_to_task(task, rng.choice(GEOMETRIC_VIEWS)) or task
        task = apply_to_task(task, random_colour_permutation(rng)) or task
        task = shuffle_demos(task, rng)
        example = rng.choice(leave_n_out(task, 1))
        conv = training_conversation(example, style=STYLE)
        ids, mask = tokenizer.render_conversation(conv, max_tokens=max_tokens + 1, train_on="all")
        if len(ids) <= max_tokens + 1:
            yield ids, mask


@torch.inference_mode()
def sample_answers(model, tokenizer: Tokenizer, tasks: list[Task], max_prompt: int) -> list[dict]:
    """Greedy answer to each task's first test input; parsed and compared with the truth."""
    from nanoseal.engine import Engine

    engine = Engine(model, tokenizer)
    out = []
    for task in tasks:
        prompt = few_shot_prompt(task, 0, max_tokens=max_prompt, count_tokens=lambda s: len(tokenizer.encode(s)),
                                 style=STYLE)
        if not prompt.fits:
            continue
        ids = tokenizer.render_for_completion(prompt.conversation)
        truth = task.test[0][1]
        max_new = len(tokenizer.encode(format_example(truth, truth, STYLE)[1])) + 4
        seqs, _ = engine.generate_batch(ids, num_samples=1, max_tokens=max_new, temperature=0.0)
        text = tokenizer.decode(seqs[0][len(ids):])
        grid, reason = parse_grid(text, STYLE)
        out.append({"task": task.id, "text": text, "solved": grid == truth, "reason": reason,
                    "cell_accuracy": cell_accuracy(grid, truth)})
    return out


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal quickstart`."""
    parser.add_argument("--minutes", type=float, default=3.0, help="pretraining time budget")
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--max-side", type=int, default=8, help="only tasks whose grids are at most this wide/high")
    parser.add_argument("--samples", type=int, default=8, help="evaluation tasks to sample answers for")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal quickstart`."""
    seed_everything(args.seed)
    device = autodetect_device(args.device)
    base = get_base_dir()
    train_tasks = select_tasks(load_arc("arcagi1", "train"), max_side=args.max_side)
    eval_tasks = select_tasks(load_arc("arcagi1", "eval"), max_side=args.max_side)
    print0(f"ARC-AGI-1: {len(train_tasks)} training / {len(eval_tasks)} evaluation tasks with grids <= "
           f"{args.max_side}x{args.max_side}")
    tokenizer = get_or_train_tokenizer(base, train_tasks, args.vocab_size)
    config = GPTConfig(sequence_len=args.seq_len, vocab_size=tokenizer.get_vocab_size(), n_layer=args.n_layer,
                       n_head=args.n_head, n_kv_head=args.n_head, n_embd=args.n_embd)
    model = GPT(config).to(device)
    model.init_weights()
    print0(f"model: {model.num_params() / 1e6:.2f}M parameters, {config}")
    ckpt_dir = os.path.join(base, "base_checkpoints", f"d{args.n_layer}")
    cfg = TrainConfig(batch_size=args.batch_size, seq_len=args.seq_len, max_steps=100_000,
                      max_seconds=args.minutes * 60, dtype=args.dtype, save_every=50, log_every=20)
    docs = task_documents(train_tasks, tokenizer, args.seq_len, args.seed)
    summary = train(model, docs, cfg, ckpt_dir, meta={"source": "quickstart", "seed": args.seed,
                                                     "data": f"arcagi1 train, max_side {args.max_side}"},
                    pad_id=tokenizer.get_bos_token_id(), device=device)
    print0(f"trained {summary['step']} steps, {summary['tokens']:,} tokens, loss {summary['loss']:.3f}, "
           f"{summary['seconds']:.0f}s -> {ckpt_dir}")
    model.eval()
    results = sample_answers(model, tokenizer, eval_tasks[: args.samples], args.seq_len)
    for r in results:
        first = r["text"].split("#")[0].replace("\n", "/")[:40]
        print0(f"  {r['task']}: {'SOLVED' if r['solved'] else 'wrong '} cell accuracy {r['cell_accuracy']:.2f} "
               f"| {first}")
    n_solved = sum(r["solved"] for r in results)
    mean_acc = sum(r["cell_accuracy"] for r in results) / max(1, len(results))
    print0(f"held-out ARC-AGI-1 eval tasks: {n_solved}/{len(results)} solved, mean cell accuracy {mean_acc:.2f}")
    print0(f"chat with it: nanoseal chat --checkpoint {base} --source base")
    return 0
