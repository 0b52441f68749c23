"""The pool's schema: one list of teacher solutions per prompt, and `parse_pool`, the single reader of a pool value.

Canonical schema (what `AMPOTrainer` reads; column names are configurable with ``guidance_pool_column`` and
``answer_column``), one row per question::

    {"prompt": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "What is 2+3?"}],
     "answer": "5",
     "teacher_solutions": [
         {"teacher": "Qwen3-8B", "text": "<think>2+3=5</think>\\n<answer>5</answer>", "length": 14},
         {"teacher": "DeepSeek-R1-Distill-Qwen-7B", "text": "...<answer>5</answer>"}]}

* ``prompt``: a string or a list of chat messages (``{"role", "content"}``), as for TRL's ``GRPOTrainer``;
* ``answer``: the ground-truth final answer (a string; numbers are accepted);
* ``teacher_solutions``: a list of entries, at most one per teacher, each with the teacher's name (``teacher``) and
  its solution text (``text``). Optional keys: ``length`` (tokens of the teacher's tokenizer), ``quality_score``
  (float); other keys are allowed and ignored by the trainer.

`parse_pool` accepts, besides the canonical entries, the spellings of the official AMPO data (``{"content",
"source"}``), ``"solution"`` for the text and ``"model"`` for the teacher, a plain list of strings (teachers named
``teacher_0``, ``teacher_1`` ...), a ``{teacher: text}`` mapping (``None`` values, which Arrow produces for teachers
missing from a row, mean "no solution"), and any of these JSON-encoded in a string. ``None`` (and pandas' NaN for a
missing cell) is an empty pool. The optional keys must be finite numbers when present (``length`` a whole one) and a
teacher name a string (an int is written as one). Anything else raises `ampo_trl.errors.DataFormatError` naming the
row, column and entry.

`normalize_solution` brings ``<think>…</think>`` + ``\\boxed{x}`` texts into the ``<answer>`` format.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..answers import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, extract_boxed, last_answer_span
from ..errors import DataFormatError
from ..records import to_python

DEFAULT_POOL_COLUMN = "teacher_solutions"
DEFAULT_ANSWER_COLUMN = "answer"
DEFAULT_PROMPT_COLUMN = "prompt"

TEXT_KEYS = ("text", "content", "solution")
TEACHER_KEYS = ("teacher", "source", "model")


@dataclass(frozen=True)
class TeacherSolution:
    """One pool entry. ``length`` and ``quality_score`` are optional metadata, ignored by the trainer."""

    teacher: str
    text: str
    length: int | None = None
    quality_score: float | None = None


_MISSING_POOL_FIX = "write the pool as a list of {'teacher': name, 'text': solution} entries (docs/data.md)."


def _where(row_index: int | None, column: str, entry_index: int | None = None) -> str:
    return DataFormatError("", row=row_index, column=column, entry=entry_index).place


def _is_missing(value) -> bool:
    """None, and the float NaN pandas uses for a missing cell."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _teacher_name(value, entry_index: int) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise DataFormatError(
        f"the teacher name must be a string, got {type(value).__name__}.",
        entry=entry_index,
        fix="give each entry a 'teacher' string such as 'Qwen3-8B'.",
    )


def _optional_number(value, key: str, entry_index: int, integer: bool):
    """``length`` / ``quality_score``: None when absent; a finite number otherwise, else an error."""
    if _is_missing(value):
        return None
    whole = isinstance(value, int) and not isinstance(value, bool)
    finite = whole or (isinstance(value, float) and math.isfinite(value))
    if not finite or (integer and not whole and not value.is_integer()):
        kind = "a whole number" if integer else "a finite number"
        raise DataFormatError(
            f"'{key}' must be {kind}, got {str(value)[:80]!r} ({type(value).__name__}).",
            entry=entry_index,
            fix=f"remove '{key}' or write {kind}.",
        )
    return int(value) if integer else float(value)


