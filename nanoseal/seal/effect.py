"""
The SEAL effect in numbers: per-method success over held-out tasks with 95 % bootstrap intervals (tasks are
the resampling unit), on all held-out tasks and on the curated subset (ICL fails, an oracle recipe solves: the
paper's protocol), the paired differences that decide the claim (SEAL - un-trained self-edits, SEAL - ICL, ...)
and how large a SEAL - un-trained difference those tasks could show (80 % power, nanoseal.stats),
the held-out success of every round's policy, and what each round's policy learned (success by setting on its
training tasks, the settings it chose). Two tables say where the all-tasks difference comes from: SEAL - round 0
split by task kind (ICL solves it / curated / neither), each kind's share of the all-tasks mean; and each recipe
of the oracle grid alone (what one fixed self-edit written every time would score).

    from nanoseal.seal.effect import effect_markdown, pooled_tasks
    print(effect_markdown([results0, results1, results2]))     # results.json dicts of several seeds, pooled

One run or several: the per-task values of every run are pooled (task ids are prefixed with the run's seed,
so equal ids of different runs stay different tasks) and the intervals are over that pooled set of tasks.
"""

import json
from collections import defaultdict

from nanoseal.seal.selfedit import parse_self_edit
from nanoseal.seal.update_size import FIELDS, edit_fields
from nanoseal.stats import detectable_difference, fmt_ci, mean_ci, paired_diff_ci

PAIRS = (("seal", "ttt_selfedit_round0"), ("seal", "icl"), ("ttt_selfedit_round0", "icl"), ("oracle", "seal"),
         ("seal_edits_round0_model", "ttt_selfedit_round0"), ("seal", "seal_edits_round0_model"))
ORDER = ("icl", "ttt_fixed", "ttt_selfedit_round0", "seal", "seal_edits_round0_model", "oracle")
LABELS = {"icl": "ICL (no adaptation)", "ttt_fixed": "TTT, fixed recipe",
          "ttt_selfedit_round0": "TTT, un-trained self-edits", "seal": "SEAL (trained policy)",
          "seal_edits_round0_model": "SEAL's self-edits, un-trained model adapted",
          "oracle": "Oracle (best recipe)"}


def method_order(methods) -> list[str]:
    """Methods in table order: ICL, fixed, round 0, intermediate rounds, SEAL, oracle, then anything else."""
    rounds = sorted((m for m in methods if m.startswith("seal_round")), key=lambda m: int(m[len("seal_round"):]))
    head = [m for m in ORDER[:3] if m in methods] + rounds + [m for m in ORDER[3:] if m in methods]
    return head + sorted(m for m in methods if m not in head)


def label(method: str) -> str:
    """Human name of a method."""
    if method.startswith("seal_round"):
        return f"policy after round {method[len('seal_round'):]}"
    return LABELS.get(method, method)


def pooled_tasks(runs: list[dict], key: str = "per_task") -> tuple[dict[str, dict[str, float]], list[str], list[str]]:
    """({method: {task: success}}, all task keys, curated task keys), pooled over runs (keys 'seed/task');
    `key` = "per_task_hedged" / "per_task_gated" pools another scoring (nanoseal.seal.guard) instead."""
    per_method: dict[str, dict[str, float]] = defaultdict(dict)
    tasks, curated = [], []
    for i, results in enumerate(runs):
        prefix = f"{results.get('seed', i)}/"
        for method, values in (results.get(key) or {}).items():
            for task, v in values.items():
                per_method[method][prefix + task] = float(v)
        first = next(iter((results.get("per_task") or {}).values()), {})
        tasks += [prefix + t for t in first]
        kept = ((results.get("curation") or {}).get("eval") or {}).get("kept")
        curated += [prefix + t for t in kept or []]
    return dict(per_method), tasks, curated


def method_cis(per_method: dict, tasks: list[str]) -> dict[str, dict]:
    """Each method's mean success over the tasks with its 95 % bootstrap interval."""
    return {m: mean_ci([values[t] for t in tasks]) for m, values in per_method.items()
            if tasks and all(t in values for t in tasks)}


def paired_cis(per_method: dict, tasks: list[str], pairs=PAIRS) -> dict[str, dict]:
    """'a - b' -> mean paired difference over the tasks with its 95 % bootstrap interval, and the difference
    those tasks could show at 80 % power ("detectable")."""
    out = {}
    for a, b in pairs:
        if a in per_method and b in per_method and tasks and all(t in per_method[a] and t in per_method[b]
                                                                   for t in tasks):
            va, vb = [per_method[a][t] for t in tasks], [per_method[b][t] for t in tasks]
            out[f"{a} - {b}"] = {**paired_diff_ci(va, vb), "detectable": detectable_difference(va, vb)}
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]


def _diff_text(ci: dict) -> str:
    if ci.get("lo") is None:
        return fmt_ci(ci)
    verdict = "above 0" if ci["lo"] > 0 else "below 0" if ci["hi"] < 0 else "spans 0"
    return f"{ci['mean']:+.3f} [{ci['lo']:+.3f}, {ci['hi']:+.3f}] ({verdict})"


