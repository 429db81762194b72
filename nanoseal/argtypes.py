"""
argparse `type=` helpers with ranges, shared by every command's numeric flags, and the parser that reports a bad
flag in one line.

    parser = OneLineParser(prog="nanoseal")
    parser.add_argument("-t", "--temperature", type=float_in(0, 10), default=0.6)
    parser.add_argument("--steps", type=POSITIVE_INT)
    parser.add_argument("--lr", type=LEARNING_RATE)

A value out of range (or not a number, or nan/inf for a float) is refused while the command line is parsed:
`nanoseal chat: error: argument -t/--temperature: expected a number in [0, 10], got '-5'` on stderr, exit
status 2, before anything is loaded.
"""

import argparse
import math
from collections.abc import Callable


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (no usage block), exit status 2; subparsers too."""

    def error(self, message: str):
        """Print `<prog>: error: <message> (see <prog> --help)` and exit 2."""
        message = " ".join(str(message).split())
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _show(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _range_text(lo, hi, lo_open: bool = False) -> str:
    if hi is None:
        return f"{'>' if lo_open else '>='} {_show(lo)}"
    return f"in {'(' if lo_open else '['}{_show(lo)}, {_show(hi)}]"


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [lo, hi] (hi None: no upper bound)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer {_range_text(lo, hi)}, got {text[:40]!r}") from None
        if value < lo or (hi is not None and value > hi):
            raise argparse.ArgumentTypeError(f"expected an integer {_range_text(lo, hi)}, got {text[:40]!r}")
        return value
    parse.__name__ = f"integer {_range_text(lo, hi)}"
    return parse


def float_in(lo: float, hi: float | None = None, lo_open: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number in [lo, hi] ((lo, hi] with lo_open; hi None: no upper bound)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        ok = math.isfinite(value) and (value > lo if lo_open else value >= lo) and (hi is None or value <= hi)
        if not ok:
            raise argparse.ArgumentTypeError(f"expected a finite number {_range_text(lo, hi, lo_open)}, "
                                             f"got {text[:40]!r}")
        return value
    parse.__name__ = f"number {_range_text(lo, hi, lo_open)}"
    return parse


NON_NEGATIVE_INT = int_in(0)  # counts that may be 0 (steps to skip, queue places, a checkpoint step)
POSITIVE_INT = int_in(1)  # counts and sizes (steps, tokens, ranks, layers)
SEED = int_in(0, 2**32 - 1)  # what torch, numpy and random all accept
PORT = int_in(1, 65535)
POSITIVE_FLOAT = float_in(0, lo_open=True)  # budgets in minutes, scales
LEARNING_RATE = float_in(0, 10.0, lo_open=True)  # > 0, finite; anything past 10 is a typo
TEMPERATURE = float_in(0, 10.0)  # 0 = greedy
PROBABILITY = float_in(0, 1.0)
