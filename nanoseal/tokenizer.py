"""
The BPE tokenizer, in nanochat's on-disk format.

A tokenizer folder holds two files:
    tokenizer.pkl   a pickled tiktoken.Encoding (byte-level BPE ranks + split regex + special tokens)
    token_bytes.pt  an int32 tensor with one entry per token id: how many bytes of UTF-8 text the token
                    stands for (0 for special tokens), used to report bits-per-byte

The 9 special tokens (SPECIAL_TOKENS, in that order) take the last ids of the vocabulary.

Usage:
    tok = Tokenizer.train_from_iterator(texts, vocab_size=4096, pattern=DIGIT_SPLIT_PATTERN)
    tok.save("/path/tokenizer")
    tok = Tokenizer.from_directory("/path/tokenizer")
    ids = tok.encode("hello", prepend="<|bos|>")
    ids, mask = tok.render_conversation({"messages": [{"role": "user", "content": "hi"},
                                                      {"role": "assistant", "content": "hello"}]})

tokenizer.pkl is read through a restricted unpickler that only rebuilds a tiktoken Encoding from plain
data (strings, bytes, ints, dicts); a pickle that names any other global is refused with a NanosealError,
so loading a tokenizer folder from elsewhere cannot run code.
"""

import copy
import io
import os
import pickle
import sys
from collections.abc import Iterable

import tiktoken
import torch

from nanoseal.common import NanosealError, atomic_torch_save, atomic_write_bytes

SPECIAL_TOKENS = [
    "<|bos|>",  # begins every document / conversation
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",  # the assistant calls the python tool
    "<|python_end|>",
    "<|output_start|>",  # the tool's output, fed back to the assistant
    "<|output_end|>",
]

# nanochat's GPT-4-style split pattern (numbers split into groups of at most 2 digits)
SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
# the same, but every digit is its own pre-token: ARC grids are written as digits, one cell per digit
DIGIT_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

PICKLE_NAME = "tokenizer.pkl"
TOKEN_BYTES_NAME = "token_bytes.pt"

# -----------------------------------------------------------------------------
# Restricted unpickling of a tiktoken Encoding
#
# pickle.dumps(enc) references these globals, depending on the protocol:
#   protocol 3-5: tiktoken.core.Encoding only (NEWOBJ + BUILD with a dict state)
#   protocol 2:   + _codecs.encode (bytes are pickled as _codecs.encode(str, "latin1"))
#   protocol 0-1: + copy_reg._reconstructor and __builtin__.object (Python 2 names, mapped by pickle)
# None of them is handed out for real: Encoding becomes a passive holder of its state dict, the
# reconstructor only builds that holder, and encode only does latin-1. The state is then type-checked
# and a real tiktoken.Encoding is constructed from it by us, so no tiktoken code runs on pickle data
# (tiktoken's own __setstate__ would, e.g., fetch a registered encoding over the network by name).


class _EncodingState:
    """Stands in for tiktoken.core.Encoding while unpickling: just keeps the state it is given."""

    def __init__(self):
        self.state = None

    def __setstate__(self, state):
        self.state = state


def _reconstructor(cls, base, state):
    """copyreg._reconstructor, limited to what protocol 0/1 pickles of an Encoding do."""
    if cls is not _EncodingState or base is not object or state is not None:
        raise pickle.UnpicklingError("copyreg._reconstructor used for something other than an Encoding")
    return _EncodingState()


def _latin1_encode(text, encoding="utf-8", errors="strict"):
    """_codecs.encode, limited to the latin-1 round trip protocol 2 uses for bytes."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode used for something other than bytes")
    return text.encode("latin-1")


_ALLOWED_GLOBALS = {
    ("tiktoken.core", "Encoding"): _EncodingState,
    ("_codecs", "encode"): _latin1_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("copy_reg", "_reconstructor"): _reconstructor,
    ("builtins", "object"): object,
    ("__builtin__", "object"): object,
}


class _EncodingUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only the globals a pickled tiktoken Encoding needs."""

    def __init__(self, file, path: str):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        """Hand out a safe stand-in for an allowed global; refuse anything else."""
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise NanosealError(f"{self.path}: refusing to unpickle {module}.{name} "
                            f"(only a tiktoken Encoding is allowed)")


