"""
The rows of a SEAL run (selfedits.jsonl): the work items that produce them (a task's K self-edits sampled and
TTT'd, fixed recipes, the un-adapted model), the keyed append-only store that never writes a row twice, and what
the results are computed from (success rates, per-task scores, the self-edits a ReST-EM round kept).

    rows = Rows("run/selfedits.jsonl"); rows.add(selfedit_group(policy, tok, task, key, K, args, ttt_cfg, seed))
    summarise(rows.select("eval", 0, "seal"), tasks, K); per_task_success(rows.select(...), tasks, "seal")

A row's key is (phase, round, method, task, k); a crash mid-append leaves at most a cut last line, dropped when
the store opens, so re-running resumes without redoing or duplicating a row.
"""

import json
import os
import time

from nanoseal.engine import Engine
from nanoseal.logs import append_lines, read_jsonl
from nanoseal.seal.selfedit import sample_self_edits, votes_note
from nanoseal.seal.ttt import EditResult, TTTConfig, run_ttt


def drop_partial_line(path: str) -> None:
    """Cut a half-written last line (a crash mid-append) so the next append starts on a fresh line."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
            f.flush()
            os.fsync(f.fileno())


class Rows:
    """selfedits.jsonl: keyed rows, appended durably, never duplicated."""

    def __init__(self, path: str):
        self.path = path
        drop_partial_line(path)
        rows, _ = read_jsonl(path)
        self.rows, self.keys = [], set()
        for r in rows:
            if tuple(r["key"]) not in self.keys:
                self.keys.add(tuple(r["key"]))
                self.rows.append(r)

    def done(self, key_prefix: tuple, k: int) -> bool:
        """Whether all k rows of a (phase, round, method, task) group are written."""
        return all(key_prefix + (i,) in self.keys for i in range(k))

    def add(self, new_rows: list[dict]) -> None:
        """Append the rows not yet present, in one write."""
        fresh = [r for r in new_rows if tuple(r["key"]) not in self.keys]
        if fresh:
            append_lines(self.path, [json.dumps(r, sort_keys=True) for r in fresh])
            for r in fresh:
                self.keys.add(tuple(r["key"]))
                self.rows.append(r)

    def select(self, phase: str, rnd: int, method: str) -> list[dict]:
        """The rows of one phase/round/method."""
        return [r for r in self.rows if r["key"][:3] == [phase, rnd, method]]


def edit_row(key: tuple, sample: dict | None, result, seconds_sample: float = 0.0, base_nll=None) -> dict:
    """One selfedits.jsonl row."""
    edit = sample["self_edit"] if sample else None
    return {
        "key": list(key), "round": key[1], "method": key[2], "task": key[3], "k": key[4],
        "raw": sample["raw"] if sample else None, "reason": sample["reason"] if sample else None,
        "self_edit": edit.to_json() if edit is not None else None,
        "reward": result.reward, "solved": result.solved, "cell_accuracy": round(result.cell_accuracy, 5),
        "nll": result.nll, "base_nll": base_nll, "n_examples": result.n_examples, "steps": result.steps,
        "loss_curve": result.loss_curve, "attempts": result.attempts, "votes": result.votes,
        "skipped": result.skipped,
        "seconds": {"sample": round(seconds_sample, 3), "ttt": round(result.seconds_ttt, 3),
                    "eval": round(result.seconds_eval, 3)},
    }


def own_votes_note(model, tokenizer, task, ttt_cfg: TTTConfig, seed: int) -> tuple[str, EditResult]:
    """The model's un-adapted answer on a task and the prompt note saying how many of its views agree on it."""
    _, base = run_ttt(model, tokenizer, task, [], ttt_cfg, seed=seed, include_base=True)
    return votes_note(base.votes), base


