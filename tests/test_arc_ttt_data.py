"""Tests for nanoseal.arc.ttt_data: leave-one/two-out counts, augmentation flags, de-dup, budget and cap.

Run: pytest tests/test_arc_ttt_data.py
"""

import pytest

from nanoseal.arc.augment import ALL_GROUPS, NO_GROUPS, AugmentationFlags
from nanoseal.arc.data import Task, load_arc
from nanoseal.arc.ttt_data import leave_n_out, make_ttt_data


def demo_task(n: int) -> Task:
    """A task with n distinct small demonstrations."""
    demos = [(((i, 0), (0, i + 1)), ((i + 1, 0), (0, i))) for i in range(1, n + 1)]
    return Task(f"demo{n}", demos, [(((5,),), ((6,),))])


@pytest.mark.parametrize("n", [3, 4])
def test_leave_one_out_counts(n):
    task = demo_task(n)
    loo = leave_n_out(task, 1)
    assert len(loo) == n, f"{n} demos give {n} leave-one-out examples"
    for q, ex in enumerate(loo):
        assert ex.test == (task.train[q],) and len(ex.train) == n - 1 and task.train[q] not in ex.train
    l2o = leave_n_out(task, 2)
    assert len(l2o) == n * (n - 1), f"{n} demos give n(n-1) leave-two-out examples"
    assert all(len(ex.train) == n - 2 for ex in l2o)


def test_small_tasks():
    assert len(leave_n_out(demo_task(2), 2)) == 0, "leave-two-out of 2 demos would leave no context"
    single = leave_n_out(demo_task(1), 1)
    assert len(single) == 1 and single[0].train == (), "marc keeps one context-free example"


def test_no_augmentation_gives_examples_and_shuffled_copies():
    examples, stats = make_ttt_data(demo_task(3), NO_GROUPS)
    assert stats.loo == 3 and stats.l2o == 6 and stats.dropped_oversize == 0
    # loo: 3 originals + 3 shuffled copies (a shuffle may repeat the order: a duplicate);
    # l2o contexts hold one demo, so all 6 of their shuffled copies are duplicates
    assert stats.augmented == 2 * 3 + 2 * 6 and 3 + 6 <= stats.dedup <= 6 + 6
    assert stats.capped == len(examples) == stats.dedup
    assert all("colours_" not in e.transform for e in examples), "no recolouring when every group is off"


def test_stage_counts_are_consistent():
    task = load_arc("arcagi1", "train")[1]
    examples, stats = make_ttt_data(task, ALL_GROUPS, count_tokens=len, max_tokens=3000, n_max=250, seed=0)
    n = len(task.train)
    assert stats.loo == n and stats.l2o == n * (n - 1)
    assert stats.dedup <= stats.augmented
    assert stats.before_cap == stats.dedup - stats.dropped_over_budget
    assert stats.capped == len(examples) == min(250, stats.before_cap)
    assert all(e.tokens <= 3000 for e in examples)
    keys = {(e.task.train, e.task.test) for e in examples}
    assert len(keys) == len(examples), "examples are de-duplicated"
    loo_count = sum(e.origin == "loo" for e in examples)
    assert examples[:loo_count] == [e for e in examples if e.origin == "loo"], "leave-one-out first"


def test_flags_change_the_data():
    task = demo_task(3)
    sizes = {}
    for flags in (NO_GROUPS, AugmentationFlags(basic=True, size=False, chain=False, repeat=False), ALL_GROUPS):
        _, stats = make_ttt_data(task, flags, n_max=10**6)
        sizes[flags.label()] = stats.before_cap
    assert sizes["none"] < sizes["basic"] < sizes["basic+size+chain+repeat"], sizes


def test_budget_drops_and_counts():
    task = load_arc("arcagi1", "train")[0]  # 3x3 -> 9x9 grids
    _, unlimited = make_ttt_data(task, ALL_GROUPS, count_tokens=len, n_max=10**6)
    examples, stats = make_ttt_data(task, ALL_GROUPS, count_tokens=len, max_tokens=1200, n_max=10**6)
    assert stats.dropped_over_budget > 0 and stats.before_cap == unlimited.before_cap - stats.dropped_over_budget
    assert all(e.tokens <= 1200 for e in examples)


def test_deterministic_per_seed_and_capped():
    task = load_arc("arcagi1", "train")[2]
    a, sa = make_ttt_data(task, ALL_GROUPS, n_max=40, seed=7)
    b, sb = make_ttt_data(task, ALL_GROUPS, n_max=40, seed=7)
    c, _ = make_ttt_data(task, ALL_GROUPS, n_max=40, seed=8)
    assert a == b and sa == sb and len(a) == 40
    assert [e.transform for e in a] != [e.transform for e in c]


def test_conversations_are_training_ready():
    examples, _ = make_ttt_data(demo_task(3), ALL_GROUPS, n_max=20)
    for e in examples:
        roles = [m["role"] for m in e.conversation["messages"]]
        assert roles == ["system", "user", "assistant"] and e.conversation["messages"][-1]["content"].endswith("#")
