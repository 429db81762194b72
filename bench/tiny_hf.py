"""
Tiny random Llama-family model folders written by transformers itself, for the tests and the benchmarks:
`save_pretrained` of a LlamaForCausalLM (Llama 3's rope scaling, tied embeddings), a Qwen2ForCausalLM (q/k/v
biases, untied) or a MistralForCausalLM (explicit head_dim), and a byte-level BPE tokenizer.json trained with
`tokenizers` (the family's split pattern and special tokens) saved by transformers with the model's real chat
template (tests/fixtures/chat_templates).

    folder = write_tiny_folder("/tmp/llama", "llama")                      # transformers 5's layout
    folder = write_tiny_folder("/tmp/llama-pub", "llama", layout="published", shard_kb=40)

layout "transformers": config.json with rope_parameters, chat_template.jinja beside tokenizer_config.json (what
transformers 5 writes); "published": the layout of the folders models are published in (rope_theta + rope_scaling
in config.json, torch_dtype, the chat template inside tokenizer_config.json with tokenizer_class
PreTrainedTokenizerFast); the same model and tokenizer either way. shard_kb: shards of at most that size plus
model.safetensors.index.json. Needs the bench extra (transformers).
"""

import json
import os

import torch

TEMPLATES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures",
                         "chat_templates")
# the families' pre-tokenizer split patterns (Llama 3: digits in groups of up to 3; Qwen2: one digit each)
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

FAMILIES = {
    "llama": {
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"],
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "template": "llama-3.2-instruct.jinja", "split": LLAMA3_SPLIT,
        "config": dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-5,
                       tie_word_embeddings=True, rope_theta=500000.0,
                       rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    },
    "qwen2": {
        "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        "tokens": {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
        "template": "qwen2.5-instruct.jinja", "split": QWEN2_SPLIT, "vocab_pad": 64,
        "config": dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=2048, rms_norm_eps=1e-6,
                       tie_word_embeddings=False, rope_theta=1000000.0),
    },
    "mistral": {  # Llama's tokenizer and template; explicit head_dim, no sliding window
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                     "<|eot_id|>"],
        "tokens": {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        "template": "llama-3.2-instruct.jinja", "split": LLAMA3_SPLIT,
        "config": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=1, head_dim=24, max_position_embeddings=2048, rms_norm_eps=1e-5,
                       tie_word_embeddings=False, rope_theta=10000.0, sliding_window=None),
    },
}


def corpus(n_tasks: int = 60) -> list[str]:
    """Texts to train the tokenizer on: ARC prompts in both grid styles and self-edit exchanges."""
    from nanoseal.arc.prompts import task_conversation
    from nanoseal.train.data import task_stream, tokenizer_corpus
    from nanoseal.train.presets import get_preset

    p = get_preset("tiny")
    texts = list(tokenizer_corpus(task_stream(p.family_names(), 0, p.min_side, p.max_side), n_tasks, 0))
    for _, task in zip(range(n_tasks), task_stream(p.family_names(), 1, p.min_side, p.max_side)):
        inp, out = task.test[0]
        texts.append("\n\n".join(m["content"] for m in task_conversation(task.train, inp, out, "seal")["messages"]))
    return texts


def train_tokenizer(family: str, vocab_size: int = 640):
    """A byte-level BPE (tokenizers) with the family's split pattern and special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    spec = FAMILIES[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(spec["split"]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=spec["specials"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus(), trainer)
    bos = spec["tokens"].get("bos_token")
    if bos:  # Llama 3's tokenizer.json prepends bos when asked to add special tokens (chat templates do not ask)
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                          special_tokens=[(bos, tok.token_to_id(bos))])])
    return tok


def write_tiny_folder(folder: str, family: str = "llama", layout: str = "transformers", shard_kb: int | None = None,
                      seed: int = 0, init_std: float = 0.2, dtype: torch.dtype = torch.float32,
                      config_overrides: dict | None = None) -> str:
    """A model folder of a tiny random model of the family, as transformers writes it (see the top);
    config_overrides: config fields instead of the family's tiny ones (another shape)."""
    import transformers
    from transformers import PreTrainedTokenizerFast

    assert layout in ("transformers", "published"), f"unknown layout {layout!r}"
    spec = FAMILIES[family]
    tok = train_tokenizer(family)
    vocab = tok.get_vocab_size()
    pad = spec.get("vocab_pad")
    vocab = -(-vocab // pad) * pad if pad else vocab  # Qwen pads its embedding rows past the tokenizer
    cls = {"llama": "Llama", "qwen2": "Qwen2", "mistral": "Mistral"}[family]
    fields = {**spec["config"], **(config_overrides or {})}
    config = getattr(transformers, f"{cls}Config")(vocab_size=vocab, initializer_range=init_std, **fields)
    torch.manual_seed(seed)
    model = getattr(transformers, f"{cls}ForCausalLM")(config)
    with torch.no_grad():  # norms and biases away from their init values, so every parameter carries signal
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith(".bias"):
                p.add_(torch.randn_like(p) * 0.1)
    model.to(dtype).save_pretrained(folder, max_shard_size=f"{shard_kb}KB" if shard_kb else "5GB")
    with open(os.path.join(TEMPLATES, spec["template"]), encoding="utf-8") as f:
        template = f.read()
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, **spec["tokens"])
    hf_tok.chat_template = template
    hf_tok.save_pretrained(folder)
    if layout == "published":
        _to_published_layout(folder, template)
    return folder


def _to_published_layout(folder: str, template: str) -> None:
    """Rewrite transformers 5's config/tokenizer files in the layout of published model folders."""
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    rope = cfg.pop("rope_parameters")
    cfg["rope_theta"] = rope.pop("rope_theta")
    cfg["rope_scaling"] = rope if rope.get("rope_type") != "default" else None
    cfg["torch_dtype"] = cfg.pop("dtype")
    cfg.pop("layer_types", None)
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2)
    path = os.path.join(folder, "tokenizer_config.json")
    with open(path) as f:
        tcfg = json.load(f)
    tcfg.pop("backend", None)
    tcfg.update(tokenizer_class="PreTrainedTokenizerFast", chat_template=template)
    with open(path, "w") as f:
        json.dump(tcfg, f, indent=2)
    os.remove(os.path.join(folder, "chat_template.jinja"))
