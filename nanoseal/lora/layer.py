"""
The LoRA layer and how it is attached: LoRALinear (a frozen nn.Linear weight plus K stacked adapters), target
matching, apply/remove, merge/unmerge, re-initialising an adapter.

Target matching (the same rule as PEFT's list form of `target_modules`): a target matches a module
path when it equals the path or is a suffix of it on a dot boundary. "c_q" matches
"transformer.h.0.attn.c_q"; "mlp.c_proj" matches "transformer.h.3.mlp.c_proj" but not
"transformer.h.3.attn.c_proj"; "c_proj" matches both. Every target must match at least one
nn.Linear, and only nn.Linear modules may match. The same six targets exist in every nanochat version;
the 2026 versions also have `attn.ve_gate` (the value-embedding gates) for those who want it. A model family with
other module names maps nanochat's onto its own with a `lora_aliases` dict (nanoseal.models.llama: "c_q" ->
"q_proj", "c_fc" -> "gate_proj" + "up_proj", ...), so the default and SEAL targets fit every family; each layer
records the name it matched under (what adapter_config.json lists, as PEFT finds it on the transformers model).

Each layer computes

    y = x @ W^T (+ bias) + scale * (dropout(x) @ A[idx]^T) @ B[idx]^T     scale = alpha/r (rsLoRA: alpha/sqrt(r))

with one gather and two bmm's per layer (one plain matmul pair when all rows share an adapter); which
adapter a row runs is set by nanoseal.lora.routing.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanoseal.common import NanosealError

DEFAULT_TARGETS = ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
SEAL_TARGETS = ("c_q", "c_v", "c_fc", "mlp.c_proj")  # SEAL's choice (q, v, MLP up and down)


# the layer


@dataclass
class _Route:
    """Routing shared by every LoRA layer: per-row adapter index, clamped index, mask, uniform index."""

    index: torch.Tensor  # (B,) long, -1 = base model
    gather: torch.Tensor  # (B,) long, index clamped to >= 0 (what the gather uses)
    mask: torch.Tensor  # (B, 1, 1) float, 0 for rows with index -1
    uniform: int | None  # the index when all rows share it, else None


class LoRALinear(nn.Module):
    """A frozen nn.Linear weight and bias (state-dict keys `weight`, `bias`, as before) plus K stacked LoRA
    adapters."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, n_adapters: int = 1,
                 use_rslora: bool = False, target: str = ""):
        super().__init__()
        assert rank >= 1 and n_adapters >= 1, f"rank {rank} and n_adapters {n_adapters} must be >= 1"
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.use_rslora, self.n_adapters = rank, alpha, use_rslora, n_adapters
        self.dropout_p, self.target = dropout, target
        self.scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        self.weight = base.weight  # the very same Parameter: same key, same storage
        self.weight.requires_grad_(False)
        self.bias = base.bias  # None, or the very same Parameter (Qwen2's q/k/v), frozen too
        if self.bias is not None:
            self.bias.requires_grad_(False)
        w = base.weight
        dtype = torch.float64 if w.dtype == torch.float64 else torch.float32  # adapters in fp32 (or fp64)
        K, r, kw = n_adapters, rank, dict(device=w.device, dtype=dtype)
        self.lora_A = nn.Parameter(torch.empty(K, r, self.in_features, **kw))  # (K, r, in)
        self.lora_B = nn.Parameter(torch.zeros(K, self.out_features, r, **kw))  # (K, out, r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.route: _Route | None = None
        self.disabled = False
        self.merged_index: int | None = None  # which adapter is folded into `weight`, if any
        for k in range(n_adapters):
            self.reset_adapter(k)

    @torch.no_grad()
    def reset_adapter(self, k: int) -> None:
        """Re-initialise adapter k as PEFT does: A Kaiming-uniform (a=sqrt(5)), B zero (identity)."""
        assert self.merged_index is None, "unmerge before resetting an adapter"
        self.lora_B[k].zero_()
        if self.lora_A.device.type != "meta":
            nn.init.kaiming_uniform_(self.lora_A[k], a=math.sqrt(5))  # fan_in = in_features

    def delta_weight(self, k: int) -> torch.Tensor:
        """scale * B[k] @ A[k]: adapter k as a dense (out, in) weight update, in the adapter dtype."""
        return (self.lora_B[k] @ self.lora_A[k]) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        if self.merged_index is not None:
            assert self.route is None and not self.disabled, "routing/disabling a merged layer: unmerge it"
            return y
        if self.disabled:
            return y
        route = self.route
        if route is None:
            assert self.n_adapters == 1, (
                f"{self.n_adapters} stacked adapters and no routing: call inside adapter_routing(model, idx)"
            )
            k = 0
        else:
            k = route.uniform
        h = self.dropout(x)
        autocast = torch.is_autocast_enabled(x.device.type)
        fused = autocast or y.dtype == self.lora_A.dtype  # the add can happen inside the GEMM
        if not autocast:
            h = h.to(self.lora_A.dtype)
        if k is not None:  # every row uses the same adapter (or the base): plain matmuls
            if k < 0:
                return y
            h = F.linear(h, self.lora_A[k]).reshape(-1, self.rank)  # (N, r)
            if fused:  # y + scale * h @ B^T in one GEMM
                return torch.addmm(y.reshape(-1, self.out_features), h, self.lora_B[k].t(),
                                   alpha=self.scaling).view(y.shape)
            return y + (F.linear(h, self.lora_B[k]) * self.scaling).view(y.shape).to(y.dtype)
        B = x.size(0)
        assert route.index.numel() == B, f"routing has {route.index.numel()} rows, the batch has {B}"
        h = h.reshape(B, -1, self.in_features)  # (B, T, in)
        A = self.lora_A.index_select(0, route.gather)  # (B, r, in)
        Bm = self.lora_B.index_select(0, route.gather).transpose(1, 2)  # (B, r, out)
        h = torch.bmm(h, A.transpose(1, 2))  # (B, T, r)
        h = h * route.mask.to(h.dtype)  # zero on base rows
        if fused:
            return torch.baddbmm(y.reshape(B, -1, self.out_features), h, Bm, alpha=self.scaling).view(y.shape)
        return y + (torch.bmm(h, Bm) * self.scaling).view(y.shape).to(y.dtype)

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, rank={self.rank}, alpha={self.alpha}, "
                f"n_adapters={self.n_adapters}, scaling={self.scaling:g}, merged={self.merged_index}")


