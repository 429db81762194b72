"""
The nanochat GPT, every architecture version nanochat has shipped since its October-2025 release, in one file:
the versions differ by a handful of components (a flag each in the `Arch` table of nanochat_versions.py) around
one shared trunk, so one class with per-component flags reads as the diff between versions, where a file per
version would repeat ~300 lines to change ten. Checkpoints of every version load as they are
(nanoseal.checkpoint detects the version from the weights), and the default (`nanochat-2025-10-13`) is the
October-2025 model nanoseal trains.

The shared trunk (every version):
- token embedding, then a parameter-free RMSNorm; rotary position embeddings from a cos/sin cache of
  10 x sequence_len positions; QK RMS-norm applied after rotary; grouped-query attention via n_kv_head
- relu^2 MLP with 4x expansion; no bias anywhere; untied lm_head; logits soft-capped
- `model(idx)` returns logits (B, T, vocab); `model(idx, targets)` returns the loss (ignore_index=-1)
- `model(idx, targets, doc_lens=[[n1, n2, ...], ...])`: several documents packed into each row, each with its
  own positions (from 0) and attending only to itself, as if each were its own row (no padding to pay for)
- `model(idx, kv_cache=cache)`: incremental decoding (nanoseal.engine.KVCache), equal to full recomputation

What each version adds, and how a checkpoint's version is told from its weights: nanoseal.models.nanochat_versions.

Deliberate differences from nanochat (same results up to float rounding): rotary tables are kept in fp32 and cast
to the activation dtype at use (nanochat keeps them in bf16 on every device; on CPU in fp32 this matches
transformers' NanoChatForCausalLM to ~1e-6); the softcap runs in the activation dtype. Work skipped because
nothing reads it: with targets, the lm_head, softcap and cross-entropy run only at positions that have a target
(not -1); `last_only=True` computes the logits of the last position only (a prefill); the last layer computes
outputs only where something reads them — the last position of a prefill, and in one row of packed documents with
targets (TTT, ReST-EM) each document from its first target on (keys and values of every position still computed,
and cached); rotary takes 4 ops instead
of 8, and when few tokens are in flight (decoding) q and k share one rotary + QK-norm pass; one new token per row
with a KV cache (greedy/sampled decoding) runs nanoseal.models.nanochat_decode, the same step in ~0.6 of the ops.

`GPTConfig.to_dict()` is what nanochat's meta_*.json stores under model_config (window_pattern only for windowed
versions), so checkpoints go both ways; `arch` is stored there only where the weights cannot tell it.

Run `python -m nanoseal.models` to print the parameter count of the default (d12) config per version.
"""

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanoseal.common import NanosealError
from nanoseal.models import nanochat_decode
from nanoseal.models.head import target_loss
from nanoseal.models.nanochat_versions import DEFAULT_ARCH, get_arch

FUSE_QK_TOKENS = 256  # up to this many tokens per forward, q and k share one rotary + norm pass (bench: CPU)
SMEAR_CHANNELS = 24  # the smear gate reads the first 24 channels of the embedding




@dataclass
class GPTConfig:
    sequence_len: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 6  # number of query heads
    n_kv_head: int = 6  # number of key/value heads (GQA when < n_head)
    n_embd: int = 768
    window_pattern: str = "L"  # S/L per layer, tiled (windowed versions only; the last layer is always L)
    arch: str = DEFAULT_ARCH  # a key of ARCHS

    def to_dict(self) -> dict:
        """The config as nanochat's meta_*.json stores it under model_config (plus arch where undetectable)."""
        d = asdict(self)
        arch = get_arch(self.arch)
        del d["arch"]
        if not arch.short_window:
            del d["window_pattern"]
        if not arch.detectable:
            d["arch"] = self.arch
        return d


def padded_vocab_size(config: GPTConfig) -> int:
    """Rows of the embedding tables: vocab_size rounded up to the version's padding."""
    pad = get_arch(config.arch).pad_vocab
    return (config.vocab_size + pad - 1) // pad * pad


def has_ve(layer_idx: int, n_layer: int) -> bool:
    """Whether a layer has a value embedding (alternating, the last layer always)."""
    return layer_idx % 2 == (n_layer - 1) % 2


