"""
The training loop shared by pretraining and SFT: pack rendered documents (ids, loss mask) into rows,
step Muon + AdamW with nanochat's warmup/warmdown schedule, print tokens/s and loss, and save
resumable checkpoints in nanochat's layout.

    from nanoseal.train.loop import TrainConfig, train
    train(model, documents, TrainConfig(max_seconds=120), checkpoint_dir, meta)

`documents` is an iterator of (ids, mask) pairs (mask 1 = train on the token predicted at that
position, as returned by Tokenizer.render_conversation). Rows are filled greedily; a document that
does not fit the rest of a row starts the next one (rows padded with targets -1), documents longer
than a row are truncated. By default a position attends to every earlier one of its row, across documents (as
nanochat trains); with `doc_attention` each document attends to itself alone, its positions counted from 0 (as it
is seen at inference), and the attention over the other documents is not computed at all: with no row boundaries
to respect, a step packs batch_size x seq_len positions as one row of whole documents (padding only at its end;
each document at most seq_len + 1 tokens) through GPT's doc_lens (one attention call per document).
Every `save_every` steps and at the end a checkpoint (model + optimizer + data position) is written atomically;
calling train() again with the same checkpoint_dir resumes.

Crash safety (a SIGKILL at any moment, a full disk): a step counts as saved only once its model, meta and
optimizer files are all on disk (each is written atomically, the optimizer last). A rerun resumes from the last
complete step - weights, optimizer moments, schedule position and the document stream's position (the
stream is deterministic: the documents already placed in rows are skipped) - so it ends with the same weights
as a run that was never interrupted. A cut-off step's files and stray temp files are removed first, so they
cannot be mistaken for a checkpoint; a save that fails (no space) removes its partial files and stops with one
line, keeping the last complete checkpoint.

Under torchrun (nanoseal.dist) the batch stays the global one: every rank reads the same deterministic document
stream and packs the same (batch_size, seq_len) batch, then takes rows rank::world of it (with doc_attention:
the whole documents between the boundaries nearest to its equal slice of the one row); each rank's summed
token loss is divided by the global batch's token count and the gradients are summed over ranks, so every rank
steps with the gradient of the whole batch, the same as one process (within float rounding). Every rank keeps
the full optimizer state (identical everywhere); rank 0 alone prints and writes checkpoints, and the step
timer is the slowest rank's, so time budgets and schedules agree. batch_size must be >= the number of ranks.
"""

import glob
import itertools
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch

from nanoseal import dist
from nanoseal.checkpoint import load_checkpoint, save_checkpoint
from nanoseal.common import NanosealError, autocast_ctx, ensure_dir, print0, read_json_object
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
    doc_attention: bool = False  # attend within each packed document only (its positions from 0), not the whole row


def pack_rows(documents: Iterator[tuple[list[int], list[int]]], batch_size: int, seq_len: int,
              pad_id: int, longest: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, int,
                                                                          list[list[int]]]]:
    """Yield (inputs (B, T), targets (B, T), documents placed so far, lengths) batches of packed documents, each
    cut to `longest` + 1 tokens (default: seq_len + 1); lengths[r]: the positions each document takes in row r,
    then the row's padding if any (they sum to T)."""
    longest = seq_len if longest is None else longest
    carry = None
    consumed = 0
    while True:
        inputs = torch.full((batch_size, seq_len), pad_id, dtype=torch.long)
        targets = torch.full((batch_size, seq_len), -1, dtype=torch.long)
        lengths = []
        for r in range(batch_size):
            pos = 0
            lengths.append([])
            while pos < seq_len:
                if carry is None:
                    try:
                        carry = next(documents)
                    except StopIteration:
                        if r == 0 and pos == 0:
                            return
                        break
                ids, mask = carry
                n = min(len(ids), longest + 1)
                if pos > 0 and pos + n - 1 > seq_len:  # does not fit the rest of this row
                    break
                ids_t = torch.tensor(ids[:n])
                tgt = torch.tensor(ids[1:n])
                m = torch.tensor(mask[1:n], dtype=torch.bool)
                tgt = torch.where(m, tgt, torch.full_like(tgt, -1))
                inputs[r, pos:pos + n - 1] = ids_t[:-1]
                targets[r, pos:pos + n - 1] = tgt
                pos += n - 1
                lengths[r].append(n - 1)
                carry = None
                consumed += 1  # counted once placed, so a resume re-reads a document pulled but not placed
            if pos < seq_len:
                lengths[r].append(seq_len - pos)  # the padding: a segment of its own, without targets
        yield inputs, targets, consumed, lengths


