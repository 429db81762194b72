"""
A Hugging Face model folder's tokenizer behind the methods of nanoseal.tokenizer.Tokenizer, so the engine, the
SEAL prompts, TTT and ReST-EM run unchanged on Llama-family models.

    tok = HFTokenizer.from_directory("Llama-3.2-1B-Instruct")
    ids, mask = tok.render_conversation({"messages": [{"role": "system", ...}, {"role": "user", ...},
                                                      {"role": "assistant", ...}]}, train_on="assistant")
    prompt = tok.render_for_completion({"messages": [...]})   # the template's ids with the generation prompt

What it reads, with well-kept libraries and nothing written by hand:
- tokenizer.json with `tokenizers` (the model's own BPE, pre-tokenizer, added tokens)
- the model's chat template (chat_template.jinja, else tokenizer_config.json's "chat_template"; the jinja file
  wins, as in transformers), rendered by `jinja2` in the sandbox and with the helpers transformers gives
  templates (raise_exception, strftime_now, a tojson that keeps non-ASCII, trim_blocks/lstrip_blocks), then
  encoded without adding special tokens: the ids transformers' apply_chat_template(tokenize=True) gives
- tokenizer_config.json's bos/eos/unk/pad tokens (the template sees them as bos_token, ...)

The nanochat names the rest of nanoseal asks for map onto the model's tokens: "<|assistant_end|>" is the
end-of-turn token (tokenizer_config's eos_token: <|eot_id|> for Llama 3 Instruct, <|im_end|> for Qwen2.5 and
SmolLM2), "<|bos|>" and get_bos_token_id() the bos token, or the pad/eos token for a model without one (Qwen2.5),
as padding and a stop token need some id.

Loss masks (render_conversation): train_on="assistant" marks each assistant message's tokens and its end-of-turn
token. Where they are is found from the template itself: the text of the conversation up to message i with the
generation prompt, and up to and including message i, bound the message; every token whose character span
overlaps it is marked (the rule transformers uses for {% generation %} blocks). A template that does not render
a conversation as a prefix of its continuation cannot place masks this way and is refused in one line.
train_on="all" marks every token but the first. `encode` treats special-token text as ordinary text (as
nanochat's encode does); the chat template's own special tokens are special.
"""

import copy
import json
import os
from datetime import datetime

from nanoseal.common import NanosealError, read_json_object
from nanoseal.tokenizer import with_specials

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
ROLES = ("system", "user", "assistant")


def _token_text(value) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, an AddedToken object, or null."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def compile_template(source: str, where: str):
    """The chat template compiled in jinja2's immutable sandbox with the helpers transformers gives templates."""
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):
        """{% generation %}...{% endgeneration %} (transformers' assistant-mask marker): renders its body."""
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateError as e:
        raise NanosealError(f"{where}: the chat template does not compile ({str(e).splitlines()[0][:200]})") from None


