"""The benchmarks measure like against like: SEAL's reference pipeline (PEFT + transformers) and nanoseal's
compute the same loss and gradients on identical batches, packed TTT steps have no padding, demo phases add
up, the decoding paths give the same tokens, the MFU FLOP counts follow their formulas; bf16 rows are skipped
where bf16 is not native (no CPU flag, or slower than fp32 here), the flags line names any restriction, and the
RATIOS line holds the six figures in order. No timing assertions."""

import json
import os

import pytest
import torch

from nanoseal.arc.gen import make_task
from nanoseal.interop import BLOCK_KEY_MAP
from nanoseal.lora import apply_lora, lora_layers, per_adapter_loss
from nanoseal.seal.selfedit import SelfEdit
from nanoseal.seal.ttt import TTTConfig, build_dataset, pack_adapter_rows, train_adapters

from conftest import make_tiny_model

EDIT = SelfEdit(True, False, False, False, "train_using_output_tokens", 1e-3, 1)
EDIT_ALL = SelfEdit(False, False, False, True, "train_using_all_tokens", 3e-3, 2)


@pytest.fixture
def setup(tokenizer):
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=512)
    return model, tokenizer, make_task("flip_lr", seed=1)


def test_reference_rows_padding_and_token_counts(setup):
    pytest.importorskip("transformers")
    from bench.ttt_vs_peft import batch_collator, reference_rows

    model, tokenizer, task = setup
    cfg = TTTConfig(n_max=6, style="seal")
    rows, _ = build_dataset(task, EDIT, tokenizer, cfg, 512, 0)
    feats, stats = reference_rows(task, EDIT, tokenizer, cfg, 512, 0, "dataset")
    longest = max(len(ids) for ids, _ in rows)
    assert stats == {"examples": len(rows), "real": sum(len(ids) for ids, _ in rows), "longest": longest}
    pad = tokenizer.get_bos_token_id()
    for f, (ids, mask) in zip(feats, rows):  # every example padded to the dataset's longest one (SEAL)
        assert len(f["input_ids"]) == len(f["labels"]) == len(f["attention_mask"]) == longest
        assert f["input_ids"][:len(ids)] == ids and sum(f["attention_mask"]) == len(ids)
        assert f["labels"] == [t if m else -100 for t, m in zip(ids, mask)] + [-100] * (longest - len(ids))
    feats, _ = reference_rows(task, EDIT, tokenizer, cfg, 512, 0, "batch")
    batch = batch_collator(pad)(feats[:2])
    assert batch["input_ids"].shape[1] == max(len(ids) for ids, _ in rows[:2])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # transformers' own deprecation notices
