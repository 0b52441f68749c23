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
missing from a row, mean "no solution"), and any of these JSON-encoded in a string. ``None`` is an empty pool.
Anything else is an error naming the row, column and entry.

`normalize_solution` brings ``<think>…</think>`` + ``\\boxed{x}`` texts into the ``<answer>`` format.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..answers import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, extract_boxed, last_answer_span
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


class PoolFormatError(ValueError):
    """A pool entry that cannot be read; the message names the row, column and entry."""


class _EntryError(Exception):
    def __init__(self, detail: str, entry_index: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.entry_index = entry_index


def _where(row_index: int | None, column: str, entry_index: int | None = None) -> str:
    place = f"column '{column}'"
    if row_index is not None:
        place = f"row {row_index}, {place}"
    if entry_index is not None:
        place += f", entry {entry_index}"
    return place


def _read_entries(value) -> list[tuple[TeacherSolution, bool]]:
    """Parse one pool value into ``(solution, teacher_was_named)`` pairs; raises `_EntryError`."""
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as error:
            raise _EntryError(
                "a string pool must be JSON (a list of {'teacher', 'text'} entries); "
                f"it could not be decoded ({error.msg})."
            ) from None
        if value is None:
            return []
    value = to_python(value)
    if isinstance(value, dict) and not any(key in TEXT_KEYS + TEACHER_KEYS for key in value):
        # {teacher: text} mapping. Arrow turns such mappings into structs with every teacher of the column as a
        # field, so a teacher without a solution in this row shows up as None: skip those.
        value = [{"teacher": str(teacher), "text": text} for teacher, text in value.items() if text is not None]
    if isinstance(value, dict):
        raise _EntryError("expected a list of teacher solutions, got a single dict; wrap it in a list.")
    if not isinstance(value, (list, tuple)):
        raise _EntryError(f"expected a list of {{'teacher': ..., 'text': ...}} entries, got {type(value).__name__}.")
    entries = []
    for entry_index, entry in enumerate(value):
        entry = to_python(entry)
        if isinstance(entry, str):
            entries.append((TeacherSolution(teacher=f"teacher_{entry_index}", text=entry), False))
            continue
        if not isinstance(entry, dict):
            raise _EntryError(
                f"expected a dict with 'teacher' and 'text' keys or a string, got {type(entry).__name__}.",
                entry_index,
            )
        # Arrow stores a list of dicts as structs, so absent keys come back as None: look for a non-None value.
        text_key = next((key for key in TEXT_KEYS if entry.get(key) is not None), None)
        if text_key is None:
            present = sorted(key for key, item in entry.items() if item is not None)
            raise _EntryError(
                f"no solution text; expected one of the keys {list(TEXT_KEYS)} with a string value, found {present}.",
                entry_index,
            )
        text = entry[text_key]
        if not isinstance(text, str):
            raise _EntryError(f"'{text_key}' must be a string, got {type(text).__name__}.", entry_index)
        teacher_key = next((key for key in TEACHER_KEYS if entry.get(key) is not None), None)
        teacher = str(entry[teacher_key]) if teacher_key is not None else f"teacher_{entry_index}"
        length = entry.get("length")
        quality = entry.get("quality_score")
        entries.append(
            (
                TeacherSolution(
                    teacher=teacher,
                    text=text,
                    length=int(length) if isinstance(length, (int, float)) and not isinstance(length, bool) else None,
                    quality_score=float(quality) if isinstance(quality, (int, float)) else None,
                ),
                teacher_key is not None and bool(str(entry[teacher_key]).strip()),
            )
        )
    return entries


def parse_pool(value: Any, row_index: int | None = None, column: str = DEFAULT_POOL_COLUMN) -> list[TeacherSolution]:
    """Read one row's pool into `TeacherSolution`s (entries with empty text are kept; the trainer skips them)."""
    try:
        return [solution for solution, _ in _read_entries(value)]
    except _EntryError as error:
        raise PoolFormatError(f"{_where(row_index, column, error.entry_index)}: {error.detail}") from None


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
