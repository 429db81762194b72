"""Crash safety of pretraining and SFT (nanoseal.train.loop): a run killed at any moment (SIGKILL, a cut-off save,
a full disk) and rerun ends with the same weights, optimizer state and data position as a run never interrupted."""

import errno
import glob
import json
import os
import random
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from nanoseal.cli import main
from nanoseal.common import NanosealError
from nanoseal.train.loop import TrainConfig, last_complete_step, saved_steps, train
from nanoseal.train.pretrain import finished

from conftest import make_tiny_model

CFG = TrainConfig(batch_size=2, seq_len=32, max_steps=8, save_every=2, log_every=100, warmup_frac=0.25)


class Crash(Exception):
    """Raised by the document stream to cut a run short."""


def documents(seed: int = 0, crash_after: int | None = None):
    """An endless deterministic stream of (ids, mask) documents of 5..40 tokens (vocab 320)."""
    rng = random.Random(seed)
    n = 0
    while True:
        if crash_after is not None and n >= crash_after:
            raise Crash(f"cut after {n} documents")
        length = rng.randint(5, 40)
        ids = [rng.randrange(320) for _ in range(length)]
        yield ids, [0] + [1] * (length - 1)
        n += 1


def final_state(checkpoint_dir: str) -> tuple[dict, dict, dict]:
    """(model state, optimizer state, meta) of the last complete step."""
    step = last_complete_step(checkpoint_dir)
    model = torch.load(os.path.join(checkpoint_dir, f"model_{step:06d}.pt"), weights_only=True)
    optim = torch.load(os.path.join(checkpoint_dir, f"optim_{step:06d}_rank0.pt"), weights_only=True)
    with open(os.path.join(checkpoint_dir, f"meta_{step:06d}.json")) as f:
        return model, optim, json.load(f)


