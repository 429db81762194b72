"""SEAL's TTT step on a real tiny GPT: batched == sequential, invalid edits, base untouched, scoring."""

import pytest
import torch

from nanoseal.arc.gen import make_task
from nanoseal.lora import lora_layers
from nanoseal.seal.selfedit import SelfEdit
from nanoseal.seal.ttt import TTTConfig, run_ttt, score

from conftest import make_tiny_model


def edit(lr, epochs, basic=True, strategy="train_using_output_tokens"):
    return SelfEdit(basic, False, False, False, strategy, lr, epochs)


@pytest.fixture
def setup(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=512)
    return model, tokenizer, make_task("flip_lr", seed=1)


def test_batched_equals_sequential_and_base_is_untouched(setup):
    model, tokenizer, task = setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    edits = [edit(1e-3, 1), None, edit(5e-3, 2, basic=False, strategy="train_using_all_tokens")]
    cfg = TTTConfig(n_max=6, rank=4, alpha=8, max_views=2, batched=True)
    batched, base = run_ttt(model, tokenizer, task, edits, cfg, seed=0, include_base=True)
    sequential, _ = run_ttt(model, tokenizer, task, edits, TTTConfig(**{**cfg.__dict__, "batched": False}), seed=0)
    assert not lora_layers(model), "adapters must be removed after TTT"
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"base weight {k} changed"
    # the invalid edit: no data, no training, reward 0
    assert batched[1].reward == 0 and batched[1].steps == 0 and batched[1].loss_curve == []
    for b, s in zip(batched, sequential):
        assert b.steps == s.steps and b.n_examples == s.n_examples
        assert len(b.loss_curve) == b.steps
        torch.testing.assert_close(torch.tensor(b.loss_curve), torch.tensor(s.loss_curve), rtol=1e-4, atol=1e-4)
    assert batched[0].steps == 3 and batched[2].steps > 0  # 6 examples / batch 2 x 1 epoch
    assert base is not None and base.nll is not None and base.reward in (0, 1)
    # training moves the adapted model's NLL of the answer away from the base model's
    assert batched[0].nll != base.nll


def test_over_budget_edit_is_skipped(setup):
    model, tokenizer, task = setup
    cfg = TTTConfig(n_max=8, max_steps=5, max_views=1)
    results, base = run_ttt(model, tokenizer, task, [edit(1e-3, 10)], cfg, seed=0)
    assert results[0].skipped.startswith("40 steps over the budget of 5")
    assert results[0].reward == 0 and base is None


def test_score_pass_at_2_and_cell_accuracy():
    truth = ((1, 2), (3, 4))
    assert score([[[[1, 2], [3, 4]], [[0, 0], [0, 0]]]], [truth]) == (True, 1.0)
    solved, acc = score([[[[1, 2], [3, 0]]]], [truth])
    assert not solved and acc == 0.75
    assert score([[]], [truth]) == (False, 0.0)
