"""
Every benchmark in one run on one machine, ending with one line of ratios:

    RATIOS ttt_vs_peft=<x> decode_vs_hf=<x> mfu_fp32_pretrain=<x> mfu_fp32_ttt=<x> kbatch_vs_seq=<x> pretrain_tok_s=<x>

  1. bench.ttt_vs_peft  TTT + eval per self-edit: SEAL's reference stack (PEFT + Trainer) vs nanoseal, with each
                        factor (padding, stack, grid text, bf16 where native) separately; full mode: the median of
                        3 rounds
  2. bench.mfu          fp32 matmul peak; pretraining and TTT FLOP/s as a fraction of it (tiny preset, d12 shape)
  3. bench.kbatch       K=15 adapters of one task at once vs one after another (CPU; on a GPU too when present)
  4. bench.decode       greedy KV-cache decoding vs the general forward, no cache (full mode) and transformers'
                        generate, same weights, batch 1 and 8 (decode_vs_hf: the smaller of the two)
  5. bench.demo_phases  `nanoseal demo` wall time by phase, read from a finished demo's run directory

    python -m bench.all --quick                        # smaller sizes: ~2-3 minutes on 2 cores
    python -m bench.all                                # the full table: under 10 minutes on 2 cores
    python -m bench.all --run-dir ~/.cache/nanoseal/runs/demo-<timestamp> --install-seconds 30 --threads 1

bf16 rows run only where the CPU has native bf16 (avx512_bf16 or amx_bf16, and a bf16 matmul faster than fp32
here); elsewhere the tables say they were skipped and why. The first lines name the CPU's flags and the kernels
torch uses (and any ATEN_CPU_CAPABILITY / ONEDNN_MAX_CPU_ISA / MKL_ENABLE_INSTRUCTIONS restriction).
Needs the bench extra (`pip install -e ".[bench]"`: transformers, peft). Wall times depend on the load:
the script prints the load average, and ratios measured in one run are what to compare.
"""

import argparse
import time

import torch

from bench import decode, demo_phases, kbatch, mfu, ttt_vs_peft
from bench.common import bf16_native, isa_line, load_note, machine_line, ratio_text

SIZES = {  # quick / full
    "ttt": ({"n_tasks": 1, "n_edits": 2, "rounds": 1}, {"n_tasks": 2, "n_edits": 3, "rounds": 3}),
    "mfu": ({"steps": 4, "peak_n": 2048, "n_edits": 2, "n_max": 8, "d12_tokens": 512},
            {"steps": 12, "peak_n": 4096, "n_edits": 3, "d12_tokens": 1024}),
    "kbatch": ({"k": 15, "n_max": 4}, {"k": 15, "n_max": 16}),
    "decode": ({"new_tokens": 32, "repeats": 3, "nocache": False}, {"new_tokens": 64, "repeats": 5}),
}
DECODE_SHAPE = dict(n_layer=4, n_embd=128, n_head=4, vocab_size=1024, prompt_len=256)  # the tiny preset
DECODE_BATCHES = (1, 8)


def fmt(x: float | None, digits: int = 2) -> str:
    """A ratio for the RATIOS line ('nan' when not measured)."""
    return "nan" if x is None else f"{x:.{digits}f}"


def ratios_line(ttt_vs_peft: float | None, decode_vs_hf: float | None, mfu_result: dict,
                kbatch_vs_seq: float | None) -> str:
    """The RATIOS line: the six figures the issue tracks, in its order ('nan' where not measured)."""
    return (f"RATIOS ttt_vs_peft={fmt(ttt_vs_peft)} decode_vs_hf={fmt(decode_vs_hf)} "
            f"mfu_fp32_pretrain={fmt(mfu_result.get('mfu_fp32_pretrain'), 3)} "
            f"mfu_fp32_ttt={fmt(mfu_result.get('mfu_fp32_ttt'), 3)} kbatch_vs_seq={fmt(kbatch_vs_seq)} "
            f"pretrain_tok_s={fmt(mfu_result.get('pretrain_tok_s'), 0)}")


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
    print(isa_line())
    print(f"bf16: {bf16_native()[1]}")
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
    r_dec = {b: decode.run(**DECODE_SHAPE, batch=b, **SIZES["decode"][mode]) for b in DECODE_BATCHES}
    dec = [r["decode_vs_hf"] for r in r_dec.values()]
    dec_min = None if None in dec else min(dec)
    print("\ndecode_vs_hf by batch: " + ", ".join(f"batch {b} {ratio_text(r['decode_vs_hf'])}"
                                                 for b, r in r_dec.items()))
    print("\n== 5. demo phases")
    demo_phases.run(args.run_dir, args.install_seconds)
    print(f"\nall benchmarks: {time.perf_counter() - t0:.0f} s ({'quick' if args.quick else 'full'} mode)")
    note = load_note()
    if note:
        print(note)
    if r_k_gpu is not None:
        print(f"kbatch_vs_seq on cuda: {r_k_gpu['kbatch_vs_seq']:.2f}x")
    print(ratios_line(r_ttt["ttt_vs_peft"], dec_min, r_mfu, r_k["kbatch_vs_seq"]))


if __name__ == "__main__":
    main()
