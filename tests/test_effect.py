"""The SEAL-effect tables (nanoseal.seal.effect): pooling seeds, the curated subset, paired intervals, and what
the policy learned, on hand-made results.

Run: pytest tests/test_effect.py
"""

from nanoseal.seal.effect import (
    effect_markdown,
    kinds_markdown,
    learned_markdown,
    method_order,
    paired_cis,
    pooled_tasks,
    recipe_markdown,
    task_kinds,
)


def results(seed: int, seal: list[float], round0: list[float], icl: list[float], oracle: list[float]) -> dict:
    """A results.json with per-task scores for tasks a, b, c, ...; curated = ICL 0 and oracle 1."""
    ids = [chr(ord("a") + i) for i in range(len(seal))]
    curated = [t for t, i, o in zip(ids, icl, oracle) if i == 0 and o == 1]
    return {"seed": seed, "per_task": {"seal": dict(zip(ids, seal)), "ttt_selfedit_round0": dict(zip(ids, round0)),
                                       "icl": dict(zip(ids, icl)), "oracle": dict(zip(ids, oracle))},
            "curation": {"eval": {"kept": curated}}}


def test_pooled_tasks_keep_seeds_apart_and_collect_the_curated_subset():
    r0 = results(0, [1, 0.5, 0], [0.5, 0.5, 0], [1, 0, 0], [1, 1, 0])
    r1 = results(1, [0.5, 1], [0, 0.5], [0, 0], [1, 1])
    per_method, tasks, curated = pooled_tasks([r0, r1])
    assert tasks == ["0/a", "0/b", "0/c", "1/a", "1/b"]
    assert curated == ["0/b", "1/a", "1/b"]
    assert per_method["seal"]["1/a"] == 0.5 and per_method["seal"]["0/a"] == 1.0
    diffs = paired_cis(per_method, tasks)
    assert abs(diffs["seal - ttt_selfedit_round0"]["mean"] - (0.5 + 0 + 0 + 0.5 + 0.5) / 5) < 1e-12


def test_effect_markdown_reports_both_tables_and_verdicts():
    # SEAL beats round 0 by 0.5 on every one of 12 tasks: the paired interval is a point above 0
    runs = [results(s, [1.0] * 6, [0.5] * 6, [0, 1, 0, 1, 0, 1], [1] * 6) for s in (0, 1)]
    md = effect_markdown(runs)
    assert "12 held-out tasks, of which 6 are in the curated subset" in md
    assert "| SEAL (trained policy) | 1.000 [1.000, 1.000] | 1.000 [1.000, 1.000] |" in md
    assert "| ICL (no adaptation) | 0.500 [" in md and "| 0.000 [0.000, 0.000] |" in md
    assert "| seal - ttt_selfedit_round0 | +0.500 [+0.500, +0.500] (above 0) |" in md
    assert "(spans 0)" not in md.split("seal - icl")[0]
    assert "Detectable seal - ttt_selfedit_round0" in md and "all tasks ±0.000 (n=12)" in md  # no spread
    assert effect_markdown([{"seed": 0}]).startswith("No per-task scores")


def test_effect_markdown_says_how_large_a_difference_the_tasks_can_show():
    """A +0.25 mean from half the tasks +1 and half -0.5: the line gives (1.96 + 0.84) sd / sqrt(n) for all tasks
    and for the curated subset (the tasks with ICL 0 and oracle 1)."""
    runs = [results(0, [1, 0, 1, 0.5, 1, 0.5], [0, 0.5, 0, 1, 0, 1], [0, 0, 0, 1, 1, 1], [1] * 6)]
    md = effect_markdown(runs)
    line = next(x for x in md.splitlines() if x.startswith("Detectable seal - ttt_selfedit_round0"))
    assert "all tasks ±0.940 (n=6)" in line and "curated ±1.401 (n=3)" in line, line


def test_method_order_puts_every_round_between_round0_and_seal():
    assert method_order(["oracle", "seal", "seal_round2", "icl", "seal_round1", "ttt_selfedit_round0",
                         "ttt_fixed"]) == ["icl", "ttt_fixed", "ttt_selfedit_round0", "seal_round1", "seal_round2",
                                           "seal", "oracle"]


