"""
TTT end to end per self-edit: SEAL's reference stack vs nanoseal, on the same GPT, task and self-edits.

The reference, as SEAL's ARC experiment runs it: the TTT data written in SEAL's numpy-like grid text
("[[0 1 2]\\n [3 4 5]]", marc's representer), every example tokenised and padded to the longest example of
the whole TTT dataset, one fresh LoRA per self-edit made with Hugging Face PEFT (`get_peft_model`) on
transformers' NanoChatForCausalLM holding the same weights, trained by `transformers.Trainer` (batch 2,
cosine schedule with warmup, AdamW, grad-norm clip 1.0, the self-edit's learning rate and epochs), then
greedy `generate` of the answer under every inference view (all views of a test input in one left-padded
batch, as SEAL batches its vLLM requests), inverse transforms and voting. nanoseal: `run_ttt` with its
defaults (compact grid text, per-batch padding, its own LoRA loop, KV-cache decoding).

Both sides use the same TTT examples (make_ttt_data: same task, self-edit flags, seed and n_max), LoRA
rank/alpha/targets, batch size, epochs, learning rate, warmup, clip, inference views and answer budget.
The wall time per self-edit counts data building, adapter creation, training and evaluation; converting
the base model to transformers is done once and not counted (SEAL loads its base model once too).

A ladder of variants, each changing one thing from the row above, gives each factor separately:
  1. reference                 PEFT + Trainer, numpy-like text, whole-dataset padding, HF generate
  2. + per-batch padding       the same, each batch padded to its own longest example
  3. + nanoseal stack          nanoseal's loop and engine on the same numpy-like text
  4. + compact grid text       = nanoseal's defaults
  5. + bf16 autocast (option)  nanoseal with TTTConfig(dtype="bfloat16"): not a default on CPU, a proposal; run
                               only where the CPU has native bf16 (bench.common.bf16_native), else skipped, said why
ttt_vs_peft = time(1) / time(4). The ladder runs `--rounds` times (default 3; tasks and variants interleaved, the
order reversed every other pass); the table gives medians over rounds and the ratio is the median of the rounds'
own ratios, each printed: one-shot ratios moved between 2.75x and 3.87x in runs minutes apart (dev/LOG.md).

The Llama-shaped row (`--family llama`): the same comparison, rows 1 and 4, on a random Llama-architecture model
(Llama 3's rope scaling, GQA, SwiGLU, tied embeddings; the tiny preset's width and depth) that transformers writes
as a model folder (bench/tiny_hf.py, Llama 3.2's chat template); nanoseal loads that folder (nanoseal.models.llama)
and the reference trains PEFT on transformers' LlamaForCausalLM from it. Both run SEAL's prompts through the
model's chat template; the LoRA targets are the same modules (q/k/v/o, gate/up/down) on both sides.

    python -m bench.ttt_vs_peft                  # 2 tasks x 3 self-edits x 3 rounds, tiny preset shape, ~2 min
    python -m bench.ttt_vs_peft --tasks 1 --edits 2 --rounds 1 --threads 1
    python -m bench.ttt_vs_peft --family llama --tasks 1 --edits 1 --n-max 4

Needs the bench extra (transformers, peft). The model is randomly initialised (speed does not depend on the
weights): it rarely stops early, so most answers run to the full answer budget on both sides.
"""

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import time
import warnings

import torch

from bench.common import (
    bench_tokenizer,
    bf16_native,
    demo_tasks,
    prior_self_edits,
    random_gpt,
    standalone,
    tiny_config,
)
from nanoseal.arc.augment import inference_views
from nanoseal.arc.grids import parse_grid
from nanoseal.arc.vote import invert_predictions, vote
from nanoseal.interop import BLOCK_KEY_MAP, to_transformers
from nanoseal.lora import match_modules
from nanoseal.models.llama import Llama
from nanoseal.seal.ttt import TTTConfig, _schedule, answer_stop_ids, build_dataset, run_ttt, score, view_prompts

HF_TARGET = dict(BLOCK_KEY_MAP)  # nanoseal module suffix -> transformers module name
# the Llama-shaped row: the tiny preset's width and depth (4 x 128, 4 heads) in Llama 3's architecture
LLAMA_SHAPE = dict(hidden_size=128, intermediate_size=344, num_hidden_layers=4, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=1024)


