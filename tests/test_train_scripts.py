"""Training scripts (train-tokenizer, pretrain, sft) on the micro preset, and the demo in a micro configuration."""

import json
import os

import pytest

from nanoseal.arc.gen import feasible_families
from nanoseal.checkpoint import load_model
from nanoseal.cli import main
from nanoseal.common import NanosealError
from nanoseal.seal.selfedit import parse_self_edit, selfedit_conversation
from nanoseal.train.data import mix, selfedit_documents, task_stream, tokenizer_corpus
from nanoseal.train.loop import last_complete_step
from nanoseal.train.presets import get_preset
from nanoseal.train.pretrain import finished, pretrain
from nanoseal.train.sft import sft, valid_selfedit_rate
from nanoseal.train.tok_train import get_or_train_tokenizer


@pytest.fixture(scope="module")
def micro_base(tmp_path_factory):
    """A base dir with the micro preset's tokenizer, base and SFT checkpoints (trained once per module)."""
    base = str(tmp_path_factory.mktemp("micro"))
    preset = get_preset("micro")
    sft(preset, base, seed=0, device="cpu")
    return base


def test_task_stream_is_seeded_and_respects_families_and_sides():
    a = [t.id for _, t in zip(range(20), task_stream(["flip_lr", "recolour"], seed=3, min_side=2, max_side=4))]
    b = [t.id for _, t in zip(range(20), task_stream(["flip_lr", "recolour"], seed=3, min_side=2, max_side=4))]
    assert a == b
    assert {i.split("-")[0] for i in a} == {"flip_lr", "recolour"}
    for _, t in zip(range(20), task_stream(["flip_lr"], seed=1, min_side=2, max_side=4)):
        assert all(2 <= len(g) <= 4 and 2 <= len(g[0]) <= 4 for g, _ in t.train + t.test)
    assert "move_to_corner" not in feasible_families(["move_to_corner", "flip_lr"], 3, 3), "cannot draw 4 pairs"
    with pytest.raises(Exception, match="no task family"):
        feasible_families(["scale_up3"], 11, 12)


def test_selfedit_documents_answer_with_valid_prior_json(tokenizer):
    docs = selfedit_documents(task_stream(["flip_lr"], seed=0, max_side=3), tokenizer, 4096, seed=0)
    for _, (ids, mask) in zip(range(10), docs):
        answer = tokenizer.decode([t for t, m in zip(ids, mask) if m]).replace("<|assistant_end|>", "")
        edit, reason = parse_self_edit(answer)
        assert edit is not None, reason
        assert sum(mask) < len(ids) / 2, "the prompt is not supervised"


def test_selfedit_documents_follow_the_preset_prior(tokenizer):
    def chain_share(prior):
        docs = selfedit_documents(task_stream(["flip_lr"], seed=0, max_side=3), tokenizer, 4096, seed=0, prior=prior)
        edits = [parse_self_edit(tokenizer.decode([t for t, m in zip(ids, mask) if m])
                                 .replace("<|assistant_end|>", ""))[0] for _, (ids, mask) in zip(range(600), docs)]
        return sum(e.chain for e in edits) / len(edits)
    assert chain_share("fields") < chain_share("flat") - 0.05  # chain: P(true) 0.4 against 0.5


def test_mix_follows_weights():
    a, b = iter(lambda: "a", None), iter(lambda: "b", None)
    drawn = [x for _, x in zip(range(2000), mix([a, b], [0.8, 0.2], seed=0))]
    assert 0.75 < drawn.count("a") / 2000 < 0.85


def test_tokenizer_compresses_the_selfedit_instruction(tmp_path):
    preset = get_preset("micro", vocab_size=512, tokenizer_tasks=200)
    tok = get_or_train_tokenizer(str(tmp_path), preset)
    task = next(task_stream(["flip_lr"], seed=0, max_side=3))
    text = selfedit_conversation(task)["messages"][0]["content"]
    assert len(tok.encode(text)) < len(text.encode()) / 2.5, "the instruction is in the tokenizer's corpus"
    assert all(len(tok.encode(d)) == 1 for d in "0123456789"), "one digit per token"
    assert sum(1 for _ in tokenizer_corpus(task_stream(["flip_lr"], 0, max_side=3), 5, 0)) == 10
    assert get_or_train_tokenizer(str(tmp_path), preset).get_vocab_size() == tok.get_vocab_size()  # reused