def window_sizes(config: GPTConfig) -> list[int | None]:
    """Per layer, how far back a query sees (key j visible from query i when 0 <= i - j <= w); None: no limit."""
    arch = get_arch(config.arch)
    if not arch.short_window:
        return [None] * config.n_layer
    pattern = config.window_pattern.upper()
    if not pattern or set(pattern) - set("SL"):
        raise NanosealError(f"window_pattern {config.window_pattern!r}: use the letters S and L only")
    long = config.sequence_len
    short = long // 2 if arch.short_window == "L/2" else -(-long // int(arch.short_window[2:]) // 128) * 128
    sizes = [short if pattern[i % len(pattern)] == "S" else long for i in range(config.n_layer)]
    sizes[-1] = long
    return sizes


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


class Queries(NamedTuple):
    """Positions the last layer computes outputs for (keys and values come from every position): pos (Tq,) of a
    row; spans [(start, end, first query)] per packed document (None: one sequence per row)."""
    pos: torch.Tensor
    spans: list[tuple[int, int, int]] | None


def target_queries(segments: list[tuple[int, int]], targets: torch.Tensor, most: float = 0.9) -> Queries | None:
    """For one row of packed documents (segments) and its targets (T,): from each document's first target to its end
    (a loss on the output grid alone leaves most positions without one: 82 % in bench/ttt_vs_peft.py's rows); None
    when that saves under 1 - most of the positions (a loss on every token)."""
    has = (targets != -1).tolist()
    spans = []
    for s, e in segments:
        f = next((t for t in range(s, e) if has[t]), None)
        if f is not None:
            spans.append((s, e, f))
    n = sum(e - f for _, e, f in spans)
    if not spans or n > most * len(has):
        return None
    pos = torch.cat([torch.arange(f, e) for _, e, f in spans]).to(targets.device)
    return Queries(pos, spans)