def peft_targets(model, targets) -> list[str]:
    """The transformers module names PEFT targets for nanoseal's LoRA targets on this model."""
    if isinstance(model, Llama):  # module names are transformers' own (nanochat names mapped by lora_aliases)
        return sorted(set(match_modules(model, targets).values()))
    return sorted({HF_TARGET[t] for t in targets})


# -----------------------------------------------------------------------------
# the reference stack: PEFT + transformers.Trainer + generate


def reference_rows(task, edit, tokenizer, cfg: TTTConfig, max_len: int, seed: int, padding: str) -> tuple[list, dict]:
    """The TTT dataset as Trainer features (input_ids, attention_mask, labels); padding 'dataset' pads every
    example to the longest one of the dataset (SEAL), 'batch' leaves that to the collator."""
    rows, _ = build_dataset(task, edit, tokenizer, cfg, max_len, seed)
    pad = tokenizer.get_bos_token_id()
    longest = max(len(ids) for ids, _ in rows)
    feats = []
    for ids, mask in rows:
        n = longest - len(ids) if padding == "dataset" else 0
        feats.append({"input_ids": ids + [pad] * n, "attention_mask": [1] * len(ids) + [0] * n,
                      "labels": [t if m else -100 for t, m in zip(ids, mask)] + [-100] * n})
    return feats, {"examples": len(rows), "real": sum(len(ids) for ids, _ in rows), "longest": longest}


def batch_collator(pad_id: int):
    """A collator padding each batch to its own longest example (right padding, labels -100)."""
    def collate(features: list[dict]) -> dict:
        T = max(len(f["input_ids"]) for f in features)
        out = {"input_ids": [], "attention_mask": [], "labels": []}
        for f in features:
            n = T - len(f["input_ids"])
            out["input_ids"].append(f["input_ids"] + [pad_id] * n)
            out["attention_mask"].append(f["attention_mask"] + [0] * n)
            out["labels"].append(f["labels"] + [-100] * n)
        return {k: torch.tensor(v) for k, v in out.items()}
    return collate


def reference_train(hf, feats: list, edit, cfg: TTTConfig, seed: int, padding: str, pad_id: int, out_dir: str,
                    targets: list[str] | None = None):
    """A fresh PEFT LoRA on `hf`, trained on feats by transformers.Trainer; returns (peft model, padded tokens).
    targets: transformers module names (default: cfg.targets mapped from nanochat's names)."""
    from peft import LoraConfig, get_peft_model
    from transformers import Trainer, TrainingArguments, default_data_collator

    lcfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                      target_modules=targets or sorted({HF_TARGET[t] for t in cfg.targets}))
    pm = get_peft_model(hf, lcfg)
    total = _schedule(len(feats), edit.num_train_epochs, cfg.batch_size)
    args = TrainingArguments(
        output_dir=out_dir, per_device_train_batch_size=cfg.batch_size, num_train_epochs=edit.num_train_epochs,
        learning_rate=edit.learning_rate, lr_scheduler_type="cosine", warmup_steps=int(cfg.warmup_frac * total),
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, save_strategy="no", report_to="none",
        use_cpu=not torch.cuda.is_available(), disable_tqdm=True, seed=seed, dataloader_pin_memory=False,
        logging_strategy="no")
    collator = default_data_collator if padding == "dataset" else batch_collator(pad_id)
    padded = [0]

    def counting(features):
        batch = collator(features)
        padded[0] += batch["input_ids"].numel()
        return batch

    trainer = Trainer(model=pm, args=args, train_dataset=feats, data_collator=counting)
    trainer.train()
    return pm, padded[0]


