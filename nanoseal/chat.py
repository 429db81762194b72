"""
Chat with a checkpoint in the terminal (nanochat's chat format).

    nanoseal chat --checkpoint ~/.cache/nanoseal            # interactive; 'clear' resets, 'quit' exits
    nanoseal chat --checkpoint DIR -p "Hello"                # one-shot: print the reply and exit
"""

import argparse
import sys

import torch

from nanoseal.common import autocast_ctx, autodetect_device, get_base_dir


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal chat`."""
    parser.add_argument("--checkpoint", default=None,
                        help="base dir, phase dir or checkpoint folder (default: $NANOSEAL_BASE_DIR)")
    parser.add_argument("--source", default=None, choices=["base", "mid", "sft", "rl"],
                        help="phase to load from a base dir (default: the most trained one present)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: last)")
    parser.add_argument("-p", "--prompt", default=None, help="one-shot prompt: answer it and exit")
    parser.add_argument("-t", "--temperature", type=float, default=0.6)
    parser.add_argument("-k", "--top-k", type=int, default=50)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--device", default=None, help="cpu | cuda | mps (default: autodetect)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal chat`."""
    from nanoseal.checkpoint import load_model
    from nanoseal.engine import Engine

    device = autodetect_device(args.device)
    model, tokenizer, meta = load_model(args.checkpoint or get_base_dir(), step=args.step, device=device,
                                        source=args.source)
    engine = Engine(model, tokenizer)
    bos = tokenizer.get_bos_token_id()
    user_start, user_end = tokenizer.encode_special("<|user_start|>"), tokenizer.encode_special("<|user_end|>")
    asst_start = tokenizer.encode_special("<|assistant_start|>")
    asst_end = tokenizer.encode_special("<|assistant_end|>")
    conversation = [bos]
    interactive = args.prompt is None
    if interactive:
        print(f"nanoseal chat: {meta['checkpoint_dir']} ({model.num_params() / 1e6:.1f}M params). "
              "Type 'clear' to reset, 'quit' to exit.")
    turn = 0
    while True:
        if interactive:
            try:
                user = input("\nUser: ").strip()
            except (EOFError, KeyboardInterrupt):
                print()
                return 0
            if user.lower() in ("quit", "exit"):
                return 0
            if user.lower() == "clear":
                conversation = [bos]
                print("(conversation cleared)")
                continue
            if not user:
                continue
        else:
            user = args.prompt
        conversation += [user_start, *tokenizer.encode(user), user_end, asst_start]
        reply = []
        if interactive:
            print("\nAssistant: ", end="", flush=True)
        with autocast_ctx(device, args.dtype), torch.inference_mode():
            for column, _ in engine.generate(conversation, num_samples=1, max_tokens=args.max_tokens,
                                             temperature=args.temperature, top_k=args.top_k,
                                             seed=args.seed + turn):
                tok = column[0]
                if tok in (asst_end, bos):
                    break
                reply.append(tok)
                if interactive:
                    print(tokenizer.decode([tok]), end="", flush=True)
        conversation += reply + [asst_end]
        turn += 1
        if not interactive:
            sys.stdout.write(tokenizer.decode(reply) + "\n")
            return 0
        print()
