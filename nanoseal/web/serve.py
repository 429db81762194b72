"""
`nanoseal serve`: the web UI (chat with model/adapter switching, ARC task viewer, SEAL runs) on localhost.

    nanoseal serve --checkpoint ~/.cache/nanoseal --runs-dir runs --adapters-dir adapters   # then open the URL
    nanoseal serve --checkpoint DIR --port 8123 --host 127.0.0.1

Needs the `web` extra (pip install -e ".[web]": fastapi + uvicorn); this module imports them only when the
command runs, so the rest of the CLI works without them. Binds 127.0.0.1 unless --host says otherwise.
"""

import argparse
import os

from nanoseal.argtypes import NON_NEGATIVE_INT, PORT, float_in, int_in
from nanoseal.common import NanosealError, get_base_dir
from nanoseal.web.hub import Limits

LIMITS = Limits()  # the request limits, which also bound the defaults set by flags


def add_args(parser: argparse.ArgumentParser) -> None:
    """Flags of `nanoseal serve`."""
    parser.add_argument("--checkpoint", default=None,
                        help="base dir, phase dir or checkpoint folder (default: $NANOSEAL_BASE_DIR)")
    parser.add_argument("--source", default=None, choices=["base", "mid", "sft", "rl"])
    parser.add_argument("--step", type=NON_NEGATIVE_INT, default=None, help="checkpoint step (default: last)")
    parser.add_argument("--runs-dir", default=None, help="folder of `nanoseal seal` run directories "
                        "(default: <base dir>/runs)")
    parser.add_argument("--adapters-dir", default=None, help="folder of saved LoRA adapters "
                        "(default: <base dir>/adapters)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=PORT, default=8000)
    parser.add_argument("-t", "--temperature", type=float_in(0, LIMITS.max_temperature), default=0.8,
                        help="default sampling temperature")
    parser.add_argument("-k", "--top-k", type=int_in(0, LIMITS.max_top_k), default=50, help="default top-k")
    parser.add_argument("--max-tokens", type=int_in(1, LIMITS.max_tokens), default=512,
                        help="default max_tokens of a reply")
    parser.add_argument("--max-queue", type=int_in(0, 1024), default=4,
                        help="generations that may wait behind the running one; more get HTTP 503")
    parser.add_argument("--max-policies", type=int_in(1, 64), default=2, help="round policies kept in memory")
    parser.add_argument("--device", default=None, help="cpu | cuda | cuda:N | mps (default: autodetect)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"])


def run(args: argparse.Namespace) -> int:
    """Entry point of `nanoseal serve`."""
    try:
        import uvicorn

        from nanoseal.web.app import create_app
    except ImportError as e:
        raise NanosealError(f"nanoseal serve needs the web extra ({e.name} is missing): "
                            "pip install -e '.[web]'") from None
    from nanoseal.web.hub import ModelHub

    base = get_base_dir()
    runs_dir = args.runs_dir or os.path.join(base, "runs")
    adapters_dir = args.adapters_dir or os.path.join(base, "adapters")
    for flag, folder in (("--runs-dir", args.runs_dir), ("--adapters-dir", args.adapters_dir)):
        if folder and not os.path.isdir(folder):
            raise NanosealError(f"{flag} {folder}: " + ("is a file, expected a folder" if os.path.exists(folder)
                                                         else "no such folder"))
    hub = ModelHub.load(args.checkpoint or base, step=args.step, source=args.source, device=args.device,
                        dtype=args.dtype, adapters_dir=adapters_dir, runs_dir=runs_dir,
                        limits=Limits(max_queue=args.max_queue), max_policies=args.max_policies)
    app = create_app(hub, {"temperature": args.temperature, "top_k": args.top_k, "max_tokens": args.max_tokens})
    print(f"nanoseal serve: {hub.meta['checkpoint_dir']} ({hub.base_params / 1e6:.1f}M params) on "
          f"{hub.device}; runs {runs_dir}; adapters {adapters_dir}")
    print(f"open http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
