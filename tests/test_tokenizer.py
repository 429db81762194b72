"""Tests for nanoseal/tokenizer.py: training, the nanochat folder format, safe loading, chat rendering."""

import copyreg
import os
import pickle

import pytest
import tiktoken
import torch

from nanoseal.common import NanosealError
from nanoseal.tokenizer import (
    DIGIT_SPLIT_PATTERN,
    SPECIAL_TOKENS,
    SPLIT_PATTERN,
    Tokenizer,
    load_encoding,
    load_token_bytes,
)

DIGIT_CORPUS = ["0123456789 " * 20, "input:\n0120\n3456\noutput:\n7789\n", "grid 12 34 56 78 90"] * 10

ROUND_TRIP_STRINGS = [
    "",
    "hello world",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\n\n\nand more",
    "digits 0123456789 3.14159 -42 1e10",
    "Ünïcödé ✓ 日本語 emoji 🙂🚀 mixed: naïve café",
    "special strings are plain text here: <|bos|> <|assistant_end|>",
    "{\"learning_rate\": 0.0001, \"num_train_epochs\": 2}",
]


def enc_fields(enc: tiktoken.Encoding) -> tuple:
    """Everything that defines an Encoding, for equality checks."""
    return enc.name, enc._pat_str, enc._mergeable_ranks, enc._special_tokens


@pytest.fixture(scope="module")
def saved_dir(tmp_path_factory, tokenizer):
    """The session tokenizer saved once into a folder."""
    directory = str(tmp_path_factory.mktemp("tok") / "tokenizer")
    tokenizer.save(directory)
    return directory


# -----------------------------------------------------------------------------
# training, vocabulary, encode/decode


def test_special_tokens_are_the_last_ids(tokenizer):
    n = tokenizer.get_vocab_size()
    assert 300 <= n <= 320
    ids = [tokenizer.encode_special(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(n - len(SPECIAL_TOKENS), n))
    assert tokenizer.get_bos_token_id() == ids[0]
    assert tokenizer.get_special_tokens() == set(SPECIAL_TOKENS)
    assert [tokenizer.id_to_token(i) for i in ids] == SPECIAL_TOKENS
    assert tokenizer.id_to_token(ord("a")) == "a"


def test_vocab_size_counts_special_tokens_and_is_validated():
    tok = Tokenizer.train_from_iterator(iter(DIGIT_CORPUS + ["abcdefghij klmnop qrstuv"] * 30), vocab_size=280)
    assert tok.get_vocab_size() <= 280
    assert tok.enc._pat_str == SPLIT_PATTERN
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train_from_iterator(["abc"], vocab_size=256)


@pytest.mark.parametrize("text", ROUND_TRIP_STRINGS)
def test_decode_encode_round_trip(tokenizer, text):
    ids = tokenizer.encode(text)
    assert all(isinstance(i, int) for i in ids)
    assert tokenizer.decode(ids) == text


def test_encode_is_ordinary_prepend_append_and_batch(tokenizer):
    bos, end = tokenizer.get_bos_token_id(), tokenizer.encode_special("<|assistant_end|>")
    text = "<|bos|>"
    assert bos not in tokenizer.encode(text)  # special strings in text are never special
    plain = tokenizer.encode("hello 123")
    assert tokenizer.encode("hello 123", prepend="<|bos|>", append=end) == [bos, *plain, end]
    assert tokenizer("hello 123", prepend=bos) == [bos, *plain]
    batch = tokenizer.encode(ROUND_TRIP_STRINGS, prepend="<|bos|>", num_threads=2)
    assert batch == [[bos, *tokenizer.encode(s)] for s in ROUND_TRIP_STRINGS]
    with pytest.raises(TypeError):
        tokenizer.encode(123)


def test_digit_split_pattern_one_token_per_digit():
    digit_tok = Tokenizer.train_from_iterator(iter(DIGIT_CORPUS), vocab_size=300, pattern=DIGIT_SPLIT_PATTERN)
    assert digit_tok.enc._pat_str == DIGIT_SPLIT_PATTERN
    ids = digit_tok.encode("0123456789")
    assert len(ids) == 10
    assert [digit_tok.id_to_token(i) for i in ids] == list("0123456789")
    assert len(digit_tok.encode("input:\n0120\n3456\n")) >= 8 + 2
    # nanochat's default pattern lets BPE merge digit pairs learned from the same corpus
    default_tok = Tokenizer.train_from_iterator(iter(DIGIT_CORPUS), vocab_size=300)
    assert len(default_tok.encode("0123456789")) == 5


# -----------------------------------------------------------------------------
# the folder format


def test_save_load_round_trip(tokenizer, saved_dir):
    assert sorted(os.listdir(saved_dir)) == ["token_bytes.pt", "tokenizer.pkl"]
    loaded = Tokenizer.from_directory(saved_dir)
    assert enc_fields(loaded.enc) == enc_fields(tokenizer.enc)
    for text in ROUND_TRIP_STRINGS:
        assert loaded.encode(text) == tokenizer.encode(text)
    # the file is a plain pickled tiktoken Encoding, as nanochat writes and reads it
    with open(os.path.join(saved_dir, "tokenizer.pkl"), "rb") as f:
        plain = pickle.load(f)
    assert isinstance(plain, tiktoken.Encoding)
    assert enc_fields(plain) == enc_fields(tokenizer.enc)


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_restricted_loader_reads_every_pickle_protocol(tmp_path, tokenizer, protocol):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps(tokenizer.enc, protocol=protocol))
    enc = load_encoding(str(path))
    assert type(enc) is tiktoken.Encoding
    assert enc_fields(enc) == enc_fields(tokenizer.enc)


