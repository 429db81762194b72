"""ReST-EM: selection of successful self-edits, behaviour cloning into the policy, merge, forgetting probe."""

import torch

from nanoseal.arc.gen import make_task
from nanoseal.lora import lora_layers
from nanoseal.seal.restem import RestemConfig, mean_loss, restem_update, select_pairs, sft_documents
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


def test_update_clones_the_edit_merges_and_probes_forgetting(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    tasks = {"t1": make_task("flip_lr", seed=1), "t2": make_task("transpose", seed=2)}
    cfg = RestemConfig(rank=4, alpha=8, learning_rate=1e-2, epochs=4, batch_size=2)
    pairs = [("t1", EDIT), ("t2", EDIT)]
    docs = sft_documents(tokenizer, tasks, pairs, cfg, 2048)
    assert len(docs) == 2 and all(sum(mask) > 0 for _, mask in docs)
    pad = tokenizer.get_bos_token_id()
    before = mean_loss(model, docs, pad)
    weights_before = model.lm_head.weight.clone()
    summary = restem_update(model, tokenizer, tasks, pairs, cfg, seed=0, forgetting_docs=docs[:1])
    assert not lora_layers(model), "the ReST-EM LoRA must be merged away"
    assert summary["steps"] == 4 and len(summary["loss_curve"]) == 4
    assert mean_loss(model, docs, pad) < 0.8 * before, "the policy should now prefer the successful self-edit"
    assert torch.equal(model.lm_head.weight, weights_before), "lm_head is not a LoRA target"
    f = summary["forgetting"]
    assert set(f) == {"before", "after", "degraded"} and f["after"] < f["before"] and not f["degraded"]


def test_round_without_successes_leaves_policy_unchanged(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    summary = restem_update(model, tokenizer, {}, [], RestemConfig(), seed=0)
    assert summary["skipped"].startswith("no successful self-edit")
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
