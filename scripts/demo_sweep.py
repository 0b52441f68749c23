"""Run a grid of CPU-demo recipes x seeds in parallel (resumable) and write each table's Markdown and plots.

    python scripts/demo_sweep.py recipes/demo/sweeps/main.yml                       # the main table, 5 seeds
    python scripts/demo_sweep.py recipes/demo/sweeps/*.yml --jobs 2                 # every table
    python scripts/demo_sweep.py recipes/demo/sweeps/main.yml --seeds 0 1 --extra "--max_steps 5"   # smoke test

Each run is `accelerate launch --config_file accelerate_configs/single.yaml scripts/train.py --config R --demo_seed S
--seed S --output_dir ...`. See ampo_trl/demo/sweep.py and docs/demo.md.
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from ampo_trl.demo.sweep import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
