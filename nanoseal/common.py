"""
Small shared helpers: device/dtype autodetection, rank-aware printing, the base directory, seeding,
atomic file writes, folder checks, the bounded JSON/JSONL reader and the one-line user error.

Every JSON or JSONL file a user can hand us (ARC task files, checkpoint metas, run configs, results,
self-edit rows) is read through `read_json` / `read_json_object` / `read_jsonl` (or `loads_json` for text):
files over a size cap are refused before they are read, nesting deeper than MAX_JSON_DEPTH is refused
before the decoder runs (a cheap bracket count, so the decoder never recurses deeply), NaN/Infinity (and
numbers that overflow to infinity) are refused unless the caller's schema allows them, and every problem is
a NanosealError naming the file (and line) in one line.
"""

import contextlib
import itertools
import json
import math
import os
import random
import re
import shutil
import tempfile

import torch


class NanosealError(Exception):
    """A user-facing error: the CLI prints its message on one line and exits non-zero."""


def get_base_dir() -> str:
    """Where caches, tokenizers and checkpoints live: $NANOSEAL_BASE_DIR, else ~/.cache/nanoseal (made if missing)."""
    base = os.environ.get("NANOSEAL_BASE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nanoseal")
    return ensure_dir(base, "base dir ($NANOSEAL_BASE_DIR)")


def _size(n: int) -> str:
    """A byte count for messages: 1.2 GB (1 GB = 1e9 bytes)."""
    n = min(n, 10**30)  # an absurd request still formats
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n} bytes"


def ensure_dir(path: str, what: str, writable: bool = False, need_bytes: int = 0) -> str:
    """Create the folder `path` if missing and return it; a NanosealError naming `what` if it is a file, cannot
    be created, or (writable=True) cannot be written or has less than need_bytes free on its disk."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NanosealError(f"{what} {path} is a file, expected a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise NanosealError(f"{what} {path}: cannot create it ({e.strerror or e})") from None
    if writable:
        try:  # a real probe: os.access says yes to root on a read-only mount
            fd, probe = tempfile.mkstemp(dir=path, prefix=".tmp-probe-")
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise NanosealError(f"{what} {path} is not writable ({e.strerror or e})") from None
        free = shutil.disk_usage(path).free
        if free < need_bytes:
            raise NanosealError(f"{what} {path}: {_size(free)} free on its disk, {_size(need_bytes)} needed")
    return path


def autodetect_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device (checked: known and present), else cuda if available, else mps, else cpu."""
    if requested:
        try:
            device = torch.device(requested)
        except (RuntimeError, ValueError, TypeError):
            raise NanosealError(f"unknown device {str(requested)[:40]!r}: expected cpu, cuda, cuda:N or mps") from None
        if device.type == "cuda":
            if not torch.cuda.is_available():
                raise NanosealError(f"device {str(requested)!r}: CUDA is not available on this machine")
            if device.index is not None and device.index >= torch.cuda.device_count():
                raise NanosealError(f"device {str(requested)!r}: this machine has {torch.cuda.device_count()} "
                                    "CUDA device(s)")
        elif device.type == "mps":
            if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
                raise NanosealError(f"device {str(requested)!r}: MPS is not available on this machine")
        elif device.type != "cpu":
            raise NanosealError(f"device {str(requested)!r}: nanoseal runs on cpu, cuda or mps")
        return device
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


# -----------------------------------------------------------------------------
# the bounded JSON / JSONL reader

MAX_JSON_BYTES = 64 * 2**20  # a JSON file over this is refused before it is read
MAX_JSONL_BYTES = 1024 * 2**20  # the same for a JSONL file (a long run's self-edit rows)
MAX_JSON_DEPTH = 64  # arrays/objects nested deeper are refused before decoding (an ARC release nests 7 deep)
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def json_depth(text: str) -> int:
    """How deeply arrays/objects nest in JSON text, counted without decoding (brackets inside strings ignored)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(itertools.accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not allowed here")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def loads_json(text: str | bytes, where: str, max_depth: int = MAX_JSON_DEPTH, allow_nonfinite: bool = False):
    """Decode JSON text (UTF-8 bytes or str) under the nesting cap, without NaN/Infinity unless allowed;
    NanosealError '<where>: ...' (one line) otherwise."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NanosealError(f"{where}: not UTF-8 text (bad byte at offset {e.start})") from None
    text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
    if text.count("[") + text.count("{") > max_depth:  # only then can it nest deeper than allowed
        depth = json_depth(text)
        if depth > max_depth:
            raise NanosealError(f"{where}: JSON nested {depth} levels deep, at most {max_depth} allowed")
    strict = {} if allow_nonfinite else {"parse_constant": _refuse_constant, "parse_float": _finite_float}
    try:
        return json.loads(text, **strict)
    except (ValueError, RecursionError) as e:  # JSONDecodeError, NaN refused, an int of > 4300 digits, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise NanosealError(f"{where}: not valid JSON ({msg[:200]})") from None


def read_capped(path: str, max_bytes: int) -> bytes:
    """The bytes of a file of at most max_bytes, read without reading more; NanosealError (one line naming it)
    otherwise."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > max_bytes:
                raise NanosealError(f"{path}: {size:,} bytes, over the {max_bytes:,}-byte limit for this file")
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise NanosealError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise NanosealError(f"{path}: is a folder, expected a file") from None
    except OSError as e:
        raise NanosealError(f"{path}: cannot read it ({e.strerror or e})") from None
    if len(data) > max_bytes:  # a special file whose size fstat does not know
        raise NanosealError(f"{path}: over the {max_bytes:,}-byte limit for this file")
    return data


def read_json(path: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
              allow_nonfinite: bool = False):
    """A JSON file through the bounded reader (size cap, nesting cap, NaN/Infinity refused unless allowed)."""
    return loads_json(read_capped(path, max_bytes), path, max_depth, allow_nonfinite)


def read_json_object(path: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH,
                     allow_nonfinite: bool = False) -> dict:
    """A JSON file that must hold an object (read by read_json); NanosealError (one line naming the file) otherwise."""
    obj = read_json(path, max_bytes, max_depth, allow_nonfinite)
    if not isinstance(obj, dict):
        raise NanosealError(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def read_jsonl(path: str, strict: bool = False, max_bytes: int = MAX_JSONL_BYTES, max_depth: int = MAX_JSON_DEPTH,
               allow_nonfinite: bool = False) -> tuple[list[dict], int]:
    """(objects, skipped) of a JSONL file, each line read by loads_json; a missing file gives ([], 0).

    A last line that is not a whole JSON object (cut by a crash mid-append) is skipped; any other bad line is
    skipped as well, or with strict=True refused (NanosealError naming the file and line).
    """
    if not os.path.exists(path):
        return [], 0
    lines = read_capped(path, max_bytes).split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    rows, skipped = [], 0
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        where = f"{path}: line {i + 1}"
        try:
            row = loads_json(raw, where, max_depth, allow_nonfinite)
            if not isinstance(row, dict):
                raise NanosealError(f"{where}: expected a JSON object, got {type(row).__name__}")
        except NanosealError:
            if strict and i < len(lines) - 1:
                raise
            skipped += 1
            continue
        rows.append(row)
    return rows, skipped
