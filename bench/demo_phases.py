"""
`nanoseal demo` wall time broken down by phase, read from what a finished demo left behind (nothing is
re-run): its run directory (config.json, selfedits.jsonl, events.jsonl) and the base directory holding the
tokenizer and the pretraining / SFT checkpoints (found through config.json's checkpoint path).

  install      only if measured by the caller (--install-seconds, e.g. /usr/bin/time around pip install)
  tokenizer    not recorded by the demo (it takes about a second); counted inside "pretrain" below
  pretrain     wall: tokenizer.pkl written -> last base checkpoint meta written (file times);
               the training loop's own time is the checkpoint's train_state.elapsed
  SFT          wall: last base checkpoint -> last SFT checkpoint meta; loop time from its train_state
  seal setup   last SFT checkpoint -> run config.json written (SFT's validity check, loading the policy)
  sampling / TTT / eval
               sums of the per-self-edit seconds in selfedits.jsonl (sample, ttt, eval), all methods; a run on N
               processes (results.json world_size) divides them by N (the ranks work side by side)
  ReST-EM      the policy update: last round-0 TTT event -> the restem event (events.jsonl timestamps)
  report       the last "evaluated task" event -> the report event
  other        the seal phase's wall time (config.json -> report event) minus the parts above

    python -m bench.demo_phases --run-dir ~/.cache/nanoseal/runs/demo-20261124-232241
    python -m bench.demo_phases --run-dir DIR --install-seconds 95

A resumed run, or files copied elsewhere, make the file-time parts meaningless: they are labelled so.
"""

import argparse
import datetime
import json
import os

from nanoseal.checkpoint import find_last_step


def _event_time(event: dict) -> float:
    """An event's timestamp as POSIX seconds."""
    return datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()


def _read_jsonl(path: str) -> list[dict]:
    """The complete JSON lines of a file (a truncated last line is skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _checkpoint(folder: str) -> tuple[float, dict]:
    """(mtime of the last meta_*.json, its train_state) of a checkpoint folder."""
    step = find_last_step(folder)
    path = os.path.join(folder, f"meta_{step:06d}.json")
    with open(path) as f:
        meta = json.load(f)
    return os.path.getmtime(path), meta.get("train_state", {})


def phases(run_dir: str, install_seconds: float | None = None) -> dict:
    """Seconds per phase of a finished demo run (None where not measured), with how each was measured."""
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    t_config = os.path.getmtime(os.path.join(run_dir, "config.json"))
    sft_dir = config["checkpoint"]
    base_dir = os.path.dirname(os.path.dirname(os.path.abspath(sft_dir)))
    tok_path = os.path.join(base_dir, "tokenizer", "tokenizer.pkl")
    trained = os.path.exists(tok_path)  # False: a ready checkpoint (the shipped policy), nothing trained by the demo
    if trained:
        t_tok = os.path.getmtime(tok_path)
        t_base, base_state = _checkpoint(os.path.join(base_dir, "base_checkpoints", os.path.basename(sft_dir)))
        t_sft, sft_state = _checkpoint(sft_dir)
    rows = _read_jsonl(os.path.join(run_dir, "selfedits.jsonl"))
    events = _read_jsonl(os.path.join(run_dir, "events.jsonl"))
    results_path = os.path.join(run_dir, "results.json")
    world = 1
    if os.path.exists(results_path):
        with open(results_path) as f:
            world = json.load(f).get("world_size", 1)
    per = f" / {world} processes" if world > 1 else ""
    sums = {k: sum(r["seconds"].get(k, 0.0) for r in rows) / world for k in ("sample", "ttt", "eval")}
    by_phase = {p: sum(sum(r["seconds"].values()) for r in rows if r["key"][0] == p) / world
                for p in ("curate", "train", "eval")}
    split = (f"curation {by_phase['curate']:.0f} s, training rounds {by_phase['train']:.0f} s, "
             f"held-out {by_phase['eval']:.0f} s")
    ttt_events = [_event_time(e) for e in events if e["db_phase"] == "ttt"]
    restem = [_event_time(e) for e in events if e["db_phase"] == "restem"]
    evals = [_event_time(e) for e in events if e["db_phase"] == "eval"]
    report = [_event_time(e) for e in events if e["db_phase"] == "report"]
    out = {
        "install": (install_seconds, "given with --install-seconds" if install_seconds is not None else
                    "not measured (pass --install-seconds)"),
        "pretrain": (None, f"none: ready policy {sft_dir}"),
        "sft": (None, "none: ready policy"),
        "seal setup": (None, "not measured (ready policy)"),
        "sampling": (sums["sample"], f"sum over {len(rows)} selfedits.jsonl rows{per}"),
        "ttt": (sums["ttt"], f"sum over selfedits.jsonl rows{per} (all parts: {split})"),
        "eval": (sums["eval"], f"sum over selfedits.jsonl rows{per}"),
        "restem": (sum(t - max((x for x in ttt_events if x < t), default=t) for t in restem) if restem else None,
                   f"event times: each of {len(restem)} updates from its round's last TTT event"),
        "report": ((report[-1] - evals[-1]) if report and evals else None, "event times"),
    }
    if trained:
        out["pretrain"] = (t_base - t_tok, f"file times; training loop {base_state.get('elapsed', 0):.0f} s, "
                           f"{base_state.get('tokens', 0):,} tokens")
        out["sft"] = (t_sft - t_base, f"file times; training loop {sft_state.get('elapsed', 0):.0f} s")
        out["seal setup"] = (t_config - t_sft, "file times: SFT validity check, loading the policy")
    seal_wall = (report[-1] - t_config) if report else None
    if seal_wall is not None:
        known = sum(out[k][0] or 0.0 for k in ("sampling", "ttt", "eval", "restem", "report"))
        out["other"] = (seal_wall - known, "seal wall time minus the rows above (task setup, ICL prompts, writes)")
    out["total"] = (sum(v for v, _ in out.values() if v is not None),
                    "sum of the measured rows" + ("" if install_seconds is not None else " (install not included)"))
    return out


def print_table(result: dict, run_dir: str) -> None:
    """The phases as a table."""
    print(f"\ndemo wall time by phase, from {run_dir}")
    total = result["total"][0]
    print(f"{'phase':<12}{'seconds':>9}{'share':>8}  how measured")
    for name, (seconds, how) in result.items():
        if seconds is None:
            print(f"{name:<12}{'-':>9}{'':>8}  {how}")
        else:
            print(f"{name:<12}{seconds:>9.1f}{100 * seconds / total:>7.1f}%  {how}")


def run(run_dir: str | None, install_seconds: float | None = None, verbose: bool = True) -> dict | None:
    """Read and print the phases of a demo run; None (and a line saying so) without a run directory."""
    if not run_dir:
        if verbose:
            print("\ndemo phases: not measured (no --run-dir of a finished `nanoseal demo` given)")
        return None
    result = phases(run_dir, install_seconds)
    if verbose:
        print_table(result, run_dir)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--run-dir", required=True, help="the run directory of a finished `nanoseal demo`")
    parser.add_argument("--install-seconds", type=float, default=None, help="install time, if measured")
    args = parser.parse_args()
    run(args.run_dir, args.install_seconds)


if __name__ == "__main__":
    main()
