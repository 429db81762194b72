"""Interop with a real peer: transformers' NanoChatForCausalLM on the same weights gives the same logits.

Architectural differences found (documented in README): transformers' NanoChatRMSNorm uses eps=1e-6 by
default while nanochat's F.rms_norm uses the dtype's machine epsilon; we set rms_norm_eps to match.
nanochat stores rotary tables in bf16, nanoseal and transformers in fp32.
"""

import pytest
import torch

from nanoseal.interop import to_transformers

from conftest import make_tiny_model


@pytest.mark.parametrize("n_kv_head", [4, 2])
def test_logits_match_transformers(n_kv_head):
    model = make_tiny_model(n_kv_head=n_kv_head)
    hf = to_transformers(model)
    idx = torch.randint(0, model.config.vocab_size, (2, 48))
    with torch.no_grad():
        ours = model(idx)
        theirs = hf(input_ids=idx).logits
    rel = ((ours - theirs).norm() / theirs.norm()).item()
    assert rel < 1e-4, f"relative error {rel:.2e}"