def _edit(lr: float, epochs: int) -> dict:
    return {"data_generation": {"use_basic_augmentations": True, "use_size_augmentations": False,
                                "use_chain_augmentations": False, "use_repeat_augmentations": False},
            "training": {"strategy": "train_using_output_tokens", "learning_rate": lr, "num_train_epochs": epochs}}


def test_learned_markdown_success_by_setting_and_chosen_settings():
    rows = [{"key": ["train", 0, "seal", "t", 0], "self_edit": _edit(1e-3, 1), "reward": 1},
            {"key": ["train", 0, "seal", "t", 1], "self_edit": _edit(1e-2, 1), "reward": 0},
            {"key": ["train", 0, "seal", "t", 2], "self_edit": _edit(1e-2, 2), "reward": 0},
            {"key": ["train", 0, "seal", "t", 3], "self_edit": None, "reward": 0},
            {"key": ["eval", 0, "seal", "e", 0], "self_edit": _edit(1e-3, 1), "reward": 1},
            {"key": ["eval", 0, "icl", "e", 0], "self_edit": None, "reward": 1}]
    md = learned_markdown(rows)
    assert "- training round 0: learning_rate: 0.001 1/1, 0.01 0/2; num_train_epochs: 1 1/2, 2 0/1" in md
    assert "- held-out, SEAL (trained policy) (1 valid): learning_rate: 0.001 100%" in md
    assert "- training round 0 (3 valid): learning_rate: 0.001 33%, 0.01 67%" in md


def test_kinds_split_the_difference_and_the_shares_add_up():
    # tasks a..f: ICL solves a, b (SEAL breaks both); c, d curated (SEAL +1, +0.5); e, f neither (SEAL +0.25 on e)
    r = results(0, [0, 0.5, 1, 0.5, 0.25, 0], [1, 1, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0])
    per_method, tasks, curated = pooled_tasks([r])
    assert task_kinds(per_method, tasks, curated) == {"0/a": "icl", "0/b": "icl", "0/c": "curated",
                                                      "0/d": "curated", "0/e": "neither", "0/f": "neither"}
    lines = kinds_markdown(per_method, tasks, curated)
    row = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in lines if line.startswith("| ")}
    assert row["ICL solves it"][1:4] == ["2", "0.250", "1.000"] and row["ICL solves it"][4].startswith("-0.750")
    shares = [float(r[5].rstrip(" |")) for name, r in row.items() if name in ("ICL solves it", "neither")
              or name.startswith("curated")]
    assert shares == [-0.25, 0.25, 0.042]  # -1.5/6, +1.5/6, +0.25/6 (rounded to 3 places)
    all_tasks = paired_cis(per_method, tasks)["seal - ttt_selfedit_round0"]["mean"]
    assert abs(sum([-1.5 / 6, 1.5 / 6, 0.25 / 6]) - all_tasks) < 1e-12
    assert "Where seal - ttt_selfedit_round0" in effect_markdown([r])
    assert kinds_markdown({"seal": {}}, tasks, curated) == []


def test_recipe_markdown_scores_each_oracle_recipe_alone():
    r = results(0, [0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 0])
    rows = []
    for task, gentle, bold in (("a", 1, 0), ("b", 0, 1), ("c", 0, 0)):
        rows += [{"key": ["eval", 0, "oracle", task, 0], "method": "oracle", "task": task,
                  "self_edit": _edit(1e-4, 1), "reward": gentle},
                 {"key": ["eval", 0, "oracle", task, 1], "method": "oracle", "task": task,
                  "self_edit": _edit(1e-2, 3), "reward": bold},
                 {"key": ["curate", 0, "oracle", task, 0], "method": "oracle", "task": task,
                  "self_edit": _edit(3e-3, 3), "reward": 1}]  # curation rows are not held-out rows
    md = recipe_markdown([r], [rows])
    lines = {line.split(" | ")[0].lstrip("| "): line for line in md.splitlines() if line.startswith("| basic")}
    assert set(lines) == {"basic/output/lr=0.0001/ep=1", "basic/output/lr=0.01/ep=3"}
    # columns: all tasks, ICL solves it (a), curated (b), neither (c)
    assert lines["basic/output/lr=0.0001/ep=1"].endswith("| 1.000 | 0.000 | 0.000 |")
    assert lines["basic/output/lr=0.01/ep=3"].endswith("| 0.000 | 1.000 | 0.000 |")
    assert recipe_markdown([r], [[]]) == ""
