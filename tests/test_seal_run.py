"""`nanoseal seal` end to end on a tiny model: run directory, results, resume without duplicates, refusals."""

import argparse
import json
import os

import pytest

import nanoseal.seal.run as seal_run
from nanoseal.checkpoint import save_checkpoint
from nanoseal.cli import main
from nanoseal.common import atomic_write_json
from nanoseal.logs import CANONICAL_FIELDS, read_events
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT
from nanoseal.seal.update_size import FIELDS

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
    assert set(results["methods"]) == {"icl", "ttt_fixed", "ttt_selfedit_round0", "seal", "seal_edits_round0_model"}
    for s in results["methods"].values():
        assert s["n_tasks"] == 2 and 0.0 <= s["success_rate"] <= 1.0
    assert results["methods"]["seal"]["n_pairs"] == 4
    assert set(results["per_task_hedged"]) == set(results["methods"])
    assert results["per_task_hedged"]["icl"] == results["per_task"]["icl"]  # ICL rows keep their score
    assert set(results["per_task_gated"]) == set(results["methods"])
    rows = read_rows(run_dir)
    for r in rows:  # every row that made predictions records how far its views agreed, per test input
        assert all(0 <= top <= n for top, n in r["votes"]) if r["attempts"] else r["votes"] == []
    keys = [tuple(r["key"]) for r in rows]
    assert len(keys) == len(set(keys))
    # train: 1 task x 2 edits; eval: 2 tasks x (icl 1 + fixed 1 + round0 2 + seal 2 + seal's edits on round 0 2)
    assert len(rows) == 2 + 2 * 8
    same = {(r["task"], r["k"]): r["raw"] for r in rows if r["key"][:3] == ["eval", 0, "seal"]}
    assert same == {(r["task"], r["k"]): r["raw"] for r in rows if r["method"] == "seal_edits_round0_model"}
    assert all(r["reward"] in (0, 1) for r in rows)
    assert os.path.exists(os.path.join(run_dir, "rounds", "1", "policy", "model_000000.pt"))
    assert results["extensions"] == [] and results["config"]["reward"] == "binary"
    assert "SEAL's binary reward" in open(os.path.join(run_dir, "report.md")).read()
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
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *FLAGS, "--reward", "continuous",
                 "--top-k", "1"]) == 2
    assert "different settings (reward, top_k)" in capsys.readouterr().err


