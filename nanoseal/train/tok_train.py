"""
`nanoseal train-tokenizer`: a BPE tokenizer (rustbpe, nanochat's tiktoken format, one digit per token) trained on
what the policies read and write: procedural ARC-style tasks as few-shot conversations, and the self-edit
prompt with self-edit JSON answers (so SEAL's instruction costs few tokens).

    nanoseal train-tokenizer --preset tiny          # -> $NANOSEAL_BASE_DIR/tokenizer/ (default ~/.cache/nanoseal)

An existing tokenizer is reused, unless --force. Its corpus is described in tokenizer/nanoseal_corpus.json.
"""

import argparse
import os
import time

from nanoseal.argtypes import SEED, int_in
from nanoseal.common import atomic_write_json, get_base_dir, print0
from nanoseal.tokenizer import DIGIT_SPLIT_PATTERN, SPECIAL_TOKENS, Tokenizer
from nanoseal.train.data import task_stream, tokenizer_corpus
from nanoseal.train.presets import Preset, get_preset


def get_or_train_tokenizer(base_dir: str, preset: Preset, seed: int = 0, force: bool = False) -> Tokenizer:
    """Load <base>/tokenizer, or train one for the preset and save it there."""
    folder = os.path.join(base_dir, "tokenizer")
    if not force and os.path.exists(os.path.join(folder, "tokenizer.pkl")):
        tok = Tokenizer.from_directory(folder)
        if not os.path.exists(os.path.join(folder, "token_bytes.pt")):  # a crash between the two files of save()
            tok.save(folder)
        return tok
    t0 = time.time()
    tasks = task_stream(preset.family_names(), seed=seed, min_side=preset.min_side, max_side=preset.max_side)
    tok = Tokenizer.train_from_iterator(tokenizer_corpus(tasks, preset.tokenizer_tasks, seed),
                                        vocab_size=preset.vocab_size, pattern=DIGIT_SPLIT_PATTERN)
    tok.save(folder)
    atomic_write_json(os.path.join(folder, "nanoseal_corpus.json"),
                      {"preset": preset.name, "tasks": preset.tokenizer_tasks, "families": "train",
                       "sides": [preset.min_side, preset.max_side], "seed": seed, "vocab_size": preset.vocab_size})
    print0(f"trained a {tok.get_vocab_size()}-token tokenizer in {time.time() - t0:.1f}s -> {folder}")
    return tok


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal train-tokenizer`."""
    parser.add_argument("--preset", default="tiny", help="micro | tiny | d12 | d20")
    parser.add_argument("--vocab-size", type=int_in(256 + len(SPECIAL_TOKENS), 2**20), default=None,
                        help="override the preset's vocabulary size (256 bytes + the special tokens at least)")
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--force", action="store_true", help="retrain even if a tokenizer exists")


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal train-tokenizer`."""
    preset = get_preset(args.preset, vocab_size=args.vocab_size)
    tok = get_or_train_tokenizer(get_base_dir(), preset, args.seed, args.force)
    print0(f"tokenizer: {tok.get_vocab_size()} tokens in {os.path.join(get_base_dir(), 'tokenizer')}")
    return 0
