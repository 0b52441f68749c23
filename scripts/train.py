"""Train a model with AMPO (or the GRPO baseline) from a YAML recipe.

    accelerate launch scripts/train.py --config recipes/demo/ampo_cpu.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml scripts/train.py \
        --config recipes/qwen2.5-7b-instruct/ampo.yaml --output_dir runs/ampo-7b

Every field of `AMPOScriptArguments`, `AMPOConfig` and TRL's `ModelConfig` / `DatasetMixtureConfig` can be set in
the recipe or overridden on the command line (`--name value`). See docs/training.md.
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from ampo_trl.cli.train import main  # noqa: E402

if __name__ == "__main__":
    main()
