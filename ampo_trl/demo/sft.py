"""The demo's SFT baseline (``demo_sft: true``): the warmed-up student trained by supervised learning on the
(prompt, teacher solution) pairs of the RL prompts' pools, then the same held-out evaluation as the RL runs.

Budget: the recipe's own optimizer settings, unchanged. The pairs are every pool entry of the RL prompts, in the RL
prompts' order (``demo_train_prompts`` prompts x 3 teachers); one optimizer step takes
``per_device_train_batch_size`` pairs (the 128 sequences an RL step trains on), for ``max_steps`` steps, with the
recipe's AdamW learning rate, schedule, warm-up, gradient clipping and seed. So SFT gets the same number of optimizer
steps on the same number of sequences per step as AMPO and GRPO, all of them teacher solutions: far more teacher
tokens than AMPO trains on (AMPO's teacher rows are ~10% of its rows), and no sampling cost. Lower ``max_steps`` to
match AMPO's teacher-row count instead (docs/demo.md).

Training is `transformers.Trainer` (the optimizer and scheduler code of `GRPOTrainer`, its parent) with the
warm-up's own example format and loss (`warmup.encode_pair`, `warmup.collate_supervised`: chat-templated prompt,
solution + EOS, loss on the solution only), so the student sees teacher text exactly as in its warm-up and as its RL
completions are scored.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .warmup import collate_supervised, encode_pair

if TYPE_CHECKING:  # pragma: no cover
    from transformers import Trainer, TrainingArguments

    from .run import DemoRun


def pool_pairs(rows: Sequence[dict], pool_column: str = "teacher_solutions") -> list[tuple[list[dict], str]]:
    """``(prompt messages, teacher text)`` for every pool entry of every row, in row order."""
    return [(row["prompt"], solution["text"]) for row in rows for solution in row[pool_column]]


class PairCollator:
    """Tokenizes a batch of ``(messages, text)`` pairs (lazily: only the steps that run pay for it)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, pairs: Sequence[tuple[list[dict], str]]) -> dict:
        items = [encode_pair(self.tokenizer, messages, text) for messages, text in pairs]
        return collate_supervised(self.tokenizer.pad_token_id, items)


def supervised_arguments(args: TrainingArguments) -> TrainingArguments:
    """Plain `TrainingArguments` with every `TrainingArguments` field of ``args`` (an `AMPOConfig`): the RL
    recipe's optimizer, schedule, batch size, steps, seed and logging, without the GRPO-only fields."""
    from transformers import TrainingArguments

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    values["remove_unused_columns"] = False  # the batches are (messages, text) pairs, not model kwargs
    return TrainingArguments(**values)


def train_on_pool(run: DemoRun, args: TrainingArguments, started: float | None = None) -> Trainer:
    """Run the SFT baseline: held-out evaluation before, training, saving (model, tokenizer, trainer state), held-out
    evaluation after, the summary and ``demo_summary.json`` (as `DemoRun.after_training` does for RL runs)."""
    from transformers import AutoModelForCausalLM, Trainer

    started = time.time() if started is None else started
    pairs = pool_pairs(run.train_dataset)
    if not pairs:
        raise ValueError("demo_sft: the RL prompts have no teacher solutions to train on (check pool_teachers).")
    model = AutoModelForCausalLM.from_pretrained(run.model_path)
    trainer = Trainer(
        model=model,
        args=supervised_arguments(args),
        train_dataset=pairs,
        data_collator=PairCollator(run.tokenizer),
        processing_class=run.tokenizer,
        callbacks=run.callbacks() or None,
    )
    run.before_training(trainer)
    trainer.train(resume_from_checkpoint=getattr(args, "resume_from_checkpoint", None))
    trainer.save_model(args.output_dir)
    trainer.save_state()
    run.after_training(trainer, started)
    return trainer
