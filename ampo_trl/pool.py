"""The multi-guidance pool: one list of verified teacher solutions per prompt.

Canonical form of the pool column (default name ``teacher_solutions``), one entry per teacher::

    [{"teacher": "Qwen3-8B", "text": "<think>...</think><answer>42</answer>"},
     {"teacher": "DeepSeek-R1-Distill-Qwen-7B", "text": "...<answer>42</answer>"}]

Extra keys (``length``, ``quality_score`` ...) are allowed and ignored by the trainer. For convenience the parser
also accepts the spellings of the official AMPO data (``{"content", "source"}``), a plain list of strings (teachers
named ``teacher_0``, ``teacher_1`` ...), a ``{teacher: text}`` mapping, and any of these JSON-encoded in a string.
``None`` is an empty pool. Anything else is an error naming the row, column and entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

TEXT_KEYS = ("text", "content", "solution")
TEACHER_KEYS = ("teacher", "source", "model")


@dataclass(frozen=True)
class TeacherSolution:
    teacher: str
    text: str


class PoolFormatError(ValueError):
    """A pool entry that cannot be read; the message names the row, column and entry."""


def _where(row_index: int | None, column: str, entry_index: int | None = None) -> str:
    place = f"column '{column}'"
    if row_index is not None:
        place = f"row {row_index}, {place}"
    if entry_index is not None:
        place += f", entry {entry_index}"
    return place


def parse_pool(value, row_index: int | None = None, column: str = "teacher_solutions") -> list[TeacherSolution]:
    """Read one row's pool into `TeacherSolution`s (entries with empty text are kept; the trainer skips them)."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise PoolFormatError(
                f"{_where(row_index, column)}: a string pool must be JSON (a list of {{'teacher', 'text'}} entries); "
                f"it could not be decoded ({error.msg})."
            ) from None
        if value is None:
            return []
    if isinstance(value, dict) and not any(key in TEXT_KEYS + TEACHER_KEYS for key in value):
        value = [{"teacher": str(teacher), "text": text} for teacher, text in value.items()]
    if isinstance(value, dict):
        raise PoolFormatError(
            f"{_where(row_index, column)}: expected a list of teacher solutions, got a single dict; wrap it in a list."
        )
    if not isinstance(value, (list, tuple)) and not hasattr(value, "tolist"):
        raise PoolFormatError(
            f"{_where(row_index, column)}: expected a list of {{'teacher': ..., 'text': ...}} entries, "
            f"got {type(value).__name__}."
        )
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    solutions = []
    for entry_index, entry in enumerate(value):
        if isinstance(entry, str):
            solutions.append(TeacherSolution(teacher=f"teacher_{entry_index}", text=entry))
            continue
        if not isinstance(entry, dict):
            raise PoolFormatError(
                f"{_where(row_index, column, entry_index)}: expected a dict with 'teacher' and 'text' keys or a "
                f"string, got {type(entry).__name__}."
            )
        # Arrow stores a list of dicts as structs, so absent keys come back as None: look for a non-None value.
        text_key = next((key for key in TEXT_KEYS if entry.get(key) is not None), None)
        if text_key is None:
            present = sorted(key for key, value in entry.items() if value is not None)
            raise PoolFormatError(
                f"{_where(row_index, column, entry_index)}: no solution text; expected one of the keys "
                f"{list(TEXT_KEYS)} with a string value, found {present}."
            )
        text = entry[text_key]
        if not isinstance(text, str):
            raise PoolFormatError(
                f"{_where(row_index, column, entry_index)}: '{text_key}' must be a string, got {type(text).__name__}."
            )
        teacher_key = next((key for key in TEACHER_KEYS if entry.get(key) is not None), None)
        teacher = str(entry[teacher_key]) if teacher_key is not None else f"teacher_{entry_index}"
        solutions.append(TeacherSolution(teacher=teacher, text=text))
    return solutions