def test_token_bytes(tokenizer, saved_dir):
    token_bytes = load_token_bytes(saved_dir)
    assert token_bytes.dtype == torch.int32
    assert token_bytes.tolist() == tokenizer.token_bytes().tolist()
    n, k = tokenizer.get_vocab_size(), len(SPECIAL_TOKENS)
    assert token_bytes.shape == (n,)
    assert token_bytes[n - k:].tolist() == [0] * k
    assert token_bytes[:256].tolist() == [1] * 256  # the byte-level base tokens
    assert all(token_bytes[i] == len(tokenizer.enc.decode_single_token_bytes(i)) for i in range(n - k))
    for text in ROUND_TRIP_STRINGS:  # bytes per token add up to the text's UTF-8 length (bits-per-byte)
        assert int(token_bytes[tokenizer.encode(text)].sum()) == len(text.encode("utf-8"))


# -----------------------------------------------------------------------------
# chat rendering


def test_render_conversation_ids_and_mask(tokenizer):
    t = tokenizer
    sp = {name: t.encode_special(name) for name in SPECIAL_TOKENS}
    conversation = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Add 2+3"},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me compute."},
            {"type": "python", "text": "2+3"},
            {"type": "python_output", "text": "5"},
            {"type": "text", "text": "It is 5."},
        ]},
        {"role": "user", "content": "thanks"},
        {"role": "assistant", "content": "You're welcome."},
    ]}
    expected = [  # (ids, supervised)
        ([sp["<|bos|>"]], 0),
        ([sp["<|user_start|>"]], 0), (t.encode("Be brief.\n\nAdd 2+3"), 0), ([sp["<|user_end|>"]], 0),
        ([sp["<|assistant_start|>"]], 0),
        (t.encode("Let me compute."), 1),
        ([sp["<|python_start|>"]], 1), (t.encode("2+3"), 1), ([sp["<|python_end|>"]], 1),
        ([sp["<|output_start|>"]], 0), (t.encode("5"), 0), ([sp["<|output_end|>"]], 0),
        (t.encode("It is 5."), 1),
        ([sp["<|assistant_end|>"]], 1),
        ([sp["<|user_start|>"]], 0), (t.encode("thanks"), 0), ([sp["<|user_end|>"]], 0),
        ([sp["<|assistant_start|>"]], 0), (t.encode("You're welcome."), 1), ([sp["<|assistant_end|>"]], 1),
    ]
    want_ids = [i for ids, _ in expected for i in ids]
    want_mask = [m for ids, m in expected for _ in ids]
    ids, mask = t.render_conversation(conversation)
    assert ids == want_ids
    assert mask == want_mask
    assert conversation["messages"][1]["content"] == "Add 2+3"  # the input is not modified

    ids_all, mask_all = t.render_conversation(conversation, train_on="all")
    assert ids_all == want_ids
    assert mask_all == [0] + [1] * (len(want_ids) - 1)

    ids_short, mask_short = t.render_conversation(conversation, max_tokens=7)
    assert ids_short == want_ids[:7] and mask_short == want_mask[:7]


