"""How far a ReST-EM update moves the policy (nanoseal.seal.update_size): distributions, distances, and a real
update that the measurement sees move a policy onto the pairs it clones.

Run: pytest tests/test_update_size.py
"""

import math

import pytest

from nanoseal.arc.gen import make_task
from nanoseal.common import NanosealError
from nanoseal.seal.restem import RestemConfig, restem_update
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, SelfEdit
from nanoseal.seal.update_size import (
    entropy,
    field_distributions,
    parse_sizes,
    shift_summary,
    tv_distance,
)

from conftest import make_tiny_model

A = DEFAULT_SELF_EDIT.to_json()
B = SelfEdit(basic=False, size=True, chain=False, repeat=False, strategy="train_using_all_tokens",
             learning_rate=1e-2, num_train_epochs=5).to_json()


def test_field_distributions_and_distances():
    d = field_distributions([A, A, B, None])
    assert d["n"] == 4 and d["valid"] == 0.75
    assert d["fields"]["learning_rate"] == {"0.001": 2 / 3, "0.01": 1 / 3}
    assert d["fields"]["use_size_augmentations"] == {"False": 2 / 3, "True": 1 / 3}
    assert tv_distance({"a": 1.0}, {"a": 1.0}) == 0.0
    assert tv_distance({"a": 1.0}, {"b": 1.0}) == 1.0
    assert tv_distance({"a": 0.5, "b": 0.5}, {"a": 1.0}) == 0.5
    assert tv_distance({}, {"a": 1.0}) == 1.0, "no valid edit at all: as far as it gets"
    assert entropy({"a": 1.0}) == 0.0 and math.isclose(entropy({"a": 0.5, "b": 0.5}), math.log(2))
    s = shift_summary(field_distributions([A, B]), field_distributions([A, A]), field_distributions([A]))
    assert s["fields"]["learning_rate"] == {"tv_moved": 0.5, "tv_before_kept": 0.5, "tv_after_kept": 0.0,
                                            "entropy_before": round(math.log(2), 4), "entropy_after": 0.0,
                                            "entropy_kept": 0.0}
    assert s["mean"]["tv_after_kept"] == 0.0


def test_parse_sizes():
    assert parse_sizes("16:5e-5:8,0:1e-3:4") == [(16, 5e-5, 8), (0, 1e-3, 4)]
    for bad in ("16:5e-5", "x:1e-3:4", "16:0:8", "16:1e-3:0", "-1:1e-3:2", "16:nan:2"):
        with pytest.raises(NanosealError, match="rank:lr:epochs"):
            parse_sizes(bad)


def test_update_size_decides_how_far_the_pairs_nll_moves(tokenizer):
    # SEAL's 1B learning rate barely moves a small policy; a larger one clones the pairs (lower NLL)
    tasks = {f"t{i}": make_task("flip_lr", i, min_side=2, max_side=3) for i in range(3)}
    pairs = [(t, DEFAULT_SELF_EDIT.canonical()) for t in tasks]
    drops = {}
    for lr in (5e-5, 1e-2):
        model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
        s = restem_update(model, tokenizer, tasks, pairs, RestemConfig(learning_rate=lr, epochs=4, batch_size=3),
                          seed=0)
        drops[lr] = s["pairs_nll"]["before"] - s["pairs_nll"]["after"]
        assert s["update"] == {"rank": 16, "learning_rate": lr, "epochs": 4, "batch_size": 3, "min_steps": 0,
                               "replay": 0.0}
    assert 0 <= drops[5e-5] < 0.05 * drops[1e-2], drops
