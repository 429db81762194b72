"""The one-token decode step (nanoseal.models.nanochat_decode) computes what the general forward computes: every
nanochat version (windows, GQA, value embeddings, smear), LoRA layers routed per row, weights changed in place
after a step (the concatenated q/k/v weight is rebuilt), and greedy decoding gives the same tokens."""

import pytest
import torch

from nanoseal.engine import KVCache, greedy_batch
from nanoseal.lora import adapter_routing, apply_lora, lora_layers
from nanoseal.models import nanochat_decode
from nanoseal.models.nanochat import GPT, GPTConfig
from nanoseal.models.nanochat_versions import ARCHS


def random_model(arch: str = "nanochat-2025-10-13", n_head: int = 4, n_kv_head: int = 2, seed: int = 0) -> GPT:
    """A small GPT of the version with every weight random (no zero projections), eval mode."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(sequence_len=64, vocab_size=300, n_layer=3, n_head=n_head, n_kv_head=n_kv_head,
                          n_embd=64, arch=arch, window_pattern="SL"))
    model.init_weights()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


def decode_logits(model, idx: torch.Tensor, prefill: int, fast: bool) -> torch.Tensor:
    """Logits of idx (B, T): a prefill, then one token per call through the KV cache (fast step on or off)."""
    c = model.config
    cache = KVCache(idx.size(0), c.n_kv_head, 8, c.n_embd // c.n_head, c.n_layer)  # small: grows
    calls = []
    real = nanochat_decode.decode_one

    def counted(*args):
        calls.append(1)
        return real(*args)

    nanochat_decode.ENABLED, nanochat_decode.decode_one = fast, counted
    try:
        with torch.no_grad():
            parts = [model(idx[:, :prefill], kv_cache=cache)]
            parts += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(prefill, idx.size(1))]
    finally:
        nanochat_decode.ENABLED, nanochat_decode.decode_one = True, real
    assert len(calls) == (idx.size(1) - prefill if fast else 0), "the fast step ran where it should (not)"
    assert cache.get_pos() == idx.size(1)
    return torch.cat(parts, 1)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_fast_step_equals_general_forward_every_version(arch):
    model = random_model(arch)
    idx = torch.randint(0, 300, (3, 100))  # past the short windows (32 of 64) of the windowed versions
    with torch.no_grad():
        full = model(idx)
    fast, slow = decode_logits(model, idx, 40, True), decode_logits(model, idx, 40, False)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_fast_step_without_gqa_and_with_qk_scale():
    for arch in ("nanochat-2025-10-13", "nanochat-2026-03-14"):
        model = random_model(arch, n_head=4, n_kv_head=4, seed=1)
        idx = torch.randint(0, 300, (2, 30))
        torch.testing.assert_close(decode_logits(model, idx, 10, True), decode_logits(model, idx, 10, False),
                                   rtol=1e-5, atol=1e-5)


def test_fast_step_routes_lora_rows_and_sees_weight_changes():
    model = random_model()
    apply_lora(model, rank=4, alpha=8, n_adapters=2)
    with torch.no_grad():
        for layer in lora_layers(model).values():
            layer.lora_B.normal_(0.0, 0.1)
    idx = torch.randint(0, 300, (2, 20))
    with adapter_routing(model, torch.tensor([1, 0])):
        torch.testing.assert_close(decode_logits(model, idx, 12, True), decode_logits(model, idx, 12, False),
                                   rtol=1e-5, atol=1e-5)
    plain = random_model(seed=2)
    first = decode_logits(plain, idx, 12, True)  # builds the concatenated q/k/v weights
    with torch.no_grad():
        plain.transformer.h[0].attn.c_k.weight.mul_(2.0)  # an in-place change, as an optimizer step makes
    changed = decode_logits(plain, idx, 12, True)
    assert not torch.allclose(first, changed)
    torch.testing.assert_close(changed, decode_logits(plain, idx, 12, False), rtol=1e-5, atol=1e-5)


def test_greedy_tokens_equal_with_and_without_the_fast_step():
    model = random_model(seed=3)
    prompts = torch.randint(0, 300, (4, 16)).tolist()
    fast = greedy_batch(model, prompts, [24] * 4, set())
    nanochat_decode.ENABLED = False
    try:
        slow = greedy_batch(model, prompts, [24] * 4, set())
    finally:
        nanochat_decode.ENABLED = True
    assert fast == slow and all(len(row) == 24 for row in fast)


def test_fast_step_without_the_fused_qkv_copy(monkeypatch):
    monkeypatch.setattr(nanochat_decode, "FUSE_QKV_MAX_BYTES", 0)  # as for a large model: three matmuls
    model = random_model(seed=4)
    idx = torch.randint(0, 300, (2, 20))
    torch.testing.assert_close(decode_logits(model, idx, 12, True), decode_logits(model, idx, 12, False),
                               rtol=1e-5, atol=1e-5)
    assert "_decode_qkv" not in model.transformer.h[0].attn.__dict__
