"""Tests of nanoseal.report: a fixture run dir (2 rounds, 3 tasks) rendered to report.md + plots."""

import argparse
import json
import os

import pytest
from PIL import Image

from nanoseal.common import NanosealError
from nanoseal.report import add_args, load_selfedits, run, seeds_table, write_report

FLAT = {f: 1.0 for f in ("learning_rate", "num_train_epochs", "strategy", "use_basic_augmentations",
                         "use_size_augmentations", "use_chain_augmentations", "use_repeat_augmentations", "other")}


def _edit(basic=True, size=False, chain=False, repeat=False, strategy="train_using_all_tokens", lr=1e-4, epochs=2):
    """A valid self-edit in SEAL's nested schema."""
    return {"data_generation": {"use_basic_augmentations": basic, "use_size_augmentations": size,
                                "use_chain_augmentations": chain, "use_repeat_augmentations": repeat},
            "training": {"strategy": strategy, "learning_rate": lr, "num_train_epochs": epochs}}


def _row(rnd, method, task, k, edit, reward, cell, nll, base_nll, secs, reason=None):
    """One selfedits.jsonl row as `nanoseal seal` writes it."""
    return {"round": rnd, "method": method, "task": task, "k": k,
            "raw": json.dumps(edit) if edit else "{not json", "self_edit": edit,
            "reason": reason if edit is None else None, "reward": reward, "cell_accuracy": cell,
            "nll": nll, "base_nll": base_nll, "n_examples": 12 if edit else 0, "steps": 6 if edit else 0,
            "loss_curve": [1.2, 0.9, 0.7] if edit else [],
            "seconds": {"sample": secs[0], "ttt": secs[1], "eval": secs[2]}}


