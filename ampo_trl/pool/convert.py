"""Converters from the public pool formats to the canonical schema (`ampo_trl.pool.schema`).

* ``"ampo"``: the official AMPO data (``target_lst`` + ``reward_model``, e.g. SII-Enigma/OpenR1-Math-4LongCoTs-8.5k);
* ``"luffy"``: LUFFY's single ``target`` (+ ``reward_model``, e.g. Elliott/Openr1-Math-46k-8192);
* ``"solutions_jsonl"``: ``{question, answer, solutions: {teacher: text}}`` rows;
* ``"canonical"``: already canonical (optionally normalised).

`detect_pool_format` tells them apart by their columns, `to_canonical` converts a dataset (counting what it drops
or normalises, never silently), `load_pool_dataset` loads a file or hub id and converts it.

A row that cannot be converted exactly is refused with `ampo_trl.errors.DataFormatError` naming its row (and file and
line for JSONL input), column and entry: an unreadable pool entry, a message that is not text, and a missing gold
(an AMPO / LUFFY row whose ``reward_model`` has no ``ground_truth``) is never turned into a made-up answer.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..answers import gold_answer_text as gold_text
from ..errors import DataFormatError
from ..records import Records, column_names, load_table, read_records, row_place, rows_to_dataset, to_python
from .schema import (
    DEFAULT_ANSWER_COLUMN,
    DEFAULT_POOL_COLUMN,
    DEFAULT_PROMPT_COLUMN,
    TEXT_KEYS,
    TeacherSolution,
    _read_entries,
    normalize_solution,
)

if TYPE_CHECKING:  # pragma: no cover
    from datasets import Dataset

logger = logging.getLogger(__name__)

#: Teacher name given to LUFFY-format targets (the official LUFFY / OpenR1 targets are DeepSeek-R1 traces).
LUFFY_DEFAULT_TEACHER = "DeepSeek-R1"

POOL_FORMATS = ("canonical", "ampo", "luffy", "solutions_jsonl")
QUESTION_KEYS = ("question", "problem")


def detect_pool_format(column_names: Iterable[str], pool_column: str = DEFAULT_POOL_COLUMN) -> str | None:
    """Which pool format a set of columns is in.

    * ``"canonical"``: has ``pool_column`` (default ``teacher_solutions``);
    * ``"ampo"``: ``target_lst`` and ``reward_model`` (official AMPO data, e.g. SII-Enigma/OpenR1-Math-4LongCoTs-8.5k);
    * ``"luffy"``: ``target`` and ``reward_model`` (LUFFY data, e.g. Elliott/Openr1-Math-46k-8192);
    * ``"solutions_jsonl"``: ``solutions``, ``answer`` and ``question`` (or ``problem``);
    * ``None``: none of these.
    """
    columns = set(column_names)
    if pool_column in columns:
        return "canonical"
    if {"target_lst", "reward_model"} <= columns:
        return "ampo"
    if {"target", "reward_model"} <= columns:
        return "luffy"
    if {"solutions", "answer"} <= columns and columns & set(QUESTION_KEYS):
        return "solutions_jsonl"
    return None


def _messages(prompt) -> list[dict] | str | None:
    prompt = to_python(prompt)
    if isinstance(prompt, (list, tuple)):
        return [dict(to_python(message)) for message in prompt]
    return prompt


def apply_system_prompt(prompt: str | list[dict] | None, system_prompt: str | None) -> str | list[dict] | None:
    """``None``: prompt unchanged; ``""``: system messages removed; text: system messages replaced by it (or one
    inserted first). A string prompt becomes ``[system, user]`` when a system prompt is set."""
    prompt = _messages(prompt)
    if system_prompt is None:
        return prompt
    if isinstance(prompt, str):
        if not system_prompt:
            return prompt
        return [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    messages = [message for message in (prompt or []) if message.get("role") != "system"]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def _entries_to_canonical(
    entries: list[TeacherSolution], normalize: bool, with_quality: bool, counts: Counter
) -> list[dict]:
    pool = []
    for solution in entries:
        text = solution.text
        if normalize:
            normalized = normalize_solution(text)
            if normalized != text:
                counts["normalized_entries"] += 1
            text = normalized
        entry = {"teacher": solution.teacher, "text": text}
        if with_quality:
            entry["quality_score"] = solution.quality_score
        pool.append(entry)
    return pool


def _drop_textless(value, counts: Counter):
    """Entries whose text is None are dropped (and counted) before parsing: converters never fail on them."""
    value = to_python(value)
    if isinstance(value, (list, tuple)):
        kept = []
        for entry in value:
            entry = to_python(entry)
            if isinstance(entry, dict) and all(entry.get(key) is None for key in TEXT_KEYS):
                counts["dropped_entries_without_text"] += 1
                continue
            kept.append(entry)
        return kept
    return value


def convert_ampo_row(
    row: dict, *, system_prompt: str | None = None, normalize: bool = True, counts: Counter | None = None
) -> dict:
    """Official AMPO row -> canonical columns (``prompt``, ``answer``, ``teacher_solutions``).

    ``target_lst`` = list of ``{content, source, quality_score, role}`` -> ``{"teacher": source, "text": content,
    "quality_score": quality_score}``; ``reward_model["ground_truth"]`` -> ``answer``.
    """
    counts = counts if counts is not None else Counter()
    entries = _entries_of(row, "target_lst", counts)
    prompt = apply_system_prompt(row.get("prompt"), system_prompt)
    return _canonical_row(prompt, _required_gold(row, "reward_model"), entries, normalize, True, counts)


def convert_luffy_row(
    row: dict,
    *,
    teacher_name: str = LUFFY_DEFAULT_TEACHER,
    system_prompt: str | None = None,
    normalize: bool = True,
    counts: Counter | None = None,
) -> dict:
    """LUFFY row -> canonical columns. ``target`` is a list of ``{"role", "content"}`` messages (one assistant
    message in the released data), a single such dict, or a plain string; each message becomes an entry of teacher
    ``teacher_name`` (``teacher_name_<i>`` from the second one on)."""
    counts = counts if counts is not None else Counter()
    target = to_python(row.get("target"))
    if isinstance(target, (str, dict)):
        target = [target]
    texts = []
    for message in target or []:
        message = to_python(message)
        if isinstance(message, dict):
            if message.get("role") not in (None, "assistant"):
                counts["skipped_non_assistant_messages"] += 1
                continue
            content = message.get("content")
        else:
            content = message
        if content is None:
            counts["dropped_entries_without_text"] += 1
            continue
        if not isinstance(content, str):
            raise DataFormatError(
                f"message content must be a string, got {type(content).__name__}.",
                column="target",
                entry=len(texts),
                fix="store each target message as {'role': 'assistant', 'content': text}.",
            )
        texts.append(content)
    entries = [
        TeacherSolution(teacher=teacher_name if index == 0 else f"{teacher_name}_{index}", text=text)
        for index, text in enumerate(texts)
    ]
    prompt = apply_system_prompt(row.get("prompt"), system_prompt)
    return _canonical_row(prompt, _required_gold(row, "reward_model"), entries, normalize, False, counts)


def convert_solutions_row(
    row: dict, *, system_prompt: str | None = None, normalize: bool = True, counts: Counter | None = None
) -> dict:
    """``{question (or problem), answer, solutions}`` row -> canonical columns. ``solutions`` may be a
    ``{teacher: text}`` mapping (``None`` values skipped), a list of ``{teacher, text}`` entries or of strings."""
    counts = counts if counts is not None else Counter()
    question = next((row[key] for key in QUESTION_KEYS if row.get(key) is not None), None)
    question = _messages(question)
    if isinstance(question, list):
        prompt = apply_system_prompt(question, system_prompt)
    else:
        prompt = [{"role": "user", "content": "" if question is None else str(question)}]
        if system_prompt:
            prompt.insert(0, {"role": "system", "content": system_prompt})
    entries = _entries_of(row, "solutions", counts)
    return _canonical_row(prompt, _required_gold(row, "answer"), entries, normalize, False, counts)


def _entries_of(row: dict, column: str, counts: Counter) -> list[TeacherSolution]:
    try:
        return [solution for solution, _ in _read_entries(_drop_textless(row.get(column), counts))]
    except DataFormatError as error:
        raise error.located(column=column) from None


def _required_gold(row: dict, column: str) -> str:
    """The row's gold answer as text; a missing or unreadable one is an error (never a made-up or empty answer)."""
    try:
        gold = gold_text(to_python(row.get(column)))
    except DataFormatError as error:
        raise error.located(column=column) from None
    if not gold:
        raise DataFormatError(
            "no gold answer (the value is missing or empty).",
            column=column,
            fix=f"add the final answer to '{column}' (for reward_model: {{'ground_truth': ...}}) or drop the row.",
        )
    return gold