def effect_markdown(runs: list[dict]) -> str:
    """Markdown: the all-tasks and curated tables with intervals, and the paired differences on both."""
    per_method, tasks, curated = pooled_tasks(runs)
    if not tasks:
        return "No per-task scores recorded (results.json without `per_task`).\n"
    seeds = ", ".join(str(r.get("seed", "?")) for r in runs)
    md = [f"Pooled over {len(runs)} run(s) (seeds {seeds}): {len(tasks)} held-out tasks, of which {len(curated)} "
          "are in the curated subset (ICL fails and an oracle recipe solves them, measured with the round-0 "
          "policy). Success of a task = share of its self-edits (or its one recipe) whose adapted model solves it "
          "(pass@2); the oracle counts a task solved when any recipe does. Intervals: 95 % percentile bootstrap "
          "over tasks.", ""]
    md += scoring_tables(per_method, tasks, curated, between=["Paired differences on the same tasks:", ""])
    md += ["", *kinds_markdown(per_method, tasks, curated)]
    for key, (name, text) in GUARDS.items():
        if runs and all(r.get(key) for r in runs):
            per_method, _, _ = pooled_tasks(runs, key)
            md += ["", f"Scored {name} (another view of the same rows, not the score above): {text}. The curated "
                   "subset is the one above.", ""]
            md += scoring_tables(per_method, tasks, curated, name=f" ({name})")
    return "\n".join(md) + "\n"


GUARDS = {  # results.json key -> (name, what it does): the other scorings of the same rows, nanoseal.seal.guard
    "per_task_hedged": ("hedged", "every TTT row keeps its adapted model's first attempt and takes its second from "
                        "the un-adapted model's (the ICL row's) first attempt when that differs; it costs each TTT "
                        "row its own second attempt"),
    "per_task_gated": ("gated", "where more than half of the un-adapted model's inference views predict the same "
                       "grid (for every test input), the task is answered in context and TTT is skipped: every TTT "
                       "row of it takes the ICL row's result; elsewhere rows are unchanged"),
}


KINDS = {"icl": "ICL solves it", "curated": "curated (ICL fails, an oracle recipe solves)", "neither": "neither"}


def task_kinds(per_method: dict, tasks: list[str], curated: list[str]) -> dict[str, str]:
    """Each task's kind: "icl" where the ICL row solves it, "curated" where it is in the curated subset, else
    "neither"."""
    icl, cur = per_method.get("icl", {}), set(curated)
    return {t: "icl" if icl.get(t, 0) > 0 else "curated" if t in cur else "neither" for t in tasks}


def kinds_markdown(per_method: dict, tasks: list[str], curated: list[str], a: str = "seal",
                   b: str = "ttt_selfedit_round0") -> list[str]:
    """Markdown lines: a - b split by task kind, each kind's mean with its interval and its share of the all-tasks
    mean (the kind's sum over all tasks: the shares add up to the all-tasks difference); [] without a or b."""
    if a not in per_method or b not in per_method or "icl" not in per_method or not tasks:
        return []
    kinds = task_kinds(per_method, tasks, curated)
    rows = []
    for kind, name in KINDS.items():
        ts = [t for t in tasks if kinds[t] == kind]
        if not ts:
            continue
        d = [per_method[a][t] - per_method[b][t] for t in ts]
        rows.append([name, len(ts), f"{sum(per_method[a][t] for t in ts) / len(ts):.3f}",
                     f"{sum(per_method[b][t] for t in ts) / len(ts):.3f}", _diff_text(mean_ci(d)),
                     f"{sum(d) / len(tasks):+.3f}"])
    return [f"Where {a} - {b} on all held-out tasks comes from, by kind of task:", "",
            *_table(["tasks", "n", a, b, "difference", "share of the all-tasks difference"], rows)]


def recipe_markdown(runs: list[dict], rows_per_run: list[list[dict]]) -> str:
    """Markdown: each recipe of the oracle grid alone (its one row per held-out task), on all tasks and by kind —
    what one fixed self-edit written every time would score; "" when no run has oracle rows."""
    per_method, tasks, curated = pooled_tasks(runs)
    kinds = task_kinds(per_method, tasks, curated)
    by_recipe: dict[str, dict[str, float]] = defaultdict(dict)
    for i, (results, rows) in enumerate(zip(runs, rows_per_run)):
        prefix = f"{results.get('seed', i)}/"
        for r in rows:
            key = r.get("key") or []
            if key[:1] == ["eval"] and r.get("method") == "oracle" and r.get("self_edit"):
                by_recipe[recipe_label(r["self_edit"])][prefix + r["task"]] = float(r.get("reward") or 0)
    full = {k: v for k, v in by_recipe.items() if all(t in v for t in tasks)}
    if not tasks or not full:
        return ""
    by_kind = {kind: [t for t in tasks if kinds[t] == kind] for kind in KINDS}
    head = ["oracle recipe, alone", f"all held-out tasks (n={len(tasks)})"] + \
           [f"{name} (n={len(by_kind[kind])})" for kind, name in KINDS.items()]
    table = [[name, fmt_ci(mean_ci([values[t] for t in tasks]))]
             + [f"{sum(values[t] for t in ts) / len(ts):.3f}" if ts else "–" for ts in by_kind.values()]
             for name, values in full.items()]
    return "\n".join(["Each recipe of the oracle grid alone (one row per task; picking the best of them after the "
                      "fact is optimistic):", "", *_table(head, table)]) + "\n"


