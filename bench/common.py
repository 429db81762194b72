"""
Shared pieces of the benchmarks: the machine description, the tiny preset's model shape with random
weights, a BPE tokenizer that knows both grid styles, demo-like ARC tasks and self-edits, timing.

Speed does not depend on the weights, so every benchmark uses a randomly initialised GPT of the shape it
names; the tokenizer is trained in a second on procedural tasks written in both grid styles (SEAL's
numpy-like text and nanoseal's compact digit rows), so neither style gets a tokenizer made for it alone.
"""

import os
import platform
import random
import statistics
import time
from collections.abc import Callable

import torch

from nanoseal.arc.gen import make_task
from nanoseal.arc.prompts import task_conversation
from nanoseal.models.nanochat import GPT, GPTConfig
from nanoseal.seal.selfedit import parse_self_edit, random_self_edit_text
from nanoseal.tokenizer import DIGIT_SPLIT_PATTERN, Tokenizer
from nanoseal.train.data import task_stream, tokenizer_corpus
from nanoseal.train.presets import get_preset

HELDOUT_SEED = 1_000_000  # the demo's held-out instances start here (nanoseal.demo)


def cpu_name() -> str:
    """The CPU model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


ISA_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")  # what restricts torch's kernels


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (None where there is no such file)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def isa_line() -> str:
    """One line: the CPU's vector and matrix flags (avx2, fma, avx512*, amx*), the kernels torch picked, and any
    environment variable restricting them."""
    flags = cpu_flags()
    if flags is None:
        shown = "unknown (no /proc/cpuinfo)"
    else:
        shown = " ".join(sorted(f for f in flags if f in ("avx2", "fma") or f.startswith(("avx512", "amx")))) or "none"
    env = [f"{k}={os.environ[k]}" for k in ISA_ENV if k in os.environ]
    return (f"CPU flags: {shown}; torch CPU kernels: {torch.backends.cpu.get_cpu_capability()}"
            + (f" (restricted by {', '.join(env)})" if env else ""))


def matmul_rate(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    """Best FLOP/s of torch.mm (m x k) @ (k x n) over ~`seconds` of repeats after one warm-up call (at least one
    timed call however long it takes)."""
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    torch.mm(a, b)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while time.perf_counter() < t_end or best == float("inf"):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * m * k * n / best


_BF16: tuple[bool, str] | None = None


def bf16_native() -> tuple[bool, str]:
    """(whether bf16 matmuls run natively on this CPU, why): the CPU must list avx512_bf16 or amx_bf16 and a bf16
    matmul must beat an fp32 one here (torch may be restricted to older kernels); measured once per process."""
    global _BF16
    if _BF16 is None:
        flags = cpu_flags()
        have = sorted((flags or set()) & {"avx512_bf16", "amx_bf16"})
        if flags is not None and not have:
            _BF16 = (False, "no native bf16 (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo)")
        else:  # 512^3: a quarter of a second even at 1 GFLOP/s
            fp32 = matmul_rate(torch.float32, 512, 512, 512, seconds=0.2)
            bf16 = matmul_rate(torch.bfloat16, 512, 512, 512, seconds=0.2)
            rates = f"bf16 matmul {bf16 / 1e9:,.0f} GFLOP/s vs fp32 {fp32 / 1e9:,.0f} GFLOP/s"
            where = f"{'/'.join(have) or 'bf16 flags unknown'}, torch kernels {torch.backends.cpu.get_cpu_capability()}"
            _BF16 = (bf16 > fp32, f"native bf16: {rates} ({where})" if bf16 > fp32 else
                     f"no native bf16 for torch here: {rates} ({where})")
    return _BF16


def machine_line() -> str:
    """One line naming the machine, the torch build and threads, and the load right now."""
    load = os.getloadavg()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu_name()}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


def standalone(run: Callable, threads: int | None, *args) -> None:
    """A script's own main: apply --threads, print the machine line, run(*args), then the load note if any."""
    if threads:
        torch.set_num_threads(threads)
    print(machine_line())
    print(isa_line())
    run(*args)
    note = load_note()
    if note:
        print(note)


def load_note() -> str:
    """A warning when other processes share the CPU: a load average above the cores (the benchmark's own threads
    account for up to one per core)."""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load > cores + 0.5:
        return (f"NOTE: load average {load:.1f} on {cores} cores when this line was printed: other processes "
                "shared the CPU, so wall times are noisy (ratios within one run are fairer than absolute times)")
    return ""


def tiny_config(vocab_size: int = 1024) -> GPTConfig:
    """The `tiny` preset's model shape (4 layers x 128 wide, 4 heads, 1,024 context)."""
    p = get_preset("tiny")
    return GPTConfig(sequence_len=p.sequence_len, vocab_size=vocab_size, n_layer=p.n_layer, n_head=p.n_head,
                     n_kv_head=p.n_head, n_embd=p.n_embd)


def random_gpt(config: GPTConfig, seed: int = 0) -> GPT:
    """A randomly initialised GPT (nanochat init, with lm_head and output projections made non-zero), eval mode."""
    torch.manual_seed(seed)
    model = GPT(config)
    model.init_weights()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("c_proj.weight") or name == "lm_head.weight":
                p.normal_(0.0, 0.02)
    return model.eval()


_TOKENIZERS: dict[int, Tokenizer] = {}


def bench_tokenizer(vocab_size: int = 1024, n_tasks: int = 600) -> Tokenizer:
    """A BPE tokenizer (nanoseal's digit-split pattern) trained on tiny-preset tasks in both grid styles."""
    if vocab_size not in _TOKENIZERS:
        p = get_preset("tiny")
        fams = p.family_names()

        def texts():
            yield from tokenizer_corpus(task_stream(fams, 0, p.min_side, p.max_side), n_tasks, 0)  # compact
            for _, task in zip(range(n_tasks), task_stream(fams, 1, p.min_side, p.max_side)):
                inp, out = task.test[0]
                conv = task_conversation(task.train, inp, out, style="seal")
                yield "\n\n".join(m["content"] for m in conv["messages"])

        _TOKENIZERS[vocab_size] = Tokenizer.train_from_iterator(texts(), vocab_size=vocab_size,
                                                                pattern=DIGIT_SPLIT_PATTERN)
    return _TOKENIZERS[vocab_size]


def demo_tasks(n: int) -> list:
    """n held-out instances of the tiny preset's families, as `nanoseal demo` evaluates (round-robin)."""
    p = get_preset("tiny")
    fams = p.family_names()
    return [make_task(fams[i % len(fams)], HELDOUT_SEED + i // len(fams), min_side=p.min_side, max_side=p.max_side)
            for i in range(n)]


def prior_self_edits(n: int, seed: int = 0) -> list:
    """n self-edits drawn from the SFT prior (what an un-trained policy writes): random flags, lr, epochs."""
    rng = random.Random(seed)
    return [parse_self_edit(random_self_edit_text(rng))[0] for _ in range(n)]


def timed(fn: Callable, repeats: int = 1, warmup: int = 0) -> tuple[float, object]:
    """(best wall time of `repeats` calls after `warmup` untimed ones, the last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return min(times), result


def median(xs: list[float]) -> float:
    """statistics.median, 0 for an empty list."""
    return statistics.median(xs) if xs else 0.0


def ratio_text(x: float | None) -> str:
    """A ratio as '2.35x', or 'n/a'."""
    return "n/a" if x is None else f"{x:.2f}x"
