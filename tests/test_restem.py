"""ReST-EM: selection of successful self-edits, behaviour cloning into the policy, merge, forgetting probe."""

import math

import pytest
import torch

from nanoseal.arc.gen import make_task
from nanoseal.arc.grids import format_example
from nanoseal.arc.prompts import demo_text
from nanoseal.common import NanosealError
from nanoseal.lora import DEFAULT_TARGETS, lora_layers
from nanoseal.seal.restem import (
    RestemConfig,
    beats_base,
    forgetting_probe,
    forgetting_summary,
    grid_answer_documents,
    mean_loss,
    restem_update,
    select_pairs,
    select_pairs_topk,
    sft_documents,
)
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT

from conftest import make_tiny_model

EDIT = DEFAULT_SELF_EDIT.canonical()


def test_select_pairs_keeps_reward_1_once():
    rows = [
        {"task": "a", "raw": EDIT, "self_edit": {}, "reward": 1},
        {"task": "a", "raw": EDIT + "  ", "self_edit": {}, "reward": 1},  # same edit again
        {"task": "b", "raw": EDIT, "self_edit": {}, "reward": 0},
        {"task": "c", "raw": "garbage", "self_edit": None, "reward": 1},  # invalid edits never count
        {"task": "d", "raw": EDIT, "self_edit": {}, "reward": 1},
    ]
    assert select_pairs(rows) == [("a", EDIT), ("d", EDIT)]


def test_select_pairs_caps_each_task():
    other = DEFAULT_SELF_EDIT.canonical().replace("0.001", "0.01")
    third = DEFAULT_SELF_EDIT.canonical().replace("0.001", "0.003")
    rows = [{"task": "a", "raw": e, "self_edit": {}, "reward": 1} for e in (EDIT, other, third)]
    rows += [{"task": "b", "raw": EDIT, "self_edit": {}, "reward": 0}, {"task": "b", "raw": third, "self_edit": {},
                                                                        "reward": 1}]
    assert select_pairs(rows, max_per_task=2) == [("a", EDIT), ("a", other), ("b", third)]  # first seen kept
    assert len(select_pairs(rows)) == 4


def _row(task, raw, cell, nll, base_nll=1.0, reward=0, valid=True):
    """A selfedits.jsonl row with just the fields the selections read."""
    return {"task": task, "raw": raw, "self_edit": {} if valid else None, "reward": reward, "cell_accuracy": cell,
            "nll": nll, "base_nll": base_nll}


def test_beats_base():
    assert beats_base(_row("a", "e", 0.5, 0.9))
    assert not beats_base(_row("a", "e", 0.5, 1.0))  # equal is not better
    assert not beats_base(_row("a", "e", 0.5, 1.1))
    assert beats_base(_row("a", "e", 1.0, None, reward=1))  # a solve always counts
    assert not beats_base(_row("a", "e", 0.5, 0.9, base_nll=None))  # nothing to compare with
    assert not beats_base(_row("a", "e", 0.5, float("nan")))
    assert not beats_base(_row("a", "e", 0.5, True))  # a bool is not an NLL


def test_select_pairs_topk_ranks_by_cell_accuracy_then_nll_per_task():
    rows = [
        _row("a", "a-low", 0.2, 0.5),
        _row("a", "a-tie-worse-nll", 0.8, 0.7),
        _row("a", "a-tie-better-nll", 0.8, 0.6),
        _row("a", "a-best", 0.9, 0.95),
        _row("b", "b-only", 0.1, 0.9),
    ]
    assert select_pairs_topk(rows, 2) == [("a", "a-best"), ("a", "a-tie-better-nll"), ("b", "b-only")]
    assert select_pairs_topk(rows, 1) == [("a", "a-best"), ("b", "b-only")]


def test_select_pairs_topk_excludes_invalid_and_rows_not_beating_the_base():
    rows = [
        _row("a", "invalid-but-great", 1.0, 0.1, valid=False),
        _row("a", "invalid-solved", 1.0, 0.1, reward=1, valid=False),
        _row("a", "worse-than-base", 0.9, 1.5),
        _row("a", "no-base", 0.9, 0.5, base_nll=None),
        _row("a", "kept", 0.3, 0.8),
        _row("a", "solved-no-nll", 1.0, None, reward=1),
        _row("c", "c-worse", 0.7, 2.0),
    ]
    assert select_pairs_topk(rows, 5) == [("a", "solved-no-nll"), ("a", "kept")]  # k > available: all of them


