"""
torch.distributed under torchrun: process group init/teardown from torchrun's environment, rank helpers, and
the few collectives nanoseal uses (barrier, broadcast of Python objects, gradient all-reduce), each
bounded by a timeout so that a dead or stuck rank stops the job instead of hanging it, and a shared work queue
(claim/put/ready/take on the key-value store the ranks joined through: a rank takes the next item as soon as it is
free, rather than in lockstep waves).

    torchrun --standalone --nproc_per_node=2 -m nanoseal seal ...   # cli.py calls init() and teardown()
    status = spawn_local(["demo", "--seed", "1"], procs=2, threads=1)   # the same on this machine, no torchrun

Without torchrun (WORLD_SIZE unset or 1) nothing is initialised and every collective is a no-op on one process
(broadcast_object returns obj), so single-process code paths stay as they were; the work queue needs init().
Backend: gloo on CPU; with CUDA "cpu:gloo,cuda:nccl" (tensors on the GPU go through NCCL, pickled objects and
barriers through gloo), each rank on cuda:LOCAL_RANK. Collectives time out after $NANOSEAL_DIST_TIMEOUT seconds
(default 1800); a failed or timed-out collective raises RankLost, which the CLI prints as one line, and the
SIGTERM torchrun sends the surviving ranks when one fails is answered with one line and an immediate exit.
"""

import contextlib
import datetime
import os
import pickle
import signal
import socket
import subprocess
import sys
import time

import torch
import torch.distributed as dist

from nanoseal.common import NanosealError, get_rank

TIMEOUT_ENV = "NANOSEAL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 1800.0
_store: list = [None]  # the key-value store every rank shares (init sets it), under a prefix of its own


class RankLost(NanosealError):
    """A collective failed: another rank stopped, or did not answer within the timeout."""


def world_size() -> int:
    """Number of processes under torchrun (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return get_rank()


def local_rank() -> int:
    """This process's rank on its node (0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """Whether this process was launched by torchrun with more than one process."""
    return world_size() > 1


def timeout_seconds() -> float:
    """The collective timeout: $NANOSEAL_DIST_TIMEOUT seconds, default 1800."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise NanosealError(f"{TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise NanosealError(f"{TIMEOUT_ENV} must be > 0 seconds, got {raw!r}")
    return value


def init() -> None:
    """Join torchrun's process group (a no-op on one process or when already joined)."""
    if not is_distributed() or dist.is_initialized():
        return
    timeout = datetime.timedelta(seconds=timeout_seconds())
    if torch.cuda.is_available():
        if local_rank() < torch.cuda.device_count():  # more processes than GPUs: only for --device cpu runs
            torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    try:  # torchrun's rendezvous, as init_process_group does it, keeping the store for the work queue
        store, r, world = next(dist.rendezvous("env://", timeout=timeout))
        store.set_timeout(timeout)
        dist.init_process_group(backend=backend, store=dist.PrefixStore("default_pg", store), rank=r,
                                world_size=world, timeout=timeout)
        _store[0] = dist.PrefixStore("nanoseal", store)
    except (RuntimeError, ValueError) as e:
        raise RankLost(f"rank {rank()}: could not join the process group ({first_line(e)})") from None
    signal.signal(signal.SIGTERM, _stopped_by_torchrun)


def _stopped_by_torchrun(signum, frame) -> None:
    """SIGTERM (torchrun stops every rank once one fails): one line, then exit at once, like the default action."""
    print(f"[rank {rank()}] nanoseal: stopped by torchrun (a rank failed, or the job was interrupted); "
          "re-run the same command to resume", file=sys.stderr, flush=True)
    os._exit(128 + signum)


def teardown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()
    _store[0] = None


