"""Shared fixtures: a tiny GPT config/model and a small real tokenizer trained once per session."""

import pytest
import torch

from nanoseal.models.nanochat import GPT, GPTConfig

CORPUS = [
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "input:\n012\n340\noutput:\n210\n043\n",
    "Self-edit: {\"learning_rate\": 0.0001, \"num_train_epochs\": 2}",
    "Hello, how are you? I am fine, thank you! Ünïcödé ✓ 日本語",
] * 20


def make_tiny_model(vocab_size: int = 320, seed: int = 0, **overrides) -> GPT:
    """A tiny GPT with random (not zero) output layers, so its predictions vary with the input."""
    kwargs = dict(sequence_len=64, vocab_size=vocab_size, n_layer=2, n_head=4, n_kv_head=2, n_embd=64)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**kwargs))
    model.init_weights()
    with torch.no_grad():  # nanochat zero-inits these; randomise so outputs depend on everything
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight") or name == "lm_head.weight":
                p.normal_(0.0, 0.3)
    model.eval()
    return model


@pytest.fixture(scope="session")
def tokenizer():
    """A real BPE tokenizer (rustbpe-trained, nanochat format) with 320 tokens."""
    from nanoseal.tokenizer import Tokenizer

    return Tokenizer.train_from_iterator(iter(CORPUS), vocab_size=320)


@pytest.fixture
def tiny_model():
    """A tiny GQA GPT (2 layers, width 64) matching the tokenizer's vocabulary."""
    return make_tiny_model()
