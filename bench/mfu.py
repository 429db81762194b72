"""
Machine limit: the fp32 `torch.mm` peak of this machine, measured in the same run, and the FLOP/s that
pretraining and TTT achieve as a fraction of it (mfu_fp32), for the tiny preset (several steps of the real loops)
and for a d12-shaped model (nanochat's 12 layers x 768, vocab 65,536; one step).

FLOP counts (matmul FLOPs of the model's parameters; attention's T^2 terms and elementwise work excluded,
so these are conservative):
  pretraining  6 * N * trained tokens, N = parameters of the blocks and lm_head (not the embedding); also shown
               with attention counted as nanochat's estimate_flops counts it (+ 12 * layers * heads * head_dim *
               row length per token, the full T x T, not half for the causal mask): at the tiny preset's 1,024-token
               rows attention is more than half of that count
  TTT (LoRA)   what LoRA training must compute: per token 4 * N_blocks (forward + input gradients through the
               frozen linears) + 6 * r * (in + out) per adapted linear (forward, both adapter gradients), and
               4 * n_embd * vocab per position that has a target (lm_head forward + input gradient)
Tiny preset: pretraining runs nanoseal.train.loop.train itself (Muon + AdamW, packed rows, 4 x 1,024 tokens as
the tiny preset, optimizer included), as the preset trains (each document attends to itself alone, a step one row
of 4,096 positions of whole documents) and again with `--no-doc-attention` (4 rows of 1,024 attending across
documents, as the shipped policy was trained before); TTT runs
nanoseal.seal.ttt.train_adapters on the TTT data of prior self-edits of a demo task. d12 shape: pretraining is one
forward + backward of one row (the optimizer, which real d12 training spreads over ~0.5M tokens a step, is left
out), TTT one train_adapters step (batch 2) on the same demo task's TTT data; each after a short warm-up step.

bf16: only where the CPU has native bf16 (bench.common.bf16_native: avx512_bf16 or amx_bf16, and a bf16 matmul
faster than an fp32 one here) are the tiny preset's rows also run under bf16 autocast, with the bf16 peak.
Elsewhere they are skipped and the table says why: without native bf16 a bf16 matmul runs 10-100x slower than
fp32 (minutes of benchmark that tell nothing new).

    python -m bench.mfu               # ~1 minute on 2 cores
    python -m bench.mfu --steps 20 --peak-n 4096 --d12-tokens 2048

Also printed: the peak of a matmul shaped like the tiny model's own (tokens x 128 @ 128 x 512), the ceiling
a 128-wide model meets long before the machine's peak.
"""

import argparse
import contextlib
import io
import tempfile
import time

import torch

from bench.common import (
    bench_tokenizer,
    bf16_native,
    demo_tasks,
    matmul_rate,
    prior_self_edits,
    random_gpt,
    standalone,
    tiny_config,
)
from nanoseal.lora import apply_lora, lora_layers, remove_lora
from nanoseal.models.nanochat import GPTConfig
from nanoseal.seal.ttt import TTTConfig, build_dataset, train_adapters
from nanoseal.train.loop import TrainConfig, train
from nanoseal.train.presets import get_preset

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
GOALS = {"mfu_fp32_pretrain": 0.35, "mfu_fp32_ttt": 0.25}


def d12_config() -> GPTConfig:
    """nanochat's d12 shape: 12 layers x 768 (6 heads of 128), vocab 65,536, 2,048 context."""
    return GPTConfig(sequence_len=2048, vocab_size=65536, n_layer=12, n_head=6, n_kv_head=6, n_embd=768)


def body_params(model) -> int:
    """Parameters of the transformer blocks (the matmuls every token goes through)."""
    return sum(p.numel() for p in model.transformer.h.parameters())


def random_documents(vocab: int, seed: int = 0):
    """An endless stream of random-token documents (ids, mask all 1) of 64..512 tokens."""
    g = torch.Generator().manual_seed(seed)
    while True:
        n = int(torch.randint(64, 513, (1,), generator=g))
        yield torch.randint(0, vocab, (n,), generator=g).tolist(), [1] * n


