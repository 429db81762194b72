"""
Conversion to real peers, for tests and benchmarks: a nanoseal GPT as transformers' NanoChatForCausalLM.

    hf = to_transformers(model)   # needs the dev extra (transformers)

Differences worth knowing: transformers' NanoChatRMSNorm defaults to eps=1e-6 while nanochat's
F.rms_norm uses the dtype's machine epsilon (set here); nanochat keeps rotary tables in bf16,
transformers and nanoseal in fp32.
"""

import torch

# nanoseal module name -> transformers module name, per block
BLOCK_KEY_MAP = [("attn.c_q", "self_attn.q_proj"), ("attn.c_k", "self_attn.k_proj"),
                 ("attn.c_v", "self_attn.v_proj"), ("attn.c_proj", "self_attn.o_proj"),
                 ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]


def to_transformers(model, attn_implementation: str = "sdpa"):
    """Copy a nanoseal GPT's weights into an equivalent transformers NanoChatForCausalLM (eval mode); it implements
    the October-2025 architecture only, so the later versions are refused (its own converter drops their tensors)."""
    from transformers import NanoChatConfig, NanoChatForCausalLM

    from nanoseal.common import NanosealError

    c = model.config
    if c.arch != "nanochat-2025-10-13":
        raise NanosealError(f"transformers' NanoChatForCausalLM implements nanochat-2025-10-13 only, not {c.arch}")
    hf_config = NanoChatConfig(
        vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=4 * c.n_embd,
        num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.n_kv_head,
        max_position_embeddings=10 * c.sequence_len, rms_norm_eps=torch.finfo(torch.float32).eps,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, final_logit_softcapping=15.0,
        tie_word_embeddings=False, attn_implementation=attn_implementation,
    )
    hf = NanoChatForCausalLM(hf_config)
    sd = model.state_dict()
    mapped = {"model.embed_tokens.weight": sd["transformer.wte.weight"], "lm_head.weight": sd["lm_head.weight"]}
    for i in range(c.n_layer):
        for ours, theirs in BLOCK_KEY_MAP:
            mapped[f"model.layers.{i}.{theirs}.weight"] = sd[f"transformer.h.{i}.{ours}.weight"]
    missing, unexpected = hf.load_state_dict(mapped, strict=False)
    assert not unexpected, f"unexpected transformers keys: {unexpected}"
    assert all("rotary" in k or "inv_freq" in k for k in missing), f"weights left uninitialised: {missing}"
    return hf.eval()
