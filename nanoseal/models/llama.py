"""
The Llama family: Llama 3.x (Llama-3.2-1B-Instruct, SEAL's backbone), SmolLM2 (Llama-architecture), Qwen2/2.5 and
Mistral without sliding windows, as transformers' LlamaForCausalLM / Qwen2ForCausalLM / MistralForCausalLM compute
them, behind the interface of nanoseal.models (so the engine, LoRA, TTT and ReST-EM run them unchanged).

The members differ by a few config flags (`LlamaConfig`), read from a Hugging Face config.json by `from_hf_config`:
- RMSNorm with a weight and the config's eps (computed in fp32, as transformers does), before attention and MLP
- rotary embeddings on (q, k) with `rope_theta`, optionally Llama 3's frequency scaling (rope_type "llama3"),
  half-split pairs (x[i], x[i + d/2]); `head_dim` from the config
- grouped-query attention (n_kv_head), no softcap, no QK norm; biases on q/k/v (Qwen2, or attention_bias: all four)
- SwiGLU MLP: down(silu(gate(x)) * up(x)); tied or untied input/output embeddings

Module paths and state-dict keys are transformers' own (model.layers.0.self_attn.q_proj.weight, ...), so a
checkpoint's safetensors load as they are, and LoRA adapters saved here name the modules PEFT finds on the
transformers model. nanochat's LoRA target names are understood too (`LORA_ALIASES`): SEAL's targets
("c_q", "c_v", "c_fc", "mlp.c_proj") are q_proj, v_proj, gate_proj + up_proj and down_proj here. With tied
embeddings there is no lm_head module (the logits use the embedding matrix), as in the checkpoint files.

`config.sequence_len` is the context nanoseal budgets prompts and TTT rows for: max_position_embeddings, capped
at MAX_SEQUENCE_LEN (8,192), while `rotary_seq_len` (positions the model can address) is max_position_embeddings.
Loading a folder (config.json, safetensors, tokenizer): nanoseal.hf_checkpoint.
"""

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from nanoseal.common import NanosealError
from nanoseal.models.head import target_loss
from nanoseal.models.nanochat import causal_mask, doc_segments, rotate

ARCHS = ("llama", "qwen2", "mistral")  # config.json model_type values this file implements
MAX_SEQUENCE_LEN = 8192  # the budget for prompts and TTT rows (the models address more positions)
ROPE_TYPES = ("default", "llama3")

# nanochat's module names (nanoseal.lora's DEFAULT_TARGETS / SEAL_TARGETS) -> this family's
LORA_ALIASES = {
    "c_q": ("q_proj",), "c_k": ("k_proj",), "c_v": ("v_proj",), "c_fc": ("gate_proj", "up_proj"),
    "c_proj": ("o_proj", "down_proj"),
    "attn.c_q": ("self_attn.q_proj",), "attn.c_k": ("self_attn.k_proj",), "attn.c_v": ("self_attn.v_proj",),
    "attn.c_proj": ("self_attn.o_proj",), "mlp.c_fc": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.c_proj": ("mlp.down_proj",),
}


@dataclass
class LlamaConfig:
    sequence_len: int = 8192  # prompt / TTT budget (see the top)
    vocab_size: int = 128256
    n_layer: int = 16
    n_head: int = 32
    n_kv_head: int = 8
    n_embd: int = 2048
    head_dim: int = 64
    intermediate_size: int = 8192
    rms_norm_eps: float = 1e-5
    rope_theta: float = 500000.0
    rope_scaling: dict | None = None  # llama3: factor, low_freq_factor, high_freq_factor, original_max_position_...
    max_position_embeddings: int = 131072
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = True
    arch: str = "llama"  # the config.json model_type

    def to_dict(self) -> dict:
        """The config as a checkpoint's meta stores it under model_config (arch tells the family)."""
        return asdict(self)


