"""Tests for nanoseal.seal.selfedit: strict parsing, canonical form, fixed recipes, the prompt and sampling."""

import json
import math
import random

import pytest

from nanoseal.arc.augment import AugmentationFlags
from nanoseal.arc.data import load_arc
from nanoseal.arc.grids import format_grid
from nanoseal.arc.prompts import demo_text
from nanoseal.engine import Engine
from nanoseal.seal.selfedit import (
    DEFAULT_SELF_EDIT,
    FIELDS_PRIOR_OUTPUT,
    FIELDS_PRIOR_TRUE,
    PRIOR_LEARNING_RATES,
    STRATEGIES,
    SelfEdit,
    parse_self_edit,
    random_self_edit_text,
    recipe_grid,
    sample_self_edits,
    selfedit_conversation,
    selfedit_prompt_ids,
    votes_note,
)

from conftest import make_tiny_model

VALID = {
    "data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                        "use_chain_augmentations": True, "use_repeat_augmentations": False},
    "training": {"strategy": "train_using_all_tokens", "learning_rate": 0.0003, "num_train_epochs": 3},
}


def edited(path: str, value) -> str:
    """VALID as JSON text with one value replaced ("training.learning_rate"), or deleted when value is DELETE."""
    obj = json.loads(json.dumps(VALID))
    *parents, last = path.split(".")
    node = obj
    for p in parents:
        node = node[p]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return json.dumps(obj)


DELETE = object()
VALID_TEXT = json.dumps(VALID)

# (text, a fragment the reason must contain)
MALFORMED = [
    ("", "empty output"),
    ("   \n ", "empty output"),
    ("sure! here is my config", "not JSON"),
    ("Here: " + VALID_TEXT, "not JSON"),
    ("[1, 2]", "top level is a JSON array"),
    ('"just a string"', "top level is a JSON string"),
    ("42", "top level is a JSON number"),
    (VALID_TEXT[:-1], "truncated"),
    (VALID_TEXT[:40], "truncated"),
    ('{"data_generation": {', "truncated"),
    (VALID_TEXT + " and more", "extra text after"),
    (VALID_TEXT + VALID_TEXT, "extra text after"),
    ('{"data_generation": 1,}', "invalid JSON"),
    (edited("data_generation", DELETE), "missing key 'data_generation'"),
    (edited("training", DELETE), "missing key 'training'"),
    (edited("data_generation.use_size_augmentations", DELETE), "missing key 'use_size_augmentations'"),
    (edited("training.num_train_epochs", DELETE), "missing key 'num_train_epochs'"),
    (edited("extra", 1), "unknown key 'extra'"),
    (edited("training.batch_size", 4), "unknown key 'batch_size'"),
    (edited("data_generation.use_basic_augmentations", 1), "use_basic_augmentations must be true or false"),
    (edited("data_generation.use_repeat_augmentations", "true"), "use_repeat_augmentations must be true or false"),
    (edited("data_generation.use_chain_augmentations", None), "use_chain_augmentations must be true or false"),
    (edited("data_generation", [True, False, True, False]), "data_generation must be a JSON object, got array"),
    (edited("training", "fast"), "training must be a JSON object, got string"),
    (edited("training.strategy", "train_using_input_tokens"), "unknown strategy"),
    (edited("training.strategy", 1), "strategy must be a string"),
    (edited("training.learning_rate", 0), "learning_rate 0 out of range (0, 0.1]"),
    (edited("training.learning_rate", -0.001), "learning_rate -0.001 out of range"),
    (edited("training.learning_rate", 0.5), "learning_rate 0.5 out of range (0, 0.1]"),
    (edited("training.learning_rate", "1e-3"), "learning_rate must be a number, got string"),
    (edited("training.learning_rate", True), "learning_rate must be a number, got boolean"),
    (VALID_TEXT.replace("0.0003", "NaN"), "non-standard JSON constant NaN"),
    (VALID_TEXT.replace("0.0003", "Infinity"), "non-standard JSON constant Infinity"),
    (VALID_TEXT.replace("0.0003", "-Infinity"), "non-standard JSON constant -Infinity"),
    (VALID_TEXT.replace("0.0003", "1e400"), "not finite"),
    (edited("training.num_train_epochs", 0), "num_train_epochs 0 out of range [1, 10]"),
    (edited("training.num_train_epochs", -2), "num_train_epochs -2 out of range"),
    (edited("training.num_train_epochs", 2.5), "num_train_epochs must be an integer, got number 2.5"),
    (edited("training.num_train_epochs", 3.0), "num_train_epochs must be an integer"),
    (edited("training.num_train_epochs", 11), "num_train_epochs 11 out of range [1, 10]"),
    (edited("training.num_train_epochs", "3"), "num_train_epochs must be an integer, got string"),
    (edited("training.num_train_epochs", True), "num_train_epochs must be an integer, got boolean"),
    ('{"training": {}, "training": {}}', "duplicate key 'training'"),
    ("{{}}", "invalid JSON"),
    ('{"a":' * 100000, "invalid JSON"),
    ("[" * 100000 + "]" * 100000, "not JSON"),
]