def _one_line(e: BaseException) -> str:
    """An exception as 'Type: first line of message', at most 200 characters."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def _encoding_from_state(state, path: str) -> tiktoken.Encoding:
    """Type-check an unpickled Encoding state dict and build the real tiktoken.Encoding from it."""
    if isinstance(state, str):
        raise NanosealError(f"{path}: pickle refers to the registered tiktoken encoding {state!r} by name; "
                            f"a self-contained Encoding is required")
    keys = {"name", "pat_str", "mergeable_ranks", "special_tokens"}
    if not isinstance(state, dict) or set(state) != keys:
        raise NanosealError(f"{path}: not a pickled tiktoken Encoding (unexpected state)")
    name, pat_str, ranks, special = state["name"], state["pat_str"], state["mergeable_ranks"], state["special_tokens"]
    ok = (isinstance(name, str) and isinstance(pat_str, str)
          and isinstance(ranks, dict) and isinstance(special, dict)
          and all(type(k) is bytes and type(v) is int for k, v in ranks.items())
          and all(type(k) is str and type(v) is int for k, v in special.items()))
    if not ok:
        raise NanosealError(f"{path}: not a pickled tiktoken Encoding (fields have the wrong types)")
    try:
        return tiktoken.Encoding(name=name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special)
    except Exception as e:  # noqa: BLE001 - tiktoken/regex errors of any kind become one line
        raise NanosealError(f"{path}: invalid tiktoken Encoding ({_one_line(e)})") from None


def load_encoding(path: str) -> tiktoken.Encoding:
    """Safely load a pickled tiktoken Encoding (nanochat's tokenizer.pkl); NanosealError if not one."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise NanosealError(f"{path}: cannot read tokenizer ({e.strerror or e})") from None
    try:
        obj = _EncodingUnpickler(io.BytesIO(data), path).load()
    except NanosealError:
        raise
    except Exception as e:  # noqa: BLE001 - truncated / garbage data raises all sorts of things
        raise NanosealError(f"{path}: corrupt tokenizer pickle ({_one_line(e)})") from None
    if not isinstance(obj, _EncodingState):
        raise NanosealError(f"{path}: does not contain a tiktoken Encoding (found {type(obj).__name__})")
    enc = _encoding_from_state(obj.state, path)
    assert isinstance(enc, tiktoken.Encoding)
    return enc


def load_token_bytes(directory: str, device: torch.device | str = "cpu") -> torch.Tensor:
    """Load token_bytes.pt (bytes per token id, 0 for special tokens) from a tokenizer folder."""
    path = os.path.join(directory, TOKEN_BYTES_NAME)
    if not os.path.isfile(path):
        raise NanosealError(f"{path}: token bytes file not found")
    try:
        token_bytes = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - corrupt zip, refused pickle, truncated file...
        raise NanosealError(f"{path}: corrupt token bytes file ({_one_line(e)})") from None
    if not isinstance(token_bytes, torch.Tensor) or token_bytes.dim() != 1:
        raise NanosealError(f"{path}: expected a 1-D tensor of bytes per token")
    return token_bytes

# -----------------------------------------------------------------------------


def with_specials(rows: list[list[int]], single: bool, prepend_id: int | None,
                  append_id: int | None) -> list[int] | list[list[int]]:
    """Each row of token ids with prepend_id in front and append_id at the end (None: not added); one row back for a
    single text. Shared by every tokenizer's encode."""
    for ids in rows:
        if prepend_id is not None:
            ids.insert(0, prepend_id)
        if append_id is not None:
            ids.append(append_id)
    return rows[0] if single else rows


class Tokenizer:
    """nanochat's RustBPETokenizer: a tiktoken Encoding (fast inference) trained with rustbpe."""

    def __init__(self, enc: tiktoken.Encoding):
        missing = [t for t in SPECIAL_TOKENS if t not in enc.special_tokens_set]
        if missing:
            raise NanosealError(f"tokenizer {enc.name!r} lacks the special tokens {missing}")
        self.enc = enc
        self.bos_token_id = self.encode_special("<|bos|>")

    @classmethod
    def train_from_iterator(cls, texts: Iterable[str], vocab_size: int, pattern: str | None = None) -> "Tokenizer":
        """Train a byte-level BPE with rustbpe; vocab_size counts the 9 special tokens."""
        import rustbpe

        vocab_size_no_special = vocab_size - len(SPECIAL_TOKENS)
        if vocab_size_no_special < 256:
            raise ValueError(f"vocab_size must be at least {256 + len(SPECIAL_TOKENS)} "
                             f"(256 bytes + {len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
        trainer = rustbpe.Tokenizer()
        trainer.train_from_iterator(iter(texts), vocab_size_no_special, pattern=pattern or SPLIT_PATTERN)
        mergeable_ranks = {bytes(token): rank for token, rank in trainer.get_mergeable_ranks()}
        n = len(mergeable_ranks)  # may be < vocab_size_no_special if the corpus runs out of pairs
        special_tokens = {name: n + i for i, name in enumerate(SPECIAL_TOKENS)}
        enc = tiktoken.Encoding(name="rustbpe", pat_str=trainer.get_pattern(),
                                mergeable_ranks=mergeable_ranks, special_tokens=special_tokens)
        return cls(enc)

    @classmethod
    def from_directory(cls, directory: str) -> "Tokenizer":
        """Load a tokenizer folder (its tokenizer.pkl, through the restricted unpickler)."""
        if not os.path.isdir(directory):
            raise NanosealError(f"{directory}: tokenizer folder not found")
        path = os.path.join(directory, PICKLE_NAME)
        if not os.path.isfile(path):
            raise NanosealError(f"{path}: tokenizer file not found")
        enc = load_encoding(path)
        try:
            return cls(enc)
        except NanosealError as e:
            raise NanosealError(f"{path}: {e}") from None

    def save(self, directory: str) -> None:
        """Write tokenizer.pkl and token_bytes.pt into directory (each atomically)."""
        os.makedirs(directory, exist_ok=True)
        atomic_write_bytes(os.path.join(directory, PICKLE_NAME), pickle.dumps(self.enc))
        atomic_torch_save(self.token_bytes(), os.path.join(directory, TOKEN_BYTES_NAME))

    def token_bytes(self) -> torch.Tensor:
        """int32 tensor: bytes of text per token id (exact, so a partial UTF-8 char counts its bytes); 0 for special."""
        special_ids = {self.enc.encode_single_token(t) for t in self.enc.special_tokens_set}
        counts = [0 if i in special_ids else len(self.enc.decode_single_token_bytes(i))
                  for i in range(self.get_vocab_size())]
        return torch.tensor(counts, dtype=torch.int32)

    def get_vocab_size(self) -> int:
        """Number of token ids, special tokens included."""
        return self.enc.n_vocab

    def get_special_tokens(self) -> set[str]:
        """The special token strings."""
        return set(self.enc.special_tokens_set)

    def id_to_token(self, id: int) -> str:
        """The text of one token id (partial UTF-8 shows as the replacement character)."""
        return self.enc.decode([id])

    def encode_special(self, text: str) -> int:
        """The id of a special token, e.g. encode_special('<|bos|>')."""
        return self.enc.encode_single_token(text)

    def get_bos_token_id(self) -> int:
        """The id of <|bos|>."""
        return self.bos_token_id

    def encode(self, text: str | list[str], prepend: str | int | None = None, append: str | int | None = None,
               num_threads: int = 8) -> list[int] | list[list[int]]:
        """Encode ordinary text (special-token strings in it are NOT special); a list encodes as a batch."""
        prepend_id = self.encode_special(prepend) if isinstance(prepend, str) else prepend
        append_id = self.encode_special(append) if isinstance(append, str) else append
        if isinstance(text, str):
            rows, single = [self.enc.encode_ordinary(text)], True
        elif isinstance(text, list):
            rows, single = self.enc.encode_ordinary_batch(text, num_threads=num_threads), False
        else:
            raise TypeError(f"encode expects a str or a list of str, got {type(text).__name__}")
        return with_specials(rows, single, prepend_id, append_id)

    def __call__(self, *args, **kwargs):
        """Same as encode."""
        return self.encode(*args, **kwargs)

    def decode(self, ids: list[int]) -> str:
        """Token ids back to text."""
        return self.enc.decode(ids)

    def render_conversation(self, conversation: dict, max_tokens: int = 2048,
                            train_on: str = "assistant") -> tuple[list[int], list[int]]:
        """Tokenize {"messages": [...]} into (ids, mask); mask=1 marks the tokens to train on.

        train_on="assistant" (nanochat): assistant text, python calls and <|assistant_end|>.
        train_on="all": every token after the leading <|bos|> (SEAL's train_using_all_tokens).
        """
        if train_on not in ("assistant", "all"):
            raise ValueError(f"train_on must be 'assistant' or 'all', got {train_on!r}")
        messages = conversation["messages"]
        if not messages:
            raise NanosealError("conversation has no messages")
        if messages[0]["role"] == "system":  # nanochat has no system role: fold it into the first user turn
            if len(messages) < 2 or messages[1]["role"] != "user":
                raise NanosealError("a system message must be followed by a user message")
            messages = copy.deepcopy(messages)
            messages[1]["content"] = messages[0]["content"] + "\n\n" + messages[1]["content"]
            messages = messages[1:]

        ids, mask = [], []

        def add(token_ids: int | list[int], supervised: bool) -> None:
            token_ids = [token_ids] if isinstance(token_ids, int) else token_ids
            ids.extend(token_ids)
            mask.extend([int(supervised or train_on == "all")] * len(token_ids))

        sp = {name: self.encode_special(name) for name in SPECIAL_TOKENS}
        ids.append(sp["<|bos|>"])
        mask.append(0)
        for i, message in enumerate(messages):
            expected = "user" if i % 2 == 0 else "assistant"
            if message["role"] != expected:
                raise NanosealError(f"message {i} has role {message['role']!r}, expected {expected!r} "
                                    f"(roles must alternate user/assistant, user first)")
            content = message["content"]
            if expected == "user":
                if not isinstance(content, str):
                    raise NanosealError(f"message {i}: user content must be a string")
                add(sp["<|user_start|>"], False)
                add(self.encode(content), False)
                add(sp["<|user_end|>"], False)
                continue
            add(sp["<|assistant_start|>"], False)
            if isinstance(content, str):
                add(self.encode(content), True)
            elif isinstance(content, list):
                for part in content:
                    kind, part_ids = part["type"], self.encode(part["text"])
                    if kind == "text":
                        add(part_ids, True)
                    elif kind == "python":
                        add(sp["<|python_start|>"], True)
                        add(part_ids, True)
                        add(sp["<|python_end|>"], True)
                    elif kind == "python_output":  # comes from the tool at inference: never trained on
                        add(sp["<|output_start|>"], False)
                        add(part_ids, False)
                        add(sp["<|output_end|>"], False)
                    else:
                        raise NanosealError(f"message {i}: unknown content part type {kind!r}")
            else:
                raise NanosealError(f"message {i}: assistant content must be a string or a list of parts")
            add(sp["<|assistant_end|>"], True)
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, conversation: dict) -> list[int]:
        """Render for sampling: drop a final assistant message, then end with <|assistant_start|>."""
        messages = list(conversation["messages"])
        if messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not messages or messages[-1]["role"] != "user":
            raise NanosealError("render_for_completion needs a conversation that ends with a user message")
        ids, _ = self.render_conversation({**conversation, "messages": messages}, max_tokens=sys.maxsize)
        return ids + [self.encode_special("<|assistant_start|>")]

    def visualize_tokenization(self, ids: list[int], mask: list[int]) -> str:
        """Tokens joined by '|', green where mask=1 and red where mask=0 (ANSI colours), for debugging."""
        green, red, reset = "\033[92m", "\033[91m", "\033[0m"
        return "|".join(f"{green if m else red}{self.id_to_token(i)}{reset}" for i, m in zip(ids, mask))