def _canonical_row(prompt, gold: str, entries, normalize: bool, keep_quality: bool, counts: Counter) -> dict:
    """The canonical columns every converter returns; rows left without a solution are counted, not dropped."""
    if not entries:
        counts["rows_without_solutions"] += 1
    return {
        "prompt": prompt,
        "answer": gold,
        DEFAULT_POOL_COLUMN: _entries_to_canonical(entries, normalize, keep_quality, counts),
    }


_SOURCE_COLUMNS = {"ampo": ("target_lst",), "luffy": ("target",), "solutions_jsonl": ("solutions",)}


def _messages_feature():
    from datasets import Value

    return [{"content": Value("string"), "role": Value("string")}]


def _pool_feature(with_quality: bool, with_length: bool = False):
    from datasets import Value

    entry = {"teacher": Value("string"), "text": Value("string")}
    if with_length:
        entry["length"] = Value("int64")
    if with_quality:
        entry["quality_score"] = Value("float64")
    return [entry]


def to_canonical(
    dataset,
    source_format: str | None = None,
    *,
    pool_column: str = DEFAULT_POOL_COLUMN,
    answer_column: str = DEFAULT_ANSWER_COLUMN,
    prompt_column: str = DEFAULT_PROMPT_COLUMN,
    teacher_name: str = LUFFY_DEFAULT_TEACHER,
    system_prompt: str | None = None,
    normalize: bool | None = None,
    keep_source_columns: bool = False,
    num_proc: int | None = None,
    return_counts: bool = False,
):
    """Convert a dataset in any known pool format (auto-detected when ``source_format`` is None) to the canonical
    columns ``prompt_column`` / ``answer_column`` / ``pool_column``, keeping every other column.

    * ``source_format``: ``"ampo"``, ``"luffy"``, ``"solutions_jsonl"`` or ``"canonical"`` (see `detect_pool_format`);
    * ``teacher_name``: teacher of LUFFY targets (default ``"DeepSeek-R1"``, the author of the official targets);
    * ``system_prompt``: ``None`` keeps stored prompts as they are, ``""`` removes system messages, a text replaces
      them (``SYSTEM_PROMPT`` reproduces the paper);
    * ``normalize``: apply `normalize_solution` to every text (default: yes for converted formats, no for canonical);
    * ``keep_source_columns``: keep ``target_lst`` / ``target`` / ``solutions`` (dropped by default: they would be
      passed to every reward function);
    * ``return_counts``: also return a `Counter` (``rows``, ``normalized_entries``, ``dropped_entries_without_text``,
      ``rows_without_solutions`` ...). The counts are logged either way.

    ``dataset`` may be a `datasets.Dataset` or a list of row dicts (a `datasets.Dataset` is returned), or a
    streaming `datasets.IterableDataset` (converted lazily, without counts).
    """
    from datasets import Dataset, Features, Value

    rows_input = isinstance(dataset, (list, tuple))
    columns = column_names(dataset) or []
    detected = detect_pool_format(columns, pool_column=pool_column)
    if source_format is None:
        source_format = detected
        if source_format is None:
            raise ValueError(
                f"Cannot tell the pool format from the columns {columns}. Expected one of: '{pool_column}' "
                "(canonical); 'target_lst' + 'reward_model' (AMPO); 'target' + 'reward_model' (LUFFY); "
                "'question' (or 'problem') + 'answer' + 'solutions' (JSONL). Pass source_format= or rename columns."
            )
    if source_format not in POOL_FORMATS:
        raise ValueError(f"source_format must be one of {list(POOL_FORMATS)} or None, got {source_format!r}.")
    if normalize is None:
        normalize = source_format != "canonical"
    counts: Counter = Counter()

    if source_format == "canonical":
        if pool_column not in columns:
            raise ValueError(f"source_format='canonical' needs the column '{pool_column}'; columns are {columns}.")

        def convert(row, counts):
            out = {}
            if system_prompt is not None:
                out[prompt_column] = apply_system_prompt(row.get(prompt_column), system_prompt)
            if normalize:
                try:
                    entries = [solution for solution, _ in _read_entries(row.get(pool_column))]
                except DataFormatError as error:
                    raise error.located(column=pool_column) from None
                out[pool_column] = [
                    {
                        "teacher": s.teacher,
                        "text": _count_normalized(s.text, counts),
                        "length": s.length,
                        "quality_score": s.quality_score,
                    }
                    for s in entries
                ]
            return out

    else:
        required = {
            "ampo": ("target_lst", "reward_model"),
            "luffy": ("target", "reward_model"),
            "solutions_jsonl": ("solutions", "answer"),
        }[source_format]
        absent = [column for column in required if column not in columns]
        if source_format == "solutions_jsonl" and not set(QUESTION_KEYS) & set(columns):
            absent.append("question")
        if absent:
            raise ValueError(
                f"source_format={source_format!r} needs the columns {list(required)}; missing {absent} "
                f"(columns: {columns})."
            )

        def convert(row, counts):
            if source_format == "ampo":
                out = convert_ampo_row(row, system_prompt=system_prompt, normalize=normalize, counts=counts)
            elif source_format == "luffy":
                out = convert_luffy_row(
                    row, teacher_name=teacher_name, system_prompt=system_prompt, normalize=normalize, counts=counts
                )
            else:
                out = convert_solutions_row(row, system_prompt=system_prompt, normalize=normalize, counts=counts)
            return {
                prompt_column: out["prompt"],
                answer_column: out["answer"],
                pool_column: out[DEFAULT_POOL_COLUMN],
            }

    drop = [] if keep_source_columns or source_format == "canonical" else list(_SOURCE_COLUMNS[source_format])

    if rows_input:
        converted = []
        for row_index, row in enumerate(dataset):
            row = dict(row)
            new = _located_conversion(convert, row, row_index, counts, dataset)
            for column in drop:
                row.pop(column, None)
            row.update(new)
            converted.append(row)
        # Same file and lines as the input rows, so a column of mixed types is named with its lines.
        converted = Records(converted, getattr(dataset, "source", None), getattr(dataset, "line_numbers", None))
        result = rows_to_dataset(converted)
    elif not isinstance(dataset, Dataset):  # IterableDataset (streaming): converted lazily, counts unknown
        logger.info("to_canonical: a streaming dataset is converted lazily; entry counts are not collected.")
        result = dataset.map(
            lambda row, index: _located_conversion(convert, row, index), with_indices=True, remove_columns=drop
        )
        return (result, counts) if return_counts else result
    else:
        features = Features({name: feature for name, feature in dataset.features.items() if name not in drop})
        if source_format != "canonical" or system_prompt is not None:
            features[prompt_column] = _prompt_feature(dataset, prompt_column, source_format, system_prompt)
        if source_format != "canonical":
            features[answer_column] = Value("string")
            features[pool_column] = _pool_feature(with_quality=source_format == "ampo")
        elif normalize:
            features[pool_column] = _pool_feature(with_quality=True, with_length=True)
        features[_COUNTS_COLUMN] = Value("string")

        def convert_with_counts(row, row_index):
            # Counts travel in a temporary column, so they survive num_proc > 1 (worker processes).
            local: Counter = Counter()
            out = _located_conversion(convert, row, row_index, local)
            out[_COUNTS_COLUMN] = json.dumps(local) if local else ""
            return out

        result = dataset.map(
            convert_with_counts,
            with_indices=True,
            remove_columns=drop,
            features=features,
            num_proc=num_proc,
            desc=f"to_canonical({source_format})",
        )
        for encoded in result[_COUNTS_COLUMN]:
            if encoded:
                counts.update(json.loads(encoded))
        result = result.remove_columns(_COUNTS_COLUMN)
    counts["rows"] = len(result)
    _log_conversion(source_format, counts)
    return (result, counts) if return_counts else result