@pytest.mark.parametrize("text,fragment", MALFORMED)
def test_malformed_rejected_with_reason(text, fragment):
    edit, reason = parse_self_edit(text)
    assert edit is None, f"accepted {text[:80]!r}"
    assert reason and fragment in reason, f"reason {reason!r} lacks {fragment!r}"
    assert "\n" not in reason and len(reason) < 200, f"reason is not a short single line: {reason!r}"


def test_malformed_count():
    assert len(MALFORMED) >= 20


def test_non_string_input():
    assert parse_self_edit(None) == (None, "expected text, got NoneType")


def test_step_budget():
    # 250 examples at batch 2 -> 125 steps per epoch: 3 epochs fit 375, 4 do not
    ok, reason = parse_self_edit(VALID_TEXT, max_steps=375, n_examples=250, batch_size=2)
    assert ok is not None and reason is None
    over = edited("training.num_train_epochs", 4)
    edit, reason = parse_self_edit(over, max_steps=375, n_examples=250, batch_size=2)
    assert edit is None and "500 training steps" in reason and "budget of 375" in reason
    # the budget only applies when both are known
    assert parse_self_edit(over, max_steps=375)[0] is not None
    # odd example counts round up: ceil(251 / 2) * 3 = 378 > 375
    assert parse_self_edit(VALID_TEXT, max_steps=375, n_examples=251)[0] is None


def test_max_epochs_cap_is_configurable():
    text = edited("training.num_train_epochs", 5)
    assert parse_self_edit(text, max_epochs=5)[0] is not None
    edit, reason = parse_self_edit(text, max_epochs=4)
    assert edit is None and "out of range [1, 4]" in reason


def test_valid_parsed_exactly():
    edit, reason = parse_self_edit("  \n" + VALID_TEXT + "\n ")
    assert reason is None
    assert edit == SelfEdit(basic=True, size=False, chain=True, repeat=False, strategy="train_using_all_tokens",
                            learning_rate=0.0003, num_train_epochs=3)
    assert edit.to_json() == VALID
    assert edit.flags == AugmentationFlags(True, False, True, False)
    assert edit.flags == AugmentationFlags.from_self_edit(VALID)


def test_pretty_printed_and_reordered_keys_accepted():
    text = json.dumps({"training": VALID["training"], "data_generation": VALID["data_generation"]}, indent=2)
    edit, reason = parse_self_edit(text)
    assert reason is None and edit.to_json() == VALID


def test_round_trip_and_canonical_stable():
    for edit in recipe_grid() + [DEFAULT_SELF_EDIT]:
        again, reason = parse_self_edit(json.dumps(edit.to_json()))
        assert reason is None and again == edit
        assert parse_self_edit(edit.canonical())[0] == edit
        assert again.canonical() == edit.canonical()
        assert " " not in edit.canonical()
    reordered = json.dumps({"training": VALID["training"], "data_generation": VALID["data_generation"]})
    assert parse_self_edit(reordered)[0].canonical() == parse_self_edit(VALID_TEXT)[0].canonical()
    assert DEFAULT_SELF_EDIT.canonical() == (
        '{"data_generation":{"use_basic_augmentations":true,"use_chain_augmentations":false,'
        '"use_repeat_augmentations":false,"use_size_augmentations":false},'
        '"training":{"learning_rate":0.001,"num_train_epochs":2,"strategy":"train_using_output_tokens"}}')


def test_selfedit_rejects_bad_construction():
    with pytest.raises(AssertionError):
        SelfEdit(True, False, False, False, "train_using_all_tokens", 0.5, 1)
    with pytest.raises(AssertionError):
        SelfEdit(True, False, False, False, "bogus", 1e-3, 1)
    with pytest.raises(AssertionError):
        SelfEdit(1, False, False, False, "train_using_all_tokens", 1e-3, 1)


