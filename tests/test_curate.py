"""SEAL's task curation (nanoseal.seal.curate): which tasks a stub scorer's results keep or drop, and why.

Run: pytest tests/test_curate.py
"""

from nanoseal.seal.curate import (
    DROP_ICL,
    DROP_ICL_SAFE,
    DROP_ORACLE,
    DROP_UNMEASURED,
    KEEP,
    KEEP_BREAKS,
    curate,
    curate_rows,
    decide,
)


def test_decide():
    assert decide(False, [False, True])[0]
    assert decide(True, [True, True]) == (False, DROP_ICL)
    assert decide(False, [False, False]) == (False, DROP_ORACLE)
    assert decide(None, [True]) == (False, DROP_UNMEASURED)
    assert decide(False, []) == (False, DROP_UNMEASURED)


def stub_scorer(task_id: str) -> tuple[bool, list[bool]]:
    """A fake scorer: 'easy' tasks ICL solves, 'hard' ones no recipe solves, 'ttt' ones only recipe 2 solves."""
    kind = task_id.split("-")[0]
    return kind == "easy", [kind in ("easy", "ttt") and i == 2 for i in range(4)]


def test_curate_keeps_what_ttt_alone_solves_in_pool_order():
    pool = ["easy-1", "ttt-1", "hard-1", "ttt-2", "easy-2", "lost-1"]
    scores = {t: stub_scorer(t) for t in pool if not t.startswith("lost")}
    record = curate(pool, {t: s[0] for t, s in scores.items()}, {t: s[1] for t, s in scores.items()})
    assert record["pool"] == pool
    assert record["kept"] == ["ttt-1", "ttt-2"]
    assert record["dropped"] == {"easy-1": DROP_ICL, "hard-1": DROP_ORACLE, "easy-2": DROP_ICL,
                                 "lost-1": DROP_UNMEASURED}


def test_curate_rows_reads_icl_and_oracle_rows():
    rows = [{"method": "icl", "task": "a", "reward": 0}, {"method": "oracle", "task": "a", "reward": 0},
            {"method": "oracle", "task": "a", "reward": 1}, {"method": "icl", "task": "b", "reward": 1},
            {"method": "oracle", "task": "b", "reward": 1}, {"method": "seal", "task": "c", "reward": 1},
            {"method": "icl", "task": "c", "reward": 0}, {"method": "oracle", "task": "c", "reward": 0}]
    record = curate_rows(["a", "b", "c"], rows)
    assert record["kept"] == ["a"]
    assert record["dropped"] == {"b": DROP_ICL, "c": DROP_ORACLE}


def test_contrast_rule_also_keeps_what_a_recipe_breaks():
    assert decide(True, [True, False], rule="contrast") == (True, KEEP_BREAKS)
    assert decide(True, [True, True], rule="contrast") == (False, DROP_ICL_SAFE)
    assert decide(False, [False, True], rule="contrast") == (True, KEEP)  # SEAL's kept tasks stay kept
    assert decide(False, [False, False], rule="contrast") == (False, DROP_ORACLE)
    assert decide(True, [True, False]) == (False, DROP_ICL)  # SEAL's rule (the default) does not keep it
    rows = [{"method": "icl", "task": "a", "reward": 1}, {"method": "oracle", "task": "a", "reward": 1},
            {"method": "oracle", "task": "a", "reward": 0}, {"method": "icl", "task": "b", "reward": 1},
            {"method": "oracle", "task": "b", "reward": 1}, {"method": "icl", "task": "c", "reward": 0},
            {"method": "oracle", "task": "c", "reward": 1}]
    record = curate_rows(["a", "b", "c"], rows, rule="contrast")
    assert record["kept"] == ["a", "c"]
    assert record["dropped"] == {"b": DROP_ICL_SAFE}
    assert "breaks" in record["rule"]
    assert curate_rows(["a", "b", "c"], rows)["kept"] == ["c"]
