"""
Two more scorings of the held-out rows, each keeping what in-context answering already gets; both are reported
beside the plain score (SEAL's protocol), never instead of it, and both are computed from the rows alone.

Bold self-edits can break a task the model already solves in context, and a self-edit written from the
demonstrations cannot tell which tasks those are. Two test-time rules that need no answer:

- hedged: ARC allows two attempts per test input. Every TTT row keeps its adapted model's first attempt and takes
  its second from the un-adapted model's first attempt (the ICL row's) when that differs, else keeps its own second.
  It costs every TTT row its own second attempt.
- gated: where the un-adapted model is self-consistent — for every test input, more than half of its inference
  views (geometric transforms of the task) predict the same grid — answer in context and skip TTT: every TTT row of
  that task takes the ICL row's result. Elsewhere the row is unchanged. (A deployment would skip TTT there and save
  its cost; the run trains anyway, so the plain score of the same rows stays available.) Needs the ICL rows' view
  votes (`votes` in selfedits.jsonl); runs written before they were recorded have no gated score.

    from nanoseal.seal.guard import gated_per_task, hedged_per_task
    per_task = hedged_per_task(eval_rows, eval_tasks)   # {method: {task id: success}}, like results["per_task"]
"""

from nanoseal.arc.data import Task
from nanoseal.seal.rows import per_task_success
from nanoseal.seal.ttt import score


def hedge_attempts(adapted: list[list], base: list[list]) -> list[list]:
    """Per test input: the adapted model's first attempt, then the un-adapted model's first when it differs
    (else the adapted model's second)."""
    assert len(adapted) == len(base), f"{len(adapted)} adapted test inputs, {len(base)} un-adapted"
    out = []
    for a, b in zip(adapted, base):
        first = list(a[:1])
        if b and (not first or b[0] != first[0]):
            out.append(first + [b[0]])
        else:
            out.append(list(a[:2]))
    return out


def _per_task(rows: list[dict], rewards: list[int], tasks: list) -> dict[str, dict[str, float]]:
    """{method: {task id: success}} of the rows scored with `rewards` (per_task_success's rule per method)."""
    by_method: dict[str, list[dict]] = {}
    for r, reward in zip(rows, rewards):
        by_method.setdefault(r["method"], []).append({"task": r["task"], "reward": reward})
    return {m: per_task_success(g, tasks, m) for m, g in by_method.items()}


def hedged_per_task(rows: list[dict], tasks: list[Task]) -> dict[str, dict[str, float]]:
    """{method: {task id: success}} over the held-out rows with every TTT row rescored hedged. Rows without
    attempts (an invalid or skipped self-edit: reward 0) and the ICL rows keep their reward."""
    by_id = {t.id: t for t in tasks}
    rows = [r for r in rows if r["task"] in by_id]
    base = {r["task"]: r["attempts"] for r in rows if r["method"] == "icl" and r.get("attempts")}
    rewards = []
    for r in rows:
        reward = r["reward"]
        if r["method"] != "icl" and r.get("attempts") and r["task"] in base:
            truths = [out for _, out in by_id[r["task"]].test]
            reward = int(score(hedge_attempts(r["attempts"], base[r["task"]]), truths)[0])
        rewards.append(reward)
    return _per_task(rows, rewards, tasks)


def self_consistent(votes: list) -> bool:
    """Whether, for every test input, more than half of the views predicted the same grid."""
    return bool(votes) and all(2 * top > n for top, n in votes)


def gated_per_task(rows: list[dict], tasks: list) -> dict[str, dict[str, float]] | None:
    """{method: {task id: success}} over the held-out rows (tasks: Task objects or ids) with every TTT row of a
    task where the un-adapted model is self-consistent given the ICL row's reward; None when an ICL row has no
    votes recorded."""
    ids = {getattr(t, "id", t) for t in tasks}
    rows = [r for r in rows if r["task"] in ids]
    icl = {r["task"]: r for r in rows if r["method"] == "icl"}
    if not icl or any("votes" not in r for r in icl.values()):
        return None
    gated = {t for t, r in icl.items() if self_consistent(r["votes"])}
    rewards = [icl[r["task"]]["reward"] if r["task"] in gated else r["reward"] for r in rows]
    return _per_task(rows, rewards, tasks)