def test_default_and_grid():
    assert DEFAULT_SELF_EDIT.flags.label() == "basic"
    assert DEFAULT_SELF_EDIT.strategy == "train_using_output_tokens"
    grid = recipe_grid()
    assert 1 <= len(grid) <= 24
    assert len({e.canonical() for e in grid}) == len(grid), "recipes must be unique"
    assert {e.strategy for e in grid} == set(STRATEGIES)
    assert all(parse_self_edit(e.canonical(), max_steps=375, n_examples=250)[0] == e for e in grid)
    prior = recipe_grid("prior")
    assert len(prior) == 10 and len({e.canonical() for e in prior}) == 10
    assert {e.learning_rate for e in prior} == set(PRIOR_LEARNING_RATES), "the grid spans the prior's rates"
    with pytest.raises(AssertionError):
        recipe_grid("nope")


def test_random_self_edit_text_always_parses_and_covers_prior():
    rng = random.Random(0)
    edits = []
    for _ in range(300):
        text = random_self_edit_text(rng)
        edit, reason = parse_self_edit(text)
        assert reason is None, f"{text}: {reason}"
        assert text == edit.canonical()
        edits.append(edit)
    assert {e.num_train_epochs for e in edits} == {1, 2, 3, 4, 5}
    assert {e.strategy for e in edits} == set(STRATEGIES)
    assert len({e.learning_rate for e in edits}) == 5
    assert all(any(getattr(e, g) for e in edits) and not all(getattr(e, g) for e in edits)
               for g in ("basic", "size", "chain", "repeat"))
    assert random_self_edit_text(random.Random(7)) == random_self_edit_text(random.Random(7))


def test_flat_prior_draws_what_the_shipped_policy_was_trained_on():
    # the shipped policy's SFT documents came from this exact sequence of draws: the flat prior must not change
    def old(rng):
        flags = [rng.random() < 0.5 for _ in range(4)]
        return SelfEdit(*flags, strategy=rng.choice(STRATEGIES), learning_rate=rng.choice(PRIOR_LEARNING_RATES),
                        num_train_epochs=rng.randint(1, 5)).canonical()
    a, b = random.Random(3), random.Random(3)
    assert [random_self_edit_text(a) for _ in range(50)] == [old(b) for _ in range(50)]


def test_fields_prior_has_its_marginals_and_stays_valid():
    rng = random.Random(0)
    edits = [parse_self_edit(random_self_edit_text(rng, "fields"))[0] for _ in range(4000)]
    assert all(e is not None for e in edits)
    for name, p in zip(("basic", "size", "chain", "repeat"), FIELDS_PRIOR_TRUE):
        share = sum(getattr(e, name) for e in edits) / len(edits)
        assert abs(share - p) < 0.03, f"{name}: {share:.3f} true, prior {p}"
    output = sum(e.strategy == "train_using_output_tokens" for e in edits) / len(edits)
    assert abs(output - FIELDS_PRIOR_OUTPUT) < 0.03
    assert {e.learning_rate for e in edits} == set(PRIOR_LEARNING_RATES)
    assert {e.num_train_epochs for e in edits} == {1, 2, 3, 4, 5}
    flat = [parse_self_edit(random_self_edit_text(rng))[0] for _ in range(4000)]
    assert abs(sum(e.basic for e in flat) / len(flat) - 0.5) < 0.03
    with pytest.raises(AssertionError, match="prior"):
        random_self_edit_text(rng, "peaked")


# ---------------------------------------------------------------------------------------------------------
# the prompt


@pytest.fixture(scope="module")
def task():
    """A small real ARC task (3 demos of 6x3 -> 9x3) whose test input does not occur in the demos."""
    return next(t for t in load_arc("arcagi1", "train") if t.id == "017c7c7b")


@pytest.mark.parametrize("style", ["compact", "seal"])
def test_prompt_shows_demos_not_test_input(task, style):
    conv = selfedit_conversation(task, style)
    assert [m["role"] for m in conv["messages"]] == ["user"]
    text = conv["messages"][0]["content"]
    for inp, out in task.train:
        assert demo_text(inp, out, style) in text
    test_input = format_grid(task.test[0][0], style)
    assert test_input not in text, "the self-edit prompt must not show the test input"
    assert "JSON" in text and "train_using_output_tokens" in text and "use_repeat_augmentations" in text


def test_prompt_ids_fit_budget(task, tokenizer):
    full = selfedit_prompt_ids(tokenizer, task)
    assert full[-1] == tokenizer.encode_special("<|assistant_start|>")
    assert full == tokenizer.render_for_completion(selfedit_conversation(task))
    assert selfedit_prompt_ids(tokenizer, task, max_tokens=len(full)) == full
    smaller = selfedit_prompt_ids(tokenizer, task, max_tokens=len(full) - 1)
    assert smaller is not None and len(smaller) < len(full), "a demonstration should be dropped"
    reserve = selfedit_prompt_ids(tokenizer, task, max_tokens=len(full), reserve_tokens=10)
    assert reserve is not None and len(reserve) + 10 <= len(full)
    assert selfedit_prompt_ids(tokenizer, task, max_tokens=50) is None


