"""
How far a ReST-EM update moves the policy: the distribution of each self-edit field sampled on held-out
self-edit prompts before and after the update, against the distribution of the kept pairs it clones.

    python -m nanoseal.seal.update_size RUN_DIR                       # the default grid of update sizes
    python -m nanoseal.seal.update_size RUN_DIR --sizes 16:5e-5:8,0:1e-3:4 --samples 8
    python -m nanoseal.seal.update_size RUN_DIR --sizes 16:1e-3:8:80,16:1e-3:8:400   # >= 80 / 400 steps

RUN_DIR is a `nanoseal seal` run with its round-0 training rows written. For each size
(rank:lr:epochs[:min_steps], rank 0 = full fine-tuning) the round-0 policy is copied, updated on the pairs the run
kept, and the self-edits it samples on the run's held-out tasks' prompts are compared with the un-updated policy's
(same seeds) and with the kept pairs. Printed per size: total-variation distance of each field's distribution
(learning rate, epochs, strategy, the four augmentation flags) before -> after, and after -> kept; the kept pairs'
mean token NLL before and after; the valid rate. An update that does not move the policy has TV(before, after) near
0 and TV(after, kept) = TV(before, kept); one that clones the pairs has TV(after, kept) near the sampling noise; one
that collapses has a lower entropy than the kept pairs.

Then the kept pairs' loss split by field (field_nll: nats per self-edit on each field's value tokens,
teacher-forced) before and after, beside the kept set's entropy per field — what fitting the kept marginals would
reach. The token NLL alone hides this: it is dominated by the JSON's fixed tokens, and a field can stay at its
prior (the four true/false flags of the shipped tiny policy stay at ln 2 through an 80-step update, dev/LOG.md
2026-12-02) while another moves past its kept marginal.

The same measurements run inside every ReST-EM round of `nanoseal seal` (rounds/<i>/summary.json "shift" and
"field_nll"; report.md shows the field losses per round).
"""

import argparse
import copy
import math
import os
import re
import sys
from collections import Counter

import torch

from nanoseal.arc.data import Task
from nanoseal.checkpoint import load_model
from nanoseal.common import NanosealError, atomic_write_json, autodetect_device, read_json_object
from nanoseal.engine import Engine
from nanoseal.logs import read_jsonl
from nanoseal.seal.restem import RestemConfig, restem_config, restem_update, select_pairs, sft_documents
from nanoseal.seal.rows import kept_edits
from nanoseal.seal.selfedit import sample_self_edits
from nanoseal.seal.tasks import resolve_tasks

FIELDS = ("learning_rate", "num_train_epochs", "strategy", "use_basic_augmentations", "use_size_augmentations",
          "use_chain_augmentations", "use_repeat_augmentations")
DEFAULT_SIZES = "16:5e-5:8,16:3e-4:8,16:1e-3:8,16:3e-3:8,0:3e-4:4,0:1e-3:4"


def edit_fields(edit: dict) -> dict:
    """The flat field values of a self-edit in SEAL's nested JSON form."""
    dg, tr = edit.get("data_generation") or {}, edit.get("training") or {}
    out = {k: tr.get(k) for k in ("learning_rate", "num_train_epochs", "strategy")}
    out.update({k: bool(dg.get(k)) for k in FIELDS[3:]})
    return out


def field_distributions(edits: list[dict | None]) -> dict:
    """Per field, {value: share} over the valid edits (None = invalid); plus the valid share."""
    valid = [edit_fields(e) for e in edits if e is not None]
    dists = {}
    for f in FIELDS:
        counts = Counter(str(v[f]) for v in valid)
        dists[f] = {k: c / len(valid) for k, c in sorted(counts.items())} if valid else {}
    return {"n": len(edits), "valid": len(valid) / max(1, len(edits)), "fields": dists}


def tv_distance(p: dict, q: dict) -> float:
    """Total-variation distance between two {value: share} distributions (1.0 when one is empty)."""
    if not p or not q:
        return 1.0
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


def entropy(p: dict) -> float:
    """Entropy (nats) of a {value: share} distribution."""
    return -sum(v * math.log(v) for v in p.values() if v > 0)