_COUNTS_COLUMN = "__ampo_pool_counts"


def _located_conversion(convert, row: dict, row_index: int, counts: Counter | None = None, rows=None) -> dict:
    """``convert(row, counts)``, with the row (and the file and line of `Records` input) added to its errors."""
    try:
        return convert(row, Counter() if counts is None else counts)
    except DataFormatError as error:
        raise error.located(**row_place(rows, row_index)) from None


def _count_normalized(text: str, counts: Counter) -> str:
    normalized = normalize_solution(text)
    if normalized != text:
        counts["normalized_entries"] += 1
    return normalized


def _prompt_feature(dataset, prompt_column, source_format, system_prompt):
    existing = dataset.features.get(prompt_column) if source_format != "solutions_jsonl" else None
    if source_format == "solutions_jsonl" or system_prompt:
        return _messages_feature()
    if existing is not None:
        return existing  # unchanged, or a string / message list with system messages removed
    return _messages_feature()


def _log_conversion(source_format: str, counts: Counter) -> None:
    details = ", ".join(f"{key}={value}" for key, value in sorted(counts.items()) if key != "rows")
    message = f"Converted {counts.get('rows', 0)} rows from the '{source_format}' pool format" + (
        f" ({details})." if details else "."
    )
    if counts.get("dropped_entries_without_text") or counts.get("rows_without_solutions"):
        logger.warning(message)
    else:
        logger.info(message)


