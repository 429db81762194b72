"""The tiny policy shipped with the package (nanoseal/policies/tiny, what `nanoseal demo --from-scratch` trains
with seed 0): its files are the listed ones, it loads as a nanochat checkpoint, and it writes valid self-edits.

Run: pytest tests/test_shipped_policy.py
"""

import hashlib
import os

from nanoseal.arc.gen import make_task
from nanoseal.checkpoint import load_model
from nanoseal.demo import SHIPPED_POLICY
from nanoseal.engine import Engine
from nanoseal.seal.selfedit import sample_self_edits
from nanoseal.train.presets import get_preset


def test_shipped_files_match_their_checksums():
    lines = open(os.path.join(SHIPPED_POLICY, "SHA256SUMS")).read().split("\n")
    listed = {}
    for line in filter(None, lines):
        digest, name = line.split()
        listed[name] = digest
    assert set(listed) == {"tokenizer/tokenizer.pkl", "tokenizer/token_bytes.pt",
                           "chatsft_checkpoints/d4/model_000250.pt", "chatsft_checkpoints/d4/meta_000250.json"}
    for name, digest in listed.items():
        with open(os.path.join(SHIPPED_POLICY, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, f"{name} differs from SHA256SUMS"


def test_shipped_policy_is_the_tiny_preset_seed_0_and_writes_valid_self_edits():
    model, tokenizer, meta = load_model(SHIPPED_POLICY)
    assert meta["preset"]["name"] == "tiny" and meta["seed"] == 0 and meta["step"] == 250
    assert meta["train_state"]["final"] is True
    assert meta["preset"].get("selfedit_prior", "flat") == get_preset("tiny").selfedit_prior  # what the preset trains
    assert meta["preset"].get("doc_attention", False) == get_preset("tiny").doc_attention
    assert model.num_params() < 1_500_000
    task = make_task("flip_lr", 2_000_001, min_side=2, max_side=4)
    samples = sample_self_edits(Engine(model, tokenizer), tokenizer, task, 4, temperature=0.8, seed=0)
    assert sum(s["self_edit"] is not None for s in samples) >= 3, [s["reason"] for s in samples]


def test_demo_uses_the_shipped_policy_unless_asked_to_train():
    import argparse

    from nanoseal.demo import add_args, shipped_policy

    parser = argparse.ArgumentParser()
    add_args(parser)
    assert shipped_policy(parser.parse_args([]))
    assert shipped_policy(parser.parse_args(["--selfedit-prior", "flat"]))  # the shipped policy's own prior
    assert shipped_policy(parser.parse_args(["--doc-attention"]))  # and its own attention
    for flags in (["--from-scratch"], ["--preset", "micro"], ["--policy-seed", "1"], ["--pretrain-minutes", "1"],
                  ["--selfedit-prior", "fields"], ["--no-doc-attention"]):
        assert not shipped_policy(parser.parse_args(flags)), flags
