"""`validate_pool_dataset`: every problem of a pool dataset with its row and field, and the pool's statistics.

Fatal problems (`FATAL_KINDS`: a missing column, an unreadable pool, a bad prompt) make `PoolReport.raise_if_fatal`
raise; the others (`WARNING_KINDS`) are counted with examples. The verdicts use the rules of `ampo_trl.answers`,
so they agree with what the trainer and the rewards do with the same text: a solution without any ``<answer>``
cannot be comprehension-scored (score 0), one that breaks the format rule gets format reward 0, and with the
student's tokenizer a solution longer than ``max_teacher_length`` tokens (EOS included) is skipped by the trainer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ..answers import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    answer_format_ok,
    cut_at_last_answer_tag,
    encode_teacher_texts,
    extract_answer,
)
from ..answers import gold_answer_text as gold_text
from ..errors import DataFormatError
from ..records import column_names, column_values, row_place, to_python
from ..rewards.verifier import golds_parse, verify_answers
from .convert import detect_pool_format
from .schema import (
    DEFAULT_ANSWER_COLUMN,
    DEFAULT_POOL_COLUMN,
    DEFAULT_PROMPT_COLUMN,
    TEACHER_KEYS,
    _read_entries,
)

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


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
    "missing_gold": "the gold answer cannot be read: a reward_model dict without ground_truth, bytes, an object",
}
WARNING_KINDS = {
    "empty_answer": "the ground-truth answer is missing or empty (comprehension scores are then 0)",
    "empty_pool": "no teacher solution with text: the row's groups cannot be guided",
    "empty_text": "an entry's text is empty (the trainer skips it)",
    "missing_teacher": "an entry has no teacher name (named teacher_<i>)",
    "duplicate_teacher": "a teacher appears more than once in a row's pool",
    "no_answer_tag": "a solution has no <answer> tag (comprehension score 0, format reward 0)",
    "bad_answer_format": "a solution has an <answer> tag but not exactly one <answer> before one </answer> (format "
    "reward 0; comprehension still scores it, cut at its last <answer>)",
    "too_long": "a solution is longer than max_teacher_length tokens (EOS included): the trainer skips it",
    "special_token_text": "a solution contains a special-token string of the tokenizer (kept as plain text)",
    "wrong_answer": "a solution's answer does not verify against the ground truth (check_answers=True)",
    "unparsable_gold": "Math-Verify cannot parse the gold into a mathematical object, so only an identical answer "
    "string can match it (check_golds=True)",
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
        """Raise `ampo_trl.errors.DataFormatError` listing the first ``max_listed`` fatal problems and the total; else
        return self."""
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
            "or check it with `ampo-pool validate <dataset>`."
        )
        raise DataFormatError("\n".join(lines))

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


def _check_prompt(prompt) -> str | None:
    """None if the prompt is usable, else the reason."""
    prompt = to_python(prompt)
    if prompt is None:
        return "the prompt is missing (None)."
    if isinstance(prompt, str):
        return None if prompt.strip() else "the prompt is an empty string."
    if isinstance(prompt, (list, tuple)):
        if not prompt:
            return "the prompt is an empty list of messages."
        for index, message in enumerate(prompt):
            message = to_python(message)
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                return f"message {index} is not a {{'role', 'content'}} dict: {str(message)[:80]!r}."
            if message.get("content") is None and not message.get("tool_calls"):
                return f"message {index} (role {message['role']!r}) has no content."
        return None
    return f"expected a string or a list of chat messages, got {type(prompt).__name__}."


def validate_pool_dataset(
    dataset,
    pool_column: str = DEFAULT_POOL_COLUMN,
    answer_column: str = DEFAULT_ANSWER_COLUMN,
    prompt_column: str | None = DEFAULT_PROMPT_COLUMN,
    tokenizer=None,
    max_teacher_length: int | None = None,
    *,
    check_answers: bool = False,
    check_golds: bool = False,
    verify_timeout: float = 5.0,
    max_problems_per_kind: int = 10_000,
) -> PoolReport:
    """Check a pool dataset row by row and collect statistics; never raises on bad rows (see `PoolReport`).

    ``dataset``: a `datasets.Dataset`, a list of row dicts, a dict of columns or a pandas DataFrame.
    ``tokenizer``: when given, token lengths (solution tokens + EOS, as the trainer counts them) are added to the
    statistics; with ``max_teacher_length`` too, longer solutions are reported as ``too_long``.
    ``check_answers``: also verify each solution's answer (`ampo_trl.answers.extract_answer` + Math-Verify)
    against the row's answer and warn ``wrong_answer`` (slower: Math-Verify runs on every non-identical pair).
    ``check_golds``: also parse each distinct gold answer once with Math-Verify (normalised, ``verify_timeout``
    seconds each, in the verifier's worker pool) and warn ``unparsable_gold`` for a gold it cannot read into a
    mathematical object (only an identical answer string could match it); cheap: one parse per distinct gold.
    ``prompt_column=None`` skips the prompt checks.

    Messages name the row (0-based), column and entry; for rows read by `ampo_trl.records.read_records` (a
    `Records` list) also the file and the JSONL line.

    Fatal kinds: see `FATAL_KINDS`; warnings: see `WARNING_KINDS`.
    """
    if max_teacher_length is not None and tokenizer is None:
        raise ValueError(
            "max_teacher_length needs a tokenizer: token lengths are counted with the student's tokenizer."
        )
    report = PoolReport(pool_column=pool_column, max_problems_per_kind=max_problems_per_kind)
    columns = column_names(dataset)
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

    pools = column_values(dataset, pool_column)
    answers = column_values(dataset, answer_column)
    prompts = column_values(dataset, prompt_column) if prompt_column is not None else [None] * len(pools)
    stats = report.stats
    stats.rows = len(pools)
    sizes: Counter = Counter()
    teacher_counts: Counter = Counter()
    char_lengths: list[int] = []
    texts: list[str] = []  # usable texts, in order, for token counting
    owners: list[tuple[int, int, str]] = []  # (row, entry, teacher) of each usable text
    per_teacher_chars: dict[str, list[int]] = defaultdict(list)
    answer_checks: list[tuple[int, int, str, str]] = []
    gold_texts: list[str] = []

    def place_of(row_index: int | None, column: str, entry_index: int | None = None) -> str:
        return DataFormatError("", column=column, entry=entry_index, **row_place(dataset, row_index)).place

    for row_index, (pool, answer, prompt) in enumerate(zip(pools, answers, prompts)):
        if prompt_column is not None:
            reason = _check_prompt(prompt)
            if reason is not None:
                report.add("bad_prompt", row_index, prompt_column, f"{place_of(row_index, prompt_column)}: {reason}")
        try:
            gold = gold_text(to_python(answer))
        except DataFormatError as error:
            report.add("missing_gold", row_index, answer_column, f"{place_of(row_index, answer_column)}: {error}")
            gold = None
        else:
            if not gold:
                report.add(
                    "empty_answer",
                    row_index,
                    answer_column,
                    f"{place_of(row_index, answer_column)}: the ground-truth answer is missing or empty.",
                )
        gold_texts.append(gold or "")
        empty_answer = not gold
        try:
            entries = _read_entries(pool)
        except DataFormatError as error:
            field_name = pool_column if error.entry is None else f"{pool_column}[{error.entry}]"
            report.add(
                "unreadable_pool",
                row_index,
                field_name,
                str(error.located(column=pool_column, **row_place(dataset, row_index))),
            )
            continue
        seen: Counter = Counter()
        usable = 0
        for entry_index, (solution, named) in enumerate(entries):
            where = place_of(row_index, pool_column, entry_index)
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
            if cut_at_last_answer_tag(text) is None:
                report.add(
                    "no_answer_tag",
                    row_index,
                    f"{field_name}.text",
                    f"{where} (teacher '{solution.teacher}'): no <answer> tag; comprehension selection scores it 0 "
                    "and the format reward gives it 0 (ampo_trl.pool.normalize_solution converts \\boxed{} answers).",
                )
            elif not answer_format_ok(text):
                report.add(
                    "bad_answer_format",
                    row_index,
                    f"{field_name}.text",
                    f"{where} (teacher '{solution.teacher}'): {text.count(ANSWER_OPEN)} '<answer>' and "
                    f"{text.count(ANSWER_CLOSE)} '</answer>' tags; the format reward wants exactly one of each, in "
                    "order (comprehension selection still scores it, cut at its last <answer>).",
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
                    f"{place_of(row_index, pool_column, entry_index)} (teacher '{teacher}'): contains the tokenizer's "
                    f"special-token string(s) {found}; the trainer keeps them as plain text, never as control tokens.",
                )
            per_teacher_tokens[teacher].append(length)
            if max_teacher_length is not None and length > max_teacher_length:
                report.add(
                    "too_long",
                    row_index,
                    f"{pool_column}[{entry_index}].text",
                    f"{place_of(row_index, pool_column, entry_index)} (teacher '{teacher}'): {length} tokens with "
                    f"EOS, more than max_teacher_length={max_teacher_length}; the trainer skips it (raise "
                    "max_teacher_length to keep it).",
                )
        for name, lengths in per_teacher_tokens.items():
            stats.per_teacher[name].update({f"tokens_{k}": v for k, v in length_percentiles(lengths).items()})

    if answer_checks:
        _check_answers(report, answer_checks, gold_texts, pool_column, verify_timeout, place_of)
    if check_golds:
        _check_golds(report, gold_texts, answer_column, verify_timeout, place_of)
    return report


def count_tokens(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], add_eos: bool = True, batch_size: int = 512
) -> list[int]:
    """Token count of each text (no special tokens added; +1 for the EOS the trainer appends when ``add_eos``)."""
    lengths = []
    for start in range(0, len(texts), batch_size):
        encoded = encode_teacher_texts(tokenizer, texts[start : start + batch_size])
        lengths.extend(len(ids) + int(add_eos) for ids in encoded)
    return lengths


def _check_answers(report: PoolReport, checks, gold_texts, pool_column: str, timeout: float, place) -> None:
    predictions = [extract_answer(text) for _, _, _, text in checks]
    golds = [gold_texts[row_index] for row_index, _, _, _ in checks]
    verdicts = verify_answers(predictions, golds, timeout=timeout)
    for (row_index, entry_index, teacher, _), prediction, gold, ok in zip(checks, predictions, golds, verdicts):
        if not ok:
            report.add(
                "wrong_answer",
                row_index,
                f"{pool_column}[{entry_index}].text",
                f"{place(row_index, pool_column, entry_index)} (teacher '{teacher}'): answer {prediction!r} does not "
                f"verify against the ground truth {gold!r}.",
            )


def _check_golds(report: PoolReport, gold_texts: list[str], answer_column: str, timeout: float, place) -> None:
    """One ``unparsable_gold`` warning per distinct gold Math-Verify cannot parse, naming its first row."""
    rows_of_gold: dict[str, list[int]] = defaultdict(list)
    for row_index, gold in enumerate(gold_texts):
        if gold:
            rows_of_gold[gold].append(row_index)
    golds = list(rows_of_gold)
    for gold, parses in zip(golds, golds_parse(golds, timeout=timeout)):
        if parses:
            continue
        rows = rows_of_gold[gold]
        others = f" (and {len(rows) - 1} more row(s) with this gold)" if len(rows) > 1 else ""
        report.add(
            "unparsable_gold",
            rows[0],
            answer_column,
            f"{place(rows[0], answer_column)}{others}: Math-Verify cannot parse the gold {gold[:120]!r} into a "
            f"mathematical object (or took longer than {timeout:g} s); only an identical answer string can match it. "
            "Write it in LaTeX Math-Verify reads (e.g. \\frac{1}{2}, (1, 2], x = 3), or score it with another reward.",
        )
