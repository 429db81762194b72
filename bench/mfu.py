"""
Machine limit: fp32 and bf16 matmul peak of this machine (one large torch.mm), and the FLOP/s that
pretraining and TTT of the tiny preset achieve, as a fraction of it.

FLOP counts (matmul FLOPs of the model's parameters; attention's T^2 terms and elementwise work excluded,
so these are conservative):
  pretraining  6 * N * trained tokens, N = parameters of the blocks and lm_head (not the embedding)
  TTT (LoRA)   what LoRA training must compute: per token 4 * N_blocks (forward + input gradients through the
               frozen linears) + 6 * r * (in + out) per adapted linear (forward, both adapter gradients), and
               4 * n_embd * vocab per position that has a target (lm_head forward + input gradient)
Pretraining runs nanoseal.train.loop.train itself (Muon + AdamW, packed rows, 4 x 1,024 tokens as the tiny
preset); TTT runs nanoseal.seal.ttt.train_adapters on the TTT data of prior self-edits of a demo task.
Each runs with nanoseal's CPU default (fp32) and with bf16 autocast (dtype="bfloat16").

    python -m bench.mfu               # ~1 minute on 2 cores
    python -m bench.mfu --steps 20 --peak-n 4096

Also printed: the peak of a matmul shaped like the model's own (tokens x 128 @ 128 x 512), the ceiling
a 128-wide model meets long before the machine's peak.
"""

import argparse
import contextlib
import io
import tempfile
import time

import torch

from bench.common import bench_tokenizer, demo_tasks, prior_self_edits, random_gpt, standalone, tiny_config
from nanoseal.lora import apply_lora, lora_layers, remove_lora
from nanoseal.seal.ttt import TTTConfig, build_dataset, train_adapters
from nanoseal.train.loop import TrainConfig, train
from nanoseal.train.presets import get_preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def matmul_peak(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Best FLOP/s of torch.mm (m x k) @ (k x n) over ~`seconds` of repeats (after a warm-up)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.mm(a, b)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == float("inf"):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best


def body_params(model) -> int:
    """Parameters of the transformer blocks (the matmuls every token goes through)."""
    return sum(p.numel() for p in model.transformer.h.parameters())


def random_documents(vocab: int, seed: int = 0):
    """An endless stream of random-token documents (ids, mask all 1) of 64..512 tokens."""
    g = torch.Generator().manual_seed(seed)
    while True:
        n = int(torch.randint(64, 513, (1,), generator=g))
        yield torch.randint(0, vocab, (n,), generator=g).tolist(), [1] * n


def pretrain_rate(dtype: str, steps: int, vocab: int) -> dict:
    """nanoseal.train.loop.train on the tiny preset's pretraining batch (4 x 1,024): trained tokens/s and FLOP/s."""
    preset = get_preset("tiny")
    rows, row_len = preset.pretrain_rows or preset.batch_size, preset.sequence_len
    model = random_gpt(tiny_config(vocab))
    model.train()
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        # warm-up run (allocator, first steps) in its own folder, then the measured run from step 0
        train(random_gpt(tiny_config(vocab)), random_documents(vocab, 1),
              TrainConfig(batch_size=rows, seq_len=row_len, max_steps=2, dtype=dtype, log_every=10**9), f"{d}/w", {})
        s = train(model, random_documents(vocab, 2),
                  TrainConfig(batch_size=rows, seq_len=row_len, max_steps=steps, dtype=dtype, log_every=10**9),
                  f"{d}/m", {})
    n = body_params(model) + model.lm_head.weight.numel()
    return {"tokens": s["tokens"], "seconds": s["seconds"], "flops": 6 * n * s["tokens"],
            "what": f"pretraining, {rows} x {row_len} tokens/step, {steps} steps"}


def ttt_rate(dtype: str, n_edits: int, n_max: int) -> dict:
    """nanoseal.seal.ttt.train_adapters (nanoseal's defaults but dtype) on prior self-edits of a demo task."""
    tokenizer = bench_tokenizer()
    model = random_gpt(tiny_config(tokenizer.get_vocab_size()))
    task = demo_tasks(1)[0]
    edits = prior_self_edits(n_edits, seed=1)
    cfg = TTTConfig(n_max=n_max, dtype=dtype)
    datasets = [build_dataset(task, e, tokenizer, cfg, model.config.sequence_len, 0)[0] for e in edits]
    lrs, epochs = [e.learning_rate for e in edits], [e.num_train_epochs for e in edits]
    pad = tokenizer.get_bos_token_id()
    # warm-up: one epoch of the first edit
    apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets), n_adapters=1)
    train_adapters(model, datasets[:1], lrs[:1], [1], cfg, 0, pad)
    remove_lora(model)
    apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets), n_adapters=n_edits)
    t0 = time.perf_counter()
    train_adapters(model, datasets, lrs, epochs, cfg, 0, pad)
    seconds = time.perf_counter() - t0
    lora_per_token = sum(6 * layer.rank * (layer.in_features + layer.out_features)
                         for layer in lora_layers(model).values())
    remove_lora(model)
    tokens = sum((len(ids) - 1) * ep for data, ep in zip(datasets, epochs) for ids, _ in data)
    targets = sum(sum(mask[1:]) * ep for data, ep in zip(datasets, epochs) for _, mask in data)
    c = model.config
    flops = tokens * (4 * body_params(model) + lora_per_token) + targets * 4 * c.n_embd * c.vocab_size
    return {"tokens": tokens, "seconds": seconds, "flops": flops,
            "what": f"TTT, {n_edits} self-edits x n_max {n_max}, LoRA r={cfg.rank} on {len(cfg.targets)} targets"}


