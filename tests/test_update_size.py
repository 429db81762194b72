"""How far a ReST-EM update moves the policy (nanoseal.seal.update_size): distributions, distances, and a real
update that the measurement sees move a policy onto the pairs it clones.

Run: pytest tests/test_update_size.py
"""

import math

import pytest

from nanoseal.arc.gen import make_task
from nanoseal.common import NanosealError
from nanoseal.seal.restem import RestemConfig, loss_sum, restem_update, sft_documents
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, SelfEdit
from nanoseal.seal.update_size import (
    FIELDS,
    entropy,
    field_distributions,
    field_nll,
    field_spans,
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
    assert parse_sizes("16:5e-5:8,0:1e-3:4") == [(16, 5e-5, 8, 0), (0, 1e-3, 4, 0)]
    assert parse_sizes("16:1e-3:8:400") == [(16, 1e-3, 8, 400)]
    for bad in ("16:5e-5", "x:1e-3:4", "16:0:8", "16:1e-3:0", "-1:1e-3:2", "16:nan:2", "16:1e-3:8:-1",
                "16:1e-3:8:4:5", "16:1e-3:8:x"):
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


def test_field_spans_find_each_value():
    text = SelfEdit(basic=False, size=True, chain=False, repeat=False, strategy="train_using_all_tokens",
                    learning_rate=1e-2, num_train_epochs=5).canonical()
    spans = field_spans(text)
    assert set(spans) == set(FIELDS)
    assert text[slice(*spans["learning_rate"])] == "0.01"
    assert text[slice(*spans["strategy"])] == '"train_using_all_tokens"'
    assert text[slice(*spans["use_size_augmentations"])] == "true"
    assert text[slice(*spans["use_basic_augmentations"])] == "false"
    spaced = '{"training":{"learning_rate": 3e-3}}'
    spans = field_spans(spaced)
    assert list(spans) == ["learning_rate"] and spaced[slice(*spans["learning_rate"])] == "3e-3"


def test_field_nll_splits_the_pairs_loss_and_sees_the_field_an_update_teaches(tokenizer):
    tasks = {f"t{i}": make_task("flip_lr", i, min_side=2, max_side=2) for i in range(2)}
    edit = SelfEdit(basic=True, size=False, chain=False, repeat=True, strategy="train_using_output_tokens",
                    learning_rate=1e-2, num_train_epochs=4).canonical()
    pairs = [(t, edit) for t in tasks]
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    cfg = RestemConfig(learning_rate=3e-2, epochs=1, batch_size=2, min_steps=12)
    before = field_nll(model, tokenizer, tasks, pairs, cfg)
    assert before["n"] == 2 and set(before["fields"]) == set(FIELDS) | {"other"}
    assert all(v > 0 for v in before["fields"].values()), before  # a random model: every token costs something
    total, _ = loss_sum(model, sft_documents(tokenizer, tasks, pairs, cfg, 2048), tokenizer.get_bos_token_id())
    assert math.isclose(sum(before["fields"].values()), total / 2, rel_tol=1e-3), "the split adds up to the loss"
    restem_update(model, tokenizer, tasks, pairs, cfg, seed=0)
    after = field_nll(model, tokenizer, tasks, pairs, cfg)["fields"]
    for f in FIELDS:  # one self-edit cloned: every field's value becomes likely
        assert after[f] < 0.5 * before["fields"][f], (f, before["fields"][f], after[f])