def rank_share(lengths: list[int], rank: int, world: int) -> tuple[int, int, tuple[int, int]]:
    """Whole documents of one packed row for one rank: (first position, end position, (first doc, end doc)); the
    row is cut at the document boundaries nearest to its equal slices, each rank at least one document."""
    n = len(lengths)
    if n < world:
        raise NanosealError(f"a step of {n} documents cannot give each of {world} ranks one (attention within "
                            "documents): fewer documents than ranks; use fewer processes")
    starts = [0, *itertools.accumulate(lengths)]  # starts[n]: the row's end
    cuts = [0]
    for r in range(1, world):  # the boundary nearest to r/world of the row, after the last cut, leaving enough
        best = min(range(1, n), key=lambda i: abs(starts[i] - r * starts[n] / world))
        cuts.append(min(max(best, cuts[-1] + 1), n - (world - r)))
    cuts.append(n)
    i, j = cuts[rank], cuts[rank + 1]
    return starts[i], starts[j], (i, j)


def step_files(checkpoint_dir: str, step: int) -> list[str]:
    """The files of one saved step: model, meta, optimizer (rank 0), in the order save_checkpoint writes them."""
    return [os.path.join(checkpoint_dir, name) for name in
            (f"model_{step:06d}.pt", f"meta_{step:06d}.json", f"optim_{step:06d}_rank0.pt")]


def saved_steps(checkpoint_dir: str) -> tuple[list[int], list[int]]:
    """(complete, partial) steps of a checkpoint folder: complete = model, meta and optimizer files all there."""
    if not os.path.isdir(checkpoint_dir):
        return [], []
    steps = set()
    for f in os.listdir(checkpoint_dir):
        m = re.fullmatch(r"(?:model|meta|optim)_(\d+)(?:\.pt|\.json|_rank0\.pt)", f)
        if m:
            steps.add(int(m.group(1)))
    complete = sorted(s for s in steps if all(os.path.exists(f) for f in step_files(checkpoint_dir, s)))
    return complete, sorted(steps - set(complete))


def last_complete_step(checkpoint_dir: str) -> int | None:
    """The last step whose model, meta and optimizer files are all saved (None: no such step)."""
    complete, _ = saved_steps(checkpoint_dir)
    return complete[-1] if complete else None


def remove_partial_steps(checkpoint_dir: str) -> list[int]:
    """Remove what a crash or a failed save left: temp files, and the files of every step after the last complete
    one (cut off mid-save; a step with a meta this loop did not write is refused instead). Returns those steps."""
    complete, partial = saved_steps(checkpoint_dir)
    last = complete[-1] if complete else -1
    cut = [s for s in partial if s > last]
    for s in cut:
        model_path, meta_path, _ = step_files(checkpoint_dir, s)
        if os.path.exists(meta_path) and os.path.exists(model_path):
            try:
                ours = "train_state" in read_json_object(meta_path)
            except NanosealError:
                ours = False
            if not ours:
                raise NanosealError(f"{checkpoint_dir}: step {s} has a model and meta but no optimizer state, and "
                                    "was not written by nanoseal's training loop: use another base dir")
    for s in cut:
        for path in step_files(checkpoint_dir, s):
            if os.path.exists(path):
                os.remove(path)
    for path in glob.glob(os.path.join(checkpoint_dir, ".tmp-*")):
        os.remove(path)
    return cut


