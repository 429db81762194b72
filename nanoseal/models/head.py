"""
The output head's loss, shared by every model family: logits (the family's lm_head, softcap, crop) only at the
positions that have a target, cross-entropy in fp32, and with loss_reduction="none" one value per position again
(0 where there is no target). A TTT batch of output-only self-edits has a target on ~10 % of its positions, so
computing the head there alone is most of its cost saved (dev/LOG.md, 2026-11-25).

Training in fp32 on a CPU with a summed or mean loss, a soft-capped head (nanochat's) runs as one fused function
over chunks of 256 rows (SoftcapCE): the logits of a chunk stay in cache through the softcap, the log-sum-exp and,
in the backward, the softmax gradient, instead of ~15 passes over the whole (positions, vocab) array in memory;
the same loss and gradients up to float rounding, ~20 ms less of a ~280 ms tiny pretraining step (dev/LOG.md).
"""

from collections.abc import Callable

import torch
import torch.nn.functional as F


class SoftcapCE(torch.autograd.Function):
    """Summed cross-entropy of softcap * tanh(x @ W[:vocab].T / softcap) for x (N, C), W (V, C), targets (N,) in
    0..vocab-1, `chunk` rows at a time; keeps tanh's output (N, vocab) and the log-sum-exp (N,) for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, W: torch.Tensor, targets: torch.Tensor, softcap: float, vocab: int,
                chunk: int) -> torch.Tensor:
        N = x.size(0)
        Z, lse = x.new_empty(N, vocab), x.new_empty(N)  # tanh(logits / softcap) (N, vocab); log-sum-exp (N,)
        total = x.new_zeros(())
        for a in range(0, N, chunk):
            b = min(N, a + chunk)
            z = torch.mm(x[a:b], W[:vocab].t(), out=Z[a:b]).div_(softcap).tanh_()  # (n, vocab)
            logits = z * softcap
            lse[a:b] = torch.logsumexp(logits, -1)
            total += lse[a:b].sum() - logits.gather(1, targets[a:b, None]).sum()
        ctx.save_for_backward(x, W, targets, Z, lse)
        ctx.softcap, ctx.vocab, ctx.chunk = softcap, vocab, chunk
        return total

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, W, targets, Z, lse = ctx.saved_tensors
        softcap, vocab, chunk = ctx.softcap, ctx.vocab, ctx.chunk
        dx, dW = torch.empty_like(x), torch.zeros_like(W)  # W's rows past vocab (padding) get no gradient
        for a in range(0, x.size(0), chunk):
            b = min(x.size(0), a + chunk)
            z = Z[a:b]
            p = torch.exp(z * softcap - lse[a:b, None])  # softmax (n, vocab)
            p.scatter_add_(1, targets[a:b, None], p.new_full((b - a, 1), -1.0))  # minus the one-hot target
            d = p.mul_(grad).mul_(1 - z * z)  # through the softcap: d/dlogits of the loss
            torch.mm(d, W[:vocab], out=dx[a:b])
            dW[:vocab].addmm_(d.t(), x[a:b])
        return dx, dW, None, None, None, None


def target_loss(x: torch.Tensor, targets: torch.Tensor, logits_fn: Callable[[torch.Tensor], torch.Tensor],
                loss_reduction: str = "mean", softcap_head: tuple[torch.Tensor, int, float] | None = None
                ) -> torch.Tensor:
    """Cross-entropy of logits_fn(x) at the positions whose target is not -1; x (B, T, C), targets (B, T).
    softcap_head: (lm_head weight, vocab, softcap) when logits_fn is that soft-capped head (fused when it pays)."""
    targets = targets.reshape(-1)
    x = x.reshape(-1, x.size(-1))  # (B*T, C)
    keep = (targets != -1).nonzero().squeeze(1)  # positions with a target: the only logits anyone reads
    if keep.numel() < targets.numel():
        x, kept_targets = x.index_select(0, keep), targets.index_select(0, keep)
    else:
        kept_targets = targets
    if (softcap_head is not None and loss_reduction in ("mean", "sum") and kept_targets.numel() > 0
            and x.device.type == "cpu" and x.dtype == softcap_head[0].dtype == torch.float32
            and torch.is_grad_enabled()):
        W, vocab, softcap = softcap_head
        loss = SoftcapCE.apply(x, W, kept_targets, float(softcap), vocab, 256)
        return loss / kept_targets.numel() if loss_reduction == "mean" else loss
    loss = F.cross_entropy(logits_fn(x).float(), kept_targets, ignore_index=-1, reduction=loss_reduction)
    if loss_reduction == "none" and keep.numel() < targets.numel():  # back to one value per position
        loss = torch.zeros(targets.numel(), dtype=loss.dtype, device=loss.device).index_copy(0, keep, loss)
    return loss
