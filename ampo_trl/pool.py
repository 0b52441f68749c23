"""The multi-guidance pool: one list of verified teacher solutions per prompt, and the tools around it.

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

`parse_pool` is the single place that reads a pool value. Besides the canonical entries it accepts the spellings of
the official AMPO data (``{"content", "source"}``), ``"solution"`` for the text and ``"model"`` for the teacher, a
plain list of strings (teachers named ``teacher_0``, ``teacher_1`` ...), a ``{teacher: text}`` mapping (``None``
values, which Arrow produces for teachers missing from a row, mean "no solution"), and any of these JSON-encoded in
a string. ``None`` is an empty pool. Anything else is an error naming the row, column and entry.

This module also provides

* `validate_pool_dataset` -> `PoolReport`: every problem with row index and field (fatal ones and warnings), and
  statistics (pool-size histogram, per-teacher counts, length percentiles);
* `detect_pool_format` / `to_canonical` / `load_pool_dataset`: converters from the official AMPO hub format
  (``target_lst`` + ``reward_model``), LUFFY's single-``target`` format and a plain
  ``{question, answer, solutions: {teacher: text}}`` JSONL;
* `normalize_solution`: ``<think>…</think>`` + ``\\boxed{x}`` texts -> the same text + ``<answer>x</answer>``;
* `export_sft_dataset`: the pool expanded to (question, solution) pairs in TRL's conversational SFT format.

Only the standard library is imported at module level (``datasets``, ``numpy`` and ``ampo_trl.rewards`` are
imported when needed), so the trainer's import of this module stays cheap.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .rewards import gold_answer_text as gold_text  # one normaliser for ground truths everywhere

logger = logging.getLogger(__name__)

#: System prompt of the paper (spec section 2), for training, evaluation and pool construction.
SYSTEM_PROMPT = (
    "You are a helpful assistant. Please reason step by step to solve the problem and put the final answer within "
    "the <answer> </answer> tags."
)

DEFAULT_POOL_COLUMN = "teacher_solutions"
DEFAULT_ANSWER_COLUMN = "answer"
DEFAULT_PROMPT_COLUMN = "prompt"

TEXT_KEYS = ("text", "content", "solution")
TEACHER_KEYS = ("teacher", "source", "model")

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

#: Teacher name given to LUFFY-format targets (the official LUFFY / OpenR1 targets are DeepSeek-R1 traces).
LUFFY_DEFAULT_TEACHER = "DeepSeek-R1"

POOL_FORMATS = ("canonical", "ampo", "luffy", "solutions_jsonl")
QUESTION_KEYS = ("question", "problem")


# ---------------------------------------------------------------------------------------------------------- parsing
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


def _to_python(value):
    """numpy arrays / scalars (parquet, pandas) -> Python lists / scalars; anything else unchanged."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()
    return value


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
    value = _to_python(value)
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
        entry = _to_python(entry)
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


def parse_pool(value, row_index: int | None = None, column: str = DEFAULT_POOL_COLUMN) -> list[TeacherSolution]:
    """Read one row's pool into `TeacherSolution`s (entries with empty text are kept; the trainer skips them)."""
    try:
        return [solution for solution, _ in _read_entries(value)]
    except _EntryError as error:
        raise PoolFormatError(f"{_where(row_index, column, error.entry_index)}: {error.detail}") from None


# -------------------------------------------------------------------------------------------------- answer format
def has_answer_tag(text: str) -> bool:
    """True iff ``text`` has an ``<answer>`` followed later by a ``</answer>`` (what comprehension scoring needs)."""
    open_index = text.find(ANSWER_OPEN)
    return open_index != -1 and text.find(ANSWER_CLOSE, open_index) != -1


def answer_format_ok(text: str) -> bool:
    """The format reward's rule: exactly one ``<answer>`` and one ``</answer>``, the opening one first."""
    return (
        text.count(ANSWER_OPEN) == 1
        and text.count(ANSWER_CLOSE) == 1
        and text.index(ANSWER_OPEN) < text.index(ANSWER_CLOSE)
    )


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
    if has_answer_tag(text):
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
    from .rewards import extract_boxed

    boxed = extract_boxed(answer_part)
    if boxed is None:
        return text
    return f"{text.rstrip()}\n\n{ANSWER_OPEN}{boxed}{ANSWER_CLOSE}"


