"""
LoRA training speed, measured in one run on one machine:

1. LoRA vs full fine-tuning: step time and tokens/s of one training step (forward, backward, AdamW)
   on a small-but-realistic GPT (default 6 layers, width 256, sequence 512, batch 4).
2. K adapters of one task (default K=15, SEAL's self-edits per task): trained at once (one batched
   pass per step, rows routed to their adapters, MultiAdapterAdamW) vs one after another (a single
   adapter, torch AdamW). Every adapter gets its own examples (a realistic mix of lengths), epochs and
   learning rate; each adapter's minibatches are the same in both modes, so the two compute the same
   adapters (the script prints the max difference). The batched mode sorts the rows of a step by
   length and packs them into micro-batches under a token budget, so padding does not eat the gain.

    python bench/lora.py                                  # CPU defaults, under 2 minutes on 2 cores
    python bench/lora.py --device cuda --n-layer 12 --n-embd 768 --micro-tokens 16384

The model is randomly initialised and the tokens are random: speed does not depend on them.
"""

import argparse
import math
import os
import random
import statistics
import time

import torch

from nanoseal.common import autocast_ctx, autodetect_device
from nanoseal.lora import (
    MultiAdapterAdamW,
    adapter_optimizer,
    apply_lora,
    cosine_lr,
    lora_layers,
    per_adapter_loss,
    reset_adapter,
)
from nanoseal.models.nanochat import GPT, GPTConfig


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall times are real."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def make_model(config: GPTConfig, device: torch.device, seed: int = 0) -> GPT:
    """A randomly initialised GPT on device (nanochat init, lm_head made non-zero)."""
    torch.manual_seed(seed)
    model = GPT(config).to(device)
    model.init_weights()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.02)
    return model


def timed_step(model, opt, idx, tgt, device, ctx) -> float:
    """Wall time of one training step: forward, backward, optimizer step."""
    sync(device)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    with ctx:
        loss = model(idx, tgt)
    loss.backward()
    opt.step()
    sync(device)
    return time.perf_counter() - t0


