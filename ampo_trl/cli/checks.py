"""What the train script checks before it loads a model: reward names and weights, the correctness reward, gold
and pool columns, logging integrations, batch arithmetic. The pool itself is validated once, by `AMPOTrainer` at
start-up (with the student's tokenizer), never here."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..answers import GOLD_ANSWER_COLUMNS
from ..records import column_names
from ..rewards import resolve_reward_funcs
from .arguments import DEFAULT_REWARD_FUNCS, DEFAULT_REWARD_WEIGHTS
from .batching import BatchPlan, plan_from_config

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

    from ..config import AMPOConfig
    from .arguments import AMPOScriptArguments

logger = logging.getLogger("ampo_trl.train")

#: Reward functions that need the gold answer, and the columns `ampo_trl.rewards` reads it from.
_GOLD_REWARDS = ("accuracy_reward", "ampo_reward", "multiple_choice_reward")

_REPORT_TO_CHECKS = {
    "wandb": "is_wandb_available",
    "tensorboard": "is_tensorboard_available",
    "trackio": "is_trackio_available",
    "mlflow": "is_mlflow_available",
    "comet_ml": "is_comet_available",
    "clearml": "is_clearml_available",
    "swanlab": "is_swanlab_available",
}
_REPORT_TO_PACKAGES = {"tensorboard": "tensorboard", "comet_ml": "comet_ml"}


def resolve_rewards(names: Sequence[str]) -> list[Callable[..., list[float]]]:
    """Reward functions from short names or dotted paths (the working directory is importable, as in TRL)."""
    if not names:
        raise ValueError("reward_funcs is empty: name at least one reward function (e.g. [accuracy, format]).")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return resolve_reward_funcs(list(names))


def default_reward_weights(script_args: AMPOScriptArguments, training_args: AMPOConfig) -> None:
    """The paper's [0.9, 0.1] for the default [accuracy, format] when no reward_weights are given."""
    if training_args.reward_weights is None and list(script_args.reward_funcs) == list(DEFAULT_REWARD_FUNCS):
        training_args.reward_weights = list(DEFAULT_REWARD_WEIGHTS)


def check_report_to(report_to: str | Sequence[str] | None) -> list[str]:
    """The requested logging integrations, or a `ValueError` naming the ones that are not installed."""
    if report_to is None:
        return []
    requested = [report_to] if isinstance(report_to, str) else list(report_to)
    requested = [name for name in requested if name not in ("none", None)]
    if "all" in requested:
        return requested
    from transformers.integrations import integration_utils

    missing = []
    for name in requested:
        check = _REPORT_TO_CHECKS.get(name)
        if check is not None and hasattr(integration_utils, check) and not getattr(integration_utils, check)():
            missing.append(name)
    if missing:
        packages = " ".join(_REPORT_TO_PACKAGES.get(name, name) for name in missing)
        extra = " (or pip install 'ampo-trl[tracking]')" if set(missing) <= {"tensorboard", "trackio", "wandb"} else ""
        raise ValueError(
            f"report_to asks for {missing}, which {'is' if len(missing) == 1 else 'are'} not installed. Install it "
            f"(pip install {packages}){extra} or log elsewhere, e.g. --report_to none (console only) or tensorboard."
        )
    return requested


def validate_setup(
    dataset: Dataset,
    reward_funcs: Sequence[Callable],
    script_args: AMPOScriptArguments | None,
    training_args: AMPOConfig,
    num_processes: int | None = None,
) -> BatchPlan:
    """What can fail before the model is loaded and is not the trainer's to check: batch arithmetic, the prompt
    column, the gold column of the rewards that need one, one weight per reward. Returns the batch plan; raises
    `ValueError`. (The pool, its columns and the correctness reward are checked once, by `AMPOTrainer`.)"""
    plan = plan_from_config(training_args, num_processes)
    columns = column_names(dataset) or []
    if "prompt" not in columns:
        raise ValueError(f"The training data has no 'prompt' column; its columns are {columns}.")
    names = [getattr(function, "__name__", str(function)) for function in reward_funcs]
    needs_gold = [name for name in names if name in _GOLD_REWARDS]
    if needs_gold and not any(column in columns for column in (training_args.answer_column, *GOLD_ANSWER_COLUMNS)):
        raise ValueError(
            f"The reward(s) {needs_gold} need the gold answer in one of the columns {list(GOLD_ANSWER_COLUMNS)}; the "
            f"training data has {columns}. Map yours with dataset_answer_column."
        )
    weights = training_args.reward_weights
    if weights is not None and len(weights) != len(reward_funcs):
        raise ValueError(
            f"reward_weights has {len(weights)} value(s) {list(weights)} but there are {len(reward_funcs)} reward "
            f"function(s) {names}; give one weight per function."
        )
    return plan