def test_render_for_completion(tokenizer):
    t = tokenizer
    conversation = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    ids = t.render_for_completion(conversation)
    prompt = [t.get_bos_token_id(), t.encode_special("<|user_start|>"), *t.encode("hi"),
              t.encode_special("<|user_end|>"), t.encode_special("<|assistant_start|>")]
    assert ids == prompt
    assert ids[-1] == t.encode_special("<|assistant_start|>")
    assert len(conversation["messages"]) == 2  # the input is not modified
    assert t.render_for_completion({"messages": conversation["messages"][:1]}) == prompt


@pytest.mark.parametrize("messages", [
    [{"role": "assistant", "content": "I speak first"}],
    [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "assistant", "content": "c"}],
    [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}],
    [{"role": "user", "content": "a"}, {"role": "assistant", "content": [{"type": "image", "text": "x"}]}],
    [],
])
def test_render_conversation_rejects_bad_conversations(tokenizer, messages):
    with pytest.raises(NanosealError):
        tokenizer.render_conversation({"messages": messages})


def test_render_conversation_rejects_unknown_train_on(tokenizer):
    with pytest.raises(ValueError, match="train_on"):
        tokenizer.render_conversation({"messages": [{"role": "user", "content": "a"}]}, train_on="user")


def test_visualize_tokenization(tokenizer):
    ids, mask = tokenizer.render_conversation({"messages": [{"role": "user", "content": "hi"},
                                                            {"role": "assistant", "content": "yo"}]})
    out = tokenizer.visualize_tokenization(ids, mask)
    assert "<|bos|>" in out and "<|assistant_end|>" in out


# -----------------------------------------------------------------------------
# safe loading


