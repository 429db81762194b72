"""
LoRA for the nanochat GPT: single and K-stacked adapters, attach/detach, merge/unmerge, routing of
batch rows to adapters, a multi-adapter AdamW, and PEFT-compatible adapter files.

    params = apply_lora(model, rank=16, alpha=16, targets=["c_q", "c_v", "c_fc", "mlp.c_proj"])
    opt = adapter_optimizer(params, lr=1e-4)
    loss = model(idx, targets); loss.backward(); opt.step()
    save_adapter(model, "out/adapter", metadata={"task": "0a1b2c3d"})
    load_adapter(plain_model, "out/adapter")          # applies LoRA first if the model has none

Target matching (the same rule as PEFT's list form of `target_modules`): a target matches a module
path when it equals the path or is a suffix of it on a dot boundary. "c_q" matches
"transformer.h.0.attn.c_q"; "mlp.c_proj" matches "transformer.h.3.mlp.c_proj" but not
"transformer.h.3.attn.c_proj"; "c_proj" matches both. Every target must match at least one
nn.Linear, and only nn.Linear modules may match.

K-stacked adapters: with `n_adapters=K` every LoRA layer holds A (K, r, in) and B (K, out, r). Rows of
a batch are routed to adapters by an index tensor (B,) set with `adapter_routing(model, idx)`; a row
with index -1 runs the base model. Without routing, a K=1 model uses adapter 0 for every row (a K>1
model refuses to guess). Each layer computes

    y = x @ W^T + scale * (dropout(x) @ A[idx]^T) @ B[idx]^T     scale = alpha/r (rsLoRA: alpha/sqrt(r))

with one gather and two bmm's per layer (one plain matmul pair when all rows share an adapter).
`MultiAdapterAdamW` steps the K adapters as K independent AdamW optimizers (own learning rate,
warmup + cosine schedule, gradient clipping, step count and moments), so training K adapters in one
batched pass is the same computation as training each alone; `per_adapter_loss` gives the matching
loss (the sum over adapters of each adapter's mean token loss).

Files: `save_adapter` writes a folder that `peft.PeftModel.from_pretrained(plain_gpt, folder)` loads:
`adapter_config.json` (peft_type LORA, r, lora_alpha, target_modules, ...) and
`adapter_model.safetensors` (keys `base_model.model.<module path>.lora_A.weight` (r, in) and
`.lora_B.weight` (out, r)), plus `nanoseal.json`: the base model's fingerprint (sha256 of the GPT config
and base weights), the sha256 of the weights file, and the caller's metadata. It is written last, so a
folder without it is incomplete. Routing and the disabled flag are state on the layers: one model
object serves one thread at a time.

Run `nanoseal lora-info --depth 12 --rank 16` (or `python -m nanoseal.lora`) for parameter counts.
"""

import argparse
import contextlib
import hashlib
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanoseal.common import NanosealError, atomic_write_bytes, atomic_write_json, read_json_object
from nanoseal.gpt import GPT, GPTConfig

