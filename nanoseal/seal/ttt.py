"""
Test-time training: self-edits -> TTT data -> LoRA adapters -> augmented predictions -> vote -> reward.

    results = run_ttt(model, tokenizer, task, self_edits, TTTConfig(), seed=0)

`model` is a plain GPT; K self-edits of one task are trained as K stacked LoRA adapters (nanoseal.lora).
With `batched=True` (the default on CUDA) every optimizer step feeds one batch holding each still-active
adapter's rows, each routed to its adapter; with `batched=False` (the default on CPU, where bench/lora.py
and bench/kbatch.py measure the batched pass slower) the adapters are trained one after another through the
same code (one active adapter at a time), each step's examples packed into one row with their own positions
and attention (no padding). Both compute the same thing: per-adapter data order, learning rate,
warmup + cosine schedule, gradient clipping, AdamW state and step count (tests check it).

Evaluation: for each test input, the task is shown under each inference view (geometric views, and
optionally colour permutations), the adapter greedily writes the answer grid (the views whose prompts have
the same length are decoded together, every adapter's row in one batch), predictions are mapped back
through the view's inverse and voted into 2 attempts (pass@2). Reward 1 when every test output is one of
its attempts. Continuous scores are logged beside it: cell accuracy of the best attempt and the NLL
(nats per token) of the true test output under the identity view. A self-edit that failed to parse
(None) gets reward 0 and no training, as SEAL does.
"""

import math
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field

import torch

from nanoseal.arc.augment import apply_to_task, inference_views
from nanoseal.arc.data import Task
from nanoseal.arc.grids import format_example, parse_grid
from nanoseal.arc.prompts import few_shot_prompt, task_conversation, train_on_for_strategy
from nanoseal.arc.ttt_data import make_ttt_data
from nanoseal.arc.vote import cell_accuracy, invert_predictions, is_solved, vote
from nanoseal.common import autocast_ctx
from nanoseal.engine import greedy_batch
from nanoseal.lora import (
    DEFAULT_TARGETS,
    MultiAdapterAdamW,
    adapter_parameters,
    adapter_routing,
    apply_lora,
    per_adapter_loss,
    remove_lora,
)


@dataclass
class TTTConfig:
    rank: int = 16
    alpha: float = 16.0
    targets: tuple = DEFAULT_TARGETS
    batch_size: int = 2  # SEAL: per-device batch 2
    n_max: int = 250  # TTT examples per self-edit at most
    max_steps: int = 375  # SEAL drops edits over 375 steps (batch 2)
    warmup_frac: float = 0.1
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    style: str = "compact"
    colour_views: int = 0  # colour-permuted copies of the 7 geometric inference views
    max_views: int | None = None  # use only the first n inference views (identity first); None = all
    max_seq_len: int | None = None  # default: the model's sequence_len
    batched: bool | None = None  # K adapters in one pass per step, or one after another; None = auto
    dtype: str = "auto"
    answer_margin: int = 8  # extra tokens allowed beyond the largest demonstration answer


@dataclass
class EditResult:
    """What one self-edit did on one task."""

    reward: int = 0
    solved: bool = False
    cell_accuracy: float = 0.0
    nll: float | None = None
    n_examples: int = 0
    steps: int = 0
    loss_curve: list = field(default_factory=list)
    attempts: list = field(default_factory=list)  # per test input: up to 2 grids (lists of lists)
    votes: list = field(default_factory=list)  # per test input: [views predicting the commonest grid, views]
    data_stats: dict = field(default_factory=dict)
    seconds_ttt: float = 0.0
    seconds_eval: float = 0.0
    skipped: str | None = None


def count_tokens_fn(tokenizer):
    """A count_tokens(text) callable for the ARC toolkit's budgets."""
    return lambda text: len(tokenizer.encode(text))


def build_dataset(task: Task, edit, tokenizer, cfg: TTTConfig, max_len: int, seed: int):
    """Rendered (ids, mask) rows of a self-edit's TTT data, and the data stats."""
    examples, stats = make_ttt_data(task, edit.flags, count_tokens=count_tokens_fn(tokenizer), max_tokens=max_len,
                                    n_max=cfg.n_max, seed=seed, style=cfg.style)
    train_on = train_on_for_strategy(edit.strategy)
    rows = [tokenizer.render_conversation(ex.conversation, max_tokens=max_len, train_on=train_on) for ex in examples]
    return rows, asdict(stats)


