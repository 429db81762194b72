"""
A model config checked before anything is allocated: every size a positive integer, the heads dividing (n_embd by
n_head, n_head by n_kv_head), an even head width (rotary pairs), a plausible depth; then, on the meta device (no
memory), the model it describes: a checkpoint's tensors must have its shapes, and the memory it needs (its
parameters and buffers x their bytes; x4 for the parameters when training: grads and two optimizer moments)
must fit what the device has. A refusal is one NanosealError line naming the field.

    check_model_config(config, where="ckpt/model_000010.pt", device="cpu", state=state_dict)   # before loading it
    check_model_config(config, where="preset tiny", device="cuda", training=True)             # before training it
"""

import os
from dataclasses import asdict, is_dataclass

import torch

from nanoseal.common import NanosealError

FIELDS = ("sequence_len", "vocab_size", "n_layer", "n_head", "n_kv_head", "n_embd")
MAX_LAYERS = 1000  # deeper is no model nanoseal trains or loads (nanochat's deepest preset has 32)
TRAINING_FACTOR = 4  # parameter memory when training: weights + grads + two optimizer moments


def machine_memory(device: torch.device | str) -> int | None:
    """Bytes of memory the device has: a CUDA device's total, else the machine's RAM (or its cgroup's limit)."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return torch.cuda.get_device_properties(index).total_memory
    if device.type not in ("cpu", "mps"):
        return None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows)
        try:
            import psutil
            total = psutil.virtual_memory().total
        except ImportError:
            return None
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limit = f.read().strip()
        except OSError:
            continue
        if limit.isdigit():
            total = min(total, int(limit))
    return total


def _gb(n: int) -> str:
    return f"{min(n, 10**30) / 1e9:,.3g} GB"


def meta_model(config) -> torch.nn.Module:
    """The model a config describes, built on the meta device (shapes only, nothing allocated)."""
    from nanoseal.models import build_model_from_config

    with torch.device("meta"):
        return build_model_from_config(config)


def check_model_config(config, where: str, device: torch.device | str | None = None, state: dict | None = None,
                       training: bool = False) -> None:
    """Refuse (NanosealError, one line naming the field) a config that cannot be a model, whose checkpoint tensors
    (state) do not fit it, or that needs more memory than `device` has (None: no memory check)."""
    cfg = asdict(config) if is_dataclass(config) else dict(config)
    for field in FIELDS:
        value = cfg.get(field)
        if type(value) is not int or value < 1:
            raise NanosealError(f"{where}: model_config.{field} must be a positive integer, got {value!r:.40}")
    if cfg["n_layer"] > MAX_LAYERS:
        raise NanosealError(f"{where}: model_config.n_layer is {cfg['n_layer']:,}, at most {MAX_LAYERS} supported")
    explicit = cfg.get("head_dim")  # a Llama-family config may set the head width apart from n_embd / n_head
    if explicit is not None and (type(explicit) is not int or explicit < 2 or explicit % 2):
        raise NanosealError(f"{where}: model_config.head_dim must be an even integer >= 2, got {explicit!r:.40}")
    if explicit is None and cfg["n_embd"] % cfg["n_head"]:
        raise NanosealError(f"{where}: model_config.n_embd ({cfg['n_embd']}) must be a multiple of n_head "
                            f"({cfg['n_head']})")
    if cfg["n_head"] % cfg["n_kv_head"]:
        raise NanosealError(f"{where}: model_config.n_head ({cfg['n_head']}) must be a multiple of n_kv_head "
                            f"({cfg['n_kv_head']})")
    head_dim = explicit or cfg["n_embd"] // cfg["n_head"]
    if head_dim % 2:
        raise NanosealError(f"{where}: model_config n_embd / n_head = {head_dim} must be even (rotary embeddings "
                            "rotate pairs of channels)")
    try:
        model = meta_model(config)
    except NanosealError as e:
        raise NanosealError(f"{where}: {e}") from None
    except (AssertionError, ValueError, TypeError, RuntimeError, OverflowError) as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise NanosealError(f"{where}: bad model_config ({first})") from None
    available = None if device is None else machine_memory(device)
    n_params = sum(p.numel() for p in model.parameters())
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    need = weights * (TRAINING_FACTOR if training else 1) + buffers
    if available is not None and need > available:  # first: a model that cannot exist here says so
        use = "to train it" if training else "for its weights and buffers"
        raise NanosealError(f"{where}: model_config asks for {n_params:,} parameters (n_layer {cfg['n_layer']}, "
                            f"n_embd {cfg['n_embd']:,}, vocab_size {cfg['vocab_size']:,}, sequence_len "
                            f"{cfg['sequence_len']:,}), which need {_gb(need)} {use}; {torch.device(device)} has "
                            f"{_gb(available)}")
    if state is not None:
        expected = model.state_dict()
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or extra:
            raise NanosealError(f"{where}: state dict does not match model_config (missing {missing[:3]}, "
                                f"unexpected {extra[:3]})")
        for name, tensor in expected.items():
            got = tuple(getattr(state[name], "shape", ()))
            if got != tuple(tensor.shape):
                raise NanosealError(f"{where}: {name} has shape {got}, model_config implies {tuple(tensor.shape)}")
