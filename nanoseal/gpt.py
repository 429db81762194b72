"""
The GPT: nanochat's October-2025 architecture, unchanged, so nanochat checkpoints load as they are.

- token embedding, then a parameter-free RMSNorm
- rotary position embeddings (base 10000) from a cos/sin cache of 10 x sequence_len positions
- QK RMS-norm applied after rotary
- grouped-query attention via n_kv_head
- relu^2 MLP with 4x expansion
- no bias anywhere, untied lm_head, logits soft-capped at 15
- `model(idx)` returns logits (B, T, vocab); `model(idx, targets)` returns the loss (ignore_index=-1)
- `model(idx, targets, doc_lens=[[n1, n2, ...], ...])`: several documents packed into each row, each with its
  own positions (from 0) and attending only to itself, as if each were its own row (no padding to pay for)

One deliberate difference from nanochat: nanochat keeps the rotary cos/sin tables in bf16 on every
device; we keep them in fp32 and cast them to the activation dtype at use. On CUDA (bf16 activations)
this is the same computation; on CPU in fp32 it is more exact and matches transformers'
NanoChatForCausalLM to ~1e-6.

Work skipped because nothing reads it (results unchanged up to float rounding): with targets, the lm_head,
softcap and cross-entropy run only at positions that have a target (not -1); `last_only=True` computes the
logits of the last position only (a prefill); rotary takes 4 ops instead of 8, and when few tokens are
in flight (decoding) q and k share one rotary + QK-norm pass.

Run `python -m nanoseal.gpt` to print the parameter count of the default (d12) config.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

SOFTCAP = 15.0
ROTARY_BASE = 10000
FUSE_QK_TOKENS = 256  # up to this many tokens per forward, q and k share one rotary + norm pass (bench: CPU)


@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # number of query heads
    n_kv_head: int = 6  # number of key/value heads (GQA when < n_head)
    n_embd: int = 768

    def to_dict(self) -> dict:
        """The config as a plain dict (what meta_*.json stores under model_config)."""
        return asdict(self)


def norm(x: torch.Tensor) -> torch.Tensor:
    """Parameter-free RMSNorm over the last dimension."""
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary_emb(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., i], x[..., i + d/2]) by the position's angles. x: (B, T, H, D)."""
    assert x.ndim == 4, f"expected (B, T, H, D), got shape {tuple(x.shape)}"
    d = x.shape[3] // 2
    x1, x2 = x[..., :d], x[..., d:]
    y1 = x1 * cos + x2 * sin
    y2 = x1 * (-sin) + x2 * cos
    return torch.cat([y1, y2], 3).to(x.dtype)


