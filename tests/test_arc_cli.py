"""Tests for nanoseal.arc.cli and nanoseal.arc.render: `arc validate/show/gen` handlers, PNG and ANSI output.

Run: pytest tests/test_arc_cli.py
"""

import argparse
import json

import pytest
from PIL import Image

from nanoseal.arc.cli import register
from nanoseal.arc.data import load_arc, load_task_file
from nanoseal.arc.render import PALETTE, grid_image, task_ansi, task_image
from nanoseal.common import NanosealError

GOOD = {"train": [{"input": [[0, 1]], "output": [[1, 0]]}], "test": [{"input": [[2, 0]], "output": [[0, 2]]}]}


def run(argv: list[str]) -> int:
    """Parse argv with a parser holding only the arc command and run its handler."""
    parser = argparse.ArgumentParser(prog="nanoseal")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_validate_folder_with_good_and_bad_files(tmp_path, capsys):
    (tmp_path / "ok.json").write_text(json.dumps(GOOD))
    (tmp_path / "broken.json").write_text("{")
    (tmp_path / "ragged.json").write_text(json.dumps(
        {"train": [{"input": [[1, 2], [3]], "output": [[1]]}], "test": [{"input": [[1]]}]}))
    status = run(["arc", "validate", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert status == 1
    assert len(lines) == 2, f"one line per bad task: {lines}"
    assert any("broken.json: task broken: not valid JSON" in line for line in lines)
    assert any("ragged.json: task ragged, train[0].input: row 1 has 1 cells, expected 2" in line for line in lines)
    assert run(["arc", "validate", str(tmp_path / "ok.json")]) == 0


def test_show_prints_and_writes_png(tmp_path, capsys):
    png = tmp_path / "task.png"
    assert run(["arc", "show", "007bbfb7", "--png", str(png), "--dataset", "arcagi1", "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "task 007bbfb7: 5 demonstration(s)" in out and "\x1b[48;2;" in out
    img = Image.open(png)
    assert img.format == "PNG" and img.width > 100 and img.height > 100
    with pytest.raises(NanosealError, match="not found"):
        run(["arc", "show", "zzzzzzzz", "--dataset", "arcagi1"])


def test_gen_lists_and_writes(tmp_path, capsys):
    assert run(["arc", "gen", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "gravity_down" in listing and "eval" in listing
    out = tmp_path / "g.json"
    assert run(["arc", "gen", "gravity_down", "--seed", "3", "--k", "4", "--out", str(out)]) == 0
    task = load_task_file(out)
    assert len(task.train) == 4 and task.id == "g"
    with pytest.raises(NanosealError, match="unknown task family"):
        run(["arc", "gen", "nope"])


def test_grid_image_uses_the_arc_palette():
    img = grid_image(((0, 1), (2, 9)), cell=10)
    assert img.size == (21, 21)
    assert img.getpixel((5, 5)) == PALETTE[0] and img.getpixel((15, 5)) == PALETTE[1]
    assert img.getpixel((5, 15)) == PALETTE[2] and img.getpixel((15, 15)) == PALETTE[9]


def test_task_image_with_predictions_and_unknown_outputs():
    task = load_arc("arcagi1", "eval")[3]
    truth = task.test[0][1]
    with_preds = task_image(task, predictions=[[truth, None]])
    plain = task_image(task)
    assert with_preds.width > plain.width, "attempt columns widen the picture"
    assert "?" in task_ansi(type(task)(task.id, task.train, [(task.test[0][0], None)]))
