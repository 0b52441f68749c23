"""The model card of a training run: TRL's card (tags, the AMPO paper and its citation) plus how to reproduce the
run (command, batch layout, the recipe)."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .arguments import Recipe
from .batching import BatchPlan

if TYPE_CHECKING:  # pragma: no cover
    from transformers import Trainer

    from .arguments import PoolDataArguments


def model_card_extras(
    recipe: Recipe,
    plan: BatchPlan | None,
    extra_sections: Sequence[str] = (),
    script: str = "-m ampo_trl.cli.train",
) -> str:
    """Markdown appended to the TRL model card: how to reproduce this run (``script``: the entry point it ran, as
    ``accelerate launch`` takes it; the module form works from a checkout and from an installed wheel alike)."""
    lines = ["", "## Training recipe", ""]
    command = f"accelerate launch {script} " + " ".join(shlex.quote(arg) for arg in recipe.argv)
    lines += [
        "Trained with [ampo_trl](https://arxiv.org/abs/2510.02227) (AMPO on TRL):",
        "",
        "```bash",
        command,
        "```",
    ]
    if plan is not None:
        lines += ["", f"Batch layout: {plan.describe()}."]
    if recipe.text is not None:
        lines += ["", f"Recipe `{recipe.path}`:", "", "```yaml", recipe.text.rstrip(), "```"]
    for section in extra_sections:
        lines += ["", section.rstrip()]
    return "\n".join(lines) + "\n"


def attach_model_card_extras(trainer: Trainer, extras: Callable[[], str]) -> None:
    """Make every model card the trainer writes (checkpoints, the end of training, ``push_to_hub``) end with
    ``extras()``: TRL regenerates README.md from scratch each time, which would drop the recipe section."""
    original = trainer.create_model_card

    def create_model_card(*args, **kwargs):
        result = original(*args, **kwargs)
        card = Path(trainer.args.output_dir) / "README.md"
        if trainer.is_world_process_zero() and card.is_file():
            with open(card, "a", encoding="utf-8") as handle:
                handle.write(extras())
        return result

    trainer.create_model_card = create_model_card


def write_model_card(trainer: Trainer, script_args: PoolDataArguments) -> Path | None:
    """TRL's model card (tags trl/grpo/ampo, the AMPO paper and its citation) plus the attached extras (the recipe).
    Main process only."""
    if not trainer.is_world_process_zero():
        return None
    output_dir = Path(trainer.args.output_dir)
    if trainer.args.hub_model_id is None:
        model_name = output_dir.name
    else:
        model_name = trainer.args.hub_model_id.split("/")[-1]
    dataset_name = script_args.dataset_name or ("ampo_trl.demo" if script_args.demo else None)
    trainer.create_model_card(model_name=model_name, dataset_name=dataset_name)
    return output_dir / "README.md"