def pretrain_rate(dtype: str, steps: int, vocab: int, doc_attention: bool | None = None) -> dict:
    """nanoseal.train.loop.train on the tiny preset's pretraining batch (4 x 1,024 positions): trained tokens/s and
    FLOP/s; doc_attention (default: the preset's, on) packs a step as one row of whole documents, each attending to
    itself alone; off, 4 rows of 1,024 attending across documents (`--no-doc-attention`); FLOPs counted the same."""
    preset = get_preset("tiny")
    doc_attention = preset.doc_attention if doc_attention is None else doc_attention
    rows, row_len = preset.pretrain_rows or preset.batch_size, preset.sequence_len
    model = random_gpt(tiny_config(vocab))
    model.train()
    cfg = dict(batch_size=rows, seq_len=row_len, dtype=dtype, log_every=10**9, doc_attention=doc_attention)
    with tempfile.TemporaryDirectory() as d, contextlib.redirect_stdout(io.StringIO()):
        # warm-up run (allocator, first steps) in its own folder, then the measured run from step 0
        train(random_gpt(tiny_config(vocab)), random_documents(vocab, 1), TrainConfig(max_steps=2, **cfg), f"{d}/w", {})
        s = train(model, random_documents(vocab, 2), TrainConfig(max_steps=steps, **cfg), f"{d}/m", {})
    n = body_params(model) + model.lm_head.weight.numel()
    return {"tokens": s["tokens"], "seconds": s["seconds"], "flops": 6 * n * s["tokens"], "model": "tiny",
            "doc_attention": doc_attention,
            # nanochat's attention count assumes attention over the whole row: only the whole-row row's
            **({} if doc_attention else {"attn_flops": attention_flops(model.config, row_len) * s["tokens"]}),
            "what": (f"pretraining, 1 x {rows * row_len} tokens/step (documents), {steps} steps" if doc_attention
                     else f"pretraining, {rows} x {row_len} tokens/step, {steps} steps, --no-doc-attention")}


def attention_flops(config: GPTConfig, row_len: int) -> int:
    """Attention FLOPs per trained token as nanochat's estimate_flops counts them: 12 * layers * heads * head_dim *
    row length (QK^T and AV, forward + backward, over the full row: the causal mask's half is not taken off)."""
    return 12 * config.n_layer * config.n_head * (config.n_embd // config.n_head) * row_len


def ttt_flops(model, stats: dict) -> float:
    """FLOPs LoRA training must compute for train_adapters' stats (tokens, targets), see the top."""
    lora_per_token = sum(6 * layer.rank * (layer.in_features + layer.out_features)
                         for layer in lora_layers(model).values())
    c = model.config
    return stats["tokens"] * (4 * body_params(model) + lora_per_token) + stats["targets"] * 4 * c.n_embd * c.vocab_size


def timed_ttt(model, datasets: list, lrs: list, epochs: list, cfg: TTTConfig, pad: int) -> tuple[float, float, int]:
    """Fresh adapters (one per dataset) trained by train_adapters after a one-example warm-up:
    (seconds, FLOPs, trained tokens)."""
    apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets), n_adapters=1)
    train_adapters(model, [datasets[0][:1]], lrs[:1], [1], cfg, 0, pad)
    remove_lora(model)
    apply_lora(model, rank=cfg.rank, alpha=cfg.alpha, targets=list(cfg.targets), n_adapters=len(datasets))
    stats: dict = {}
    t0 = time.perf_counter()
    train_adapters(model, datasets, lrs, epochs, cfg, 0, pad, stats=stats)
    seconds = time.perf_counter() - t0
    flops = ttt_flops(model, stats)
    remove_lora(model)
    return seconds, flops, stats["tokens"]


def ttt_data(n_edits: int, n_max: int, dtype: str, max_len: int) -> tuple:
    """TTT datasets of n_edits prior self-edits of one demo task: (datasets, lrs, epochs, cfg, pad id)."""
    tokenizer = bench_tokenizer()
    task = demo_tasks(1)[0]
    edits = prior_self_edits(n_edits, seed=1)
    cfg = TTTConfig(n_max=n_max, dtype=dtype)
    datasets = [build_dataset(task, e, tokenizer, cfg, max_len, 0)[0] for e in edits]
    return (datasets, [e.learning_rate for e in edits], [e.num_train_epochs for e in edits], cfg,
            tokenizer.get_bos_token_id())


