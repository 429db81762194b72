"""
Greedy decoding speed: nanoseal's KV-cache Engine vs recomputing the whole sequence every token, vs
transformers' NanoChatForCausalLM.generate on the same weights (dev extra). One run, one machine.

    python -m bench.decode                      # 6 layers x 256, CPU
    python -m bench.decode --n-layer 4 --n-embd 128 --vocab-size 1024 --batch 8   # the tiny preset, batched
    python -m bench.decode --n-layer 12 --n-embd 768 --batch 4 --new-tokens 64

Prints tokens/s of each and the ratios. The model is randomly initialised (speed does not depend on
the weights); every path decodes exactly --new-tokens tokens (no early stop).
"""

import argparse
import time

import torch

from nanoseal.engine import KVCache, prefill_logits, sample_next_token
from nanoseal.models.nanochat import GPT, GPTConfig


@torch.inference_mode()
def decode_cached(model, prompt, new_tokens):
    """Prefill once, then one token per step through the KV cache (the Engine's inner loop)."""
    c = model.config
    cache = KVCache(prompt.size(0), c.n_kv_head, prompt.size(1) + new_tokens, c.n_embd // c.n_head, c.n_layer)
    logits = prefill_logits(model, prompt, cache)
    out = []
    for _ in range(new_tokens):
        nxt = sample_next_token(logits, None, temperature=0.0)
        out.append(nxt)
        logits = model(nxt, kv_cache=cache)[:, -1]
    return torch.cat(out, 1)


@torch.inference_mode()
def decode_nocache(model, prompt, new_tokens):
    """Recompute the full sequence for every new token."""
    seq = prompt
    for _ in range(new_tokens):
        nxt = model(seq)[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    return seq[:, prompt.size(1):]


@torch.inference_mode()
def decode_transformers(hf, prompt, new_tokens):
    """transformers' generate, greedy, fixed length."""
    out = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=new_tokens,
                      min_new_tokens=new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
    return out[:, prompt.size(1):]


def timeit(fn, repeats):
    """Best wall time of `repeats` runs (after one warm-up) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run(n_layer: int = 6, n_embd: int = 256, n_head: int = 4, vocab_size: int = 512, batch: int = 1,
        prompt_len: int = 256, new_tokens: int = 128, repeats: int = 3, verbose: bool = True) -> dict:
    """Time the three decoders on one random model; print the table; return tokens/s and the ratios."""
    torch.manual_seed(0)
    config = GPTConfig(sequence_len=1024, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                       n_kv_head=n_head, n_embd=n_embd)
    model = GPT(config)
    model.init_weights()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.02)
    model.eval()
    prompt = torch.randint(0, vocab_size, (batch, prompt_len))
    n = batch * new_tokens
    rows = []
    t_cache, out_cache = timeit(lambda: decode_cached(model, prompt, new_tokens), repeats)
    rows.append(("nanoseal KV cache", t_cache))
    t_nc, out_nc = timeit(lambda: decode_nocache(model, prompt, new_tokens), max(1, repeats - 2))
    rows.append(("nanoseal no cache", t_nc))
    agree = torch.equal(out_cache, out_nc)
    t_hf = agree_hf = None
    try:
        from nanoseal.interop import to_transformers
        hf = to_transformers(model)
        t_hf, out_hf = timeit(lambda: decode_transformers(hf, prompt, new_tokens), repeats)
        rows.append(("transformers generate", t_hf))
        agree_hf = (out_cache == out_hf).float().mean().item()
    except ImportError:
        pass
    result = {"tokens_per_s": {name: n / t for name, t in rows}, "cache_vs_nocache": t_nc / t_cache,
              "decode_vs_hf": None if t_hf is None else t_hf / t_cache, "agree_nocache": agree,
              "agree_hf": agree_hf, "params": model.num_params()}
    if verbose:
        print(f"\ngreedy decoding: {model.num_params() / 1e6:.2f}M params ({n_layer} layers, width {n_embd}, "
              f"vocab {vocab_size}), batch {batch}, prompt {prompt_len}, {new_tokens} new tokens, best of {repeats}")
        print(f"{'path':<24}{'seconds':>10}{'tokens/s':>12}{'time / cache':>14}")
        for name, t in rows:
            print(f"{name:<24}{t:>10.3f}{n / t:>12.1f}{t / t_cache:>13.2f}x")
        print(f"greedy outputs identical with/without cache: {agree}"
              + (f"; token agreement with transformers: {agree_hf:.3f}" if agree_hf is not None else
                 "; transformers not installed (bench extra)"))
        if result["decode_vs_hf"] is not None:
            v = result["decode_vs_hf"]
            print(f"decode_vs_hf = {v:.2f}x (KV-cache tokens/s / transformers generate tokens/s); goal >= 2x: "
                  f"{'met' if v >= 2 else 'NOT met'}")
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-layer", type=int, default=6)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{args.threads} threads, torch {torch.__version__}")
    run(args.n_layer, args.n_embd, args.n_head, args.vocab_size, args.batch, args.prompt_len, args.new_tokens,
        args.repeats)


if __name__ == "__main__":
    main()