def _read_entries(value) -> list[tuple[TeacherSolution, bool]]:
    """Parse one pool value into ``(solution, teacher_was_named)`` pairs; raises `DataFormatError` (with the entry
    index when one entry is at fault; the caller adds row and column)."""
    if _is_missing(value):
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise DataFormatError(
                f"a string pool must be JSON (a list of {{'teacher', 'text'}} entries); it could not be decoded "
                f"({error.msg}).",
                fix="store the pool as a list, or as valid JSON text of a list.",
            ) from None
        if value is None:
            return []
    value = to_python(value)
    if isinstance(value, dict) and not any(key in TEXT_KEYS + TEACHER_KEYS for key in value):
        # {teacher: text} mapping. Arrow turns such mappings into structs with every teacher of the column as a
        # field, so a teacher without a solution in this row shows up as None: skip those.
        value = [{"teacher": str(teacher), "text": text} for teacher, text in value.items() if text is not None]
    if isinstance(value, dict):
        raise DataFormatError(
            "expected a list of teacher solutions, got a single dict.", fix="wrap the entry in a list: [entry]."
        )
    if not isinstance(value, (list, tuple)):
        raise DataFormatError(
            f"expected a list of {{'teacher': ..., 'text': ...}} entries, got {type(value).__name__}.",
            fix=_MISSING_POOL_FIX,
        )
    entries = []
    for entry_index, entry in enumerate(value):
        entry = to_python(entry)
        if isinstance(entry, str):
            entries.append((TeacherSolution(teacher=f"teacher_{entry_index}", text=entry), False))
            continue
        if not isinstance(entry, dict):
            raise DataFormatError(
                f"expected a dict with 'teacher' and 'text' keys or a string, got {type(entry).__name__}.",
                entry=entry_index,
                fix=_MISSING_POOL_FIX,
            )
        # Arrow stores a list of dicts as structs, so absent keys come back as None: look for a non-None value.
        text_key = next((key for key in TEXT_KEYS if entry.get(key) is not None), None)
        if text_key is None:
            present = sorted(str(key) for key, item in entry.items() if item is not None)
            raise DataFormatError(
                f"no solution text; expected one of the keys {list(TEXT_KEYS)} with a string value, found {present}.",
                entry=entry_index,
                fix="add the solution under 'text', or drop the entry.",
            )
        text = entry[text_key]
        if not isinstance(text, str):
            raise DataFormatError(
                f"'{text_key}' must be a string, got {type(text).__name__}.",
                entry=entry_index,
                fix="store the solution text as a string (decode bytes as UTF-8).",
            )
        teacher_key = next((key for key in TEACHER_KEYS if entry.get(key) is not None), None)
        teacher = _teacher_name(entry[teacher_key], entry_index) if teacher_key is not None else None
        entries.append(
            (
                TeacherSolution(
                    teacher=teacher if teacher is not None else f"teacher_{entry_index}",
                    text=text,
                    length=_optional_number(entry.get("length"), "length", entry_index, integer=True),
                    quality_score=_optional_number(entry.get("quality_score"), "quality_score", entry_index, False),
                ),
                teacher is not None and bool(teacher.strip()),
            )
        )
    return entries


def parse_pool(value: Any, row_index: int | None = None, column: str = DEFAULT_POOL_COLUMN) -> list[TeacherSolution]:
    """Read one row's pool into `TeacherSolution`s (entries with empty text are kept; the trainer skips them).

    Raises `ampo_trl.errors.DataFormatError` naming ``row_index``, ``column`` and the entry for a malformed pool."""
    try:
        return [solution for solution, _ in _read_entries(value)]
    except DataFormatError as error:
        raise error.located(row=row_index, column=column) from None


def normalize_solution(text: str) -> str:
    """Bring a ``<think>…</think>`` + ``\\boxed{x}`` solution into the ``<answer>`` format; otherwise unchanged.

    Exactly this is done:

    1. ``text`` already has an ``<answer>…</answer>`` pair: returned unchanged;
    2. ``text`` has a ``</think>`` but no ``<think>`` (templates such as DeepSeek-R1-Distill's end the prompt with
       ``<think>\\n``, so the model's output starts inside the thinking block): ``"<think>\\n"`` is prepended;
    3. the *answer part* is the text after the last ``</think>`` (the whole text when there is no ``</think>``;
       nothing when a ``<think>`` is never closed, i.e. a truncated thought). If it contains a ``\\boxed{x}``
       (last one, balanced braces), ``"\\n\\n<answer>x</answer>"`` is appended to the right-stripped text.
       Nothing else is changed: the reasoning and the boxed summary stay as written.

    Texts without a usable box are returned (after step 2) without an answer tag; the validator reports them.
    """
    if last_answer_span(text) is not None:
        return text
    if THINK_CLOSE in text and THINK_OPEN not in text[: text.find(THINK_CLOSE)]:
        text = THINK_OPEN + "\n" + text
    close = text.rfind(THINK_CLOSE)
    if close != -1:
        answer_part = text[close + len(THINK_CLOSE) :]
    elif THINK_OPEN in text:
        return text  # thinking never finished: no answer to extract
    else:
        answer_part = text
    boxed = extract_boxed(answer_part)
    if boxed is None:
        return text
    return f"{text.rstrip()}\n\n{ANSWER_OPEN}{boxed}{ANSWER_CLOSE}"