def test_select_pairs_topk_ties_duplicates_and_bad_k():
    rows = [_row("a", "first", 0.5, 0.5), _row("a", "second", 0.5, 0.5), _row("a", "first  ", 0.6, 0.4)]
    # exact ties keep row order; a repeated self-edit takes one slot, at its best rank
    assert select_pairs_topk(rows, 2) == [("a", "first"), ("a", "second")]
    assert select_pairs_topk([], 3) == []
    for k in (0, -1, 1.5, True):
        with pytest.raises(NanosealError, match="k >= 1"):
            select_pairs_topk(rows, k)


def test_update_clones_the_edit_merges_and_probes_forgetting(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    tasks = {"t1": make_task("flip_lr", seed=1), "t2": make_task("transpose", seed=2)}
    cfg = RestemConfig(rank=4, alpha=8, learning_rate=1e-2, epochs=4, batch_size=2)
    pairs = [("t1", EDIT), ("t2", EDIT)]
    docs = sft_documents(tokenizer, tasks, pairs, cfg, 2048)
    assert len(docs) == 2 and all(sum(mask) > 0 for _, mask in docs)
    noted = sft_documents(tokenizer, tasks, pairs, cfg, 2048, notes={"t2": "5 of 7 views agree."})
    assert noted[0] == docs[0] and "5 of 7 views agree." in tokenizer.decode(noted[1][0])  # the prompt as sampled
    assert "5 of 7" not in tokenizer.decode(docs[1][0])
    pad = tokenizer.get_bos_token_id()
    before = mean_loss(model, docs, pad)
    weights_before = model.lm_head.weight.clone()
    summary = restem_update(model, tokenizer, tasks, pairs, cfg, seed=0, forgetting_docs=docs[:1])
    assert not lora_layers(model), "the ReST-EM LoRA must be merged away"
    assert summary["steps"] == 4 and len(summary["loss_curve"]) == 4
    assert summary["n_kept"] == 2 and summary["restem_loss"] == round(sum(summary["loss_curve"][-1:]), 5)
    assert mean_loss(model, docs, pad) < 0.8 * before, "the policy should now prefer the successful self-edit"
    assert torch.equal(model.lm_head.weight, weights_before), "lm_head is not a LoRA target"
    f = summary["forgetting"]  # a plain list of documents is one part, "probe"
    assert set(f) == {"before", "after", "degraded", "tolerance", "parts"} and set(f["parts"]) == {"probe"}
    assert f["after"] < f["before"] and not f["degraded"]
    assert {k: f[k] for k in ("before", "after")} == {k: f["parts"]["probe"][k] for k in ("before", "after")}


def test_forgetting_probe_has_selfedit_and_arc_answer_parts(tokenizer):
    tasks = [make_task("flip_lr", seed=s) for s in range(6)]
    cfg = RestemConfig()
    probe = forgetting_probe(tokenizer, tasks, cfg, 2048)
    assert set(probe) == {"selfedit", "arc_answers"}
    assert len(probe["selfedit"]) == 4 and len(probe["arc_answers"]) == 4  # the first 4 tasks only
    for task, (ids, mask) in zip(tasks, probe["arc_answers"]):
        supervised = [t for t, m in zip(ids, mask) if m]
        query, answer = task.train[-1]  # leave-one-out, the last demonstration is the query
        assert tokenizer.decode(supervised[:-1]) == format_example(query, answer, cfg.style)[1]
        prompt = tokenizer.decode([t for t, m in zip(ids, mask) if not m])
        assert demo_text(*task.train[0], cfg.style) in prompt
        assert demo_text(query, answer, cfg.style) not in prompt
    # documents that do not fit are dropped, never cut
    longest = max(len(ids) for ids, _ in probe["arc_answers"])
    assert len(grid_answer_documents(tokenizer, tasks[:4], cfg.style, longest - 1)) < 4
    assert grid_answer_documents(tokenizer, tasks[:4], cfg.style, 16) == []


def test_update_measures_each_probe_part(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    tasks = {"t1": make_task("flip_lr", seed=1), "t2": make_task("transpose", seed=2)}
    cfg = RestemConfig(rank=4, alpha=8, learning_rate=1e-2, epochs=2, batch_size=2)
    probe = forgetting_probe(tokenizer, list(tasks.values()), cfg, 2048)
    probe["empty"] = []  # an empty part is left out
    pad = tokenizer.get_bos_token_id()
    before = {name: mean_loss(model, docs, pad) for name, docs in probe.items() if docs}
    summary = restem_update(model, tokenizer, tasks, [("t1", EDIT)], cfg, seed=0, forgetting_docs=probe)
    f = summary["forgetting"]
    assert set(f["parts"]) == {"selfedit", "arc_answers"}
    for name, part in f["parts"].items():
        assert part["n_docs"] == 2
        assert math.isclose(part["before"], before[name], rel_tol=1e-4)
        assert math.isclose(part["after"], mean_loss(model, probe[name], pad), rel_tol=1e-4)
        assert part["degraded"] == (part["after"] > part["before"] * 1.02)
    lo, hi = sorted(p["before"] for p in f["parts"].values())
    assert lo <= f["before"] <= hi  # over all probe tokens
    assert f["degraded"] == any(p["degraded"] for p in f["parts"].values())


def test_forgetting_summary_flags_a_degraded_part():
    before = {"selfedit": (10.0, 10), "arc_answers": (2.0, 2)}
    after = {"selfedit": (10.0, 10), "arc_answers": (2.2, 2)}  # arc answers: 1.0 -> 1.1
    f = forgetting_summary(before, after, {"selfedit": 3, "arc_answers": 3}, tolerance=0.02)
    assert f["parts"]["arc_answers"] == {"before": 1.0, "after": 1.1, "degraded": True, "n_docs": 3}
    assert not f["parts"]["selfedit"]["degraded"]
    assert f["before"] == 1.0 and f["after"] == round(12.2 / 12, 5)  # token-weighted: under the tolerance
    assert f["degraded"], "a degraded part flags the round"
    assert not forgetting_summary(before, after, {"selfedit": 3, "arc_answers": 3}, tolerance=0.2)["degraded"]


def test_round_without_successes_leaves_policy_unchanged(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    summary = restem_update(model, tokenizer, {}, [], RestemConfig(), seed=0)
    assert summary["skipped"].startswith("no successful self-edit")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_restem_config_recipes_and_overrides():
    from nanoseal.seal.restem import RESTEM_RECIPES, restem_config

    seal = restem_config("seal")
    assert (seal.rank, seal.alpha, seal.learning_rate, seal.epochs, seal.batch_size) == (16, 16.0, 5e-5, 8, 5)
    assert RESTEM_RECIPES["seal"]["learning_rate"] == 5e-5
    cfg = restem_config("seal", learning_rate=1e-3, epochs=None, rank=None)
    assert (cfg.learning_rate, cfg.epochs, cfg.rank, cfg.alpha) == (1e-3, 8, 16, 16.0)
    assert restem_config("seal", rank=4).alpha == 4.0, "alpha follows an overridden rank"
    with pytest.raises(NanosealError, match="unknown ReST-EM recipe"):
        restem_config("nope")


def test_full_fine_tuning_update_moves_every_weight_and_lowers_the_pairs_nll(tokenizer):
    model, tok = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048), tokenizer
    tasks = {f"t{i}": make_task("flip_lr", i, min_side=2, max_side=3) for i in range(3)}
    pairs = [(t, EDIT) for t in tasks]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = RestemConfig(rank=0, learning_rate=1e-3, epochs=3, batch_size=2)
    summary = restem_update(model, tok, tasks, pairs, cfg, seed=0)
    assert summary["steps"] == 3 * 2 and summary["update"]["rank"] == 0
    assert summary["pairs_nll"]["after"] < summary["pairs_nll"]["before"]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "transformer.wte.weight" in changed and len(changed) == len(before), "every weight trains"
    assert not lora_layers(model)


def test_head_target_trains_the_output_head_and_only_with_it(tokenizer):
    # --restem-head: the LoRA also covers lm_head, merged into it afterwards; without it lm_head stays as it was
    from argparse import Namespace

    from nanoseal.seal.run import check_restem_head, resolve_restem

    tasks = {f"t{i}": make_task("flip_lr", i, min_side=2, max_side=2) for i in range(2)}
    pairs = [(t, EDIT) for t in tasks]
    args = Namespace(restem_recipe="tiny", restem_rank=None, restem_lr=None, restem_epochs=None,
                     restem_min_steps=2, grid_style="compact", dtype="auto", restem_replay=0.0, restem_head=False)
    for head in (False, True):
        cfg = resolve_restem(Namespace(**{**vars(args), "restem_head": head}), {})
        assert ("lm_head" in cfg.targets) == head and set(DEFAULT_TARGETS) <= set(cfg.targets)
        model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
        head_before, q_before = model.lm_head.weight.clone(), model.transformer.h[0].attn.c_q.weight.clone()
        restem_update(model, tokenizer, tasks, pairs, cfg, seed=0)
        assert not torch.equal(model.transformer.h[0].attn.c_q.weight, q_before), "the LoRA was merged"
        assert torch.equal(model.lm_head.weight, head_before) != head, f"lm_head trained: expected {head}"
        assert not lora_layers(model)
        check_restem_head(model, cfg, "CKPT")  # a separate head: nothing to say
    model.lm_head = None  # as a model with tied input/output embeddings has no lm_head module
    with pytest.raises(NanosealError, match="--restem-head: CKPT: the model has no separate output head"):
        check_restem_head(model, cfg, "CKPT")
    check_restem_head(model, resolve_restem(args, {}), "CKPT")  # without --restem-head: fine


def test_min_steps_runs_more_epochs_when_few_pairs_are_kept(tokenizer):
    tasks = {f"t{i}": make_task("flip_lr", i, min_side=2, max_side=3) for i in range(3)}
    pairs = [(t, EDIT) for t in tasks]  # 3 docs, batch 2: 2 steps an epoch
    for min_steps, steps, epochs in ((0, 2, 1), (5, 6, 3), (1, 2, 1)):
        model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
        cfg = RestemConfig(rank=4, alpha=8, learning_rate=1e-3, epochs=1, batch_size=2, min_steps=min_steps)
        summary = restem_update(model, tokenizer, tasks, pairs, cfg, seed=0)
        assert summary["steps"] == steps and len(summary["loss_curve"]) == steps, (min_steps, summary["steps"])
        assert summary["update"]["epochs"] == epochs and summary["update"]["min_steps"] == min_steps


def test_replay_mixes_grid_answers_into_the_update(tokenizer):
    """With replay r, round(r x documents) answer documents train alongside the self-edits (more steps, the
    answers' NLL falls); replay 0 is SEAL's update, untouched."""
    tasks = {f"t{i}": make_task("flip_lr", i, min_side=2, max_side=3) for i in range(3)}
    pairs = [(t, EDIT) for t in tasks]  # 3 self-edit documents, batch 2
    answers = grid_answer_documents(tokenizer, list(tasks.values()), "compact", 2048, every_query=True)
    assert len(answers) == sum(len(t.train) for t in tasks.values())
    assert len(grid_answer_documents(tokenizer, list(tasks.values()), "compact", 2048)) == len(tasks)
    pad = tokenizer.get_bos_token_id()
    for replay, n_replay, steps in ((0.0, 0, 2), (2.0, 6, 5)):
        model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
        before = mean_loss(model, answers, pad)
        cfg = RestemConfig(rank=4, alpha=8, learning_rate=1e-2, epochs=1, batch_size=2, replay=replay)
        summary = restem_update(model, tokenizer, tasks, pairs, cfg, seed=0, replay_docs=answers)
        assert summary["n_replay"] == n_replay and summary["steps"] == steps, (replay, summary)
        assert summary["n_docs"] == 3 and summary["update"]["replay"] == replay
        if replay:
            assert mean_loss(model, answers, pad) < before, "training on answers lowers their loss"
