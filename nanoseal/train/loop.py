"""
The training loop shared by pretraining and SFT: pack rendered documents (ids, loss mask) into rows,
step Muon + AdamW with nanochat's warmup/warmdown schedule, print tokens/s and loss, and save
resumable checkpoints in nanochat's layout.

    from nanoseal.train.loop import TrainConfig, train
    train(model, documents, TrainConfig(max_seconds=120), checkpoint_dir, meta)

`documents` is an iterator of (ids, mask) pairs (mask 1 = train on the token predicted at that
position, as returned by Tokenizer.render_conversation). Rows are filled greedily; a document that
does not fit the rest of a row starts the next one (rows padded with targets -1), documents longer
than a row are truncated. Every `save_every` steps and at the end a checkpoint (model + optimizer +
data position) is written atomically; calling train() again with the same checkpoint_dir resumes.

Under torchrun (nanoseal.dist) the batch stays the global one: every rank reads the same deterministic document
stream and packs the same (batch_size, seq_len) batch, then takes rows rank::world of it; each rank's summed
token loss is divided by the global batch's token count and the gradients are summed over ranks, so every rank
steps with the gradient of the whole batch, the same as one process (within float rounding). Every rank keeps
the full optimizer state (identical everywhere); rank 0 alone prints and writes checkpoints, and the step
timer is the slowest rank's, so time budgets and schedules agree. batch_size must be >= the number of ranks.
"""

import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from nanoseal import dist
from nanoseal.checkpoint import find_last_step, load_checkpoint, save_checkpoint
from nanoseal.common import NanosealError, autocast_ctx, print0
from nanoseal.optim import setup_optimizers


@dataclass
class TrainConfig:
    batch_size: int = 16  # rows per step
    seq_len: int = 512  # tokens per row
    max_steps: int = 1000  # stop after this many steps...
    max_seconds: float = 0.0  # ...or after this much training time (0 = no time limit)
    matrix_lr: float = 0.02
    embedding_lr: float = 0.2
    unembedding_lr: float = 0.004
    warmup_frac: float = 0.0
    warmdown_frac: float = 0.2
    grad_clip: float = 1.0
    dtype: str = "auto"  # auto | float32 | bfloat16 (autocast)
    save_every: int = 0  # 0 = only at the end
    log_every: int = 10


