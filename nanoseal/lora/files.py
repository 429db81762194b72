"""
Adapter files: `save_adapter` writes a folder that `peft.PeftModel.from_pretrained(plain_gpt, folder)` loads:
`adapter_config.json` (peft_type LORA, r, lora_alpha, target_modules, ...) and
`adapter_model.safetensors` (keys `base_model.model.<module path>.lora_A.weight` (r, in) and
`.lora_B.weight` (out, r)), plus `nanoseal.json`: the base model's fingerprint (sha256 of the model config
and base weights), the sha256 of the weights file, and the caller's metadata. It is written last, so a
folder without it is incomplete. `load_adapter` checks all of it against the model.

    save_adapter(model, "out/adapter", metadata={"task": "0a1b2c3d"})
    load_adapter(plain_model, "out/adapter")          # applies LoRA first if the model has none
"""

import hashlib
import json
import math
import os

import torch
import torch.nn as nn

from nanoseal.common import NanosealError, atomic_write_bytes, atomic_write_json, read_json_object
from nanoseal.lora.layer import LoRALinear, apply_lora, base_state_dict, lora_layers, match_modules, remove_lora

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
META_NAME = "nanoseal.json"
KEY_PREFIX = "base_model.model."  # PEFT's prefix: PeftModel.base_model (LoraModel).model (our GPT)
META_FORMAT = "nanoseal-lora/1"


def base_fingerprint(model: nn.Module) -> str:
    """sha256 (hex) of the GPT config and the un-merged base weights; floats hashed as fp32 (bf16-exact)."""
    if any(layer.merged_index is not None for layer in lora_layers(model).values()):
        raise NanosealError("the model has a merged adapter: unmerge_lora(model) before fingerprinting it")
    h = hashlib.sha256()
    config = getattr(model, "config", None)
    config_dict = config.to_dict() if hasattr(config, "to_dict") else {}
    h.update(json.dumps(config_dict, sort_keys=True).encode())
    for name, t in sorted(base_state_dict(model).items()):
        if t.device.type == "meta":
            raise NanosealError("cannot fingerprint a model on the meta device")
        t = t.detach()
        if t.is_floating_point() and t.element_size() < 4:
            t = t.float()  # bf16/fp16 -> fp32 is exact, so one checkpoint has one fingerprint in either dtype
        t = t.cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _peft_config(layer: LoRALinear, targets: list[str], base_model_name_or_path: str | None) -> dict:
    """adapter_config.json contents that peft's LoraConfig accepts."""
    return {
        "peft_type": "LORA",
        "task_type": None,  # a plain nn.Module: PeftModel, not PeftModelForCausalLM
        "base_model_name_or_path": base_model_name_or_path,
        "revision": None,
        "inference_mode": True,
        "r": layer.rank,
        "lora_alpha": layer.alpha,
        "lora_dropout": layer.dropout_p,
        "target_modules": targets,
        "bias": "none",
        "use_rslora": layer.use_rslora,
        "use_dora": False,
        "fan_in_fan_out": False,
        "init_lora_weights": True,
        "modules_to_save": None,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
    }


@torch.no_grad()
def save_adapter(model: nn.Module, folder: str, metadata: dict | None = None, adapter_index: int = 0,
                 fingerprint: str | None = None, base_model_name_or_path: str | None = None) -> None:
    """Write adapter k as an ordinary single PEFT adapter in `folder` (+ nanoseal.json); every file atomic.

    fingerprint: the base_fingerprint(model), if already known (saves hashing the base weights again).
    """
    from safetensors.torch import save as safetensors_save

    layers = lora_layers(model)
    if not layers:
        raise NanosealError(f"cannot save an adapter to {folder}: the model has no LoRA layers")
    first = next(iter(layers.values()))
    if not 0 <= adapter_index < first.n_adapters:
        raise NanosealError(f"adapter_index {adapter_index} out of range: the model has {first.n_adapters}")
    fingerprint = fingerprint or base_fingerprint(model)
    tensors = {}
    for path, layer in layers.items():
        tensors[f"{KEY_PREFIX}{path}.lora_A.weight"] = layer.lora_A[adapter_index].detach().cpu().contiguous()
        tensors[f"{KEY_PREFIX}{path}.lora_B.weight"] = layer.lora_B[adapter_index].detach().cpu().contiguous()
    blob = safetensors_save(tensors, metadata={"format": "pt"})
    targets = list(dict.fromkeys(layer.target for layer in layers.values()))
    meta = {
        "format": META_FORMAT,
        "base_fingerprint": fingerprint,
        "model_config": model.config.to_dict() if hasattr(model, "config") else None,
        "weights_sha256": hashlib.sha256(blob).hexdigest(),
        "source_adapter_index": adapter_index,
        "source_n_adapters": first.n_adapters,
        "metadata": metadata or {},
    }
    json.dumps(meta)  # fail before writing anything if the metadata is not JSON-serialisable
    atomic_write_bytes(os.path.join(folder, WEIGHTS_NAME), blob)
    peft_config = _peft_config(first, targets, base_model_name_or_path)
    atomic_write_json(os.path.join(folder, CONFIG_NAME), peft_config)
    atomic_write_json(os.path.join(folder, META_NAME), meta)  # last: its presence marks a complete folder


