"""
Task sets for `nanoseal seal --tasks SPEC --eval-tasks SPEC`.

SPEC is one of
  seal-arc-train / seal-arc-eval   SEAL's own ARC-AGI-1 tasks (12 training, 10 evaluation ids)
  gen-train[:N[:LO-HI]] / gen-eval[:N[:LO-HI]]
                                   N seeded instances (default 2) of each training / held-out procedural family,
                                   with grid sides LO..HI (default 3-10; families that cannot draw them are left out)
  a comma-separated list of ARC-AGI-1 ids or procedural instances <family>-<seed>, e.g. 6150a2bd,flip_lr-3
  a path to an ARC JSON file or a folder of them
"""

import os

from nanoseal.arc.data import Task, find_task, load_tasks
from nanoseal.arc.gen import EVAL_FAMILIES, TRAIN_FAMILIES, feasible_families, make_task, make_tasks, parse_instance_id
from nanoseal.common import NanosealError

SEAL_ARC_TRAIN = ("44f52bb0 4be741c5 5582e5ca 5614dbcf 5bd6f4ac 6150a2bd 67e8384a 6d0aefbc 6e02f1e3 8be77c9e "
                  "8d5021e8 8e1813be").split()
SEAL_ARC_EVAL = "59341089 68b67ca3 903d1b4a af24b4cc b1fc8b8e bc4146bd c7d4e6ad ce8d95cc 358ba94e 66e6c45b".split()
# procedural instances for evaluation use seeds far from the training ones
GEN_SEED = {"gen-train": 0, "gen-eval": 1_000_000}


def resolve_tasks(spec: str) -> list[Task]:
    """The tasks a SPEC names (see the module docstring)."""
    name, _, rest = spec.partition(":")
    if name in GEN_SEED:
        count, _, sides = rest.partition(":")
        try:
            n = int(count) if count else 2
            lo, hi = (int(v) for v in sides.split("-")) if sides else (3, 10)
        except ValueError:
            raise NanosealError(f"task spec {spec!r}: expected {name}:N or {name}:N:LO-HI with integers") from None
        if not (1 <= lo <= hi <= 30):
            raise NanosealError(f"task spec {spec!r}: grid sides must satisfy 1 <= LO <= HI <= 30")
        families = feasible_families(TRAIN_FAMILIES if name == "gen-train" else EVAL_FAMILIES, lo, hi)
        return make_tasks(families, n, seed=GEN_SEED[name], min_side=lo, max_side=hi)
    if spec in ("seal-arc-train", "seal-arc-eval"):
        ids = SEAL_ARC_TRAIN if spec == "seal-arc-train" else SEAL_ARC_EVAL
        return [find_task(i, dataset="arcagi1") for i in ids]
    if os.path.exists(spec):
        tasks, errors = load_tasks(spec)
        if errors:
            raise NanosealError(f"task spec {spec!r}: {len(errors)} bad task file(s), first: {errors[0]}")
        if not tasks:
            raise NanosealError(f"task spec {spec!r}: no ARC tasks found")
        return tasks
    ids = [s.strip() for s in spec.split(",") if s.strip()]
    if not ids:
        raise NanosealError(f"task spec {spec!r}: empty")
    return [_one_task(i) for i in ids]


def _one_task(task_id: str) -> Task:
    """An ARC-AGI-1 task by id, or a procedural instance named <family>-<seed>."""
    instance = parse_instance_id(task_id)
    if instance is not None:
        return make_task(**instance)
    return find_task(task_id, dataset="arcagi1")
