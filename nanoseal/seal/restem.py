"""
ReST-EM, SEAL's outer-loop update: keep the (self-edit prompt, self-edit) pairs whose TTT earned reward 1,
fine-tune the policy on them with a LoRA (behaviour cloning, loss on the self-edit only), merge the LoRA
into the policy's weights, and check that the merge did not make the policy forget (its loss on a fixed
held-out sample before and after).

    pairs = select_pairs(rows)                                  # rows of selfedits.jsonl
    probe = forgetting_probe(tokenizer, train_tasks, cfg, max_len)  # {"selfedit": docs, "arc_answers": docs}
    summary = restem_update(model, tokenizer, tasks_by_id, pairs, RestemConfig(), seed=0,
                            forgetting_docs=probe)              # model is updated in place

SEAL's settings are the defaults (RESTEM_RECIPES["seal"]: LoRA r=16, alpha=16, lr 5e-5, 8 epochs, batch 5),
chosen for a 1B-parameter model. How far an update of a given size moves a smaller policy is measured by
nanoseal.seal.update_size; a preset names the size it uses (Preset.restem, chosen from that measurement), and
rank 0 means full fine-tuning (AdamW on every weight) instead of a LoRA. A round with no successful pair leaves
the policy unchanged and says so (summary["skipped"]). Every update records the kept pairs' mean token loss
before and after (summary["pairs_nll"]): how much of the behaviour cloning the policy took in.

Extension, off by default (not SEAL's): `select_pairs_topk(rows, k)` replaces the binary reward by a
continuous one for scales where exact solves are rare. Each valid self-edit is scored by the cell accuracy
of its voted attempt (ties: lower answer NLL); only edits that beat the unadapted model (reward 1, or
nll < base_nll) are eligible, and the k best *per task* are kept (per task rather than global, so that a few
easy tasks cannot take every slot and the policy keeps seeing a spread of tasks).

The forgetting probe has named parts, each measured before and after the merge: the self-edit SFT
documents of the first training tasks (with the default self-edit) and ARC grid-answer documents of the
same tasks (their demonstrations in leave-one-out form, the last one as the query, loss on the answer).

Under torchrun (nanoseal.dist) the update is data-parallel: every rank holds the same pairs and draws the same
batches; it trains on documents rank::world of each batch, divides its summed token loss by the batch's token
count and the adapter gradients are summed over ranks, so each step is the single-process step (within float
rounding). After the merge, rank 0's weights are broadcast so every rank holds exactly the same policy.
"""

import math
import random
from dataclasses import dataclass

import torch

from nanoseal import dist
from nanoseal.arc.data import Task
from nanoseal.arc.prompts import training_conversation
from nanoseal.arc.ttt_data import leave_n_out
from nanoseal.common import NanosealError, autocast_ctx
from nanoseal.lora import DEFAULT_TARGETS, adapter_optimizer, apply_lora, cosine_lr, remove_lora
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, fit_selfedit_conversation
from nanoseal.train.loop import pad_batch

TOPK_SELECTION = ("the k best valid self-edits per task among those that beat the unadapted model (reward 1 or "
                  "nll < base_nll), ranked by the cell accuracy of the voted attempt, ties by lower nll")


@dataclass
class RestemConfig:
    """Size of the ReST-EM update (rank 0: full fine-tuning) and its bookkeeping."""

    rank: int = 16
    alpha: float = 16.0
    targets: tuple = DEFAULT_TARGETS
    learning_rate: float = 5e-5
    epochs: int = 8
    batch_size: int = 5
    min_steps: int = 0  # at least this many optimizer steps: few kept pairs run more epochs (0: epochs as given)
    replay: float = 0.0  # grid-answer documents mixed in per self-edit document (0: SEAL's update, self-edits only)
    warmup_frac: float = 0.1
    max_grad_norm: float = 1.0
    style: str = "compact"
    max_len: int | None = None  # default: the model's sequence_len
    degrade_tolerance: float = 0.02  # forgetting flagged when held-out loss rises by more than 2 %
    dtype: str = "auto"
    recipe: str = "seal"  # the name it came from (bookkeeping)


# named update sizes: SEAL's 1B recipe, and those chosen for the presets by nanoseal.seal.update_size
RESTEM_RECIPES = {
    "seal": {"rank": 16, "alpha": 16.0, "learning_rate": 5e-5, "epochs": 8, "batch_size": 5},
}


