"""The other scorings (nanoseal.seal.guard): hedged (attempt 2 from the un-adapted model) and gated (answer in
context where the un-adapted model's views agree), on hand-made attempts and rows, and the report filling them in
for a run that predates them.

Run: pytest tests/test_guard.py
"""

import json

from nanoseal.arc.data import Task
from nanoseal.report import seeds_table, with_guard
from nanoseal.seal.effect import effect_markdown
from nanoseal.seal.guard import gated_per_task, hedge_attempts, hedged_per_task, self_consistent
from nanoseal.seal.tasks import resolve_tasks

A, B, C = [[1]], [[2]], [[3]]  # three 1x1 grids


def test_hedge_attempts_takes_the_base_first_attempt_as_second():
    assert hedge_attempts([[A, B]], [[C, A]]) == [[A, C]]  # base's first differs: it replaces the adapted second
    assert hedge_attempts([[A, B]], [[A, C]]) == [[A, B]]  # same first attempt: the adapted second stays
    assert hedge_attempts([[A]], [[]]) == [[A]]  # the base made no prediction
    assert hedge_attempts([[]], [[C]]) == [[C]]  # the adapted model made none: the base's is the only attempt
    assert hedge_attempts([[A, B], [B]], [[C], [B, A]]) == [[A, C], [B]]  # per test input


def row(method, task, attempts, reward, votes=None):
    r = {"method": method, "task": task, "attempts": attempts, "reward": reward, "key": ["eval", 0, method, task]}
    return r if votes is None else {**r, "votes": votes}


def test_hedged_per_task_rescores_every_ttt_row_against_the_truth():
    t1 = Task("t1", train=(([[0]], [[1]]),), test=(([[0]], [[1]]),))  # truth A
    t2 = Task("t2", train=(([[0]], [[2]]),), test=(([[0]], [[2]]),))  # truth B
    rows = [row("icl", "t1", [[A, C]], 1), row("icl", "t2", [[A]], 0),
            # t1: ICL right; a broken adapter (B, C) is wrong plain, right hedged; an invalid edit stays 0
            row("seal", "t1", [[B, C]], 0), row("seal", "t1", [], 0),
            # t2: the adapter's second attempt is right plain, the hedge replaces it with ICL's wrong first
            row("seal", "t2", [[C, B]], 1), row("seal", "t2", [[B, C]], 1),
            row("oracle", "t1", [[C, B]], 0), row("oracle", "t1", [[B]], 0), row("oracle", "t2", [[C, B]], 1)]
    out = hedged_per_task(rows, [t1, t2])
    assert out["icl"] == {"t1": 1.0, "t2": 0.0}
    assert out["seal"] == {"t1": 0.5, "t2": 0.5}
    assert out["oracle"] == {"t1": 1.0, "t2": 0.0}  # any recipe; t2's only right answer was a second attempt


def test_report_fills_in_the_other_scores_of_an_older_run(tmp_path):
    spec = "flip_lr-3"  # a procedural instance: resolvable again from the run's config, truth included
    task = resolve_tasks(spec)[0]
    truth = [list(map(list, out)) for _, out in task.test]
    wrong = [[[10] * len(line) for line in grid] for grid in truth]
    rows = [row("icl", task.id, [truth], 1, [[4, 7]]), row("ttt_selfedit_round0", task.id, [wrong], 0),
            row("seal", task.id, [wrong], 0)]
    results = {"seed": 5, "config": {"eval_tasks": spec}, "methods": {}, "rounds": [],
               "per_task": {"icl": {task.id: 1.0}, "ttt_selfedit_round0": {task.id: 0.0}, "seal": {task.id: 0.0}},
               "curation": {"eval": {"kept": []}}}
    filled = with_guard(results, rows)
    assert filled["per_task_hedged"]["seal"] == {task.id: 1.0} and "per_task_hedged" not in results
    assert filled["per_task_gated"]["seal"] == {task.id: 1.0}  # 4 of 7 views agree: answered in context
    gone = {**results, "config": {"eval_tasks": str(tmp_path / "gone")}}
    assert "per_task_hedged" not in with_guard(gone, rows)  # tasks that cannot be resolved: no hedged score
    assert "per_task_gated" in with_guard(gone, rows)  # the gated one needs the rows only
    md = effect_markdown([filled])
    plain, hedged = md.split("Scored hedged")
    assert "| SEAL (trained policy) | 0.000 |" in plain and "| SEAL (trained policy) | 1.000 |" in hedged
    assert "Scored gated" in hedged and "Scored hedged" not in effect_markdown([results])
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    (run / "selfedits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert "| SEAL (trained policy) | 1.000 |" in seeds_table([str(run)]).split("Scored hedged")[1]


def test_self_consistent_needs_a_strict_majority_of_views_on_every_test_input():
    assert self_consistent([[4, 7]]) and self_consistent([[4, 7], [7, 7]])
    assert not self_consistent([[3, 7]]) and not self_consistent([[2, 4]])  # half is not more than half
    assert not self_consistent([[4, 7], [3, 7]]) and not self_consistent([])


def test_gated_per_task_gives_self_consistent_tasks_the_icl_result():
    rows = [row("icl", "t1", [], 1, [[5, 7]]), row("icl", "t2", [], 0, [[3, 7]]), row("icl", "t3", [], 0, [[6, 7]]),
            row("seal", "t1", [], 0), row("seal", "t1", [], 1),  # gated: ICL's 1 for both
            row("seal", "t2", [], 1), row("seal", "t2", [], 0),  # not gated: unchanged
            row("seal", "t3", [], 1),  # gated, ICL wrong: the adapter's right answer is not used
            row("oracle", "t1", [], 0), row("oracle", "t2", [], 1), row("oracle", "t3", [], 1)]
    out = gated_per_task(rows, ["t1", "t2", "t3"])
    assert out["icl"] == {"t1": 1.0, "t2": 0.0, "t3": 0.0}
    assert out["seal"] == {"t1": 1.0, "t2": 0.5, "t3": 0.0}
    assert out["oracle"] == {"t1": 1.0, "t2": 1.0, "t3": 0.0}
    assert gated_per_task([row("icl", "t1", [], 1)], ["t1"]) is None  # no votes recorded: no gated score
