"""
ReST-EM, SEAL's outer-loop update: keep the (self-edit prompt, self-edit) pairs whose TTT earned reward 1,
fine-tune the policy on them with a LoRA (behaviour cloning, loss on the self-edit only), merge the LoRA
into the policy's weights, and check that the merge did not make the policy forget (its loss on a fixed
held-out sample before and after).

    pairs = select_pairs(rows)                                  # rows of selfedits.jsonl
    summary = restem_update(model, tokenizer, tasks_by_id, pairs, RestemConfig(), seed=0,
                            forgetting_docs=docs)               # model is updated in place

SEAL's settings are the defaults: LoRA r=16, alpha=16, lr 5e-5, 8 epochs, batch 5. A round with no
successful pair leaves the policy unchanged and says so (summary["skipped"]).
"""

import math
import random
from dataclasses import dataclass

import torch

from nanoseal.arc.data import Task
from nanoseal.common import autocast_ctx
from nanoseal.lora import DEFAULT_TARGETS, adapter_optimizer, apply_lora, cosine_lr, remove_lora
from nanoseal.seal.selfedit import fit_selfedit_conversation
from nanoseal.train.loop import pad_batch


@dataclass
class RestemConfig:
    rank: int = 16
    alpha: float = 16.0
    targets: tuple = DEFAULT_TARGETS
    learning_rate: float = 5e-5
    epochs: int = 8
    batch_size: int = 5
    warmup_frac: float = 0.1
    max_grad_norm: float = 1.0
    style: str = "compact"
    max_len: int | None = None  # default: the model's sequence_len
    degrade_tolerance: float = 0.02  # forgetting flagged when held-out loss rises by more than 2 %
    dtype: str = "auto"


def select_pairs(rows: list[dict]) -> list[tuple[str, str]]:
    """(task id, self-edit text) of every row with reward 1, de-duplicated, in first-seen order."""
    seen, pairs = set(), []
    for row in rows:
        if row.get("reward") == 1 and row.get("self_edit") is not None:
            key = (row["task"], row["raw"].strip())
            if key not in seen:
                seen.add(key)
                pairs.append(key)
    return pairs


def sft_documents(tokenizer, tasks_by_id: dict[str, Task], pairs: list[tuple[str, str]], cfg: RestemConfig,
                  max_len: int) -> list[tuple[list[int], list[int]]]:
    """Rendered (ids, mask) of each pair: the self-edit prompt as sampled, then the self-edit (supervised)."""
    docs = []
    for task_id, text in pairs:
        answer_tokens = len(tokenizer.encode(text)) + 2
        conv = fit_selfedit_conversation(tokenizer, tasks_by_id[task_id], cfg.style, max_tokens=max_len,
                                         reserve_tokens=answer_tokens)
        if conv is None:
            continue
        conv = {"messages": conv["messages"] + [{"role": "assistant", "content": text}]}
        docs.append(tokenizer.render_conversation(conv, max_tokens=max_len, train_on="assistant"))
    return docs


@torch.no_grad()
def mean_loss(model, docs: list[tuple[list[int], list[int]]], pad_id: int, dtype: str = "auto",
              batch_size: int = 8) -> float:
    """Mean token loss of the model on documents (the forgetting probe)."""
    device = model.get_device()
    total, count = 0.0, 0
    for i in range(0, len(docs), batch_size):
        inputs, targets = pad_batch(docs[i:i + batch_size], pad_id)
        with autocast_ctx(device, dtype):
            loss = model(inputs.to(device), targets.to(device), loss_reduction="sum")
        total += float(loss)
        count += int((targets != -1).sum())
    return total / max(1, count)


def restem_update(model, tokenizer, tasks_by_id: dict[str, Task], pairs: list[tuple[str, str]],
                  cfg: RestemConfig, seed: int = 0, forgetting_docs=None) -> dict:
    """Behaviour-clone the pairs into the policy with a LoRA and merge it; returns a summary dict."""
    max_len = cfg.max_len or model.config.sequence_len
    pad_id = tokenizer.get_bos_token_id()
    docs = sft_documents(tokenizer, tasks_by_id, pairs, cfg, max_len)
    summary = {"n_pairs": len(pairs), "n_docs": len(docs), "steps": 0, "loss_curve": [], "skipped": None,
               "forgetting": None}
    if not docs:
        summary["skipped"] = "no successful self-edit this round: the policy is unchanged"
        return summary
    before = mean_loss(model, forgetting_docs, pad_id, cfg.dtype) if forgetting_docs else None
    device = model.get_device()
    rng = random.Random(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        params = apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets))
    opt = adapter_optimizer(params, lr=cfg.learning_rate)
    total = math.ceil(len(docs) / cfg.batch_size) * cfg.epochs
    warmup = int(cfg.warmup_frac * total)
    step = 0
    model.train()
    try:
        for _ in range(cfg.epochs):
            order = list(range(len(docs)))
            rng.shuffle(order)
            for i in range(0, len(order), cfg.batch_size):
                inputs, targets = pad_batch([docs[j] for j in order[i:i + cfg.batch_size]], pad_id)
                for group in opt.param_groups:
                    group["lr"] = cosine_lr(step, cfg.learning_rate, warmup, total)
                with autocast_ctx(device, cfg.dtype):
                    loss = model(inputs.to(device), targets.to(device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                summary["loss_curve"].append(round(loss.item(), 5))
                step += 1
    except BaseException:
        remove_lora(model, merge=False)  # a failed update leaves the policy as it was
        raise
    model.eval()
    remove_lora(model, merge=True)  # the policy keeps what it learned; plain linears again
    summary["steps"] = step
    if forgetting_docs:
        after = mean_loss(model, forgetting_docs, pad_id, cfg.dtype)
        summary["forgetting"] = {"before": round(before, 5), "after": round(after, 5),
                                 "degraded": after > before * (1 + cfg.degrade_tolerance)}
    return summary