def bench_lora_vs_full(args, config, device) -> None:
    """Part 1: one training step, LoRA (rank r on six targets) vs full fine-tuning (AdamW on everything)."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g).to(device)
    tgt = torch.randint(0, config.vocab_size, (args.batch, args.seq), generator=g).to(device)
    ctx = autocast_ctx(device)
    full = make_model(config, device)
    full.train()
    full_opt = torch.optim.AdamW(full.parameters(), lr=1e-5)
    lora = make_model(config, device)
    lora.train()
    params = apply_lora(lora, rank=args.rank, alpha=args.rank)
    lora_opt = adapter_optimizer(params, lr=1e-4)
    t_full, t_lora = [], []
    for i in range(args.steps + 1):  # interleaved, so both see the same machine; step 0 is a warm-up
        tf = timed_step(full, full_opt, idx, tgt, device, ctx)
        tl = timed_step(lora, lora_opt, idx, tgt, device, ctx)
        if i > 0:
            t_full.append(tf)
            t_lora.append(tl)
    t_full, t_lora = statistics.median(t_full), statistics.median(t_lora)
    n_full = sum(p.numel() for p in full.parameters())
    n_lora = sum(p.numel() for p in params)
    n_tok = args.batch * args.seq
    print(f"\n1. one training step, batch {args.batch} x seq {args.seq} = {n_tok} tokens "
          f"(median of {args.steps} interleaved steps)")
    print(f"{'mode':<26}{'trainable':>12}{'step s':>10}{'tokens/s':>12}{'speedup':>10}")
    print(f"{'full fine-tuning (AdamW)':<26}{n_full:>12,}{t_full:>10.3f}{n_tok / t_full:>12.0f}{1.0:>9.2f}x")
    print(f"{f'LoRA r={args.rank}, 6 targets':<26}{n_lora:>12,}{t_lora:>10.3f}{n_tok / t_lora:>12.0f}"
          f"{t_full / t_lora:>9.2f}x")


def make_task(args, vocab_size: int):
    """K adapters' data: examples (input, target) of mixed lengths, epochs, lr, minibatch schedule."""
    rng = random.Random(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    adapters = []
    for _ in range(args.k):
        n = rng.randint(6, 12)  # self-edits differ in how much data they generate
        lengths = [int(rng.lognormvariate(math.log(args.mean_len), 0.5)) for _ in range(n)]
        lengths = [min(args.seq, max(48, L)) for L in lengths]
        examples = []
        for L in lengths:
            seq = torch.randint(0, vocab_size, (L + 1,), generator=g)
            examples.append((seq[:-1], seq[1:]))
        epochs = rng.choice([1, 2, 3])
        schedule = []  # minibatches of example ids; within an epoch sorted by length (a bucketed sampler)
        for _ in range(epochs):
            order = sorted(rng.sample(range(n), n), key=lambda j: lengths[j])
            batches = [order[i : i + args.task_batch] for i in range(0, n, args.task_batch)]
            rng.shuffle(batches)
            schedule += batches
        adapters.append(dict(examples=examples, schedule=schedule, lr=rng.choice([1e-4, 3e-4, 1e-3]),
                             warmup=1))
    return adapters


def pad(rows: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Right-pad (input, target) rows: idx (B, T) pad 0, targets (B, T) pad -1; and B * T."""
    T = max(x.numel() for x, _ in rows)
    idx = torch.zeros(len(rows), T, dtype=torch.long)
    tgt = torch.full((len(rows), T), -1, dtype=torch.long)
    for i, (x, y) in enumerate(rows):
        idx[i, : x.numel()], tgt[i, : y.numel()] = x, y
    return idx, tgt, len(rows) * T


def train_sequential(model, adapters, init_A, args, device, ctx) -> dict:
    """Each adapter alone, one after another: single adapter, torch AdamW, cosine schedule, clipping."""
    params = [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]
    result = dict(finals=[], padded=0, real=0, passes=0, steps=0)
    sync(device)
    t0 = time.perf_counter()
    for k, ad in enumerate(adapters):
        reset_adapter(model, 0)
        with torch.no_grad():
            for layer, A in zip(lora_layers(model).values(), init_A):
                layer.lora_A[0].copy_(A[k])
        opt = torch.optim.AdamW(params, lr=ad["lr"], weight_decay=0.0)
        total = len(ad["schedule"])
        for s, batch in enumerate(ad["schedule"]):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(s, ad["lr"], ad["warmup"], total)
            idx, tgt, padded = pad([ad["examples"][j] for j in batch])
            opt.zero_grad(set_to_none=True)
            with ctx:
                loss = model(idx.to(device), tgt.to(device))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, args.clip)
            opt.step()
            result["padded"] += padded
            result["real"] += int((tgt != -1).sum())
            result["passes"] += 1
            result["steps"] += 1
        result["finals"].append([(layer.lora_A[0].detach().clone(), layer.lora_B[0].detach().clone())
                                 for layer in lora_layers(model).values()])
    sync(device)
    result["seconds"] = time.perf_counter() - t0
    return result


def pack(rows: list, budget: int, pass_cost: int = 128) -> list[list]:
    """Rows sorted by length, split into contiguous micro-batches of <= budget padded tokens, minimising
    padded tokens + pass_cost per pass (dynamic programming over the sorted rows)."""
    rows = sorted(rows, key=lambda r: r[1].numel())
    lengths = [r[1].numel() for r in rows]
    n = len(rows)
    best = [0.0] + [math.inf] * n  # best[j]: cost of packing rows[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j - 1, -1, -1):  # last micro-batch = rows[i:j], padded to lengths[j - 1]
            padded = (j - i) * lengths[j - 1]
            if padded > budget and j - i > 1:
                break
            cost = best[i] + padded + pass_cost
            if cost < best[j]:
                best[j], cut[j] = cost, i
    batches, j = [], n
    while j > 0:
        batches.append(rows[cut[j] : j])
        j = cut[j]
    return batches[::-1]


def train_batched(model, adapters, init_A, args, device, ctx) -> dict:
    """All K adapters at once: one routed pass per micro-batch, MultiAdapterAdamW (per-adapter schedules)."""
    K = len(adapters)
    params = [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]
    with torch.no_grad():
        for layer, A in zip(lora_layers(model).values(), init_A):
            layer.lora_A.copy_(A)
            layer.lora_B.zero_()
    totals = [len(ad["schedule"]) for ad in adapters]
    opt = MultiAdapterAdamW(params, lr=[ad["lr"] for ad in adapters], total_steps=totals,
                            warmup_steps=[ad["warmup"] for ad in adapters], weight_decay=0.0,
                            max_grad_norm=args.clip)
    result = dict(padded=0, real=0, passes=0, steps=0)
    sync(device)
    t0 = time.perf_counter()
    for s in range(max(totals)):
        active = [s < t for t in totals]
        rows = [(k, *adapters[k]["examples"][j]) for k in range(K) if active[k]
                for j in adapters[k]["schedule"][s]]  # (adapter, input, target): step s of every adapter
        counts = torch.zeros(K)  # each adapter's valid tokens this step: its loss denominator
        for k, _x, y in rows:
            counts[k] += y.numel()
        opt.zero_grad(set_to_none=True)
        for micro in pack(rows, args.micro_tokens):
            idx, tgt, padded = pad([(x, y) for _k, x, y in micro])
            route = torch.tensor([k for k, _x, _y in micro])
            with ctx:
                loss, _ = per_adapter_loss(model, idx.to(device), tgt.to(device), route.to(device), K,
                                           counts.to(device))
            loss.backward()
            result["padded"] += padded
            result["real"] += int((tgt != -1).sum())
            result["passes"] += 1
        opt.step(active=active)
        result["steps"] += 1
    sync(device)
    result["seconds"] = time.perf_counter() - t0
    result["finals"] = [[(layer.lora_A[k].detach().clone(), layer.lora_B[k].detach().clone())
                         for layer in lora_layers(model).values()] for k in range(K)]
    return result


def bench_k_at_once(args, config, device) -> None:
    """Part 2: K adapters of one task, at once (routed rows) vs one after another."""
    adapters = make_task(args, config.vocab_size)
    ctx = autocast_ctx(device)
    single = make_model(config, device)
    single.train()
    apply_lora(single, rank=args.rank, alpha=args.rank)
    multi = make_model(config, device)
    multi.train()
    apply_lora(multi, rank=args.rank, alpha=args.rank, n_adapters=args.k)
    init_A = [layer.lora_A.detach().clone() for layer in lora_layers(multi).values()]  # (K, r, in) each
    # warm-up (allocator, kernels) outside the timings
    warm = dict(examples=adapters[0]["examples"], schedule=adapters[0]["schedule"][:1], lr=1e-4, warmup=1)
    train_sequential(single, [warm], [A[:1] for A in init_A], args, device, ctx)
    seq = bat = None
    for _ in range(args.repeats):  # alternate the modes; keep each one's best wall time
        r = train_sequential(single, adapters, init_A, args, device, ctx)
        seq = r if seq is None or r["seconds"] < seq["seconds"] else seq
        r = train_batched(multi, adapters, init_A, args, device, ctx)
        bat = r if bat is None or r["seconds"] < bat["seconds"] else bat
    pairs = [(t1, t2) for k in range(args.k) for l1, l2 in zip(seq["finals"][k], bat["finals"][k])
             for t1, t2 in zip(l1, l2)]  # (A, B) of every layer of every adapter, both modes
    diff = max((t1 - t2).abs().max().item() for t1, t2 in pairs)
    size = max(t1.abs().max().item() for t1, _ in pairs[1::2])  # largest |B| entry
    n_examples = sum(len(ad["examples"]) for ad in adapters)
    epochs = [len(ad["schedule"]) for ad in adapters]
    print(f"\n2. {args.k} adapters of one task: {n_examples} examples (lengths 48..{args.seq}, "
          f"mean ~{args.mean_len}), minibatch {args.task_batch} per adapter, {min(epochs)}..{max(epochs)} "
          f"steps each; batched micro-batches <= {args.micro_tokens} padded tokens; best of {args.repeats}")
    print(f"{'mode':<28}{'seconds':>9}{'opt steps':>11}{'passes':>8}{'real tok':>10}{'padded':>9}"
          f"{'pad %':>7}{'real tok/s':>12}{'speedup':>9}")
    for name, r in (("one after another (K x 1)", seq), (f"all at once (1 x K={args.k})", bat)):
        pad_pct = 100.0 * (1 - r["real"] / r["padded"])
        print(f"{name:<28}{r['seconds']:>9.2f}{r['steps']:>11}{r['passes']:>8}{r['real']:>10,}"
              f"{r['padded']:>9,}{pad_pct:>6.1f}%{r['real'] / r['seconds']:>12.0f}"
              f"{seq['seconds'] / r['seconds']:>8.2f}x")
    print(f"same adapters either way (fp32 rounding only): max |difference| {diff:.2e}, "
          f"largest |B| {size:.2e}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=512,
                        help="sequence length (part 1), longest example (part 2)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per mode in part 1")
    parser.add_argument("--k", type=int, default=15, help="adapters per task in part 2")
    parser.add_argument("--mean-len", type=int, default=200, help="typical example length in part 2")
    parser.add_argument("--task-batch", type=int, default=2, help="minibatch rows per adapter in part 2")
    parser.add_argument("--micro-tokens", type=int, default=None,
                        help="padded-token budget per batched pass (default: 2048 on CPU, 16384 on GPU)")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each mode in part 2 (best time)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = autodetect_device(args.device)
    if args.micro_tokens is None:
        args.micro_tokens = 2048 if device.type == "cpu" else 16384
    config = GPTConfig(sequence_len=args.seq, vocab_size=args.vocab_size, n_layer=args.n_layer,
                       n_head=args.n_head, n_kv_head=args.n_head, n_embd=args.n_embd)
    print(f"model: {args.n_layer} layers, width {args.n_embd}, {args.n_head} heads, vocab {args.vocab_size}; "
          f"LoRA rank {args.rank}; device {device}, {args.threads} threads, torch {torch.__version__}")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    bench_lora_vs_full(args, config, device)
    bench_k_at_once(args, config, device)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average before the run {load0:.1f} on "
          f"{os.cpu_count()} cores (well above 0: other processes shared the machine, timings are noisy)")


if __name__ == "__main__":
    main()