def recipe_label(edit: dict) -> str:
    """A self-edit dict's short label (SelfEdit.label: flags/strategy/lr/epochs), else its JSON."""
    parsed, _ = parse_self_edit(json.dumps(edit))
    return parsed.label() if parsed is not None else json.dumps(edit, sort_keys=True)


def scoring_tables(per_method: dict, tasks: list[str], curated: list[str], name: str = "",
                   between: list[str] | None = None) -> list[str]:
    """Markdown lines: each method's success and the paired differences, on all tasks and the curated subset;
    `name` labels the columns of another scoring, `between` goes between the two tables."""
    all_ci, cur_ci = method_cis(per_method, tasks), method_cis(per_method, curated)
    all_d, cur_d = paired_cis(per_method, tasks), paired_cis(per_method, curated)
    md = _table([f"method{name}", f"all held-out tasks (n={len(tasks)})", f"curated subset (n={len(curated)})"],
                [[label(m), fmt_ci(all_ci[m]), fmt_ci(cur_ci[m]) if m in cur_ci else "–"]
                 for m in method_order(all_ci)])
    md += ["", *(between or [])]
    md += _table([f"difference{name}", "all held-out tasks", "curated subset"],
                 [[k, _diff_text(v), _diff_text(cur_d[k]) if k in cur_d else "–"] for k, v in all_d.items()])
    return md + detectable_line(all_d, cur_d, len(tasks), len(curated))


def detectable_line(all_d: dict, cur_d: dict, n_all: int, n_curated: int,
                    pair: str = "seal - ttt_selfedit_round0") -> list[str]:
    """Markdown: how large a true SEAL - round 0 the tasks could show (80 % power), on all tasks and the curated
    subset (paired_cis's "detectable")."""
    parts = [f"{what} ±{d[pair]['detectable']:.3f} (n={n})" for what, d, n in
             (("all tasks", all_d, n_all), ("curated", cur_d, n_curated))
             if pair in d and d[pair]["detectable"] is not None]
    if not parts:
        return []
    return ["", f"Detectable {pair}: a true difference this large has an 80 % chance to give an interval that "
            f"excludes 0 with these tasks and their spread — {', '.join(parts)}; a smaller one can be real and still "
            "give an interval that spans 0 (more seeds narrow it as 1/sqrt(tasks))."]


def success_by_setting(rows: list[dict]) -> dict[str, dict[str, tuple[int, int]]]:
    """{setting: {value: (solved, valid edits)}} over rows with a valid self-edit."""
    out: dict[str, dict[str, list[int]]] = {k: defaultdict(lambda: [0, 0]) for k in FIELDS}
    for r in rows:
        if not r.get("self_edit"):
            continue
        for k, v in edit_fields(r["self_edit"]).items():
            cell = out[k][f"{v:g}" if isinstance(v, float) else str(v)]
            cell[0] += r.get("reward") == 1
            cell[1] += 1
    return {k: {v: tuple(c) for v, c in sorted(d.items())} for k, d in out.items()}


def learned_markdown(rows: list[dict]) -> str:
    """Per training round, success rate by setting value (solved / valid edits); then, for every policy, the
    settings it chose: training rounds and each policy on the held-out tasks (round 0 ... SEAL)."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = r.get("key") or []
        if key[:1] == ["train"]:
            groups.setdefault(f"training round {key[1]}", []).append(r)
    held = {}
    for r in rows:
        key = r.get("key") or []
        if key[:1] == ["eval"] and (key[2] == "ttt_selfedit_round0" or key[2] == "seal"
                                    or str(key[2]).startswith("seal_round")):
            held.setdefault(key[2], []).append(r)
    md = ["Success rate by setting on the training tasks (solved / valid self-edits) — what the reward favoured:", ""]
    for name, g in groups.items():
        by = success_by_setting(g)
        md.append(f"- {name}: " + "; ".join(
            f"{k}: " + ", ".join(f"{v} {s}/{n}" for v, (s, n) in d.items()) for k, d in by.items() if d))
    md += ["", "Settings each policy chose (share of its valid self-edits):", ""]
    chosen = dict(groups)
    chosen.update({f"held-out, {label(m)}": held[m] for m in method_order(held)})
    for name, g in chosen.items():
        by = success_by_setting(g)
        n = sum(c[1] for c in by["strategy"].values())
        if not n:
            md.append(f"- {name}: no valid self-edit")
            continue
        md.append(f"- {name} ({n} valid): " + "; ".join(
            f"{k}: " + ", ".join(f"{v} {c[1] / n:.0%}" for v, c in d.items()) for k, d in by.items() if d))
    return "\n".join(md) + "\n"
