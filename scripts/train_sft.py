"""The paper's SFT baseline: TRL's SFTTrainer on every (question, teacher solution) pair of the guidance pool.

    accelerate launch --config_file accelerate_configs/ddp.yaml scripts/train_sft.py \
        --config recipes/qwen2.5-7b-instruct/sft.yaml

The pool data (AMPO `target_lst`, LUFFY `target`, canonical or solutions JSONL) is expanded to conversations with
`ampo_trl.pool.export_sft_dataset`; a dataset that already has a `messages` column is used as is. LoRA and
quantization come from TRL's `ModelConfig` (`use_peft`, `lora_target_modules`, ...). See docs/training.md.
"""

import os
import sys

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout too

from ampo_trl.cli.train_sft import sft_main  # noqa: E402

if __name__ == "__main__":
    sft_main()