def ttt_rate(dtype: str, n_edits: int, n_max: int) -> dict:
    """nanoseal.seal.ttt.train_adapters (nanoseal's defaults but dtype) on prior self-edits of a demo task."""
    model = random_gpt(tiny_config(bench_tokenizer().get_vocab_size()))
    datasets, lrs, epochs, cfg, pad = ttt_data(n_edits, n_max, dtype, model.config.sequence_len)
    seconds, flops, tokens = timed_ttt(model, datasets, lrs, epochs, cfg, pad)
    return {"tokens": tokens, "seconds": seconds, "flops": flops, "model": "tiny",
            "what": f"TTT, {n_edits} self-edits x n_max {n_max}, LoRA r={cfg.rank} on {len(cfg.targets)} targets"}


def d12_rates(tokens: int) -> list[dict]:
    """One pretraining forward + backward of `tokens` random tokens and one TTT step (batch 2) on a d12-shaped
    random model, fp32, each after a short warm-up step."""
    model = random_gpt(d12_config())
    n = body_params(model) + model.lm_head.weight.numel()
    model.train()
    g = torch.Generator().manual_seed(0)
    rows = []
    for warm in (True, False):
        T = 64 if warm else tokens
        ids = torch.randint(0, model.config.vocab_size, (1, T + 1), generator=g)
        t0 = time.perf_counter()
        model(ids[:, :-1], ids[:, 1:]).backward()
        seconds = time.perf_counter() - t0
        model.zero_grad(set_to_none=True)
    rows.append({"tokens": tokens, "seconds": seconds, "flops": 6 * n * tokens, "model": "d12",
                 "attn_flops": attention_flops(model.config, tokens) * tokens,
                 "what": f"pretraining, 1 x {tokens} tokens, one forward + backward"})
    model.requires_grad_(False)
    datasets, lrs, _, cfg, pad = ttt_data(1, 3, "float32", model.config.sequence_len)
    seconds, flops, tok = timed_ttt(model, [datasets[0][:2]], lrs, [1], cfg, pad)
    rows.append({"tokens": tok, "seconds": seconds, "flops": flops, "model": "d12",
                 "what": f"TTT, one step of 2 examples, LoRA r={cfg.rank} on {len(cfg.targets)} targets"})
    return rows


def run(steps: int = 12, peak_n: int = 2048, n_edits: int = 3, n_max: int = 16, d12_tokens: int = 1024,
        verbose: bool = True) -> dict:
    """Measure the peak and achieved FLOP/s; print the table; return the ratios and rows."""
    native, bf16_why = bf16_native()
    dtypes = {name: dt for name, dt in DTYPES.items() if name == "float32" or native}
    peaks = {name: matmul_rate(dt, peak_n, peak_n, peak_n) for name, dt in dtypes.items()}
    vocab = bench_tokenizer().get_vocab_size()
    rows = [{"dtype": dtype, **pretrain_rate(dtype, steps, vocab)} for dtype in dtypes]  # as the preset trains
    rows.append({"dtype": "float32", **pretrain_rate("float32", steps, vocab, doc_attention=False)})
    rows += [{"dtype": dtype, **ttt_rate(dtype, n_edits, n_max)} for dtype in dtypes]
    rows += [{"dtype": "float32", **r} for r in d12_rates(d12_tokens)]
    for r in rows:
        r["flops_per_s"] = r["flops"] / r["seconds"]
        if "attn_flops" in r:
            r["flops_per_s_attn"] = (r["flops"] + r["attn_flops"]) / r["seconds"]
    # measured again at the end, keeping the better one: a busy machine rarely gives a clean window at the start
    peaks = {name: max(peaks[name], matmul_rate(dt, peak_n, peak_n, peak_n)) for name, dt in dtypes.items()}
    shaped = {name: matmul_rate(dt, 4096, 128, 512, seconds=0.5) for name, dt in dtypes.items()}
    pre, ttt = (next(r for r in rows if r["model"] == "tiny" and r["what"].startswith(kind) and r["dtype"] == "float32")
                for kind in ("pretraining", "TTT"))  # pretraining: the preset's (first) row
    whole = next(r for r in rows if r["what"].endswith("--no-doc-attention"))
    result = {"peaks": peaks, "shaped": shaped, "rows": rows, "peak_n": peak_n, "bf16_native": native,
              "bf16_why": bf16_why, "mfu_fp32_pretrain": pre["flops_per_s"] / peaks["float32"],
              "mfu_fp32_ttt": ttt["flops_per_s"] / peaks["float32"],
              "mfu_fp32_pretrain_attn": whole["flops_per_s_attn"] / peaks["float32"],
              "pretrain_tok_s": pre["tokens"] / pre["seconds"],
              "doc_attention_speedup": (pre["tokens"] / pre["seconds"]) / (whole["tokens"] / whole["seconds"])}
    if verbose:
        print_table(result)
    return result


