"""
Augmented inference → 2 attempts → score.

A task is predicted under several views (augment.GEOMETRIC_VIEWS, optionally with colour permutations and
demonstration shuffles). Each view's output grid is mapped back through the view's inverse transform
(`invert_predictions`); outputs that failed to parse or that the inverse rejects are kept as None and do
not vote. Then:

  vote()       marc's two-level vote (Akyürek et al. 2024, arclib/voting.py, as SEAL uses it):
               1. groups: every prediction ("all") and each category (the view's geometric transform; colour
                  permutations and order shuffles fold into it). Each group gives 3 candidates: its 3 most
                  common distinct grids; a missing 2nd/3rd is topped up with the group's row-majority grid
                  (the most common shape, then for each row index the most common row of that width) or,
                  when that is already taken, its column-majority grid (the same on the transposes);
               2. all groups' candidates are pooled (duplicates count) and voted again the same way; when the
                  2nd and 3rd have equal counts, the one the identity view predicted more often is the 2nd
                  attempt (on equal identity counts marc takes the 3rd, and so does this).
               With ties broken by first appearance, a group with one or two distinct grids has the most
               common one as its row/column majority, so there the top-up adds votes to that grid; marc's
               set-order ties can make it a grid no view predicted.
  majority()   plain counts over all views (a simpler baseline).

Ties of equal counts are broken deterministically by first appearance in the prediction list (marc leaves
them to Python's set order); put the identity view first to favour it.

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


def majority_grid(grids: Sequence[Grid], transpose: bool = False) -> Grid:
    """marc's row-majority grid: the most common shape, then per row index the most common row of that width
    (ties: first appearance); with transpose=True the same on the transposed grids (column majority)."""
    assert grids, "majority_grid needs at least one grid"
    if transpose:
        grids = [tuple(zip(*g)) for g in grids]
    shapes = [(len(g), len(g[0]) if g else 0) for g in grids]
    height, width = _ranked(shapes)[0]
    rows = []
    for r in range(height):
        rows.append(_ranked([g[r] for g in grids if len(g) > r and len(g[r]) == width])[0])
    out = tuple(rows)
    return tuple(zip(*out)) if transpose else out


def _ranked(items: Sequence) -> list:
    """Distinct items by count, most common first (ties: first appearance)."""
    counts = Counter(items)
    first = {}
    for i, x in enumerate(items):
        first.setdefault(x, i)
    return sorted(counts, key=lambda x: (-counts[x], first[x]))


def top3(grids: Sequence[Grid]) -> list[Grid]:
    """marc's 3 candidates of a group: the 3 most common distinct grids, a missing 2nd/3rd topped up with the
    row-majority grid, or the column-majority grid when the row-majority one is already among them."""
    ranked = _ranked(grids)
    first = ranked[0]
    second = ranked[1] if len(ranked) > 1 else None
    third = ranked[2] if len(ranked) > 2 else None
    row, col = majority_grid(grids), majority_grid(grids, transpose=True)
    if second is None:
        second = row if row != first else col
    if third is None:
        third = row if row not in (first, second) else col
    return [first, second, third]


def vote(predictions: Sequence[Prediction], attempts: int = 2) -> list[Grid]:
    """marc's two-level vote: 3 candidates per group (all predictions, then each category), pooled and voted
    again; a 2nd/3rd count tie goes to the grid the identity view predicted more often. At most 2 attempts."""
    assert 1 <= attempts <= 2, f"marc's vote gives 1 or 2 attempts, not {attempts}"
    groups: dict[str, list[Grid]] = {}
    for p in predictions:
        if p.grid is not None:
            groups.setdefault("all", []).append(p.grid)
    for p in predictions:
        if p.grid is not None:
            groups.setdefault(p.category, []).append(p.grid)
    if not groups:
        return []
    candidates = [g for grids in groups.values() for g in top3(grids)]
    c1, c2, c3 = top3(candidates)
    if candidates.count(c2) == candidates.count(c3):
        identity = groups.get("identity", [])
        if identity.count(c2) <= identity.count(c3):
            c2 = c3
    out = [c1] if c2 == c1 else [c1, c2]
    return out[:attempts]


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