# ---------------------------------------------------------------------------------------------------- validation
class PoolProblem(NamedTuple):
    """One problem found by `validate_pool_dataset`. ``message`` is a full sentence that names the place."""

    row_index: int | None
    field: str
    message: str

    def __str__(self) -> str:
        return self.message


#: Problem kinds: fatal ones make `PoolReport.raise_if_fatal` raise; the others are warnings.
FATAL_KINDS = {
    "missing_column": "a required column is absent",
    "unreadable_pool": "the pool value or an entry cannot be read (not a list, entry without text, ...)",
    "bad_prompt": "the prompt is missing, empty or not a string / list of chat messages",
}
WARNING_KINDS = {
    "empty_answer": "the ground-truth answer is missing or empty (comprehension scores are then 0)",
    "empty_pool": "no teacher solution with text: the row's groups cannot be guided",
    "empty_text": "an entry's text is empty (the trainer skips it)",
    "missing_teacher": "an entry has no teacher name (named teacher_<i>)",
    "duplicate_teacher": "a teacher appears more than once in a row's pool",
    "no_answer_tag": "a solution has no <answer>…</answer> pair (comprehension score 0)",
    "bad_answer_format": "a solution has an answer pair but not exactly one <answer> and one </answer>",
    "too_long": "a solution is longer than max_tokens (EOS included): the trainer skips it",
    "special_token_text": "a solution contains a special-token string of the tokenizer (kept as plain text)",
    "wrong_answer": "a solution's answer does not verify against the ground truth (check_answers=True)",
}


@dataclass
class PoolStats:
    """Statistics of a pool dataset (usable entries = entries with non-empty text)."""

    rows: int = 0
    solutions: int = 0
    pool_size_histogram: dict[int, int] = field(default_factory=dict)
    teacher_counts: dict[str, int] = field(default_factory=dict)
    char_length_percentiles: dict[str, float] = field(default_factory=dict)
    token_length_percentiles: dict[str, float] | None = None
    per_teacher: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "solutions": self.solutions,
            "pool_size_histogram": {str(k): v for k, v in sorted(self.pool_size_histogram.items())},
            "teacher_counts": dict(self.teacher_counts),
            "char_length_percentiles": dict(self.char_length_percentiles),
            "token_length_percentiles": self.token_length_percentiles,
            "per_teacher": self.per_teacher,
        }


PERCENTILES = (0, 10, 25, 50, 75, 90, 99, 100)


def length_percentiles(lengths: Sequence[float]) -> dict[str, float]:
    """``{"min", "p10", "p25", "p50", "p75", "p90", "p99", "max", "mean"}`` (linear interpolation); ``{}`` if empty."""
    if not len(lengths):
        return {}
    import numpy as np

    values = np.asarray(lengths, dtype=float)
    points = np.percentile(values, PERCENTILES)
    names = ["min"] + [f"p{p}" for p in PERCENTILES[1:-1]] + ["max"]
    result = {name: float(point) for name, point in zip(names, points)}
    result["mean"] = float(values.mean())
    return result


