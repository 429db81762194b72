"""
K adapters at once vs one after another, on real TTT data: K self-edits of one task (default K=15, SEAL's
count) drawn from the SFT prior, so their augmentation flags give a realistic mix of example counts and
lengths, trained by nanoseal.seal.ttt.train_adapters with batched=True (every optimizer step feeds one pass
holding each still-active adapter's rows, routed to its adapter) and batched=False (the same code, one
adapter at a time; nanoseal's CPU default). Both compute the same adapters: the script prints the largest
difference between the two modes' loss curves.

    python -m bench.kbatch                    # K=15, tiny preset shape, CPU
    python -m bench.kbatch --k 8 --n-max 8 --device cuda

bench/lora.py measures the same question on synthetic data over model sizes.
"""

import argparse
import time

import torch

from bench.common import bench_tokenizer, demo_tasks, prior_self_edits, random_gpt, standalone, tiny_config
from nanoseal.common import autodetect_device
from nanoseal.lora import apply_lora, remove_lora
from nanoseal.seal.ttt import TTTConfig, _schedule, build_dataset, train_adapters


def train_mode(model, datasets, lrs, epochs, cfg: TTTConfig, pad: int, batched: bool, seed: int) -> tuple[float, list]:
    """Wall time and loss curves of training len(datasets) fresh adapters in one mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # same adapter init in both modes
        apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets), n_adapters=len(datasets))
    mode_cfg = TTTConfig(**{**cfg.__dict__, "batched": batched})
    if model.get_device().type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    curves = train_adapters(model, datasets, lrs, epochs, mode_cfg, seed, pad)
    if model.get_device().type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    remove_lora(model)
    return seconds, curves


def run(k: int = 15, n_max: int = 16, repeats: int = 1, device: str | None = None, seed: int = 0,
        verbose: bool = True) -> dict:
    """Measure both modes (alternating, best of `repeats`); print the table; return the ratio and details."""
    dev = autodetect_device(device)
    tokenizer = bench_tokenizer()
    model = random_gpt(tiny_config(tokenizer.get_vocab_size())).to(dev)
    task = demo_tasks(1)[0]
    edits = prior_self_edits(k, seed=seed + 2)
    cfg = TTTConfig(n_max=n_max)
    datasets = [build_dataset(task, e, tokenizer, cfg, model.config.sequence_len, seed)[0] for e in edits]
    lrs, epochs = [e.learning_rate for e in edits], [e.num_train_epochs for e in edits]
    pad = tokenizer.get_bos_token_id()
    train_mode(model, datasets[:2], lrs[:2], [1, 1], cfg, pad, True, seed)  # warm-up, untimed
    times = {True: [], False: []}
    curves = {}
    for _ in range(repeats):
        for batched in (False, True):
            t, curves[batched] = train_mode(model, datasets, lrs, epochs, cfg, pad, batched, seed)
            times[batched].append(t)
    t_seq, t_bat = min(times[False]), min(times[True])
    diff = max(abs(a - b) for c1, c2 in zip(curves[False], curves[True]) for a, b in zip(c1, c2))
    steps = [_schedule(len(d), e, cfg.batch_size) for d, e in zip(datasets, epochs)]
    tokens = sum((len(ids) - 1) * ep for d, ep in zip(datasets, epochs) for ids, _ in d)
    lengths = [len(ids) for d in datasets for ids, _ in d]
    result = {"kbatch_vs_seq": t_seq / t_bat, "seconds_seq": t_seq, "seconds_batched": t_bat, "k": k,
              "n_max": n_max, "steps": steps, "tokens": tokens, "diff": diff, "device": str(dev),
              "examples": sum(len(d) for d in datasets), "len_range": (min(lengths), max(lengths)),
              "repeats": repeats}
    if verbose:
        print_table(result)
    return result


def print_table(result: dict) -> None:
    """Both modes as a table."""
    s = result["steps"]
    lo, hi = result["len_range"]
    print(f"\nK={result['k']} self-edits of one demo task on {result['device']}: {result['examples']} TTT examples "
          f"({lo}..{hi} tokens), {min(s)}..{max(s)} optimizer steps per adapter ({sum(s)} in all), "
          f"{result['tokens']:,} trained tokens; best of {result['repeats']}")
    print(f"{'mode':<34}{'seconds':>9}{'tokens/s':>10}{'speedup':>9}")
    for name, t in ((f"one after another ({result['k']} x 1)", result["seconds_seq"]),
                    (f"all at once (1 x K={result['k']})", result["seconds_batched"])):
        print(f"{name:<34}{t:>9.2f}{result['tokens'] / t:>10,.0f}{result['seconds_seq'] / t:>8.2f}x")
    print(f"same training either way: largest loss-curve difference {result['diff']:.1e}")
    print(f"kbatch_vs_seq = {result['kbatch_vs_seq']:.2f}x (sequential time / batched time)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--n-max", type=int, default=16, help="TTT examples per self-edit (tiny preset: 16)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    standalone(run, args.threads, args.k, args.n_max, args.repeats, args.device, args.seed)


if __name__ == "__main__":
    main()
