"""Reading benchmark files into distinct problems: the authors' parquet schema or plain question/answer records,
repeated rows merged (``repeats`` counts them), unusable rows counted per reason, never dropped silently."""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..answers import GOLD_ANSWER_COLUMNS, gold_answer_of_row, gold_column
from ..records import read_records, to_python
from ..rewards import extract_choice_letter
from .benchmarks import BENCHMARKS, MATH, MULTIPLE_CHOICE, SCORING_MODES, _slug, canonical_benchmark

logger = logging.getLogger(__name__)

BENCHMARK_DIR_ENV_VAR = "AMPO_BENCHMARK_DIR"
DEFAULT_BENCHMARK_DIR = Path("data") / "benchmarks"
# Short names of the authors' public evaluation files -> file stem.
BENCHMARK_FILE_ALIASES = {
    "math6": "math6_eval",
    "passk_aime_amc": "passk256_aime_amc",
    "passk256": "passk256_aime_amc",
    "passk_math500": "passk32_math500",
    "passk32": "passk32_math500",
    "validation": "train_validation",
}
SUPPORTED_EXTENSIONS = (".parquet", ".jsonl", ".json")


@dataclass
class Problem:
    """One distinct problem of a benchmark (repeated rows merged; ``repeats`` counts them)."""

    benchmark: str  # key: a BENCHMARKS key or the slug of an unknown data_source
    data_source: str
    problem_id: str
    messages: list[dict[str, str]]  # as stored (system message included, if any)
    gold: str
    scoring: str
    repeats: int = 1
    source: str = ""
    index: Any = None  # extra_info.index when the row has one

    @property
    def question(self) -> str:
        """Content of the last user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return message.get("content", "")
        return self.messages[-1].get("content", "") if self.messages else ""


@dataclass
class BenchmarkSet:
    """The problems read from one file (or in-memory dataset), with everything that was not used, counted."""

    source: str
    num_rows: int
    problems: list[Problem]
    skipped: Counter = field(default_factory=Counter)  # reason -> rows that could not be used
    notes: Counter = field(default_factory=Counter)  # reason -> rows used with a caveat
    not_selected: Counter = field(default_factory=Counter)  # benchmark -> problems left out by select/max_problems
    available_problems: dict[str, int] = field(default_factory=dict)  # benchmark -> distinct problems in the file

    def benchmarks(self) -> list[str]:
        return list(dict.fromkeys(problem.benchmark for problem in self.problems))

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "rows": self.num_rows,
            "problems_available": dict(self.available_problems),
            "problems_evaluated": dict(Counter(problem.benchmark for problem in self.problems)),
            "rows_in_evaluated_problems": sum(problem.repeats for problem in self.problems),
            "skipped_rows": dict(self.skipped),
            "notes": dict(self.notes),
            "problems_not_selected": dict(self.not_selected),
        }


class _SkipRow(Exception):
    """A row that cannot be evaluated; the message is the reason (counted)."""


PROMPT_COLUMNS = ("prompt", "question", "problem", "query")

OPTION_COLUMNS = ("options", "choices")


def resolve_benchmark_path(name: str | os.PathLike, benchmark_dir: str | os.PathLike | None = None) -> Path:
    """Turn a benchmark argument into a file path.

    An existing path is returned as is. Otherwise ``name`` is looked up in the benchmark directory
    (``benchmark_dir``, else ``$AMPO_BENCHMARK_DIR``, else ``./data/benchmarks``): short aliases of the shared
    files (:data:`BENCHMARK_FILE_ALIASES`: ``math6``, ``passk_aime_amc``, ``passk_math500``, ``validation``), then
    a file whose stem is ``name``, then the only file whose stem starts with ``name``.
    """
    path = Path(name)
    if path.is_file():
        return path
    directory = Path(benchmark_dir or os.environ.get(BENCHMARK_DIR_ENV_VAR) or DEFAULT_BENCHMARK_DIR)
    if not directory.is_dir():
        raise FileNotFoundError(
            f"Benchmark {str(name)!r} is not an existing file, and the benchmark directory {str(directory)!r} does "
            f"not exist. Pass a file path, or point --benchmark-dir (or the environment variable "
            f"{BENCHMARK_DIR_ENV_VAR}) at the folder holding the benchmark files."
        )
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SUPPORTED_EXTENSIONS)
    stem = BENCHMARK_FILE_ALIASES.get(str(name), Path(name).stem if path.suffix in SUPPORTED_EXTENSIONS else str(name))
    exact = [p for p in files if p.stem == stem]
    if exact:
        return exact[0]
    prefixed = [p for p in files if p.stem.startswith(stem)]
    if len(prefixed) == 1:
        return prefixed[0]
    known = ", ".join(p.stem for p in files) or "(none)"
    aliases = ", ".join(f"{alias}={target}" for alias, target in BENCHMARK_FILE_ALIASES.items())
    reason = "matches several files" if prefixed else "matches no file"
    raise FileNotFoundError(
        f"Benchmark {str(name)!r} {reason} in {str(directory)!r}. Files there: {known}. Short names: {aliases}. "
        f"Pass a file path or a file stem."
    )


def _records_from(data: Any) -> tuple[str, list[dict[str, Any]]]:
    """(source description, records) from a path-free dataset: datasets.Dataset, DataFrame or list of dicts."""
    if hasattr(data, "to_list") and hasattr(data, "column_names"):  # datasets.Dataset
        return "<datasets.Dataset>", list(data.to_list())
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
        return "<pandas.DataFrame>", list(data.to_dict("records"))
    if isinstance(data, Sequence) and all(isinstance(record, Mapping) for record in data):
        return "<list of records>", [dict(record) for record in data]
    raise TypeError(
        f"Cannot read benchmark data of type {type(data).__name__}: pass a file path or short name, a "
        "datasets.Dataset, a pandas.DataFrame or a list of dicts."
    )


def _messages_from_row(row: Mapping[str, Any]) -> list[dict[str, str]]:
    prompt = row.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        messages = []
        for message in prompt:
            if not isinstance(message, Mapping) or "content" not in message:
                raise _SkipRow("prompt is not a list of {role, content} messages")
            messages.append({"role": str(message.get("role") or "user"), "content": str(message["content"] or "")})
        if not any(m["role"] == "user" and m["content"].strip() for m in messages):
            raise _SkipRow("prompt has no non-empty user message")
        return messages
    question = prompt if isinstance(prompt, str) else None
    for column in PROMPT_COLUMNS[1:]:
        if question is None and isinstance(row.get(column), str):
            question = row[column]
    if question is None or not question.strip():
        raise _SkipRow("empty prompt/question")
    options = next((row[column] for column in OPTION_COLUMNS if row.get(column) is not None), None)
    if options is not None:
        if isinstance(options, Mapping) and "text" in options:  # ARC style {"text": [...], "label": [...]}
            labels = list(options.get("label") or [])
            texts = list(options["text"])
            labels = labels if len(labels) == len(texts) else [chr(ord("A") + i) for i in range(len(texts))]
        else:
            texts = list(options)
            labels = [chr(ord("A") + i) for i in range(len(texts))]
        if texts:
            question = question.rstrip() + "\n\n" + "\n".join(f"{label}. {text}" for label, text in zip(labels, texts))
    return [{"role": "user", "content": question}]


def _gold_from_row(row: Mapping[str, Any]) -> str:
    if gold_column(row) is None:
        raise _SkipRow("no gold answer")
    try:
        gold = gold_answer_of_row(row)
    except ValueError as error:
        raise _SkipRow(f"unusable gold answer ({str(error).split(';')[0]})") from error
    if not gold.strip():
        raise _SkipRow("empty gold answer")
    return gold


def _is_letter_gold(gold: str) -> bool:
    return (
        bool(re.fullmatch(r"\s*[(\[]?\s*[A-Ja-j]\s*[)\]]?\s*\.?\s*", gold)) and extract_choice_letter(gold) is not None
    )


def load_benchmark(
    source: Any,
    *,
    benchmark_dir: str | os.PathLike | None = None,
    name: str | None = None,
    select: Iterable[str] | None = None,
    max_problems: int | None = None,
    scoring: Mapping[str, str] | None = None,
    rename: Mapping[str, str] | None = None,
    _strict: bool = True,
) -> BenchmarkSet:
    """Read one benchmark file (or in-memory dataset) into distinct problems.

    Formats: the authors' schema (``data_source``, ``prompt`` = chat messages, ``reward_model.ground_truth``) in
    parquet/JSONL/JSON, or plain records with a question (``prompt`` string, ``question``, ``problem`` or ``query``)
    and a gold answer (``answer``, ``solution``, ``reward_model`` or ``ground_truth``); optional ``options`` /
    ``choices`` are appended as lettered options. Rows without ``data_source`` take ``name`` (default: the file
    stem). Identical rows (same data_source, non-system messages and gold) are one problem whose ``repeats`` counts
    them.

    select: keep only these benchmarks (keys such as ``aime24`` or raw ``data_source`` values); max_problems: keep
    the first N distinct problems of each benchmark; scoring: ``{benchmark or data_source: "math" |
    "multiple_choice"}`` overrides (default: the paper's benchmarks use their known mode; other benchmarks use
    multiple choice iff every gold answer is a single letter A-J); rename: ``{data_source: benchmark key}`` for
    spellings :func:`canonical_benchmark` does not recognise (e.g. ``{"ai2_arc": "arc_c"}``).
    """
    if isinstance(source, (str, os.PathLike)):
        path = resolve_benchmark_path(source, benchmark_dir)
        description, records = str(path), read_records(path)
        default_source = name or path.stem
    else:
        description, records = _records_from(source)
        default_source = name or "dataset"
    if max_problems is not None and max_problems < 1:
        raise ValueError(f"max_problems must be >= 1 or None, got {max_problems}.")
    if records:
        columns = set().union(*(record.keys() for record in records[:100]))
        if not columns & set(PROMPT_COLUMNS):
            raise ValueError(
                f"{description}: no prompt column; expected one of {', '.join(PROMPT_COLUMNS)}. Columns: "
                f"{sorted(columns)}."
            )
        if not columns & set(GOLD_ANSWER_COLUMNS):
            raise ValueError(
                f"{description}: no gold-answer column; expected one of {', '.join(GOLD_ANSWER_COLUMNS)} "
                f"('reward_model' holding {{'ground_truth': ...}}). Columns: {sorted(columns)}."
            )

    skipped: Counter = Counter()
    notes: Counter = Counter()
    grouped: dict[tuple, Problem] = {}
    for row_index, raw in enumerate(records):
        row = to_python(raw)
        try:
            messages = _messages_from_row(row)
            gold = _gold_from_row(row)
        except _SkipRow as reason:
            skipped[str(reason)] += 1
            if sum(skipped.values()) <= 3:
                logger.warning("%s: row %d skipped: %s", description, row_index, reason)
            continue
        data_source = row.get("data_source")
        if not isinstance(data_source, str) or not data_source.strip():
            if "data_source" in row:
                notes[f"rows without data_source (named {default_source!r})"] += 1
            data_source = default_source
        key_messages = json.dumps([m for m in messages if m["role"] != "system"], sort_keys=True, ensure_ascii=False)
        key = (data_source, key_messages, gold)
        if key in grouped:
            grouped[key].repeats += 1
            continue
        extra = row.get("extra_info") if isinstance(row.get("extra_info"), Mapping) else {}
        grouped[key] = Problem(
            benchmark=(rename or {}).get(data_source) or canonical_benchmark(data_source) or _slug(data_source),
            data_source=data_source,
            problem_id="",
            messages=messages,
            gold=gold,
            scoring="",
            source=description,
            index=extra.get("index"),
        )
    problems = list(grouped.values())

    # Several data_source spellings of one benchmark in one file are merged; problem ids are per benchmark.
    by_benchmark: dict[str, list[Problem]] = {}
    for problem in problems:
        by_benchmark.setdefault(problem.benchmark, []).append(problem)
    overrides = {str(key): str(value) for key, value in (scoring or {}).items()}
    for value in overrides.values():
        if value not in SCORING_MODES:
            raise ValueError(f"Unknown scoring mode {value!r}; use one of {', '.join(SCORING_MODES)}.")
    for benchmark, items in by_benchmark.items():
        mode = overrides.get(benchmark) or next(
            (overrides[p.data_source] for p in items if p.data_source in overrides), None
        )
        if mode is None:
            spec = BENCHMARKS.get(benchmark)
            if spec is not None:
                mode = spec.scoring
            else:
                mode = MULTIPLE_CHOICE if all(_is_letter_gold(p.gold) for p in items) else MATH
                notes[f"{benchmark}: scoring inferred from the gold answers ({mode})"] += len(items)
        for ordinal, problem in enumerate(items):
            problem.problem_id = f"{benchmark}-{ordinal:05d}"
            problem.scoring = mode
            if mode == MULTIPLE_CHOICE and not _is_letter_gold(problem.gold):
                problem.scoring = MATH
                notes[f"{benchmark}: gold is not an option letter, scored with Math-Verify"] += 1

    available = {benchmark: len(items) for benchmark, items in by_benchmark.items()}
    not_selected: Counter = Counter()
    if select is not None:
        keys = _selected_keys(select, problems)
        if not keys and _strict:
            holds = ", ".join(
                f"{key} (data_source {sorted({p.data_source for p in items})})" for key, items in by_benchmark.items()
            )
            raise ValueError(
                f"{description}: none of the selected benchmarks {list(select)} is in the file; it holds {holds}."
            )
        for benchmark, items in by_benchmark.items():
            if benchmark not in keys:
                not_selected[benchmark] += len(items)
        problems = [p for p in problems if p.benchmark in keys]
    if max_problems is not None:
        kept, per_benchmark = [], Counter()
        for problem in problems:
            if per_benchmark[problem.benchmark] < max_problems:
                per_benchmark[problem.benchmark] += 1
                kept.append(problem)
            else:
                not_selected[problem.benchmark] += 1
        problems = kept
    if not problems and (_strict or select is None):
        raise ValueError(
            f"{description}: no usable problem ({len(records)} rows; skipped: {dict(skipped) or 'none'}; "
            f"not selected: {dict(not_selected) or 'none'})."
        )
    return BenchmarkSet(description, len(records), problems, skipped, notes, not_selected, available)


def _selected_keys(select: Iterable[str], problems: Sequence[Problem]) -> set[str]:
    """Benchmark keys named by ``select`` (keys such as ``aime24``, raw data_source values, or aliases)."""
    keys = set()
    present = {p.benchmark for p in problems}
    for item in select:
        item = str(item)
        for problem in problems:
            if item in (problem.benchmark, problem.data_source):
                keys.add(problem.benchmark)
        if canonical_benchmark(item) in present:
            keys.add(canonical_benchmark(item))
    return keys


def load_benchmarks(
    sources: Sequence[Any],
    *,
    benchmark_dir: str | os.PathLike | None = None,
    select: Iterable[str] | None = None,
    max_problems: int | None = None,
    scoring: Mapping[str, str] | None = None,
    rename: Mapping[str, str] | None = None,
) -> list[BenchmarkSet]:
    """:func:`load_benchmark` for several sources; ``select`` applies across them (every selected name must be
    found in some source, and a source holding none of them is left out). A benchmark may come from one source
    only (ValueError otherwise: evaluate e.g. ``math6`` and ``passk_math500`` in separate runs, or narrow them with
    ``select``)."""
    select = [str(item) for item in select] if select is not None else None
    sets, owner = [], {}
    found: set[str] = set()
    for source in sources:
        benchmark_set = load_benchmark(
            source,
            benchmark_dir=benchmark_dir,
            select=select,
            max_problems=max_problems,
            scoring=scoring,
            rename=rename,
            _strict=False,
        )
        if select is not None:
            for item in select:
                if _selected_keys([item], benchmark_set.problems):
                    found.add(item)
        if not benchmark_set.problems:
            continue
        for benchmark in benchmark_set.benchmarks():
            if benchmark in owner:
                raise ValueError(
                    f"Benchmark {benchmark!r} is in both {owner[benchmark]} and {benchmark_set.source}. Evaluate "
                    "them in separate runs, or keep one with --select."
                )
            owner[benchmark] = benchmark_set.source
        sets.append(benchmark_set)
    missing = [item for item in (select or []) if item not in found]
    if missing:
        raise ValueError(
            f"Selected benchmarks {missing} are in none of the sources; the sources hold: "
            f"{', '.join(sorted(owner)) or 'nothing selected'}."
        )
    if not sets:
        raise ValueError("No problem to evaluate in the given sources.")
    return sets
