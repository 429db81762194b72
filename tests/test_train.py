"""The training loop: packing, a few real steps that lower the loss, and exact resume."""

import pytest
import torch

from nanoseal.checkpoint import load_model
from nanoseal.common import NanosealError
from nanoseal.train.loop import TrainConfig, pack_rows, rank_share, train

from conftest import make_tiny_model


def test_pack_rows_keeps_documents_whole_and_masks_targets():
    docs = iter([([1, 2, 3, 4], [0, 0, 1, 1]), ([5, 6, 7], [1, 1, 1]), ([8, 9, 10, 11, 12], [0, 1, 1, 1, 1])])
    inputs, targets, placed, lengths = next(pack_rows(docs, batch_size=2, seq_len=5, pad_id=0))
    assert inputs.tolist() == [[1, 2, 3, 5, 6], [8, 9, 10, 11, 0]]
    assert targets.tolist() == [[-1, 3, 4, 6, 7], [9, 10, 11, 12, -1]]
    assert placed == 3
    assert lengths == [[3, 2], [4, 1]]  # each document's positions, then the padding


def documents(seed=0):
    g = torch.Generator().manual_seed(seed)
    while True:
        n = int(torch.randint(5, 30, (1,), generator=g))
        ids = torch.randint(0, 8, (n,), generator=g).tolist()  # a tiny repeated vocabulary: learnable
        yield ids, [1] * n


def test_doc_attention_trains_each_document_as_if_alone(tmp_path, tokenizer):
    # the first step's loss is the mean over every target of each document's loss computed on its own; a step is
    # one row of 3 x 40 positions (padding only at its end), documents cut to 40 + 1 tokens as with rows of 40
    cfg = TrainConfig(batch_size=3, seq_len=40, max_steps=1, log_every=100, doc_attention=True)
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size())
    start = {k: v.clone() for k, v in model.state_dict().items()}
    inputs, targets, placed, lengths = next(pack_rows(documents(), 1, 120, 0, longest=40))
    _, row_targets, row_placed, _ = next(pack_rows(documents(), 3, 40, 0))
    assert max(lengths[0]) <= 40 and placed >= row_placed and (targets >= 0).sum() > (row_targets >= 0).sum()
    docs = [d for _, d in zip(range(placed), documents())]
    with torch.no_grad():
        row_loss = model(inputs, targets).item()  # the same rows, attention across them
        total = sum(model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]), loss_reduction="sum").item()
                    for ids, _ in docs)
    alone = total / int((targets >= 0).sum())
    summary = train(model, documents(), cfg, str(tmp_path / "doc"), meta={})
    assert abs(summary["loss_curve"][0] - alone) < 1e-4, (summary["loss_curve"][0], alone)
    assert abs(row_loss - alone) > 1e-3, "across documents the loss differs: the test can tell the two apart"
    # a resumed run ends where an uninterrupted one does
    two = TrainConfig(**{**cfg.__dict__, "max_steps": 2})
    model_a = make_tiny_model(vocab_size=tokenizer.get_vocab_size())
    model_a.load_state_dict(start)
    train(model_a, documents(), two, str(tmp_path / "a"), meta={})
    model_b = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), seed=123)
    model_b.load_state_dict(start)
    train(model_b, documents(), cfg, str(tmp_path / "b"), meta={})
    train(model_b, documents(), two, str(tmp_path / "b"), meta={})
    for (k, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=k)


def test_training_lowers_loss_and_resume_is_exact(tmp_path, tokenizer):
    cfg = TrainConfig(batch_size=4, seq_len=32, max_steps=6, warmdown_frac=0.0, log_every=100)
    model_a = make_tiny_model(vocab_size=tokenizer.get_vocab_size())
    start = model_a(torch.randint(0, 8, (4, 32)), torch.randint(0, 8, (4, 32))).item()
    summary = train(model_a, documents(), cfg, str(tmp_path / "a"), meta={})
    assert summary["step"] == 6 and summary["loss"] < start
    # the same run in two halves, the second resuming from the first's checkpoint
    half = TrainConfig(**{**cfg.__dict__, "max_steps": 3})
    ckpt = str(tmp_path / "base_checkpoints" / "b")
    train(make_tiny_model(vocab_size=tokenizer.get_vocab_size()), documents(), half, ckpt, meta={})
    model_c = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), seed=123)  # different init: must be overwritten
    train(model_c, documents(), cfg, ckpt, meta={})
    for (k, a), c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        torch.testing.assert_close(a, c, rtol=0, atol=1e-6, msg=k)
    tokenizer.save(str(tmp_path / "tokenizer"))
    loaded, _, meta = load_model(ckpt)
    assert meta["step"] == 6 and meta["train_state"]["final"]


def test_rank_share_gives_each_rank_whole_documents_covering_the_row():
    lengths = [30, 5, 50, 12, 3, 20]  # 120 positions, the last 20 the padding segment
    for world in (1, 2, 3, 4, 6):
        shares = [rank_share(lengths, r, world) for r in range(world)]
        assert shares[0][0] == 0 and shares[-1][1] == 120
        for (_, b0, d0), (a1, _, d1) in zip(shares, shares[1:]):
            assert b0 == a1 and d0[1] == d1[0]  # contiguous, no document split or repeated
        for a, b, (i, j) in shares:
            assert sum(lengths[i:j]) == b - a
    with pytest.raises(NanosealError, match="fewer documents than ranks"):
        rank_share([100, 20], 2, 3)
    assert rank_share([30, 5, 50, 12, 3, 20], 1, 3)[:2] == (35, 85)  # the boundaries nearest 40 and 80
