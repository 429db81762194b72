"""The sampling engine: greedy with the KV cache equals full recomputation, seeding, stop tokens."""

import torch

from nanoseal.engine import Engine

from conftest import make_tiny_model


def naive_greedy(model, tokens, max_tokens, stop_ids):
    """Recompute the whole sequence for every new token and take the argmax."""
    seq = list(tokens)
    for _ in range(max_tokens):
        with torch.no_grad():
            nxt = int(model(torch.tensor([seq]))[0, -1].argmax())
        if nxt in stop_ids:
            break
        seq.append(nxt)
    return seq


def test_greedy_with_cache_equals_full_recomputation(tokenizer):
    stop_ids = {tokenizer.encode_special("<|assistant_end|>"), tokenizer.get_bos_token_id()}
    for seed in range(3):
        model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), seed=seed)
        prompt = tokenizer.encode("input:\n012\n340\noutput:", prepend="<|bos|>")
        seqs, masks = Engine(model, tokenizer).generate_batch(prompt, num_samples=2, max_tokens=30,
                                                              temperature=0.0)
        ref = naive_greedy(model, prompt, 30, stop_ids)
        assert seqs[0] == ref and seqs[1] == ref
        assert masks[0] == [0] * len(prompt) + [1] * (len(ref) - len(prompt))


def test_sampling_is_seeded_and_top_k_1_is_greedy(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size())
    engine = Engine(model, tokenizer)
    prompt = tokenizer.encode("Hello", prepend="<|bos|>")
    a, _ = engine.generate_batch(prompt, num_samples=4, max_tokens=20, temperature=1.0, seed=1)
    b, _ = engine.generate_batch(prompt, num_samples=4, max_tokens=20, temperature=1.0, seed=1)
    c, _ = engine.generate_batch(prompt, num_samples=4, max_tokens=20, temperature=1.0, seed=2)
    assert a == b
    assert a != c
    assert len({tuple(s) for s in a}) > 1, "independent samples should differ"
    greedy, _ = engine.generate_batch(prompt, num_samples=1, max_tokens=20, temperature=0.0)
    top1, _ = engine.generate_batch(prompt, num_samples=1, max_tokens=20, temperature=1.0, top_k=1, seed=5)
    assert greedy == top1


class StopAfter(torch.nn.Module):
    """Wraps a GPT so that row r emits <|assistant_end|> once it has generated (r + 1) tokens."""

    def __init__(self, model, stop_id, prompt_len):
        super().__init__()
        self.model, self.config, self.stop_id, self.prompt_len = model, model.config, stop_id, prompt_len
        self.rotary_seq_len = model.rotary_seq_len

    def get_device(self):
        return self.model.get_device()

    def forward(self, idx, kv_cache=None):
        logits = self.model(idx, kv_cache=kv_cache).clone()
        generated = kv_cache.get_pos() - self.prompt_len + 1  # tokens sampled once this one is chosen
        for r in range(logits.size(0)):
            if generated >= r + 2:
                logits[r, -1, self.stop_id] = 1e4
        return logits


def test_rows_stop_independently_at_assistant_end(tokenizer):
    stop = tokenizer.encode_special("<|assistant_end|>")
    prompt = tokenizer.encode("Hi", prepend="<|bos|>")
    model = StopAfter(make_tiny_model(vocab_size=tokenizer.get_vocab_size()), stop, len(prompt))
    seqs, _ = Engine(model, tokenizer).generate_batch(prompt, num_samples=3, max_tokens=50, temperature=0.0)
    assert [len(s) - len(prompt) for s in seqs] == [1, 2, 3]
    assert all(stop not in s for s in seqs)
