"""Training data for the train scripts: load (hub id, local files, TRL mixture), map columns, convert the official
AMPO and LUFFY pool formats, inject the system prompt, filter teachers and over-long prompts; SFT pairs from the
pool. Never loads a model."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..answers import SYSTEM_PROMPT, gold_answer_text
from ..errors import DataFormatError
from ..pool import (
    apply_system_prompt,
    detect_pool_format,
    export_sft_dataset,
    load_pool_dataset,
    parse_pool,
    to_canonical,
)
from ..records import column_names

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase
    from trl import DatasetMixtureConfig

    from .arguments import PoolDataArguments, SFTScriptArguments

logger = logging.getLogger("ampo_trl.train")


def load_raw_dataset(script_args: PoolDataArguments, dataset_args: DatasetMixtureConfig | None) -> Dataset:
    """The training split as it is stored (no conversion): a TRL mixture, local files, or a hub dataset."""
    from datasets import concatenate_datasets, load_dataset

    split = script_args.dataset_train_split
    sources = [bool(dataset_args is not None and dataset_args.datasets), bool(script_args.dataset_files)]
    sources.append(bool(script_args.dataset_name))
    if sum(sources) == 0:
        raise ValueError(
            "No training data: set dataset_name (a hub id, a local file or a directory), dataset_files, or a "
            "`datasets:` mixture in the recipe."
        )
    if sum(sources) > 1:
        raise ValueError("Set only one of dataset_name, dataset_files and a `datasets:` mixture.")
    if dataset_args is not None and dataset_args.datasets:
        from trl import get_dataset

        mixture = get_dataset(dataset_args)
        return mixture[split] if split in mixture else mixture["train"]
    paths = list(script_args.dataset_files or [])
    name = script_args.dataset_name
    if name and (os.path.exists(name) or name.endswith((".parquet", ".jsonl", ".json", ".csv"))):
        paths = [name]
    if paths:
        parts = []
        for path in paths:
            if not os.path.exists(path):
                raise FileNotFoundError(f"Dataset file or directory not found: {path}")
            parts.append(load_pool_dataset(path, split=split, convert=False))
        return parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    dataset = load_dataset(name, name=script_args.dataset_config, split=split, streaming=script_args.dataset_streaming)
    return dataset


def map_columns(dataset: Dataset, script_args: PoolDataArguments, pool_column: str, answer_column: str) -> Dataset:
    """Rename the user's prompt / answer / pool columns to the names the trainer reads."""
    columns = column_names(dataset) or []
    targets = (
        (script_args.dataset_prompt_column, "prompt", "dataset_prompt_column"),
        (script_args.dataset_answer_column, answer_column, "dataset_answer_column"),
        (script_args.dataset_pool_column, pool_column, "dataset_pool_column"),
    )
    renames = {}
    for source, target, option in targets:
        if source is None or source == target:
            continue
        if source not in columns:
            raise ValueError(f"{option}={source!r}: the dataset has no such column; its columns are {columns}.")
        renames[source] = target
    if not renames:
        return dataset
    clashing = [target for source, target in renames.items() if target in columns and target not in renames]
    if clashing:
        logger.warning("Replacing the existing column(s) %s by the mapped ones.", clashing)
        dataset = dataset.remove_columns(clashing)
    return dataset.rename_columns(renames)


def load_training_dataset(
    script_args,
    dataset_args=None,
    tokenizer=None,
    *,
    pool_column: str = "teacher_solutions",
    answer_column: str = "answer",
    chat_template_kwargs: dict | None = None,
):
    """Load, map, convert and filter the training data (see the module docstring). Never loads a model.

    ``pool_column`` / ``answer_column``: the names the trainer reads (`AMPOConfig.guidance_pool_column` /
    ``answer_column``). ``tokenizer`` is only needed for ``max_prompt_length``.
    """
    dataset = load_raw_dataset(script_args, dataset_args)
    if not hasattr(dataset, "column_names") or dataset.column_names is None:
        raise ValueError("Streaming datasets are not supported by scripts/train.py; set dataset_streaming: false.")
    dataset = map_columns(dataset, script_args, pool_column, answer_column)
    source_format = script_args.dataset_format or detect_pool_format(dataset.column_names, pool_column)
    if source_format not in (None, "canonical"):
        dataset = to_canonical(
            dataset,
            source_format,
            pool_column=pool_column,
            answer_column=answer_column,
            teacher_name=script_args.luffy_teacher_name,
            normalize=script_args.normalize_solutions,
        )
    elif script_args.normalize_solutions and pool_column in dataset.column_names:
        dataset = to_canonical(dataset, "canonical", pool_column=pool_column, normalize=True)
    columns = dataset.column_names
    if answer_column not in columns and "reward_model" in columns:
        dataset = dataset.map(
            lambda row, index: {answer_column: _gold_of_row(row, index)},
            with_indices=True,
            desc="answer from reward_model.ground_truth",
        )
    if "prompt" not in dataset.column_names:
        raise ValueError(
            f"The training data has no 'prompt' column; its columns are {dataset.column_names}. Name the prompt "
            "column with dataset_prompt_column (e.g. --dataset_prompt_column question)."
        )

    system_prompt = SYSTEM_PROMPT if script_args.use_ampo_system_prompt else script_args.system_prompt
    if script_args.use_ampo_system_prompt and script_args.system_prompt is not None:
        raise ValueError("Set either system_prompt or use_ampo_system_prompt, not both.")
    wrap = script_args.wrap_prompt_in_chat
    if system_prompt is not None or wrap:

        def prompt_map(row):
            prompt = apply_system_prompt(row["prompt"], system_prompt)
            if wrap and isinstance(prompt, str):
                prompt = [{"role": "user", "content": prompt}]
            return {"prompt": prompt}

        dataset = dataset.map(prompt_map, desc="prompts")

    if script_args.pool_teachers:
        dataset = filter_pool_teachers(dataset, script_args.pool_teachers, pool_column)
    if script_args.max_train_samples is not None:
        dataset = dataset.select(range(min(script_args.max_train_samples, len(dataset))))
    if script_args.max_prompt_length is not None:
        if tokenizer is None:
            raise ValueError("max_prompt_length needs the tokenizer of the model.")
        dataset = drop_long_prompts(dataset, tokenizer, script_args.max_prompt_length, chat_template_kwargs)
    if len(dataset) == 0:
        raise ValueError("The training dataset is empty after loading and filtering.")
    return dataset