@pytest.mark.parametrize("flags, message", [
    (["--reward", "continuous"], "--reward continuous needs --top-k"),
    (["--top-k", "2"], "--top-k applies only with --reward continuous"),
    (["--reward", "continuous", "--top-k", "-1"], "argument --top-k: expected an integer >= 0"),
])
def test_inconsistent_reward_flags_are_refused(tmp_path, capsys, flags, message):
    run_dir = tmp_path / "run"
    assert main(["seal", "--checkpoint", str(tmp_path), "--run-dir", str(run_dir), *FLAGS, *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not run_dir.exists(), "nothing is written for refused flags"


def test_run_dir_from_before_the_reward_flags_still_resumes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    seal_run.add_args(parser)
    args = parser.parse_args(["--checkpoint", str(tmp_path), "--run-dir", str(tmp_path / "run"), *FLAGS])
    config = seal_run.run_config(args)
    assert config["reward"] == "binary" and config["top_k"] == 0
    old = {k: v for k, v in config.items() if k not in ("reward", "top_k")}  # config.json of an older run
    assert seal_run.run_config(argparse.Namespace(**old)) == config
    atomic_write_json(str(tmp_path / "run" / "config.json"), old)
    changed = ["--temperature", "1.0", "--reward", "continuous", "--top-k", "3"]
    assert main(["seal", "--checkpoint", str(tmp_path), "--run-dir", str(tmp_path / "run"), *FLAGS, *changed]) == 2
    assert "different settings (reward, temperature, top_k)" in capsys.readouterr().err
    assert main(["seal", "--checkpoint", str(tmp_path), "--run-dir", str(tmp_path / "run"), *FLAGS,
                 "--temperature", "1.0"]) == 2
    assert "different settings (temperature)" in capsys.readouterr().err  # the default reward flags match


def test_continuous_reward_topk_extension_run(tmp_path, checkpoint, monkeypatch):
    """The extension end to end: labelled in results.json and report.md; the merge is probed on both parts."""
    calls = []
    real = seal_run.select_pairs_topk

    def forced(rows, k):  # a random tiny model writes no valid self-edit: force one pair so the policy updates
        calls.append((len(rows), k, real(rows, k)))
        return [(rows[0]["task"], DEFAULT_SELF_EDIT.canonical())]

    monkeypatch.setattr(seal_run, "select_pairs_topk", forced)
    run_dir = str(tmp_path / "run")
    flags = ["--tasks", "flip_lr-1", "--eval-tasks", "flip_ud-5", "--rounds", "1", "--self-edits", "1",
             "--n-max", "4", "--max-views", "1", "--no-oracle", "--restem-epochs", "1", "--reward", "continuous",
             "--top-k", "2"]
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *flags]) == 0
    assert calls == [(1, 2, [])]
    results = json.load(open(os.path.join(run_dir, "results.json")))
    assert results["config"]["reward"] == "continuous" and results["config"]["top_k"] == 2
    [ext] = results["extensions"]
    assert ext["name"] == "continuous_reward_topk" and ext["k"] == 2 and "per task" in ext["selection"]
    summary = json.load(open(os.path.join(run_dir, "rounds", "1", "summary.json")))
    assert summary["reward"] == "continuous" and summary["n_kept"] == 1 and summary["steps"] == 1
    assert summary["n_pairs"] == 1 and summary["skipped"] is None
    fn = summary["field_nll"]  # the kept pair's loss by self-edit field, before and after the update
    assert set(fn["before"]) == set(fn["after"]) == {*FIELDS, "other"} and set(fn["kept_entropy"]) == set(FIELDS)
    assert all(v == 0.0 for v in fn["kept_entropy"].values()), "one kept pair: every field's kept entropy is 0"
    assert sum(fn["after"].values()) < sum(fn["before"].values()), "the update lowered the kept pair's loss"
    fg = summary["forgetting"]
    assert set(fg["parts"]) == {"selfedit", "arc_answers"}
    assert all(p["n_docs"] == 1 and p["before"] > 0 and p["after"] > 0 for p in fg["parts"].values())
    assert results["rounds"][0]["forgetting"] == fg
    md = open(os.path.join(run_dir, "report.md")).read()
    assert "extension (k=2) was used, not SEAL's binary reward" in md
    assert "| 0 | self-edit documents | 1 |" in md and "| 0 | ARC answer grids | 1 |" in md


def test_no_task_fits_is_one_clear_error(tmp_path, tokenizer, capsys):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=32)
    tokenizer.save(str(tmp_path / "tokenizer"))
    save_checkpoint(str(tmp_path / "base_checkpoints" / "d2"), 1, model.state_dict(), None,
                    {"model_config": model.config.to_dict()})
    assert main(["seal", "--checkpoint", str(tmp_path), "--run-dir", str(tmp_path / "run"), *FLAGS]) == 2
    assert "none of the evaluation tasks" in capsys.readouterr().err


@pytest.mark.slow
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


def test_seal_setup_flags_reach_ttt_and_evaluation(tmp_path, checkpoint):
    # SEAL's own setup: 5 held-out self-edits (here 1), TTT alpha apart from the rank, SEAL's targets, numpy text
    run_dir = str(tmp_path / "run")
    flags = [f for f in FLAGS]
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *flags, "--eval-self-edits", "1",
                 "--lora-rank", "8", "--lora-alpha", "4", "--ttt-targets", "seal", "--grid-style", "seal"]) == 0
    results = json.load(open(os.path.join(run_dir, "results.json")))
    ttt = results["ttt_config"]
    assert (ttt["rank"], ttt["alpha"], ttt["style"]) == (8, 4.0, "seal")
    assert list(ttt["targets"]) == ["c_q", "c_v", "c_fc", "mlp.c_proj"]
    assert results["methods"]["seal"]["n_pairs"] == 2 and results["methods"]["ttt_selfedit_round0"]["n_pairs"] == 2
    rows = read_rows(run_dir)
    assert len([r for r in rows if r["key"][0] == "train"]) == 2, "training tasks still take --self-edits"
    assert len([r for r in rows if r["key"][:3] == ["eval", 0, "seal"]]) == 2