def restem_config(recipe: str | dict, **overrides) -> RestemConfig:
    """A RestemConfig from a recipe name (or dict of fields), with the non-None overrides applied."""
    if isinstance(recipe, str):
        if recipe not in RESTEM_RECIPES:
            raise NanosealError(f"unknown ReST-EM recipe {recipe!r}; expected one of {', '.join(RESTEM_RECIPES)}")
        recipe = RESTEM_RECIPES[recipe]
    fields = {**recipe, **{k: v for k, v in overrides.items() if v is not None}}
    if overrides.get("rank") and overrides.get("alpha") is None:
        fields["alpha"] = float(fields["rank"])  # alpha follows the rank unless set (SEAL: alpha = r)
    return RestemConfig(**fields)


def select_pairs(rows: list[dict], max_per_task: int = 0) -> list[tuple[str, str]]:
    """(task id, self-edit text) of every row with reward 1, de-duplicated, in first-seen order; with
    max_per_task > 0 only a task's first max_per_task such pairs (each task weighs at most that much)."""
    assert max_per_task >= 0, f"max_per_task must be >= 0, got {max_per_task}"
    seen, pairs, per_task = set(), [], {}
    for row in rows:
        if row.get("reward") == 1 and row.get("self_edit") is not None:
            key = (row["task"], row["raw"].strip())
            if key in seen or (max_per_task and per_task.get(row["task"], 0) >= max_per_task):
                continue
            seen.add(key)
            pairs.append(key)
            per_task[row["task"]] = per_task.get(row["task"], 0) + 1
    return pairs


def _number(x) -> bool:
    """Whether x is a finite int or float (not a bool, not None)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def beats_base(row: dict) -> bool:
    """Whether a row's adapted model did better than the unadapted one: reward 1, or a lower answer NLL."""
    nll, base = row.get("nll"), row.get("base_nll")
    return row.get("reward") == 1 or (_number(nll) and _number(base) and nll < base)


