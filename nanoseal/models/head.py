"""
The output head's loss, shared by every model family: logits (the family's lm_head, softcap, crop) only at the
positions that have a target, cross-entropy in fp32, and with loss_reduction="none" one value per position again
(0 where there is no target). A TTT batch of output-only self-edits has a target on ~10 % of its positions, so
computing the head there alone is most of its cost saved (dev/LOG.md, 2026-11-25).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F


def target_loss(x: torch.Tensor, targets: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                loss_reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of logits_fn(x) at the positions whose target is not -1; x (B, T, C), targets (B, T)."""
    targets = targets.reshape(-1)
    x = x.reshape(-1, x.size(-1))  # (B*T, C)
    keep = (targets != -1).nonzero().squeeze(1)  # positions with a target: the only logits anyone reads
    if keep.numel() < targets.numel():
        x, kept_targets = x.index_select(0, keep), targets.index_select(0, keep)
    else:
        kept_targets = targets
    loss = F.cross_entropy(logits_fn(x).float(), kept_targets, ignore_index=-1, reduction=loss_reduction)
    if loss_reduction == "none" and keep.numel() < targets.numel():  # back to one value per position
        loss = torch.zeros(targets.numel(), dtype=loss.dtype, device=loss.device).index_copy(0, keep, loss)
    return loss