def from_hf_config(cfg: dict, where: str) -> LlamaConfig:
    """The LlamaConfig of a Hugging Face config.json (published and transformers-5 layouts); anything it asks for
    that this file does not implement is a one-line NanosealError naming the field."""
    model_type = cfg.get("model_type")
    if model_type not in ARCHS:
        raise NanosealError(f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(ARCHS)}")

    def need(key: str, kind=int, default=None):
        value = cfg.get(key, default)
        ok = isinstance(value, kind) and not isinstance(value, bool) and (kind is not int or value >= 1)
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
        if not ok:
            raise NanosealError(f"{where}: field {key!r} must be a positive {kind.__name__}, got {value!r:.60}")
        return float(value) if kind is float else value

    def refuse(key: str, why: str) -> None:
        raise NanosealError(f"{where}: field {key!r} is not supported ({why})")

    if cfg.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", f"{cfg['hidden_act']!r}; only silu (SwiGLU)")
    if (cfg.get("pretraining_tp") or 1) != 1:
        refuse("pretraining_tp", "only 1")
    if cfg.get("attention_dropout") not in (None, 0, 0.0):
        refuse("attention_dropout", f"{cfg['attention_dropout']!r}; only 0")
    for key in ("quantization_config", "final_logit_softcapping", "attn_logit_softcapping", "logits_scaling",
                "embedding_multiplier", "residual_multiplier", "attention_multiplier", "partial_rotary_factor"):
        if cfg.get(key) not in (None, 1, 1.0):
            refuse(key, f"{cfg[key]!r:.60}")
    for key in ("rope_interleaved", "use_mrope", "use_qk_norm"):
        if cfg.get(key):
            refuse(key, "true")
    if model_type == "qwen2" and cfg.get("use_sliding_window"):
        refuse("use_sliding_window", "sliding-window attention")
    window = cfg.get("sliding_window")
    if model_type == "mistral" and window not in (None, 0) and not (
            isinstance(window, int) and isinstance(cfg.get("max_position_embeddings"), int)
            and window >= cfg["max_position_embeddings"]):
        refuse("sliding_window", f"{window!r:.40}: sliding-window attention")
    layer_types = cfg.get("layer_types")
    if layer_types is not None and any(t != "full_attention" for t in layer_types):
        refuse("layer_types", "only full_attention layers")
    # rotary: transformers 5 writes rope_parameters (theta inside), the published folders rope_theta + rope_scaling
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    rope_key = "rope_parameters" if cfg.get("rope_parameters") else "rope_scaling"
    if not isinstance(rope, dict):
        raise NanosealError(f"{where}: field {rope_key!r} must be an object, got {rope!r:.60}")
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in ROPE_TYPES:
        refuse(rope_key, f"rope_type {rope_type!r}; supported: {', '.join(ROPE_TYPES)}")
    theta = rope.get("rope_theta", cfg.get("rope_theta", 10000.0))
    if not isinstance(theta, (int, float)) or isinstance(theta, bool) or not theta > 1:
        raise NanosealError(f"{where}: field 'rope_theta' must be a number > 1, got {theta!r:.60}")
    scaling = None
    if rope_type == "llama3":
        scaling = {}
        for key in ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"):
            v = rope.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise NanosealError(f"{where}: field {rope_key}.{key} must be a positive number, got {v!r:.40}")
            scaling[key] = v
        if not scaling["high_freq_factor"] > scaling["low_freq_factor"]:
            raise NanosealError(f"{where}: field {rope_key}: high_freq_factor must exceed low_freq_factor")
        scaling = {"rope_type": "llama3", **scaling}
    n_embd, n_head = need("hidden_size"), need("num_attention_heads")
    n_kv_head = need("num_key_value_heads", default=n_head)
    head_dim = cfg.get("head_dim") or (n_embd // n_head)
    if not isinstance(head_dim, int) or head_dim < 2 or head_dim % 2:
        raise NanosealError(f"{where}: field 'head_dim' must be an even integer >= 2, got {head_dim!r:.40}")
    if n_head % n_kv_head:
        raise NanosealError(f"{where}: field 'num_attention_heads' ({n_head}) must be a multiple of "
                            f"num_key_value_heads ({n_kv_head})")
    max_pos = need("max_position_embeddings")
    attention_bias = bool(cfg.get("attention_bias", False))
    return LlamaConfig(
        sequence_len=min(max_pos, MAX_SEQUENCE_LEN), vocab_size=need("vocab_size"), n_layer=need("num_hidden_layers"),
        n_head=n_head, n_kv_head=n_kv_head, n_embd=n_embd, head_dim=head_dim,
        intermediate_size=need("intermediate_size"), rms_norm_eps=need("rms_norm_eps", float, 1e-6),
        rope_theta=float(theta), rope_scaling=scaling, max_position_embeddings=max_pos,
        qkv_bias=model_type == "qwen2" or attention_bias, o_bias=attention_bias,
        mlp_bias=bool(cfg.get("mlp_bias", False)), tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        arch=model_type)


def config_from_dict(d: dict, where: str) -> LlamaConfig:
    """A LlamaConfig from its to_dict() (a saved policy's meta); one line on unknown or missing fields."""
    known = set(LlamaConfig.__dataclass_fields__)
    if set(d) != known:
        raise NanosealError(f"{where}: model_config of a {d.get('arch')} model has unsupported fields "
                            f"{sorted(set(d) - known)} / lacks {sorted(known - set(d))}")
    return LlamaConfig(**d)


def inv_frequencies(config: LlamaConfig, device=None) -> torch.Tensor:
    """Rotary inverse frequencies (head_dim/2,), with Llama 3's scaling when the config has it (Meta's formula:
    long wavelengths divided by factor, short ones kept, a smooth blend between)."""
    d = config.head_dim
    inv_freq = 1.0 / (config.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64, device=device).float() / d))
    s = config.rope_scaling
    if not s:
        return inv_freq
    factor, low, high, old = s["factor"], s["low_freq_factor"], s["high_freq_factor"], \
        s["original_max_position_embeddings"]
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old / low, inv_freq / factor, inv_freq)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / high) * ~(wavelen > old / low)
    return torch.where(medium, smoothed, scaled)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype  # normalised in fp32, scaled in the input dtype (as transformers does)
        return self.weight * F.rms_norm(x.float(), (x.size(-1),), eps=self.eps).to(dtype)


