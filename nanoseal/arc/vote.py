"""
Augmented inference → 2 attempts → score.

A task is predicted under several views (augment.GEOMETRIC_VIEWS, optionally with colour permutations and
demonstration shuffles). Each view's output grid is mapped back through the view's inverse transform
(`invert_predictions`); outputs that failed to parse or that the inverse rejects are kept as None and do
not vote. Then:

  vote()       hierarchical voting after marc (Akyürek et al. 2024, "augmented inference"):
               1. within each category (the view's geometric transform; colour permutations and order
                  shuffles fold into it) rank the candidate grids by count and keep the top 3;
               2. pool the kept candidates over categories - each category gives its candidates one vote,
                  the identity category two (un-augmented predictions are the most reliable) - and
                  return the top 2 as the attempts.
               marc also tops up categories with fewer than 3 distinct outputs with row/column-majority
               grids; that step is left out here.
  majority()   plain counts over all views (a simpler baseline).

Ties are broken deterministically: higher pooled votes, then higher raw count over all views, then first
appearance in the prediction list (put the identity view first to favour it).

Scoring: `is_solved` (pass@2: every test output equals one of its attempts) and `cell_accuracy`
(the fraction of equal cells; 0.0 for a missing prediction or a shape mismatch), best over the attempts
and averaged over the test pairs in `score_task`.
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from nanoseal.arc.augment import Transform
from nanoseal.arc.data import Grid, Task


@dataclass(frozen=True)
class Prediction:
    """One view's prediction, already mapped back to the original orientation and colours."""

    view: str  # the full view name, e.g. "rot90+colours_0321456789"
    category: str  # its geometric part, e.g. "rot90" (the voting group)
    grid: Grid | None  # None: unparseable output or rejected by the inverse


def invert_predictions(views: Sequence[Transform], outputs: Sequence[Grid | None]) -> list[Prediction]:
    """Map each view's predicted output grid back through the view's inverse."""
    assert len(views) == len(outputs), f"{len(views)} views but {len(outputs)} outputs"
    return [
        Prediction(view.name, view.category or view.name, None if out is None else view.inverse(out))
        for view, out in zip(views, outputs)
    ]


def _first_seen(predictions: Sequence[Prediction]) -> dict[Grid, int]:
    first: dict[Grid, int] = {}
    for i, p in enumerate(predictions):
        if p.grid is not None and p.grid not in first:
            first[p.grid] = i
    return first


def majority(predictions: Sequence[Prediction], attempts: int = 2) -> list[Grid]:
    """The `attempts` most frequent grids over all views (ties: first appearance)."""
    first = _first_seen(predictions)
    counts = Counter(p.grid for p in predictions if p.grid is not None)
    return sorted(counts, key=lambda g: (-counts[g], first[g]))[:attempts]


def vote(
    predictions: Sequence[Prediction], attempts: int = 2, per_category: int = 3, identity_weight: int = 2
) -> list[Grid]:
    """Hierarchical vote: top `per_category` per category, pooled and re-voted into `attempts` grids."""
    first = _first_seen(predictions)
    total = Counter(p.grid for p in predictions if p.grid is not None)
    by_category: dict[str, list[Grid]] = {}
    for p in predictions:
        if p.grid is not None:
            by_category.setdefault(p.category, []).append(p.grid)
    pooled: Counter = Counter()
    for category, grids in by_category.items():
        counts = Counter(grids)
        top = sorted(counts, key=lambda g: (-counts[g], first[g]))[:per_category]
        for g in top:
            pooled[g] += identity_weight if category == "identity" else 1
    return sorted(pooled, key=lambda g: (-pooled[g], -total[g], first[g]))[:attempts]


def is_solved(attempts_per_test: Sequence[Sequence[Grid]], truths: Sequence[Grid]) -> bool:
    """pass@2: every test output equals one of its attempts."""
    assert len(attempts_per_test) == len(truths), f"{len(attempts_per_test)} attempt lists, {len(truths)} tests"
    return all(truth in attempts for attempts, truth in zip(attempts_per_test, truths))


def cell_accuracy(pred: Grid | None, truth: Grid) -> float:
    """The fraction of cells equal to the truth; 0.0 when pred is None or its shape differs."""
    if pred is None or len(pred) != len(truth) or len(pred[0]) != len(truth[0]):
        return 0.0
    same = sum(a == b for prow, trow in zip(pred, truth) for a, b in zip(prow, trow))
    return same / (len(truth) * len(truth[0]))


def score_task(task: Task, attempts_per_test: Sequence[Sequence[Grid]]) -> dict:
    """{"solved": pass@2, "cell_accuracy": best-attempt cell accuracy averaged over the test pairs}."""
    truths = [out for _, out in task.test]
    assert all(t is not None for t in truths), f"task {task.id} has unlabelled test pairs: cannot score"
    best = [max((cell_accuracy(a, t) for a in attempts), default=0.0) for attempts, t in zip(attempts_per_test, truths)]
    return {"solved": is_solved(attempts_per_test, truths), "cell_accuracy": sum(best) / len(best)}
