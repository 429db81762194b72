"""
Chat with a checkpoint in the terminal (nanochat's chat format), optionally through a LoRA adapter.

    nanoseal chat --checkpoint ~/.cache/nanoseal            # interactive; 'clear' resets, 'quit' exits
    nanoseal chat --checkpoint DIR -p "Hello"                # one-shot: print the reply and exit
    nanoseal chat --checkpoint DIR --adapter out/adapter     # through an adapter (nanoseal.lora.save_adapter)

In an interactive session `/adapter NAME` switches to the adapter folder NAME inside the adapters folder
(--adapters-dir, default: the folder holding --adapter, else <base dir>/adapters), `/adapter base` goes back
to the base model and `/adapter` lists what there is. The conversation is kept across a switch.

The pieces the web UI (nanoseal.web) shares live here too: `conversation_tokens` (nanochat's chat_web
rendering), `stream_text` (UTF-8-safe streamed decoding, stoppable), `resolve_inside` (names resolved only
inside a folder) and `AdapterBank` (adapters hot-swapped on one base model, kept in memory once read).
"""

import argparse
import contextlib
import os
import re
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch

from nanoseal.argtypes import NON_NEGATIVE_INT, SEED, TEMPERATURE, int_in
from nanoseal.common import NanosealError, autocast_ctx, autodetect_device, get_base_dir

MAX_REPLY_TOKENS = 100_000  # --max-tokens at most (the KV cache is sized by it)
BASE_NAMES = ("base", "none", "off")  # `/adapter base` (or none / off) returns to the base model
NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+=@-]{0,127}")  # one path segment of an adapter or run name


class BadName(NanosealError):
    """A name that is not a plain relative name (absolute, '..', odd characters): refused before any lookup."""


class NotFound(NanosealError):
    """A well-formed name that names nothing in its folder."""


def resolve_inside(root: str, name: str, what: str = "name", max_depth: int = 4) -> str:
    """The real path of `name` inside the folder `root`; BadName for absolute/'..'/odd names or an escape."""
    if not isinstance(name, str) or not name or len(name) > 512:
        raise BadName(f"bad {what} {name!r}: expected a relative name inside its folder")
    parts = name.replace("\\", "/").split("/")
    if name.startswith(("/", "\\", "~")) or len(parts) > max_depth or not all(NAME_PART.fullmatch(p) for p in parts):
        raise BadName(f"bad {what} {name!r}: only plain relative names (letters, digits, _ . - +, at most "
                      f"{max_depth} segments, no '..') inside its folder are accepted")
    root_real = os.path.realpath(root)
    path = os.path.realpath(os.path.join(root_real, *parts))
    if os.path.commonpath([root_real, path]) != root_real or path == root_real:
        raise BadName(f"bad {what} {name!r}: it resolves outside its folder")
    return path


# -----------------------------------------------------------------------------
# conversation -> tokens -> streamed text


def conversation_tokens(tokenizer, messages: list[dict]) -> list[int]:
    """nanochat chat_web's rendering: <|bos|>, each user/assistant turn in its special tokens, <|assistant_start|>;
    a Hugging Face model's tokenizer renders the conversation through the model's own chat template."""
    if hasattr(tokenizer, "chat_template"):  # nanoseal.hf_tokenizer.HFTokenizer
        return tokenizer.render_for_completion({"messages": messages})
    sp = {name: tokenizer.encode_special(name) for name in
          ("<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>")}
    ids = [tokenizer.get_bos_token_id()]
    for i, message in enumerate(messages):
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise NanosealError(f"message {i} has role {role!r}; expected 'user' or 'assistant'")
        ids.append(sp[f"<|{role}_start|>"])
        ids.extend(tokenizer.encode(message["content"]))
        ids.append(sp[f"<|{role}_end|>"])
    return ids + [sp["<|assistant_start|>"]]


def stream_text(engine, tokens: list[int], max_tokens: int, temperature: float, top_k: int | None, seed: int,
                should_stop: Callable[[], bool] | None = None, counter: dict | None = None) -> Iterator[str]:
    """Pieces of the reply as they are sampled; a piece is emitted only once it decodes to whole UTF-8 characters.

    Stops at <|assistant_end|> / <|bos|>, after max_tokens, or as soon as should_stop() is true;
    counter["tokens"], if given, counts the tokens sampled.
    """
    tokenizer = engine.tokenizer
    stop_ids = {tokenizer.encode_special("<|assistant_end|>"), tokenizer.get_bos_token_id()}
    reply: list[int] = []
    emitted = ""
    for column, _ in engine.generate(tokens, num_samples=1, max_tokens=max_tokens, temperature=temperature,
                                     top_k=top_k, seed=seed):
        if should_stop is not None and should_stop():
            return
        if column[0] in stop_ids:
            break
        if counter is not None:
            counter["tokens"] = counter.get("tokens", 0) + 1
        reply.append(column[0])
        text = tokenizer.decode(reply)
        if not text.endswith("\ufffd") and len(text) > len(emitted):
            yield text[len(emitted):]
            emitted = text


