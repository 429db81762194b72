"""
Add the ICL rows' view votes to runs written before rows recorded them, so `nanoseal report` can show their gated
score (nanoseal.seal.guard). For each run it loads the run's own un-trained policy (config "checkpoint", or
--checkpoint), decodes every held-out task's inference views again exactly as the ICL row did, checks that the
voted attempts equal the stored ones (the run is left untouched otherwise), and rewrites selfedits.jsonl with a
"votes" field on its held-out ICL rows (a .bak copy of the old file is kept).

    python dev/icl_votes.py RUN_DIR [RUN_DIR ...] [--checkpoint nanoseal/policies/tiny]
"""

import argparse
import json
import os
import shutil

import torch

from nanoseal.checkpoint import load_model
from nanoseal.common import atomic_write_text
from nanoseal.report import load_results, load_selfedits
from nanoseal.seal.tasks import resolve_tasks
from nanoseal.seal.ttt import TTTConfig, run_ttt


def add_votes(run_dir: str, checkpoint: str | None) -> str:
    """Recompute and store the votes of one run's held-out ICL rows; returns a one-line summary."""
    results, rows = load_results(run_dir), load_selfedits(run_dir)
    icl = {r["task"]: r for r in rows if r["key"][0] == "eval" and r["method"] == "icl"}
    if icl and all("votes" in r for r in icl.values()):
        return f"{run_dir}: votes already recorded"
    model, tokenizer, _ = load_model(checkpoint or results["config"]["checkpoint"], device="cpu")
    cfg = TTTConfig(**{k: tuple(v) if k == "targets" else v for k, v in results["ttt_config"].items()})
    for task in resolve_tasks(results["config"]["eval_tasks"]):
        _, base = run_ttt(model, tokenizer, task, [], cfg, seed=results["seed"], include_base=True)  # as icl_group
        stored = icl[task.id]
        if base.attempts != stored["attempts"]:
            return f"{run_dir}: task {task.id}: recomputed attempts differ from the stored ones; left untouched"
        stored["votes"] = base.votes
    path = os.path.join(run_dir, "selfedits.jsonl")
    shutil.copyfile(path, path + ".bak")
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return f"{run_dir}: votes added to {len(icl)} ICL rows"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.strip().split("\n\n")[0])
    parser.add_argument("run_dir", nargs="+")
    parser.add_argument("--checkpoint", default=None, help="the runs' un-trained policy (default: each config's)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for d in args.run_dir:
        print(add_votes(d, args.checkpoint))
