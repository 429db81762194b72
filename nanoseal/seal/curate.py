"""
SEAL's task curation as an explicit protocol: from a candidate pool keep the tasks that in-context learning
does not solve and that at least one recipe of the oracle grid solves, both measured with the round-0 policy.

SEAL hand-filtered its ARC task lists this way for its 1B model (so TTT has something to add and the right
recipe matters); here the filter is a function of measured rows, applied to the training pool (`nanoseal seal
--curate`: the rounds then train on the kept tasks only) and, separately, to the held-out tasks (always: the
results show the whole held-out table and the curated subset's table). Training and held-out tasks are never
the same instances.

    decision = decide(icl_solved=False, oracle_solved=[False, True])   # (True, "kept: ...")
    record = curate(["a", "b"], {"a": True, "b": False}, {"a": [True], "b": [False, True]})
    record["kept"] == ["b"]; record["dropped"] == {"a": "ICL already solves it"}

Rule "contrast" (an extension for training pools, `--curate-rule contrast`) also keeps the tasks ICL solves and
some oracle recipe breaks: there the self-edit decides between keeping and losing the answer, and their kept
self-edits show the policy when not to train hard. SEAL's rule keeps only tasks where training has to help, so
a policy trained on them learns "train harder" everywhere, including on tasks ICL already solves. The held-out
curated subset always uses SEAL's rule.
"""

DROP_ICL = "ICL already solves it"
DROP_ORACLE = "no recipe of the oracle grid solves it"
DROP_UNMEASURED = "not measured (skipped or missing rows)"
DROP_ICL_SAFE = "ICL solves it and every oracle recipe keeps it solved"
KEEP = "kept: ICL fails and an oracle recipe solves it"
KEEP_BREAKS = "kept: ICL solves it and an oracle recipe breaks it"
RULES = {"seal": KEEP, "contrast": f"{KEEP}; or ICL solves it and an oracle recipe breaks it"}  # name -> its rule


def decide(icl_solved: bool | None, oracle_solved: list[bool] | None, rule: str = "seal") -> tuple[bool, str]:
    """(keep, reason) for one task from its ICL result and its oracle recipes' results, by SEAL's rule or "contrast"."""
    assert rule in RULES, f"curation rule must be one of {list(RULES)}, got {rule!r}"
    if icl_solved is None or not oracle_solved:
        return False, DROP_UNMEASURED
    if icl_solved:
        if rule == "contrast":
            return (True, KEEP_BREAKS) if not all(oracle_solved) else (False, DROP_ICL_SAFE)
        return False, DROP_ICL
    if not any(oracle_solved):
        return False, DROP_ORACLE
    return True, KEEP


def curate(pool: list[str], icl_solved: dict[str, bool], oracle_solved: dict[str, list[bool]],
           rule: str = "seal") -> dict:
    """The curation record of a pool: its ids, the kept ids (pool order), each dropped id's reason, the rule."""
    kept, dropped = [], {}
    for task_id in pool:
        keep, reason = decide(icl_solved.get(task_id), oracle_solved.get(task_id), rule)
        if keep:
            kept.append(task_id)
        else:
            dropped[task_id] = reason
    return {"pool": list(pool), "kept": kept, "dropped": dropped, "rule": RULES[rule]}


def curate_rows(pool: list[str], rows: list[dict], rule: str = "seal") -> dict:
    """curate() from selfedits.jsonl rows of methods "icl" and "oracle" (reward 1 = solved)."""
    icl, oracle = {}, {}
    for r in rows:
        if r["method"] == "icl":
            icl[r["task"]] = r["reward"] == 1
        elif r["method"] == "oracle":
            oracle.setdefault(r["task"], []).append(r["reward"] == 1)
    return curate(pool, icl, oracle, rule)