def pack_rows(documents: Iterator[tuple[list[int], list[int]]], batch_size: int, seq_len: int,
              pad_id: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
    """Yield (inputs (B, T), targets (B, T), documents placed so far) batches of packed documents."""
    carry = None
    consumed = 0
    while True:
        inputs = torch.full((batch_size, seq_len), pad_id, dtype=torch.long)
        targets = torch.full((batch_size, seq_len), -1, dtype=torch.long)
        for r in range(batch_size):
            pos = 0
            while pos < seq_len:
                if carry is None:
                    try:
                        carry = next(documents)
                    except StopIteration:
                        if r == 0 and pos == 0:
                            return
                        break
                ids, mask = carry
                n = min(len(ids), seq_len + 1)
                if pos > 0 and pos + n - 1 > seq_len:  # does not fit the rest of this row
                    break
                ids_t = torch.tensor(ids[:n])
                tgt = torch.tensor(ids[1:n])
                m = torch.tensor(mask[1:n], dtype=torch.bool)
                tgt = torch.where(m, tgt, torch.full_like(tgt, -1))
                inputs[r, pos:pos + n - 1] = ids_t[:-1]
                targets[r, pos:pos + n - 1] = tgt
                pos += n - 1
                carry = None
                consumed += 1  # counted once placed, so a resume re-reads a document pulled but not placed
        yield inputs, targets, consumed


def lr_multiplier(step: int, total: int, warmup_frac: float, warmdown_frac: float) -> float:
    """nanochat's schedule: linear warmup, constant, linear warmdown to 0."""
    warmup = round(warmup_frac * total)
    warmdown = round(warmdown_frac * total)
    if step < warmup:
        return (step + 1) / warmup
    if step <= total - warmdown:
        return 1.0
    return max(0.0, (total - step) / max(1, warmdown))


def train(model, documents: Iterator, cfg: TrainConfig, checkpoint_dir: str, meta: dict,
          pad_id: int = 0, device=None) -> dict:
    """Train (resuming from checkpoint_dir if it holds a checkpoint); returns a summary dict (loss_curve: the
    loss of each step run by this call)."""
    device = device or model.get_device()
    world, rank = dist.world_size(), dist.rank()
    if cfg.batch_size < world:
        raise NanosealError(f"a batch of {cfg.batch_size} rows cannot be spread over {world} ranks "
                            "(batch_size must be >= the number of processes)")
    optimizers = setup_optimizers(model, unembedding_lr=cfg.unembedding_lr, embedding_lr=cfg.embedding_lr,
                                  matrix_lr=cfg.matrix_lr)
    step, elapsed, docs_done, tokens_done = 0, 0.0, 0, 0
    resume = os.path.isdir(checkpoint_dir) and any(f.startswith("model_") for f in os.listdir(checkpoint_dir))
    if dist.broadcast_object(resume):  # rank 0 decides; with several nodes checkpoint_dir must be shared storage
        last = find_last_step(checkpoint_dir)
        state, optim_state, old_meta = load_checkpoint(checkpoint_dir, last, device, load_optimizer=True)
        model.load_state_dict(state)
        for opt, s in zip(optimizers, optim_state["optimizers"]):
            opt.load_state_dict(s)
        ts = old_meta.get("train_state", {})
        step, elapsed = last, ts.get("elapsed", 0.0)
        docs_done, tokens_done = ts.get("documents", 0), ts.get("tokens", 0)
        print0(f"resuming from {checkpoint_dir} step {step} ({docs_done} documents already seen)")
        for _ in range(docs_done):  # the document stream is deterministic: skip what was consumed
            next(documents)

    dist.broadcast_module(model)  # every rank starts from rank 0's weights (fresh or resumed)

    def save(final: bool):
        if rank != 0:
            return
        m = dict(meta, model_config=model.config.to_dict(), step=step, train_config=asdict(cfg),
                 train_state={"elapsed": elapsed, "documents": docs_done, "tokens": tokens_done, "final": final})
        save_checkpoint(checkpoint_dir, step, model.state_dict(),
                        {"optimizers": [o.state_dict() for o in optimizers]}, m)

    total = cfg.max_steps
    model.train()
    docs_start = docs_done
    batches = pack_rows(documents, cfg.batch_size, cfg.seq_len, pad_id)
    loss_ema, t_last, tok_last = None, time.time(), 0
    last_loss = float("nan")
    loss_curve = []
    while step < total and (cfg.max_seconds <= 0 or elapsed < cfg.max_seconds):
        t0 = time.time()
        try:
            inputs, targets, consumed = next(batches)
        except StopIteration:
            print0("data exhausted")
            break
        inputs, targets = inputs.to(device), targets.to(device)
        # with a time budget the step count is unknown: schedule against the elapsed fraction instead
        progress_step = step if cfg.max_seconds <= 0 else int(total * min(1.0, elapsed / cfg.max_seconds))
        lrm = lr_multiplier(progress_step, total, cfg.warmup_frac, cfg.warmdown_frac)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
        if world == 1:
            with autocast_ctx(device, cfg.dtype):
                loss = model(inputs, targets)
            loss.backward()
        else:  # this rank's rows; loss normalised by the global batch's tokens, gradients summed over ranks
            n_tokens = max(1, int((targets >= 0).sum()))
            with autocast_ctx(device, cfg.dtype):
                loss_sum = model(inputs[rank::world].contiguous(), targets[rank::world].contiguous(),
                                 loss_reduction="sum")
            (loss_sum / n_tokens).backward()
            dist.all_reduce_grads(model.parameters())
            loss = dist.all_reduce(loss_sum.detach().float()) / n_tokens
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        step += 1
        docs_done = docs_start + consumed
        last_loss = loss.item()
        loss_curve.append(last_loss)
        loss_ema = last_loss if loss_ema is None else 0.9 * loss_ema + 0.1 * last_loss
        tokens_done += int((targets >= 0).sum())
        if world == 1:
            elapsed += time.time() - t0
        else:  # the slowest rank's step time, so every rank takes the same budget and schedule decisions
            elapsed += float(dist.all_reduce(torch.tensor([time.time() - t0], dtype=torch.float64), op="max"))
        if step % cfg.log_every == 0 or step == 1:
            now = time.time()
            tps = (tokens_done - tok_last) / max(1e-9, now - t_last)
            print0(f"step {step:5d} | loss {loss_ema:.4f} | {tps:,.0f} trained tok/s | {elapsed:.0f}s")
            t_last, tok_last = now, tokens_done
        if cfg.save_every and step % cfg.save_every == 0:
            save(final=False)
    save(final=True)
    dist.barrier()  # the final checkpoint is on disk before any rank goes on (e.g. to load it)
    return {"step": step, "loss": loss_ema if loss_ema is not None else last_loss, "seconds": elapsed,
            "tokens": tokens_done, "loss_curve": loss_curve}


def pad_batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One (inputs (B, T), targets (B, T)) batch of documents, each in its own row, padded at the end
    (targets -1 on padding and where the mask is 0); T = the longest document - 1."""
    T = max(len(ids) for ids, _ in rows) - 1
    inputs = torch.full((len(rows), T), pad_id, dtype=torch.long)
    targets = torch.full((len(rows), T), -1, dtype=torch.long)
    for r, (ids, mask) in enumerate(rows):
        n = len(ids) - 1
        inputs[r, :n] = torch.tensor(ids[:-1])
        targets[r, :n] = torch.where(torch.tensor(mask[1:], dtype=torch.bool), torch.tensor(ids[1:]), -1)
    return inputs, targets