def selfedit_group(policy, tokenizer, task, key: tuple, K: int, args, ttt_cfg: TTTConfig, seed: int,
                   adapted=None, temperature: float | None = None) -> list[dict]:
    """Sample K self-edits from the policy for a task (at `temperature`, default args.temperature), TTT each on the
    policy (or on `adapted`), return K rows.
    With args.prompt_votes the policy first answers the task un-adapted and the prompt says how many of its
    views agree (the rows record that note as prompt_note); that answer is the rows' base when policy is adapted."""
    note, base = "", None
    if args.prompt_votes:
        note, base = own_votes_note(policy, tokenizer, task, ttt_cfg, seed)
    t0 = time.time()
    temperature = args.temperature if temperature is None else temperature
    samples = sample_self_edits(Engine(policy, tokenizer), tokenizer, task, K, temperature=temperature,
                                seed=seed, style=ttt_cfg.style, max_epochs=10, note=note)
    sample_seconds = (time.time() - t0) / K
    edits = [s["self_edit"] for s in samples]
    results, adapted_base = run_ttt(adapted or policy, tokenizer, task, edits, ttt_cfg, seed=seed,
                                    include_base=base is None or adapted is not None)
    base = adapted_base or base
    rows = [edit_row(key + (k,), samples[k], results[k], sample_seconds, base.nll) for k in range(K)]
    if note:
        for row in rows:
            row["prompt_note"] = note
    return rows


def recipe_group(model, tokenizer, task, key: tuple, recipes: list, ttt_cfg: TTTConfig, seed: int) -> list[dict]:
    """TTT with fixed recipes (ttt_fixed, oracle): one row per recipe."""
    results, base = run_ttt(model, tokenizer, task, recipes, ttt_cfg, seed=seed, include_base=True)
    samples = [{"raw": r.canonical(), "self_edit": r, "reason": None} for r in recipes]
    return [edit_row(key + (k,), samples[k], results[k], 0.0, base.nll) for k in range(len(recipes))]


def icl_group(model, tokenizer, task, key: tuple, ttt_cfg: TTTConfig, seed: int) -> list[dict]:
    """The un-adapted model's answer (in-context learning only): one row."""
    _, base = run_ttt(model, tokenizer, task, [], ttt_cfg, seed=seed, include_base=True)
    return [edit_row(key + (0,), None, base, 0.0, base.nll)]


def summarise(rows: list[dict], tasks: list, per_task: int) -> dict:
    """Success rate = correct (task, edit) pairs / (tasks x K); also tasks solved by any / by majority."""
    by_task: dict[str, list[int]] = {t.id: [] for t in tasks}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r["reward"])
    n_pairs = len(tasks) * per_task
    return {
        "success_rate": sum(sum(v) for v in by_task.values()) / max(1, n_pairs),
        "tasks_solved_any": sum(1 for v in by_task.values() if any(v)),
        "tasks_solved_majority": sum(1 for v in by_task.values() if v and sum(v) * 2 > len(v)),
        "n_tasks": len(tasks), "n_pairs": n_pairs,
    }


def per_task_success(rows: list[dict], tasks: list, method: str) -> dict[str, float]:
    """Each task's success: the share of its rows with reward 1 (oracle: 1.0 when any recipe solves it); tasks
    are Task objects or their ids."""
    by_task: dict[str, list[int]] = {getattr(t, "id", t): [] for t in tasks}
    for r in rows:
        if r["task"] in by_task:
            by_task[r["task"]].append(r["reward"])
    if method == "oracle":
        return {t: float(any(v)) for t, v in by_task.items()}
    return {t: sum(v) / len(v) if v else 0.0 for t, v in by_task.items()}


def kept_edits(round_rows: list[dict], pairs: list[tuple[str, str]]) -> list[dict]:
    """The self-edit JSON of each kept (task, text) pair, from the round's rows."""
    by_key = {(r["task"], (r["raw"] or "").strip()): r["self_edit"] for r in round_rows if r["self_edit"]}
    return [by_key[p] for p in pairs if p in by_key]