def _gold_of_row(row: dict, row_index: int) -> str:
    try:
        return gold_answer_text(row["reward_model"])
    except DataFormatError as error:
        raise error.located(row=row_index, column="reward_model") from None


def filter_pool_teachers(dataset: Dataset, teachers: Sequence[str], pool_column: str) -> Dataset:
    """Keep only ``teachers`` in every pool; an unknown teacher is an error listing the known ones."""
    if pool_column not in dataset.column_names:
        raise ValueError(f"pool_teachers is set but the dataset has no pool column '{pool_column}'.")
    wanted = list(dict.fromkeys(teachers))
    present: dict[str, int] = {}
    for index, pool in enumerate(dataset[pool_column]):
        for solution in parse_pool(pool, row_index=index, column=pool_column):
            present[solution.teacher] = present.get(solution.teacher, 0) + 1
    unknown = [name for name in wanted if name not in present]
    if unknown:
        known = ", ".join(f"{name} ({count})" for name, count in sorted(present.items()))
        raise ValueError(f"pool_teachers names {unknown}, not found in any pool. Teachers in the data: {known}.")

    def keep(row):
        solutions = parse_pool(row[pool_column], column=pool_column)
        return {pool_column: [{"teacher": s.teacher, "text": s.text} for s in solutions if s.teacher in wanted]}

    filtered = dataset.map(keep, desc=f"keep teachers {wanted}")
    logger.info("Pools restricted to %s (solutions per teacher before: %s).", wanted, present)
    return filtered


def drop_long_prompts(
    dataset: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    max_prompt_length: int,
    chat_template_kwargs: dict | None = None,
) -> Dataset:
    """Drop rows whose chat-templated prompt exceeds ``max_prompt_length`` tokens (logged)."""
    from trl.data_utils import is_conversational

    kwargs = dict(chat_template_kwargs or {})

    def length(row):
        prompt = row["prompt"]
        if is_conversational({"prompt": prompt}):
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, **kwargs)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return {"__prompt_tokens": len(ids)}

    measured = dataset.map(length, desc="prompt lengths")
    keep = [i for i, n in enumerate(measured["__prompt_tokens"]) if n <= max_prompt_length]
    dropped = len(dataset) - len(keep)
    if dropped:
        logger.warning(
            "Dropped %d of %d rows whose prompt is longer than max_prompt_length=%d tokens.",
            dropped,
            len(dataset),
            max_prompt_length,
        )
    return dataset.select(keep) if dropped else dataset


def load_sft_dataset(script_args: SFTScriptArguments, dataset_args: DatasetMixtureConfig | None = None) -> Dataset:
    """SFT pairs: a dataset that already has ``messages`` is used as is; otherwise the guidance pool is expanded to
    one conversation per (question, teacher solution) (`ampo_trl.pool.export_sft_dataset`: the SFT baseline)."""
    if script_args.max_prompt_length is not None:
        raise ValueError("max_prompt_length is for RL; for SFT set max_length (SFTConfig) instead.")
    raw_columns = None
    if not (dataset_args is not None and dataset_args.datasets):
        raw = load_raw_dataset(script_args, dataset_args)
        raw_columns = column_names(raw) or []
    if raw_columns is not None and "messages" in raw_columns:
        dataset = raw
    else:
        pool = load_training_dataset(
            script_args, dataset_args, pool_column=script_args.pool_column, answer_column=script_args.answer_column
        )
        if script_args.pool_column not in pool.column_names:
            raise ValueError(
                f"SFT needs either a 'messages' column or a guidance pool ('{script_args.pool_column}'); the data has "
                f"{pool.column_names}."
            )
        dataset = export_sft_dataset(pool, system_prompt=None, pool_column=script_args.pool_column)
    if script_args.completion_only:

        def split(row):
            messages = row["messages"]
            if not messages or messages[-1]["role"] != "assistant":
                raise ValueError("Every SFT conversation must end with an assistant message.")
            return {"prompt": messages[:-1], "completion": messages[-1:]}

        dataset = dataset.map(split, remove_columns=["messages"], desc="prompt/completion")
    return dataset
