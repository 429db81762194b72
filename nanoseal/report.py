"""
Run report of a `nanoseal seal` run directory: `report.md` plus `plots/*.png`.

    nanoseal report RUN_DIR
    nanoseal report RUN_DIR1 RUN_DIR2 RUN_DIR3     # each report, then the table across runs (seeds)
    python -c "from nanoseal.report import write_report; print(write_report('RUN_DIR'))"

Reads `RUN_DIR/results.json` (required: per-method scores, per-round ReST-EM stats, config, seed,
skipped tasks, extensions) and `RUN_DIR/selfedits.jsonl` (optional: one row per sampled self-edit;
a truncated last line, as left by a crash mid-write, is skipped). Writes, atomically:

- `report.md`: config summary, baselines table, success rate per round, chosen self-edit settings per
  round, invalid-edit rate with the commonest reasons, per-task adapter deltas (adapted vs base NLL),
  time breakdown per method, forgetting check per round and probe part (self-edit documents, ARC answer
  grids) with degradation flagged, skipped tasks; a run that used the continuous-reward top-k extension
  says so plainly (SEAL's binary reward otherwise);
- `plots/success_per_round.png`, `plots/selfedit_settings.png`, `plots/time_breakdown.png`
  (matplotlib, Agg canvas; each PNG is rendered in memory and written through a temp file + rename).

Every number in the report is computed from those files. A missing run dir, or a missing or corrupt
`results.json`, raises NanosealError with a one-line message naming the path.
"""

import argparse
import io
import json
import os
from collections import Counter, defaultdict

from nanoseal.common import NanosealError, atomic_write_bytes, atomic_write_text, read_json_object, read_jsonl
from nanoseal.seal.effect import effect_markdown, learned_markdown, method_order, recipe_markdown
from nanoseal.seal.effect import label as effect_label
from nanoseal.seal.guard import gated_per_task, hedged_per_task
from nanoseal.seal.tasks import resolve_tasks

METHOD_LABELS = {
    "icl": "ICL (no adaptation)",
    "ttt_selfedit_round0": "TTT, self-edits of the un-trained policy",
    "ttt_fixed": "TTT, fixed default recipe",
    "seal": "SEAL (trained policy)",
    "oracle": "Oracle (upper bound)",
}
AUG_FLAGS = ["use_basic_augmentations", "use_size_augmentations", "use_chain_augmentations",
             "use_repeat_augmentations"]
TIME_KEYS = ["sample", "ttt", "eval"]
PROBE_LABELS = {"selfedit": "self-edit documents", "arc_answers": "ARC answer grids"}
TOPK_EXTENSION = "continuous_reward_topk"
NOT_CHOSEN = {"icl", "ttt_fixed", "oracle"}  # methods whose recipe is not sampled from the policy
NA = "–"


# ----------------------------------------------------------------------------- loading

def load_results(run_dir: str) -> dict:
    """Read and check results.json of a run dir; NanosealError names the file when it is missing/corrupt."""
    if not os.path.isdir(run_dir):
        raise NanosealError(f"run directory not found: {run_dir}")
    path = os.path.join(run_dir, "results.json")
    if not os.path.isfile(path):
        raise NanosealError(f"missing results file: {path}")
    try:
        results = read_json_object(path)
    except NanosealError as e:  # "<path>: not valid JSON (...)" / "<path>: expected a JSON object, got list"
        raise NanosealError(f"corrupt results file {e}") from None
    for key, typ in (("methods", dict), ("rounds", list), ("config", dict), ("skipped_tasks", list),
                     ("extensions", list)):
        if key in results and results[key] is not None and not isinstance(results[key], typ):
            raise NanosealError(f"corrupt results file {path}: field '{key}' should be a {typ.__name__}")
    return results


def load_selfedits(run_dir: str) -> list[dict]:
    """Rows of selfedits.jsonl (empty if absent); a truncated last line is skipped, a bad middle line is an error."""
    path = os.path.join(run_dir, "selfedits.jsonl")
    if not os.path.isfile(path):
        return []
    rows, _ = read_jsonl(path, strict=True, allow_nonfinite=True)
    return rows


