"""The GPT: parameter counts of the seed's config, shapes, loss, GQA, rotary limits, KV-cache forward."""

import pytest
import torch
import torch.nn.functional as F

from nanoseal.engine import KVCache
from nanoseal.models.nanochat import GPT, GPTConfig

from conftest import make_tiny_model


def test_default_config_parameter_counts():
    with torch.device("meta"):
        model = GPT(GPTConfig())
    assert model.num_params() == 162_201_600  # 162.2M
    assert model.transformer.wte.weight.numel() == 38_633_472  # 38.6M
    assert model.lm_head.weight.numel() == 38_633_472
    per_block = sum(p.numel() for p in model.transformer.h[0].parameters())
    assert per_block == 7_077_888  # 7.08M
    assert all(sum(p.numel() for p in b.parameters()) == per_block for b in model.transformer.h)
    assert not any(getattr(m, "bias", None) is not None for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert model.rotary_seq_len == 10 * 1024


def test_forward_shapes_and_loss():
    model = make_tiny_model()
    idx = torch.randint(0, 320, (3, 17))
    logits = model(idx)
    assert logits.shape == (3, 17, 320)
    assert logits.abs().max() <= 15.0  # soft-capped
    loss = model(idx, idx)
    assert loss.ndim == 0 and torch.isfinite(loss)
    # ignore_index=-1: only unmasked positions count
    targets = torch.full_like(idx, -1)
    targets[1, 5] = 7
    expected = F.cross_entropy(logits[1, 5].float().unsqueeze(0), torch.tensor([7]))
    torch.testing.assert_close(model(idx, targets), expected, rtol=1e-5, atol=1e-6)
    per_token = model(idx, idx, loss_reduction="none")
    assert per_token.shape == (3 * 17,)


def test_fresh_init_is_uniform():
    torch.manual_seed(0)
    model = GPT(GPTConfig(sequence_len=32, vocab_size=100, n_layer=2, n_head=2, n_kv_head=2, n_embd=32))
    model.init_weights()
    idx = torch.randint(0, 100, (2, 8))
    # nanochat zero-inits lm_head, so the first loss is exactly ln(vocab)
    assert abs(model(idx, idx).item() - torch.log(torch.tensor(100.0)).item()) < 1e-5


def test_gqa_equals_repeated_kv_heads():
    gqa = make_tiny_model(n_head=4, n_kv_head=2)
    mha = GPT(GPTConfig(**{**gqa.config.to_dict(), "n_kv_head": 4}))
    mha.init_weights()
    state = gqa.state_dict()
    hd = gqa.config.n_embd // gqa.config.n_head
    for i in range(gqa.config.n_layer):
        for name in ("c_k", "c_v"):
            w = state[f"transformer.h.{i}.attn.{name}.weight"]  # (Hkv*D, C)
            w = w.view(2, hd, -1).repeat_interleave(2, dim=0).reshape(4 * hd, -1)
            state[f"transformer.h.{i}.attn.{name}.weight"] = w
    mha.load_state_dict(state)
    mha.eval()
    idx = torch.randint(0, 320, (2, 12))
    torch.testing.assert_close(gqa(idx), mha(idx), rtol=1e-5, atol=1e-5)


def test_rotary_limit_is_a_clear_error():
    model = make_tiny_model(sequence_len=4)  # rotary cache holds 40 positions
    model(torch.zeros(1, 40, dtype=torch.long))
    with pytest.raises(ValueError, match="exceeds the rotary cache of 40"):
        model(torch.zeros(1, 41, dtype=torch.long))


def test_bf16_autocast_on_cpu_close_to_fp32():
    model = make_tiny_model()
    idx = torch.randint(0, 320, (2, 16))
    ref = model(idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(idx)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.3 * ref.abs().max()


def _cache(model, batch):
    c = model.config
    return KVCache(batch, c.n_kv_head, 8, c.n_embd // c.n_head, c.n_layer)  # small: forces growth


def test_kv_cache_forward_matches_full_forward():
    model = make_tiny_model()
    idx = torch.randint(0, 320, (2, 20))
    full = model(idx)
    cache = _cache(model, 2)
    parts = [model(idx[:, :7], kv_cache=cache)]  # prefill
    parts.append(model(idx[:, 7:12], kv_cache=cache))  # a chunk attending to a prefix
    for t in range(12, 20):  # single-token decode
        parts.append(model(idx[:, t:t + 1], kv_cache=cache))
    assert cache.get_pos() == 20
    torch.testing.assert_close(torch.cat(parts, dim=1), full, rtol=1e-4, atol=1e-5)


def test_kv_cache_prefill_replicates_rows():
    model = make_tiny_model()
    prompt = torch.randint(0, 320, (1, 9))
    one = _cache(model, 1)
    model(prompt, kv_cache=one)
    many = _cache(model, 3)
    many.prefill(one)
    nxt = torch.randint(0, 320, (3, 1))
    out = model(nxt, kv_cache=many)[:, -1]
    for row in range(3):
        ref = model(torch.cat([prompt, nxt[row:row + 1]], dim=1))[:, -1]
        torch.testing.assert_close(out[row:row + 1], ref, rtol=1e-4, atol=1e-5)


def test_softcap_head_fused_equals_plain_ops():
    # chunks that do not divide the rows, a weight with padding rows past the vocabulary
    from nanoseal.models.head import SoftcapCE

    torch.manual_seed(0)
    x = torch.randn(37, 16, dtype=torch.float64, requires_grad=True)
    W = (torch.randn(24, 16, dtype=torch.float64) * 2).requires_grad_()
    t = torch.randint(0, 20, (37,))
    ref = F.cross_entropy(15 * torch.tanh(x @ W[:20].t() / 15), t, reduction="sum")
    gx, gW = torch.autograd.grad(ref, (x, W))
    got = SoftcapCE.apply(x, W, t, 15.0, 20, 8)
    hx, hW = torch.autograd.grad(got * 2, (x, W))  # an upstream gradient other than 1
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(hx, 2 * gx)
    torch.testing.assert_close(hW, 2 * gW)
    assert hW[20:].abs().max() == 0  # the padding rows get no gradient


def test_packed_training_fused_head_matches_float64():
    # fp32 training on packed documents on a CPU takes the fused head; float64 takes the plain ops
    model, model64 = make_tiny_model(vocab_size=300), make_tiny_model(vocab_size=300).double()  # padded lm_head
    idx = torch.randint(0, 300, (1, 40))
    targets = idx.roll(-1, 1)
    targets[0, :5] = -1
    grads = {}
    for name, m in (("fp32", model), ("fp64", model64)):
        m.train()
        for reduction in ("mean", "sum"):
            m.zero_grad()
            loss = m(idx, targets, loss_reduction=reduction, doc_lens=[[12, 20, 8]])
            loss.backward()
            grads[name, reduction] = [loss.detach()] + [p.grad.clone() for p in m.parameters()]
    for reduction in ("mean", "sum"):
        for g32, g64 in zip(grads["fp32", reduction], grads["fp64", reduction]):
            torch.testing.assert_close(g32.double(), g64.double(), rtol=1e-4, atol=1e-5)