class HFTokenizer:
    """tokenizer.json + chat template, with nanoseal.tokenizer.Tokenizer's methods."""

    def __init__(self, tok, chat_template: str, special: dict[str, str], where: str):
        self.tok = tok  # special tokens in the text are special (the chat template's own)
        self.plain = copy.deepcopy(tok)  # special-token text is ordinary text (encode)
        self.plain.encode_special_tokens = True
        self.where = where
        self.chat_template = chat_template
        self.template = compile_template(chat_template, where)
        self.special = dict(special)  # bos_token, eos_token, ... as the template sees them
        ids = {}
        for name, text in self.special.items():
            ids[name] = tok.token_to_id(text)
            if ids[name] is None:
                raise NanosealError(f"{where}: {TOKENIZER_CONFIG} names {name} {text!r}, which "
                                    f"{TOKENIZER_FILE} does not have")
        if "eos_token" not in ids:
            raise NanosealError(f"{where}: {TOKENIZER_CONFIG} has no eos_token (the end of an assistant turn)")
        self.eos_token_id = ids["eos_token"]
        self.bos_token_id = ids.get("bos_token", ids.get("pad_token", self.eos_token_id))
        self.eos_text = self.special["eos_token"]

    @classmethod
    def from_directory(cls, folder: str) -> "HFTokenizer":
        """Read tokenizer.json, tokenizer_config.json and the chat template of a model folder."""
        from tokenizers import Tokenizer as RustTokenizer

        path = os.path.join(folder, TOKENIZER_FILE)
        if not os.path.isfile(path):
            raise NanosealError(f"{path}: file not found (nanoseal reads a model's tokenizer from tokenizer.json; "
                                "tokenizer.model / vocab.json alone are not supported)")
        try:
            tok = RustTokenizer.from_file(path)
        except Exception as e:  # noqa: BLE001 - the Rust side raises plain Exceptions for any bad file
            msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            raise NanosealError(f"{path}: not a readable tokenizer.json ({msg})") from None
        config_path = os.path.join(folder, TOKENIZER_CONFIG)
        if not os.path.isfile(config_path):
            raise NanosealError(f"{config_path}: file not found (it names the bos/eos tokens)")
        config = read_json_object(config_path)
        special = {name: t for name in SPECIAL_NAMES if (t := _token_text(config.get(name))) is not None}
        template_path = os.path.join(folder, CHAT_TEMPLATE_FILE)
        if os.path.isfile(template_path):
            with open(template_path, encoding="utf-8") as f:
                template, where = f.read(), template_path
        else:
            template, where = config.get("chat_template"), config_path
            if isinstance(template, list):  # named templates: the default one
                named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
                template = named.get("default")
            if not isinstance(template, str) or not template.strip():
                raise NanosealError(f"{config_path}: no chat_template here and no {CHAT_TEMPLATE_FILE} beside it "
                                    "(a base model?); nanoseal prompts an instruct model through its chat template")
        return cls(tok, template, special, where)

    # -- nanoseal.tokenizer.Tokenizer's methods

    def get_vocab_size(self) -> int:
        """Number of token ids, added tokens included."""
        return self.tok.get_vocab_size(with_added_tokens=True)

    def get_special_tokens(self) -> set[str]:
        """The special token strings."""
        return {t.content for t in self.tok.get_added_tokens_decoder().values() if t.special}

    def id_to_token(self, id: int) -> str:
        """The text of one token id."""
        return self.decode([id])

    def encode_special(self, text: str) -> int:
        """The id of a special token; nanochat's "<|bos|>" and "<|assistant_end|>" map to bos and end of turn."""
        if text == "<|bos|>":
            return self.bos_token_id
        if text == "<|assistant_end|>":
            return self.eos_token_id
        token_id = self.tok.token_to_id(text)
        if token_id is None:
            raise NanosealError(f"{self.where}: this tokenizer has no token {text!r}")
        return token_id

    def get_bos_token_id(self) -> int:
        """The bos token's id (the pad or eos token's for a model without one)."""
        return self.bos_token_id

    def encode(self, text: str | list[str], prepend: str | int | None = None, append: str | int | None = None,
               num_threads: int = 8) -> list[int] | list[list[int]]:
        """Encode ordinary text (special-token strings in it are NOT special); a list encodes as a batch."""
        prepend_id = self.encode_special(prepend) if isinstance(prepend, str) else prepend
        append_id = self.encode_special(append) if isinstance(append, str) else append
        if isinstance(text, str):
            rows, single = [self.plain.encode(text, add_special_tokens=False).ids], True
        elif isinstance(text, list):
            rows, single = [e.ids for e in self.plain.encode_batch(text, add_special_tokens=False)], False
        else:
            raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")
        return with_specials(rows, single, prepend_id, append_id)

    def __call__(self, *args, **kwargs):
        """Same as encode."""
        return self.encode(*args, **kwargs)

    def decode(self, ids: list[int]) -> str:
        """Token ids back to text (special tokens included)."""
        return self.tok.decode(list(ids), skip_special_tokens=False)

    def render_text(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """The chat template's text of the messages."""
        import jinja2

        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        **self.special)
        except jinja2.exceptions.TemplateError as e:
            raise NanosealError(f"{self.where}: the chat template refused the conversation "
                                f"({str(e).splitlines()[0][:200]})") from None

    def _check(self, messages) -> list[dict]:
        """The messages as plain {"role", "content"} dicts; one line on anything else."""
        if not isinstance(messages, list) or not messages:
            raise NanosealError("conversation has no messages")
        out = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise NanosealError(f"message {i}: expected {{'role': one of {', '.join(ROLES)}, 'content': text}}")
            if m["role"] == "system" and i > 0:
                raise NanosealError(f"message {i}: a system message comes first only")
            out.append({"role": m["role"], "content": m["content"]})
        return out

    def render_conversation(self, conversation: dict, max_tokens: int = 2048,
                            train_on: str = "assistant") -> tuple[list[int], list[int]]:
        """Tokenize {"messages": [...]} through the chat template into (ids, mask); mask=1 marks the tokens to train
        on: each assistant message and its end-of-turn token ("assistant"), or all but the first ("all")."""
        if train_on not in ("assistant", "all"):
            raise ValueError(f"train_on must be 'assistant' or 'all', got {train_on!r}")
        messages = self._check(conversation["messages"])
        text = self.render_text(messages, add_generation_prompt=False)
        enc = self.tok.encode(text, add_special_tokens=False)
        ids = enc.ids
        if train_on == "all":
            mask = [0] + [1] * (len(ids) - 1)
            return ids[:max_tokens], mask[:max_tokens]
        spans = []  # character spans of the assistant messages (and their end-of-turn token)
        for i, m in enumerate(messages):
            if m["role"] != "assistant":
                continue
            before = self.render_text(messages[:i], add_generation_prompt=True) if i else ""
            upto = self.render_text(messages[:i + 1], add_generation_prompt=False)
            if not (upto.startswith(before) and text.startswith(upto)):
                raise NanosealError(f"{self.where}: the chat template does not render a conversation as the prefix "
                                    "of its continuation, so loss masks cannot be placed")
            start, end = len(before), len(upto)
            eot = upto.rfind(self.eos_text, start)
            if eot != -1:  # stop after the end-of-turn token (not the newline some templates add after it)
                end = eot + len(self.eos_text)
            spans.append((start, end))
        mask = [int(any(a < e and b > s for s, e in spans)) for a, b in enc.offsets]
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, conversation: dict) -> list[int]:
        """Render for sampling: a final assistant message dropped, the template's generation prompt added."""
        messages = self._check(conversation["messages"])
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]
        if not messages or messages[-1]["role"] != "user":
            raise NanosealError("render_for_completion needs a conversation that ends with a user message")
        text = self.render_text(messages, add_generation_prompt=True)
        return self.tok.encode(text, add_special_tokens=False).ids

    def visualize_tokenization(self, ids: list[int], mask: list[int]) -> str:
        """Tokens joined by '|', green where mask=1 and red where mask=0 (ANSI colours), for debugging."""
        green, red, reset = "\033[92m", "\033[91m", "\033[0m"
        return "|".join(f"{green if m else red}{self.id_to_token(i)}{reset}" for i, m in zip(ids, mask))
