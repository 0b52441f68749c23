#!/usr/bin/env python
"""Evaluate a checkpoint with the AMPO paper's protocol, compare runs, plot pass@k curves.

    python scripts/evaluate.py run --model PATH_OR_HUB_ID --benchmarks math6 [options]   # `run` may be omitted
    python scripts/evaluate.py compare RUN_A/results.json RUN_B/results.json [--baseline LABEL] [--output FILE.md]
    python scripts/evaluate.py plot RUN_A/results.json RUN_B/results.json --output curves.png

A thin wrapper around `ampo_trl.cli.evaluate`; see docs/evaluation.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout too

from ampo_trl.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