def test_reference_and_nanoseal_same_loss_and_gradients(setup):
    peft = pytest.importorskip("peft")
    from transformers import default_data_collator

    from bench.ttt_vs_peft import HF_TARGET, reference_rows
    from nanoseal.interop import to_transformers

    model, tokenizer, task = setup
    cfg = TTTConfig(n_max=4, rank=4, alpha=8, style="seal")
    hf = to_transformers(model)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                                 target_modules=sorted({HF_TARGET[t] for t in cfg.targets})))
    apply_lora(model, rank=4, alpha=8, targets=list(cfg.targets))
    ours_to_hf = dict(BLOCK_KEY_MAP)
    pairs = []  # (nanoseal layer, PEFT layer) with the same adapter weights (B random, so gradients reach A)
    with torch.no_grad():
        for path, layer in lora_layers(model).items():
            layer.lora_B.normal_(0.0, 0.1)
            i, suffix = path.split(".")[2], ".".join(path.split(".")[3:])
            theirs = pm.base_model.model.get_submodule(f"model.layers.{i}.{ours_to_hf[suffix]}")
            theirs.lora_A["default"].weight.copy_(layer.lora_A[0])
            theirs.lora_B["default"].weight.copy_(layer.lora_B[0])
            pairs.append((layer, theirs))
    for edit in (EDIT, EDIT_ALL):
        rows, _ = build_dataset(task, edit, tokenizer, cfg, 512, 0)
        feats, _ = reference_rows(task, edit, tokenizer, cfg, 512, 0, "dataset")
        pm.zero_grad()
        model.zero_grad()
        loss_ref = pm(**default_data_collator(feats[:2])).loss  # padded batch of 2, HF shifts the labels
        inputs, targets, doc_lens = pack_adapter_rows([rows[:2]], tokenizer.get_bos_token_id())
        loss, _ = per_adapter_loss(model, inputs, targets, torch.tensor([0]), 1, doc_lens=doc_lens)
        torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
        loss_ref.backward()
        loss.backward()
        for ours, theirs in pairs:
            torch.testing.assert_close(ours.lora_A.grad[0], theirs.lora_A["default"].weight.grad, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(ours.lora_B.grad[0], theirs.lora_B["default"].weight.grad, rtol=1e-4, atol=1e-6)


def test_packed_ttt_steps_have_no_padding(setup):
    model, tokenizer, task = setup
    cfg = TTTConfig(n_max=4, rank=4, alpha=8, batched=False)
    edits = [EDIT, EDIT_ALL]
    datasets = [build_dataset(task, e, tokenizer, cfg, 512, 0)[0] for e in edits]
    epochs = [e.num_train_epochs for e in edits]
    apply_lora(model, rank=4, alpha=8, n_adapters=2)
    stats = {}
    train_adapters(model, datasets, [1e-3, 1e-3], epochs, cfg, 0, tokenizer.get_bos_token_id(), stats=stats)
    tokens = sum((len(ids) - 1) * ep for d, ep in zip(datasets, epochs) for ids, _ in d)
    assert stats["positions"] == stats["tokens"] == tokens
    assert stats["steps"] == sum(2 * ep for ep in epochs)  # 4 examples / batch 2 per epoch
    targets = sum(sum(mask[1:]) * ep for d, ep in zip(datasets, epochs) for _, mask in d)
    assert stats["targets"] == targets


def test_demo_phases_from_a_run_directory(tmp_path):
    from bench.demo_phases import phases

    base = tmp_path / "base"
    for folder, step, elapsed in (("base_checkpoints/d4", 100, 290.0), ("chatsft_checkpoints/d4", 10, 55.0)):
        os.makedirs(base / folder)
        (base / folder / f"model_{step:06d}.pt").write_bytes(b"")
        (base / folder / f"meta_{step:06d}.json").write_text(json.dumps({"train_state": {"elapsed": elapsed}}))
    os.makedirs(base / "tokenizer")
    (base / "tokenizer" / "tokenizer.pkl").write_bytes(b"")
    run = tmp_path / "run"
    os.makedirs(run)
    (run / "config.json").write_text(json.dumps({"checkpoint": str(base / "chatsft_checkpoints/d4")}))
    rows = [{"key": [phase, 0, "m", "t", 0], "seconds": {"sample": 0.5, "ttt": 2.0, "eval": 0.25}}
            for phase in ("curate", "train", "train", "eval")]
    (run / "selfedits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    events = [("ttt", "2026-01-01T00:10:00.000Z"), ("restem", "2026-01-01T00:10:05.000Z"),
              ("eval", "2026-01-01T00:10:30.000Z"), ("report", "2026-01-01T00:10:31.500Z")]
    (run / "events.jsonl").write_text("".join(json.dumps({"db_phase": p, "timestamp": t}) + "\n" for p, t in events)
                                      + '{"truncated')
    t0 = 1767225000.0  # 2026-01-01T00:00:00Z - 600 s
    for path, t in ((base / "tokenizer/tokenizer.pkl", t0), (base / "base_checkpoints/d4/meta_000100.json", t0 + 300),
                    (base / "chatsft_checkpoints/d4/meta_000010.json", t0 + 360), (run / "config.json", t0 + 361)):
        os.utime(path, (t, t))
    p = phases(str(run), install_seconds=30.0)
    assert p["install"][0] == 30.0
    assert p["pretrain"][0] == pytest.approx(300.0) and p["sft"][0] == pytest.approx(60.0)
    assert p["seal setup"][0] == pytest.approx(1.0)
    assert (p["sampling"][0], p["ttt"][0], p["eval"][0]) == (2.0, 8.0, 1.0)
    assert p["restem"][0] == pytest.approx(5.0) and p["report"][0] == pytest.approx(1.5)
    seal_wall = 1767225600.0 + 631.5 - (t0 + 361)
    assert p["other"][0] == pytest.approx(seal_wall - (2.0 + 8.0 + 1.0 + 5.0 + 1.5))
    assert p["total"][0] == pytest.approx(30.0 + 300.0 + 60.0 + 1.0 + seal_wall)
    assert "curation 3 s, training rounds 6 s, held-out 3 s" in p["ttt"][1]


def test_demo_phases_two_rounds_and_a_ready_policy(tmp_path):
    """Each ReST-EM update counts from its own round's last TTT event; a shipped policy has no training phases."""
    from bench.demo_phases import phases

    run = tmp_path / "run"
    os.makedirs(run)
    (run / "config.json").write_text(json.dumps({"checkpoint": str(tmp_path / "policies" / "tiny")}))
    (run / "selfedits.jsonl").write_text(json.dumps({"key": ["eval", 0, "icl", "t", 0], "seconds": {"ttt": 1.0}}))
    events = [("ttt", "00:10:00"), ("restem", "00:10:04"), ("ttt", "00:11:00"), ("restem", "00:11:06"),
              ("eval", "00:12:00"), ("report", "00:12:01")]
    (run / "events.jsonl").write_text("".join(json.dumps({"db_phase": p, "timestamp": f"2026-01-01T{t}.000Z"}) + "\n"
                                              for p, t in events))
    t = 1767225600.0 + 540  # config.json written at 00:09:00
    os.utime(run / "config.json", (t, t))
    p = phases(str(run))
    assert p["restem"][0] == pytest.approx(4.0 + 6.0)
    assert p["pretrain"][0] is None and p["sft"][0] is None and p["seal setup"][0] is None
    assert p["ttt"][0] == 1.0 and p["total"][0] == pytest.approx(181.0)  # the seal phase's wall time, 00:09-00:12:01
    (run / "results.json").write_text(json.dumps({"world_size": 2}))  # a run on 2 processes: the ranks side by side
    p = phases(str(run))
    assert p["ttt"][0] == 0.5 and "/ 2 processes" in p["ttt"][1]


def test_mfu_pretraining_rate_counts_the_preset_batch():
    from bench import mfu
    from nanoseal.train.presets import get_preset

    preset = get_preset("tiny")
    rows = preset.pretrain_rows or preset.batch_size
    w = mfu.pretrain_rate("float32", steps=1, vocab=64, doc_attention=False)
    assert f"{rows} x {preset.sequence_len} tokens/step" in w["what"] and w["what"].endswith("--no-doc-attention")
    assert 0 < w["tokens"] <= rows * preset.sequence_len  # one step: at most one batch of targets
    assert w["flops"] > 6 * w["tokens"] and w["seconds"] > 0 and "attn_flops" in w
    d = mfu.pretrain_rate("float32", steps=1, vocab=64)  # the preset's: one row of documents
    assert d["doc_attention"] == preset.doc_attention
    assert f"1 x {rows * preset.sequence_len} tokens/step" in d["what"] and "attn_flops" not in d
    assert w["tokens"] < d["tokens"] <= rows * preset.sequence_len  # less padding in one row than in four


def test_mfu_attention_count_is_nanochats():
    # the +attn column counts attention as the model's own estimate_flops (nanochat's formula) does at full length
    from bench import mfu
    from nanoseal.models.nanochat import GPT, GPTConfig
    config = GPTConfig(sequence_len=256, vocab_size=64, n_layer=3, n_head=4, n_kv_head=4, n_embd=64)
    model = GPT(config)
    matmul_params = sum(p.numel() for p in model.transformer.h.parameters()) + model.lm_head.weight.numel()
    assert mfu.attention_flops(config, 256) == model.estimate_flops() - 6 * matmul_params
    assert mfu.attention_flops(config, 128) * 2 == mfu.attention_flops(config, 256)


def test_mfu_ttt_rate_counts_what_lora_training_computes():
    from bench import mfu

    r = mfu.ttt_rate("float32", n_edits=1, n_max=2)
    assert r["model"] == "tiny" and r["tokens"] > 0 and r["seconds"] > 0
    assert r["flops"] > 4 * 100_000 * r["tokens"]  # the tiny preset's blocks hold ~786k parameters


def test_bf16_rows_skipped_without_native_bf16(monkeypatch):
    from bench import common

    measured = []
    monkeypatch.setattr(common, "_BF16", None)
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(common, "matmul_rate", lambda *a, **k: measured.append(a) or 1e9)
    native, why = common.bf16_native()
    assert not native and "avx512_bf16" in why and "amx_bf16" in why and not measured  # no flag: nothing timed
    # the flag is there, but torch runs bf16 slower than fp32 (e.g. restricted to AVX2 kernels): not native either
    rates = {torch.float32: 90e9, torch.bfloat16: 2e9}
    monkeypatch.setattr(common, "_BF16", None)
    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(common, "matmul_rate", lambda dtype, *a, **k: rates[dtype])
    native, why = common.bf16_native()
    assert not native and "2 GFLOP/s" in why and "90 GFLOP/s" in why
    rates[torch.bfloat16] = 400e9
    monkeypatch.setattr(common, "_BF16", None)
    assert common.bf16_native()[0]


def test_isa_line_names_flags_and_restrictions(monkeypatch):
    from bench import common

    monkeypatch.setattr(common, "cpu_flags", lambda: {"avx2", "fma", "sse4_2", "avx512f", "amx_tile"})
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    line = common.isa_line()
    assert "avx2" in line and "avx512f" in line and "amx_tile" in line and "sse4_2" not in line
    assert "restricted by ONEDNN_MAX_CPU_ISA=AVX2" in line
    assert torch.backends.cpu.get_cpu_capability() in line


def test_decode_paths_agree_and_ratios_line():
    pytest.importorskip("transformers")
    from bench import all as bench_all
    from bench import decode

    r = decode.run(n_layer=2, n_embd=64, n_head=4, vocab_size=128, batch=2, prompt_len=12, new_tokens=6,
                   repeats=1, verbose=False)
    assert r["agree_nocache"] and r["agree_general"] and r["agree_hf"] == 1.0
    assert r["decode_vs_hf"] > 0 and r["step_vs_general"] > 0
    r = decode.run(n_layer=1, n_embd=32, n_head=2, vocab_size=64, batch=1, prompt_len=5, new_tokens=3, repeats=1,
                   verbose=False, nocache=False)
    assert r["agree_nocache"] is None and r["cache_vs_nocache"] is None and r["agree_general"]
    line = bench_all.ratios_line(3.1, None, {"mfu_fp32_pretrain": 0.2, "mfu_fp32_ttt": 0.15,
                                             "pretrain_tok_s": 5600.4}, 0.8)
    assert line == ("RATIOS ttt_vs_peft=3.10 decode_vs_hf=nan mfu_fp32_pretrain=0.200 mfu_fp32_ttt=0.150 "
                    "kbatch_vs_seq=0.80 pretrain_tok_s=5600")


def test_ttt_ladder_takes_medians_over_rounds_and_pairs_ratios_within_a_round():
    from bench.ttt_vs_peft import ladder

    def edit(total, real=10, padded=None):
        return {"train": total - 1.0, "eval": 1.0, "real": real, "padded": padded}

    # rounds x variants: the reference (variant 0) and ours (variant 1); one slow round for ours
    per_round = [{0: [edit(6.0), edit(8.0)], 1: [edit(2.0, padded=10), edit(2.0, padded=10)]},
                 {0: [edit(9.0), edit(9.0)], 1: [edit(3.0, padded=10), edit(3.0, padded=10)]},
                 {0: [edit(7.0), edit(7.0)], 1: [edit(7.0, padded=10), edit(7.0, padded=10)]}]
    rows, ratios = ladder(["ref", "ours"], per_round, ours=1)
    assert ratios == [3.5, 3.0, 1.0]  # each round's own ref / ours
    assert rows[0]["total"] == 7.0 and rows[1]["total"] == 3.0  # medians of the rounds' per-edit means
    assert rows[1]["vs_ref"] == 3.0 and rows[1]["step"] == 3.0 and rows[0]["step"] is None
    assert rows[0]["padded"] is None and rows[1]["padded"] == 10 and rows[1]["eval"] == 1.0