class Attention(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.n_kv_head, config.head_dim
        assert self.n_head % self.n_kv_head == 0, f"n_head {self.n_head} not a multiple of n_kv_head {self.n_kv_head}"
        C, D = config.n_embd, config.head_dim
        self.q_proj = nn.Linear(C, self.n_head * D, bias=config.qkv_bias)
        self.k_proj = nn.Linear(C, self.n_kv_head * D, bias=config.qkv_bias)
        self.v_proj = nn.Linear(C, self.n_kv_head * D, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.n_head * D, C, bias=config.o_bias)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache=None, segments=None) -> torch.Tensor:
        B, T, _ = x.size()
        q = rotate(self.q_proj(x).view(B, T, self.n_head, self.head_dim), *cos_sin)  # (B, T, H, D)
        k = rotate(self.k_proj(x).view(B, T, self.n_kv_head, self.head_dim), *cos_sin)  # (B, T, Hkv, D)
        v = self.v_proj(x).view(B, T, self.n_kv_head, self.head_dim)  # (B, T, Hkv, D)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, T, D)
        if kv_cache is not None:
            k, v = kv_cache.insert_kv(self.layer_idx, k, v)  # (B, Hkv, Tk, D)
        Tq, Tk = q.size(2), k.size(2)
        sdpa, gqa = F.scaled_dot_product_attention, self.n_head != self.n_kv_head
        if segments is not None:  # packed documents: causal attention within each one
            segs, mask = segments
            if mask is not None:  # several rows: one call with a block-diagonal causal mask
                y = sdpa(q, k, v, attn_mask=mask, enable_gqa=gqa)
            else:  # one row: one call per document
                y = torch.cat([sdpa(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True, enable_gqa=gqa)
                               for s, e in segs[0]], 2)
        elif Tq == Tk:
            y = sdpa(q, k, v, is_causal=True, enable_gqa=gqa)
        elif Tq == 1:  # one new query attends to the whole cache
            y = sdpa(q, k, v, is_causal=False, enable_gqa=gqa)
        else:  # a chunk of new queries: the prefix, causal within the chunk
            y = sdpa(q, k, v, attn_mask=causal_mask(Tq, Tk, None, q.device), enable_gqa=gqa)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, T, H*D)
        return self.o_proj(y)


class MLP(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        C, hidden, bias = config.n_embd, config.intermediate_size, config.mlp_bias
        self.gate_proj = nn.Linear(C, hidden, bias=bias)
        self.up_proj = nn.Linear(C, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, C, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # (B, T, C)


class DecoderLayer(nn.Module):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.input_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.self_attn = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.n_embd, config.rms_norm_eps)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cos_sin: tuple, kv_cache=None, segments=None) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, kv_cache, segments)
        return x + self.mlp(self.post_attention_layernorm(x))


