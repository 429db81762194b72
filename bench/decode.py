"""
Greedy decoding speed: nanoseal's KV-cache decoding (with its one-token step, nanoseal.models.nanochat_decode, and
with the general forward) vs recomputing the whole sequence every token, vs transformers'
NanoChatForCausalLM.generate on the same weights (bench extra). One run, one machine.

    python -m bench.decode                      # 6 layers x 256, CPU
    python -m bench.decode --n-layer 4 --n-embd 128 --vocab-size 1024 --batch 8   # the tiny preset, batched
    python -m bench.decode --n-layer 12 --n-embd 768 --batch 4 --new-tokens 64

Prints tokens/s of each and the ratios. The model is randomly initialised (speed does not depend on the
weights); every path decodes exactly --new-tokens tokens (no early stop), each computing the logits it reads
(the prefill gives the first token; no forward after the last one, as generate). The paths run interleaved,
one round after another (after one warm-up round), and each path's median over the rounds is what is compared,
so a change in the machine's load hits every path alike.
"""

import argparse
import statistics
import time

import torch

from bench.common import standalone
from nanoseal.engine import KVCache, prefill_logits, sample_next_token
from nanoseal.models import nanochat_decode
from nanoseal.models.nanochat import GPT, GPTConfig


@torch.inference_mode()
def decode_cached(model, prompt, new_tokens):
    """Prefill once, then one token per step through the KV cache (the Engine's inner loop)."""
    c = model.config
    cache = KVCache(prompt.size(0), c.n_kv_head, prompt.size(1) + new_tokens, c.n_embd // c.n_head, c.n_layer)
    logits = prefill_logits(model, prompt, cache)
    out = []
    for i in range(new_tokens):
        nxt = sample_next_token(logits, None, temperature=0.0)
        out.append(nxt)
        if i < new_tokens - 1:
            logits = model(nxt, kv_cache=cache)[:, -1]
    return torch.cat(out, 1)


def decode_general(model, prompt, new_tokens):
    """decode_cached with the one-token step turned off: every step runs the general forward."""
    nanochat_decode.ENABLED = False
    try:
        return decode_cached(model, prompt, new_tokens)
    finally:
        nanochat_decode.ENABLED = True


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


def interleaved(paths: dict, rounds: int, slow: set) -> tuple[dict, dict]:
    """Run every path once (warm-up), then `rounds` rounds of each path in turn (paths in `slow`: one round);
    ({name: median seconds}, {name: last output})."""
    outputs = {name: fn() for name, fn in paths.items()}
    times = {name: [] for name in paths}
    for r in range(rounds):
        for name, fn in paths.items():
            if name in slow and r > 0:
                continue
            t0 = time.perf_counter()
            outputs[name] = fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, outputs


def run(n_layer: int = 6, n_embd: int = 256, n_head: int = 4, vocab_size: int = 512, batch: int = 1,
        prompt_len: int = 256, new_tokens: int = 128, repeats: int = 3, verbose: bool = True,
        nocache: bool = True) -> dict:
    """Time the decoders on one random model (nocache=False: not the no-cache path, the slowest by far); print the
    table; return tokens/s and the ratios."""
    torch.manual_seed(0)
    config = GPTConfig(sequence_len=1024, vocab_size=vocab_size, n_layer=n_layer, n_head=n_head,
                       n_kv_head=n_head, n_embd=n_embd)
    model = GPT(config)
    model.init_weights()
    with torch.no_grad():
        model.lm_head.weight.normal_(0, 0.02)
    model.eval()
    prompt = torch.randint(0, vocab_size, (batch, prompt_len))
    paths = {"nanoseal KV cache": lambda: decode_cached(model, prompt, new_tokens),
             "KV cache, general forward": lambda: decode_general(model, prompt, new_tokens)}
    if nocache:
        paths["nanoseal no cache"] = lambda: decode_nocache(model, prompt, new_tokens)
    try:
        from nanoseal.interop import to_transformers
        hf = to_transformers(model)
        paths["transformers generate"] = lambda: decode_transformers(hf, prompt, new_tokens)
    except ImportError:
        hf = None
    times, outs = interleaved(paths, repeats, slow={"nanoseal no cache"})
    n = batch * new_tokens
    t_cache = times["nanoseal KV cache"]
    agree = torch.equal(outs["nanoseal KV cache"], outs["nanoseal no cache"]) if nocache else None
    agree_general = torch.equal(outs["nanoseal KV cache"], outs["KV cache, general forward"])
    t_hf = times.get("transformers generate")
    ours = outs["nanoseal KV cache"]
    agree_hf = None if hf is None else (ours == outs["transformers generate"]).float().mean().item()
    result = {"tokens_per_s": {name: n / t for name, t in times.items()},
              "cache_vs_nocache": times["nanoseal no cache"] / t_cache if nocache else None,
              "step_vs_general": times["KV cache, general forward"] / t_cache,
              "decode_vs_hf": None if t_hf is None else t_hf / t_cache, "agree_nocache": agree,
              "agree_general": agree_general, "agree_hf": agree_hf, "params": model.num_params(), "batch": batch}
    if verbose:
        print(f"\ngreedy decoding: {model.num_params() / 1e6:.2f}M params ({n_layer} layers, width {n_embd}, "
              f"vocab {vocab_size}), batch {batch}, prompt {prompt_len}, {new_tokens} new tokens, median of "
              f"{repeats} interleaved rounds" + (" (no cache: 1)" if nocache else ", no-cache path not run"))
        print(f"{'path':<28}{'seconds':>10}{'tokens/s':>12}{'time / cache':>14}")
        for name, t in times.items():
            print(f"{name:<28}{t:>10.3f}{n / t:>12.1f}{t / t_cache:>13.2f}x")
        print(f"greedy outputs identical: with/without cache {'not run' if agree is None else agree}, "
              f"one-token step/general forward {agree_general}"
              + (f"; token agreement with transformers: {agree_hf:.3f}" if agree_hf is not None else
                 "; transformers not installed (bench extra)"))
        if result["decode_vs_hf"] is not None:
            v = result["decode_vs_hf"]
            print(f"decode_vs_hf (batch {batch}) = {v:.2f}x (KV-cache tokens/s / transformers generate tokens/s); "
                  f"goal >= 2x: {'met' if v >= 2 else 'NOT met'}")
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
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    standalone(run, args.threads, args.n_layer, args.n_embd, args.n_head, args.vocab_size, args.batch,
               args.prompt_len, args.new_tokens, args.repeats)


if __name__ == "__main__":
    main()
