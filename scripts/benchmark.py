#!/usr/bin/env python
"""AMPO vs GRPO cost on the same machine, in one run (a thin wrapper around `ampo_trl.cli.benchmark`)::

    python scripts/benchmark.py --steps 12 --rounds 2

See docs/benchmark.md for what each printed ratio measures.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from ampo_trl.cli.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
