"""Tests for nanoseal.arc.gen: families, train/eval split, validity, determinism, and each rule on its outputs.

Run: pytest tests/test_arc_gen.py
"""

import pytest

from nanoseal.arc.data import check_task_json
from nanoseal.arc.gen import (
    EVAL_FAMILIES,
    FAMILIES,
    TRAIN_FAMILIES,
    components,
    gravity,
    make_instance,
    make_task,
    make_tasks,
)
from nanoseal.common import NanosealError

SEEDS = range(12)


def test_family_count_and_split():
    assert len(FAMILIES) >= 30
    assert set(TRAIN_FAMILIES) | set(EVAL_FAMILIES) == set(FAMILIES)
    assert not set(TRAIN_FAMILIES) & set(EVAL_FAMILIES), "held-out families must not be trained on"
    assert len(EVAL_FAMILIES) >= 8 and len(TRAIN_FAMILIES) >= 20


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_instances_are_valid_and_follow_the_rule(family):
    fam = FAMILIES[family]
    for seed in SEEDS:
        task, params = make_instance(family, seed)
        assert task.id == f"{family}-{seed}" and len(task.train) == 3 and len(task.test) == 1
        assert check_task_json(task.to_json(), require_test_outputs=True) is None, f"{task.id} is invalid"
        inputs = [i for i, _ in task.train + task.test]
        assert len(set(inputs)) == len(inputs), f"{task.id}: inputs must be distinct"
        assert all(3 <= len(i) <= 10 and 3 <= len(i[0]) <= 10 for i in inputs), f"{task.id}: input sizes"
        assert any(i != o for i, o in task.train + task.test), f"{task.id}: the rule must change something"
        for inp, out in task.train + task.test:
            assert fam.rule(inp, params) == out, f"{task.id}: rule(input) != output"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_deterministic_per_seed(family):
    assert make_task(family, 5) == make_task(family, 5)
    assert len({make_task(family, s) for s in range(4)}) == 4, "different seeds give different tasks"


def test_options_and_errors():
    task = make_task("flip_lr", 0, k=5, n_test=2, min_side=4, max_side=6)
    assert len(task.train) == 5 and len(task.test) == 2
    assert all(4 <= len(g) <= 6 and 4 <= len(g[0]) <= 6 for g in task.grids())
    assert len(make_tasks(TRAIN_FAMILIES[:3], 2)) == 6
    with pytest.raises(NanosealError, match="unknown task family"):
        make_task("nope", 0)
    with pytest.raises(NanosealError, match="needs input sides"):
        make_task("fill_enclosed", 0, max_side=4)


def test_hand_checked_rules():
    g = ((1, 0, 2), (0, 3, 0))
    assert gravity(g, "down") == ((0, 0, 0), (1, 3, 2))
    assert gravity(g, "right") == ((0, 1, 2), (0, 0, 3))
    assert gravity(g, "left") == ((1, 2, 0), (3, 0, 0))
    assert gravity(g, "up") == ((1, 3, 2), (0, 0, 0))
    assert [len(cells) for _, cells in components(((1, 1, 0), (0, 1, 2), (2, 0, 2)))] == [3, 2, 1]
    enclosed = ((2, 2, 2), (2, 0, 2), (2, 2, 2))
    assert FAMILIES["fill_enclosed"].rule(enclosed, {"fill": 4}) == ((2, 2, 2), (2, 4, 2), (2, 2, 2))
    halves = ((1, 5, 3), (1, 5, 0), (0, 5, 3), (0, 5, 0))
    p = {"colour": 7}
    assert FAMILIES["xor_halves"].rule(halves, p) == ((0,), (7,), (7,), (0,))
    assert FAMILIES["and_halves"].rule(halves, p) == ((7,), (0,), (0,), (0,))
    assert FAMILIES["count_cells"].rule(((0, 4), (4, 0)), {}) == ((4, 4),)
    assert FAMILIES["crop_object"].rule(((0, 0, 0), (0, 1, 2), (0, 0, 3)), {}) == ((1, 2), (0, 3))
    assert FAMILIES["rotate_cw"].rule(((1, 2), (3, 4)), {}) == ((3, 1), (4, 2))
    assert FAMILIES["extend_down"].rule(((0, 5), (0, 0), (6, 0)), {}) == ((0, 5), (0, 5), (6, 5))
    assert FAMILIES["move_to_corner"].rule(((0, 0, 0), (0, 0, 1), (0, 0, 1)), {}) == ((1, 0, 0), (1, 0, 0), (0, 0, 0))
