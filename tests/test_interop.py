"""Interop with a real peer: transformers' NanoChatForCausalLM on the same weights gives the same logits.

Architectural differences found (documented in README): transformers' NanoChatRMSNorm uses eps=1e-6 by
default while nanochat's F.rms_norm uses the dtype's machine epsilon; we set rms_norm_eps to match.
nanochat stores rotary tables in bf16, nanoseal and transformers in fp32.
"""

import pytest
import torch

from conftest import make_tiny_model

transformers = pytest.importorskip("transformers")


def to_transformers(model):
    """Copy a nanoseal GPT into transformers' NanoChatForCausalLM."""
    from transformers import NanoChatConfig, NanoChatForCausalLM

    c = model.config
    hf_config = NanoChatConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=4 * c.n_embd,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
        max_position_embeddings=10 * c.sequence_len, rms_norm_eps=torch.finfo(torch.float32).eps,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, final_logit_softcapping=15.0,
        tie_word_embeddings=False,
    )
    hf = NanoChatForCausalLM(hf_config)
    sd = model.state_dict()
    mapped = {"model.embed_tokens.weight": sd["transformer.wte.weight"], "lm_head.weight": sd["lm_head.weight"]}
    for i in range(c.n_layer):
        p, q = f"transformer.h.{i}.", f"model.layers.{i}."
        for ours, theirs in [("attn.c_q", "self_attn.q_proj"), ("attn.c_k", "self_attn.k_proj"),
                             ("attn.c_v", "self_attn.v_proj"), ("attn.c_proj", "self_attn.o_proj"),
                             ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
            mapped[q + theirs + ".weight"] = sd[p + ours + ".weight"]
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    assert not unexpected, unexpected
    assert all("rotary" in k or "inv_freq" in k for k in missing), missing
    return hf.eval()


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
