"""
Batched sampling with a KV cache, nanochat-style.

    engine = Engine(model, tokenizer)
    for token_column, token_masks in engine.generate(tokens, num_samples=4, max_tokens=64): ...
    sequences, masks = engine.generate_batch(tokens, num_samples=4, max_tokens=64, temperature=0.8)

The prompt is prefilled once with batch size 1, the cache is then replicated across the samples, and
each row stops at `<|assistant_end|>` or `<|bos|>`. Per-row LoRA adapters (nanoseal.lora routing) are
the caller's business: the engine only runs the model (any family of nanoseal.models). Sliding-window layers
read only their window of the cache; what a model carries from one call to the next besides keys and values
(the smear's previous-token embedding) lives on the cache too, so `prefill` replicates it with the rows.
"""

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from nanoseal.models import MODEL_TYPES


class KVCache:
    """Keys/values of every layer: (n_layer, 2, B, H_kv, T, D), grown on demand; plus the model's carried state."""

    def __init__(self, batch_size: int, num_heads: int, seq_len: int, head_dim: int, num_layers: int):
        self.kv_shape = (num_layers, 2, batch_size, num_heads, seq_len, head_dim)
        self.kv_cache: torch.Tensor | None = None  # allocated lazily at the first insert (dtype/device of k)
        self.pos = 0
        self.prev_embedding: torch.Tensor | None = None  # (B, 1, C): the last token's embedding (nanochat smear)

    def reset(self) -> None:
        """Forget everything cached."""
        self.pos = 0
        self.prev_embedding = None

    def get_pos(self) -> int:
        """Number of positions already cached."""
        return self.pos

    def prefill(self, other: "KVCache") -> None:
        """Copy another cache (batch 1 or same batch) into this one, broadcasting its rows."""
        assert self.kv_cache is None, "prefill expects an empty cache"
        assert other.kv_cache is not None, "nothing to prefill from"
        for i, (a, b) in enumerate(zip(self.kv_shape, other.kv_shape)):
            if i in (0, 1, 3, 5):
                assert a == b, f"cache dim {i} mismatch: {a} != {b}"
            elif i == 2:
                assert b == 1 or a == b, f"batch mismatch: {a} vs {b}"
        shape = list(self.kv_shape)
        shape[4] = max(self.kv_shape[4], other.pos)
        self.kv_shape = tuple(shape)
        self.kv_cache = torch.empty(self.kv_shape, dtype=other.kv_cache.dtype, device=other.kv_cache.device)
        self.kv_cache[:, :, :, :, : other.pos] = other.kv_cache[:, :, :, :, : other.pos]
        self.pos = other.pos
        if other.prev_embedding is not None:  # (b, 1, C) -> (B, 1, C)
            self.prev_embedding = other.prev_embedding.expand(self.kv_shape[2], -1, -1).clone()

    def insert_kv(self, layer_idx: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append k, v (B, H, T_add, D) for one layer; return the full cached views (B, H, T, D)."""
        if self.kv_cache is None:
            self.kv_cache = torch.empty(self.kv_shape, dtype=k.dtype, device=k.device)
        B, H, T_add, D = k.size()
        t0, t1 = self.pos, self.pos + T_add
        if t1 > self.kv_cache.size(4):
            # grow by at least what is needed, rounded up to a multiple of 1024
            t_needed = (t1 + 1024 + 1023) // 1024 * 1024
            extra = list(self.kv_cache.shape)
            extra[4] = t_needed - self.kv_cache.size(4)
            self.kv_cache = torch.cat([self.kv_cache, self.kv_cache.new_empty(extra)], dim=4).contiguous()
            self.kv_shape = tuple(self.kv_cache.shape)
        self.kv_cache[layer_idx, 0, :, :, t0:t1] = k
        self.kv_cache[layer_idx, 1, :, :, t0:t1] = v
        if layer_idx == self.kv_cache.size(0) - 1:
            self.pos = t1  # the last layer advances the position
        return self.kv_cache[layer_idx, 0, :, :, :t1], self.kv_cache[layer_idx, 1, :, :, :t1]


def head_dim(config) -> int:
    """Width of one attention head: config.head_dim where a family has one, else n_embd // n_head."""
    return getattr(config, "head_dim", None) or config.n_embd // config.n_head


def prefill_logits(model, ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
    """Logits (B, V) of the last position after prefilling ids into the cache; a model computes only those."""
    if isinstance(model, MODEL_TYPES):
        return model(ids, kv_cache=cache, last_only=True)[:, -1, :]
    return model(ids, kv_cache=cache)[:, -1, :]  # a wrapper module: it gets the plain call


@torch.inference_mode()
def sample_next_token(logits: torch.Tensor, rng: torch.Generator, temperature: float = 1.0,
                      top_k: int | None = None) -> torch.Tensor:
    """Sample one token per row from logits (B, V); temperature 0 is greedy. Returns (B, 1)."""
    assert temperature >= 0.0, "temperature must be non-negative"
    if temperature == 0.0:
        return torch.argmax(logits, dim=-1, keepdim=True)
    logits = logits.float()
    if top_k is not None and top_k > 0:
        k = min(top_k, logits.size(-1))
        vals, idx = torch.topk(logits, k, dim=-1)
        probs = F.softmax(vals / temperature, dim=-1)
        choice = torch.multinomial(probs, num_samples=1, generator=rng)
        return idx.gather(1, choice)
    probs = F.softmax(logits / temperature, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=rng)


class Engine:
    """Sampling front-end over a GPT and its tokenizer."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def _new_cache(self, batch_size: int, seq_len: int) -> KVCache:
        cfg = self.model.config
        return KVCache(batch_size=batch_size, num_heads=cfg.n_kv_head, seq_len=seq_len,
                       head_dim=head_dim(cfg), num_layers=cfg.n_layer)

    @torch.inference_mode()
    def generate(self, tokens: list[int], num_samples: int = 1, max_tokens: int | None = None,
                 temperature: float = 1.0, top_k: int | None = None, seed: int = 42,
                 ) -> Iterator[tuple[list[int], list[int]]]:
        """Yield (token_column, token_masks), one entry per sample, for each generated step."""
        assert isinstance(tokens, list) and tokens and isinstance(tokens[0], int), "tokens must be a list of ints"
        device = self.model.get_device()
        rng = torch.Generator(device=device)
        rng.manual_seed(seed)
        stop_ids = {self.tokenizer.encode_special("<|assistant_end|>"), self.tokenizer.get_bos_token_id()}
        # 1) prefill the prompt once, batch 1
        kv_prefill = self._new_cache(1, len(tokens))
        ids = torch.tensor([tokens], dtype=torch.long, device=device)  # (1, T)
        logits = prefill_logits(self.model, ids, kv_prefill)  # (1, V)
        logits = logits.expand(num_samples, -1)  # (B, V)
        # 2) replicate the cache across samples
        decode_len = len(tokens) + (max_tokens if max_tokens is not None else self.model.config.sequence_len)
        kv_decode = self._new_cache(num_samples, decode_len)
        kv_decode.prefill(kv_prefill)
        del kv_prefill
        # 3) decode
        done = [False] * num_samples
        num_generated = 0
        while max_tokens is None or num_generated < max_tokens:
            next_ids = sample_next_token(logits, rng, temperature, top_k)  # (B, 1)
            column = next_ids[:, 0].tolist()
            for i, tok in enumerate(column):
                if tok in stop_ids:
                    done[i] = True
            yield column, [1] * num_samples
            num_generated += 1
            if all(done) or num_generated == max_tokens or kv_decode.get_pos() >= self.model.rotary_seq_len:
                break
            logits = self.model(next_ids, kv_cache=kv_decode)[:, -1, :]  # (B, V)

    def generate_batch(self, tokens: list[int], num_samples: int = 1, max_tokens: int | None = None,
                       temperature: float = 1.0, top_k: int | None = None, seed: int = 42,
                       ) -> tuple[list[list[int]], list[list[int]]]:
        """Non-streaming generate: (sequences, masks), prompt included, stop tokens excluded."""
        stop_ids = {self.tokenizer.encode_special("<|assistant_end|>"), self.tokenizer.get_bos_token_id()}
        results = [list(tokens) for _ in range(num_samples)]
        masks = [[0] * len(tokens) for _ in range(num_samples)]
        completed = [False] * num_samples
        for column, column_masks in self.generate(tokens, num_samples, max_tokens, temperature, top_k, seed):
            for i, (tok, m) in enumerate(zip(column, column_masks)):
                if completed[i]:
                    continue
                if tok in stop_ids:
                    completed[i] = True
                    continue
                results[i].append(tok)
                masks[i].append(m)
            if all(completed):
                break
        return results, masks


@torch.inference_mode()
def greedy_batch(model, prompts: list[list[int]], max_tokens: list[int], stop_ids: set[int]) -> list[list[int]]:
    """Greedy continuations of prompts of one length, one per row (rows may differ only in their prompt or,
    through nanoseal.lora routing, their adapter): all rows are prefilled and decoded in one batch, row r
    ending at a stop id (excluded) or after max_tokens[r] tokens."""
    assert prompts and len({len(p) for p in prompts}) == 1, "greedy_batch takes prompts of one length"
    assert len(max_tokens) == len(prompts), f"{len(max_tokens)} budgets for {len(prompts)} prompts"
    device = model.get_device()
    cfg = model.config
    n, most = len(prompts), max(max_tokens)
    cache = KVCache(n, cfg.n_kv_head, len(prompts[0]) + most, head_dim(cfg), cfg.n_layer)
    ids = torch.tensor(prompts, dtype=torch.long, device=device)  # (R, T)
    logits = prefill_logits(model, ids, cache)  # (R, V)
    out = [[] for _ in range(n)]
    done = [m <= 0 for m in max_tokens]
    for step in range(most):
        nxt = torch.argmax(logits, dim=-1, keepdim=True)  # (R, 1)
        for r, tok in enumerate(nxt[:, 0].tolist()):
            if done[r]:
                continue
            if tok in stop_ids:
                done[r] = True
            else:
                out[r].append(tok)
                done[r] = len(out[r]) >= max_tokens[r]
        if all(done) or step == most - 1 or cache.get_pos() >= model.rotary_seq_len:
            break
        logits = model(nxt, kv_cache=cache)[:, -1, :]
    return out


def greedy_rows(model, tokens: list[int], n_rows: int, max_tokens: int, stop_ids: set[int]) -> list[list[int]]:
    """Greedy continuations of one prompt in n_rows rows that may differ (e.g. each routed to its own LoRA
    adapter), so the prompt is prefilled in every row rather than once and replicated. Stop ids excluded."""
    return greedy_batch(model, [tokens] * n_rows, [max_tokens] * n_rows, stop_ids)
