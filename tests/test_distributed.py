"""torchrun with 2 gloo processes on the CPU: data-parallel training and ReST-EM match one process, the work
queue hands items to whichever rank is free, a distributed `nanoseal seal` run writes the same rows and table as
a single-process one, and a rank that dies stops the job within a bounded time, after which re-running resumes
without losing or duplicating work."""

import json
import os
import subprocess
import sys
import time

import pytest
import torch

from nanoseal import dist
from nanoseal.checkpoint import save_checkpoint

from conftest import make_tiny_model

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SEAL_FLAGS = ["--tasks", "flip_lr-1", "--eval-tasks", "flip_ud-5,transpose-3", "--rounds", "1", "--self-edits", "2",
              "--n-max", "4", "--max-views", "1", "--no-oracle", "--seed", "0"]
TIMEOUT_S = 20  # NANOSEAL_DIST_TIMEOUT for the children: a collective that gets no answer fails after this


def child_env(**extra) -> dict:
    """The environment of a child process: one thread each, no inherited torchrun variables."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT", "NANOSEAL_TEST_DIE_AFTER")}
    env.update(OMP_NUM_THREADS="1", NANOSEAL_DIST_TIMEOUT=str(TIMEOUT_S), PYTHONPATH=TESTS_DIR, **extra)
    return env


def launch(args: list[str], nproc: int, timeout: float = 240, **env) -> subprocess.CompletedProcess:
    """Run `python <args>` on one process, or under torchrun (--standalone) with nproc processes."""
    prefix = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    return subprocess.run(prefix + args, env=child_env(**env), capture_output=True, text=True, timeout=timeout)


def content(run_dir: str) -> list[str]:
    """selfedits.jsonl rows as comparable strings (order aside), wall-clock timings left out."""
    with open(os.path.join(run_dir, "selfedits.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    keys = [tuple(r["key"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate keys in selfedits.jsonl"
    return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in rows)


def methods(run_dir: str) -> dict:
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)["methods"]


WORKER = '''
import json, os, random, sys
from dataclasses import replace
import torch
from conftest import CORPUS, make_tiny_model
from nanoseal import dist
from nanoseal.arc.gen import make_task
from nanoseal.seal.restem import RestemConfig, restem_update
from nanoseal.seal.selfedit import DEFAULT_SELF_EDIT, random_self_edit_text
from nanoseal.tokenizer import Tokenizer
from nanoseal.train.loop import TrainConfig, train

out = sys.argv[1]
dist.init()
rank = dist.rank()

def documents(seed):  # a deterministic stream of documents of varied lengths and loss masks
    rng = random.Random(seed)
    while True:
        n = rng.randint(4, 40)
        yield [rng.randrange(320) for _ in range(n)], [int(rng.random() < 0.7) for _ in range(n)]

# pretraining: 2 steps, then a resumed call up to 4 (constant learning rate, so the split does not matter)
ckpt = os.path.join(out, "ckpt")
cfg = TrainConfig(batch_size=4, seq_len=48, max_steps=2, warmdown_frac=0.0, log_every=1)
model = make_tiny_model(seed=0).train()
first = train(model, documents(0), cfg, ckpt, {"source": "test"})
model = make_tiny_model(seed=1).train()  # different weights: the resume must load the checkpoint's
second = train(model, documents(0), replace(cfg, max_steps=4), ckpt, {"source": "test"})
# attention within each document (--doc-attention): a step is one row of documents, each rank its share of them
doc_model = make_tiny_model(seed=3).train()
doc = train(doc_model, documents(1), replace(cfg, doc_attention=True), os.path.join(out, "ckpt_doc"), {})

# ReST-EM: 7 documents in batches of 3 (the last batch leaves rank 1 without a document)
tok = Tokenizer.train_from_iterator(iter(CORPUS), vocab_size=320)
policy = make_tiny_model(vocab_size=tok.get_vocab_size(), sequence_len=2048, seed=2)
tasks = [make_task("flip_lr", s, min_side=2, max_side=3) for s in range(7)]
rng = random.Random(0)
pairs = [(t.id, DEFAULT_SELF_EDIT.canonical() if i % 2 else random_self_edit_text(rng)) for i, t in enumerate(tasks)]
summary = restem_update(policy, tok, {t.id: t for t in tasks}, pairs,
                        RestemConfig(learning_rate=1e-3, epochs=2, batch_size=3, rank=4, alpha=4), seed=0,
                        forgetting_docs={"probe": []})
torch.save({"train": model.state_dict(), "restem": policy.state_dict(), "doc": doc_model.state_dict()},
           os.path.join(out, f"weights_{rank}.pt"))
if rank == 0:
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"train": first["loss_curve"] + second["loss_curve"], "steps": second["step"],
                   "doc": doc["loss_curve"],
                   "restem": summary["loss_curve"], "n_docs": summary["n_docs"]}, f)
dist.teardown()
'''


@pytest.mark.slow
def test_distributed_training_and_restem_match_single_process(tmp_path):
    """2 ranks x half the rows == 1 process x the global batch: per-step losses, final weights (pretraining with
    a resume in the middle, pretraining with attention within documents, and the ReST-EM LoRA update); every rank
    ends with the same weights."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    runs = {}
    for nproc in (1, 2):
        out = tmp_path / f"nproc{nproc}"
        out.mkdir()
        proc = launch([str(worker), str(out)], nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs[nproc] = (json.loads((out / "result.json").read_text()),
                       [torch.load(out / f"weights_{r}.pt", weights_only=True) for r in range(nproc)])
        assert sorted(os.listdir(out / "ckpt")) == ["meta_000002.json", "meta_000004.json", "model_000002.pt",
                                                   "model_000004.pt", "optim_000002_rank0.pt",
                                                   "optim_000004_rank0.pt"], "rank 0 alone writes checkpoints"
    (single, [w1]), (multi, [w2a, w2b]) = runs[1], runs[2]
    assert multi["steps"] == single["steps"] == 4 and multi["n_docs"] == single["n_docs"] == 7
    assert len(single["train"]) == 4 and len(single["restem"]) == 2 * 3
    torch.testing.assert_close(torch.tensor(multi["train"]), torch.tensor(single["train"]), rtol=1e-4, atol=0)
    assert len(single["doc"]) == 2 and single["doc"] != single["train"][:2]
    torch.testing.assert_close(torch.tensor(multi["doc"]), torch.tensor(single["doc"]), rtol=1e-4, atol=0)
    torch.testing.assert_close(torch.tensor(multi["restem"]), torch.tensor(single["restem"]), rtol=1e-4, atol=1e-5)
    for part in ("train", "restem", "doc"):
        for k in w1[part]:
            assert torch.equal(w2a[part][k], w2b[part][k]), f"ranks disagree on {part} {k}"
            torch.testing.assert_close(w2a[part][k], w1[part][k], rtol=1e-3, atol=3e-4, msg=f"{part} {k}")


QUEUE_WORKER = '''
import json, sys, time
from nanoseal import dist
from nanoseal.seal.run import spread

dist.init()
order = []  # rank 0: the items as handed on

def work(item):  # item 0 is slow; the others are quick
    time.sleep(2.0 if item == 0 else 0.05)
    return [{"item": item, "rank": dist.rank()}]

for desc in ("first", "second"):  # two queues in a row: each has its own counter
    spread(list(range(8)), work, lambda item, rows: order.append((item, rows)), desc)
if dist.rank() == 0:
    with open(sys.argv[1], "w") as f:
        json.dump(order, f)
dist.teardown()
'''


def test_spread_is_a_shared_queue(tmp_path):
    """Under 2 ranks a rank takes the next item as soon as it is free: while one works on the slow item the other
    does all the rest; rank 0 hands every item on exactly once, in item order, with the rows of whoever did it."""
    worker = tmp_path / "queue_worker.py"
    worker.write_text(QUEUE_WORKER)
    out = tmp_path / "order.json"
    proc = launch([str(worker), str(out)], 2, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    order = json.loads(out.read_text())
    for half in (order[:8], order[8:]):
        assert [item for item, _ in half] == list(range(8)), "handed on in item order, each once"
        assert all(rows == [{"item": item, "rank": rows[0]["rank"]}] for item, rows in half)
        slow = half[0][1][0]["rank"]
        others = {rows[0]["rank"] for _, rows in half[1:]}
        assert others == {1 - slow}, f"the rank on the slow item took no other (ranks of the rest: {others})"


@pytest.fixture(scope="module")
def seal_setup(tmp_path_factory, tokenizer):
    """A tiny random policy checkpoint and a clean single-process run of SEAL_FLAGS on it (the reference)."""
    root = tmp_path_factory.mktemp("dist_seal")
    model = make_tiny_model(vocab_size=tokenizer.get_vocab_size(), sequence_len=2048)
    tokenizer.save(str(root / "base" / "tokenizer"))
    save_checkpoint(str(root / "base" / "base_checkpoints" / "d2"), 1, model.state_dict(), None,
                    {"model_config": model.config.to_dict(), "step": 1})
    checkpoint, ref = str(root / "base"), str(root / "single")
    proc = launch(["-m", "nanoseal", "seal", "--checkpoint", checkpoint, "--run-dir", ref, *SEAL_FLAGS], 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return checkpoint, ref, root


def test_distributed_seal_run_matches_single_process(seal_setup):
    checkpoint, ref, root = seal_setup
    run_dir = str(root / "two_ranks")
    proc = launch(["-m", "nanoseal", "seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *SEAL_FLAGS], 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert content(run_dir) == content(ref)
    assert methods(run_dir) == methods(ref)
    assert proc.stdout.count("run directory:") == 1, "rank 0 alone prints the table"
    assert sorted(os.listdir(run_dir)) == sorted(os.listdir(ref))


def test_spawn_local_runs_the_ranks_without_torchrun(seal_setup, monkeypatch):
    """dist.spawn_local (what `nanoseal demo --procs N` uses) starts the ranks itself: the same rows and table as
    one process; a failing command's status comes back."""
    checkpoint, ref, root = seal_setup
    for k, v in child_env().items():
        monkeypatch.setenv(k, v)
    run_dir = str(root / "spawned")
    assert dist.spawn_local(["seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *SEAL_FLAGS], 2, 1) == 0
    assert content(run_dir) == content(ref)
    assert methods(run_dir) == methods(ref)
    assert dist.spawn_local(["seal", "--checkpoint", str(root / "missing"), *SEAL_FLAGS], 2, 1) == 2


@pytest.mark.slow
def test_dead_rank_stops_the_job_and_a_rerun_resumes(seal_setup):
    """Rank 1 exits mid-run (after 1 work item): the job ends non-zero within a bounded time, the finished rows
    stay, and the same command run again finishes with the single-process rows, none duplicated."""
    checkpoint, ref, root = seal_setup
    run_dir = str(root / "killed")
    argv = ["-m", "nanoseal", "seal", "--checkpoint", checkpoint, "--run-dir", run_dir, *SEAL_FLAGS]
    t0 = time.time()
    proc = launch(argv, 2, timeout=120, NANOSEAL_TEST_DIE_AFTER="1")
    took = time.time() - t0
    assert proc.returncode != 0 and took < 90, (proc.returncode, took)
    assert "NANOSEAL_TEST_DIE_AFTER=1 reached" in proc.stderr
    assert "re-run the same command to resume" in proc.stderr, "the surviving rank says what to do, in one line"
    assert not os.path.exists(os.path.join(run_dir, "results.json"))
    path = os.path.join(run_dir, "selfedits.jsonl")
    with open(path) as f:
        finished = f.read()
    assert finished.count("\n") >= 2, "the rows gathered before the death are kept"  # the training task's K rows
    proc = launch(argv, 2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(path) as f:
        assert f.read().startswith(finished), "finished rows are neither redone nor rewritten"
    assert content(run_dir) == content(ref)
    assert methods(run_dir) == methods(ref)


def test_helpers_are_no_ops_on_one_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not dist.is_distributed() and dist.world_size() == 1
    assert dist.broadcast_object(3) == 3
    t = torch.ones(2)
    assert dist.all_reduce(t) is t and torch.equal(t, torch.ones(2))
    dist.init()  # nothing to join
    assert not torch.distributed.is_initialized()
    assert dist.local_device("cuda") == torch.device("cuda")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert dist.local_device("cuda") == torch.device("cuda", 1) and dist.local_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_bad_timeout_is_one_line_error(monkeypatch, value):
    from nanoseal.common import NanosealError

    monkeypatch.setenv(dist.TIMEOUT_ENV, value)
    with pytest.raises(NanosealError, match=dist.TIMEOUT_ENV):
        dist.timeout_seconds()


def test_other_commands_refuse_torchrun(monkeypatch, capsys):
    from nanoseal.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main(["arc", "gen", "--list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("[rank 1] nanoseal arc: error: runs on one process") and err.count("\n") == 1


def rows_close(a_dir: str, b_dir: str) -> None:
    """selfedits.jsonl of two runs hold the same keys and discrete fields; floats agree to 1e-3 (after a
    data-parallel ReST-EM update the policies differ by float rounding)."""
    def load(run_dir):
        with open(os.path.join(run_dir, "selfedits.jsonl")) as f:
            return {tuple(r["key"]): r for r in map(json.loads, f)}

    a, b = load(a_dir), load(b_dir)
    assert set(a) == set(b)
    for key, row in a.items():
        other = b[key]
        for field, value in row.items():
            if field == "seconds":
                continue
            if field in ("nll", "base_nll", "cell_accuracy", "loss_curve") and value is not None:
                assert value == pytest.approx(other[field], rel=1e-3, abs=1e-4), (key, field)
            else:
                assert value == other[field], (key, field)


@pytest.mark.slow
def test_cli_pretrain_sft_and_seal_with_restem_under_torchrun(tmp_path):
    """The commands end to end under torchrun: micro pretrain + SFT weights close to one process's, and a SEAL
    round whose ReST-EM update really runs (continuous reward) gives the same rows within float tolerance."""
    for nproc in (1, 2):
        proc = launch(["-m", "nanoseal", "sft", "--preset", "micro"], nproc,
                      NANOSEAL_BASE_DIR=str(tmp_path / f"base{nproc}"))
        assert proc.returncode == 0, proc.stderr[-3000:]
    for phase, step in (("base_checkpoints", 6), ("chatsft_checkpoints", 20)):
        a, b = (torch.load(tmp_path / f"base{n}" / phase / "d2" / f"model_{step:06d}.pt") for n in (1, 2))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-2, atol=5e-3, msg=f"{phase} {k}")
    # a policy that writes valid self-edits (self-edit documents only), trained once on one process
    base = str(tmp_path / "policy")
    code = ("from nanoseal.train.presets import get_preset; from nanoseal.train.sft import sft; "
            f"sft(get_preset('micro', selfedit_frac=1.0, sft_steps=120), {base!r}, seed=0, device='cpu')")
    proc = launch(["-c", code], 1)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flags = ["--checkpoint", base, "--source", "sft", "--tasks", "flip_lr-1-s2-3,recolour-2-s2-3",
             "--eval-tasks", "flip_lr-1000001-s2-3", "--self-edits", "3", "--n-max", "4", "--max-views", "1",
             "--no-oracle", "--reward", "continuous", "--top-k", "2", "--restem-epochs", "2"]
    for nproc in (1, 2):
        proc = launch(["-m", "nanoseal", "seal", "--run-dir", str(tmp_path / f"run{nproc}"), *flags], nproc)
        assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads((tmp_path / f"run{n}" / "rounds" / "1" / "summary.json").read_text()) for n in (1, 2)]
    assert summaries[0]["steps"] > 0, "the ReST-EM update ran"
    assert summaries[0]["loss_curve"] == pytest.approx(summaries[1]["loss_curve"], rel=1e-3)
    rows_close(str(tmp_path / "run1"), str(tmp_path / "run2"))
    assert methods(str(tmp_path / "run1")) == methods(str(tmp_path / "run2"))
