"""Tests for nanoseal.arc.vote: inverse mapping, majority and marc's two-level voting, pass@2, cell accuracy.

Run: pytest tests/test_arc_vote.py
"""

import random

from nanoseal.arc import augment as A
from nanoseal.arc.data import Task, load_arc
from nanoseal.arc.vote import (
    Prediction,
    cell_accuracy,
    invert_predictions,
    is_solved,
    majority,
    majority_grid,
    score_task,
    top3,
    vote,
)

G1, G2, G3 = ((1, 1),), ((2, 2),), ((3, 3),)


def preds(*items):
    """Predictions from (category, grid) pairs."""
    return [Prediction(f"{cat}#{i}", cat, g) for i, (cat, g) in enumerate(items)]


def test_majority_picks_the_most_frequent():
    p = preds(("identity", G1), ("rot90", G2), ("rot180", G2), ("flip_ud", G3), ("flip_lr", G2), ("x", None))
    assert majority(p) == [G2, G1]


def test_ties_are_broken_by_first_appearance():
    p = preds(("identity", G3), ("rot90", G1), ("rot180", G1), ("flip_ud", G3))
    assert majority(p) == [G3, G1], "equal counts: the earlier grid first"
    assert majority(list(reversed(p))) == [G3, G1]
    assert majority(preds(("rot90", G2), ("identity", G1))) == [G2, G1]
    for _ in range(3):
        assert vote(p) == vote(p), "deterministic"


def test_vote_counts_categories_not_samples():
    # one category spamming G1 ten times is outvoted by three categories agreeing on G2
    p = preds(*[("rot90", G1)] * 10, ("flip_ud", G2), ("flip_lr", G2), ("transpose", G2))
    assert majority(p)[0] == G1
    assert vote(p)[0] == G2
    assert vote(p) == [G2, G1]


def test_row_and_column_majority_grids():
    # per row index the most common row: a grid no view predicted
    grids = [((1,), (7,)), ((1,), (8,)), ((5,), (3,)), ((6,), (3,))]
    assert majority_grid(grids) == ((1,), (3,))
    # columns: the same on the transposes
    assert majority_grid([((7, 1),), ((8, 1),), ((3, 5),), ((3, 6),)], transpose=True) == ((3, 1),)
    # the most common shape wins; rows of other heights but the same width still vote
    tall = ((2, 2), (4, 4), (9, 9))
    assert majority_grid([((1, 1), (4, 4)), ((2, 2), (5, 5)), tall]) == ((2, 2), (4, 4))
    assert majority_grid([((1, 1), (4, 4)), tall, tall]) == tall


def test_top3_tops_up_missing_candidates():
    a, b, c = ((1, 1), (2, 2)), ((3, 3), (4, 4)), ((5, 5), (6, 6))
    assert top3([a, b, b, c]) == [b, a, c], "three distinct grids: no top-up"
    # one or two distinct grids: the row/column majority (here the most common grid) fills the empty slots
    assert top3([a]) == [a, a, a]
    assert top3([b, a, a]) == [a, b, a]


def test_marc_vote_pools_group_candidates():
    # a single-grid group gives its grid 3 pooled votes, so three agreeing categories beat a larger split one
    p = preds(("identity", G1), ("identity", G2), ("identity", G3), ("rot90", G2), ("flip_lr", G3))
    # all: G1 G2 G3 (G2, G3 twice) -> [G2, G3, G1]; identity -> [G1, G2, G3]; rot90 -> 3 x G2; flip_lr -> 3 x G3
    assert vote(p) == [G2, G3]
    assert vote(p, attempts=1) == [G2]


def test_marc_vote_identity_breaks_a_tie_between_second_and_third():
    # pooled counts: G1 first; G2 and G3 tie; the identity view predicted G3, so G3 is the 2nd attempt
    p = preds(("rot90", G1), ("rot90", G1), ("flip_lr", G1), ("transpose", G2), ("identity", G3))
    assert vote(p) == [G1, G3]
    # the same with identity predicting G2: G2 wins the tie
    p = preds(("rot90", G1), ("rot90", G1), ("flip_lr", G1), ("transpose", G3), ("identity", G2))
    assert vote(p) == [G1, G2]


def test_empty_and_unparseable_predictions():
    assert vote([]) == [] and majority([]) == []
    assert vote(preds(("identity", None), ("rot90", None))) == []
    assert vote(preds(("identity", None), ("rot90", G1))) == [G1]


def test_invert_predictions_maps_views_back():
    rng = random.Random(0)
    truth = ((1, 2, 0), (0, 3, 4))
    views = [A.IDENTITY, A.ROT90, A.chain(A.TRANSPOSE, A.random_colour_permutation(rng)), A.UPSCALE2]
    outputs = [v.apply(truth) for v in views]
    outputs[-1] = ((1, 2), (3, 4))  # not a 2x-upscaled grid: the inverse rejects it
    p = invert_predictions(views, outputs + [])
    assert [x.grid for x in p] == [truth, truth, truth, None]
    assert [x.category for x in p] == ["identity", "rot90", "transpose", "upscale2"]
    assert vote(p) == [truth]


def test_oracle_views_solve_a_real_task():
    task = load_arc("arcagi1", "eval")[0]
    views = A.inference_views(colour_permutations=2, seed=1)
    assert len(views) == 21 and views[0] == A.IDENTITY and len({v.category for v in views}) == 7
    attempts = []
    for _, out in task.test:
        outputs = [v.apply(out) for v in views]  # a perfect model answers in each view's frame
        outputs[0] = ((0,),)  # ...except one wrong view
        attempts.append(vote(invert_predictions(views, outputs)))
    assert score_task(task, attempts) == {"solved": True, "cell_accuracy": 1.0}


def test_pass_at_2():
    assert is_solved([[G1, G2]], [G2])
    assert not is_solved([[G1, G3]], [G2])
    assert is_solved([[G1], [G3, G2]], [G1, G2])
    assert not is_solved([[G1], [G3]], [G1, G2]), "every test output must be matched"
    assert not is_solved([[]], [G1])


def test_cell_accuracy():
    truth = ((1, 2), (3, 4))
    assert cell_accuracy(truth, truth) == 1.0
    assert cell_accuracy(((1, 2), (3, 0)), truth) == 0.75
    assert cell_accuracy(((1, 2),), truth) == 0.0, "shape mismatch scores 0"
    assert cell_accuracy(None, truth) == 0.0
    task = Task("t", [(G1, G1)], [(G1, truth), (G1, G1)])
    scored = score_task(task, [[((1, 2), (0, 0)), ((1, 2), (3, 0))], [G1]])
    assert scored == {"solved": False, "cell_accuracy": (0.75 + 1.0) / 2}
