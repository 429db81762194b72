"""
A second scoring of the held-out rows: "attempt 2 from the un-adapted model" (hedged).

ARC allows two attempts per test input. Every TTT row votes both from its adapted model (marc's vote), so a
self-edit that breaks a task the model already solved in context loses it. The hedged score keeps the adapted
model's first attempt and takes the second from the un-adapted model's first attempt (the ICL row's) when it
differs, else keeps the adapted model's second. It is computed from the attempts every row stores, with no new
compute, and reported beside the plain score (never instead of it): it shows what the self-edits add on top of
what in-context answering already gets, and it costs every TTT row its own second attempt.

    from nanoseal.seal.hedge import hedged_per_task
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


def hedged_per_task(rows: list[dict], tasks: list[Task]) -> dict[str, dict[str, float]]:
    """{method: {task id: success}} over the held-out rows with every TTT row rescored hedged. Rows without
    attempts (an invalid or skipped self-edit: reward 0) and the ICL rows keep their reward."""
    by_id = {t.id: t for t in tasks}
    base = {r["task"]: r["attempts"] for r in rows if r["method"] == "icl" and r.get("attempts")}
    by_method: dict[str, list[dict]] = {}
    for r in rows:
        if r["task"] not in by_id:
            continue
        reward = r["reward"]
        if r["method"] != "icl" and r.get("attempts") and r["task"] in base:
            truths = [out for _, out in by_id[r["task"]].test]
            reward = int(score(hedge_attempts(r["attempts"], base[r["task"]]), truths)[0])
        by_method.setdefault(r["method"], []).append({"task": r["task"], "reward": reward})
    return {m: per_task_success(g, tasks, m) for m, g in by_method.items()}
