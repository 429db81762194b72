"""`nanoseal seal` end to end on a tiny model: run directory, results, resume without duplicates, refusals."""

import json
import os

import pytest

from nanoseal.checkpoint import save_checkpoint
from nanoseal.cli import main
from nanoseal.logs import CANONICAL_FIELDS, read_events

from conftest import make_tiny_model

FLAGS = ["--tasks", "flip_lr-1", "--eval-tasks", "flip_ud-5,transpose-3", "--rounds", "1", "--self-edits", "2",
         "--n-max", "4", "--max-views", "1", "--no-oracle", "--seed", "0"]


@pytest.fixture
def checkpoint(tmp_path, tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    tokenizer.save(str(tmp_path / "base" / "tokenizer"))
    save_checkpoint(str(tmp_path / "base" / "base_checkpoints" / "d2"), 1, model.state_dict(), None,
                    {"model_config": model.config.to_dict(), "step": 1})
    return str(tmp_path / "base")


def read_rows(run_dir):
    with open(os.path.join(run_dir, "selfedits.jsonl")) as f:
        return [json.loads(line) for line in f]


def content(rows):
    """Rows as comparable strings, everything but wall-clock timings."""
    return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in rows)


def test_seal_run_writes_everything_and_resumes(tmp_path, checkpoint, capsys):
    run_dir = str(tmp_path / "run")
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *FLAGS]) == 0
    results = json.load(open(os.path.join(run_dir, "results.json")))
    assert set(results["methods"]) == {"icl", "ttt_fixed", "ttt_selfedit_round0", "seal"}
    for s in results["methods"].values():
        assert s["n_tasks"] == 2 and 0.0 <= s["success_rate"] <= 1.0
    assert results["methods"]["seal"]["n_pairs"] == 4
    rows = read_rows(run_dir)
    keys = [tuple(r["key"]) for r in rows]
    assert len(keys) == len(set(keys))
    # train: 1 task x 2 edits; eval: 2 tasks x (icl 1 + fixed 1 + round0 2 + seal 2)
    assert len(rows) == 2 + 2 * 6
    assert all(r["reward"] in (0, 1) for r in rows)
    assert os.path.exists(os.path.join(run_dir, "rounds", "1", "policy", "model_000000.pt"))
    assert os.path.exists(os.path.join(run_dir, "report.md"))
    events = read_events(run_dir)
    assert events and all(tuple(e) == CANONICAL_FIELDS or set(e) == set(CANONICAL_FIELDS) for e in events)
    # resume: same command, nothing redone or duplicated, same results
    before = open(os.path.join(run_dir, "selfedits.jsonl")).read()
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *FLAGS]) == 0
    assert open(os.path.join(run_dir, "selfedits.jsonl")).read() == before
    assert json.load(open(os.path.join(run_dir, "results.json")))["methods"] == results["methods"]
    # a lost tail (crash mid-append) is recomputed identically, without duplicates
    lines = before.splitlines(keepends=True)
    with open(os.path.join(run_dir, "selfedits.jsonl"), "w") as f:
        f.write("".join(lines[:-3]) + lines[-3][: len(lines[-3]) // 2])
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *FLAGS]) == 0
    after = read_rows(run_dir)
    assert len(after) == len(rows)
    assert content(after) == content(rows)
    capsys.readouterr()
    # a changed config is refused with one line
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *FLAGS, "--temperature", "1.0"]) == 2
    err = capsys.readouterr().err
    assert "different settings (temperature)" in err and err.count("\n") == 1


def test_no_task_fits_is_one_clear_error(tmp_path, tokenizer, capsys):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=32)
    tokenizer.save(str(tmp_path / "tokenizer"))
    save_checkpoint(str(tmp_path / "base_checkpoints" / "d2"), 1, model.state_dict(), None,
                    {"model_config": model.config.to_dict()})
    assert main(["seal", "--checkpoint", str(tmp_path), "--run-dir", str(tmp_path / "run"), *FLAGS]) == 2
    assert "none of the evaluation tasks" in capsys.readouterr().err


def test_sigkill_mid_run_then_resume_gives_the_same_rows(tmp_path, checkpoint):
    import signal
    import subprocess
    import sys
    import time

    flags = [*FLAGS, "--checkpoint", checkpoint]
    ref_dir, run_dir = str(tmp_path / "ref"), str(tmp_path / "killed")
    assert main(["seal", "--run-dir", ref_dir, *flags]) == 0
    path = os.path.join(run_dir, "selfedits.jsonl")
    proc = subprocess.Popen([sys.executable, "-m", "nanoseal", "seal", "--run-dir", run_dir, *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # kill it once evaluation has started
        if os.path.exists(path) and sum(1 for _ in open(path)) >= 4:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    assert main(["seal", "--run-dir", run_dir, *flags]) == 0

    rows = read_rows(run_dir)
    assert len({tuple(r["key"]) for r in rows}) == len(rows), "duplicate rows after resume"
    assert content(rows) == content(read_rows(ref_dir))
    ref = json.load(open(os.path.join(ref_dir, "results.json")))["methods"]
    assert json.load(open(os.path.join(run_dir, "results.json")))["methods"] == ref