# attach / detach


def target_matches(path: str, target: str) -> bool:
    """True when `target` equals the module path or is a suffix of it on a dot boundary."""
    return path == target or path.endswith("." + target)


def _aliases(model: nn.Module) -> dict:
    """The model family's nanochat-name -> own-names map (empty for nanochat's GPT)."""
    return getattr(model, "lora_aliases", None) or {}


def _normalise_targets(targets) -> list[str]:
    """The target list as strings (default: the six nanochat linears); a bare string is refused."""
    if targets is None:
        return list(DEFAULT_TARGETS)
    if isinstance(targets, str):
        raise NanosealError(f"targets must be a list of module-path suffixes, got the string {targets!r}")
    targets = [str(t) for t in targets]
    if not targets:
        raise NanosealError("targets is empty: name at least one linear layer (e.g. c_q)")
    return list(dict.fromkeys(targets))  # unique, order kept


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Module path -> LoRALinear, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, LoRALinear)}


def _set_submodule(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, child, module)


def match_modules(model: nn.Module, targets) -> dict[str, str]:
    """Module path -> the first target matching it (the family's own name for an aliased one), for every
    nn.Linear/LoRALinear a target matches."""
    targets = _normalise_targets(targets)
    aliases = _aliases(model)
    names = {t: aliases.get(t, (t,)) for t in targets}  # each target -> the module names it stands for here
    found: dict[str, str] = {}
    used = set()
    for path, module in model.named_modules():
        hits = [(t, n) for t in targets for n in names[t] if path and target_matches(path, n)]
        if not hits:
            continue
        if not isinstance(module, (nn.Linear, LoRALinear)):
            raise NanosealError(f"target {hits[0][0]!r} matches {path} which is a {type(module).__name__}, "
                                "not a linear layer")
        found[path] = hits[0][1]
        used.update(t for t, _ in hits)
    unused = [t for t in targets if t not in used]
    if unused:
        raise NanosealError(f"target(s) {unused} match no linear layer of the model")
    return found