def field_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character span of each field's value in a self-edit's JSON text (fields it does not contain are left out)."""
    spans = {}
    for f in FIELDS:
        m = re.search(r'"%s"\s*:\s*("[^"]*"|[^,}\s]+)' % f, text)
        if m:
            spans[f] = m.span(1)
    return spans


def field_nll(model, tokenizer, tasks_by_id: dict[str, Task], pairs: list[tuple[str, str]],
              cfg: RestemConfig, notes: dict[str, str] | None = None) -> dict:
    """The pairs' teacher-forced loss split by self-edit field: mean nats per pair on each field's value tokens
    (a token overlapping a value counts for it), "other" for the JSON's fixed tokens and <|assistant_end|>."""
    max_len = cfg.max_len or model.config.sequence_len
    totals = {f: 0.0 for f in FIELDS} | {"other": 0.0}
    n = 0
    was_training = model.training
    model.eval()
    for pair in pairs:
        docs = sft_documents(tokenizer, tasks_by_id, [pair], cfg, max_len, notes)
        if not docs:
            continue
        ids, mask = docs[0]
        first = mask.index(1)
        supervised = ids[first:]  # the self-edit as the chat format renders it, then the end of the turn
        ends = [len(tokenizer.decode(supervised[:j + 1])) for j in range(len(supervised))]  # char end of each token
        at = tokenizer.decode(supervised).find(pair[1])  # where the self-edit's text starts in it (-1: not found)
        spans = {f: (s0 + at, s1 + at) for f, (s0, s1) in field_spans(pair[1]).items()} if at >= 0 else {}
        x = torch.tensor([ids[:-1]], device=model.get_device())
        with torch.no_grad():
            logits = model(x)[0].float()  # (T, vocab)
        nll = -torch.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:], device=x.device)[:, None])[:, 0]
        for j in range(len(supervised)):
            if not mask[first + j]:
                continue
            a, b = (ends[j - 1] if j else 0), ends[j]
            label = next((f for f, (s0, s1) in spans.items() if a < s1 and b > s0), "other")
            totals[label] += nll[first + j - 1].item()
        n += 1
    model.train(was_training)
    return {"n": n, "fields": {k: round(v / max(1, n), 4) for k, v in totals.items()}}


def field_nll_summary(before: dict, after: dict, kept: dict) -> dict:
    """Per-field losses before and after an update (field_nll's "fields"), with the kept set's entropy per field
    (kept: field_distributions of the kept self-edits)."""
    return {"before": before, "after": after,
            "kept_entropy": {f: round(entropy(kept["fields"][f]), 4) for f in FIELDS}}


def sample_distribution(policy, tokenizer, tasks: list[Task], n_per_task: int, seed: int, style: str = "compact",
                        temperature: float = 0.8, notes: dict[str, str] | None = None) -> dict:
    """Field distributions of n_per_task self-edits sampled on each task's prompt (seeded per task; with
    notes[task id] in the prompt if given)."""
    engine = Engine(policy, tokenizer)
    edits = []
    for i, task in enumerate(tasks):
        samples = sample_self_edits(engine, tokenizer, task, n_per_task, temperature=temperature, seed=seed + i,
                                    style=style, max_epochs=10, note=(notes or {}).get(task.id, ""))
        edits += [s["self_edit"].to_json() if s["self_edit"] is not None else None for s in samples]
    return field_distributions(edits)


def shift_summary(before: dict, after: dict, kept: dict) -> dict:
    """Per field: TV(before, after), TV(before, kept), TV(after, kept) and the entropies; their means."""
    per_field = {}
    for f in FIELDS:
        b, a, k = before["fields"][f], after["fields"][f], kept["fields"][f]
        per_field[f] = {"tv_moved": round(tv_distance(b, a), 4), "tv_before_kept": round(tv_distance(b, k), 4),
                        "tv_after_kept": round(tv_distance(a, k), 4), "entropy_before": round(entropy(b), 4),
                        "entropy_after": round(entropy(a), 4), "entropy_kept": round(entropy(k), 4)}
    mean = {key: round(sum(v[key] for v in per_field.values()) / len(per_field), 4)
            for key in ("tv_moved", "tv_before_kept", "tv_after_kept")}
    return {"fields": per_field, "mean": mean, "valid_before": before["valid"], "valid_after": after["valid"],
            "before": before["fields"], "after": after["fields"], "kept": kept["fields"]}


