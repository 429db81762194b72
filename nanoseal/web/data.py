"""
What the web UI shows besides models: ARC tasks (ARC-AGI-1/2 by id, procedural family instances, a run's
tasks) and SEAL run directories (results.json, selfedits.jsonl, plots/*.png), read with the project's own
loaders (nanoseal.arc.data, nanoseal.arc.gen, nanoseal.seal.tasks, nanoseal.report).

    task = find_any_task("flip_lr-3")                 # or "007bbfb7" (ARC-AGI-1, then ARC-AGI-2)
    summary = run_summary("runs/demo")                # methods, rounds, config, plots, policies
    page = selfedit_rows("runs/demo", task="flip_ud-5", limit=50)

Every name that reaches the file system is checked first: task ids must look like ARC ids or
<family>-<seed> (so they can never be read as paths), plot names like `name.png`.
"""

import functools
import math
import os
import re

from nanoseal.arc.data import DATASET_FILES, SPLITS, Task, find_task, load_arc
from nanoseal.arc.gen import EVAL_FAMILIES, FAMILIES, make_task, parse_instance_id
from nanoseal.chat import BadName, NotFound
from nanoseal.common import NanosealError, read_json_object, read_jsonl
from nanoseal.report import METHOD_LABELS, load_results
from nanoseal.seal.effect import method_order

TASK_ID = re.compile(r"[A-Za-z0-9_]{1,64}(-[0-9]{1,9}(-s[0-9]{1,2}-[0-9]{1,2})?)?")
PLOT_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\.png")
ROW_FIELDS = ("key", "round", "method", "task", "k", "self_edit", "reward", "solved", "cell_accuracy", "nll",
              "base_nll", "reason", "skipped", "n_examples", "steps", "attempts")
RAW_CHARS = 2000  # a self-edit's raw text is cut to this many characters


# ----------------------------------------------------------------------------- tasks

def task_json(task: Task, split: str | None = None) -> dict:
    """A task as the page draws it: id, demonstrations and test pairs (output null when unknown)."""
    def grid(g):
        return None if g is None else [list(r) for r in g]
    return {"id": task.id, "split": split,
            "train": [{"input": grid(i), "output": grid(o)} for i, o in task.train],
            "test": [{"input": grid(i), "output": grid(o)} for i, o in task.test]}


def find_any_task(task_id: str) -> Task:
    """An ARC-AGI-1/2 task by id or a procedural instance <family>-<seed>; BadName / NotFound otherwise."""
    if not isinstance(task_id, str) or not TASK_ID.fullmatch(task_id):
        raise BadName(f"bad task id {task_id!r}: expected an ARC id (e.g. 007bbfb7) or <family>-<seed> "
                      "(e.g. flip_lr-3)")
    instance = parse_instance_id(task_id)  # <family>-<seed>[-s<lo>-<hi>]
    if instance is not None:
        return make_task(**instance)
    try:
        return find_task(task_id)
    except NanosealError:
        raise NotFound(f"task {task_id!r} is neither an ARC-AGI-1/2 task nor <family>-<seed> of a known "
                       "family") from None


@functools.lru_cache(maxsize=4)
def arc_ids(dataset: str) -> tuple[tuple[str, str], ...]:
    """(id, split) of every task of an ARC release."""
    return tuple((t.id, split) for split in SPLITS for t in load_arc(dataset, split))


def task_list(source: str) -> list[dict]:
    """Tasks to pick from: `arcagi1` / `arcagi2` (id + split) or `families` (name, split, description)."""
    if source in DATASET_FILES:
        return [{"id": i, "split": s} for i, s in arc_ids(source)]
    if source == "families":
        return [{"id": name, "split": "eval" if name in EVAL_FAMILIES else "train",
                 "description": fam.description} for name, fam in FAMILIES.items()]
    raise BadName(f"bad task source {source!r}: expected {', '.join(DATASET_FILES)}, families or a run")


