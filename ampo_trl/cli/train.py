"""`ampo train` / `scripts/train.py`: train a model with AMPO (or the GRPO baseline) from a YAML recipe.

The flow of :func:`main`:

1. parse ``--config recipe.yaml`` plus command-line overrides into `AMPOScriptArguments`, `AMPOConfig`, TRL's
   `ModelConfig` and `DatasetMixtureConfig` (a batch-size error names the arithmetic);
2. resolve the reward functions (short names of `ampo_trl.rewards.REWARD_FUNCS` or dotted import paths), check that
   the requested loggers are installed;
3. load the dataset (hub id, local parquet/jsonl/json/csv file, directory, or a TRL dataset mixture), map its
   columns, convert the official AMPO (``target_lst``) and LUFFY (``target``) formats to the canonical one, inject
   the system prompt when asked, filter teachers and over-long prompts (`ampo_trl.cli.data`);
4. check everything that needs no model (`ampo_trl.cli.checks.validate_setup`): columns, reward names and weights,
   the correctness reward, batch arithmetic;
5. build the `AMPOTrainer` (which loads the model, with PEFT / quantization from `ModelConfig`, and validates the pool
   with the student's tokenizer before any step), train, save model, tokenizer, trainer state and a model card (AMPO
   tag, paper citation, the recipe used), and optionally push to the hub.

With ``demo: true`` (see ``recipes/demo/``) the dataset and the model come from :mod:`ampo_trl.demo` instead, and
the run ends with a before/after summary, ``demo_summary.json`` and a plot; ``demo_sft: true`` replaces RL by the
demo's SFT baseline (:mod:`ampo_trl.demo.sft`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..answers import SYSTEM_PROMPT
from .arguments import Recipe, parse_args
from .checks import check_report_to, default_reward_weights, resolve_rewards, validate_setup
from .data import load_training_dataset
from .model_card import attach_model_card_extras, model_card_extras, write_model_card

if TYPE_CHECKING:  # pragma: no cover
    from trl import DatasetMixtureConfig, ModelConfig

    from ..config import AMPOConfig
    from ..evaluation import AMPOEvalCallback
    from ..trainer import AMPOTrainer
    from .arguments import AMPOScriptArguments

logger = logging.getLogger("ampo_trl.train")


def _configure_logging(training_args):
    import datasets
    import transformers

    level = training_args.get_process_log_level()
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    for name in ("ampo_trl", "ampo_trl.train"):
        logging.getLogger(name).setLevel(level)
    datasets.utils.logging.set_verbosity(level)
    transformers.utils.logging.set_verbosity(level)


def build_eval_callback(script_args: AMPOScriptArguments, training_args: AMPOConfig) -> AMPOEvalCallback | None:
    """The training-time evaluation callback for ``eval_file`` (None when unset)."""
    if not script_args.eval_file:
        return None
    from ..evaluation import AMPOEvalCallback

    system_prompt = script_args.system_prompt if script_args.system_prompt is not None else SYSTEM_PROMPT
    return AMPOEvalCallback(
        script_args.eval_file,
        every_n_steps=script_args.eval_file_steps,
        num_samples=script_args.eval_file_num_samples,
        max_new_tokens=script_args.eval_file_max_new_tokens or training_args.max_completion_length,
        temperature=script_args.eval_file_temperature,
        max_problems=script_args.eval_file_max_problems,
        system_prompt=system_prompt,
    )


def main(argv: Sequence[str] | None = None) -> AMPOTrainer:
    """Entry point of `scripts/train.py`. Returns the trainer (after training and saving; for the demo's SFT
    baseline, ``demo_sft: true``, a `transformers.Trainer`)."""
    script_args, training_args, model_args, dataset_args, recipe = parse_args(argv)
    return run(script_args, training_args, model_args, dataset_args, recipe)


def run(
    script_args: AMPOScriptArguments,
    training_args: AMPOConfig,
    model_args: ModelConfig,
    dataset_args: DatasetMixtureConfig | None = None,
    recipe: Recipe | None = None,
) -> AMPOTrainer:
    """Train with already-parsed arguments (see :func:`main`)."""
    recipe = recipe or Recipe()
    started = time.time()
    _configure_logging(training_args)
    if script_args.torch_num_threads:
        import torch

        torch.set_num_threads(script_args.torch_num_threads)

    # 1. Everything that needs no model: rewards, loggers, data, checks.
    reward_funcs = resolve_rewards(script_args.reward_funcs)
    default_reward_weights(script_args, training_args)
    check_report_to(training_args.report_to)

    demo_run = None
    if script_args.demo:
        from ..demo.run import prepare as prepare_demo

        demo_run = prepare_demo(script_args, training_args, model_args)
        dataset, tokenizer = demo_run.train_dataset, demo_run.tokenizer
    else:
        model_args.model_name_or_path = resolve_model_name(model_args.model_name_or_path)
        tokenizer = None
        if script_args.max_prompt_length is not None:
            tokenizer = _load_tokenizer(model_args, training_args)
        dataset = load_training_dataset(
            script_args,
            dataset_args,
            tokenizer=tokenizer,
            pool_column=training_args.guidance_pool_column,
            answer_column=training_args.answer_column,
            chat_template_kwargs=training_args.chat_template_kwargs,
        )
    plan = validate_setup(dataset, reward_funcs, script_args, training_args)
    logger.info("Batch layout: %s.", plan.describe())
    logger.info("Training rows: %d; columns: %s.", len(dataset), dataset.column_names)
    if demo_run is not None and demo_run.sft:  # the demo's SFT baseline: supervised training on the pool, no RL
        from ..demo.sft import train_on_pool

        return train_on_pool(demo_run, training_args, started)

    # 2. The model (loaded by the trainer from model_name_or_path, with PEFT / quantization from ModelConfig).
    from trl import get_peft_config, get_quantization_config

    from ..trainer import AMPOTrainer

    quantization_config = get_quantization_config(model_args)
    _set_model_init_kwargs(model_args, training_args)
    callbacks = [cb for cb in (build_eval_callback(script_args, training_args),) if cb is not None]
    if demo_run is not None:
        callbacks += demo_run.callbacks()
    trainer = AMPOTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks or None,
        peft_config=get_peft_config(model_args),
        quantization_config=quantization_config,
    )
    for callback in callbacks:
        if hasattr(callback, "attach"):
            callback.attach(trainer)
    extra_sections: list[str] = []
    attach_model_card_extras(trainer, lambda: model_card_extras(recipe, plan, extra_sections))
    if demo_run is not None:
        demo_run.before_training(trainer)

    # 3. Train, save, card, hub.
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.save_state()
    if demo_run is not None:
        summary = demo_run.after_training(trainer, started)
        extra_sections.append("## Demo summary\n\n```text\n" + summary + "\n```")
    write_model_card(trainer, script_args)
    trainer.accelerator.print(f"Model, tokenizer, trainer state and model card saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
        trainer.accelerator.print(f"Pushed to https://huggingface.co/{trainer.hub_model_id}.")
    if hasattr(trainer, "end"):
        trainer.end()
    return trainer


def _load_tokenizer(model_args, training_args):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
    )


def resolve_model_name(name: str | None) -> str:
    """``model_name_or_path`` as the trainers load it: ``tiny`` is the offline tiny model (built and cached on first
    use); anything else is a hub id or a local directory."""
    if not name:
        raise ValueError("model_name_or_path is required (a hub id or a local directory).")
    if name == "tiny":
        from ..demo.tiny import tiny_model_path

        return str(tiny_model_path())
    return name


def _set_model_init_kwargs(model_args, training_args) -> None:
    """How the trainer loads the model from `model_name_or_path`: ModelConfig's revision, attention and dtype,
    overridden by an explicit `model_init_kwargs`; unset values are left to transformers."""
    model_init_kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
    )
    if training_args.model_init_kwargs is not None:
        model_init_kwargs.update(training_args.model_init_kwargs)
    training_args.model_init_kwargs = {k: v for k, v in model_init_kwargs.items() if v is not None}


if __name__ == "__main__":  # `accelerate launch -m ampo_trl.cli.train --config ...`
    main()
