"""
The nanochat GPT's one-token decoding step with a KV cache, in about 0.6 of the ops of the general forward.

A decode step of a small model is hundreds of tiny ops whose cost is the call, not the arithmetic (the tiny
preset's general forward dispatches ~950 aten ops, nested ones included): this step computes the same function as
`GPT.forward(idx, kv_cache=cache)` for idx (B, 1) in ~590:
- q, k and v from one matmul when c_q, c_k, c_v are plain nn.Linear of a small model (their weights concatenated
  once and kept until a weight changes: its storage or version counter moves), else from the three modules
- rotary as one (D, D) matmul per layer with the position's rotation matrix (built once per step), then one
  QK norm for q and k together
- RMSNorm in four ops, the mean of squares as a matmul by a 1/C column (F.rms_norm is eight on CPU)
- k and v written into the preallocated cache in one copy per layer, attention reads the cache in place
- residual adds inside the matmuls (addmm), relu^2 and the softcap in place, x kept 2-D (B, C), little Python
On the tiny preset (AVX2, 1 thread) a step takes ~0.6 of the general forward's time at batch 1.
Results equal the general forward up to float rounding (sums in another order: the norms' means, the rotary,
one matmul for three, addmm); only float32 takes this path.

`GPT.forward` takes this path by itself when it applies (one token, a cache with room, no autograd, no
autocast); `decode_one(model, idx, cache)` is the step, `applies(model, idx, cache)` the test, and ENABLED = False
turns it off (bench/decode.py times both).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSE_QKV_MAX_BYTES = 4 * 2**20  # per layer: small models only, where a call costs more than its arithmetic (d12: 7 MB)
ENABLED = True


def applies(model, idx: torch.Tensor, cache) -> bool:
    """Whether decode_one computes model(idx, kv_cache=cache): one token, grad and autocast off, fp32, a cache
    with room."""
    kv = getattr(cache, "kv_cache", None)
    return (ENABLED and idx.size(1) == 1 and kv is not None and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled(idx.device.type) and cache.pos + 1 <= kv.size(4)
            and kv.dtype == model.transformer.wte.weight.dtype == torch.float32)


def _tables(model, dtype: torch.dtype) -> tuple:
    """What every step reuses, built once per dtype and device: the swap-halves permutation (D, D), the averaging
    columns 1/C (C, 1) and 1/D (D, 1), and rms_norm's eps."""
    key = (model.cos.device, dtype)
    cached = getattr(model, "_decode_tables", None)
    if cached is None or cached[0] != key:
        D, C = 2 * model.cos.size(-1), model.config.n_embd
        kw = dict(dtype=dtype, device=model.cos.device)
        swap = torch.eye(D, **kw).roll(D // 2, 0)  # x @ swap = swap_halves(x)
        cached = (key, swap, torch.full((C, 1), 1 / C, **kw), torch.full((D, 1), 1 / D, **kw),
                  torch.tensor([torch.finfo(dtype).eps], **kw))
        model._decode_tables = cached
    return cached[1:]


def _rotation(model, pos: int, swap: torch.Tensor) -> torch.Tensor:
    """(D, D) matrix M with x @ M = x * (cos|cos) + swap_halves(x) * (sin|-sin) at position pos (the general
    forward's rotary), so rotary is one small matmul per layer."""
    cos, sin = model.cos[0, pos, 0].to(swap.dtype), model.sin[0, pos, 0].to(swap.dtype)  # (D/2,)
    return torch.diag(torch.cat([cos, cos])).addcmul_(swap, torch.cat([sin, -sin]))


def _norm(x: torch.Tensor, mean_col: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """F.rms_norm over the last dim of 2-D x (N, C) with the mean of squares as a matmul by a 1/C column: four ops
    where rms_norm's composite takes eight (~6 vs ~9 us on a small row); equal up to float rounding."""
    return x * torch.addmm(eps, x * x, mean_col).rsqrt_()


def _qkv_weight(attn, cq: nn.Module, ck: nn.Module, cv: nn.Module) -> torch.Tensor | None:
    """(c_q | c_k | c_v weights)^T, (C, (H + 2 Hkv) D), kept while the three stay the same; None when any is not
    a plain nn.Linear (a LoRA layer) or the copy would be too large."""
    if type(cq) is not nn.Linear or type(ck) is not nn.Linear or type(cv) is not nn.Linear:
        return None
    wq, wk, wv = cq.weight, ck.weight, cv.weight
    key = (wq._version, wk._version, wv._version, wq.data_ptr(), wk.data_ptr(), wv.data_ptr())
    cached = attn.__dict__.get("_decode_qkv")
    if cached is None or cached[0] != key:
        if 3 * wq.numel() * wq.element_size() > FUSE_QKV_MAX_BYTES:
            return None
        with torch.inference_mode(False), torch.no_grad():
            cached = (key, torch.cat([wq, wk, wv], 0).t())
        attn.__dict__["_decode_qkv"] = cached
    return cached[1]


def decode_one(model, idx: torch.Tensor, cache) -> torch.Tensor:
    """Logits (B, 1, vocab) of one new token per row, appending its keys/values to the cache (see the top)."""
    B = idx.size(0)
    c, arch = model.config, model.arch
    H, Hkv, D, C = c.n_head, c.n_kv_head, c.n_embd // c.n_head, c.n_embd
    pos, kv = cache.pos, cache.kv_cache  # kv: (L, 2, B, Hkv, Tmax, D)
    t1, n_qk = pos + 1, H + Hkv
    x = model.transformer.wte(idx).view(B, C)  # (B, C)
    swap, mean_c, mean_d, eps = _tables(model, x.dtype)
    rot = _rotation(model, pos, swap)  # (D, D)
    x = _norm(x, mean_c, eps)
    if arch.smear:
        x = model._smear(x.view(B, 1, C), cache, None).view(B, C)
    x0, x_mid = x, None
    kv_all, kv_new = kv.narrow(4, 0, t1), kv.select(4, pos)  # (L, 2, B, Hkv, T, D), this position's (L, 2, B, Hkv, D)
    for i, block in enumerate(model.transformer.h):
        attn, mlp = block.attn, block.mlp
        cq, ck, cv, cp = attn.c_q, attn.c_k, attn.c_v, attn.c_proj
        if arch.lambdas:
            x = model.resid_lambdas[i] * x + model.x0_lambdas[i] * x0
        h = _norm(x, mean_c, eps)
        w = _qkv_weight(attn, cq, ck, cv)
        qkv = torch.mm(h, w) if w is not None else torch.cat([cq(h), ck(h), cv(h)], 1)
        qkv = qkv.view(B, H + 2 * Hkv, D)
        if arch.ve_gate and str(i) in model.value_embeds:  # value embedding, gated per KV head, added to v
            ve = model.value_embeds[str(i)](idx).view(B, Hkv, D)
            gate = attn.ve_scale * torch.sigmoid(attn.ve_gate(h[:, :attn.ve_gate.in_features].contiguous()))
            qkv[:, n_qk:].add_(gate.unsqueeze(-1).to(qkv.dtype) * ve.to(qkv.dtype))
        qk = _norm(torch.matmul(qkv[:, :n_qk], rot).view(B * n_qk, D), mean_d, eps)  # rotary, then QK norm
        if attn.qk_scale != 1.0:
            qk = qk * attn.qk_scale
        qkv[:, :n_qk] = qk.view(B, n_qk, D)  # k next to v: one copy writes both into the cache
        kv_new[i].copy_(qkv[:, H:].view(B, 2, Hkv, D).transpose(0, 1))
        if attn.window is None or t1 <= attn.window + 1:
            k, v = kv_all[i].unbind(0)  # (B, Hkv, T, D) each
        else:  # the last window + 1 keys
            k, v = kv[i].narrow(3, t1 - attn.window - 1, attn.window + 1).unbind(0)
        y = F.scaled_dot_product_attention(qkv[:, :H].unsqueeze(2), k, v, enable_gqa=H != Hkv)  # (B, H, 1, D)
        y = y.view(B, H * D)
        x = torch.addmm(x, y, cp.weight.t()) if type(cp) is nn.Linear else x + cp(y)
        h = _norm(x, mean_c, eps)
        fc, proj = mlp.c_fc, mlp.c_proj
        u = torch.mm(h, fc.weight.t()) if type(fc) is nn.Linear else fc(h)  # (B, 4C)
        u = torch.relu_(u).square_()
        x = torch.addmm(x, u, proj.weight.t()) if type(proj) is nn.Linear else x + proj(u)
        if x_mid is None and arch.smear and i == c.n_layer // 2:
            x_mid = x
    cache.pos = t1
    if x_mid is not None:
        x = x - model.backout_lambda * x_mid
    x = _norm(x, mean_c, eps)
    head = model.lm_head
    logits = torch.mm(x, head.weight.t()) if type(head) is nn.Linear else head(x)  # (B, V padded)
    if logits.size(-1) != c.vocab_size:
        logits = logits[:, :c.vocab_size]
    s = arch.softcap
    return logits.div_(s).tanh_().mul_(s).unsqueeze(1)  # (B, 1, vocab)