def causal_mask(Tq: int, Tk: int, window: int | None, device) -> torch.Tensor:
    """(Tq, Tk) bool: key j visible from query i (the queries are the last Tq of Tk positions), 0 <= i-j <= window."""
    d = torch.arange(Tk - Tq, Tk, device=device)[:, None] - torch.arange(Tk, device=device)[None, :]
    return (d >= 0) & (d <= window) if window is not None else d >= 0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        arch = get_arch(config.arch)
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.n_embd = config.n_embd
        self.head_dim = self.n_embd // self.n_head
        assert self.n_embd % self.n_head == 0, f"n_embd {self.n_embd} not divisible by n_head {self.n_head}"
        assert self.n_kv_head <= self.n_head and self.n_head % self.n_kv_head == 0, (
            f"n_head {self.n_head} must be a multiple of n_kv_head {self.n_kv_head}"
        )
        self.qk_scale, self.ve_scale = arch.qk_scale, arch.ve_scale
        self.window = window_sizes(config)[layer_idx]  # None: attends to every earlier position
        self.c_q = nn.Linear(self.n_embd, self.n_head * self.head_dim, bias=False)
        self.c_k = nn.Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_v = nn.Linear(self.n_embd, self.n_kv_head * self.head_dim, bias=False)
        self.c_proj = nn.Linear(self.n_embd, self.n_embd, bias=False)
        if arch.ve_gate and has_ve(layer_idx, config.n_layer):
            assert self.n_embd >= arch.ve_gate, f"the value gate reads {arch.ve_gate} of {self.n_embd} channels"
            self.ve_gate = nn.Linear(arch.ve_gate, self.n_kv_head, bias=False)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache=None, segments=None,
                ve: torch.Tensor | None = None, queries: "Queries | None" = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); with `queries` only those positions' outputs (B, Tq, C), keys and values of all
        positions still computed (and cached)."""
        B, T, C = x.size()
        Tq = T if queries is None else queries.pos.numel()
        q = self.c_q(x if queries is None else x[:, queries.pos]).view(B, Tq, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        v = self.c_v(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        if ve is not None:  # value embedding, one gate per KV head from the first channels of x
            h = x[..., :self.ve_gate.in_features].contiguous()  # (a strided slice takes another, inexact kernel)
            gate = self.ve_scale * torch.sigmoid(self.ve_gate(h))  # (B, T, Hkv)
            v = v + gate.unsqueeze(-1).to(v.dtype) * ve.view(B, T, self.n_kv_head, self.head_dim).to(v.dtype)
        if B * T <= FUSE_QK_TOKENS and queries is None:  # few tokens (decoding): q and k in one pass, fewer ops
            qk = norm(rotate(torch.cat([q, k], 2), *cos_sin))
            q, k = (qk * self.qk_scale if self.qk_scale != 1.0 else qk).split([self.n_head, self.n_kv_head], 2)
        else:  # many tokens: the extra copy costs more than the ops it saves
            q_cos_sin = cos_sin if queries is None else tuple(t[:, queries.pos] for t in cos_sin)  # (1|B, Tq, 1, D)
            q, k = norm(rotate(q, *q_cos_sin)), norm(rotate(k, *cos_sin))  # rotary, then QK norm
            if self.qk_scale != 1.0:
                q, k = q * self.qk_scale, k * self.qk_scale
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # (B, Hkv, Tk, D)
        Tk = k.size(2)
        window = self.window if self.window is not None and Tk - 1 > self.window else None  # None: no key is cut
        sdpa = F.scaled_dot_product_attention
        gqa = self.n_head != self.n_kv_head
        if segments is not None and segments[1] is None:  # one row of packed documents: one call per document (no
            # work on the masked-out blocks); with queries, from each one's first target on, attending to its keys
            # (split, not slices: one backward op for all documents instead of a zero-filled row per slice)
            spans = queries.spans if queries is not None else [(s, e, s) for s, e in segments[0][0]]
            seg_of = {s: i for i, (s, _) in enumerate(segments[0][0])}
            lens = [e - s for s, e in segments[0][0]]
            qs_all = q.split([e - f for _, e, f in spans], 2)
            ks_all, vs_all = k.split(lens, 2), v.split(lens, 2)
            parts = []
            for (s, e, f), qs in zip(spans, qs_all):
                ks, vs = ks_all[seg_of[s]], vs_all[seg_of[s]]
                w = self.window if self.window is not None and e - s - 1 > self.window else None
                if f == s and w is None:
                    parts.append(sdpa(qs, ks, vs, is_causal=True, enable_gqa=gqa))
                else:
                    parts.append(sdpa(qs, ks, vs, attn_mask=causal_mask(e - f, e - s, w, q.device), enable_gqa=gqa))
            y = torch.cat(parts, 2)
        elif segments is not None:  # several rows of packed documents: one call with a block-diagonal causal mask
            mask = segments[1] if window is None else segments[1] & causal_mask(T, T, window, q.device)
            y = sdpa(q, k, v, attn_mask=mask, enable_gqa=gqa)
        elif window is None and Tq == Tk:
            y = sdpa(q, k, v, is_causal=True, enable_gqa=gqa)
        elif Tq == 1:  # the last query attends to every key before it (its last window + 1 keys)
            if window is not None:
                k, v = k[:, :, -(window + 1):], v[:, :, -(window + 1):]
            y = sdpa(q, k, v, is_causal=False, enable_gqa=gqa)
        else:  # a chunk of new queries: the prefix (within the window), causal within the chunk
            y = sdpa(q, k, v, attn_mask=causal_mask(Tq, Tk, window, q.device), enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, Tq, -1)  # (B, Tq, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=False)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c_fc(x)  # (B, T, 4C)
        x = F.relu(x).square() if torch.is_grad_enabled() else torch.relu_(x).square_()  # in place when inferring
        return self.c_proj(x)  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache=None, segments=None,
                ve: torch.Tensor | None = None, queries: "Queries | None" = None) -> torch.Tensor:
        """(B, T, C) -> (B, T, C), or (B, Tq, C) at the query positions only (see the attention)."""
        y = self.attn(norm(x), cos_sin, kv_cache, segments, ve, queries)
        x = (x if queries is None else x[:, queries.pos]) + y
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.arch = arch = get_arch(config.arch)
        window_sizes(config)  # a bad window_pattern fails here, not at the first forward
        C, vocab_rows = config.n_embd, padded_vocab_size(config)
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab_rows, C),
                "h": nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
            }
        )
        self.lm_head = nn.Linear(C, vocab_rows, bias=False)
        if arch.lambdas:  # per-layer scalars: residual scale and the skip from the embedding
            self.resid_lambdas = nn.Parameter(torch.ones(config.n_layer))
            self.x0_lambdas = nn.Parameter(torch.zeros(config.n_layer))
        if arch.ve_gate:
            kv_dim = config.n_kv_head * (C // config.n_head)
            self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(vocab_rows, kv_dim)
                                               for i in range(config.n_layer) if has_ve(i, config.n_layer)})
        if arch.smear:
            assert C >= SMEAR_CHANNELS, f"the smear gate reads {SMEAR_CHANNELS} of {C} channels"
            self.smear_gate = nn.Linear(SMEAR_CHANNELS, 1, bias=False)
            self.smear_lambda = nn.Parameter(torch.zeros(1))
            self.backout_lambda = nn.Parameter(torch.zeros(1))
        # rotary tables are cached for 10x the training length; positions past that are refused
        self.rotary_seq_len = config.sequence_len * 10
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, C // config.n_head, arch.rotary_base)
        self.register_buffer("cos", cos, persistent=False)  # (1, Tmax, 1, D/2)
        self.register_buffer("sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self) -> None:
        """nanochat's init of the version: Oct-2025's (scaled normal, zero lm_head and output projections) for the
        2025 versions, master's (uniform matrices, decaying lambdas, small positive gates) for the 2026 ones."""
        if not self.arch.lambdas:
            self.apply(self._init_weights)
            torch.nn.init.zeros_(self.lm_head.weight)
            for block in self.transformer.h:
                torch.nn.init.zeros_(block.mlp.c_proj.weight)
                torch.nn.init.zeros_(block.attn.c_proj.weight)
        else:
            n_layer, s = self.config.n_layer, 3**0.5 * self.config.n_embd**-0.5  # uniform with std 1/sqrt(C)
            torch.nn.init.normal_(self.transformer.wte.weight, mean=0.0, std=0.8)
            torch.nn.init.normal_(self.lm_head.weight, mean=0.0, std=0.001)
            for block in self.transformer.h:
                for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v):
                    torch.nn.init.uniform_(lin.weight, -s, s)
                torch.nn.init.uniform_(block.mlp.c_fc.weight, -0.4 * s, 0.4 * s)
                torch.nn.init.zeros_(block.attn.c_proj.weight)
                torch.nn.init.zeros_(block.mlp.c_proj.weight)
                if hasattr(block.attn, "ve_gate"):
                    torch.nn.init.uniform_(block.attn.ve_gate.weight, 0.0, 0.02)
            for i in range(n_layer):
                self.resid_lambdas[i] = 1.15 - 0.10 * i / max(n_layer - 1, 1)
                self.x0_lambdas[i] = 0.20 - 0.15 * i / max(n_layer - 1, 1)
            for ve in getattr(self, "value_embeds", {}).values():
                torch.nn.init.uniform_(ve.weight, -s, s)
            if self.arch.smear:
                torch.nn.init.zeros_(self.smear_lambda)
                torch.nn.init.constant_(self.backout_lambda, 0.2)
                torch.nn.init.uniform_(self.smear_gate.weight, 0.0, 0.02)
        head_dim = self.config.n_embd // self.config.n_head
        cos, sin = self._precompute_rotary_embeddings(self.rotary_seq_len, head_dim, self.arch.rotary_base,
                                                      device=self.cos.device)
        self.cos, self.sin = cos, sin

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            fan_out, fan_in = module.weight.size(0), module.weight.size(1)
            std = 1.0 / math.sqrt(fan_in) * min(1.0, math.sqrt(fan_out / fan_in))
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=1.0)

    @staticmethod
    def _precompute_rotary_embeddings(seq_len: int, head_dim: int, base: int, device=None):
        channel_range = torch.arange(0, head_dim, 2, dtype=torch.float32, device=device)
        inv_freq = 1.0 / (base ** (channel_range / head_dim))  # (D/2,)
        t = torch.arange(seq_len, dtype=torch.float32, device=device)
        freqs = torch.outer(t, inv_freq)  # (T, D/2)
        return freqs.cos()[None, :, None, :], freqs.sin()[None, :, None, :]  # (1, T, 1, D/2) each

    def get_device(self) -> torch.device:
        """Device of the weights."""
        return self.transformer.wte.weight.device

    def num_params(self) -> int:
        """Total parameter count (embeddings and lm_head included)."""
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> float:
        """Training FLOPs per token: 6 x (matmul params: all but the lookup tables and scalars) + attention
        (12 * H * D * min(window, T) per layer)."""
        lookups = self.transformer.wte.weight.numel()
        lookups += sum(p.numel() for p in getattr(self, "value_embeds", nn.ModuleDict()).parameters())
        scalars = sum(getattr(self, n).numel() for n in ("resid_lambdas", "x0_lambdas", "smear_lambda",
                                                         "backout_lambda") if hasattr(self, n))
        h, q, t = self.config.n_head, self.config.n_embd // self.config.n_head, self.config.sequence_len
        attn = sum(12 * h * q * min(w if w is not None else t, t) for w in window_sizes(self.config))
        return 6 * (self.num_params() - lookups - scalars) + attn

    def _smear(self, x: torch.Tensor, kv_cache, pos: torch.Tensor | None) -> torch.Tensor:
        """x_t += smear_lambda * sigmoid(smear_gate(x_t[:24])) * x_{t-1}, x the normed embeddings (B, T, C); with a
        KV cache x_{-1} is the previous call's last token (kept on the cache), with doc_lens a document's first
        position is left alone."""
        prev = x[:, :-1]  # (B, T-1, C): the pre-smear embedding before each position
        start = 1
        if kv_cache is not None:
            cached = getattr(kv_cache, "prev_embedding", None)  # (B, 1, C) or None at the start
            kv_cache.prev_embedding = x[:, -1:]
            if cached is not None:
                prev, start = torch.cat([cached.to(x.dtype), prev], 1), 0
        if start == x.size(1):
            return x
        h = x[:, start:, :SMEAR_CHANNELS].contiguous()  # (B, T', 24): a strided slice takes another kernel
        gate = self.smear_lambda * torch.sigmoid(self.smear_gate(h))  # (B, T', 1)
        if pos is not None:
            gate = gate * (pos[:, start:, None] > 0)  # no smear across packed documents
        return torch.cat([x[:, :start], x[:, start:] + gate.to(x.dtype) * prev], 1)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """lm_head, padding rows cropped, soft-capped."""
        logits = self.lm_head(x)  # (..., padded vocab)
        if logits.size(-1) != self.config.vocab_size:
            logits = logits[..., :self.config.vocab_size]
        softcap = self.arch.softcap
        return softcap * torch.tanh(logits / softcap)

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
        if kv_cache is not None and targets is None and doc_lens is None and nanochat_decode.applies(self, idx,
                                                                                                     kv_cache):
            return nanochat_decode.decode_one(self, idx, kv_cache)  # one token: the same function in fewer ops
        x = self.transformer.wte(idx)  # (B, T, C)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        segments, pos = None, None
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
        queries = None  # the last layer's query positions, where nothing reads the others' outputs
        if targets is None and last_only and segments is None:  # a prefill: the last position's logits only
            queries = Queries(torch.tensor([T - 1], device=idx.device), None)
        elif targets is not None and segments is not None and B == 1:  # one packed row (TTT): from each document's
            queries = target_queries(segments[0][0], targets[0])  # first target on
        x = norm(x)
        if self.arch.smear:
            x = self._smear(x, kv_cache, pos)
        x0, x_mid = x, None  # the normed embedding (the x0 skip); the mid-layer residual (backout)
        for i, block in enumerate(self.transformer.h):
            if self.arch.lambdas:
                x = self.resid_lambdas[i] * x + self.x0_lambdas[i] * x0
            ve = self.value_embeds[str(i)](idx) if self.arch.ve_gate and has_ve(i, self.config.n_layer) else None
            last = i == self.config.n_layer - 1
            x = block(x, cos_sin, kv_cache, segments, ve, queries if last else None)
            if self.arch.smear and i == self.config.n_layer // 2:
                x_mid = x if queries is None or last else x[:, queries.pos]  # at the positions x ends with
        if x_mid is not None:
            x = x - self.backout_lambda * x_mid
        x = norm(x)
        if targets is None:
            return self._logits(x[:, -1:] if last_only else x)  # (B, T, vocab)
        # training on packed documents (`--doc-attention`, the tiny preset's; not TTT's per-token losses): the fused
        # head, whose rounding differs; whole-row training (`--no-doc-attention`) keeps the plain ops, bit for bit
        head = (self.lm_head.weight, self.config.vocab_size, self.arch.softcap) if doc_lens is not None else None
        if queries is None:
            return target_loss(x, targets, self._logits, loss_reduction, head)
        loss = target_loss(x, targets[:, queries.pos], self._logits, loss_reduction, head)
        if loss_reduction == "none":  # back to one value per position (0 where nothing was computed)
            loss = torch.zeros(B * T, dtype=loss.dtype, device=loss.device).index_copy(0, queries.pos, loss)
        return loss
