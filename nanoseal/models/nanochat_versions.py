"""
The nanochat architecture versions since October 2025 (a flag per component that differs; nanochat.py builds the
model of each) and how a checkpoint's version is told from its weights.

What the later versions add (ARCHS; dates are nanochat's commits):
- 2025-12-09  wte/lm_head padded to a multiple of 64 rows, logits cropped to vocab_size
- 2026-01-11  before every block x = resid_lambdas[i] * x + x0_lambdas[i] * x0 (x0: the normed embedding);
              sliding windows: window_pattern ("SSSL") tiled over layers, the last layer long; key j is visible
              from query i when 0 <= i - j <= window, L = sequence_len, S = L / 2
- 2026-01-16  value embeddings on layers i % 2 == (n_layer - 1) % 2: v += 2 * sigmoid(ve_gate(h[..., :32])) *
              value_embeds[i](idx), one gate per KV head (h: the attention's normed input)
- 2026-03-02  the same weights with softcap 20 (a week; the weights cannot tell it apart: pass the arch)
- 2026-03-09  gate on h[..., :12] with 3 * sigmoid; q, k *= 1.15 after the QK norm; rotary base 100000;
              S = L / 3 rounded up to a multiple of 128
- 2026-03-14  smear: x_t += smear_lambda * sigmoid(smear_gate(x_t[:24])) * x_{t-1} (pre-smear, t >= 1 of each
              document; decoding keeps the previous token's embedding in the cache) before x0 is taken;
              backout: x = norm(x - backout_lambda * x_mid), x_mid the residual after block n_layer // 2;
              q, k *= 1.2; S = L / 4 rounded up to a multiple of 128 (nanochat master through 2026-07-03)

Detection (detect_arch) reads which keys the state dict has and their shapes: no later keys -> 2025-10-13 (or
2025-12-09 when wte has vocab_size rounded up to 64 rows); resid_lambdas + x0_lambdas -> 2026-01-11; + value_embeds.*
and attn.ve_gate 32 wide -> 2026-01-16, 12 wide -> 2026-03-09; + smear_gate, smear_lambda, backout_lambda ->
2026-03-14. Anything else (the hours-long experiments of January 2026: value_embed_A/B, v0_lambdas, bigram_embed)
is one line naming the keys found and the versions supported. 2026-03-02 has 2026-01-16's weights: it is given,
never detected, and must fit the weights (same_weights).
"""

from dataclasses import dataclass

from nanoseal.common import NanosealError


@dataclass(frozen=True)
class Arch:
    """One nanochat architecture version: a flag per component that differs between versions."""

    name: str
    summary: str
    pad_vocab: int = 1  # embedding tables (wte, lm_head, value_embeds) padded to a multiple of this many rows
    lambdas: bool = False  # resid_lambdas / x0_lambdas before every block
    short_window: str = ""  # "" = no sliding windows; "L/2" | "L/3" | "L/4" = the short window S
    ve_gate: int = 0  # value embeddings with a gate over this many channels (0 = none)
    ve_scale: float = 0.0  # v += ve_scale * sigmoid(gate) * ve
    qk_scale: float = 1.0  # q, k *= qk_scale after the QK norm
    rotary_base: int = 10000
    softcap: float = 15.0
    smear: bool = False  # smear (previous token's embedding) and backout (mid-layer residual)
    detectable: bool = True  # False: the weights look like another version's, the arch must be given

    def layout(self) -> tuple:
        """What the weights can tell: the components that own parameters."""
        return (self.pad_vocab, self.lambdas, self.ve_gate, self.smear)


_V2601 = dict(pad_vocab=64, lambdas=True, short_window="L/2")
_V2603 = dict(pad_vocab=64, lambdas=True, ve_gate=12, ve_scale=3.0, rotary_base=100000)
ARCHS = {a.name: a for a in [
    Arch("nanochat-2025-10-13", "the October-2025 release (nanoseal's default)"),
    Arch("nanochat-2025-12-09", "vocabulary padded to a multiple of 64", pad_vocab=64),
    Arch("nanochat-2026-01-11", "+ resid/x0 lambdas, sliding windows (S = L/2)", **_V2601),
    Arch("nanochat-2026-01-16", "+ value embeddings on alternating layers (gate 32 channels, 2 sigmoid)",
         ve_gate=32, ve_scale=2.0, **_V2601),
    Arch("nanochat-2026-03-02", "2026-01-16 with softcap 20 (one week; not detectable)", ve_gate=32, ve_scale=2.0,
         softcap=20.0, detectable=False, **_V2601),
    Arch("nanochat-2026-03-09", "gate 12 channels, 3 sigmoid, QK x1.15, rotary base 100k, S = L/3",
         qk_scale=1.15, short_window="L/3", **_V2603),
    Arch("nanochat-2026-03-14", "+ smear, backout, QK x1.2, S = L/4 (master through 2026-07-03)",
         qk_scale=1.2, short_window="L/4", smear=True, **_V2603),
]}
DEFAULT_ARCH = "nanochat-2025-10-13"
LATEST_ARCH = "nanochat-2026-03-14"