def test_curate_records_the_training_pool_and_the_held_out_subset(tmp_path, checkpoint):
    run_dir = str(tmp_path / "run")
    flags = [f for f in FLAGS if f != "--no-oracle"]
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *flags, "--curate", "--oracle-grid",
                 "prior"]) == 0
    results = json.load(open(os.path.join(run_dir, "results.json")))
    train = results["curation"]["train"]
    assert train["pool"] == ["flip_lr-1"] and train["ttt_runs"] == 1 + 10
    assert set(train["kept"]) | set(train["dropped"]) == set(train["pool"]) and train["seconds"] > 0
    # a random tiny model solves nothing: every candidate is dropped because no recipe solves it
    assert train["kept"] == [] and set(train["dropped"].values()) == {"no recipe of the oracle grid solves it"}
    assert results["rounds"][0]["n_tasks"] == 0 and results["rounds"][0]["skipped"]
    held = results["curation"]["eval"]
    assert held["pool"] == ["flip_ud-5", "transpose-3"] and results["curated"]["seal"]["n_tasks"] == len(held["kept"])
    rows = read_rows(run_dir)
    assert len([r for r in rows if r["key"][0] == "curate"]) == 11
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *flags, "--curate", "--oracle-grid",
                 "prior"]) == 0  # resumes: nothing redone
    assert len(read_rows(run_dir)) == len(rows)


def test_prompt_votes_put_the_writers_own_agreement_into_every_self_edit_prompt(tmp_path, checkpoint):
    from nanoseal.seal.selfedit import votes_note
    run_dir = str(tmp_path / "run")
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *FLAGS, "--prompt-votes"]) == 0
    rows = read_rows(run_dir)
    edits = [r for r in rows if r["method"] not in ("icl", "ttt_fixed")]
    assert edits and all(r["prompt_note"].startswith("Before fine-tuning") for r in edits)
    icl = {r["task"]: r for r in rows if r["method"] == "icl"}
    for r in rows:
        if r["key"][:3] == ["eval", 0, "ttt_selfedit_round0"]:  # the un-trained policy's own ICL answer's agreement
            assert r["prompt_note"] == votes_note(icl[r["task"]]["votes"])
            assert r["base_nll"] == pytest.approx(icl[r["task"]]["nll"], rel=1e-4)
    assert not any("prompt_note" in r for r in rows if r["method"] in ("icl", "ttt_fixed"))
    assert json.load(open(os.path.join(run_dir, "config.json")))["prompt_votes"] is True


def test_eval_temperature_samples_only_the_held_out_self_edits_at_it(tmp_path, checkpoint, capsys):
    plain, greedy = str(tmp_path / "plain"), str(tmp_path / "greedy")
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", plain, *FLAGS]) == 0
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", greedy, *FLAGS, "--eval-temperature", "0"]) == 0
    a, b = read_rows(plain), read_rows(greedy)
    train = [r for r in a if r["key"][0] == "train"]
    assert content(train) == content([r for r in b if r["key"][0] == "train"]), "training keeps --temperature"
    assert len({r["raw"] for r in train}) == 2, "two samples at 0.8 differ"
    for method in ("ttt_selfedit_round0", "seal"):
        for task in ("flip_ud-5", "transpose-3"):
            raws = [r["raw"] for r in b if r["key"][:4] == ["eval", 0, method, task]]
            assert len(raws) == 2 and len(set(raws)) == 1, f"greedy: {method}'s K self-edits on {task} are one"
    assert json.load(open(os.path.join(greedy, "config.json")))["eval_temperature"] == 0.0
    assert json.load(open(os.path.join(plain, "config.json")))["eval_temperature"] is None
    capsys.readouterr()
    assert main(["seal", "--checkpoint", checkpoint, "--run-dir", greedy, *FLAGS, "--eval-temperature", "0.5"]) == 2
    assert "eval_temperature" in capsys.readouterr().err