class LlamaModel(nn.Module):
    """The decoder stack (transformers' `model.` prefix): embeddings, layers, final norm."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.n_embd)
        self.layers = nn.ModuleList([DecoderLayer(config, i) for i in range(config.n_layer)])
        self.norm = RMSNorm(config.n_embd, config.rms_norm_eps)


class Llama(nn.Module):
    lora_aliases = LORA_ALIASES  # nanochat target names -> this family's (nanoseal.lora reads it)

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if config.arch not in ARCHS:
            raise NanosealError(f"unknown Llama-family architecture {config.arch!r}; supported: {', '.join(ARCHS)}")
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.rotary_seq_len = config.max_position_embeddings
        self.register_buffer("inv_freq", inv_frequencies(config), persistent=False)  # (D/2,)

    @torch.no_grad()
    def init_weights(self) -> None:
        """transformers' init (normal, std 0.02; norms one; biases zero) and the rotary frequencies."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        self.inv_freq = inv_frequencies(self.config, device=self.inv_freq.device)

    def get_device(self) -> torch.device:
        """Device of the weights."""
        return self.model.embed_tokens.weight.device

    def num_params(self) -> int:
        """Total parameter count (a tied embedding counted once)."""
        return sum(p.numel() for p in self.parameters())

    def estimate_flops(self) -> float:
        """Training FLOPs per token: 6 x (matmul params: all but the embedding lookup, plus the output projection)
        + attention (12 * H * D * T per layer)."""
        c = self.config
        matmul = self.num_params() - self.model.embed_tokens.weight.numel() + c.vocab_size * c.n_embd
        return 6 * matmul + 12 * c.n_layer * c.n_head * c.head_dim * c.sequence_len

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """The output projection (the embedding matrix when tied)."""
        return self.lm_head(x) if self.lm_head is not None else F.linear(x, self.model.embed_tokens.weight)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, kv_cache=None,
                loss_reduction: str = "mean", doc_lens: list[list[int]] | None = None,
                last_only: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) (B, 1, vocab with last_only), or with targets the loss (per token, flat, for
        loss_reduction="none"). doc_lens: the lengths of the documents packed into each row."""
        B, T = idx.size()
        T0 = 0 if kv_cache is None else kv_cache.get_pos()
        longest = T0 + T if doc_lens is None else max(max(lens, default=0) for lens in doc_lens)
        if longest > self.rotary_seq_len:
            raise ValueError(f"sequence of {longest} positions exceeds the model's "
                             f"max_position_embeddings ({self.rotary_seq_len})")
        x = self.model.embed_tokens(idx)  # (B, T, C)
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        segments = None
        if doc_lens is None:
            pos = torch.arange(T0, T0 + T, device=idx.device)[None, :]  # (1, T)
        else:
            assert kv_cache is None and len(doc_lens) == B, "doc_lens: one list per row, no KV cache"
            segs, pos, seg_ids = doc_segments(doc_lens, T)
            pos, seg_ids = pos.to(idx.device), seg_ids.to(idx.device)  # (B, T)
            mask = None
            if B > 1:  # (B, 1, T, T): same segment and not in the future
                causal = torch.ones(T, T, dtype=torch.bool, device=idx.device).tril()
                mask = ((seg_ids[:, :, None] == seg_ids[:, None, :]) & causal).unsqueeze(1)
            segments = (segs, mask)
        freqs = pos.float()[..., None] * self.inv_freq.float()  # (1 or B, T, D/2), fp32 as transformers
        cos, sin = freqs.cos()[:, :, None, :].to(dtype), freqs.sin()[:, :, None, :].to(dtype)  # (., T, 1, D/2)
        cos_sin = (torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1))  # rotate(): x*cos + swap(x)*sin
        for layer in self.model.layers:
            x = layer(x, cos_sin, kv_cache, segments)
        x = self.model.norm(x)
        if targets is None:
            return self._logits(x[:, -1:] if last_only else x)  # (B, T, vocab)
        return target_loss(x, targets, self._logits, loss_reduction)