@dataclass
class PoolReport:
    """Result of `validate_pool_dataset`.

    ``errors`` / ``warnings`` hold `PoolProblem` s (``(row_index, field, message)``), at most
    ``max_problems_per_kind`` of each kind; ``error_counts`` / ``warning_counts`` count *every* problem by kind, so
    ``num_errors`` / ``num_warnings`` are exact even when examples were capped.
    """

    pool_column: str = DEFAULT_POOL_COLUMN
    errors: list[PoolProblem] = field(default_factory=list)
    warnings: list[PoolProblem] = field(default_factory=list)
    error_counts: Counter = field(default_factory=Counter)
    warning_counts: Counter = field(default_factory=Counter)
    stats: PoolStats = field(default_factory=PoolStats)
    max_problems_per_kind: int = 10_000
    _kept: Counter = field(default_factory=Counter, repr=False)
    _by_kind: dict[str, list[PoolProblem]] = field(default_factory=lambda: defaultdict(list), repr=False)

    def add(self, kind: str, row_index: int | None, field_name: str, message: str) -> None:
        fatal = kind in FATAL_KINDS
        (self.error_counts if fatal else self.warning_counts)[kind] += 1
        if self._kept[kind] >= self.max_problems_per_kind:
            return
        self._kept[kind] += 1
        problem = PoolProblem(row_index, field_name, message)
        (self.errors if fatal else self.warnings).append(problem)
        self._by_kind[kind].append(problem)

    def problems(self, kind: str) -> list[PoolProblem]:
        """The recorded problems of one kind (see `FATAL_KINDS` and `WARNING_KINDS`)."""
        return list(self._by_kind.get(kind, []))

    @property
    def num_errors(self) -> int:
        return sum(self.error_counts.values())

    @property
    def num_warnings(self) -> int:
        return sum(self.warning_counts.values())

    @property
    def ok(self) -> bool:
        """No fatal problem."""
        return self.num_errors == 0

    def raise_if_fatal(self, max_listed: int = 20) -> PoolReport:
        """Raise `PoolFormatError` listing the first ``max_listed`` fatal problems and the total; else return self."""
        if self.ok:
            return self
        lines = [
            f"The guidance pool dataset has {self.num_errors} fatal problem(s) "
            f"({', '.join(f'{kind}: {n}' for kind, n in sorted(self.error_counts.items()))}):"
        ]
        lines += [f"  - {problem.message}" for problem in self.errors[:max_listed]]
        if self.num_errors > max_listed:
            lines.append(f"  ... and {self.num_errors - max_listed} more.")
        lines.append(
            "Fix the rows (see docs/data.md for the schema), convert the dataset with ampo_trl.pool.to_canonical, "
            "or check it with `python -m ampo_trl.pool_cli validate <dataset>`."
        )
        raise PoolFormatError("\n".join(lines))

    def summary(self) -> str:
        """A short multi-line text: rows, counts by kind with one example each, pool sizes and teachers."""
        stats = self.stats
        lines = [
            f"Guidance pool check: {stats.rows} rows, {stats.solutions} usable solutions in column "
            f"'{self.pool_column}'; {self.num_errors} error(s), {self.num_warnings} warning(s)."
        ]
        for title, counts, kinds in (("error", self.error_counts, FATAL_KINDS), ("warning", self.warning_counts, {})):
            for kind, count in sorted(counts.items()):
                example = self._by_kind.get(kind)
                hint = kinds.get(kind) or WARNING_KINDS.get(kind, "")
                line = f"  {title} {kind}: {count} ({hint})"
                if example:
                    line += f"; e.g. {example[0].message}"
                lines.append(line if len(line) <= 300 else line[:297] + "...")
        if stats.pool_size_histogram:
            sizes = ", ".join(f"{size}: {n}" for size, n in sorted(stats.pool_size_histogram.items()))
            lines.append(f"  pool sizes (solutions: rows): {sizes}")
        if stats.teacher_counts:
            teachers = ", ".join(f"{name}: {n}" for name, n in sorted(stats.teacher_counts.items()))
            lines.append(f"  solutions per teacher: {teachers}")
        return "\n".join(lines)


def _column_names(dataset) -> list[str] | None:
    names = getattr(dataset, "column_names", None)
    if isinstance(names, dict):  # DatasetDict: {split: columns}
        raise TypeError(f"Got a DatasetDict with splits {list(names)}; pass one split, e.g. dataset['train'].")
    if names is not None:
        return list(names)
    if hasattr(dataset, "columns") and hasattr(dataset, "iloc"):  # pandas
        return [str(name) for name in dataset.columns]
    if isinstance(dataset, dict):
        return list(dataset)
    if isinstance(dataset, (list, tuple)):
        names: dict[str, None] = {}
        for row in dataset:
            names.update(dict.fromkeys(row))
        return list(names)
    return None