def load_pool_dataset(
    source: str | os.PathLike | Dataset, split: str = "train", *, convert: bool = True, **to_canonical_kwargs
) -> Dataset:
    """Load a pool dataset (see `load_table`) and, when ``convert``, bring a recognised non-canonical format to the
    canonical columns with `to_canonical` (keyword arguments are passed on). JSONL / JSON files are converted row by
    row before Arrow sees them, so per-row ``{teacher: text}`` mappings with different teachers stay exact."""
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    try:
        return _load_pool_dataset(source, path, split, convert, to_canonical_kwargs)
    except DataFormatError as error:
        raise error.located(file=path if path and os.path.exists(path) else None) from None


def _load_pool_dataset(source, path: str | None, split: str, convert: bool, to_canonical_kwargs: dict) -> Dataset:
    pool_column = to_canonical_kwargs.get("pool_column", DEFAULT_POOL_COLUMN)
    if path and os.path.isfile(path) and path.endswith((".jsonl", ".json")):
        rows = read_records(path)
        if convert and rows and detect_pool_format(column_names(rows), pool_column) not in (None, "canonical"):
            return to_canonical(rows, **to_canonical_kwargs)
        return rows_to_dataset(rows)
    dataset = load_table(source, split=split) if path is not None else source
    if convert and detect_pool_format(dataset.column_names, pool_column) not in (None, "canonical"):
        return to_canonical(dataset, **to_canonical_kwargs)
    return dataset