DEFAULT_TARGETS = ("attn.c_q", "attn.c_k", "attn.c_v", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
SEAL_TARGETS = ("c_q", "c_v", "c_fc", "mlp.c_proj")  # SEAL's choice (q, v, MLP up and down)
CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
META_NAME = "nanoseal.json"
KEY_PREFIX = "base_model.model."  # PEFT's prefix: PeftModel.base_model (LoraModel).model (our GPT)
META_FORMAT = "nanoseal-lora/1"


# -----------------------------------------------------------------------------
# the layer


@dataclass
class _Route:
    """Routing shared by every LoRA layer: per-row adapter index, clamped index, mask, uniform index."""

    index: torch.Tensor  # (B,) long, -1 = base model
    gather: torch.Tensor  # (B,) long, index clamped to >= 0 (what the gather uses)
    mask: torch.Tensor  # (B, 1, 1) float, 0 for rows with index -1
    uniform: int | None  # the index when all rows share it, else None


class LoRALinear(nn.Module):
    """A frozen nn.Linear weight (state-dict key `weight`, as before) plus K stacked LoRA adapters."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float = 0.0, n_adapters: int = 1,
                 use_rslora: bool = False, target: str = ""):
        super().__init__()
        assert base.bias is None, "nanochat linears have no bias"
        assert rank >= 1 and n_adapters >= 1, f"rank {rank} and n_adapters {n_adapters} must be >= 1"
        self.in_features, self.out_features = base.in_features, base.out_features
        self.rank, self.alpha, self.use_rslora, self.n_adapters = rank, alpha, use_rslora, n_adapters
        self.dropout_p, self.target = dropout, target
        self.scaling = alpha / math.sqrt(rank) if use_rslora else alpha / rank
        self.weight = base.weight  # the very same Parameter: same key, same storage
        self.weight.requires_grad_(False)
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
        y = F.linear(x, self.weight)  # (..., out)
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


# -----------------------------------------------------------------------------
# attach / detach


def target_matches(path: str, target: str) -> bool:
    """True when `target` equals the module path or is a suffix of it on a dot boundary."""
    return path == target or path.endswith("." + target)


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
    """Module path -> the first target matching it, for every nn.Linear/LoRALinear a target matches."""
    targets = _normalise_targets(targets)
    found: dict[str, str] = {}
    used = set()
    for path, module in model.named_modules():
        hits = [t for t in targets if path and target_matches(path, t)]
        if not hits:
            continue
        if not isinstance(module, (nn.Linear, LoRALinear)):
            raise NanosealError(f"target {hits[0]!r} matches {path} which is a {type(module).__name__}, "
                                "not a linear layer")
        found[path] = hits[0]
        used.update(hits)
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
        linear = nn.Linear(layer.in_features, layer.out_features, bias=False, device="meta")
        linear.weight = layer.weight
        _set_submodule(model, path, linear)
    flags = getattr(model, "_lora_requires_grad", {})
    for name, p in model.named_parameters():
        p.requires_grad_(flags.get(name, True))
    if hasattr(model, "_lora_requires_grad"):
        del model._lora_requires_grad


@contextlib.contextmanager
def lora_disabled(model: nn.Module):
    """Run the base model: every LoRA layer skips its adapters inside the block."""
    layers = list(lora_layers(model).values())
    assert all(layer.merged_index is None for layer in layers), "cannot disable a merged adapter: unmerge it"
    previous = [layer.disabled for layer in layers]
    for layer in layers:
        layer.disabled = True
    try:
        yield model
    finally:
        for layer, flag in zip(layers, previous):
            layer.disabled = flag


def set_adapter_routing(model: nn.Module, idx: torch.Tensor | None) -> None:
    """Route batch row b to adapter idx[b] (-1 = base model) on every LoRA layer; None clears the routing."""
    layers = list(lora_layers(model).values())
    if not layers:
        raise NanosealError("the model has no LoRA layers to route")
    route = None
    if idx is not None:
        idx = torch.as_tensor(idx, dtype=torch.long).reshape(-1).to(layers[0].weight.device)
        assert idx.numel() >= 1, "routing needs at least one row"
        K = layers[0].n_adapters
        lo, hi = int(idx.min()), int(idx.max())  # one host sync per routing change, none per layer
        assert -1 <= lo and hi < K, f"adapter indices must be in [-1, {K}), got [{lo}, {hi}]"
        mask = (idx >= 0).to(torch.float32).view(-1, 1, 1)  # (B, 1, 1)
        route = _Route(index=idx, gather=idx.clamp(min=0), mask=mask, uniform=lo if lo == hi else None)
    for layer in layers:
        layer.route = route


@contextlib.contextmanager
def adapter_routing(model: nn.Module, idx: torch.Tensor):
    """Inside the block, batch row b runs adapter idx[b] (LongTensor (B,), -1 = base model)."""
    layers = list(lora_layers(model).values())
    previous = [layer.route for layer in layers]
    set_adapter_routing(model, idx)
    try:
        yield model
    finally:
        for layer, route in zip(layers, previous):
            layer.route = route


@torch.no_grad()
def reset_adapter(model: nn.Module, k: int) -> None:
    """Re-initialise adapter k in every layer (A Kaiming-uniform, B zero): it is the identity again."""
    for layer in lora_layers(model).values():
        assert 0 <= k < layer.n_adapters, f"adapter {k} of {layer.n_adapters}"
        layer.reset_adapter(k)


def per_adapter_loss(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor, route: torch.Tensor,
                     n_adapters: int, token_counts=None, doc_lens: list[list[int]] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over adapters of each one's mean token loss, the K losses detached), rows routed by `route`.

    Backpropagating the sum gives adapter k exactly the gradient of its own mean loss, as if trained
    alone. token_counts (K,) overrides each adapter's denominator (its valid-token count over a whole
    optimizer step), so a step split into micro-batches accumulates the same gradient. doc_lens: documents
    packed into each row (nanoseal.gpt), all of a row's documents belonging to that row's adapter.
    """
    B, T = idx.shape
    route = torch.as_tensor(route, dtype=torch.long, device=idx.device).reshape(-1)
    with adapter_routing(model, route):
        token_loss = model(idx, targets, loss_reduction="none", doc_lens=doc_lens).view(B, T)  # 0 where target -1
    keep = route >= 0  # base rows (-1) do not count
    row_sum = token_loss.sum(1)[keep]  # (B',)
    rows = route[keep]
    sums = torch.zeros(n_adapters, dtype=row_sum.dtype, device=idx.device).index_add(0, rows, row_sum)  # (K,)
    if token_counts is None:
        row_count = (targets != -1).sum(1)[keep].to(row_sum.dtype)
        token_counts = torch.zeros_like(sums).index_add(0, rows, row_count)  # (K,)
    losses = sums / torch.as_tensor(token_counts, dtype=row_sum.dtype, device=idx.device).clamp(min=1)  # (K,)
    return losses.sum(), losses.detach()


# -----------------------------------------------------------------------------
# optimizers


def adapter_optimizer(params, lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """Plain torch AdamW over adapter parameters (the single-adapter case)."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def cosine_lr(step: int, lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning rate of 0-based step `step`: linear warmup to lr, then cosine decay to min_lr_ratio*lr.

    Warmup step s uses lr*(s+1)/warmup_steps (no wasted zero-lr step); after warmup the cosine runs
    from lr at step warmup_steps towards min_lr_ratio*lr at step total_steps.
    """
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return lr * (min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _per_adapter(value, K: int, name: str, cast=float) -> list:
    """A scalar or a length-K sequence/tensor as a list of K values."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        assert len(value) == K, f"{name} has {len(value)} values for {K} adapters"
        return [None if v is None else cast(v) for v in value]
    return [None if value is None else cast(value)] * K


def _column(values: list[float], p: torch.Tensor) -> torch.Tensor:
    """K per-adapter scalars as a (K, 1, ...) tensor that broadcasts over p (K, ...)."""
    return torch.tensor(values, dtype=p.dtype, device=p.device).view((len(values),) + (1,) * (p.ndim - 1))


class MultiAdapterAdamW(torch.optim.Optimizer):
    """K independent AdamW optimizers over K-stacked adapter parameters (dim 0 = adapter).

    Each adapter k has its own learning rate, warmup + cosine schedule (`cosine_lr`), weight decay,
    gradient-norm clip (over all of its own layers; never a norm across adapters), step count (bias
    correction) and moments. `step(active)` updates only the active adapters; an adapter that has
    taken its total_steps steps is inactive from then on. Inactive adapters change neither their
    weights nor their optimizer state. `reset_adapter(k)` starts adapter k's state afresh.
    """

    def __init__(self, params, lr, warmup_steps=0, total_steps=1, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay=0.0, max_grad_norm=None, min_lr_ratio: float = 0.0):
        params = list(params)
        assert params, "no parameters to optimize"
        K = params[0].size(0)
        for p in params:
            assert p.size(0) == K, f"every parameter must stack {K} adapters on dim 0, got {tuple(p.shape)}"
        defaults = dict(adapter_lr=_per_adapter(lr, K, "lr"),
                        warmup_steps=_per_adapter(warmup_steps, K, "warmup_steps", int),
                        total_steps=_per_adapter(total_steps, K, "total_steps", int),
                        weight_decay=_per_adapter(weight_decay, K, "weight_decay"),
                        max_grad_norm=_per_adapter(max_grad_norm, K, "max_grad_norm"),
                        steps=[0] * K, betas=betas, eps=eps, min_lr_ratio=min_lr_ratio, n_adapters=K)
        super().__init__(params, defaults)
        assert len(self.param_groups) == 1, "MultiAdapterAdamW takes one group of parameters"
        for p in params:
            self.state[p] = dict(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))

    @property
    def n_adapters(self) -> int:
        """K."""
        return self.param_groups[0]["n_adapters"]

    @property
    def steps(self) -> list[int]:
        """Steps taken so far by each adapter."""
        return list(self.param_groups[0]["steps"])

    def current_lrs(self) -> list[float]:
        """The learning rate each adapter's next step would use."""
        g = self.param_groups[0]
        return [cosine_lr(s, lr, w, t, g["min_lr_ratio"])
                for s, lr, w, t in zip(g["steps"], g["adapter_lr"], g["warmup_steps"], g["total_steps"])]

    def reset_adapter(self, k: int, lr: float | None = None, warmup_steps: int | None = None,
                      total_steps: int | None = None) -> None:
        """Zero adapter k's moments and step count (and optionally give it a new lr/schedule)."""
        g = self.param_groups[0]
        assert 0 <= k < self.n_adapters, f"adapter {k} of {self.n_adapters}"
        g["steps"][k] = 0
        if lr is not None:
            g["adapter_lr"][k] = float(lr)
        if warmup_steps is not None:
            g["warmup_steps"][k] = int(warmup_steps)
        if total_steps is not None:
            g["total_steps"][k] = int(total_steps)
        for p in g["params"]:
            self.state[p]["exp_avg"][k].zero_()
            self.state[p]["exp_avg_sq"][k].zero_()

    @torch.no_grad()
    def step(self, active=None) -> torch.Tensor:
        """One AdamW step of each active adapter (bools (K,), default all); returns the K grad norms."""
        g = self.param_groups[0]
        K = self.n_adapters
        active = [True] * K if active is None else [bool(a) for a in _per_adapter(active, K, "active", bool)]
        active = [a and s < t for a, s, t in zip(active, g["steps"], g["total_steps"])]
        params = [p for p in g["params"] if p.grad is not None]
        if not params:
            return torch.zeros(K)
        device = params[0].device
        # per-adapter gradient norms over all of that adapter's layers (torch's clip_grad_norm_, per adapter)
        norm_dtype = torch.promote_types(params[0].dtype, torch.float32)
        norms = torch.stack([torch.linalg.vector_norm(p.grad.flatten(1).to(norm_dtype), dim=1)
                             for p in params])  # (P, K)
        grad_norm = torch.linalg.vector_norm(norms, dim=0)  # (K,)
        max_norm = torch.tensor([math.inf if m is None else m for m in g["max_grad_norm"]], dtype=norm_dtype,
                                device=device)
        clip = (max_norm / (grad_norm + 1e-6)).clamp(max=1.0)  # (K,)
        if not any(active):
            return grad_norm
        beta1, beta2 = g["betas"]
        if sum(active) == 1:  # one adapter (the sequential mode): update its slices only, fused over params
            self._step_one(params, active.index(True), clip)
            return grad_norm
        decay, step_size, bc2_sqrt = [], [], []
        for k in range(K):
            s = g["steps"][k] + 1 if active[k] else 1
            lr = cosine_lr(s - 1, g["adapter_lr"][k], g["warmup_steps"][k], g["total_steps"][k],
                           g["min_lr_ratio"])
            decay.append(1.0 - lr * g["weight_decay"][k])
            step_size.append(lr / (1.0 - beta1 ** s))
            bc2_sqrt.append((1.0 - beta2 ** s) ** 0.5)
        mask_k = torch.tensor(active, device=device)
        for p in params:
            state = self.state[p]
            shape = (K,) + (1,) * (p.ndim - 1)  # broadcast per-adapter scalars over (K, ...)
            mask = mask_k.view(shape)
            grad = p.grad * clip.to(p.dtype).view(shape)
            exp_avg = state["exp_avg"].lerp(grad, 1 - beta1)
            exp_avg_sq = state["exp_avg_sq"].mul(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / _column(bc2_sqrt, p)).add_(g["eps"])
            new_p = p * _column(decay, p) - exp_avg / denom * _column(step_size, p)
            p.copy_(torch.where(mask, new_p, p))
            state["exp_avg"].copy_(torch.where(mask, exp_avg, state["exp_avg"]))
            state["exp_avg_sq"].copy_(torch.where(mask, exp_avg_sq, state["exp_avg_sq"]))
        for k in range(K):
            g["steps"][k] += int(active[k])
        return grad_norm

    def _step_one(self, params: list[torch.Tensor], k: int, clip: torch.Tensor) -> None:
        """step() for adapter k alone: the same arithmetic on the k-th slices, with torch._foreach ops."""
        g = self.param_groups[0]
        beta1, beta2 = g["betas"]
        s = g["steps"][k] + 1
        lr = cosine_lr(s - 1, g["adapter_lr"][k], g["warmup_steps"][k], g["total_steps"][k], g["min_lr_ratio"])
        slices = [p[k] for p in params]
        exp_avgs = [self.state[p]["exp_avg"][k] for p in params]
        exp_avg_sqs = [self.state[p]["exp_avg_sq"][k] for p in params]
        grads = torch._foreach_mul([p.grad[k] for p in params], clip[k].to(params[0].dtype))
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, (1.0 - beta2 ** s) ** 0.5)
        torch._foreach_add_(denom, g["eps"])
        update = torch._foreach_div(exp_avgs, denom)
        torch._foreach_mul_(update, lr / (1.0 - beta1 ** s))
        torch._foreach_mul_(slices, 1.0 - lr * g["weight_decay"][k])
        torch._foreach_sub_(slices, update)
        g["steps"][k] += 1


# -----------------------------------------------------------------------------
# fingerprint and files


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


# -----------------------------------------------------------------------------
# parameter counts: `nanoseal lora-info`


MB = 1e6  # decimal megabytes, as the seed's estimate


def lora_info(config: GPTConfig, rank: int = 16, targets=None) -> dict:
    """Trainable parameters per target and in total, % of base params, memory (bytes); meta-device GPT."""
    with torch.device("meta"):
        model = GPT(config)
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
    parser.add_argument("--depth", type=int, default=None,
                        help="nanochat depth d: n_layer=d, n_embd=64d, n_head=n_kv_head=ceil(64d/128)")
    parser.add_argument("--n-layer", type=int, default=None)
    parser.add_argument("--n-embd", type=int, default=None)
    parser.add_argument("--n-head", type=int, default=None)
    parser.add_argument("--n-kv-head", type=int, default=None)
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.add_argument("--rank", type=int, default=16)
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
    if config.n_embd % config.n_head or config.n_head % config.n_kv_head:
        raise NanosealError(f"n_embd {config.n_embd}, n_head {config.n_head}, n_kv_head {config.n_kv_head}: "
                            "n_embd must divide by n_head and n_head by n_kv_head")
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
    print(f"LoRA rank {info['rank']} on GPT n_layer={c['n_layer']} n_embd={c['n_embd']} "
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


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m nanoseal.lora", description="LoRA parameter counts")
    add_lora_info_args(_parser)
    raise SystemExit(lora_info_main(_parser.parse_args()))
