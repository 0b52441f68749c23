"""``ampo demo``: the CPU demo with the recipe that ships with the package (``recipes/demo/``), from any directory.

::

    ampo demo                                   # recipes/demo/ampo_cpu.yaml: ~9 minutes on 2 CPU cores
    ampo demo --recipe grpo_cpu                 # the same run with guidance off (the GRPO baseline)
    ampo demo --recipe luffy_cpu                # LUFFY-style baseline: one teacher row in every group
    ampo demo --recipe sft_cpu                  # SFT on the pool's teacher solutions instead of RL
    ampo demo --max_steps 50 --output_dir runs/quick

Every option of ``ampo train`` may follow (they override the recipe). Equivalent to ``ampo train --config
demo/ampo_cpu [options]``; several processes: ``accelerate launch -m ampo_trl.cli.demo [options]``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .recipes import resolve_recipe

if TYPE_CHECKING:  # pragma: no cover
    from ..trainer import AMPOTrainer

#: The shipped demo recipes (recipes/demo/), the baselines of docs/demo.md included.
DEMO_RECIPES = ("ampo_cpu", "grpo_cpu", "luffy_cpu", "sft_cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ampo demo",
        description="The CPU demo with the recipe that ships with the package: the offline tiny model learns hard "
        "additions from three synthetic teachers (~9 minutes on 2 CPU cores; docs/demo.md). Equivalent to "
        "`ampo train --config demo/ampo_cpu [options]`.",
        allow_abbrev=False,  # `--r...` options belong to `ampo train`, not abbreviations of --recipe
        epilog="Any other option is passed to `ampo train` (see `ampo train --help`), e.g. --max_steps 50.",
    )
    parser.add_argument(
        "--recipe",
        choices=DEMO_RECIPES,
        default="ampo_cpu",
        help="ampo_cpu: AMPO; grpo_cpu: the same recipe with guidance off; luffy_cpu: one teacher row in every "
        "group (LUFFY-style); sft_cpu: supervised learning on the pool instead of RL (default: %(default)s)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> AMPOTrainer:
    """Run the shipped demo recipe through `ampo_trl.cli.train.main` (overrides after the demo's own options)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args, overrides = build_parser().parse_known_args(argv)
    from .train import main as train_main

    return train_main(["--config", str(resolve_recipe(f"demo/{args.recipe}")), *overrides])


if __name__ == "__main__":  # `accelerate launch -m ampo_trl.cli.demo ...`
    main()
