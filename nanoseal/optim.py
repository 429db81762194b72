"""
Optimizers for full training, nanochat-style: Muon for the transformer's matrices, AdamW for the
embedding and the lm_head (learning rates scaled by 1/sqrt(width/768) as nanochat does) and, in the 2026
nanochat versions, for the value embeddings and the per-layer scalars (nanochat master's learning rates).
LoRA adapters have their own optimizers in nanoseal.lora.

    muon, adamw = setup_optimizers(model)
    for opt in (muon, adamw): opt.step()
"""

import torch


@torch.no_grad()
def zeropower_via_newtonschulz5(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately orthogonalise a matrix (B..., m, n) with a quintic Newton-Schulz iteration."""
    assert G.ndim >= 2, "Newton-Schulz needs a matrix"
    a, b, c = (3.4445, -4.7750, 2.0315)
    X = G.bfloat16() if G.is_cuda else G.float()
    transposed = G.size(-2) > G.size(-1)
    if transposed:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    if transposed:
        X = X.mT
    return X


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-schulz: SGD-momentum whose 2D updates are orthogonalised."""

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True, ns_steps: int = 5):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps))

    @torch.no_grad()
    def step(self, closure=None):
        """One Muon update of every parameter with a gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                assert p.ndim == 2, f"Muon only handles matrices, got shape {tuple(p.shape)}"
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g)
                buf = state["momentum_buffer"]
                buf.lerp_(g, 1 - group["momentum"])
                g = g.lerp(buf, group["momentum"]) if group["nesterov"] else buf
                update = zeropower_via_newtonschulz5(g, steps=group["ns_steps"])
                scale = max(1.0, p.size(-2) / p.size(-1)) ** 0.5
                p.add_(update.to(p.dtype), alpha=-group["lr"] * scale)


def setup_optimizers(model, unembedding_lr: float = 0.004, embedding_lr: float = 0.2,
                     matrix_lr: float = 0.02, weight_decay: float = 0.0, scalar_lr: float = 0.5
                     ) -> list[torch.optim.Optimizer]:
    """[Muon over block matrices, AdamW over the rest], with nanochat's default learning rates."""
    matrix_params = list(model.transformer.h.parameters())
    embedding_params = list(model.transformer.wte.parameters())
    lm_head_params = list(model.lm_head.parameters())
    dmodel_lr_scale = (model.config.n_embd / 768) ** -0.5  # nanochat: AdamW lrs tuned at width 768
    adam_groups = [dict(params=lm_head_params, lr=unembedding_lr * dmodel_lr_scale),
                   dict(params=embedding_params, lr=embedding_lr * dmodel_lr_scale)]
    if hasattr(model, "value_embeds"):
        adam_groups.append(dict(params=list(model.value_embeds.parameters()), lr=embedding_lr * dmodel_lr_scale * 0.5))
    if hasattr(model, "resid_lambdas"):  # the residual scale is sensitive: it compounds over layers
        adam_groups += [dict(params=[model.resid_lambdas], lr=scalar_lr * 0.01),
                        dict(params=[model.x0_lambdas], lr=scalar_lr, betas=(0.96, 0.95))]
    if hasattr(model, "smear_gate"):
        adam_groups.append(dict(params=[model.smear_gate.weight, model.smear_lambda, model.backout_lambda], lr=0.2))
    n_grouped = len(matrix_params) + sum(len(g["params"]) for g in adam_groups)
    assert n_grouped == len(list(model.parameters())), "every parameter needs a group"
    adamw = torch.optim.AdamW(adam_groups, betas=(0.8, 0.95), eps=1e-10, weight_decay=weight_decay)
    muon = Muon(matrix_params, lr=matrix_lr, momentum=0.95)
    optimizers = [muon, adamw]
    for opt in optimizers:
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return optimizers