def test_micro_pretrain_and_sft_give_loadable_checkpoints(micro_base):
    preset = get_preset("micro")
    base_dir = os.path.join(micro_base, "base_checkpoints", f"d{preset.n_layer}")
    sft_dir = os.path.join(micro_base, "chatsft_checkpoints", f"d{preset.n_layer}")
    assert finished(base_dir) and finished(sft_dir)
    model, tok, meta = load_model(sft_dir)
    assert meta["source"] == "sft" and meta["preset"]["name"] == "micro"
    assert model.config.n_layer == preset.n_layer and tok.get_vocab_size() <= model.config.vocab_size
    mtime = os.path.getmtime(os.path.join(base_dir, f"meta_{preset.pretrain_steps:06d}.json"))
    assert pretrain(preset, micro_base, seed=0, device="cpu") == base_dir  # reused, not retrained
    assert os.path.getmtime(os.path.join(base_dir, f"meta_{preset.pretrain_steps:06d}.json")) == mtime


def test_sft_refuses_a_checkpoint_of_another_prior(micro_base, monkeypatch, capsys):
    sft_dir = os.path.join(micro_base, "chatsft_checkpoints", "d2")
    assert sft(get_preset("micro"), micro_base, seed=0, device="cpu") == sft_dir  # the same (flat) prior: reused
    with pytest.raises(NanosealError, match="trained with the 'flat' self-edit prior, not 'fields'"):
        sft(get_preset("micro", selfedit_prior="fields"), micro_base, seed=0, device="cpu")
    monkeypatch.setenv("NANOSEAL_BASE_DIR", micro_base)
    assert main(["sft", "--preset", "micro", "--selfedit-prior", "fields"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use another base dir" in err[0], err
    assert finished(sft_dir)  # nothing was touched


def test_a_checkpoint_of_the_other_attention_is_refused(micro_base, monkeypatch, capsys):
    base_dir = os.path.join(micro_base, "base_checkpoints", "d2")
    with pytest.raises(NanosealError, match="trained with attention across the whole row, not attention within"):
        pretrain(get_preset("micro", doc_attention=True), micro_base, seed=0, device="cpu")
    monkeypatch.setenv("NANOSEAL_BASE_DIR", micro_base)
    for command in ("pretrain", "sft"):
        assert main([command, "--preset", "micro", "--doc-attention"]) != 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "(--doc-attention): use another base dir" in err[0], err
    assert finished(base_dir) and finished(os.path.join(micro_base, "chatsft_checkpoints", "d2"))  # untouched


def test_doc_attention_pretraining_and_sft_record_it(tmp_path):
    preset = get_preset("micro", doc_attention=True)
    sft_dir = sft(preset, str(tmp_path), seed=0, device="cpu")
    base_dir = os.path.join(str(tmp_path), "base_checkpoints", "d2")
    for folder in (base_dir, sft_dir):
        meta = json.load(open(os.path.join(folder, f"meta_{last_complete_step(folder):06d}.json")))
        assert meta["preset"]["doc_attention"] is True and meta["train_config"]["doc_attention"] is True
    assert finished(base_dir, doc_attention=True) and finished(sft_dir, doc_attention=True)


def test_sft_teaches_the_selfedit_format(tmp_path):
    """A micro policy fine-tuned on self-edit documents only writes valid self-edits at a measured rate."""
    preset = get_preset("micro", selfedit_frac=1.0, sft_steps=120)
    sft(preset, str(tmp_path), seed=0, device="cpu")
    model, tok, _ = load_model(os.path.join(str(tmp_path), "chatsft_checkpoints", "d2"))
    rate = valid_selfedit_rate(model, tok, preset, n_tasks=4, k=4, seed=0)
    assert rate >= 0.5, f"only {rate:.0%} of sampled self-edits are valid"


def test_demo_micro_writes_results_and_report(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(tmp_path / "base"))
    run_dir = str(tmp_path / "run")
    argv = ["demo", "--preset", "micro", "--run-dir", run_dir, "--self-edits", "2", "--max-views", "1",
            "--train-tasks", "1", "--eval-tasks", "1", "--families", "preset"]
    assert main(argv) == 0
    results = json.load(open(os.path.join(run_dir, "results.json")))
    # two ReST-EM rounds by default: the policy after round 1 is evaluated too
    # (the row of SEAL's self-edits on the un-trained model only with --split-weight-change)
    assert set(results["methods"]) == {"icl", "ttt_fixed", "ttt_selfedit_round0", "seal_round1", "seal", "oracle"}
    assert len(results["rounds"]) == 2 and set(results["per_task"]) == set(results["methods"])
    assert "curated" in results and results["curation"]["eval"]["pool"]
    assert results["methods"]["seal"]["n_tasks"] == len(get_preset("micro").family_names())
    assert os.path.exists(os.path.join(run_dir, "report.md"))
    out = capsys.readouterr().out
    assert "ttt_selfedit_round0" in out and "report:" in out
    rows = [json.loads(line) for line in open(os.path.join(run_dir, "selfedits.jsonl"))]
    assert any(r["task"].endswith("-s2-4") for r in rows), "demo tasks carry the preset's grid sides"
    assert main(argv) == 0  # resumes: nothing redone
    assert len(open(os.path.join(run_dir, "selfedits.jsonl")).readlines()) == len(rows)


def test_demo_tasks_are_held_out_families_by_default():
    """The demo's default tasks are instances of families the preset never trains on; training and held-out
    instances differ; --families preset draws the preset's own."""
    import argparse

    from nanoseal.arc.gen import EVAL_FAMILIES, parse_instance_id
    from nanoseal.demo import add_args, seal_argv

    parser = argparse.ArgumentParser()
    add_args(parser)
    preset = get_preset("tiny")
    cases = (([], set(preset.reachable)), (["--families", "held-out"], set(EVAL_FAMILIES)),
             (["--families", "preset"], set(preset.family_names())))
    for flags, expected in cases:
        argv = seal_argv(parser.parse_args(["--seed", "3"] + flags), "CKPT", preset)
        train = argv[argv.index("--tasks") + 1].split(",")
        held = argv[argv.index("--eval-tasks") + 1].split(",")
        assert {parse_instance_id(t)["family"] for t in train} == expected, flags
        assert {parse_instance_id(t)["family"] for t in held} == expected, flags
        assert len(train) == 3 * len(expected) and len(held) == 4 * len(expected), "3 training, 4 held-out each"
        assert not set(train) & set(held), "training and held-out instances must differ"
        assert all(parse_instance_id(t)["max_side"] == preset.max_side for t in train + held)
    assert not set(EVAL_FAMILIES) & set(preset.family_names()), "held-out families are never trained on"
    assert set(preset.reachable) < set(EVAL_FAMILIES), "the reachable families are some of the held-out ones"
    micro = get_preset("micro")  # no reachable list: every held-out family that draws its sides
    argv = seal_argv(parser.parse_args([]), "CKPT", micro)
    assert {parse_instance_id(t)["family"] for t in argv[argv.index("--tasks") + 1].split(",")} \
        == set(feasible_families(EVAL_FAMILIES, micro.min_side, micro.max_side))
    argv = seal_argv(parser.parse_args(["--curate-rule", "contrast", "--restem-max-per-task", "4"]), "CKPT", preset)
    assert argv[argv.index("--curate-rule") + 1] == "contrast" and argv[argv.index("--restem-max-per-task") + 1] == "4"
    argv = seal_argv(parser.parse_args(["--no-curate"]), "CKPT", preset)
    assert "--curate" not in argv and "--curate-rule" not in argv
    argv = seal_argv(parser.parse_args(["--eval-temperature", "0.5"]), "CKPT", preset)
    assert argv[argv.index("--eval-temperature") + 1] == "0.5"
    assert "--restem-min-steps" not in argv, "the recipe's own minimum unless asked"
    argv = seal_argv(parser.parse_args(["--restem-min-steps", "400"]), "CKPT", preset)
    assert argv[argv.index("--restem-min-steps") + 1] == "400" and "--restem-head" not in argv
    assert "--restem-head" in seal_argv(parser.parse_args(["--restem-head"]), "CKPT", preset)


def test_unknown_preset_is_one_line_error(capsys):
    assert main(["pretrain", "--preset", "huge"]) == 2
    assert "unknown preset 'huge'" in capsys.readouterr().err


def test_demo_runs_on_two_processes_by_default_on_a_cpu(monkeypatch):
    """The shipped-policy demo on a CPU with >= 2 threads re-runs itself as 2 ranks; one thread, a GPU-less
    --from-scratch, or --procs N decide otherwise."""
    import argparse

    import torch

    from nanoseal.demo import add_args, default_procs

    parser = argparse.ArgumentParser()
    add_args(parser)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert default_procs(parser.parse_args([])) == (1 if torch.cuda.is_available() else 2)
    assert default_procs(parser.parse_args(["--device", "cpu"])) == 2
    assert default_procs(parser.parse_args(["--device", "cpu", "--from-scratch"])) == 1
    assert default_procs(parser.parse_args(["--device", "cpu", "--preset", "micro"])) == 1
    assert default_procs(parser.parse_args(["--procs", "3"])) == 3
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert default_procs(parser.parse_args(["--device", "cpu"])) == 1
