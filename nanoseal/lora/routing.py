"""
Which adapter each batch row runs: routing (row b -> adapter idx[b], -1 = the base model), running the base model
with every adapter off, and the per-adapter loss that trains K adapters in one batched pass as if each were alone.

    with adapter_routing(model, torch.tensor([0, 1, -1])): logits = model(idx)
    total, losses = per_adapter_loss(model, idx, targets, route, n_adapters=K)

Without routing, a K=1 model uses adapter 0 for every row (a K>1 model refuses to guess). Routing and the
disabled flag are state on the layers: one model object serves one thread at a time.
"""

import contextlib

import torch
import torch.nn as nn

from nanoseal.common import NanosealError
from nanoseal.lora.layer import _Route, lora_layers


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


def per_adapter_loss(model: nn.Module, idx: torch.Tensor, targets: torch.Tensor, route: torch.Tensor,
                     n_adapters: int, token_counts=None, doc_lens: list[list[int]] | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum over adapters of each one's mean token loss, the K losses detached), rows routed by `route`.

    Backpropagating the sum gives adapter k exactly the gradient of its own mean loss, as if trained
    alone. token_counts (K,) overrides each adapter's denominator (its valid-token count over a whole
    optimizer step), so a step split into micro-batches accumulates the same gradient. doc_lens: documents
    packed into each row (nanoseal.models), all of a row's documents belonging to that row's adapter.
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