def _schedule(n_examples: int, epochs: int, batch_size: int) -> int:
    """Optimizer steps of one adapter."""
    return math.ceil(n_examples / batch_size) * epochs if n_examples else 0


def pack_adapter_rows(groups: list[list[tuple[list[int], list[int]]]], pad_id: int
                      ) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
    """One row per group (one adapter's examples of a step) with its examples packed end to end:
    inputs (R, T) padded with pad_id, targets (R, T) (-1 on padding and where the mask is 0), and each row's
    document lengths for GPT's doc_lens (each example keeps its own positions and attention)."""
    lens = [[len(ids) - 1 for ids, _ in g] for g in groups]
    T = max(sum(row) for row in lens)
    inputs = torch.full((len(groups), T), pad_id, dtype=torch.long)
    targets = torch.full((len(groups), T), -1, dtype=torch.long)
    for r, g in enumerate(groups):
        ids = [t for doc, _ in g for t in doc[:-1]]
        tgt = [t if m else -1 for doc, mask in g for t, m in zip(doc[1:], mask[1:])]
        inputs[r, :len(ids)] = torch.tensor(ids)
        targets[r, :len(tgt)] = torch.tensor(tgt)
    return inputs, targets, lens


def train_adapters(model, datasets: list[list[tuple[list[int], list[int]]]], lrs: list[float], epochs: list[int],
                   cfg: TTTConfig, seed: int, pad_id: int, stats: dict | None = None) -> list[list[float]]:
    """Train adapter k on datasets[k] (model must hold len(datasets) stacked adapters); loss curve per adapter.
    A step with one adapter (the sequential mode) packs its examples into one row (no padding); a batched step
    gives each example its own right-padded row. `stats`, if given, accumulates steps, positions computed,
    tokens and targets."""
    K = len(datasets)
    device = model.get_device()
    totals = [_schedule(len(d), e, cfg.batch_size) for d, e in zip(datasets, epochs)]
    warmups = [int(cfg.warmup_frac * t) for t in totals]
    opt = MultiAdapterAdamW(adapter_parameters(model), lr=lrs, warmup_steps=warmups,
                            total_steps=[max(1, t) for t in totals], weight_decay=cfg.weight_decay,
                            max_grad_norm=cfg.max_grad_norm)
    # each adapter's batches, fixed up front: a seeded shuffle per epoch
    plans = []
    for k, data in enumerate(datasets):
        rng = random.Random(seed * 1000 + k)
        batches = []
        for _ in range(epochs[k] if data else 0):
            order = list(range(len(data)))
            rng.shuffle(order)
            batches += [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        plans.append(batches)
    curves: list[list[float]] = [[] for _ in range(K)]
    batched = cfg.batched if cfg.batched is not None else device.type == "cuda"  # bench/kbatch.py: slower on CPU
    groups = [list(range(K))] if batched else [[k] for k in range(K)]
    model.train()
    for group in groups:
        n_steps = max((len(plans[k]) for k in group), default=0)
        for step in range(n_steps):
            groups_rows, route = [], []
            for k in group:
                if step < len(plans[k]):
                    groups_rows.append([datasets[k][i] for i in plans[k][step]])
                    route.append(k)
            if len(groups_rows) == 1:  # one adapter this step: its examples packed into one row, no padding
                inputs, targets, doc_lens = pack_adapter_rows(groups_rows, pad_id)
            else:  # several adapters: one right-padded row per example (plain causal attention, no mask)
                route = [k for k, g in zip(route, groups_rows) for _ in g]
                inputs, targets, _ = pack_adapter_rows([[ex] for g in groups_rows for ex in g], pad_id)
                doc_lens = None
            route_t = torch.tensor(route, device=device)
            with autocast_ctx(device, cfg.dtype):
                loss, losses = per_adapter_loss(model, inputs.to(device), targets.to(device), route_t, K,
                                                doc_lens=doc_lens)
            loss.backward()
            if stats is not None:
                tokens = sum(len(ex[0]) - 1 for g in groups_rows for ex in g)
                for key, value in (("steps", 1), ("positions", inputs.numel()), ("tokens", tokens),
                                   ("targets", int((targets != -1).sum()))):
                    stats[key] = stats.get(key, 0) + value
            active = [False] * K
            for k in set(route):
                active[k] = True
                curves[k].append(round(float(losses[k]), 5))
            opt.step(active=active)
            for p in adapter_parameters(model):
                p.grad = None
    model.eval()
    return curves


def _answer_budget(task: Task, tokenizer, cfg: TTTConfig) -> int:
    """Tokens to allow for an answer: the largest demonstration answer (or its 2x-scaled cousin) + margin."""
    longest = max(len(tokenizer.encode(format_example(i, o, cfg.style)[1])) for i, o in task.train)
    return longest + cfg.answer_margin


DECODE_POSITIONS = 1 << 18  # cached positions (rows x (prompt + answer)) one batched decode may hold at most


def _decode_chunks(jobs: list[tuple], n_rows: int) -> list[list[int]]:
    """Indices of jobs (view, ids, budget) grouped by prompt length, split so that one group's rows x positions
    stay under DECODE_POSITIONS; each group is one batched greedy decode."""
    by_len: dict[int, list[int]] = {}
    for j, (_, ids, _) in enumerate(jobs):
        by_len.setdefault(len(ids), []).append(j)
    chunks = []
    for length, idx in by_len.items():
        per_view = n_rows * (length + max(jobs[j][2] for j in idx))
        size = max(1, DECODE_POSITIONS // max(1, per_view))
        chunks += [idx[i:i + size] for i in range(0, len(idx), size)]
    return chunks


def answer_stop_ids(tokenizer) -> set[int]:
    """Token ids that end an answer: <|assistant_end|>, BOS, and the answer footer '#' when it is one token."""
    stop_ids = {tokenizer.encode_special("<|assistant_end|>"), tokenizer.get_bos_token_id()}
    hash_ids = tokenizer.encode("#")
    if len(hash_ids) == 1:
        stop_ids.add(hash_ids[0])  # the answer footer: nothing after it is parsed
    return stop_ids


def view_prompts(task: Task, t: int, views: list, tokenizer, cfg: TTTConfig, max_len: int) -> list[tuple]:
    """(view, prompt ids, answer budget) of test input t under every view that applies and fits max_len."""
    count = count_tokens_fn(tokenizer)
    jobs = []
    for view in views:
        vtask = apply_to_task(task, view)
        if vtask is None:
            continue
        budget = _answer_budget(vtask, tokenizer, cfg)
        prompt = few_shot_prompt(vtask, t, max_tokens=max_len, count_tokens=count, style=cfg.style,
                                 reserve_tokens=budget)
        if prompt.fits:
            jobs.append((view, tokenizer.render_for_completion(prompt.conversation), budget))
    return jobs


@torch.inference_mode()
def predict(model, tokenizer, task: Task, rows: list[int], cfg: TTTConfig, max_len: int, seed: int,
            votes: list | None = None) -> list[list[list]]:
    """Voted attempts [row][test][<=2 grids] for each row's adapter (-1 = base model). `votes`, if given, gets
    [row][test] = [views predicting the commonest grid, views]: how far the views agree."""
    device = model.get_device()
    stop_ids = answer_stop_ids(tokenizer)
    views = inference_views(cfg.colour_views, seed=seed)[: cfg.max_views]
    route = torch.tensor(rows, device=device)
    attempts = [[] for _ in rows]
    if votes is not None:
        votes[:] = [[] for _ in rows]
    for t in range(len(task.test)):
        outputs = [[] for _ in rows]  # [row][view] grid in the view's frame
        jobs = view_prompts(task, t, views, tokenizer, cfg, max_len)
        gens = {}  # job index -> one generation per row
        for chunk in _decode_chunks(jobs, len(rows)):  # views with prompts of one length decode together
            prompts = [jobs[j][1] for j in chunk for _ in rows]
            budgets = [jobs[j][2] for j in chunk for _ in rows]
            with adapter_routing(model, route.repeat(len(chunk))), autocast_ctx(device, cfg.dtype):
                out = greedy_batch(model, prompts, budgets, stop_ids)
            for i, j in enumerate(chunk):
                gens[j] = out[i * len(rows):(i + 1) * len(rows)]
        used_views = [view for view, _, _ in jobs]
        for j in range(len(jobs)):
            for r, gen in enumerate(gens[j]):
                grid, _ = parse_grid(tokenizer.decode(gen), cfg.style)
                outputs[r].append(grid)
        for r in range(len(rows)):
            preds = invert_predictions(used_views, outputs[r]) if used_views else []
            attempts[r].append([list(map(list, g)) for g in vote(preds)] if preds else [])
            if votes is not None:
                counts = Counter(p.grid for p in preds if p.grid is not None)
                votes[r].append([max(counts.values(), default=0), len(preds)])
    return attempts


@torch.inference_mode()
def answer_nll(model, tokenizer, task: Task, rows: list[int], cfg: TTTConfig, max_len: int) -> list[float | None]:
    """Mean NLL (nats/token) of the true output of test 0 (identity view) under each row's adapter."""
    inp, out = task.test[0]
    if out is None:
        return [None] * len(rows)
    conv = task_conversation(task.train, inp, out, cfg.style)
    ids, mask = tokenizer.render_conversation(conv, max_tokens=max_len + 1, train_on="assistant")
    device = model.get_device()
    x = torch.tensor([ids[:-1]] * len(rows), device=device)
    y = torch.tensor([[tok if m else -1 for tok, m in zip(ids[1:], mask[1:])]] * len(rows), device=device)
    with adapter_routing(model, torch.tensor(rows, device=device)), autocast_ctx(device, cfg.dtype):
        token_loss = model(x, y, loss_reduction="none").view(len(rows), -1)
    n = (y != -1).sum(1).clamp(min=1)
    return [round(float(v), 5) for v in (token_loss.sum(1) / n)]


def run_ttt(model, tokenizer, task: Task, self_edits: list, cfg: TTTConfig, seed: int = 0,
            include_base: bool = False) -> tuple[list[EditResult], EditResult | None]:
    """TTT + evaluation of each self-edit (None = invalid) on one task; optionally the base model (ICL) too."""
    max_len = cfg.max_seq_len or model.config.sequence_len
    K = len(self_edits)
    results = [EditResult() for _ in range(K)]
    valid = [k for k, e in enumerate(self_edits) if e is not None]
    datasets: dict[int, list] = {}
    for k in valid:
        t0 = time.time()
        rows, stats = build_dataset(task, self_edits[k], tokenizer, cfg, max_len, seed)
        steps = _schedule(len(rows), self_edits[k].num_train_epochs, cfg.batch_size)
        results[k].n_examples, results[k].data_stats, results[k].steps = len(rows), stats, steps
        results[k].seconds_ttt += time.time() - t0
        if not rows:
            results[k].skipped = "no TTT example fits the context"
        elif steps > cfg.max_steps:
            results[k].skipped = f"{steps} steps over the budget of {cfg.max_steps}"
        else:
            datasets[k] = rows
    trained = sorted(datasets)
    base = None
    if not trained and not include_base:
        return results, None
    pad = tokenizer.get_bos_token_id()
    with torch.random.fork_rng(devices=[]):  # adapter init from the run's seed, not the global RNG state
        torch.manual_seed(seed)
        apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets),
                   n_adapters=max(1, len(trained)))
    try:
        if trained:
            t0 = time.time()
            curves = train_adapters(model, [datasets[k] for k in trained],
                                    [self_edits[k].learning_rate for k in trained],
                                    [self_edits[k].num_train_epochs for k in trained], cfg, seed, pad)
            dt = (time.time() - t0) / len(trained)
            for j, k in enumerate(trained):
                results[k].loss_curve, results[k].seconds_ttt = curves[j], results[k].seconds_ttt + dt
        rows = list(range(len(trained))) + ([-1] if include_base else [])
        t0 = time.time()
        votes: list = []
        attempts = predict(model, tokenizer, task, rows, cfg, max_len, seed, votes)
        nlls = answer_nll(model, tokenizer, task, rows, cfg, max_len)
        dt = (time.time() - t0) / len(rows)
    finally:
        remove_lora(model)
    truths = [o for _, o in task.test]
    scored = [score(attempts[r], truths) for r in range(len(rows))]
    for j, k in enumerate(trained):
        r = results[k]
        r.solved, r.cell_accuracy = scored[j]
        r.reward, r.attempts, r.nll, r.seconds_eval, r.votes = int(r.solved), attempts[j], nlls[j], dt, votes[j]
    if include_base:
        base = EditResult(solved=scored[-1][0], cell_accuracy=scored[-1][1], reward=int(scored[-1][0]),
                          attempts=attempts[-1], votes=votes[-1], nll=nlls[-1], seconds_eval=dt)
    return results, base


def score(attempts_per_test: list, truths: list) -> tuple[bool, float]:
    """(pass@2 solved, mean over tests of the best attempt's cell accuracy)."""
    if any(t is None for t in truths):
        return False, 0.0
    as_grids = [[tuple(map(tuple, g)) for g in att] for att in attempts_per_test]
    solved = is_solved(as_grids, truths)
    acc = [max((cell_accuracy(g, truth) for g in att), default=0.0) for att, truth in zip(as_grids, truths)]
    return solved, sum(acc) / len(acc)