def parse_sizes(text: str) -> list[tuple[int, float, int, int]]:
    """'16:5e-5:8,16:1e-3:8:400' -> [(rank, lr, epochs, min_steps), ...] (min_steps 0 when left out); one line
    naming a bad entry."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().split(":")
        try:
            assert len(parts) in (3, 4)
            rank, lr, epochs = int(parts[0]), float(parts[1]), int(parts[2])
            min_steps = int(parts[3]) if len(parts) == 4 else 0
            assert rank >= 0 and 0 < lr < 1 and math.isfinite(lr) and epochs >= 1 and min_steps >= 0
        except (ValueError, IndexError, AssertionError):
            raise NanosealError(f"--sizes: bad entry {item!r}; expected rank:lr:epochs[:min_steps] (rank >= 0 with "
                                "0 = full fine-tuning, 0 < lr < 1, epochs >= 1, min_steps >= 0)") from None
        sizes.append((rank, lr, epochs, min_steps))
    return sizes


def measure(run_dir: str, sizes: list[tuple[int, float, int, int]], n_per_task: int, device=None) -> list[dict]:
    """For each size: update a copy of the run's round-0 policy on its round-0 kept pairs; the shift it makes."""
    config = read_json_object(os.path.join(run_dir, "config.json"))
    rows, _ = read_jsonl(os.path.join(run_dir, "selfedits.jsonl"))
    rows = [r for r in rows if r["key"][:3] == ["train", 0, "seal"]]
    pairs = select_pairs(rows)
    if not pairs:
        raise NanosealError(f"{run_dir}: no round-0 training self-edit with reward 1: nothing to clone")
    model, tokenizer, _ = load_model(config["checkpoint"], device=autodetect_device(device),
                                     source=config.get("source"))
    train_tasks = {t.id: t for t in resolve_tasks(config["tasks"])}
    held_out = resolve_tasks(config["eval_tasks"])
    kept = field_distributions(kept_edits(rows, pairs))  # what the update clones, as `nanoseal seal` measures it
    seed = 12345
    before = sample_distribution(model, tokenizer, held_out, n_per_task, seed)
    fields_before = field_nll(model, tokenizer, train_tasks, pairs, restem_config("seal"))["fields"]
    out = []
    for rank, lr, epochs, min_steps in sizes:
        policy = copy.deepcopy(model)
        cfg = restem_config("seal", rank=rank, learning_rate=lr, epochs=epochs, min_steps=min_steps)
        summary = restem_update(policy, tokenizer, train_tasks, pairs, cfg, seed=0)
        after = sample_distribution(policy, tokenizer, held_out, n_per_task, seed)
        out.append({"rank": rank, "learning_rate": lr, "epochs": epochs, "min_steps": min_steps,
                    "steps": summary["steps"], "pairs_nll": summary["pairs_nll"],
                    "shift": shift_summary(before, after, kept),
                    "field_nll": field_nll_summary(fields_before,
                                                   field_nll(policy, tokenizer, train_tasks, pairs, cfg)["fields"],
                                                   kept)})
    return out


def print_table(results: list[dict]) -> None:
    """One line per size, then the learning-rate distributions."""
    print(f"{'rank':>4} {'lr':>7} {'ep':>3} {'steps':>5} {'nll before->after':>18} {'TV moved':>9} "
          f"{'TV after-kept':>14} {'TV before-kept':>15} {'H(lr) after':>11} {'valid':>6}")
    for r in results:
        s = r["shift"]
        print(f"{r['rank']:>4} {r['learning_rate']:>7.0e} {r['epochs']:>3} {r['steps']:>5} "
              f"{r['pairs_nll']['before']:>8.3f}->{r['pairs_nll']['after']:<8.3f} {s['mean']['tv_moved']:>9.3f} "
              f"{s['mean']['tv_after_kept']:>14.3f} {s['mean']['tv_before_kept']:>15.3f} "
              f"{s['fields']['learning_rate']['entropy_after']:>11.3f} {s['valid_after']:>6.2f}")
    if results:
        s = results[0]["shift"]
        print(f"learning rates: before {s['before']['learning_rate']}")
        print(f"                kept   {s['kept']['learning_rate']}")
        for r in results:
            print(f"  {_size_name(r)} after {r['shift']['after']['learning_rate']}")
        f = results[0]["field_nll"]
        print("kept pairs' loss by field (nats per self-edit; the kept set's entropy: what fitting it reaches)")
        print(f"{'':>20} " + " ".join(f"{k[:12]:>12}" for k in FIELDS))
        print(f"{'kept entropy':>20} " + " ".join(f"{f['kept_entropy'][k]:>12.3f}" for k in FIELDS))
        print(f"{'before':>20} " + " ".join(f"{f['before'][k]:>12.3f}" for k in FIELDS))
        for r in results:
            print(f"{_size_name(r):>20} " + " ".join(f"{r['field_nll']['after'][k]:>12.3f}" for k in FIELDS))


def _size_name(r: dict) -> str:
    """rank:lr:epochs[:min_steps] of a measured size."""
    return f"{r['rank']}:{r['learning_rate']:g}:{r['epochs']}" + (f":{r['min_steps']}" if r.get("min_steps") else "")


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure update sizes on a run's round-0 pairs and print the table."""
    parser = argparse.ArgumentParser(prog="python -m nanoseal.seal.update_size", description=__doc__.split("\n")[1])
    parser.add_argument("run_dir")
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="rank:lr:epochs[:min_steps],... (rank 0 = full fine-tuning; min_steps: at least so many "
                             "optimizer steps)")
    parser.add_argument("--samples", type=int, default=8, help="self-edits sampled per held-out prompt")
    parser.add_argument("--json", default=None, help="also write the measurements to this file")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    try:
        results = measure(args.run_dir, parse_sizes(args.sizes), args.samples, args.device)
    except NanosealError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_table(results)
    if args.json:
        atomic_write_json(args.json, {"run_dir": args.run_dir, "sizes": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