def make_run_dir(root) -> str:
    """A realistic run dir: results.json, config.json, selfedits.jsonl with invalid edits and a truncated line."""
    run_dir = os.path.join(str(root), "run-2025")
    os.makedirs(run_dir)
    results = {
        "methods": {
            "icl": {"success_rate": 0.25, "tasks_solved_any": 1, "tasks_solved_majority": 0, "n_tasks": 3,
                    "n_pairs": 4},
            "ttt_fixed": {"success_rate": 0.5, "tasks_solved_any": 2, "tasks_solved_majority": 1, "n_tasks": 3,
                          "n_pairs": 4},
            "seal": {"success_rate": 0.75, "tasks_solved_any": 3, "tasks_solved_majority": 2, "n_tasks": 3,
                     "n_pairs": 4},
            "oracle": {"success_rate": 1.0, "tasks_solved_any": 3, "tasks_solved_majority": 3, "n_tasks": 3,
                       "n_pairs": 4},
        },
        "rounds": [
            {"round": 0, "success_rate": 0.5, "n_pairs": 4, "n_kept": 2, "restem_loss": None,
             "forgetting": {"before": 1.0, "after": 1.01, "degraded": False}},
            {"round": 1, "success_rate": 0.75, "n_pairs": 4, "n_kept": 3, "restem_loss": 0.1234,
             "field_nll": {"before": dict(FLAT, use_chain_augmentations=0.69), "after": dict(FLAT, learning_rate=0.2),
                           "kept_entropy": dict(FLAT, use_chain_augmentations=0.5)},
             "forgetting": {"before": 1.0, "after": 1.1, "degraded": True, "tolerance": 0.02, "parts": {
                 "selfedit": {"before": 1.2, "after": 1.2, "degraded": False, "n_docs": 4},
                 "arc_answers": {"before": 0.5, "after": 0.8, "degraded": True, "n_docs": 3}}}},
            {"round": 2, "success_rate": 0.75, "n_pairs": 4, "n_kept": 0, "restem_loss": None, "forgetting": None,
             "skipped": "no successful self-edit this round: the policy is unchanged"},
        ],
        "config": {"k": 3, "rounds": 2, "lora": {"r": 8, "alpha": 16}, "checkpoint": "base/d4"},
        "skipped_tasks": [{"task": "t9", "reason": "prompt exceeds context budget"}],
        "seed": 1234,
        "extensions": [{"name": "continuous_reward_topk", "k": 3,
                        "selection": "the k best valid self-edits per task among those that beat the base"}],
    }
    with open(os.path.join(run_dir, "results.json"), "w") as f:
        json.dump(results, f)
    rows = [
        # round 0, seal: t1 has two valid edits and one invalid one (its NLL pair is incomplete)
        _row(0, "seal", "t1", 0, _edit(lr=1e-4, epochs=2), 1, 0.9, 0.5, 1.0, (1.0, 2.0, 0.5)),
        _row(0, "seal", "t1", 1, _edit(size=True, strategy="train_using_output_tokens", lr=1e-3, epochs=1),
             0, 0.4, 0.7, 1.2, (1.0, 2.0, 0.5)),
        _row(0, "seal", "t1", 2, None, 0, 0.0, None, 1.1, (1.0, 0.0, 0.0), reason="json parse error"),
        _row(0, "seal", "t2", 0, _edit(chain=True, lr=1e-4, epochs=2), 0, 0.2, 2.0, 1.5, (1.0, 2.0, 0.5)),
        _row(0, "seal", "t3", 0, None, 0, 0.0, None, None, (1.0, 0.0, 0.0), reason="learning_rate out of range"),
        _row(0, "seal", "t3", 1, None, 0, 0.0, None, None, (1.0, 0.0, 0.0), reason="json parse error"),
        # round 1, seal: every edit valid
        _row(1, "seal", "t1", 0, _edit(lr=1e-4, epochs=3), 1, 1.0, 0.3, 1.0, (1.0, 2.0, 0.5)),
        _row(1, "seal", "t2", 0, _edit(repeat=True, lr=1e-4, epochs=3), 1, 0.8, 1.0, 1.5, (1.0, 2.0, 0.5)),
        _row(1, "seal", "t3", 0, _edit(lr=1e-4, epochs=3), 0, 0.6, 1.0, 0.9, (1.0, 2.0, 0.5)),
        # fixed-recipe baseline on t1
        _row(0, "ttt_fixed", "t1", 0, _edit(), 1, 1.0, 0.4, 1.0, (0.0, 3.0, 1.0)),
    ]
    with open(os.path.join(run_dir, "selfedits.jsonl"), "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
        f.write('{"round": 1, "method": "seal", "task": "t3", "k": 1, "raw": "{\\"data_gen')  # crash mid-append
    return run_dir


@pytest.fixture
def report(tmp_path):
    run_dir = make_run_dir(tmp_path)
    path = write_report(run_dir)
    with open(path, encoding="utf-8") as f:
        return run_dir, path, f.read()


def test_report_path_and_header(report):
    run_dir, path, md = report
    assert path == os.path.join(run_dir, "report.md")
    assert md.startswith("# nanoseal run report: run-2025")
    assert "- seed: `1234`" in md
    assert "- k: `3`" in md
    assert '- lora: `{"alpha": 16, "r": 8}`' in md
    assert "`continuous_reward_topk` (off by default; k=3)" in md
    assert ("**Reward: the `continuous_reward_topk` extension (k=3) was used, not SEAL's binary reward.** "
            "ReST-EM kept the k best valid self-edits per task among those that beat the base.") in md
    assert "by the `continuous_reward_topk` extension (not SEAL's binary reward)" in md  # rounds section


def test_baselines_table(report):
    md = report[2]
    assert "| ICL (no adaptation) | 25.0% | 1 | 0 | 3 | 4 |" in md
    assert "| TTT, fixed default recipe | 50.0% | 2 | 1 | 3 | 4 |" in md
    assert "| SEAL (trained policy) | 75.0% | 3 | 2 | 3 | 4 |" in md
    assert "| Oracle (upper bound) | 100.0% | 3 | 3 | 3 | 4 |" in md
    assert "un-trained policy" not in md  # absent method is not shown
    assert md.index("ICL (no adaptation) |") < md.index("SEAL (trained policy) |") < md.index("Oracle (upper")


def test_rounds_and_forgetting(report):
    md = report[2]
    # the kept pairs' loss by field: only round 1 measured it; columns basic, size, chain, repeat, lr, epochs, strategy
    assert "| 1 | 1.00 -> 1.00 (1.00) | 1.00 -> 1.00 (1.00) | 0.69 -> 1.00 (0.50) | 1.00 -> 1.00 (1.00) | " \
           "1.00 -> 0.20 (1.00) | 1.00 -> 1.00 (1.00) | 1.00 -> 1.00 (1.00) |" in md
    assert "| 0 | 1.00 ->" not in md and "| 2 | 1.00 ->" not in md
    assert "| 0 | 50.0% | 4 | 2 | – |" in md
    assert "| 1 | 75.0% | 4 | 3 | 0.1234 |" in md
    forgetting = md.split("## Forgetting check")[1].split("##")[0]
    assert "| 0 | all | – | 1.0000 | 1.0100 | +0.0100 | ok |" in forgetting  # a summary without parts
    assert "| 1 | self-edit documents | 4 | 1.2000 | 1.2000 | +0.0000 | ok |" in forgetting
    assert "| 1 | ARC answer grids | 3 | 0.5000 | 0.8000 | +0.3000 | DEGRADED |" in forgetting
    assert "| 1 | all | 7 | 1.0000 | 1.1000 | +0.1000 | DEGRADED |" in forgetting
    assert "| 2 | – | – | – | – | – | not measured (no update: policy unchanged) |" in forgetting
    assert "**Forgetting flagged:** round 1 (ARC answer grids)." in forgetting
    assert "tolerance (2.0%)" in forgetting


def test_selfedit_settings_and_invalid(report):
    md = report[2]
    # round 0: 3 valid of 6 sampled; size on 1/3, chain on 1/3; lr 1e-4 ×2, 1e-3 ×1; epochs 1 ×1, 2 ×2
    assert ("| training round 0 | 3 | 100.0% | 33.3% | 33.3% | 0.0% | train_using_all_tokens 2, "
            "train_using_output_tokens 1 | 0.0001×2, 0.001×1 | 1×1, 2×2 |") in md
    assert "| training round 1 | 3 | 100.0% | 0.0% | 0.0% | 33.3% | train_using_all_tokens 3 | 0.0001×3 | 3×3 |" in md
    assert "| training round 0 | 6 | 3 | 50.0% | json parse error (2); learning_rate out of range (1) |" in md
    assert "| training round 1 | 3 | 0 | 0.0% | – |" in md  # truncated last line was skipped


def test_per_task_deltas(report):
    md = report[2]
    # t1/seal: 4 rows; rewards 1,0,0,1; paired NLL rows (0.5,1.0), (0.7,1.2), (0.3,1.0): base 1.0667, adapted 0.5
    assert "| t1 | seal | 4 | 0.500 | 1.000 | 1.0667 | 0.5000 | -0.5667 |" in md
    # t2/seal: (2.0,1.5), (1.0,1.5): base 1.5, adapted 1.5, delta 0
    assert "| t2 | seal | 2 | 0.500 | 0.800 | 1.5000 | 1.5000 | +0.0000 |" in md
    # t3/seal: only one paired row (1.0 vs 0.9): the adapter hurt
    assert "| t3 | seal | 3 | 0.000 | 0.600 | 0.9000 | 1.0000 | +0.1000 |" in md
    assert "| t1 | ttt_fixed | 1 | 1.000 | 1.000 | 1.0000 | 0.4000 | -0.6000 |" in md


def test_time_breakdown_and_skipped(report):
    md = report[2]
    # seal: 9 rows; sample 9.0; ttt 6 valid × 2.0 = 12.0; eval 6 × 0.5 = 3.0
    assert "| seal | 9 | 9.00 | 12.00 | 3.00 | 1.00 | 1.33 | 0.33 | 24.00 |" in md
    assert "| ttt_fixed | 1 | 0.00 | 3.00 | 1.00 | 0.00 | 3.00 | 1.00 | 4.00 |" in md
    assert "| t9 | prompt exceeds context budget |" in md


def test_plots_are_valid_pngs_and_linked(report):
    run_dir, _, md = report
    for name in ("success_per_round.png", "selfedit_settings.png", "time_breakdown.png"):
        path = os.path.join(run_dir, "plots", name)
        assert os.path.isfile(path)
        with Image.open(path) as im:
            assert im.format == "PNG"
            im.verify()
        assert f"(plots/{name})" in md
    assert not [f for f in os.listdir(os.path.join(run_dir, "plots")) if f.startswith(".tmp")]


def test_truncated_last_line_skipped_but_bad_middle_line_raises(tmp_path):
    run_dir = make_run_dir(tmp_path)
    assert len(load_selfedits(run_dir)) == 10
    path = os.path.join(run_dir, "selfedits.jsonl")
    with open(path) as f:
        lines = f.read().split("\n")
    lines[3] = lines[3][:20]
    with open(path, "w") as f:
        f.write("\n".join(lines))
    with pytest.raises(NanosealError, match="line 4"):
        load_selfedits(run_dir)


def test_minimal_results_without_selfedits(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "results.json").write_text(json.dumps({"methods": {"icl": {"success_rate": 0.0}}, "rounds": []}))
    md = open(write_report(str(run_dir)), encoding="utf-8").read()
    assert "| ICL (no adaptation) | 0.0% | – | – | – | – |" in md
    assert "No self-edits recorded" in md
    assert "None." in md
    assert "**Reward:** SEAL's binary reward" in md and "extensions: none (all off by default)" in md


def test_string_extension_and_no_degradation(tmp_path):
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    fg = {"before": 1.0, "after": 0.9, "degraded": False}
    (run_dir / "results.json").write_text(json.dumps({"methods": {}, "rounds": [{"round": 0, "forgetting": fg}],
                                                      "extensions": ["continuous_reward_topk"]}))
    md = open(write_report(str(run_dir)), encoding="utf-8").read()
    assert "`continuous_reward_topk` (off by default)" in md
    assert "the `continuous_reward_topk` extension was used, not SEAL's binary reward" in md
    assert "| 0 | all | – | 1.0000 | 0.9000 | -0.1000 | ok |" in md and "No degradation flagged." in md


def test_missing_or_corrupt_results_raise(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(NanosealError, match="run directory not found"):
        write_report(str(missing))
    run_dir = tmp_path / "r"
    run_dir.mkdir()
    results = str(run_dir / "results.json")
    with pytest.raises(NanosealError) as e:
        write_report(str(run_dir))
    assert results in str(e.value) and "\n" not in str(e.value)
    (run_dir / "results.json").write_text('{"methods": ')
    with pytest.raises(NanosealError) as e:
        write_report(str(run_dir))
    assert results in str(e.value) and "corrupt" in str(e.value)
    assert str(e.value).startswith(f"corrupt results file {results}: not valid JSON (") and "\n" not in str(e.value)
    (run_dir / "results.json").write_text("[1, 2]")
    with pytest.raises(NanosealError, match="corrupt results file .*: expected a JSON object, got list$"):
        write_report(str(run_dir))
    (run_dir / "results.json").write_text('{"rounds": {}}')
    with pytest.raises(NanosealError, match="field 'rounds' should be a list"):
        write_report(str(run_dir))


def test_cli_handler(tmp_path, capsys):
    run_dir = make_run_dir(tmp_path)
    parser = argparse.ArgumentParser()
    add_args(parser)
    assert run(parser.parse_args([run_dir])) == 0
    assert capsys.readouterr().out.strip() == os.path.join(run_dir, "report.md")


def test_seeds_table_mean_std_and_cli(tmp_path, capsys):
    dirs = []
    for seed, icl in ((0, 0.25), (1, 0.5), (2, 0.75)):
        run_dir = make_run_dir(tmp_path / f"s{seed}")
        path = os.path.join(run_dir, "results.json")
        with open(path) as f:
            results = json.load(f)
        results["seed"] = seed
        results["methods"]["icl"]["success_rate"] = icl
        with open(path, "w") as f:
            json.dump(results, f)
        dirs.append(run_dir)
    table = seeds_table(dirs)
    icl_row = next(line for line in table.splitlines() if line.startswith("| icl |"))
    assert "0.500 ± 0.250" in icl_row  # mean 0.5, sample std 0.25
    assert icl_row.endswith("| 0.250 | 0.500 | 0.750 |")
    assert "| seed 0 | seed 1 | seed 2 |" in table.splitlines()[0] + " |"
    oracle_row = next(line for line in table.splitlines() if line.startswith("| oracle |"))
    assert "1.000 ± 0.000" in oracle_row and "100.0%" in oracle_row
    parser = argparse.ArgumentParser()
    add_args(parser)
    assert run(parser.parse_args(dirs)) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == [os.path.join(d, "report.md") for d in dirs]
    assert "0.500 ± 0.250" in out
