"""
`nanoseal lora-info`: trainable parameter counts and memory of LoRA on a model config (a meta-device model).

    nanoseal lora-info --depth 12 --rank 16
    python -m nanoseal.lora --depth 12 --rank 16 --arch nanochat-2026-03-14
"""

import argparse
import json

import torch

from nanoseal.argtypes import POSITIVE_INT, int_in
from nanoseal.lora.layer import (
    DEFAULT_TARGETS,
    SEAL_TARGETS,
    _normalise_targets,
    adapter_parameters,
    apply_lora,
    lora_layers,
)
from nanoseal.modelcheck import MAX_LAYERS, check_model_config
from nanoseal.models import ARCH_NAMES, build_model_from_config
from nanoseal.models.nanochat import GPTConfig
from nanoseal.models.nanochat_versions import get_arch

MB = 1e6  # decimal megabytes, as the seed's estimate


def lora_info(config: GPTConfig, rank: int = 16, targets=None) -> dict:
    """Trainable parameters per target and in total, % of base params, memory (bytes); meta-device model."""
    with torch.device("meta"):
        model = build_model_from_config(config)
    base_params = model.num_params()
    apply_lora(model, rank=rank, targets=targets)
    per_target = {t: {"modules": 0, "params": 0, "shapes": []} for t in _normalise_targets(targets)}
    for layer in lora_layers(model).values():
        entry = per_target[layer.target]
        entry["modules"] += 1
        entry["params"] += layer.lora_A.numel() + layer.lora_B.numel()
        shape = f"{layer.in_features}x{layer.out_features}"
        if shape not in entry["shapes"]:
            entry["shapes"].append(shape)
    total = sum(p.numel() for p in adapter_parameters(model))
    return {
        "config": config.to_dict(),
        "rank": rank,
        "targets": list(per_target),
        "per_target": per_target,
        "total_params": total,
        "base_params": base_params,
        "percent_of_base": 100.0 * total / base_params,
        "bytes_fp32": 4 * total,
        "bytes_bf16": 2 * total,
        "bytes_grad_fp32": 4 * total,
        "bytes_adamw_state_fp32": 8 * total,  # exp_avg + exp_avg_sq
        "bytes_train_fp32": 16 * total,  # weights + grads + AdamW state
    }


def add_lora_info_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal lora-info`."""
    parser.add_argument("--depth", type=int_in(1, MAX_LAYERS), default=None,
                        help="nanochat depth d: n_layer=d, n_embd=64d, n_head=n_kv_head=ceil(64d/128)")
    parser.add_argument("--n-layer", type=int_in(1, MAX_LAYERS), default=None)
    parser.add_argument("--n-embd", type=POSITIVE_INT, default=None)
    parser.add_argument("--n-head", type=POSITIVE_INT, default=None)
    parser.add_argument("--n-kv-head", type=POSITIVE_INT, default=None)
    parser.add_argument("--vocab-size", type=POSITIVE_INT, default=None)
    parser.add_argument("--arch", default=None, choices=ARCH_NAMES,
                        help="architecture version (default: nanochat-2025-10-13; windowed versions use SSSL)")
    parser.add_argument("--rank", type=POSITIVE_INT, default=16)
    parser.add_argument("--targets", nargs="+", default=None,
                        help=f"module-path suffixes (default: {' '.join(DEFAULT_TARGETS)}); "
                             "'seal' = SEAL's c_q c_v c_fc mlp.c_proj")
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")


def config_from_args(args: argparse.Namespace) -> GPTConfig:
    """GPTConfig from --depth and the explicit size flags (defaults: GPTConfig(), i.e. d12)."""
    config = GPTConfig()
    if args.depth is not None:
        n_embd = args.depth * 64
        heads = max(1, (n_embd + 127) // 128)
        config = GPTConfig(n_layer=args.depth, n_embd=n_embd, n_head=heads, n_kv_head=heads)
    for field in ("n_layer", "n_embd", "n_head", "n_kv_head", "vocab_size"):
        if getattr(args, field) is not None:
            setattr(config, field, getattr(args, field))
    if args.n_head is not None and args.n_kv_head is None:
        config.n_kv_head = config.n_head
    if getattr(args, "arch", None) is not None:
        config.arch = args.arch
        config.window_pattern = "SSSL" if get_arch(args.arch).short_window else "L"
    check_model_config(config, "lora-info")  # sizes and heads, before the meta-device model is built
    return config


def lora_info_main(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal lora-info`: print trainable parameter counts and memory."""
    targets = args.targets
    if targets == ["seal"]:
        targets = list(SEAL_TARGETS)
    config = config_from_args(args)
    info = lora_info(config, rank=args.rank, targets=targets)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    c = info["config"]
    print(f"LoRA rank {info['rank']} on GPT {config.arch} n_layer={c['n_layer']} n_embd={c['n_embd']} "
          f"n_head={c['n_head']} n_kv_head={c['n_kv_head']} vocab={c['vocab_size']} "
          f"({info['base_params'] / 1e6:.1f}M base params)")
    print(f"{'target':<14}{'modules':>8}{'in x out':>14}{'params':>14}")
    for target, e in info["per_target"].items():
        print(f"{target:<14}{e['modules']:>8}{','.join(e['shapes']):>14}{e['params']:>14,}")
    total, pct = info["total_params"], info["percent_of_base"]
    print(f"{'total':<14}{'':>8}{'':>14}{total:>14,}  ({pct:.2f}% of base params)")
    print(f"memory (MB = 1e6 bytes): weights fp32 {info['bytes_fp32'] / MB:.1f}, "
          f"bf16 {info['bytes_bf16'] / MB:.1f}; AdamW state fp32 {info['bytes_adamw_state_fp32'] / MB:.1f}; "
          f"training (weights + grads + AdamW, fp32) {info['bytes_train_fp32'] / MB:.1f}")
    return 0