def print_table(result: dict) -> None:
    """Peaks and achieved FLOP/s as a table."""
    p, s, n = result["peaks"], result["shaped"], result["peak_n"]
    bf16 = "bfloat16" in p
    print(f"\nmatmul peak (torch.mm {n} x {n} x {n}, best of ~1 s at the start and at the end): "
          f"fp32 {p['float32'] / 1e9:,.0f} GFLOP/s" + (f", bf16 {p['bfloat16'] / 1e9:,.0f} GFLOP/s" if bf16 else ""))
    print(f"a matmul shaped like the tiny model's (4096 x 128 @ 128 x 512): fp32 {s['float32'] / 1e9:,.0f} GFLOP/s "
          f"({100 * s['float32'] / p['float32']:.0f}% of fp32 peak)"
          + (f", bf16 {s['bfloat16'] / 1e9:,.0f} GFLOP/s ({100 * s['bfloat16'] / p['bfloat16']:.0f}% of bf16 peak)"
             if bf16 else ""))
    print(f"bf16 autocast rows: {'run' if bf16 else 'SKIPPED'}: {result['bf16_why']}")
    print(f"{'model':<6}{'workload':<58}{'dtype':>10}{'tokens/s':>10}{'GFLOP/s':>9}{'% fp32 pk':>11}"
          + (f"{'% bf16 pk':>11}" if bf16 else "") + f"{'+attn':>8}")
    for r in result["rows"]:
        f = r["flops_per_s"]
        fa = r.get("flops_per_s_attn")
        pk = p["bfloat16" if bf16 and r["dtype"] == "bfloat16" else "float32"]
        print(f"{r['model']:<6}{r['what']:<58}{r['dtype']:>10}{r['tokens'] / r['seconds']:>10,.0f}{f / 1e9:>9.1f}"
              f"{100 * f / p['float32']:>10.1f}%" + (f"{100 * f / p['bfloat16']:>10.1f}%" if bf16 else "")
              + (f"{100 * fa / pk:>7.1f}%" if fa is not None else f"{'-':>8}"))
    print("+attn: whole-row pretraining with attention counted as nanochat's estimate_flops does (the full T x T; "
          "% of the peak of the row's dtype; not for the documents row, which attends within each document)")
    for key, label in (("mfu_fp32_pretrain", "tiny pretraining"), ("mfu_fp32_ttt", "tiny TTT")):
        v, goal = result[key], GOALS[key]
        print(f"{key} = {v:.3f} ({label}, fp32, / fp32 matmul peak); goal >= {goal:.2f}: "
              f"{'met' if v >= goal else 'NOT met'}")
    print(f"mfu_fp32_pretrain_attn = {result['mfu_fp32_pretrain_attn']:.3f} (tiny pretraining across the whole row, "
          f"--no-doc-attention, fp32, attention counted as nanochat counts it; not the goal's count)")
    print(f"pretrain_tok_s = {result['pretrain_tok_s']:,.0f} (tiny pretraining as the preset trains, fp32, trained "
          "tokens/s)")
    print(f"attention within documents: {result['doc_attention_speedup']:.2f}x the tokens/s of --no-doc-attention "
          "(whole rows, as the shipped policy was trained before 2026-12-02's sixth entry; these random documents are "
          "64-512 tokens, the preset's own ~150: dev/LOG.md)")
    print("why below the peak: a 128-wide model's matmuls are small (see the shaped matmul above), and elementwise "
          "work (norms, rotary, softcap, softmax, optimizer) is not counted as FLOPs; the d12 rows show a wider model")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--steps", type=int, default=12, help="tiny pretraining steps measured")
    parser.add_argument("--peak-n", type=int, default=2048, help="matrix size of the peak matmul")
    parser.add_argument("--edits", type=int, default=3, help="self-edits trained for the tiny TTT rate")
    parser.add_argument("--n-max", type=int, default=16)
    parser.add_argument("--d12-tokens", type=int, default=1024, help="tokens of the d12 pretraining step")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    standalone(run, args.threads, args.steps, args.peak_n, args.edits, args.n_max, args.d12_tokens)


if __name__ == "__main__":
    main()