def get_arch(name: str) -> Arch:
    """The Arch of a version name, or a one-line error listing the names."""
    if name not in ARCHS:
        raise NanosealError(f"unknown architecture {name!r}; supported: {', '.join(ARCHS)}")
    return ARCHS[name]


OCT2025_KEYS = ("transformer.wte.weight", "lm_head.weight", "attn.c_q.weight", "attn.c_k.weight",
                "attn.c_v.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
SUPPORTED_LINE = ("nanochat-2025-10-13 (the Oct-2025 keys), nanochat-2025-12-09 (wte padded to 64 rows), "
                  "nanochat-2026-01-11 (+ resid_lambdas, x0_lambdas), nanochat-2026-01-16 (+ value_embeds.*, "
                  "attn.ve_gate 32 wide), nanochat-2026-03-09 (attn.ve_gate 12 wide), nanochat-2026-03-14 "
                  "(+ smear_gate, smear_lambda, backout_lambda)")


def _key_name(key: str) -> str:
    """A state-dict key without its layer index and .weight: 'transformer.h.3.attn.ve_gate.weight' -> 'attn.ve_gate'."""
    if key.startswith("transformer.h.") and key.count(".") >= 3:
        key = key.split(".", 3)[3]
    if key.startswith("value_embeds."):
        return "value_embeds.*"
    return key.removesuffix(".weight")


def detect_arch(state: dict, model_config: dict) -> str:
    """The nanochat version these weights belong to, from which keys exist and their shapes; a one-line
    NanosealError naming what was found and what is supported otherwise (the where is the caller's)."""
    later = sorted({_key_name(k) for k in state if not k.endswith(OCT2025_KEYS)})
    if not later:
        wte, vocab = state.get("transformer.wte.weight"), model_config.get("vocab_size")
        if wte is None or not isinstance(vocab, int) or wte.size(0) == vocab:
            return "nanochat-2025-10-13"  # (a missing key or field is reported by the caller's full check)
        padded = (vocab + 63) // 64 * 64
        if wte.size(0) == padded:
            return "nanochat-2025-12-09"
        expected = f"{vocab} (nanochat-2025-10-13 or -12-09)" if padded == vocab else \
            f"{vocab} (nanochat-2025-10-13) or {padded} (padded to 64, nanochat-2025-12-09)"
        raise NanosealError(f"transformer.wte.weight has {wte.size(0)} rows for vocab_size {vocab}: "
                            f"expected {expected}")
    gates = [v for k, v in state.items() if _key_name(k) == "attn.ve_gate"]
    width = gates[0].size(-1) if gates and gates[0].ndim == 2 else None
    found = ", ".join(n + (f" ({width} wide)" if n == "attn.ve_gate" else "") for n in later)
    have = set(later)
    smear = {"smear_gate", "smear_lambda", "backout_lambda"}
    if have == {"resid_lambdas", "x0_lambdas"}:
        return "nanochat-2026-01-11"
    if have == {"resid_lambdas", "x0_lambdas", "value_embeds.*", "attn.ve_gate"} and width in (32, 12):
        return "nanochat-2026-01-16" if width == 32 else "nanochat-2026-03-09"
    if have == {"resid_lambdas", "x0_lambdas", "value_embeds.*", "attn.ve_gate"} | smear and width == 12:
        return "nanochat-2026-03-14"
    raise NanosealError(f"weights of a later nanochat architecture that no supported version has (found {found}); "
                        f"supported: {SUPPORTED_LINE}")


def same_weights(arch: str, vocab_size: int) -> list[str]:
    """The versions whose weights are laid out as `arch`'s for this vocabulary (what an explicit arch may pick)."""
    def shape(name: str) -> tuple:
        a = ARCHS[name]
        return ((vocab_size + a.pad_vocab - 1) // a.pad_vocab * a.pad_vocab,) + a.layout()[1:]
    return [name for name in ARCHS if shape(name) == shape(arch)]