def rotary_tables(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Half-width (cos, sin) as the full-width tables `rotate` takes: (cos|cos, sin|-sin)."""
    return torch.cat([cos, cos], -1), torch.cat([sin, -sin], -1)


def rotate(x: torch.Tensor, cos2: torch.Tensor, sin2: torch.Tensor) -> torch.Tensor:
    """apply_rotary_emb with full-width tables in 4 ops instead of 8: x * cos2 + swap_halves(x) * sin2.
    Each output element is the same products summed (in swapped order), so the result is bitwise the same."""
    d = x.shape[-1] // 2
    return (x * cos2 + torch.cat([x[..., d:], x[..., :d]], -1) * sin2).to(x.dtype)


def doc_segments(doc_lens: list[list[int]], T: int) -> tuple[list[list[tuple[int, int]]], torch.Tensor, torch.Tensor]:
    """Per row, the (start, end) of each packed document plus the padding after them (a segment of its own);
    the (B, T) positions (each document counts from 0) and segment ids (B, T)."""
    segments, positions, ids = [], [], []
    for lens in doc_lens:
        assert all(n > 0 for n in lens) and sum(lens) <= T, f"documents {lens} do not fit a row of {T}"
        lens = list(lens) + ([T - sum(lens)] if sum(lens) < T else [])
        starts = [sum(lens[:i]) for i in range(len(lens))]
        segments.append([(s, s + n) for s, n in zip(starts, lens)])
        positions.append(torch.cat([torch.arange(n) for n in lens]))
        ids.append(torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens)))
    return segments, torch.stack(positions), torch.stack(ids)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.n_embd = config.n_embd
        self.head_dim = self.n_embd // self.n_head
        assert self.n_embd % self.n_head == 0, f"n_embd {self.n_embd} not divisible by n_head {self.n_head}"
        assert self.n_kv_head <= self.n_head and self.n_head % self.n_kv_head == 0, (
            f"n_head {self.n_head} must be a multiple of n_kv_head {self.n_kv_head}"
        )
        self.c_q = nn.Linear(self.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(self.n_embd, self.n_embd, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache=None, segments=None) -> torch.Tensor:
        B, T, C = x.size()
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)  # (B, T, H, D)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        if B * T <= FUSE_QK_TOKENS:  # few tokens (decoding): q and k in one pass, fewer ops
            q, k = norm(rotate(torch.cat([q, k], 2), *cos_sin)).split([self.n_head, self.n_kv_head], 2)
        else:  # many tokens: the extra copy costs more than the ops it saves
            q, k = norm(rotate(q, *cos_sin)), norm(rotate(k, *cos_sin))  # rotary, then QK norm
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # (B, Hkv, Tk, D)
        Tq, Tk = q.size(2), k.size(2)
        enable_gqa = self.n_head != self.n_kv_head
        if segments is not None:  # packed documents: causal attention within each one
            segs, mask = segments
            if mask is not None:  # several rows: one call with a block-diagonal causal mask
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=enable_gqa)
            else:  # one row: one causal call per document (no work on the masked-out blocks)
                y = torch.cat([F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True,
                                                              enable_gqa=enable_gqa) for s, e in segs[0]], 2)
        elif kv_cache is None or Tq == Tk:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=enable_gqa)
        elif Tq == 1:
            # one new query attends to everything in the cache
            y = F.scaled_dot_product_attention(q, k, v, is_causal=False, enable_gqa=enable_gqa)
        else:
            # a chunk of new queries: full view of the prefix, causal within the chunk
            prefix_len = Tk - Tq
            attn_mask = torch.zeros((Tq, Tk), dtype=torch.bool, device=q.device)
            attn_mask[:, :prefix_len] = True
            attn_mask[:, prefix_len:] = torch.tril(torch.ones((Tq, Tq), dtype=torch.bool, device=q.device))
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, enable_gqa=enable_gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, 4C)
        x = F.relu(x).square()
        return self.c_proj(x)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache=None, segments=None) -> torch.Tensor:
        x = x + self.attn(norm(x), cos_sin, kv_cache, segments)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # rotary tables are cached for 10x the training length; positions past that are refused
        self.rotary_seq_len = config.sequence_len * 10
        head_dim = config.n_embd // config.n_head
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, head_dim)
        self.register_buffer("cos", cos, persistent=False)  # (1, Tmax, 1, D/2)
        self.register_buffer("sin", sin, persistent=False)

    def init_weights(self) -> None:
        """nanochat's init: scaled normal for linears, N(0,1) embedding, zero lm_head and output projections."""
        self.apply(self._init_weights)
        torch.nn.init.zeros_(self.lm_head.weight)
        for block in self.transformer.h:
            torch.nn.init.zeros_(block.mlp.c_proj.weight)
            torch.nn.init.zeros_(block.attn.c_proj.weight)
        head_dim = self.config.n_embd // self.config.n_head
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, head_dim, device=self.cos.device)
        self.cos, self.sin = cos, sin

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            fan_out, fan_in = module.weight.size(0), module.weight.size(1)
            std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=1.0)

    @staticmethod
    def _precompute_rotary_embeddings(seq_len: int, head_dim: int, base: int = ROTARY_BASE, device=None):
        channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channel_range / head_dim))  # (D/2,)
        t = torch.arange(seq_len, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)  # (T, D/2)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]  # (1, T, 1, D/2) each

    def get_device(self) -> torch.device:
        """Device of the weights."""
        return self.transformer.wte.weight.device

    def num_params(self) -> int:
        """Total parameter count (embedding and lm_head included)."""
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> float:
        """Training FLOPs per token: 6 x (non-embedding params) + attention (12 * L * H * D * T)."""
        nparams_embedding = self.transformer.wte.weight.numel()
        nl, h = self.config.n_layer, self.config.n_head
        q, t = self.config.n_embd // self.config.n_head, self.config.sequence_len
        return 6 * (self.num_params() - nparams_embedding) + 12 * nl * h * q * t

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache=None,
                loss_reduction: str = "mean", doc_lens: list[list[int]] | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) (B, 1, vocab with last_only), or with targets the loss (per token, flat, for
        loss_reduction="none"). doc_lens: the lengths of the documents packed into each row (see the top)."""
        B, T = idx.size()
        T0 = 0 if kv_cache is None else kv_cache.get_pos()
        longest = T0 + T if doc_lens is None else max(max(lens, default=0) for lens in doc_lens)
        if longest > self.cos.size(1):
            raise ValueError(
                f"sequence of {longest} positions exceeds the rotary cache of {self.cos.size(1)} "
                f"(10 x sequence_len={self.config.sequence_len}); use a model with a larger sequence_len"
            )
        x = self.transformer.wte(idx)  # (B, T, C)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        segments = None
        if doc_lens is None:
            cos, sin = self.cos[:, T0:T0 + T], self.sin[:, T0:T0 + T]  # (1, T, 1, D/2)
        else:
            assert kv_cache is None and len(doc_lens) == B, "doc_lens: one list per row, no KV cache"
            segs, pos, seg_ids = doc_segments(doc_lens, T)
            pos, seg_ids = pos.to(idx.device), seg_ids.to(idx.device)
            cos, sin = self.cos[0, pos], self.sin[0, pos]  # (B, T, 1, D/2)
            mask = None
            if B > 1:  # (B, 1, T, T): same segment and not in the future
                causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
                mask = ((seg_ids[:, :, None] == seg_ids[:, None, :]) & causal).unsqueeze(1)
            segments = (segs, mask)
        cos_sin = rotary_tables(cos.to(dtype), sin.to(dtype))
        x = norm(x)
        for block in self.transformer.h:
            x = block(x, cos_sin, kv_cache, segments)
        x = norm(x)
        if targets is None:
            if last_only:
                x = x[:, -1:]
            logits = self.lm_head(x)  # (B, T, vocab)
            return SOFTCAP * torch.tanh(logits / SOFTCAP)
        targets = targets.reshape(-1)
        x = x.reshape(-1, x.size(-1))
        keep = (targets != -1).nonzero().squeeze(1)  # positions with a target: the only logits anyone reads
        if keep.numel() < targets.numel():
            x, kept_targets = x.index_select(0, keep), targets.index_select(0, keep)
        else:
            kept_targets = targets
        logits = self.lm_head(x)  # (N, vocab)
        logits = SOFTCAP * torch.tanh(logits / SOFTCAP)
        loss = F.cross_entropy(logits.float(), kept_targets, ignore_index=-1, reduction=loss_reduction)
        if loss_reduction == "none" and keep.numel() < targets.numel():  # back to one value per position
            loss = torch.zeros(targets.numel(), dtype=loss.dtype, device=loss.device).index_copy(0, keep, loss)
        return loss


if __name__ == "__main__":
    with torch.device("meta"):
        model = GPT(GPTConfig())
    n = model.num_params()
    print(f"default GPTConfig: {n:,} parameters ({n / 1e6:.1f}M)")