def _read_json(folder: str, name: str) -> dict:
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        raise NanosealError(f"adapter folder {folder}: missing {name}")
    try:
        return read_json_object(path)
    except NanosealError as e:
        raise NanosealError(f"adapter folder {folder}: {name} {str(e).removeprefix(path + ': ')}") from None


def read_adapter_config(folder: str) -> dict:
    """adapter_config.json of a folder, checked to be a plain LoRA config nanoseal can load."""
    cfg = _read_json(folder, CONFIG_NAME)
    problems = []
    if cfg.get("peft_type") != "LORA":
        problems.append(f"peft_type is {cfg.get('peft_type')!r}, not 'LORA'")
    if not isinstance(cfg.get("r"), int) or cfg["r"] < 1:
        problems.append(f"r is {cfg.get('r')!r}")
    if not isinstance(cfg.get("lora_alpha"), (int, float)):
        problems.append(f"lora_alpha is {cfg.get('lora_alpha')!r}")
    tm = cfg.get("target_modules")
    if not isinstance(tm, list) or not tm or not all(isinstance(t, str) for t in tm):
        problems.append(f"target_modules must be a non-empty list of module-path suffixes, got {tm!r}")
    for key, ok in (("bias", "none"), ("fan_in_fan_out", False), ("use_dora", False)):
        if cfg.get(key, ok) != ok:
            problems.append(f"{key}={cfg[key]!r} is not supported")
    for key in ("rank_pattern", "alpha_pattern"):
        if cfg.get(key):
            problems.append(f"{key} is not supported")
    if cfg.get("modules_to_save") or cfg.get("layers_to_transform") or cfg.get("exclude_modules"):
        problems.append("modules_to_save/layers_to_transform/exclude_modules are not supported")
    if problems:
        raise NanosealError(f"adapter folder {folder}: {CONFIG_NAME}: " + "; ".join(problems))
    return cfg