def assert_same_tensors(a, b, where: str = "") -> None:
    """Equal nested structures of tensors (bitwise) and plain values."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys differ"
        for k in a:
            assert_same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tensors(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def assert_same_run(ref_dir: str, run_dir: str) -> None:
    """Same final weights, optimizer state and data position (bitwise), a final flag on both."""
    ref_model, ref_optim, ref_meta = final_state(ref_dir)
    model, optim, meta = final_state(run_dir)
    assert last_complete_step(ref_dir) == last_complete_step(run_dir)
    assert_same_tensors(ref_model, model, "model")
    assert_same_tensors(ref_optim, optim, "optimizer")
    for key in ("documents", "tokens", "final"):
        assert meta["train_state"][key] == ref_meta["train_state"][key], key
    assert meta["train_state"]["final"] is True


@pytest.fixture
def reference(tmp_path):
    ref = str(tmp_path / "ref")
    train(make_tiny_model(), documents(), CFG, ref, {"source": "test"})
    return ref


def test_resume_after_a_crash_and_a_cut_off_save_equals_an_uninterrupted_run(tmp_path, reference):
    run = str(tmp_path / "run")
    with pytest.raises(Crash):
        train(make_tiny_model(), documents(crash_after=20), CFG, run, {"source": "test"})
    last = last_complete_step(run)
    assert last is not None and 0 < last < CFG.max_steps, "the crash came after a checkpoint, before the end"
    # what a SIGKILL during the next save leaves: a model file without meta/optimizer, and a temp file
    later = last + 1
    with open(os.path.join(run, f"model_{last:06d}.pt"), "rb") as f:
        data = f.read()
    with open(os.path.join(run, f"model_{later:06d}.pt"), "wb") as f:
        f.write(data)
    with open(os.path.join(run, f".tmp-abc123optim_{later:06d}_rank0.pt"), "wb") as f:
        f.write(b"half a file")
    assert saved_steps(run) == ([s for s in range(2, later, 2)], [later])
    # a differently initialised model: resuming must restore everything from the checkpoint
    summary = train(make_tiny_model(seed=7), documents(), CFG, run, {"source": "test"})
    assert summary["step"] == CFG.max_steps and len(summary["loss_curve"]) == CFG.max_steps - last
    assert not glob.glob(os.path.join(run, ".tmp-*"))
    assert_same_run(reference, run)


def test_a_full_disk_mid_save_keeps_the_last_checkpoint_and_the_rerun_finishes(tmp_path, reference, monkeypatch):
    run = str(tmp_path / "run")
    real_save, calls = torch.save, [0]

    def save_until_disk_full(obj, f, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 6:  # steps 2 and 4: model + optimizer (calls 1-4); step 6: model and meta written, optimizer not
            raise OSError(errno.ENOSPC, "No space left on device", str(f))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save_until_disk_full)
    with pytest.raises(NanosealError, match=r"cannot save step 6 \(No space left on device\); step 4 is kept"):
        train(make_tiny_model(), documents(), CFG, run, {"source": "test"})
    assert saved_steps(run) == ([2, 4], []), "the failed step left no files behind"
    assert not glob.glob(os.path.join(run, ".tmp-*"))
    monkeypatch.setattr(torch, "save", real_save)
    train(make_tiny_model(seed=3), documents(), CFG, run, {"source": "test"})
    assert_same_run(reference, run)


def test_a_checkpoint_of_another_shape_or_a_hand_edited_meta_is_one_line(tmp_path, reference):
    with pytest.raises(NanosealError, match="does not fit this model and its optimizers"):
        train(make_tiny_model(n_embd=32, n_head=2, n_kv_head=1), documents(), CFG, reference, {})
    step = last_complete_step(reference)
    path = os.path.join(reference, f"meta_{step:06d}.json")
    meta = json.load(open(path))
    meta["train_state"]["final"], meta["train_state"]["documents"] = False, "many"
    json.dump(meta, open(path, "w"))
    with pytest.raises(NanosealError, match=r"train_state\.documents must be an integer >= 0, got 'many'"):
        train(make_tiny_model(), documents(), CFG, reference, {})


def test_checkpoint_folder_that_is_a_file_or_on_a_full_disk_is_one_line(tmp_path, monkeypatch, capsys):
    base = tmp_path / "base"
    (base / "base_checkpoints").mkdir(parents=True)
    (base / "base_checkpoints" / "d2").write_text("not a folder")
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(base))
    assert main(["pretrain", "--preset", "micro", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "checkpoint folder" in err and "d2 is a file, expected a folder" in err
    (base / "base_checkpoints" / "d2").unlink()

    from nanoseal import common

    monkeypatch.setattr(common.shutil, "disk_usage", lambda path: SimpleNamespace(total=10**9, used=10**9, free=1000))
    assert main(["pretrain", "--preset", "micro", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "d2: 1 KB free on its disk" in err and "MB needed" in err
    assert not os.listdir(base / "base_checkpoints" / "d2"), "nothing was written that the next run must skip"
    monkeypatch.undo()
    monkeypatch.setenv("NANOSEAL_BASE_DIR", str(tmp_path / "a-file"))
    (tmp_path / "a-file").write_text("x")
    assert main(["pretrain", "--preset", "micro", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "a-file is a file, expected a folder" in err


# ----------------------------------------------------------------------------- SIGKILL, for real

def _spawn(base: str, log: str) -> subprocess.Popen:
    env = dict(os.environ, NANOSEAL_BASE_DIR=base, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "nanoseal", "sft", "--preset", "micro", "--device", "cpu"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)


def _progress(folder: str, since: float) -> bool:
    """Whether a complete step newer than `since` is in folder (its optimizer file is written last)."""
    return any(os.path.getmtime(f) > since for f in glob.glob(os.path.join(folder, "optim_*_rank0.pt")))


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_gives_the_uninterrupted_checkpoints(tmp_path):
    """`nanoseal sft --preset micro` (tokenizer, pretraining, SFT) killed with SIGKILL several times at random
    moments after a step was saved, in both phases, then rerun to the end: bitwise the checkpoints of one
    uninterrupted run."""
    ref_base, base = str(tmp_path / "ref"), str(tmp_path / "killed")
    ref = _spawn(ref_base, str(tmp_path / "ref.log"))
    assert ref.wait(timeout=300) == 0, open(tmp_path / "ref.log").read()[-2000:]
    phases = {"pretrain": os.path.join(base, "base_checkpoints", "d2"),
              "sft": os.path.join(base, "chatsft_checkpoints", "d2")}
    rng = random.Random(0)
    kills = {"pretrain": 0, "sft": 0}
    log = str(tmp_path / "killed.log")
    for _ in range(8):
        if kills["pretrain"] >= 2 and kills["sft"] >= 2:
            break
        if finished(phases["sft"]):
            break
        phase = "pretrain" if kills["pretrain"] < 2 and not finished(phases["pretrain"]) else "sft"
        start = time.time()
        proc = _spawn(base, log)
        deadline = start + 120
        while time.time() < deadline and proc.poll() is None and not _progress(phases[phase], start):
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.15))  # a random moment after a fresh step was saved: mid-step or mid-save
        if proc.poll() is not None:
            break  # it finished first
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills[phase] += 1
    final = _spawn(base, log)
    assert final.wait(timeout=300) == 0, open(log).read()[-2000:]
    text = open(log).read()
    assert kills["pretrain"] >= 1 and kills["sft"] >= 1, kills
    assert f"resuming from {phases['pretrain']}" in text and f"resuming from {phases['sft']}" in text, text[-3000:]
    for phase, folder in phases.items():
        assert not glob.glob(os.path.join(folder, ".tmp-*")), phase
        assert_same_run(folder.replace(base, ref_base), folder)
