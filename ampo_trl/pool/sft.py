"""The pool as SFT data: one conversation per (question, teacher solution), the paper's SFT baseline."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from ..records import column_names, column_values
from .convert import _messages_feature, apply_system_prompt
from .schema import DEFAULT_POOL_COLUMN, DEFAULT_PROMPT_COLUMN, parse_pool

logger = logging.getLogger(__name__)


def export_sft_dataset(
    dataset,
    system_prompt: str | None = None,
    *,
    pool_column: str = DEFAULT_POOL_COLUMN,
    prompt_column: str = DEFAULT_PROMPT_COLUMN,
    teacher_column: str | None = "teacher",
    keep_columns: Sequence[str] = (),
    return_counts: bool = False,
):
    """The pool expanded to one row per (question, teacher solution) in TRL's conversational SFT format:
    ``{"messages": [system?, user, assistant]}`` (plus ``teacher_column`` with the teacher's name unless None, and
    ``keep_columns`` copied from the question row).

    ``system_prompt``: ``None`` keeps the prompt's own messages, ``""`` removes system messages, a text replaces
    them. Entries with empty text are skipped and counted; rows without solutions produce no pair (counted).
    Unreadable pools raise `ampo_trl.errors.DataFormatError` (run `validate_pool_dataset` first).
    """
    from datasets import Dataset, Features, Value

    columns = column_names(dataset) or []
    for column in (pool_column, prompt_column, *keep_columns):
        if column not in columns:
            raise ValueError(f"export_sft_dataset: the dataset has no column '{column}'; its columns are {columns}.")
    pools = column_values(dataset, pool_column)
    prompts = column_values(dataset, prompt_column)
    kept = {column: column_values(dataset, column) for column in keep_columns}
    out: dict[str, list] = {"messages": []}
    if teacher_column:
        out[teacher_column] = []
    for column in keep_columns:
        out[column] = []
    counts: Counter = Counter(rows=len(pools))
    for row_index, (pool, prompt) in enumerate(zip(pools, prompts)):
        messages = apply_system_prompt(prompt, system_prompt)
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        solutions = parse_pool(pool, row_index=row_index, column=pool_column)
        usable = [s for s in solutions if s.text.strip()]
        counts["empty_text_skipped"] += len(solutions) - len(usable)
        if not usable:
            counts["rows_without_solutions"] += 1
        for solution in usable:
            out["messages"].append(messages + [{"role": "assistant", "content": solution.text}])
            if teacher_column:
                out[teacher_column].append(solution.teacher)
            for column in keep_columns:
                out[column].append(kept[column][row_index])
    counts["pairs"] = len(out["messages"])
    features = {"messages": _messages_feature()}
    if teacher_column:
        features[teacher_column] = Value("string")
    if isinstance(dataset, Dataset):
        for column in keep_columns:
            features[column] = dataset.features[column]
    else:
        features = None
    result = Dataset.from_dict(out, features=Features(features) if features else None)
    logger.info(
        "SFT export: %d pairs from %d rows (%d rows without solutions, %d empty texts skipped).",
        counts["pairs"],
        counts["rows"],
        counts["rows_without_solutions"],
        counts["empty_text_skipped"],
    )
    return (result, counts) if return_counts else result