def apply_lora(model: nn.Module, rank: int = 16, alpha: float = 16, dropout: float = 0.0, targets=None,
               n_adapters: int = 1, use_rslora: bool = False) -> list[nn.Parameter]:
    """Freeze the model and replace each targeted nn.Linear by a LoRALinear; return the adapter parameters."""
    if lora_layers(model):
        raise NanosealError("the model already has LoRA layers: remove_lora(model) before applying again")
    if rank < 1 or n_adapters < 1:
        raise NanosealError(f"rank ({rank}) and n_adapters ({n_adapters}) must be >= 1")
    if not 0.0 <= dropout < 1.0:
        raise NanosealError(f"dropout must be in [0, 1), got {dropout}")
    found = match_modules(model, targets)
    model._lora_requires_grad = {name: p.requires_grad for name, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for path, target in found.items():
        base = model.get_submodule(path)
        _set_submodule(model, path, LoRALinear(base, rank, alpha, dropout, n_adapters, use_rslora, target))
    return adapter_parameters(model)


def adapter_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every adapter parameter (lora_A, lora_B of each layer, K adapters stacked), in module order."""
    return [p for layer in lora_layers(model).values() for p in (layer.lora_A, layer.lora_B)]


def base_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The plain GPT state dict (no lora_* keys); after merge_lora its linears hold the merged weights."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith((".lora_A", ".lora_B"))}


@torch.no_grad()
def merge_lora(model: nn.Module, adapter_index: int = 0) -> None:
    """Fold adapter k into each base weight (W += scale * B[k] @ A[k]); forward then costs nothing extra."""
    for path, layer in lora_layers(model).items():
        assert layer.merged_index is None, f"{path} is already merged (adapter {layer.merged_index})"
        assert 0 <= adapter_index < layer.n_adapters, f"adapter {adapter_index} of {layer.n_adapters}"
        layer.weight.add_(layer.delta_weight(adapter_index).to(layer.weight.dtype))
        layer.merged_index = adapter_index


@torch.no_grad()
def unmerge_lora(model: nn.Module) -> None:
    """Subtract the merged adapter from each base weight again (exact up to float rounding)."""
    for layer in lora_layers(model).values():
        if layer.merged_index is not None:
            layer.weight.sub_(layer.delta_weight(layer.merged_index).to(layer.weight.dtype))
            layer.merged_index = None


@torch.no_grad()
def remove_lora(model: nn.Module, merge: bool = False, adapter_index: int = 0) -> None:
    """Put plain nn.Linear modules back: merge=True keeps adapter k folded into the weights, else the base."""
    layers = lora_layers(model)
    if not layers:
        raise NanosealError("the model has no LoRA layers to remove")
    for path, layer in layers.items():
        if layer.merged_index is not None and (not merge or layer.merged_index != adapter_index):
            layer.weight.sub_(layer.delta_weight(layer.merged_index).to(layer.weight.dtype))
            layer.merged_index = None
        if merge and layer.merged_index is None:
            layer.weight.add_(layer.delta_weight(adapter_index).to(layer.weight.dtype))
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        linear.weight = layer.weight
        if layer.bias is not None:
            linear.bias = layer.bias
        _set_submodule(model, path, linear)
    flags = getattr(model, "_lora_requires_grad", {})
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, True))
    if hasattr(model, "_lora_requires_grad"):
        del model._lora_requires_grad


@torch.no_grad()
def reset_adapter(model: nn.Module, k: int) -> None:
    """Re-initialise adapter k in every layer (A Kaiming-uniform, B zero): it is the identity again."""
    for layer in lora_layers(model).values():
        assert 0 <= k < layer.n_adapters, f"adapter {k} of {layer.n_adapters}"
        layer.reset_adapter(k)