@functools.lru_cache(maxsize=8)
def _run_tasks(run_path: str, mtime: float) -> dict[str, tuple[Task, str]]:
    """id -> (task, split) of a run: its config's --tasks (train) and --eval-tasks (eval) specs."""
    from nanoseal.seal.tasks import resolve_tasks

    config = read_json_object(os.path.join(run_path, "config.json"))
    tasks: dict[str, tuple[Task, str]] = {}
    for key, split in (("tasks", "train"), ("eval_tasks", "eval")):
        spec = config.get(key)
        if isinstance(spec, str) and spec:
            for t in resolve_tasks(spec):
                tasks.setdefault(t.id, (t, split))
    return tasks


def run_tasks(run_path: str) -> dict[str, tuple[Task, str]]:
    """id -> (task, split) of the run at run_path (cached until its config.json changes)."""
    path = os.path.join(run_path, "config.json")
    if not os.path.isfile(path):
        raise NotFound(f"{os.path.basename(run_path)}: no config.json, so no task list")
    return _run_tasks(run_path, os.path.getmtime(path))


# ----------------------------------------------------------------------------- runs

def run_summary(run_path: str, policy_rounds: list[int]) -> dict:
    """A run's config, baselines table (results.json "methods"), per-round stats, plots and saved policies."""
    name = os.path.basename(run_path)
    out = {"name": name, "config": None, "methods": [], "rounds": [], "skipped_tasks": [], "plots": [],
           "policies": policy_rounds, "report": os.path.isfile(os.path.join(run_path, "report.md")),
           "status": "finished"}
    config_path = os.path.join(run_path, "config.json")
    if os.path.isfile(config_path):
        out["config"] = read_json_object(config_path)
    try:
        results = load_results(run_path)
    except NanosealError as e:
        if os.path.exists(os.path.join(run_path, "results.json")):
            raise
        out["status"] = f"no results yet ({e})"
        results = {}
    methods = results.get("methods") or {}
    order = method_order(list(methods))  # the report's order: ICL, fixed, round 0, each round, SEAL, ..., oracle
    out["methods"] = [{"method": m, "label": METHOD_LABELS.get(m, m), **methods[m]} for m in order]
    out["rounds"] = results.get("rounds") or []
    out["skipped_tasks"] = results.get("skipped_tasks") or []
    out["config"] = out["config"] or results.get("config")
    plots_dir = os.path.join(run_path, "plots")
    if os.path.isdir(plots_dir):
        out["plots"] = sorted(f for f in os.listdir(plots_dir) if PLOT_NAME.fullmatch(f))
    return out


def selfedit_rows(run_path: str, task: str | None = None, method: str | None = None, phase: str | None = None,
                  limit: int = 200, offset: int = 0) -> dict:
    """selfedits.jsonl rows of a run (filtered by task / method / phase), one page: {"total", "rows", "tasks"}."""
    # the bounded reader: a cut last line is skipped, a bad middle line is refused; NaN/Infinity losses are allowed
    rows, _ = read_jsonl(os.path.join(run_path, "selfedits.jsonl"), strict=True, allow_nonfinite=True)
    tasks = sorted({r.get("task") for r in rows if isinstance(r.get("task"), str)})
    picked = [r for r in rows
              if (task is None or r.get("task") == task) and (method is None or r.get("method") == method)
              and (phase is None or (isinstance(r.get("key"), list) and r["key"][:1] == [phase]))]
    page = []
    for r in picked[offset:offset + limit]:
        row = {k: _finite(r.get(k)) for k in ROW_FIELDS}
        row["phase"] = r["key"][0] if isinstance(r.get("key"), list) and r["key"] else None
        raw = r.get("raw")
        row["raw"] = raw[:RAW_CHARS] if isinstance(raw, str) else raw
        page.append(row)
    return {"total": len(picked), "offset": offset, "rows": page, "tasks": tasks}


def _finite(value):
    """A non-finite float (a diverged loss) as None, which JSON can carry; anything else as it is."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def plot_path(run_path: str, name: str) -> str:
    """The file of plot `name` (plots/<name>.png) of a run; BadName / NotFound otherwise."""
    if not isinstance(name, str) or not PLOT_NAME.fullmatch(name):
        raise BadName(f"bad plot name {name!r}: expected <name>.png")
    path = os.path.join(run_path, "plots", name)
    if not os.path.isfile(path):
        raise NotFound(f"{os.path.basename(run_path)} has no plot {name}")
    return path