@torch.inference_mode()
def reference_predict(pm, tokenizer, task, cfg: TTTConfig, max_len: int, seed: int) -> tuple[list, int]:
    """Voted attempts per test input with HF generate (all views of a test input in one left-padded batch)."""
    pm.eval()
    pad = tokenizer.get_bos_token_id()
    stop = sorted(answer_stop_ids(tokenizer))
    views = inference_views(cfg.colour_views, seed=seed)[: cfg.max_views]
    attempts, generated = [], 0
    for t in range(len(task.test)):
        jobs = view_prompts(task, t, views, tokenizer, cfg, max_len)
        used, prompts = [v for v, _, _ in jobs], [ids for _, ids, _ in jobs]
        budget = max((b for _, _, b in jobs), default=0)
        if not prompts:
            attempts.append([])
            continue
        T = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (T - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
        out = pm.generate(input_ids=ids, attention_mask=mask, max_new_tokens=budget, do_sample=False,
                          eos_token_id=stop, pad_token_id=pad)[:, T:]
        generated += out.numel()
        grids = []
        for row in out.tolist():
            row = row[: next((i for i, tok in enumerate(row) if tok in stop), len(row))]
            grids.append(parse_grid(tokenizer.decode(row), cfg.style)[0])
        preds = invert_predictions(used, grids)
        attempts.append([list(map(list, g)) for g in vote(preds)] if preds else [])
    return attempts, generated


def reference_edit(hf, tokenizer, task, edit, cfg: TTTConfig, seed: int, padding: str,
                   targets: list[str] | None = None) -> dict:
    """One self-edit through the reference stack; wall times of training and evaluation, token counts."""
    max_len = cfg.max_seq_len or hf.config.max_position_embeddings // 10
    pad = tokenizer.get_bos_token_id()
    t0 = time.perf_counter()
    feats, stats = reference_rows(task, edit, tokenizer, cfg, max_len, seed, padding)
    with tempfile.TemporaryDirectory() as out_dir:
        pm, padded = reference_train(hf, feats, edit, cfg, seed, padding, pad, out_dir, targets)
    t1 = time.perf_counter()
    attempts, _ = reference_predict(pm, tokenizer, task, cfg, max_len, seed)
    score([a for a in attempts], [o for _, o in task.test])
    pm.unload()  # the base model back, without the LoRA layers, for the next self-edit
    t2 = time.perf_counter()
    epochs = edit.num_train_epochs
    return {"train": t1 - t0, "eval": t2 - t1, "real": stats["real"] * epochs, "padded": padded}


# -----------------------------------------------------------------------------
# nanoseal


def nanoseal_task(model, tokenizer, task, edits: list, cfg: TTTConfig, seed: int) -> list[dict]:
    """run_ttt on one task's self-edits (K at once, as the demo does); per-edit wall times and token counts."""
    t0 = time.perf_counter()
    results, _ = run_ttt(model, tokenizer, task, edits, cfg, seed=seed)
    wall = time.perf_counter() - t0
    timed_sum = sum(r.seconds_ttt + r.seconds_eval for r in results)
    out = []
    for edit, r in zip(edits, results):
        rows, _ = build_dataset(task, edit, tokenizer, cfg, cfg.max_seq_len or model.config.sequence_len, seed)
        real = sum(len(ids) for ids, _ in rows) * edit.num_train_epochs
        share = wall / timed_sum if timed_sum else 1.0  # spread the untimed remainder (adapter setup) pro rata
        # on CPU adapters train one after another and each step's examples are packed into one row: no padding
        padded = real if model.get_device().type == "cpu" and not cfg.batched else None
        out.append({"train": r.seconds_ttt * share, "eval": r.seconds_eval * share, "real": real, "padded": padded})
    return out


# -----------------------------------------------------------------------------
# the ladder


VARIANTS = [  # name, stack, style, padding, dtype
    ("1. reference: PEFT+Trainer, numpy text, dataset padding", "peft", "seal", "dataset", "float32"),
    ("2. + per-batch padding", "peft", "seal", "batch", "float32"),
    ("3. + nanoseal loop and engine", "nanoseal", "seal", "batch", "float32"),
    ("4. + compact grid text (nanoseal defaults)", "nanoseal", "compact", "batch", "float32"),
    ("5. + bf16 autocast (option, not default)", "nanoseal", "compact", "batch", "bfloat16"),
]


@contextlib.contextmanager
def quiet():
    """Silence transformers/peft/accelerate chatter (warnings, info logs, stdout)."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        levels = {}
        for name in ("transformers", "peft", "accelerate"):
            levels[name] = logging.getLogger(name).level
            logging.getLogger(name).setLevel(logging.ERROR)
        try:
            yield
        finally:
            for name, level in levels.items():
                logging.getLogger(name).setLevel(level)


def llama_setup(folder: str):
    """(nanoseal Llama, transformers LlamaForCausalLM, tokenizer) of a random Llama-shaped folder written there."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from bench.tiny_hf import write_tiny_folder
    from nanoseal.checkpoint import load_model

    hf_logging.disable_progress_bar()
    write_tiny_folder(folder, "llama", config_overrides=LLAMA_SHAPE, init_std=0.02)
    model, tokenizer, _ = load_model(folder)
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model, hf, tokenizer


def run(n_tasks: int = 2, n_edits: int = 3, n_max: int = 16, seed: int = 0, verbose: bool = True,
        family: str = "nanochat", rounds: int = 3) -> dict:
    """Measure the ladder (family "llama": rows 1 and 4 on a Llama-shaped model); print its table; return
    {'ttt_vs_peft': ratio, 'rows': [...]}."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    assert family in ("nanochat", "llama"), f"unknown family {family!r}"
    with tempfile.TemporaryDirectory() as folder:
        with quiet():
            if family == "llama":
                model, hf, tokenizer = llama_setup(folder)
            else:
                tokenizer = bench_tokenizer()
                model = random_gpt(tiny_config(tokenizer.get_vocab_size()))
                hf = to_transformers(model)
        return _measure(model, hf, tokenizer, family, n_tasks, n_edits, n_max, seed, verbose, rounds)


def ladder(names: list[str], per_round: list[dict[int, list[dict]]], ours: int) -> tuple[list[dict], list[float]]:
    """The table's rows from each round's per-edit measurements ({variant: [{train, eval, real, padded}]}): each
    column the median over rounds of the round's per-edit mean; 'step' and 'vs ref' the median over rounds of the
    ratio within a round (the row above's / the reference's time over this row's); and row 0 / row `ours` of
    every round."""
    def mean(meas: list[dict], key: str) -> float | None:
        return None if meas[0][key] is None else sum(m[key] for m in meas) / len(meas)

    totals = [[mean(pe[v], "train") + mean(pe[v], "eval") for pe in per_round] for v in range(len(names))]
    vs_ref = [[a / b for a, b in zip(totals[0], t)] for t in totals]  # per variant, per round
    rows = []
    for v, name in enumerate(names):
        cols = {k: [mean(pe[v], k) for pe in per_round] for k in ("train", "eval", "real", "padded")}
        row = {"name": name, **{k: None if c[0] is None else statistics.median(c) for k, c in cols.items()},
               "total": statistics.median(totals[v]), "vs_ref": statistics.median(vs_ref[v]),
               "step": None if v == 0 else statistics.median(a / b for a, b in zip(totals[v - 1], totals[v]))}
        rows.append(row)
    return rows, vs_ref[ours]


def _measure(model, hf, tokenizer, family: str, n_tasks: int, n_edits: int, n_max: int, seed: int,
             verbose: bool, rounds: int) -> dict:
    """The ladder's timings on one model pair (see run)."""
    variants = VARIANTS if family == "nanochat" else [VARIANTS[0], VARIANTS[3]]
    native, bf16_why = bf16_native()  # without native bf16 the bf16 row crawls (0.09x of fp32): skipped, said why
    skipped = {v[0]: bf16_why for v in variants if v[4] == "bfloat16" and not native}
    variants = [v for v in variants if v[0] not in skipped]
    tasks = demo_tasks(n_tasks)
    edits = prior_self_edits(n_edits, seed)
    base = TTTConfig(n_max=n_max, max_seq_len=model.config.sequence_len)
    targets = peft_targets(model, base.targets)
    # warm-up of both stacks (imports, allocator, first Trainer), untimed
    warm_edit = edits[0].__class__(**{**edits[0].__dict__, "num_train_epochs": 1})
    warm = TTTConfig(n_max=2, max_views=1, max_seq_len=base.max_seq_len)
    with quiet():
        reference_edit(hf, tokenizer, tasks[0], warm_edit, TTTConfig(**{**warm.__dict__, "style": "seal"}), seed,
                       "dataset", targets)
    run_ttt(model, tokenizer, tasks[0], [warm_edit], warm, seed=seed)
    per_round = []  # per round: {variant: [per-edit measurements]}
    for r in range(rounds):  # rounds outer, tasks, then variants (the order reversed every other pass): drifts cancel
        per_edit: dict[int, list] = {v: [] for v in range(len(variants))}
        for i, task in enumerate(tasks):
            order = list(range(len(variants)))
            for v in (order if (r * len(tasks) + i) % 2 == 0 else order[::-1]):
                _, stack, style, padding, dtype = variants[v]
                cfg = TTTConfig(**{**base.__dict__, "style": style, "dtype": dtype})
                if stack == "peft":
                    with quiet():
                        per_edit[v] += [reference_edit(hf, tokenizer, task, e, cfg, seed + i, padding, targets)
                                        for e in edits]
                else:
                    per_edit[v] += nanoseal_task(model, tokenizer, task, edits, cfg, seed + i)
        per_round.append(per_edit)
    ours = len(variants) - 1 if family == "llama" else 3
    rows, ratios = ladder([name for name, *_ in variants], per_round, ours)
    result = {"ttt_vs_peft": statistics.median(ratios), "round_ratios": ratios, "rows": rows, "n_tasks": n_tasks,
              "n_edits": n_edits, "n_max": n_max, "family": family, "skipped": skipped}
    if verbose:
        print_table(result)
    return result


def print_table(result: dict) -> None:
    """The ladder as a table, with each factor."""
    rows = result["rows"]
    shape = "Llama-shaped model" if result.get("family") == "llama" else "tiny preset shape"
    print(f"\nTTT + eval per self-edit: {result['n_tasks']} demo task(s) x {result['n_edits']} self-edits from the "
          f"SFT prior, n_max {result['n_max']}, {shape} (random weights), 7 inference views")
    print(f"{'variant':<52}{'train s':>9}{'eval s':>9}{'total s':>9}{'trained tok':>12}{'padded tok':>11}"
          f"{'step':>8}{'vs ref':>8}")
    for r in rows:
        step = "" if r["step"] is None else f"{r['step']:.2f}x"
        padded = "-" if r["padded"] is None else f"{r['padded']:,.0f}"
        print(f"{r['name']:<52}{r['train']:>9.2f}{r['eval']:>9.2f}{r['total']:>9.2f}{r['real']:>12,.0f}"
              f"{padded:>11}{step:>8}{r['vs_ref']:>7.2f}x")
    for name, why in result.get("skipped", {}).items():
        print(f"{name:<52} SKIPPED: {why}")
    print("trained tok: tokens of the TTT examples x epochs; padded tok: positions computed (the reference's "
          "collator batches;\nnanoseal packs a step's examples into one row); 'step' = the row above's time / "
          "this row's;\nseconds: medians over rounds of each round's mean per self-edit; ratios: medians over rounds "
          "of the ratio within a round")
    ratio = result["ttt_vs_peft"]
    verdict = "met" if ratio >= 3 else "NOT met"
    name = "ttt_vs_peft (Llama-shaped)" if result.get("family") == "llama" else "ttt_vs_peft"
    rounds = result.get("round_ratios", [ratio])
    print(f"{name} = {ratio:.2f}x (reference / nanoseal defaults, row 1 / row 4; median of {len(rounds)} round(s): "
          f"{', '.join(f'{x:.2f}x' for x in rounds)}); goal >= 3x on CPU: {verdict}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--tasks", type=int, default=2, help="demo-like held-out tasks")
    parser.add_argument("--edits", type=int, default=3, help="self-edits per task (from the SFT prior)")
    parser.add_argument("--n-max", type=int, default=16, help="TTT examples per self-edit (tiny preset: 16)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3, help="the ladder run again this many times (medians)")
    parser.add_argument("--family", default="nanochat", choices=["nanochat", "llama"],
                        help="llama: rows 1 and 4 on a random Llama-shaped model loaded from a transformers folder")
    args = parser.parse_args()
    standalone(run, args.threads, args.tasks, args.edits, args.n_max, args.seed, True, args.family, args.rounds)


if __name__ == "__main__":
    main()