def with_guard(results: dict, rows: list[dict]) -> dict:
    """results with the two other scorings (nanoseal.seal.guard) filled in from the rows when the run predates
    them: `per_task_hedged` (its held-out tasks resolved again from the config; left out when they cannot be) and
    `per_task_gated` (only where the ICL rows recorded their view votes)."""
    eval_rows = [r for r in rows if (r.get("key") or [None])[0] == "eval"]
    if not eval_rows:
        return results
    out = dict(results)
    spec = (results.get("config") or {}).get("eval_tasks")
    if not out.get("per_task_hedged") and isinstance(spec, str):
        try:
            out["per_task_hedged"] = hedged_per_task(eval_rows, resolve_tasks(spec))
        except NanosealError:
            pass
    ids = list(((results.get("per_task") or {}).get("icl") or {}))
    if not out.get("per_task_gated") and ids:
        out["per_task_gated"] = gated_per_task(eval_rows, ids)
    return out


# ----------------------------------------------------------------------------- helpers

def _pct(x) -> str:
    """A fraction as a percentage with one decimal, or a dash."""
    return NA if x is None else f"{100.0 * float(x):.1f}%"


def _num(x, fmt: str = ".4f") -> str:
    """A number formatted, or a dash for None."""
    return NA if x is None else format(float(x), fmt)