# -----------------------------------------------------------------------------
# adapters hot-swapped on one base model


class AdapterBank:
    """LoRA adapters swapped in and out of one base model; each folder is read and checked once, then kept in memory.

    `activate(folder)` puts an adapter's weights into the model's LoRA layers (re-shaping them only when
    the adapter's rank/targets differ from the current ones); `activate(None)` selects the base model, and
    generation must then run inside `base_context()`, which disables the LoRA layers. One thread at a time.
    """

    def __init__(self, model, adapters_dir: str | None = None, max_cached: int = 8):
        self.model = model
        self.adapters_dir = adapters_dir
        self.max_cached = max(1, max_cached)
        self.active: str | None = None  # the active adapter folder (real path), None = base model
        self.cache: OrderedDict[str, dict] = OrderedDict()  # folder -> {"apply": kwargs, "tensors": ..., "meta"}
        self.loads = 0  # folders read from disk
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """The base model's fingerprint (computed once; adapters trained on another base are refused)."""
        from nanoseal.lora import base_fingerprint

        if self._fingerprint is None:
            self._fingerprint = base_fingerprint(self.model)
        return self._fingerprint

    def names(self) -> list[str]:
        """Adapter folders (holding adapter_config.json) under the adapters folder, as relative names."""
        from nanoseal.lora import CONFIG_NAME

        if not self.adapters_dir or not os.path.isdir(self.adapters_dir):
            return []
        root = os.path.realpath(self.adapters_dir)
        found = []
        for dirpath, dirnames, filenames in os.walk(root):
            depth = os.path.relpath(dirpath, root).count(os.sep) + 1
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < 4 else []
            if CONFIG_NAME in filenames and dirpath != root:
                found.append(os.path.relpath(dirpath, root).replace(os.sep, "/"))
        return sorted(found)

    def resolve(self, name: str) -> str:
        """The folder of adapter `name` inside the adapters folder (BadName / NotFound otherwise)."""
        from nanoseal.lora import CONFIG_NAME

        if not self.adapters_dir:
            raise NotFound(f"adapter {name!r}: no adapters folder is configured")
        folder = resolve_inside(self.adapters_dir, name, "adapter name")
        if not os.path.isfile(os.path.join(folder, CONFIG_NAME)):
            raise NotFound(f"adapter {name!r} not found in {self.adapters_dir}")
        return folder

    def _structure(self) -> tuple:
        from nanoseal.lora import lora_layers

        return tuple((p, m.rank, m.alpha, m.use_rslora) for p, m in lora_layers(self.model).items())

    @torch.no_grad()
    def activate(self, folder: str | None) -> None:
        """Make `folder`'s adapter (None: the base model) the one the model runs."""
        from nanoseal.lora import apply_lora, load_adapter, lora_layers, read_adapter_config, remove_lora

        folder = None if folder is None else os.path.realpath(folder)
        if folder == self.active:
            return
        if folder is None:
            self.active = None
            return
        entry = self.cache.get(folder)
        self.active = None  # until the swap below has fully succeeded
        if entry is None:
            if lora_layers(self.model):
                remove_lora(self.model)
            meta = load_adapter(self.model, folder, fingerprint=self.fingerprint())
            cfg = read_adapter_config(folder)
            entry = {
                "apply": dict(rank=cfg["r"], alpha=cfg["lora_alpha"], targets=cfg["target_modules"],
                              use_rslora=bool(cfg.get("use_rslora", False))),
                "structure": self._structure(),
                "tensors": {p: (m.lora_A[0].clone(), m.lora_B[0].clone()) for p, m in lora_layers(self.model).items()},
                "meta": meta,
            }
            self.loads += 1
        else:
            if self._structure() != entry["structure"]:
                if lora_layers(self.model):
                    remove_lora(self.model)
                with torch.random.fork_rng(devices=[]):  # A's init is overwritten right away
                    apply_lora(self.model, **entry["apply"])
            for path, layer in lora_layers(self.model).items():
                layer.lora_A[0].copy_(entry["tensors"][path][0])
                layer.lora_B[0].copy_(entry["tensors"][path][1])
        self.model.eval()  # new LoRA modules start in training mode (dropout on)
        self.cache[folder] = entry
        self.cache.move_to_end(folder)
        while len(self.cache) > self.max_cached:
            self.cache.popitem(last=False)
        self.active = folder

    def base_context(self):
        """Context to run the model in: the LoRA layers disabled when the base model is selected."""
        from nanoseal.lora import lora_disabled, lora_layers

        if self.active is None and lora_layers(self.model):
            return lora_disabled(self.model)
        return contextlib.nullcontext()

    def label(self) -> str:
        """The active adapter's name (relative to the adapters folder when inside it) or 'base'."""
        if self.active is None:
            return "base"
        if self.adapters_dir:
            root = os.path.realpath(self.adapters_dir)
            if os.path.commonpath([root, self.active]) == root:
                return os.path.relpath(self.active, root).replace(os.sep, "/")
        return self.active