def _column_values(dataset, column: str) -> list:
    if isinstance(dataset, (list, tuple)):
        return [row.get(column) for row in dataset]
    if isinstance(dataset, dict):
        return list(dataset[column])
    if hasattr(dataset, "iloc"):
        return dataset[column].tolist()
    return list(dataset[column])


def _check_prompt(prompt) -> str | None:
    """None if the prompt is usable, else the reason."""
    prompt = _to_python(prompt)
    if prompt is None:
        return "the prompt is missing (None)."
    if isinstance(prompt, str):
        return None if prompt.strip() else "the prompt is an empty string."
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            return "the prompt is an empty list of messages."
        for index, message in enumerate(prompt):
            message = _to_python(message)
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"message {index} is not a {{'role', 'content'}} dict: {str(message)[:80]!r}."
            if message.get("content") is None and not message.get("tool_calls"):
                return f"message {index} (role {message['role']!r}) has no content."
        return None
    return f"expected a string or a list of chat messages, got {type(prompt).__name__}."


def _answer_is_empty(answer) -> bool:
    answer = _to_python(answer)
    if answer is None:
        return True
    if isinstance(answer, dict) and "ground_truth" in answer:
        return _answer_is_empty(answer["ground_truth"])
    if isinstance(answer, (list, tuple)):
        return not any(not _answer_is_empty(item) for item in answer)
    return not str(answer).strip()