def _cell(x) -> str:
    """Text safe inside a markdown table cell."""
    return str(x).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list]) -> list[str]:
    """Markdown table lines."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _mean(xs: list) -> float | None:
    """Mean of a list, None when empty."""
    return sum(xs) / len(xs) if xs else None


def _method_order(names) -> list[str]:
    """Known methods in canonical order (every round's policy between round 0 and SEAL), then any others."""
    return method_order(list(names))


def _valid_edit(row: dict) -> dict | None:
    """The row's self-edit when it is a parsed dict, else None."""
    se = row.get("self_edit")
    return se if isinstance(se, dict) else None


def _extension_name(ext) -> str:
    """An extensions entry's name: the string itself, or a dict's "name"."""
    return str(ext.get("name")) if isinstance(ext, dict) else str(ext)


def _extension_text(ext) -> str:
    """An extensions entry for the config list: its name and, for a dict, its parameters."""
    params = {k: v for k, v in ext.items() if k not in ("name", "selection")} if isinstance(ext, dict) else {}
    extra = "".join(f"; {k}={v}" for k, v in sorted(params.items()))
    return f"`{_extension_name(ext)}` (off by default{extra})"


def topk_extension(results: dict):
    """The continuous-reward top-k extensions entry of a run (a str or dict), or None when SEAL's reward was used."""
    for ext in results.get("extensions") or []:
        if _extension_name(ext) == TOPK_EXTENSION:
            return ext
    return None


def _save_fig(fig, path: str) -> None:
    """Render a matplotlib Figure to PNG in memory and write it atomically."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


# ----------------------------------------------------------------------------- computations

def _settings_group(row: dict) -> tuple[tuple, str]:
    """(sort key, name) of the policy that sampled a row: a training round, or a policy on the held-out tasks."""
    key = row.get("key") or []
    if key[:1] == ["eval"]:
        order = method_order([key[2], "seal"])
        return (1, order.index(key[2]) if key[2] in order else 99), f"held-out: {effect_label(key[2])}"
    r = int(row.get("round", 0))
    return (0, r), f"training round {r}"


def selfedit_settings_by_round(rows: list[dict]) -> dict[str, dict]:
    """Per policy (each training round, then each policy on the held-out tasks: round 0 ... SEAL): sampled/valid
    counts, augmentation flag fractions, strategy/lr/epochs counts, invalid reasons."""
    out: dict[str, dict] = {}
    order: dict[str, tuple] = {}
    for row in rows:
        if row.get("method") in NOT_CHOSEN or (row.get("key") or [None])[0] == "curate":
            continue
        sort_key, r = _settings_group(row)
        order[r] = sort_key
        s = out.setdefault(r, {"n": 0, "valid": 0, "flags": Counter(), "strategy": Counter(), "lr": Counter(),
                               "epochs": Counter(), "reasons": Counter()})
        s["n"] += 1
        se = _valid_edit(row)
        if se is None:
            s["reasons"][row.get("reason") or "unknown"] += 1
            continue
        s["valid"] += 1
        dg, tr = se.get("data_generation") or {}, se.get("training") or {}
        for flag in AUG_FLAGS:
            s["flags"][flag] += bool(dg.get(flag))
        s["strategy"][str(tr.get("strategy"))] += 1
        if tr.get("learning_rate") is not None:
            s["lr"][float(tr["learning_rate"])] += 1
        if tr.get("num_train_epochs") is not None:
            s["epochs"][int(tr["num_train_epochs"])] += 1
    return {name: out[name] for name in sorted(out, key=lambda n: order[n])}


def per_task_stats(rows: list[dict]) -> list[dict]:
    """Per (task, method): n, mean reward, best cell accuracy, mean base/adapted NLL (paired rows) and delta."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(str(row.get("task")), str(row.get("method")))].append(row)
    out = []
    for (task, method), g in groups.items():
        cells = [float(r["cell_accuracy"]) for r in g if r.get("cell_accuracy") is not None]
        paired = [r for r in g if r.get("nll") is not None and r.get("base_nll") is not None]
        base = _mean([float(r["base_nll"]) for r in paired])
        adapted = _mean([float(r["nll"]) for r in paired])
        out.append({
            "task": task, "method": method, "n": len(g),
            "mean_reward": _mean([float(r.get("reward") or 0) for r in g]),
            "best_cell_accuracy": max(cells) if cells else None,
            "base_nll": base, "adapted_nll": adapted,
            "delta_nll": None if base is None else adapted - base,
        })
    rank = {m: i for i, m in enumerate(_method_order({s["method"] for s in out}))}
    return sorted(out, key=lambda s: (s["task"], rank[s["method"]]))


def time_by_method(rows: list[dict]) -> dict[str, dict]:
    """Per method: row count and summed sample/ttt/eval seconds."""
    out: dict[str, dict] = {}
    for row in rows:
        m = str(row.get("method"))
        t = out.setdefault(m, {"n": 0, **{k: 0.0 for k in TIME_KEYS}})
        t["n"] += 1
        secs = row.get("seconds") or {}
        for k in TIME_KEYS:
            t[k] += float(secs.get(k) or 0.0)
    return {m: out[m] for m in _method_order(out)}


# ----------------------------------------------------------------------------- plots

def plot_success_per_round(rounds: list[dict], methods: dict, path: str) -> None:
    """Line plot of success rate per ReST-EM round, with baselines as horizontal lines."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    xs = [int(r.get("round", i)) for i, r in enumerate(rounds)]
    ys = [100.0 * float(r.get("success_rate") or 0.0) for r in rounds]
    ax.plot(xs, ys, marker="o", label="ReST-EM round")
    for m in _method_order(methods):
        if m != "seal" and methods[m].get("success_rate") is not None:
            ax.axhline(100.0 * float(methods[m]["success_rate"]), linestyle="--", linewidth=1,
                       label=METHOD_LABELS.get(m, m), color=f"C{1 + _method_order(methods).index(m)}")
    ax.set_xlabel("round")
    ax.set_ylabel("success rate (%)")
    ax.set_xticks(xs)
    ax.set_title("Success rate per round")
    ax.legend(fontsize=7)
    _save_fig(fig, path)


def plot_selfedit_settings(settings: dict[str, dict], path: str) -> None:
    """Four panels: augmentation flag fractions, strategy split, learning-rate and epochs histograms per round."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 7))
    axes = fig.subplots(2, 2)
    rounds = list(settings)
    width = 0.8 / max(1, len(rounds))
    ax = axes[0][0]
    for j, r in enumerate(rounds):
        s = settings[r]
        fr = [s["flags"][f] / s["valid"] if s["valid"] else 0.0 for f in AUG_FLAGS]
        ax.bar([i + j * width for i in range(len(AUG_FLAGS))], fr, width, label=r)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(AUG_FLAGS))])
    ax.set_xticklabels([f.split("_")[1] for f in AUG_FLAGS])
    ax.set_ylim(0, 1)
    ax.set_title("augmentation flag on (fraction of valid edits)")
    ax.legend(fontsize=7)
    ax = axes[0][1]
    strategies = sorted({k for s in settings.values() for k in s["strategy"]})
    bottoms = [0.0] * len(rounds)
    for st in strategies:
        vals = [settings[r]["strategy"][st] for r in rounds]
        ax.bar([str(i) for i in range(len(rounds))], vals, bottom=bottoms, label=st)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_title("training strategy (count; bars in the legend's order)")
    ax.set_xlabel("policy")
    if strategies:
        ax.legend(fontsize=7)
    for ax, key, title in ((axes[1][0], "lr", "learning rate"), (axes[1][1], "epochs", "epochs")):
        values = sorted({v for s in settings.values() for v in s[key]})
        for j, r in enumerate(rounds):
            n = max(1, settings[r]["valid"])
            ax.bar([i + j * width for i in range(len(values))], [settings[r][key][v] / n for v in values], width,
                   label=r)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(values))])
        ax.set_xticklabels([f"{v:g}" for v in values], fontsize=7)
        ax.set_title(f"{title} (share of valid edits)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)


def plot_time_breakdown(times: dict[str, dict], path: str) -> None:
    """Stacked bars of total sample/ttt/eval seconds per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    names = list(times)
    bottoms = [0.0] * len(names)
    for k in TIME_KEYS:
        vals = [times[m][k] for m in names]
        ax.bar(names, vals, bottom=bottoms, label=k)
        bottoms = [b + v for b, v in zip(bottoms, vals)]
    ax.set_ylabel("seconds (sum)")
    ax.set_title("Time breakdown per method")
    ax.legend()
    _save_fig(fig, path)


# ----------------------------------------------------------------------------- report

def _config_lines(results: dict) -> list[str]:
    """Config summary, seed and extensions."""
    out = ["## Configuration", ""]
    out.append(f"- seed: `{results.get('seed', NA)}`")
    for key, val in sorted((results.get("config") or {}).items()):
        shown = val if isinstance(val, (str, int, float, bool)) or val is None else json.dumps(val, sort_keys=True)
        out.append(f"- {key}: `{shown}`")
    exts = results.get("extensions") or []
    if exts:
        out.append("- extensions enabled in this run: " + ", ".join(_extension_text(e) for e in exts))
    else:
        out.append("- extensions: none (all off by default)")
    out += ["", _reward_line(results)]
    return out + [""]


def _reward_line(results: dict) -> str:
    """One plain sentence on which reward chose the ReST-EM pairs."""
    ext = topk_extension(results)
    if ext is None:
        return "**Reward:** SEAL's binary reward: ReST-EM kept the self-edits with reward 1 (task solved)."
    params = ext if isinstance(ext, dict) else {}
    k = f" (k={params['k']})" if "k" in params else ""
    return (f"**Reward: the `{TOPK_EXTENSION}` extension{k} was used, not SEAL's binary reward.** "
            f"ReST-EM kept {params.get('selection') or 'the top-k self-edits by a continuous score'}.")


def _forgetting_rows(rounds: list[dict]) -> tuple[list[list], list[str]]:
    """Forgetting table rows (one per probe part, then all parts together) and the degraded (round, part) names."""
    rows, degraded = [], []
    for i, r in enumerate(rounds):
        rnd, fg = r.get("round", i), r.get("forgetting")
        if not isinstance(fg, dict):
            status = "not measured (no update: policy unchanged)" if r.get("skipped") else "not measured"
            rows.append([rnd, NA, NA, NA, NA, NA, status])
            continue
        parts = {PROBE_LABELS.get(k, k): v for k, v in (fg.get("parts") or {}).items() if isinstance(v, dict)}
        n_all = sum(p.get("n_docs") or 0 for p in parts.values()) if parts else NA
        for name, part in [*parts.items(), ("all", {**fg, "n_docs": n_all})]:
            before, after = part.get("before"), part.get("after")
            change = None if before is None or after is None else float(after) - float(before)
            rows.append([rnd, name, part.get("n_docs", NA), _num(before), _num(after), _num(change, "+.4f"),
                         "DEGRADED" if part.get("degraded") else "ok"])
            if part.get("degraded") and (name != "all" or not parts):
                degraded.append(f"round {rnd} ({name})")
    return rows, degraded


def _pairs_nll(r: dict) -> str:
    p = r.get("pairs_nll")
    return f"{p['before']:.3f} -> {p['after']:.3f}" if isinstance(p, dict) else NA


def _shift(r: dict, key: str) -> str:
    s = r.get("shift")
    return _num(s["mean"][key], ".3f") if isinstance(s, dict) else NA


def _update(r: dict) -> str:
    u = r.get("update")
    if not isinstance(u, dict):
        return NA
    kind = "full" if u.get("rank") == 0 else f"LoRA r={u.get('rank')}"
    return f"{kind}, lr {u.get('learning_rate'):g}, {u.get('epochs')} ep"


FIELD_NLL_COLUMNS = {"use_basic_augmentations": "basic", "use_size_augmentations": "size",
                     "use_chain_augmentations": "chain", "use_repeat_augmentations": "repeat",
                     "learning_rate": "lr", "num_train_epochs": "epochs", "strategy": "strategy"}


def _field_nll_lines(rounds: list[dict]) -> list[str]:
    """The kept pairs' loss per self-edit field before -> after each update, with the kept set's entropy."""
    with_fields = [(r.get("round", i), r["field_nll"]) for i, r in enumerate(rounds)
                   if isinstance(r.get("field_nll"), dict)]
    if not with_fields:
        return []
    md = ["", "Kept pairs' loss by self-edit field, before -> after the update (nats per self-edit on that field's "
          "value tokens; in brackets the kept set's entropy of the field, what fitting its marginal reaches). A "
          "field whose loss does not move was not learnt, whatever the kept pairs say about it.", ""]
    md += _table(["round"] + list(FIELD_NLL_COLUMNS.values()),
                 [[rnd] + [f"{_num(f['before'].get(k), '.2f')} -> {_num(f['after'].get(k), '.2f')} "
                           f"({_num(f['kept_entropy'].get(k), '.2f')})" for k in FIELD_NLL_COLUMNS]
                  for rnd, f in with_fields])
    return md


def build_report(run_dir: str, results: dict, rows: list[dict], plots_dir: str) -> str:
    """Compute every section, write the plots, and return the markdown text."""
    methods = {m: v for m, v in (results.get("methods") or {}).items() if isinstance(v, dict)}
    rounds = [r for r in (results.get("rounds") or []) if isinstance(r, dict)]
    md = [f"# nanoseal run report: {os.path.basename(os.path.abspath(run_dir))}", ""]
    md += _config_lines(results)

    md += ["## Baselines", ""]
    if methods:
        md += _table(["method", "success rate", "tasks solved (any)", "tasks solved (majority)", "n_tasks",
                      "n_pairs"],
                     [[METHOD_LABELS.get(m, m), _pct(methods[m].get("success_rate")),
                       methods[m].get("tasks_solved_any", NA), methods[m].get("tasks_solved_majority", NA),
                       methods[m].get("n_tasks", NA), methods[m].get("n_pairs", NA)] for m in _method_order(methods)])
    else:
        md.append("No method results recorded.")
    md.append("")
    md += ["## Held-out success with 95 % intervals: all tasks and the curated subset", ""]
    md.append(effect_markdown([results]))
    recipes = recipe_markdown([results], [rows])
    if recipes:
        md.append(recipes)

    md += ["## Success rate per round", ""]
    if rounds:
        kept_by = f"the `{TOPK_EXTENSION}` extension (not SEAL's binary reward)" if topk_extension(results) \
            else "SEAL's binary reward (reward 1)"
        md += [f"n_pairs: (task, self-edit) pairs sampled; n_kept: pairs kept for ReST-EM by {kept_by}; "
               "ReST-EM loss: mean behaviour-cloning loss of the last epoch.", ""]
        held = [m for m in _method_order(methods) if m in ("ttt_selfedit_round0", "seal") or m.startswith("seal_round")]
        md += ["Held-out success of the policy after each round: "
               + ", ".join(f"{effect_label(m)} {_pct(methods[m].get('success_rate'))}" for m in held) + ".", ""]
        md += ["Policy shift: mean over the self-edit fields of the total-variation distance between the "
               "self-edits sampled on held-out prompts before and after the update (moved), and between those "
               "after and the kept pairs (to kept); pairs NLL: the kept pairs' mean token loss before -> after.", ""]
        md += _table(["round", "training success", "n_pairs", "n_kept", "ReST-EM loss", "pairs NLL",
                      "moved (TV)", "to kept (TV)", "update"],
                     [[r.get("round", i), _pct(r.get("success_rate")), r.get("n_pairs", NA), r.get("n_kept", NA),
                       _num(r.get("restem_loss")), _pairs_nll(r), _shift(r, "tv_moved"), _shift(r, "tv_after_kept"),
                       _update(r)] for i, r in enumerate(rounds)])
        md += _field_nll_lines(rounds)
        plot_success_per_round(rounds, methods, os.path.join(plots_dir, "success_per_round.png"))
        md += ["", "![success rate per round](plots/success_per_round.png)"]
    else:
        md.append("No rounds recorded.")
    md.append("")

    settings = selfedit_settings_by_round(rows)
    md += ["## Chosen self-edit settings per round", ""]
    if settings:
        md.append("Self-edits sampled from the policy (fixed-recipe, grid and no-adaptation rows excluded); "
                  "flags and histograms (`value×count`) are over valid (parsed) edits.")
        md.append("")
        md += _table(["round", "valid edits"] + [f.split("_")[1] + " aug on" for f in AUG_FLAGS]
                     + ["strategy split", "learning rate histogram", "epochs histogram"],
                     [[r, s["valid"]] + [_pct(s["flags"][f] / s["valid"]) if s["valid"] else NA for f in AUG_FLAGS]
                      + [", ".join(f"{k} {v}" for k, v in sorted(s["strategy"].items())) or NA,
                         ", ".join(f"{k:g}×{v}" for k, v in sorted(s["lr"].items())) or NA,
                         ", ".join(f"{k}×{v}" for k, v in sorted(s["epochs"].items())) or NA]
                      for r, s in settings.items()])
        plot_selfedit_settings(settings, os.path.join(plots_dir, "selfedit_settings.png"))
        md += ["", "![self-edit settings per round](plots/selfedit_settings.png)", "",
               "### Invalid self-edits per round", ""]
        md += _table(["round", "sampled", "invalid", "invalid rate", "most common reasons"],
                     [[r, s["n"], s["n"] - s["valid"], _pct((s["n"] - s["valid"]) / s["n"]),
                       "; ".join(f"{k} ({v})" for k, v in s["reasons"].most_common(3)) or NA]
                      for r, s in settings.items()])
    else:
        md.append("No self-edits recorded (selfedits.jsonl missing or empty).")
    md.append("")

    md += ["## What the policy learned", ""]
    md.append(learned_markdown(rows))

    md += ["## Per-task results (adapter performance deltas)", ""]
    tasks = per_task_stats(rows)
    if tasks:
        md.append("NLL means are over rows with both a base and an adapted NLL; Δ = adapted − base "
                  "(negative: the adapter helped).")
        md.append("")
        md += _table(["task", "method", "samples", "mean reward", "best cell accuracy", "mean base NLL",
                      "mean adapted NLL", "Δ NLL"],
                     [[t["task"], t["method"], t["n"], _num(t["mean_reward"], ".3f"),
                       _num(t["best_cell_accuracy"], ".3f"), _num(t["base_nll"]), _num(t["adapted_nll"]),
                       _num(t["delta_nll"], "+.4f")] for t in tasks])
    else:
        md.append("No per-task rows.")
    md.append("")

    md += ["## Time breakdown", ""]
    times = time_by_method(rows)
    if times:
        md += _table(["method", "rows"] + [f"{k} s (sum)" for k in TIME_KEYS] + [f"{k} s (mean)" for k in TIME_KEYS]
                     + ["total s"],
                     [[m, t["n"]] + [_num(t[k], ".2f") for k in TIME_KEYS]
                      + [_num(t[k] / t["n"], ".2f") for k in TIME_KEYS] + [_num(sum(t[k] for k in TIME_KEYS), ".2f")]
                      for m, t in times.items()])
        plot_time_breakdown(times, os.path.join(plots_dir, "time_breakdown.png"))
        md += ["", "![time breakdown](plots/time_breakdown.png)"]
    else:
        md.append("No timings recorded.")
    md.append("")

    md += ["## Forgetting check", ""]
    frows, degraded = _forgetting_rows(rounds)
    if frows:
        tolerances = {fg.get("tolerance") for fg in (r.get("forgetting") for r in rounds) if isinstance(fg, dict)}
        tolerances.discard(None)
        tolerance = _pct(tolerances.pop()) if len(tolerances) == 1 else "2% by default"
        md += ["Mean token loss of the policy on a fixed held-out probe before and after each ReST-EM merge: "
               "self-edit documents (default self-edit) and ARC answer grids (demonstrations leave-one-out, "
               "loss on the answer) of the first training tasks; `all` is over every probe token. DEGRADED: "
               f"the loss rose by more than the tolerance ({tolerance}).", ""]
        md += _table(["round", "probe", "docs", "loss before", "loss after", "change", "status"], frows)
        md += ["", f"**Forgetting flagged:** {', '.join(degraded)}." if degraded
               else "No degradation flagged."]
    else:
        md.append("No rounds.")
    md.append("")

    md += ["## Skipped tasks", ""]
    skipped = [s for s in (results.get("skipped_tasks") or []) if isinstance(s, dict)]
    md += _table(["task", "reason"], [[s.get("task", NA), s.get("reason", NA)] for s in skipped]) if skipped \
        else ["None."]
    md.append("")
    return "\n".join(md)


def write_report(run_dir: str) -> str:
    """Write RUN_DIR/report.md and RUN_DIR/plots/*.png; return the report path."""
    rows = load_selfedits(run_dir)
    results = with_guard(load_results(run_dir), rows)
    plots_dir = os.path.join(run_dir, "plots")
    os.makedirs(plots_dir, exist_ok=True)
    text = build_report(run_dir, results, rows, plots_dir)
    path = os.path.join(run_dir, "report.md")
    atomic_write_text(path, text)
    return path


def seeds_table(run_dirs: list[str]) -> str:
    """Markdown table of each method's success rate across runs: mean ± sample std, then every run's value."""
    rows_per_run = [load_selfedits(d) for d in run_dirs]
    runs = [with_guard(load_results(d), rows) for d, rows in zip(run_dirs, rows_per_run)]
    methods = _method_order({m for r in runs for m in r.get("methods", {})})
    header = ["method", f"success (mean ± std, n={len(runs)})", "solved any (mean)"]
    header += [f"seed {r.get('seed', '?')}" for r in runs]
    rows = []
    for m in methods:
        rates = [r["methods"][m]["success_rate"] for r in runs if m in r.get("methods", {})]
        solved = [r["methods"][m]["tasks_solved_any"] / r["methods"][m]["n_tasks"] for r in runs
                  if m in r.get("methods", {}) and r["methods"][m].get("n_tasks")]
        mean = _mean(rates)
        std = (sum((x - mean) ** 2 for x in rates) / (len(rates) - 1)) ** 0.5 if len(rates) > 1 else None
        cells = [_num(r["methods"][m]["success_rate"], ".3f") if m in r.get("methods", {}) else NA for r in runs]
        spread = f"{mean:.3f} ± {std:.3f}" if std is not None else _num(mean, ".3f")
        rows.append([m, spread, _pct(_mean(solved))] + cells)
    recipes = recipe_markdown(runs, rows_per_run)
    return "\n".join(_table(header, rows)) + "\n\n" + effect_markdown(runs) + ("\n" + recipes if recipes else "")


def add_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of `nanoseal report`."""
    parser.add_argument("run_dir", metavar="RUN_DIR", nargs="+",
                        help="`nanoseal seal` run directories; with several, also a table across them")


def run(args: argparse.Namespace) -> int:
    """CLI handler: write each report and print its path; with several runs, print the table across them."""
    for d in args.run_dir:
        print(write_report(d))
    if len(args.run_dir) > 1:
        print(seeds_table(args.run_dir), end="")
    return 0
