"""
Optimizers of LoRA adapters: plain AdamW for one adapter, and MultiAdapterAdamW, which steps K stacked adapters as
K independent AdamW optimizers (own learning rate, warmup + cosine schedule, gradient clipping, step count and
moments), so training K adapters in one batched pass is the same computation as training each alone.

    opt = MultiAdapterAdamW(adapter_parameters(model), lr=[1e-4, 3e-4], warmup_steps=2, total_steps=10)
    total, _ = per_adapter_loss(model, idx, targets, route, 2); total.backward(); opt.step()
"""

import math

import torch


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