def validate_pool_dataset(
    dataset,
    pool_column: str = DEFAULT_POOL_COLUMN,
    answer_column: str = DEFAULT_ANSWER_COLUMN,
    prompt_column: str | None = DEFAULT_PROMPT_COLUMN,
    tokenizer=None,
    max_tokens: int | None = None,
    *,
    check_answers: bool = False,
    verify_timeout: float = 5.0,
    max_problems_per_kind: int = 10_000,
) -> PoolReport:
    """Check a pool dataset row by row and collect statistics; never raises on bad rows (see `PoolReport`).

    ``dataset``: a `datasets.Dataset`, a list of row dicts, a dict of columns or a pandas DataFrame.
    ``tokenizer``: when given, token lengths (solution tokens + EOS, as the trainer counts them) are added to the
    statistics; with ``max_tokens`` too, longer solutions are reported as ``too_long``.
    ``check_answers``: also verify each solution's answer (`ampo_trl.rewards.extract_answer` + Math-Verify)
    against the row's answer and warn ``wrong_answer`` (slower: Math-Verify runs on every non-identical pair).
    ``prompt_column=None`` skips the prompt checks.

    Fatal kinds: see `FATAL_KINDS`; warnings: see `WARNING_KINDS`.
    """
    if max_tokens is not None and tokenizer is None:
        raise ValueError("max_tokens needs a tokenizer: token lengths are counted with the student's tokenizer.")
    report = PoolReport(pool_column=pool_column, max_problems_per_kind=max_problems_per_kind)
    columns = _column_names(dataset)
    if columns is None:
        raise TypeError(
            f"validate_pool_dataset needs a datasets.Dataset, a list of row dicts, a dict of columns or a pandas "
            f"DataFrame, got {type(dataset).__name__} (an IterableDataset cannot be checked up front)."
        )
    required = [(pool_column, "guidance_pool_column"), (answer_column, "answer_column")]
    if prompt_column is not None:
        required.append((prompt_column, "prompt column"))
    missing = [(column, option) for column, option in required if column not in columns]
    for column, option in missing:
        detected = detect_pool_format(columns, pool_column=pool_column)
        hint = (
            f" The columns look like the '{detected}' format: convert them with ampo_trl.pool.to_canonical(dataset)."
            if detected not in (None, "canonical")
            else ""
        )
        report.add(
            "missing_column",
            None,
            column,
            f"The dataset has no column '{column}' ({option}); its columns are {columns}. Add the column or point "
            f"{option} at the right one.{hint}",
        )
    if missing:
        return report

    pools = _column_values(dataset, pool_column)
    answers = _column_values(dataset, answer_column)
    prompts = _column_values(dataset, prompt_column) if prompt_column is not None else [None] * len(pools)
    stats = report.stats
    stats.rows = len(pools)
    sizes: Counter = Counter()
    teacher_counts: Counter = Counter()
    char_lengths: list[int] = []
    texts: list[str] = []  # usable texts, in order, for token counting
    owners: list[tuple[int, int, str]] = []  # (row, entry, teacher) of each usable text
    per_teacher_chars: dict[str, list[int]] = defaultdict(list)
    answer_checks: list[tuple[int, int, str, str]] = []

    for row_index, (pool, answer, prompt) in enumerate(zip(pools, answers, prompts)):
        if prompt_column is not None:
            reason = _check_prompt(prompt)
            if reason is not None:
                report.add(
                    "bad_prompt", row_index, prompt_column, f"row {row_index}, column '{prompt_column}': {reason}"
                )
        empty_answer = _answer_is_empty(answer)
        if empty_answer:
            report.add(
                "empty_answer",
                row_index,
                answer_column,
                f"row {row_index}, column '{answer_column}': the ground-truth answer is missing or empty.",
            )
        try:
            entries = _read_entries(pool)
        except _EntryError as error:
            field_name = pool_column if error.entry_index is None else f"{pool_column}[{error.entry_index}]"
            report.add(
                "unreadable_pool",
                row_index,
                field_name,
                f"{_where(row_index, pool_column, error.entry_index)}: {error.detail}",
            )
            continue
        seen: Counter = Counter()
        usable = 0
        for entry_index, (solution, named) in enumerate(entries):
            where = _where(row_index, pool_column, entry_index)
            field_name = f"{pool_column}[{entry_index}]"
            if not named:
                report.add(
                    "missing_teacher",
                    row_index,
                    f"{field_name}.teacher",
                    f"{where}: no teacher name (keys {list(TEACHER_KEYS)}); it is called '{solution.teacher}'.",
                )
            seen[solution.teacher] += 1
            if seen[solution.teacher] == 2:
                report.add(
                    "duplicate_teacher",
                    row_index,
                    f"{field_name}.teacher",
                    f"{where}: teacher '{solution.teacher}' appears more than once in this pool (AMPO keeps at most "
                    "one solution per teacher).",
                )
            text = solution.text
            if not text.strip():
                report.add("empty_text", row_index, f"{field_name}.text", f"{where}: the solution text is empty.")
                continue
            usable += 1
            teacher_counts[solution.teacher] += 1
            char_lengths.append(len(text))
            per_teacher_chars[solution.teacher].append(len(text))
            texts.append(text)
            owners.append((row_index, entry_index, solution.teacher))
            if not has_answer_tag(text):
                report.add(
                    "no_answer_tag",
                    row_index,
                    f"{field_name}.text",
                    f"{where} (teacher '{solution.teacher}'): no <answer>…</answer> pair; comprehension selection "
                    "scores it 0 (ampo_trl.pool.normalize_solution converts \\boxed{} answers).",
                )
            elif not answer_format_ok(text):
                report.add(
                    "bad_answer_format",
                    row_index,
                    f"{field_name}.text",
                    f"{where} (teacher '{solution.teacher}'): {text.count(ANSWER_OPEN)} '<answer>' and "
                    f"{text.count(ANSWER_CLOSE)} '</answer>' tags; the format reward wants exactly one of each.",
                )
            if check_answers and not empty_answer:
                answer_checks.append((row_index, entry_index, solution.teacher, text))
        sizes[usable] += 1
        if usable == 0:
            report.add(
                "empty_pool",
                row_index,
                pool_column,
                f"row {row_index}, column '{pool_column}': no teacher solution with text; the row's groups cannot "
                "be guided.",
            )

    stats.solutions = len(texts)
    stats.pool_size_histogram = dict(sorted(sizes.items()))
    stats.teacher_counts = dict(sorted(teacher_counts.items(), key=lambda item: (-item[1], item[0])))
    stats.char_length_percentiles = length_percentiles(char_lengths)
    stats.per_teacher = {
        name: {"solutions": float(len(lengths)), **{f"chars_{k}": v for k, v in length_percentiles(lengths).items()}}
        for name, lengths in per_teacher_chars.items()
    }

    if tokenizer is not None and texts:
        token_lengths = count_tokens(tokenizer, texts, add_eos=True)
        stats.token_length_percentiles = length_percentiles(token_lengths)
        per_teacher_tokens: dict[str, list[int]] = defaultdict(list)
        special_strings = [token for token in getattr(tokenizer, "all_special_tokens", []) if len(token) > 1]
        for (row_index, entry_index, teacher), length, text in zip(owners, token_lengths, texts):
            found = [token for token in special_strings if token in text]
            if found:
                report.add(
                    "special_token_text",
                    row_index,
                    f"{pool_column}[{entry_index}].text",
                    f"{_where(row_index, pool_column, entry_index)} (teacher '{teacher}'): contains the tokenizer's "
                    f"special-token string(s) {found}; the trainer keeps them as plain text, never as control tokens.",
                )
            per_teacher_tokens[teacher].append(length)
            if max_tokens is not None and length > max_tokens:
                report.add(
                    "too_long",
                    row_index,
                    f"{pool_column}[{entry_index}].text",
                    f"{_where(row_index, pool_column, entry_index)} (teacher '{teacher}'): {length} tokens with EOS, "
                    f"more than max_tokens={max_tokens}; the trainer skips it (raise max_teacher_length to keep it).",
                )
        for name, lengths in per_teacher_tokens.items():
            stats.per_teacher[name].update({f"tokens_{k}": v for k, v in length_percentiles(lengths).items()})

    if answer_checks:
        _check_answers(report, answer_checks, answers, pool_column, verify_timeout)
    return report