def save_interval(max_steps: int, most: int = 100) -> int:
    """Steps between resumable checkpoints: every `most` steps, or 4 times per run when that is more often."""
    return max(1, min(most, max_steps // 4))


def _train_state(ts, where: str) -> tuple[float, int, int]:
    """(elapsed, documents, tokens) of a meta's train_state, checked (a hand-edited meta is refused in one line)."""
    if not isinstance(ts, dict):
        raise NanosealError(f"{where}: train_state must be an object")
    elapsed, docs, tokens = ts.get("elapsed", 0.0), ts.get("documents", 0), ts.get("tokens", 0)
    if type(elapsed) not in (int, float) or not math.isfinite(elapsed) or elapsed < 0:
        raise NanosealError(f"{where}: train_state.elapsed must be a number of seconds >= 0, got {elapsed!r:.40}")
    for name, value in (("documents", docs), ("tokens", tokens)):
        if type(value) is not int or value < 0:
            raise NanosealError(f"{where}: train_state.{name} must be an integer >= 0, got {value!r:.40}")
    return float(elapsed), docs, tokens


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
    last, error = None, None
    if rank == 0:  # with several nodes checkpoint_dir must be shared storage
        try:  # a checkpoint is at most params + ~2x params of optimizer state (fp32)
            ensure_dir(checkpoint_dir, "checkpoint folder", writable=True,
                       need_bytes=3 * sum(p.numel() * p.element_size() for p in model.parameters()))
            cut = remove_partial_steps(checkpoint_dir)
            if cut:
                print0(f"removed the cut-off checkpoint step(s) {cut} in {checkpoint_dir}")
            last = last_complete_step(checkpoint_dir)
        except NanosealError as e:
            error = str(e)
    last, error = dist.broadcast_object((last, error))  # rank 0 decides
    if error:  # rank 0 says why; the other ranks stop quietly with the same status
        raise NanosealError(error) if rank == 0 else SystemExit(2)
    if last is not None:
        state, optim_state, old_meta = load_checkpoint(checkpoint_dir, last, device, load_optimizer=True)
        where = os.path.join(checkpoint_dir, f"meta_{last:06d}.json")
        elapsed, docs_done, tokens_done = _train_state(old_meta.get("train_state", {}), where)
        try:
            model.load_state_dict(state)
            groups = optim_state["optimizers"]
            if len(groups) != len(optimizers):
                raise ValueError(f"{len(groups)} optimizer states for {len(optimizers)} optimizers")
            for opt, s in zip(optimizers, groups):
                opt.load_state_dict(s)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise NanosealError(f"{checkpoint_dir}: step {last} does not fit this model and its optimizers ({first}); "
                                "it was trained with other settings: use another base dir") from None
        step = last
        print0(f"resuming from {checkpoint_dir} step {step} ({docs_done} documents already seen)")
        for i in range(docs_done):  # the document stream is deterministic: skip what was consumed
            try:
                next(documents)
            except StopIteration:
                raise NanosealError(f"{where}: {docs_done} documents were seen, but the stream has only {i}") from None

    dist.broadcast_module(model)  # every rank starts from rank 0's weights (fresh or resumed)

    def save(final: bool):
        if rank != 0:
            return
        m = dict(meta, model_config=model.config.to_dict(), step=step, train_config=asdict(cfg),
                 train_state={"elapsed": elapsed, "documents": docs_done, "tokens": tokens_done, "final": final})
        was_complete = last_complete_step(checkpoint_dir) == step  # the final save can rewrite the last periodic one
        try:
            save_checkpoint(checkpoint_dir, step, model.state_dict(),
                            {"optimizers": [o.state_dict() for o in optimizers]}, m)
        except OSError as e:  # no space, no permission: leave no partial step behind, keep the last complete one
            if not was_complete:
                for path in step_files(checkpoint_dir, step):
                    if os.path.exists(path):
                        os.remove(path)
            kept = last_complete_step(checkpoint_dir)
            raise NanosealError(f"{checkpoint_dir}: cannot save step {step} ({e.strerror or e}); "
                                + (f"step {kept} is kept: free space and rerun to resume from it" if kept is not None
                                   else "nothing was kept: free space and rerun")) from None

    total = cfg.max_steps
    model.train()
    docs_start = docs_done
    if cfg.doc_attention:  # no row boundaries to fill: one row of the step's tokens (padding only at its end)
        batches = pack_rows(documents, 1, cfg.batch_size * cfg.seq_len, pad_id, longest=cfg.seq_len)
    else:
        batches = pack_rows(documents, cfg.batch_size, cfg.seq_len, pad_id)
    loss_ema, t_last, tok_last = None, time.time(), 0
    last_loss = float("nan")
    loss_curve = []
    while step < total and (cfg.max_seconds <= 0 or elapsed < cfg.max_seconds):
        t0 = time.time()
        try:
            inputs, targets, consumed, lengths = next(batches)
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
        kw = {}
        if cfg.doc_attention:  # one row of documents, each attending to itself alone; each rank takes its share
            lens = lengths[0]
            try:
                a, b, docs = rank_share(lens, rank, world)
            except NanosealError:
                if rank:  # every rank sees the same row: rank 0 says why, the others stop quietly
                    raise SystemExit(2) from None
                raise
            x, y = inputs[:, a:b], targets[:, a:b]  # (1, this rank's positions)
            kw["doc_lens"] = [lens[docs[0]:docs[1]]]
        else:
            x, y = inputs[rank::world], targets[rank::world]  # (B / world, T)
        if world == 1:
            with autocast_ctx(device, cfg.dtype):
                loss = model(x, y, **kw)
            loss.backward()
        else:  # this rank's rows; loss normalised by the global batch's tokens, gradients summed over ranks
            n_tokens = max(1, int((targets >= 0).sum()))
            with autocast_ctx(device, cfg.dtype):
                loss_sum = model(x.contiguous(), y.contiguous(), loss_reduction="sum", **kw)
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
