"""
LoRA for nanoseal's models (every nanochat version): single and K-stacked adapters, attach/detach, merge/unmerge,
routing of batch rows to adapters, a multi-adapter AdamW, and PEFT-compatible adapter files. One module per
concept; every public name is importable from nanoseal.lora.

    layer.py    LoRALinear, target matching, apply/remove, merge/unmerge, reset
    routing.py  row -> adapter routing, running the base model, the per-adapter loss
    optim.py    AdamW for one adapter, MultiAdapterAdamW for K at once (each as if alone), cosine_lr
    files.py    PEFT-format adapter folders (save/load, checks), the base model's fingerprint
    info.py     `nanoseal lora-info`: parameter counts and memory

    params = apply_lora(model, rank=16, alpha=16, targets=["c_q", "c_v", "c_fc", "mlp.c_proj"])
    opt = adapter_optimizer(params, lr=1e-4)
    loss = model(idx, targets); loss.backward(); opt.step()
    save_adapter(model, "out/adapter", metadata={"task": "0a1b2c3d"})
    load_adapter(plain_model, "out/adapter")          # applies LoRA first if the model has none

K-stacked adapters: with `n_adapters=K` every LoRA layer holds A (K, r, in) and B (K, out, r); rows of a batch
are routed to adapters with `adapter_routing(model, idx)` (-1 = base model), and `MultiAdapterAdamW` with
`per_adapter_loss` trains the K adapters in one batched pass as the same computation as training each alone.

Run `nanoseal lora-info --depth 12 --rank 16` (or `python -m nanoseal.lora`) for parameter counts.
"""

from nanoseal.lora.files import (
    CONFIG_NAME,
    KEY_PREFIX,
    META_FORMAT,
    META_NAME,
    WEIGHTS_NAME,
    base_fingerprint,
    load_adapter,
    read_adapter_config,
    save_adapter,
)
from nanoseal.lora.info import add_lora_info_args, config_from_args, lora_info, lora_info_main
from nanoseal.lora.layer import (
    DEFAULT_TARGETS,
    SEAL_TARGETS,
    LoRALinear,
    adapter_parameters,
    apply_lora,
    base_state_dict,
    lora_layers,
    match_modules,
    merge_lora,
    remove_lora,
    reset_adapter,
    target_matches,
    unmerge_lora,
)
from nanoseal.lora.optim import MultiAdapterAdamW, adapter_optimizer, cosine_lr
from nanoseal.lora.routing import adapter_routing, lora_disabled, per_adapter_loss, set_adapter_routing

__all__ = [
    "CONFIG_NAME", "DEFAULT_TARGETS", "KEY_PREFIX", "META_FORMAT", "META_NAME", "SEAL_TARGETS", "WEIGHTS_NAME",
    "LoRALinear", "MultiAdapterAdamW", "adapter_optimizer", "adapter_parameters", "adapter_routing",
    "add_lora_info_args", "apply_lora", "base_fingerprint", "base_state_dict", "config_from_args", "cosine_lr",
    "load_adapter", "lora_disabled", "lora_info", "lora_info_main", "lora_layers", "match_modules", "merge_lora",
    "per_adapter_loss", "read_adapter_config", "remove_lora", "reset_adapter", "save_adapter",
    "set_adapter_routing", "target_matches", "unmerge_lora",
]