def run(steps: int = 12, peak_n: int = 2048, n_edits: int = 3, n_max: int = 16, verbose: bool = True) -> dict:
    """Measure peaks and achieved FLOP/s; print the table; return the ratios and rows."""
    peaks = {name: matmul_peak(dt, peak_n, peak_n, peak_n) for name, dt in DTYPES.items()}
    vocab = bench_tokenizer().get_vocab_size()
    rows = []
    for dtype in DTYPES:
        rows.append({"dtype": dtype, **pretrain_rate(dtype, steps, vocab)})
    for dtype in DTYPES:
        rows.append({"dtype": dtype, **ttt_rate(dtype, n_edits, n_max)})
    for r in rows:
        r["flops_per_s"] = r["flops"] / r["seconds"]
    # measured again at the end, keeping the better one: a busy machine rarely gives a clean window at the start
    peaks = {name: max(peaks[name], matmul_peak(dt, peak_n, peak_n, peak_n)) for name, dt in DTYPES.items()}
    shaped = {name: matmul_peak(dt, 4096, 128, 512, seconds=0.5) for name, dt in DTYPES.items()}
    pre_bf16 = next(r for r in rows if r["what"].startswith("pretraining") and r["dtype"] == "bfloat16")
    ttt_bf16 = next(r for r in rows if r["what"].startswith("TTT") and r["dtype"] == "bfloat16")
    result = {"peaks": peaks, "shaped": shaped, "rows": rows, "peak_n": peak_n,
              "mfu_bf16_pretrain": pre_bf16["flops_per_s"] / peaks["bfloat16"],
              "mfu_bf16_ttt": ttt_bf16["flops_per_s"] / peaks["bfloat16"]}
    if verbose:
        print_table(result)
    return result


def print_table(result: dict) -> None:
    """Peaks and achieved FLOP/s as a table."""
    p, s = result["peaks"], result["shaped"]
    n = result["peak_n"]
    print(f"\nmatmul peak (torch.mm {n} x {n} x {n}, best of ~1 s at the start and at the end): "
          f"fp32 {p['float32'] / 1e9:,.0f} GFLOP/s, bf16 {p['bfloat16'] / 1e9:,.0f} GFLOP/s")
    print(f"a matmul shaped like the tiny model's (4096 x 128 @ 128 x 512): fp32 {s['float32'] / 1e9:,.0f} GFLOP/s "
          f"({100 * s['float32'] / p['float32']:.0f}% of fp32 peak), bf16 {s['bfloat16'] / 1e9:,.0f} GFLOP/s "
          f"({100 * s['bfloat16'] / p['bfloat16']:.0f}% of bf16 peak)")
    print(f"{'workload':<58}{'dtype':>10}{'tokens/s':>10}{'GFLOP/s':>9}{'% fp32 pk':>11}{'% bf16 pk':>11}")
    for r in result["rows"]:
        f = r["flops_per_s"]
        print(f"{r['what']:<58}{r['dtype']:>10}{r['tokens'] / r['seconds']:>10,.0f}{f / 1e9:>9.1f}"
              f"{100 * f / p['float32']:>10.1f}%{100 * f / p['bfloat16']:>10.1f}%")
    for key, label in (("mfu_bf16_pretrain", "pretraining"), ("mfu_bf16_ttt", "TTT")):
        v = result[key]
        verdict = "met" if v >= 0.4 else "NOT met"
        print(f"{key} = {v:.3f} ({label} under bf16 autocast / bf16 matmul peak); goal >= 0.40: {verdict}")
    print("why: a 128-wide model's matmuls are far too small to fill the matrix units (see the shaped matmul "
          "above), and elementwise work (norms, rotary, softcap, softmax, optimizer) is not counted as FLOPs")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--steps", type=int, default=12, help="pretraining steps measured")
    parser.add_argument("--peak-n", type=int, default=2048, help="matrix size of the peak matmul")
    parser.add_argument("--edits", type=int, default=3, help="self-edits trained for the TTT rate")
    parser.add_argument("--n-max", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    standalone(run, args.threads, args.steps, args.peak_n, args.edits, args.n_max)


if __name__ == "__main__":
    main()
