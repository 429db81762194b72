"""
Model families, one file each (as LitGPT keeps one model file per family), behind one small interface that the
engine, LoRA, TTT, ReST-EM and the training loop use, so adding a family changes nothing above the model.

    nanochat.py            nanochat's GPT, every architecture version since October 2025 (a flag per component)
    nanochat_versions.py   the versions' table and their detection from a checkpoint's weights
    nanochat_decode.py     nanochat's one-token decoding step with the KV cache, in ~0.6 of the ops
    llama.py               the Llama family (Llama 3.x, SmolLM2, Qwen2/2.5, Mistral without sliding windows), as
                           transformers computes it; loaded from a Hugging Face folder by nanoseal.hf_checkpoint

The interface a family's model class provides:
- `model.config`: sequence_len, vocab_size, n_layer, n_head, n_kv_head, n_embd, arch (head_dim where it is not
  n_embd // n_head), and `to_dict()` (what the checkpoint's meta_*.json stores under model_config)
- `model(idx, targets=None, kv_cache=None, loss_reduction="mean", doc_lens=None, last_only=False)`: logits
  (B, T, vocab), the last position's only with last_only (a prefill), or with targets the loss (ignore_index=-1,
  per token for loss_reduction="none"); doc_lens packs several documents per row, each attending to itself only;
  kv_cache (nanoseal.engine.KVCache: keys/values of n_layer layers with n_kv_head heads of head_dim, plus
  any per-sequence state the family keeps on it) decodes incrementally, equal to full recomputation
- `model.init_weights()` (also fills non-persistent buffers after a meta-device build), `get_device()`,
  `num_params()`, `estimate_flops()`, `rotary_seq_len` (positions the model can address)
- its linear layers are nn.Linear modules (a bias allowed), addressed by path (what LoRA targets match);
  `lora_aliases` (optional): nanochat target names -> the family's module names, so LoRA's default targets fit

    from nanoseal.models import build_model_from_config
    from nanoseal.models.nanochat import GPTConfig
    model = build_model_from_config(GPTConfig(arch="nanochat-2026-03-14", window_pattern="SSSL"))
"""

import torch.nn as nn

from nanoseal.common import NanosealError
from nanoseal.models.llama import ARCHS as LLAMA_ARCHS
from nanoseal.models.llama import Llama
from nanoseal.models.nanochat import GPT
from nanoseal.models.nanochat_versions import ARCHS as NANOCHAT_ARCHS

MODEL_TYPES = (GPT, Llama)  # every family's model class
ARCH_NAMES = tuple(NANOCHAT_ARCHS)  # every nanochat architecture name a config, a preset or --arch may name


def build_model_from_config(config) -> nn.Module:
    """The model class of config.arch (on the current default device; weights not yet initialised)."""
    if config.arch in NANOCHAT_ARCHS:
        return GPT(config)
    if config.arch in LLAMA_ARCHS:
        return Llama(config)
    raise NanosealError(f"unknown architecture {config.arch!r}; supported: {', '.join(ARCH_NAMES + LLAMA_ARCHS)}")