def local_device(device: torch.device | str) -> torch.device:
    """The device of this rank: a bare "cuda" becomes cuda:LOCAL_RANK under torchrun."""
    device = torch.device(device)
    if is_distributed() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank())
    return device


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (collective errors are long)."""
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__


def _collective(fn, *args, **kwargs):
    """Run one collective; a failure or timeout becomes RankLost with a one-line message."""
    try:
        return fn(*args, **kwargs)
    except (RuntimeError, dist.DistError) as e:
        raise RankLost(f"rank {rank()} of {world_size()}: lost contact with the other ranks (a rank stopped, or "
                       f"did not answer within {TIMEOUT_ENV}={timeout_seconds():g}s: {first_line(e)}); "
                       "re-run the same command to resume") from None


def barrier() -> None:
    """Wait for every rank."""
    if is_distributed():
        _collective(dist.barrier)


def broadcast_object(obj, src: int = 0):
    """rank src's obj (picklable), on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    _collective(dist.broadcast_object_list, box, src=src)
    return box[0]


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Sum (or max) a tensor over ranks, in place; returns it."""
    if is_distributed():
        assert op in ("sum", "max"), f"op must be sum or max, got {op!r}"
        _collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def _kv() -> dist.Store:
    """The store the ranks joined through (the work queue's counter and rows live there)."""
    assert _store[0] is not None, "the work queue needs init() under torchrun"
    return _store[0]


def claim(counter: str) -> int:
    """The next number of a counter every rank shares (0, 1, 2, ...: each number goes to exactly one rank)."""
    return _collective(_kv().add, counter, 1) - 1


def put(key: str, obj) -> None:
    """Leave a picklable obj under key for one other rank to take."""
    _collective(_kv().set, key, pickle.dumps(obj))


def ready(key: str) -> bool:
    """Whether a rank has put something under key (does not wait)."""
    return bool(_collective(_kv().check, [key]))


def take(key: str):
    """The obj put under key (waits for it, at most the collective timeout), removed from the store."""
    obj = pickle.loads(_collective(_kv().get, key))
    _collective(_kv().delete_key, key)
    return obj


@torch.no_grad()
def all_reduce_grads(params) -> None:
    """Sum the gradients of params over ranks, in place (a missing gradient counts as zeros), one flat buffer
    per dtype and device (what DDP does, without its wrapper: the loss is normalised by the global token count
    beforehand, so the sum is the gradient of the global batch)."""
    if not is_distributed():
        return
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in buckets.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        _collective(dist.all_reduce, flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


@torch.no_grad()
def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank src's parameters and buffers into every rank's module, in place."""
    if not is_distributed():
        return
    for t in list(module.parameters()) + list(module.buffers()):
        _collective(dist.broadcast, t.data, src=src)


@contextlib.contextmanager
def rank0_first():
    """Rank 0 runs the block first (e.g. writes a shared file), then the other ranks (e.g. read it)."""
    if rank() != 0:
        barrier()
    yield
    if rank() == 0:
        barrier()


def spawn_local(argv: list[str], procs: int, threads: int) -> int:
    """Run `python -m nanoseal ARGV` as procs ranks on this machine (torchrun's environment, gloo, a free local
    port), each with `threads` torch threads; wait for all. When one rank fails the others are stopped (each
    says so in one line). Returns 0, or the first failing rank's exit status."""
    assert procs >= 1 and threads >= 1, f"need procs >= 1 and threads >= 1, got {procs}, {threads}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    children = []
    for r in range(procs):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(procs), LOCAL_WORLD_SIZE=str(procs),
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS=str(threads))
        children.append(subprocess.Popen([sys.executable, "-m", "nanoseal", *argv], env=env))
    status = 0
    try:
        while any(c.poll() is None for c in children):
            failed = [c.returncode for c in children if c.returncode not in (None, 0)]
            if failed and not status:
                status = failed[0]
                for c in children:
                    if c.poll() is None:
                        c.send_signal(signal.SIGTERM)
            time.sleep(0.2)
    except KeyboardInterrupt:
        for c in children:
            c.send_signal(signal.SIGINT)
        for c in children:
            c.wait()
        return 130
    return status or next((c.returncode for c in children if c.returncode), 0)