def count_tokens(tokenizer, texts: Sequence[str], add_eos: bool = True, batch_size: int = 512) -> list[int]:
    """Token count of each text (no special tokens added; +1 for the EOS the trainer appends when ``add_eos``)."""
    lengths = []
    for start in range(0, len(texts), batch_size):
        # As the trainer tokenizes teacher rows: special-token strings inside the text stay plain text.
        batch = list(texts[start : start + batch_size])
        encoded = tokenizer(batch, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        lengths.extend(len(ids) + int(add_eos) for ids in encoded)
    return lengths


def _check_answers(report: PoolReport, checks, answers, pool_column: str, timeout: float) -> None:
    from .rewards import extract_answer, verify_answers

    predictions = [extract_answer(text) for _, _, _, text in checks]
    golds = [gold_text(answers[row_index]) for row_index, _, _, _ in checks]
    verdicts = verify_answers(predictions, golds, timeout=timeout)
    for (row_index, entry_index, teacher, _), prediction, gold, ok in zip(checks, predictions, golds, verdicts):
        if not ok:
            report.add(
                "wrong_answer",
                row_index,
                f"{pool_column}[{entry_index}].text",
                f"{_where(row_index, pool_column, entry_index)} (teacher '{teacher}'): answer {prediction!r} does not "
                f"verify against the ground truth {gold!r}.",
            )


# ------------------------------------------------------------------------------------------------------ converters
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
    prompt = _to_python(prompt)
    if isinstance(prompt, (list, tuple)):
        return [dict(_to_python(message)) for message in prompt]
    return prompt


def apply_system_prompt(prompt, system_prompt: str | None):
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
    value = _to_python(value)
    if isinstance(value, (list, tuple)):
        kept = []
        for entry in value:
            entry = _to_python(entry)
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
    value = _drop_textless(row.get("target_lst"), counts)
    entries = [solution for solution, _ in _read_entries(value)]
    prompt = apply_system_prompt(row.get("prompt"), system_prompt)
    return _canonical_row(prompt, row.get("reward_model"), entries, normalize, True, counts)


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
    target = _to_python(row.get("target"))
    if isinstance(target, (str, dict)):
        target = [target]
    texts = []
    for message in target or []:
        message = _to_python(message)
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
            raise PoolFormatError(f"column 'target': message content must be a string, got {type(content).__name__}.")
        texts.append(content)
    entries = [
        TeacherSolution(teacher=teacher_name if index == 0 else f"{teacher_name}_{index}", text=text)
        for index, text in enumerate(texts)
    ]
    prompt = apply_system_prompt(row.get("prompt"), system_prompt)
    return _canonical_row(prompt, row.get("reward_model"), entries, normalize, False, counts)


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
    value = _drop_textless(row.get("solutions"), counts)
    entries = [solution for solution, _ in _read_entries(value)]
    return _canonical_row(prompt, row.get("answer"), entries, normalize, False, counts)


def _canonical_row(prompt, gold, entries, normalize: bool, keep_quality: bool, counts: Counter) -> dict:
    """The canonical columns every converter returns; rows left without a solution are counted, not dropped."""
    if not entries:
        counts["rows_without_solutions"] += 1
    return {
        "prompt": prompt,
        "answer": gold_text(gold),
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
    columns = _column_names(dataset) or []
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
                entries = [solution for solution, _ in _read_entries(row.get(pool_column))]
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
        for row in dataset:
            row = dict(row)
            new = convert(row, counts)
            for column in drop:
                row.pop(column, None)
            row.update(new)
            converted.append(row)
        names = list(dict.fromkeys(name for row in converted for name in row))  # union: rows may differ in keys
        result = Dataset.from_dict({name: [row.get(name) for row in converted] for name in names})
    elif not isinstance(dataset, Dataset):  # IterableDataset (streaming): converted lazily, counts unknown
        logger.info("to_canonical: a streaming dataset is converted lazily; entry counts are not collected.")
        result = dataset.map(lambda row: convert(row, Counter()), remove_columns=drop)
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

        def convert_with_counts(row):
            # Counts travel in a temporary column, so they survive num_proc > 1 (worker processes).
            local: Counter = Counter()
            out = convert(row, local)
            out[_COUNTS_COLUMN] = json.dumps(local) if local else ""
            return out

        result = dataset.map(
            convert_with_counts,
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


# -------------------------------------------------------------------------------------------------------- loading
def read_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a local ``.jsonl`` (one JSON object per line) or ``.json`` (a list of objects, or an object holding
    one) file, read with the standard library (so ``{teacher: text}`` mappings stay mappings)."""
    path = os.fspath(path)
    with open(path, encoding="utf-8") as handle:
        if path.endswith(".jsonl"):
            rows = []
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}, line {line_number}: not valid JSON ({error.msg}).") from None
            return rows
        data = json.load(handle)
    if isinstance(data, dict):
        lists = [value for value in data.values() if isinstance(value, list)]
        if len(lists) == 1:
            data = lists[0]
        elif all(isinstance(value, dict) for value in data.values()):  # pandas orient="columns"
            names = list(data)
            index = list(next(iter(data.values()), {}))
            data = [{name: data[name].get(key) for name in names} for key in index]
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows.")
    return data


def load_table(source: str | os.PathLike, split: str = "train"):
    """A `datasets.Dataset` from a local file (``.parquet``, ``.jsonl``, ``.json``, ``.csv``), a directory saved with
    ``save_to_disk`` or of parquet files, or a hub dataset id (``datasets.load_dataset(source, split=split)``)."""
    from datasets import Dataset, concatenate_datasets, load_dataset, load_from_disk

    path = os.fspath(source)
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "dataset_info.json")) or os.path.exists(os.path.join(path, "state.json")):
            return load_from_disk(path)
        files = sorted(name for name in os.listdir(path) if name.endswith(".parquet"))
        if files:
            return concatenate_datasets([_read_parquet(os.path.join(path, name)) for name in files])
        raise ValueError(f"{path}: a directory, but neither a saved dataset nor parquet files.")
    if os.path.isfile(path):
        if path.endswith(".parquet"):
            return _read_parquet(path)
        if path.endswith((".jsonl", ".json")):
            return _rows_to_dataset(read_rows(path))
        if path.endswith(".csv"):
            return Dataset.from_csv(path)
        raise ValueError(f"{path}: unsupported file type (use .parquet, .jsonl, .json or .csv).")
    if re.fullmatch(r"[\w.-]+(/[\w.-]+)?", path) and not path.endswith((".parquet", ".jsonl", ".json", ".csv")):
        return load_dataset(path, split=split)
    raise FileNotFoundError(f"{path}: no such file, and not a hub dataset id.")


def _rows_to_dataset(rows: list[dict]):
    """`Dataset.from_list` looks only at the first row's keys; this takes the union of all rows' keys."""
    from datasets import Dataset

    names = list(dict.fromkeys(name for row in rows for name in row))
    return Dataset.from_dict({name: [row.get(name) for row in rows] for name in names})


def _read_parquet(path: str):
    import pyarrow.parquet as pq
    from datasets import Dataset

    table = pq.read_table(path)
    pandas_index = [name for name in table.column_names if name.startswith("__index_level_")]
    if pandas_index:
        table = table.drop(pandas_index)
    return Dataset(table.replace_schema_metadata(None))


def load_pool_dataset(source, split: str = "train", *, convert: bool = True, **to_canonical_kwargs):
    """Load a pool dataset (see `load_table`) and, when ``convert``, bring a recognised non-canonical format to the
    canonical columns with `to_canonical` (keyword arguments are passed on). JSONL / JSON files are converted row by
    row before Arrow sees them, so per-row ``{teacher: text}`` mappings with different teachers stay exact."""
    pool_column = to_canonical_kwargs.get("pool_column", DEFAULT_POOL_COLUMN)
    path = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
    if path and os.path.isfile(path) and path.endswith((".jsonl", ".json")):
        rows = read_rows(path)
        if convert and rows and detect_pool_format(_column_names(rows), pool_column) not in (None, "canonical"):
            return to_canonical(rows, **to_canonical_kwargs)
        return _rows_to_dataset(rows)
    dataset = load_table(source, split=split) if path is not None else source
    if convert and detect_pool_format(dataset.column_names, pool_column) not in (None, "canonical"):
        return to_canonical(dataset, **to_canonical_kwargs)
    return dataset


# ------------------------------------------------------------------------------------------------------ SFT export
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
    Unreadable pools raise `PoolFormatError` (run `validate_pool_dataset` first).
    """
    from datasets import Dataset, Features, Value

    columns = _column_names(dataset) or []
    for column in (pool_column, prompt_column, *keep_columns):
        if column not in columns:
            raise ValueError(f"export_sft_dataset: the dataset has no column '{column}'; its columns are {columns}.")
    pools = _column_values(dataset, pool_column)
    prompts = _column_values(dataset, prompt_column)
    kept = {column: _column_values(dataset, column) for column in keep_columns}
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


# ------------------------------------------------------------------------------------------------------- printing
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: numbers right-aligned; floats shown without decimals when integral or >= 100, with one
    decimal from 10, two below."""

    def cell(value) -> str:
        if isinstance(value, float):
            if value != value:  # NaN
                return "-"
            if value == int(value) or abs(value) >= 100:
                return f"{value:.0f}"
            return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
        return "-" if value is None else str(value)

    table = [[cell(value) for value in row] for row in rows]
    widths = [max([len(str(header))] + [len(row[i]) for row in table]) for i, header in enumerate(headers)]
    numeric = [all(_looks_numeric(row[i]) for row in table) and bool(table) for i in range(len(headers))]

    def line(values):
        return "  ".join(
            value.rjust(width) if is_number else value.ljust(width)
            for value, width, is_number in zip(values, widths, numeric)
        ).rstrip()

    parts = [line([str(h) for h in headers]), line(["-" * width for width in widths])]
    parts += [line(row) for row in table]
    return "\n".join(parts)


def _looks_numeric(text: str) -> bool:
    return bool(re.fullmatch(r"-|[-+]?\d[\d,]*(\.\d+)?%?", text))
