"""
Small shared helpers: device/dtype autodetection, rank-aware printing, the base directory, seeding,
atomic file writes and the one-line user error.
"""

import contextlib
import json
import os
import random
import tempfile

import torch


class NanosealError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def get_base_dir() -> str:
    """Where caches, tokenizers and checkpoints live: $NANOSEAL_BASE_DIR, else ~/.cache/nanoseal."""
    base = os.environ.get("NANOSEAL_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanoseal")
    os.makedirs(base, exist_ok=True)
    return base


def autodetect_device(requested: str | None = None) -> torch.device:
    """The requested device, else cuda if available, else mps, else cpu."""
    if requested:
        return torch.device(requested)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_ctx(device: torch.device | str, dtype: str = "auto"):
    """bf16 autocast on CUDA by default; on CPU only when dtype='bfloat16' is asked for."""
    device = torch.device(device)
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    assert dtype == "float32", f"dtype must be auto, float32 or bfloat16, got {dtype!r}"
    return contextlib.nullcontext()


def get_rank() -> int:
    """This process's rank under torchrun (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def print0(*args, **kwargs) -> None:
    """print, on rank 0 only."""
    if get_rank() == 0:
        print(*args, **kwargs)


def seed_everything(seed: int) -> None:
    """Seed python, numpy (if present) and torch."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np
        np.random.seed(seed % (2**32))
    except ImportError:
        pass


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write data to path atomically: temp file in the same folder, fsync, rename."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_text(path: str, text: str) -> None:
    """Atomic write of a UTF-8 text file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str, obj) -> None:
    """Atomic write of an indented JSON file."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_torch_save(obj, path: str) -> None:
    """torch.save through a temp file + rename, so a crash never leaves a half-written checkpoint."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def read_json_object(path: str) -> dict:
    """A JSON file that must hold an object; NanosealError (one line naming the file) otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise NanosealError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise NanosealError(f"{path}: not valid JSON ({str(e).splitlines()[0]})") from None
    if not isinstance(obj, dict):
        raise NanosealError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj
