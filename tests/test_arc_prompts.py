"""Tests for nanoseal.arc.prompts: SEAL's conversation layout, token budgets, training conversations.

Run: pytest tests/test_arc_prompts.py
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nanoseal.arc.data import Task, load_arc
from nanoseal.arc.prompts import (
    SYSTEM_PROMPT,
    conversation_tokens,
    few_shot_prompt,
    task_conversation,
    train_on_for_strategy,
    training_conversation,
)
from nanoseal.common import NanosealError

TINY = Task(
    "tiny",
    [(((1, 0),), ((0, 1),)), (((2, 2), (0, 0)), ((0, 0), (2, 2)))],
    [(((3,),), ((3,),))],
)


def test_seal_layout_exact_text():
    conv = task_conversation(TINY.train, TINY.test[0][0], TINY.test[0][1])
    system, user, assistant = conv["messages"]
    assert [m["role"] for m in conv["messages"]] == ["system", "user", "assistant"]
    assert system["content"] == (
        SYSTEM_PROMPT + "The input-output grids are provided as python arrays:\n"
        "[[1 0]] -> [[0 1]]#\n"
        "[[2 2]\n [0 0]] -> [[0 0]\n [2 2]]#\n"
    )
    assert SYSTEM_PROMPT.startswith("Figure out the underlying transformation in the following examples")
    assert user["content"] == "[[3]] -> " and assistant["content"] == "[[3]]#"
    compact = task_conversation(TINY.train, TINY.test[0][0], None, style="compact")
    assert len(compact["messages"]) == 2 and "10\n->\n01#\n" in compact["messages"][0]["content"]


def test_conversation_tokens_counts_nanochat_rendering():
    conv = task_conversation(TINY.train, TINY.test[0][0], TINY.test[0][1])
    system, user, assistant = (m["content"] for m in conv["messages"])
    expected = 1 + (2 + len(system + "\n\n" + user)) + (2 + len(assistant))
    assert conversation_tokens(conv, len) == expected


def test_conversation_tokens_agree_with_the_tokenizer(tokenizer):
    conv = training_conversation(Task("t", TINY.train, TINY.test))
    ids, mask = tokenizer.render_conversation(conv, max_tokens=10**6, train_on="assistant")
    assert conversation_tokens(conv, lambda s: len(tokenizer.encode(s))) == len(ids)
    _, all_mask = tokenizer.render_conversation(conv, max_tokens=10**6, train_on=train_on_for_strategy(
        "train_using_all_tokens"))
    assert sum(mask) < sum(all_mask) == len(ids) - 1


def test_strategies_map_to_loss_masks():
    assert train_on_for_strategy("train_using_output_tokens") == "assistant"
    assert train_on_for_strategy("train_using_all_tokens") == "all"
    with pytest.raises(NanosealError, match="unknown training strategy"):
        train_on_for_strategy("train_on_everything")


def test_unbudgeted_prompt_keeps_everything():
    p = few_shot_prompt(TINY)
    assert p.fits and p.kept == [0, 1] and p.dropped == []
    assert p.conversation["messages"][-1]["role"] == "user", "a prediction prompt ends with the user turn"


def test_budget_drops_most_expensive_demo_first(caplog):
    full = few_shot_prompt(TINY)
    budget = full.tokens - 1
    with caplog.at_level("INFO", logger="nanoseal.arc.prompts"):
        p = few_shot_prompt(TINY, max_tokens=budget)
    assert p.fits and p.tokens <= budget and p.dropped == [1] and p.kept == [0]
    assert "dropped demonstration 1" in caplog.text
    assert "[[2 2]" not in p.conversation["messages"][0]["content"], "a dropped demo is gone entirely"
    hopeless = few_shot_prompt(TINY, max_tokens=10)
    assert not hopeless.fits and hopeless.kept == [0] and hopeless.dropped == [1]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 799), st.integers(200, 6000), st.booleans())
def test_budgeted_prompts_never_exceed_the_budget(index, budget, include_answer):
    tasks = load_arc("arcagi1", "train") + load_arc("arcagi1", "eval")
    task = tasks[index]
    p = few_shot_prompt(task, max_tokens=budget, include_answer=include_answer)
    if p.fits:
        assert p.tokens <= budget
        answer = 0 if include_answer else p.tokens - conversation_tokens(p.conversation, len)
        assert conversation_tokens(p.conversation, len) + answer == p.tokens
    assert sorted(p.kept + p.dropped) == list(range(len(task.train)))
    content = p.conversation["messages"][0]["content"]
    assert content.count("#\n") == len(p.kept), "every kept demo appears whole, with its footer"


def test_training_conversation_answer_is_the_output_grid():
    example = Task("ex", TINY.train[:1], [TINY.train[1]])
    conv = training_conversation(example)
    assert conv["messages"][-1] == {"role": "assistant", "content": "[[0 0]\n [2 2]]#"}
    with pytest.raises(AssertionError, match="has no query output"):
        training_conversation(Task("u", TINY.train, [(((1,),), None)]))