@torch.no_grad()
def _copy_adapter(model: nn.Module, folder: str, cfg: dict, tensors: dict, adapter_index: int) -> None:
    """Check a file's config and tensors against the model's LoRA layers, then copy them into slot k."""
    rank, alpha, use_rslora = cfg["r"], cfg["lora_alpha"], bool(cfg.get("use_rslora", False))
    layers = lora_layers(model)
    try:
        file_paths = set(match_modules(model, cfg["target_modules"]))
    except NanosealError as e:
        raise NanosealError(f"adapter folder {folder}: {e}") from None
    if file_paths != set(layers):
        diff = sorted(file_paths ^ set(layers))
        raise NanosealError(f"adapter folder {folder} targets other modules than the model's LoRA layers "
                            f"(differ on {len(diff)}: {diff[:3]})")
    first = next(iter(layers.values()))
    if first.rank != rank:
        raise NanosealError(f"adapter folder {folder} has rank {rank}, the model's LoRA layers {first.rank}")
    file_scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
    if not math.isclose(file_scaling, first.scaling, rel_tol=1e-12):
        raise NanosealError(f"adapter folder {folder} has scaling {file_scaling:g} (alpha {alpha}, rslora "
                            f"{use_rslora}), the model's LoRA layers {first.scaling:g}")
    if not 0 <= adapter_index < first.n_adapters:
        raise NanosealError(f"adapter_index {adapter_index} out of range: the model has {first.n_adapters}")
    expected_keys = {f"{KEY_PREFIX}{p}.lora_{ab}.weight" for p in layers for ab in "AB"}
    if set(tensors) != expected_keys:
        missing, extra = sorted(expected_keys - set(tensors)), sorted(set(tensors) - expected_keys)
        raise NanosealError(f"adapter folder {folder}: {WEIGHTS_NAME} keys do not match the model "
                            f"(missing {missing[:2]}, unexpected {extra[:2]})")
    for path, layer in layers.items():
        for ab, param in (("A", layer.lora_A), ("B", layer.lora_B)):
            t = tensors[f"{KEY_PREFIX}{path}.lora_{ab}.weight"]
            if tuple(t.shape) != tuple(param.shape[1:]):
                raise NanosealError(f"adapter folder {folder}: {path}.lora_{ab} has shape {tuple(t.shape)}, "
                                    f"the model expects {tuple(param.shape[1:])}")
        if layer.merged_index is not None:
            raise NanosealError(f"cannot load {folder} into a merged model: unmerge_lora(model) first")
    for path, layer in layers.items():
        layer.lora_A[adapter_index].copy_(tensors[f"{KEY_PREFIX}{path}.lora_A.weight"])
        layer.lora_B[adapter_index].copy_(tensors[f"{KEY_PREFIX}{path}.lora_B.weight"])


@torch.no_grad()
def load_adapter(model: nn.Module, folder: str, adapter_index: int = 0, check_base: bool = True,
                 fingerprint: str | None = None) -> dict:
    """Load a single adapter from `folder` into slot k of the model's LoRA layers; return nanoseal.json.

    A model without LoRA layers first gets them (n_adapters=1, the file's rank/alpha/targets). The
    file must match the model's LoRA layers (same modules, rank and scaling) and, with check_base,
    the base fingerprint recorded by save_adapter; check_base=False also accepts PEFT-made folders
    without nanoseal.json. Any mismatch or unreadable file raises NanosealError.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load as safetensors_load

    if not os.path.isdir(folder):
        raise NanosealError(f"adapter folder {folder} does not exist")
    cfg = read_adapter_config(folder)
    weights_path = os.path.join(folder, WEIGHTS_NAME)
    if not os.path.isfile(weights_path):
        raise NanosealError(f"adapter folder {folder}: missing {WEIGHTS_NAME}")
    meta = {}
    if check_base or os.path.isfile(os.path.join(folder, META_NAME)):
        meta = _read_json(folder, META_NAME)
    with open(weights_path, "rb") as f:
        blob = f.read()
    if meta.get("weights_sha256") and hashlib.sha256(blob).hexdigest() != meta["weights_sha256"]:
        raise NanosealError(f"adapter folder {folder}: {WEIGHTS_NAME} does not match the sha256 in "
                            f"{META_NAME} (corrupt or half-overwritten)")
    try:
        tensors = safetensors_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise NanosealError(f"adapter folder {folder}: {WEIGHTS_NAME} is unreadable ({e})") from None
    if check_base:
        expected = meta.get("base_fingerprint")
        if not isinstance(expected, str):
            raise NanosealError(f"adapter folder {folder}: {META_NAME} has no base_fingerprint")
        actual = fingerprint or base_fingerprint(model)
        if actual != expected:
            raise NanosealError(f"adapter folder {folder} was trained on another base model "
                                f"(fingerprint {expected[:12]}..., this model {actual[:12]}...)")
    rank, alpha, use_rslora = cfg["r"], cfg["lora_alpha"], bool(cfg.get("use_rslora", False))
    applied = not lora_layers(model)
    if applied:
        apply_lora(model, rank=rank, alpha=alpha, dropout=float(cfg.get("lora_dropout", 0.0) or 0.0),
                   targets=cfg["target_modules"], use_rslora=use_rslora)
    try:
        _copy_adapter(model, folder, cfg, tensors, adapter_index)
    except NanosealError:
        if applied:  # leave the model as it came
            remove_lora(model)
        raise
    return meta