# -----------------------------------------------------------------------------
# `nanoseal chat`


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal chat`."""
    parser.add_argument("--checkpoint", default=None,
                        help="base dir, phase dir or checkpoint folder (default: $NANOSEAL_BASE_DIR)")
    parser.add_argument("--source", default=None, choices=["base", "mid", "sft", "rl"],
                        help="phase to load from a base dir (default: the most trained one present)")
    parser.add_argument("--step", type=NON_NEGATIVE_INT, default=None, help="checkpoint step (default: last)")
    parser.add_argument("--arch", default=None, help="nanochat architecture version where the weights cannot tell "
                        "(e.g. nanochat-2026-03-02; default: detected from the checkpoint)")
    parser.add_argument("-p", "--prompt", default=None, help="one-shot prompt: answer it and exit")
    parser.add_argument("--adapter", default=None, help="LoRA adapter folder (written by nanoseal.lora.save_adapter)")
    parser.add_argument("--adapters-dir", default=None,
                        help="folder that `/adapter NAME` looks in (default: the folder holding --adapter, "
                             "else <base dir>/adapters)")
    parser.add_argument("-t", "--temperature", type=TEMPERATURE, default=0.6, help="0 = greedy (default 0.6)")
    parser.add_argument("-k", "--top-k", type=NON_NEGATIVE_INT, default=50, help="0 = no top-k filter (default 50)")
    parser.add_argument("--max-tokens", type=int_in(1, MAX_REPLY_TOKENS), default=256,
                        help="reply length cap (the model's rotary table caps it too)")
    parser.add_argument("--seed", type=SEED, default=42)
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N | mps (default: autodetect)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])


def _adapter_command(bank: AdapterBank, arg: str) -> str:
    """Run `/adapter [NAME]`; return the line to print."""
    if not arg:
        names = bank.names()
        listing = ", ".join(names) if names else f"none in {bank.adapters_dir}"
        return f"(active: {bank.label()}; adapters: {listing}; '/adapter base' returns to the base model)"
    if arg.lower() in BASE_NAMES:
        bank.activate(None)
        return "(base model)"
    bank.activate(bank.resolve(arg))
    return f"(adapter {bank.label()})"


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal chat`."""
    from nanoseal.checkpoint import load_model
    from nanoseal.engine import Engine

    device = autodetect_device(args.device)
    if args.adapter and not os.path.isdir(args.adapter):  # checked before the model is loaded
        kind = "is a file, expected an adapter folder" if os.path.exists(args.adapter) else "does not exist"
        raise NanosealError(f"--adapter {args.adapter} {kind}")
    model, tokenizer, meta = load_model(args.checkpoint or get_base_dir(), step=args.step, device=device,
                                        source=args.source, arch=args.arch)
    adapters_dir = args.adapters_dir or (os.path.dirname(os.path.abspath(args.adapter)) if args.adapter
                                         else os.path.join(get_base_dir(), "adapters"))
    n_params = model.num_params()  # the base's, before LoRA layers are attached
    bank = AdapterBank(model, adapters_dir)
    if args.adapter:
        bank.activate(args.adapter)
    engine = Engine(model, tokenizer)
    messages: list[dict] = []
    interactive = args.prompt is None
    if interactive:
        print(f"nanoseal chat: {meta['checkpoint_dir']} ({n_params / 1e6:.1f}M params), "
              f"{bank.label() if bank.active else 'base model'}. Type 'clear' to reset, 'quit' to exit, "
              "'/adapter NAME' to switch adapter ('/adapter base' for the base model).")
    turn = 0
    while True:
        if interactive:
            try:
                user = input("\nUser: ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if user.lower() in ("quit", "exit"):
                return 0
            if user.lower() == "clear":
                messages = []
                print("(conversation cleared)")
                continue
            if user == "/adapter" or user.startswith("/adapter "):
                try:
                    print(_adapter_command(bank, user[len("/adapter"):].strip()))
                except NanosealError as e:
                    print(f"(error: {e})")
                continue
            if not user:
                continue
        else:
            user = args.prompt
        messages.append({"role": "user", "content": user})
        tokens = conversation_tokens(tokenizer, messages)
        context = model.config.sequence_len
        if len(tokens) >= context:
            messages.pop()
            problem = f"the conversation is {len(tokens)} tokens, the model's context is {context}"
            if not interactive:
                raise NanosealError(problem)
            print(f"(error: {problem}; type 'clear' to start over)")
            continue
        max_tokens = min(args.max_tokens, getattr(model, "rotary_seq_len", context) - len(tokens))  # its rotary table
        pieces = []
        if interactive:
            print("\nAssistant: ", end="", flush=True)
        with autocast_ctx(device, args.dtype), torch.inference_mode(), bank.base_context():
            for piece in stream_text(engine, tokens, max_tokens, args.temperature, args.top_k, args.seed + turn):
                pieces.append(piece)
                if interactive:
                    print(piece, end="", flush=True)
        messages.append({"role": "assistant", "content": "".join(pieces)})
        turn += 1
        if not interactive:
            sys.stdout.write("".join(pieces) + "\n")
            return 0
        print()