class _Evil:
    """Unpickling an instance calls func(*args)."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class _EvilEncoding:
    """Pickles as a real tiktoken Encoding whose state smuggles in another object."""

    def __init__(self, payload):
        self.payload = payload

    def __reduce__(self):
        state = {"name": self.payload, "pat_str": "x", "mergeable_ranks": {}, "special_tokens": {}}
        return copyreg._reconstructor, (tiktoken.Encoding, object, None), state


def _malicious_pickles(marker: str) -> dict[str, bytes]:
    """Pickles that would create `marker` when loaded with plain pickle."""
    create = f"open({marker!r}, 'w').close()"
    return {
        "os.system": pickle.dumps(_Evil(os.system, f"touch '{marker}'")),
        "builtins.eval": pickle.dumps(_Evil(eval, create)),
        "builtins.exec": pickle.dumps(_Evil(exec, create)),
        "protocol 0 os.system": pickle.dumps(_Evil(os.system, f"touch '{marker}'"), protocol=0),
        "hidden in the Encoding state": pickle.dumps(_EvilEncoding(_Evil(eval, create))),
        "raw GLOBAL opcode": b"cos\nsystem\n(Vtouch '" + marker.encode() + b"'\ntR.",
    }


@pytest.mark.parametrize("kind", list(_malicious_pickles("x")))
def test_malicious_pickle_is_refused(tmp_path, kind):
    marker = str(tmp_path / "pwned")
    directory = tmp_path / "tokenizer"
    directory.mkdir()
    (directory / "tokenizer.pkl").write_bytes(_malicious_pickles(marker)[kind])
    with pytest.raises(NanosealError) as info:
        Tokenizer.from_directory(str(directory))
    message = str(info.value)
    assert "\n" not in message
    assert "tokenizer.pkl" in message and "refusing to unpickle" in message
    assert "only a tiktoken Encoding is allowed" in message
    assert not os.path.exists(marker)


def test_refused_message_names_the_global(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps(_Evil(eval, "1")))
    with pytest.raises(NanosealError, match=r"tokenizer\.pkl: refusing to unpickle builtins\.eval"):
        load_encoding(str(path))


@pytest.mark.parametrize("payload", [
    pickle.dumps({"name": "x"}),  # a harmless pickle that is not an Encoding
    pickle.dumps([1, 2, 3]),
    b"ctiktoken.core\nEncoding\n)\x81Vcl100k_base\nb.",  # a registered encoding by name (would download)
    b"ctiktoken.core\nEncoding\n)\x81}(Vname\nVx\nub.",  # an Encoding with a bad state
    b"ccopy_reg\n_reconstructor\n(ctiktoken.core\nEncoding\nc__builtin__\nobject\nVx\ntR.",  # misused helper
    b"c_codecs\nencode\n(Vx\nVrot13\ntR.",  # _codecs.encode with another codec
])
def test_non_encoding_pickles_are_refused(tmp_path, payload):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(payload)
    with pytest.raises(NanosealError, match="tokenizer.pkl") as info:
        load_encoding(str(path))
    assert "\n" not in str(info.value)


def test_invalid_encoding_and_missing_special_tokens(tmp_path):
    path = tmp_path / "tokenizer.pkl"
    path.write_bytes(pickle.dumps(_EvilEncoding("harmless name")))  # right types, but no byte tokens
    with pytest.raises(NanosealError, match=r"tokenizer\.pkl: invalid tiktoken Encoding"):
        load_encoding(str(path))
    plain = tiktoken.Encoding(name="bytes", pat_str=SPLIT_PATTERN,
                              mergeable_ranks={bytes([i]): i for i in range(256)}, special_tokens={})
    path.write_bytes(pickle.dumps(plain))
    assert enc_fields(load_encoding(str(path))) == enc_fields(plain)
    with pytest.raises(NanosealError, match=r"tokenizer\.pkl: tokenizer 'bytes' lacks the special tokens"):
        Tokenizer.from_directory(str(tmp_path))


@pytest.mark.parametrize("payload", [b"", b"not a pickle at all", b"\x80\x05\x95garbage", "truncated"])
def test_corrupt_pickle_gives_one_line_error(tmp_path, tokenizer, payload):
    if payload == "truncated":
        payload = pickle.dumps(tokenizer.enc)[:-40]
    directory = tmp_path / "tokenizer"
    directory.mkdir()
    (directory / "tokenizer.pkl").write_bytes(payload)
    with pytest.raises(NanosealError, match="tokenizer.pkl") as info:
        Tokenizer.from_directory(str(directory))
    assert "\n" not in str(info.value)


def test_missing_folder_and_files(tmp_path, saved_dir):
    with pytest.raises(NanosealError, match="tokenizer folder not found"):
        Tokenizer.from_directory(str(tmp_path / "nope"))
    with pytest.raises(NanosealError, match=r"tokenizer\.pkl: tokenizer file not found"):
        Tokenizer.from_directory(str(tmp_path))
    with pytest.raises(NanosealError, match=r"token_bytes\.pt: token bytes file not found"):
        load_token_bytes(str(tmp_path))
    (tmp_path / "token_bytes.pt").write_bytes(b"garbage")
    with pytest.raises(NanosealError, match=r"token_bytes\.pt: corrupt"):
        load_token_bytes(str(tmp_path))
