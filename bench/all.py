"""
Every benchmark in one run on one machine, ending with one line of ratios:

    RATIOS ttt_vs_peft=<x> mfu_bf16_pretrain=<x> mfu_bf16_ttt=<x> kbatch_vs_seq=<x> decode_vs_hf=<x>

  1. bench.ttt_vs_peft  TTT + eval per self-edit: SEAL's reference stack (PEFT + Trainer) vs nanoseal, with each
                        factor (padding, stack, grid text, bf16) separately
  2. bench.mfu          fp32/bf16 matmul peak; pretraining and TTT FLOP/s as a fraction of it
  3. bench.kbatch       K=15 adapters of one task at once vs one after another (CPU; on a GPU too when present)
  4. bench.decode       greedy KV-cache decoding vs no cache vs transformers' generate, same weights
  5. bench.demo_phases  `nanoseal demo` wall time by phase, read from a finished demo's run directory

    python -m bench.all --quick                        # smaller sizes: ~2-3 minutes on 2 cores
    python -m bench.all                                # the full table: under 10 minutes on 2 cores
    python -m bench.all --run-dir ~/.cache/nanoseal/runs/demo-<timestamp> --install-seconds 30 --threads 1

Needs the bench extra (`pip install -e ".[bench]"`: transformers, peft). Wall times depend on the load:
the script prints the load average, and ratios measured in one run are what to compare.
"""

import argparse
import time

import torch

from bench import decode, demo_phases, kbatch, mfu, ttt_vs_peft
from bench.common import load_note, machine_line

SIZES = {  # quick / full
    "ttt": ({"n_tasks": 1, "n_edits": 2}, {"n_tasks": 2, "n_edits": 3}),
    "mfu": ({"steps": 4, "peak_n": 2048, "n_edits": 2, "n_max": 8}, {"steps": 12, "peak_n": 4096, "n_edits": 3}),
    "kbatch": ({"k": 15, "n_max": 4}, {"k": 15, "n_max": 16}),
    "decode": ({"new_tokens": 32, "repeats": 2}, {"new_tokens": 64, "repeats": 3}),
}
DECODE_SHAPE = dict(n_layer=4, n_embd=128, n_head=4, vocab_size=1024, batch=8, prompt_len=256)  # the tiny preset


def fmt(x: float | None, digits: int = 2) -> str:
    """A ratio for the RATIOS line ('nan' when not measured)."""
    return "nan" if x is None else f"{x:.{digits}f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip())
    parser.add_argument("--quick", action="store_true", help="smaller sizes (about 3 minutes on 2 CPU cores)")
    parser.add_argument("--run-dir", default=None, help="a finished `nanoseal demo` run directory (item 5)")
    parser.add_argument("--install-seconds", type=float, default=None, help="measured install time (item 5)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    mode = 0 if args.quick else 1
    t0 = time.perf_counter()
    print(machine_line())
    print(f"mode: {'quick' if args.quick else 'full'}")
    print("\n== 1. TTT vs the reference stack (PEFT + transformers.Trainer)")
    r_ttt = ttt_vs_peft.run(**SIZES["ttt"][mode])
    print("\n== 2. machine limit (MFU)")
    r_mfu = mfu.run(**SIZES["mfu"][mode])
    print("\n== 3. K adapters at once vs sequential")
    r_k = kbatch.run(**SIZES["kbatch"][mode], device="cpu")
    r_k_gpu = None
    if torch.cuda.is_available():
        r_k_gpu = kbatch.run(**SIZES["kbatch"][mode], device="cuda")
    else:
        print("GPU: none on this machine, not measured")
    print("\n== 4. decoding")
    r_dec = decode.run(**DECODE_SHAPE, **SIZES["decode"][mode])
    print("\n== 5. demo phases")
    demo_phases.run(args.run_dir, args.install_seconds)
    print(f"\nall benchmarks: {time.perf_counter() - t0:.0f} s ({'quick' if args.quick else 'full'} mode)")
    note = load_note()
    if note:
        print(note)
    if r_k_gpu is not None:
        print(f"kbatch_vs_seq on cuda: {r_k_gpu['kbatch_vs_seq']:.2f}x")
    print(f"RATIOS ttt_vs_peft={fmt(r_ttt['ttt_vs_peft'])} mfu_bf16_pretrain={fmt(r_mfu['mfu_bf16_pretrain'], 3)} "
          f"mfu_bf16_ttt={fmt(r_mfu['mfu_bf16_ttt'], 3)} kbatch_vs_seq={fmt(r_k['kbatch_vs_seq'])} "
          f"decode_vs_hf={fmt(r_dec['decode_vs_hf'])}")


if __name__ == "__main__":
    main()
