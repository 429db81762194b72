"""`python -m nanoseal <command>` is `nanoseal <command>` (also what torchrun launches)."""

import sys

from nanoseal.cli import main

sys.exit(main())