def select_pairs_topk(rows: list[dict], k: int) -> list[tuple[str, str]]:
    """Per task, the k best (task id, self-edit) by cell accuracy then lower NLL, of valid edits beating the base."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise NanosealError(f"top-k selection needs k >= 1, got {k!r}")
    ranked: dict[str, list[tuple]] = {}  # task -> [(sort key, self-edit text)], tasks in first-seen order
    for i, row in enumerate(rows):
        if row.get("self_edit") is None or not beats_base(row):
            continue
        cell = row.get("cell_accuracy")
        nll = row.get("nll")
        key = (-(cell if _number(cell) else 0.0), nll if _number(nll) else math.inf, i)  # i: stable on ties
        ranked.setdefault(row["task"], []).append((key, row["raw"].strip()))
    pairs = []
    for task, scored in ranked.items():
        kept: list[str] = []
        for _, text in sorted(scored):
            if text not in kept:  # a repeated self-edit keeps its best rank and takes one slot
                kept.append(text)
        pairs += [(task, text) for text in kept[:k]]
    return pairs


def sft_documents(tokenizer, tasks_by_id: dict[str, Task], pairs: list[tuple[str, str]], cfg: RestemConfig,
                  max_len: int, notes: dict[str, str] | None = None) -> list[tuple[list[int], list[int]]]:
    """Rendered (ids, mask) of each pair: the self-edit prompt as sampled (with notes[task id], if any, as
    when sampled with --prompt-votes), then the self-edit (supervised)."""
    docs = []
    for task_id, text in pairs:
        answer_tokens = len(tokenizer.encode(text)) + 2
        conv = fit_selfedit_conversation(tokenizer, tasks_by_id[task_id], cfg.style, max_tokens=max_len,
                                         reserve_tokens=answer_tokens, note=(notes or {}).get(task_id, ""))
        if conv is None:
            continue
        conv = {"messages": conv["messages"] + [{"role": "assistant", "content": text}]}
        docs.append(tokenizer.render_conversation(conv, max_tokens=max_len, train_on="assistant"))
    return docs


def grid_answer_documents(tokenizer, tasks: list[Task], style: str, max_len: int,
                          every_query: bool = False) -> list[tuple[list[int], list[int]]]:
    """Each task's demonstrations leave-one-out (the last one as the query, or each in turn with every_query), loss
    on its answer; too long: dropped."""
    docs = []
    for task in tasks:
        for example in leave_n_out(task, 1)[slice(None) if every_query else slice(-1, None)]:
            ids, mask = tokenizer.render_conversation(training_conversation(example, style), max_tokens=max_len + 1,
                                                      train_on="assistant")
            if len(ids) <= max_len and any(mask):
                docs.append((ids, mask))
    return docs


def forgetting_probe(tokenizer, tasks: list[Task], cfg: RestemConfig, max_len: int,
                     n_tasks: int = 4) -> dict[str, list[tuple[list[int], list[int]]]]:
    """The fixed probe of the first n_tasks tasks: default-self-edit SFT documents and ARC answer documents."""
    tasks = list(tasks)[:n_tasks]
    pairs = [(t.id, DEFAULT_SELF_EDIT.canonical()) for t in tasks]
    return {"selfedit": sft_documents(tokenizer, {t.id: t for t in tasks}, pairs, cfg, max_len),
            "arc_answers": grid_answer_documents(tokenizer, tasks, cfg.style, max_len)}


@torch.no_grad()
def loss_sum(model, docs: list[tuple[list[int], list[int]]], pad_id: int, dtype: str = "auto",
             batch_size: int = 8) -> tuple[float, int]:
    """Summed token loss of the model on documents, and the number of supervised tokens."""
    device = model.get_device()
    total, count = 0.0, 0
    for i in range(0, len(docs), batch_size):
        inputs, targets = pad_batch(docs[i:i + batch_size], pad_id)
        with autocast_ctx(device, dtype):
            loss = model(inputs.to(device), targets.to(device), loss_reduction="sum")
        total += float(loss)
        count += int((targets != -1).sum())
    return total, count


def mean_loss(model, docs: list[tuple[list[int], list[int]]], pad_id: int, dtype: str = "auto",
              batch_size: int = 8) -> float:
    """Mean token loss of the model on documents (the forgetting probe)."""
    total, count = loss_sum(model, docs, pad_id, dtype, batch_size)
    return total / max(1, count)


def probe_losses(model, parts: dict[str, list], pad_id: int, dtype: str = "auto") -> dict[str, tuple[float, int]]:
    """(summed loss, supervised tokens) of each probe part."""
    return {name: loss_sum(model, docs, pad_id, dtype) for name, docs in parts.items()}


def forgetting_summary(before: dict[str, tuple[float, int]], after: dict[str, tuple[float, int]],
                       n_docs: dict[str, int], tolerance: float) -> dict:
    """Per part and over all probe tokens: mean loss before/after the merge; degraded when it rose over tolerance."""
    def entry(b: tuple[float, int], a: tuple[float, int]) -> dict:
        mb, ma = b[0] / max(1, b[1]), a[0] / max(1, a[1])
        return {"before": round(mb, 5), "after": round(ma, 5), "degraded": ma > mb * (1 + tolerance)}

    parts = {name: {**entry(before[name], after[name]), "n_docs": n_docs[name]} for name in before}
    total_b = (sum(v[0] for v in before.values()), sum(v[1] for v in before.values()))
    total_a = (sum(v[0] for v in after.values()), sum(v[1] for v in after.values()))
    overall = entry(total_b, total_a)
    overall["degraded"] = overall["degraded"] or any(p["degraded"] for p in parts.values())
    return {**overall, "tolerance": tolerance, "parts": parts}


def data_parallel_backward(model, mine: list, batch: list, pad_id: int, dtype: str = "auto") -> torch.Tensor:
    """Backward of this rank's documents' summed loss over the whole batch's token count; returns the batch's
    mean token loss (summed over ranks), as one process would have computed on the whole batch."""
    device = model.get_device()
    n_tokens = max(1, sum(1 for _, mask in batch for m in mask[1:] if m))
    loss_sum = torch.zeros((), device=device)
    if mine:  # a rank may get no document of a short last batch: it contributes zero gradients
        inputs, targets = pad_batch(mine, pad_id)
        with autocast_ctx(device, dtype):
            loss_sum = model(inputs.to(device), targets.to(device), loss_reduction="sum")
        (loss_sum / n_tokens).backward()
    return dist.all_reduce(loss_sum.detach().float()) / n_tokens


def restem_update(model, tokenizer, tasks_by_id: dict[str, Task], pairs: list[tuple[str, str]],
                  cfg: RestemConfig, seed: int = 0, forgetting_docs: dict[str, list] | list | None = None,
                  replay_docs: list | None = None, notes: dict[str, str] | None = None) -> dict:
    """Behaviour-clone the pairs into the policy with a LoRA and merge it; returns a summary dict. With cfg.replay
    > 0, round(replay x self-edit documents) of replay_docs (grid answers) are trained on alongside. notes: each
    task's prompt note, as its self-edits were sampled with (sft_documents)."""
    max_len = cfg.max_len or model.config.sequence_len
    pad_id = tokenizer.get_bos_token_id()
    docs = sft_documents(tokenizer, tasks_by_id, pairs, cfg, max_len, notes)
    summary = {"n_kept": len(pairs), "n_docs": len(docs), "steps": 0, "loss_curve": [], "restem_loss": None,
               "skipped": None, "forgetting": None, "pairs_nll": None}
    if not docs:
        summary["skipped"] = "no successful self-edit this round: the policy is unchanged"
        return summary
    if isinstance(forgetting_docs, list):  # one unnamed part
        forgetting_docs = {"probe": forgetting_docs}
    probe = {name: d for name, d in (forgetting_docs or {}).items() if d}
    before = probe_losses(model, probe, pad_id, cfg.dtype)
    pairs_before = loss_sum(model, docs, pad_id, cfg.dtype)
    device = model.get_device()
    rng = random.Random(seed)
    train_docs = list(docs)
    if cfg.replay > 0 and replay_docs:  # answers too, so the update does not unlearn answering grids
        n = round(cfg.replay * len(docs))  # n of them: a random subset, or each about n / len times when n is larger
        train_docs += [replay_docs[j % len(replay_docs)] for j in rng.sample(range(max(n, len(replay_docs))), n)]
    summary["n_replay"] = len(train_docs) - len(docs)
    full = cfg.rank == 0  # full fine-tuning: every weight trains, nothing to merge
    saved = {k: v.clone() for k, v in model.state_dict().items()} if full else None
    if full:
        params = list(model.parameters())
        grad_flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            params = apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets))
    opt = adapter_optimizer(params, lr=cfg.learning_rate)
    per_epoch = math.ceil(len(train_docs) / cfg.batch_size)
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / per_epoch))  # few kept pairs: more epochs, >= min_steps
    total = per_epoch * epochs
    warmup = int(cfg.warmup_frac * total)
    step = 0
    world, rank = dist.world_size(), dist.rank()
    model.train()
    try:
        for _ in range(epochs):
            order = list(range(len(train_docs)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                batch = [train_docs[j] for j in order[i:i + cfg.batch_size]]
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(step, cfg.learning_rate, warmup, total)
                if world == 1:
                    inputs, targets = pad_batch(batch, pad_id)
                    with autocast_ctx(device, cfg.dtype):
                        loss = model(inputs.to(device), targets.to(device))
                    loss.backward()
                else:
                    loss = data_parallel_backward(model, batch[rank::world], batch, pad_id, cfg.dtype)
                    dist.all_reduce_grads(params)
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                summary["loss_curve"].append(round(loss.item(), 5))
                step += 1
    except BaseException:  # a failed update leaves the policy as it was
        if full:
            model.load_state_dict(saved)
        else:
            remove_lora(model, merge=False)
        raise
    model.eval()
    if full:
        for p, flag in zip(params, grad_flags):
            p.requires_grad_(flag)
    else:
        remove_lora(model, merge=True)  # the policy keeps what it learned; plain linears again
    dist.broadcast_module(model)  # every rank holds exactly rank 0's merged policy
    summary["steps"] = step
    last_epoch = summary["loss_curve"][-per_epoch:]
    summary["restem_loss"] = round(sum(last_epoch) / len(last_epoch), 5) if last_epoch else None
    pairs_after = loss_sum(model, docs, pad_id, cfg.dtype)
    summary["pairs_nll"] = {"before": round(pairs_before[0] / max(1, pairs_before[1]), 5),
                            "after": round(pairs_after[0] / max(1, pairs_after[1]), 5), "tokens": pairs_before[1]}
    summary["update"] = {"rank": cfg.rank, "learning_rate": cfg.learning_rate, "epochs": epochs,
                         "batch_size": cfg.batch_size, "min_steps": cfg.min_steps, "replay": cfg.replay}
    if probe:
        after = probe_losses(model, probe, pad_id, cfg.dtype)
        summary["forgetting"] = forgetting_summary(before, after, {n: len(d) for n, d in probe.items()},
                                                   cfg.degrade_tolerance)
    return summary
