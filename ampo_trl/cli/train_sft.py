"""`ampo train-sft` / `scripts/train_sft.py`: the paper's SFT baseline, TRL's SFTTrainer on every (question,
teacher solution) pair of the guidance pool (LoRA and quantization from TRL's `ModelConfig`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .arguments import Recipe, make_sft_parser
from .checks import check_report_to
from .data import load_sft_dataset
from .model_card import attach_model_card_extras, model_card_extras
from .recipes import resolve_config_argument
from .train import _configure_logging, _set_model_init_kwargs, resolve_model_name

if TYPE_CHECKING:  # pragma: no cover
    from trl import SFTTrainer

logger = logging.getLogger("ampo_trl.train")


def sft_main(argv: Sequence[str] | None = None) -> SFTTrainer:
    """Entry point of `scripts/train_sft.py` (the paper's SFT baseline: LoRA on all linear layers)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    recipe = Recipe.from_argv(argv)
    argv = resolve_config_argument(argv)
    script_args, training_args, model_args, dataset_args = make_sft_parser().parse_args_and_config(argv)
    _configure_logging(training_args)
    check_report_to(training_args.report_to)
    dataset = load_sft_dataset(script_args, dataset_args)
    logger.info("SFT rows: %d; columns: %s.", len(dataset), dataset.column_names)

    from trl import SFTTrainer, get_peft_config, get_quantization_config

    _set_model_init_kwargs(model_args, training_args)
    model_name = resolve_model_name(model_args.model_name_or_path)
    trainer = SFTTrainer(
        model=model_name,
        args=training_args,
        train_dataset=dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    attach_model_card_extras(
        trainer,
        lambda: model_card_extras(recipe, None, script="-m ampo_trl.cli.train_sft"),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if trainer.is_world_process_zero():
        trainer.create_model_card(
            model_name=Path(training_args.output_dir).name, dataset_name=script_args.dataset_name, tags=["ampo-sft"]
        )
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    if hasattr(trainer, "end"):
        trainer.end()
    return trainer


if __name__ == "__main__":  # `accelerate launch -m ampo_trl.cli.train_sft --config ...`
    sft_main()