def test_votes_note_precedes_the_instruction_and_survives_dropped_demos(task, tokenizer):
    note = votes_note([[5, 7], [3, 7]])
    assert note == "Before fine-tuning, the views that agree on your answer: 5 of 7, 3 of 7."
    plain = selfedit_conversation(task)["messages"][0]["content"]
    noted = selfedit_conversation(task, note=note)["messages"][0]["content"]
    assert noted.replace(note + "\n", "", 1) == plain and noted.endswith(plain[-200:])  # the instruction still ends it
    full = selfedit_prompt_ids(tokenizer, task, note=note)
    assert len(full) > len(selfedit_prompt_ids(tokenizer, task))
    smaller = selfedit_prompt_ids(tokenizer, task, max_tokens=len(full) - 1, note=note)  # drops a demo, keeps the note
    assert smaller is not None and note in tokenizer.decode(smaller)
    for bad in ([], [[8, 7]], [[1, 2, 3]]):
        with pytest.raises(AssertionError, match="votes"):
            votes_note(bad)


# ---------------------------------------------------------------------------------------------------------
# sampling


def test_sample_self_edits_tiny_gpt(task, tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    engine = Engine(model, tokenizer)
    samples = sample_self_edits(engine, tokenizer, task, k=3, max_tokens=6, seed=1, max_resamples=1)
    assert len(samples) == 3
    for s in samples:
        assert set(s) == {"raw", "self_edit", "reason", "attempts", "seconds"}
        assert isinstance(s["raw"], str) and s["seconds"] > 0
        if s["self_edit"] is None:  # a random model writes garbage: a reason, and exactly 2 bounded attempts
            assert s["reason"] and s["attempts"] == 2
        else:
            assert s["reason"] is None and 1 <= s["attempts"] <= 2


def test_sample_self_edits_prompt_too_long(task, tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=64)
    samples = sample_self_edits(Engine(model, tokenizer), tokenizer, task, k=2, max_tokens=16)
    assert [s["attempts"] for s in samples] == [0, 0]
    assert all("does not fit" in s["reason"] for s in samples)


class ScriptedEngine:
    """A stand-in engine that answers each generate_batch call with the next batch of scripted texts."""

    def __init__(self, tokenizer, batches: list[list[str]]):
        self.tokenizer = tokenizer
        self.batches = list(batches)
        self.calls = []
        self.model = type("M", (), {"config": type("C", (), {"sequence_len": 100000})()})()

    def generate_batch(self, tokens, num_samples=1, max_tokens=None, temperature=1.0, top_k=None, seed=42):
        self.calls.append((num_samples, seed))
        texts = self.batches.pop(0)
        assert len(texts) == num_samples
        return [list(tokens) + self.tokenizer.encode(t) for t in texts], None


def test_resampling_only_invalid_and_bounded(task, tokenizer):
    good = DEFAULT_SELF_EDIT.canonical()
    bad_lr = edited("training.learning_rate", 0.5)
    engine = ScriptedEngine(tokenizer, [["oops", good, bad_lr], [good, "{"], ["nope"]])
    samples = sample_self_edits(engine, tokenizer, task, k=3, seed=10, max_resamples=2)
    assert engine.calls == [(3, 10), (2, 11), (1, 12)], "each round resamples only the invalid ones"
    assert [s["attempts"] for s in samples] == [2, 1, 3]
    assert samples[0]["self_edit"] == DEFAULT_SELF_EDIT and samples[1]["self_edit"] == DEFAULT_SELF_EDIT
    assert samples[2]["self_edit"] is None and samples[2]["raw"] == "nope" and "not JSON" in samples[2]["reason"]
    assert all(math.isfinite(s["seconds"]) for s in samples)


def test_no_resampling_and_parse_kwargs(task, tokenizer):
    text = edited("training.num_train_epochs", 4)
    engine = ScriptedEngine(tokenizer, [[text, text]])
    samples = sample_self_edits(engine, tokenizer, task, k=2, max_resamples=0, max_steps=375, n_examples=250)
    assert len(engine.calls) == 1
    assert all(s["self_edit"] is None and "budget of 375" in s["reason"] and s["attempts"] == 1 for s in samples)
