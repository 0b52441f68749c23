r"""Evaluation with the AMPO paper's protocol (arXiv 2510.02227, spec section 3).

Pipeline: load benchmark files -> group repeated rows by problem -> build chat prompts with the evaluation system
prompt -> sample completions with a backend of :mod:`ampo_trl.generation` (vLLM on GPU, transformers ``generate``
anywhere; shared with the pool builder and re-exported here) -> score them with the project's rewards
(:mod:`ampo_trl.rewards`) -> metrics -> reports (JSON, Markdown, JSONL, PNG).

Protocol defaults (paper): temperature 0.6, top_p 1.0, at most 8192 new tokens, and the system prompt
:data:`SYSTEM_PROMPT` (``ampo_trl.pool.SYSTEM_PROMPT``) *replacing* any system message stored in the benchmark rows.

Scoring
    * math sets: ``a = extract_answer(response)`` (the last ``<answer>...</answer>``, else the last ``\boxed{}``),
      correct iff Math-Verify says ``a == gold`` (:func:`ampo_trl.rewards.verify_answers`, hard time limit per item;
      a time-out counts as wrong and is reported);
    * multiple-choice sets (ARC-c, GPQA-diamond, MMLU-Pro; letters A-J): correct iff the option letter of ``a``
      equals the gold letter (:func:`ampo_trl.rewards.multiple_choice_reward`);
    * format compliance: :func:`ampo_trl.rewards.format_reward` (exactly one ``<answer>`` before exactly one
      ``</answer>``).

Problems and samples
    A benchmark row repeated r times (the authors' avg@32 convention: AIME/AMC rows appear 32 times in
    ``math6_eval.parquet``) is one problem. With ``num_samples = m`` per row, the problem gets
    ``n_i = m * r`` samples (``expand_repeats=True``, default: exactly what the authors' evaluation does) or
    ``n_i = m`` (``expand_repeats=False``).

Metrics (per benchmark with P problems; problem i has n_i samples, c_i of them correct)
    * accuracy, "avg@n":      acc = (1/P) * sum_i c_i / n_i        (equal to the unbiased pass@1)
    * pass@k (unbiased, Chen et al. 2021), defined for k <= min_i n_i:
          pass@k = (1/P) * sum_i [ 1 - C(n_i - c_i, k) / C(n_i, k) ]
      computed exactly in integer arithmetic as ``1 - prod_{j=n-c+1}^{n} (j-k) / prod_{j=n-c+1}^{n} j`` (the same
      ratio, 1 when n - c < k) and rounded to float once, so no float binomial ever overflows (C(256, 128) ~ 1e75)
      and small cases are exact (n=5, c=2: pass@1 = 0.4, pass@2 = 0.7);
    * mean response length: mean over all samples of the number of generated tokens (the final EOS included);
    * format rate, answer rate (an answer could be extracted), truncation rate (hit ``max_new_tokens``):
      fractions of samples.
    All rates and accuracies are fractions in [0, 1] in the JSON and in logged metrics; the Markdown tables show
    percentages. Group scores follow Table 1: the *unweighted* mean of the benchmark accuracies over the
    in-distribution math group (AIME24, AIME25, AMC, MATH-500, Minerva, OlympiadBench) and over the
    out-of-distribution group (ARC-c, GPQA-diamond, MMLU-Pro); a group with missing benchmarks is marked incomplete.

Nothing is dropped silently: rows that cannot be used (no prompt, no gold answer, ...) are counted per reason and
reported in the results.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import platform
import re
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .generation import (  # the generation backends, shared with the pool builder
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TransformersBackend,
    VLLMBackend,
    derive_seed,
    make_backend,
    render_prompt_ids,
)
from .pool import SYSTEM_PROMPT  # the paper's system prompt, shared with training and pool construction
from .rewards import (
    extract_answer,
    extract_choice_letter,
    format_reward,
    gold_answers_from_kwargs,
    multiple_choice_reward,
    verifier_stats,
    verify_answers,
)

__all__ = [
    "AMPOEvalCallback",
    "BENCHMARKS",
    "BENCHMARK_DIR_ENV_VAR",
    "BENCHMARK_FILE_ALIASES",
    "BenchmarkSet",
    "BenchmarkSpec",
    "DEFAULT_MAX_NEW_TOKENS",
    "DEFAULT_TEMPERATURE",
    "DEFAULT_TOP_P",
    "EvalSettings",
    "EvaluationOutput",
    "GROUPS",
    "Generation",
    "GenerationRequest",
    "Problem",
    "SYSTEM_PROMPT",
    "SamplingSettings",
    "TransformersBackend",
    "VLLMBackend",
    "benchmark_metrics",
    "build_messages",
    "canonical_benchmark",
    "default_k_values",
    "evaluate",
    "load_benchmark",
    "load_benchmarks",
    "load_results",
    "make_backend",
    "mean_pass_at_k",
    "pass_at_k",
    "plot_pass_at_k",
    "render_compare_markdown",
    "render_results_markdown",
    "render_table1_markdown",
    "resolve_benchmark_path",
    "score_responses",
    "write_generations_jsonl",
    "write_report",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------------
# Protocol constants
# ----------------------------------------------------------------------------------------------------------

DEFAULT_VERIFY_TIMEOUT = 5.0

BENCHMARK_DIR_ENV_VAR = "AMPO_BENCHMARK_DIR"
DEFAULT_BENCHMARK_DIR = Path("data") / "benchmarks"
# Short names of the public evaluation files (spec section 3) -> file stem.
BENCHMARK_FILE_ALIASES = {
    "math6": "math6_eval",
    "passk_aime_amc": "passk256_aime_amc",
    "passk256": "passk256_aime_amc",
    "passk_math500": "passk32_math500",
    "passk32": "passk32_math500",
    "validation": "train_validation",
}
SUPPORTED_EXTENSIONS = (".parquet", ".jsonl", ".json")

RESULTS_FORMAT_VERSION = 1
RESULTS_FILE = "results.json"
MARKDOWN_FILE = "results.md"
GENERATIONS_FILE = "generations.jsonl"
PLOT_FILE = "pass_at_k.png"

MATH = "math"
MULTIPLE_CHOICE = "multiple_choice"
SCORING_MODES = (MATH, MULTIPLE_CHOICE)


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark of the paper: registry key, display name (Table 1 header), group and scoring mode."""

    key: str
    name: str
    group: str
    scoring: str


BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.key: spec
    for spec in (
        BenchmarkSpec("aime24", "AIME24", "math", MATH),
        BenchmarkSpec("aime25", "AIME25", "math", MATH),
        BenchmarkSpec("amc", "AMC", "math", MATH),
        BenchmarkSpec("math500", "MATH-500", "math", MATH),
        BenchmarkSpec("minerva", "Minerva", "math", MATH),
        BenchmarkSpec("olympiad", "Olympiad", "math", MATH),
        BenchmarkSpec("arc_c", "ARC-c", "ood", MULTIPLE_CHOICE),
        BenchmarkSpec("gpqa_diamond", "GPQA*", "ood", MULTIPLE_CHOICE),
        BenchmarkSpec("mmlu_pro", "MMLU-Pro", "ood", MULTIPLE_CHOICE),
    )
}

# Table 1 groups: the unweighted mean over these benchmarks.
GROUPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "math": ("Math avg.", ("aime24", "aime25", "amc", "math500", "minerva", "olympiad")),
    "ood": ("OOD avg.", ("arc_c", "gpqa_diamond", "mmlu_pro")),
}

_MATH500_NAMES = {
    "math",
    "math500",
    "mathtest",
    "math500test",
    "lightevalmath",
    "mathlighteval",
    "hendrycksmath",
    "competitionmath",
    "huggingfaceh4math500",
}


def canonical_benchmark(data_source: Any) -> str | None:
    """Map a ``data_source`` value to a key of :data:`BENCHMARKS`, or None for a benchmark outside the paper.

    Case, punctuation and separators are ignored: ``aime`` (the authors' name for AIME 2024), ``AIME24``,
    ``aime_2024`` -> ``aime24``; ``aime25``, ``AIME-2025`` -> ``aime25``; ``amc``, ``amc23`` -> ``amc``; ``math``,
    ``MATH500``, ``lighteval/MATH``, ``HuggingFaceH4/MATH-500`` -> ``math500``; ``minerva``, ``minerva_math``;
    ``olympiad_bench``, ``OlympiadBench``; ``arc_c``, ``ARC-Challenge``, ``ai2_arc_challenge``; ``gpqa``,
    ``gpqa_diamond`` (not ``gpqa_main``/``gpqa_extended``); ``mmlu_pro``, ``MMLU-Pro``.
    """
    text = re.sub(r"[^a-z0-9]", "", str(data_source or "").lower())
    if not text:
        return None
    if "aime" in text:
        tail = text.split("aime", 1)[1]
        if tail.startswith(("25", "2025")):
            return "aime25"
        if tail == "" or tail.startswith(("24", "2024")):
            return "aime24"
        return None
    if "amc" in text:
        return "amc"
    if "minerva" in text:
        return "minerva"
    if "olympiad" in text:
        return "olympiad"
    if "gpqa" in text:
        return None if ("main" in text or "extended" in text) else "gpqa_diamond"
    if "mmlupro" in text:
        return "mmlu_pro"
    if re.fullmatch(r"(?:allenai)?(?:ai2)?arc(?:c|challenge)(?:test|validation|val)?", text):
        return "arc_c"
    if text in _MATH500_NAMES or "math500" in text:
        return "math500"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", str(text)).strip("_").lower() or "unnamed"


# ----------------------------------------------------------------------------------------------------------
# Benchmark loading
# ----------------------------------------------------------------------------------------------------------


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
GOLD_COLUMNS = ("answer", "solution", "reward_model", "ground_truth")
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


def _to_python(value: Any) -> Any:
    """numpy arrays/scalars (pandas) -> plain Python, recursively."""
    if isinstance(value, dict):
        return {key: _to_python(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_python(item) for item in value]
    if hasattr(value, "tolist") and not isinstance(value, str):
        return _to_python(value.tolist())
    return value


def _read_records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if suffix == ".jsonl":
        records = []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {line_number} is not valid JSON ({error}).") from error
                if not isinstance(record, dict):
                    raise ValueError(f"{path}: line {line_number} is a {type(record).__name__}, expected an object.")
                records.append(record)
        return records
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list) or not all(isinstance(record, dict) for record in data):
            raise ValueError(f"{path}: expected a JSON list of objects (or {{'data': [...]}}).")
        return data
    raise ValueError(
        f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED_EXTENSIONS)} "
        "(the authors' parquet schema, or question/answer records)."
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
    kwargs = {
        column: [row[column]] for column in ("answer", "solution", "reward_model") if row.get(column) is not None
    }
    if not kwargs and row.get("ground_truth") is not None:
        kwargs = {"answer": [row["ground_truth"]]}
    if not kwargs:
        raise _SkipRow("no gold answer")
    try:
        gold = gold_answers_from_kwargs(kwargs, 1)[0]
    except ValueError as error:
        raise _SkipRow(f"unusable gold answer ({str(error).split('.')[0]})") from error
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
        description, records = str(path), _read_records(path)
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
        if not columns & set(GOLD_COLUMNS):
            raise ValueError(
                f"{description}: no gold-answer column; expected one of {', '.join(GOLD_COLUMNS)} "
                f"('reward_model' holding {{'ground_truth': ...}}). Columns: {sorted(columns)}."
            )

    skipped: Counter = Counter()
    notes: Counter = Counter()
    grouped: dict[tuple, Problem] = {}
    for row_index, raw in enumerate(records):
        row = _to_python(raw)
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


# ----------------------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------------------


def build_messages(messages: Sequence[Mapping[str, str]], system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The chat messages sent to the model: stored system messages replaced by ``system_prompt``.

    ``system_prompt=None`` keeps the stored messages unchanged; ``""`` drops system messages and adds none.
    """
    stored = [dict(message) for message in messages]
    if system_prompt is None:
        return stored
    kept = [message for message in stored if message.get("role") != "system"]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + kept


# ----------------------------------------------------------------------------------------------------------
# Scoring and metrics
# ----------------------------------------------------------------------------------------------------------


def score_responses(
    responses: Sequence[str],
    golds: Sequence[str],
    scorings: Sequence[str],
    timeout: float = DEFAULT_VERIFY_TIMEOUT,
) -> list[dict[str, Any]]:
    """Score responses with the project's rewards. Returns per response ``{"correct", "extracted", "format_ok"}``.

    ``scorings[i]`` is ``"math"`` (Math-Verify on :func:`~ampo_trl.rewards.extract_answer`, ``timeout`` seconds
    per item) or ``"multiple_choice"`` (option letter match).
    """
    if not (len(responses) == len(golds) == len(scorings)):
        raise ValueError("responses, golds and scorings must have the same length.")
    extracted = [extract_answer(text) for text in responses]
    correct = [False] * len(responses)
    math_rows = [i for i, mode in enumerate(scorings) if mode == MATH]
    choice_rows = [i for i, mode in enumerate(scorings) if mode == MULTIPLE_CHOICE]
    unknown = set(scorings) - set(SCORING_MODES)
    if unknown:
        raise ValueError(f"Unknown scoring modes {sorted(unknown)}; use {', '.join(SCORING_MODES)}.")
    if math_rows:
        verdicts = verify_answers([extracted[i] for i in math_rows], [golds[i] for i in math_rows], timeout=timeout)
        for i, verdict in zip(math_rows, verdicts):
            correct[i] = bool(verdict)
    if choice_rows:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-letter golds were routed to Math-Verify at load time
            rewards = multiple_choice_reward(
                [responses[i] for i in choice_rows], answer=[golds[i] for i in choice_rows]
            )
        for i, reward in zip(choice_rows, rewards):
            correct[i] = reward >= 1.0
    formats = format_reward(list(responses))
    return [
        {"correct": correct[i], "extracted": extracted[i], "format_ok": formats[i] >= 1.0}
        for i in range(len(responses))
    ]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with n samples, c correct: ``1 - C(n-c, k) / C(n, k)``.

    Computed exactly as ``1 - prod_{j=n-c+1}^{n} (j - k) / prod_{j=n-c+1}^{n} j`` with Python integers (the same
    ratio; no overflow, no cancellation) and rounded to float once; 1.0 when ``n - c < k``.
    """
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass@k needs n >= 1 and 0 <= c <= n, got n={n}, c={c}.")
    if not 1 <= k <= n:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}.")
    if n - c < k:
        return 1.0
    numerator, denominator = 1, 1
    for j in range(n - c + 1, n + 1):
        numerator *= j - k
        denominator *= j
    return float(1 - Fraction(numerator, denominator))


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> float | None:
    """Mean of :func:`pass_at_k` over problems given as ``(n_i, c_i)``; None when some ``n_i < k`` (undefined)."""
    if not counts or any(n < k for n, _ in counts):
        return None
    return sum(pass_at_k(n, c, k) for n, c in counts) / len(counts)


def default_k_values(n: int) -> list[int]:
    """Powers of two up to ``n``, plus ``n`` itself: 1, 2, 4, ..., n."""
    values, k = [], 1
    while k <= n:
        values.append(k)
        k *= 2
    if n >= 1 and values[-1] != n:
        values.append(n)
    return values


def _mean(values: Iterable[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def benchmark_metrics(
    problems: Sequence[Problem],
    samples: Sequence[Mapping[str, Any]],
    k_values: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Metrics of one benchmark from its problems and scored samples (dicts with ``problem_id``, ``correct``,
    ``format_ok``, ``extracted_answer``, ``num_tokens``, ``finish_reason``). See the module docstring for formulas."""
    per_problem: dict[str, list[Mapping[str, Any]]] = {problem.problem_id: [] for problem in problems}
    for sample in samples:
        per_problem[sample["problem_id"]].append(sample)
    counts = [(len(items), sum(bool(s["correct"]) for s in items)) for items in per_problem.values()]
    if not counts or any(n == 0 for n, _ in counts):
        raise ValueError("Every problem needs at least one sample.")
    n_values = [n for n, _ in counts]
    n_min, n_max = min(n_values), max(n_values)
    ks = sorted(set(k_values)) if k_values else default_k_values(n_min)
    first = problems[0]
    spec = BENCHMARKS.get(first.benchmark)
    scorings = Counter(problem.scoring for problem in problems)
    return {
        "name": spec.name if spec else first.data_source,
        "group": spec.group if spec else "other",
        "data_sources": sorted({problem.data_source for problem in problems}),
        "scoring": scorings.most_common(1)[0][0] if len(scorings) == 1 else dict(scorings),
        "num_problems": len(problems),
        "num_samples": len(samples),
        "samples_per_problem": n_min if n_min == n_max else {"min": n_min, "max": n_max},
        "metric": f"avg@{n_min}" if n_min == n_max else f"avg@{n_min}-{n_max}",
        "accuracy": sum(c / n for n, c in counts) / len(counts),
        "pass_at_k": {str(k): mean_pass_at_k(counts, k) for k in ks},
        "mean_length": _mean(s["num_tokens"] for s in samples),
        "format_rate": _mean(float(bool(s["format_ok"])) for s in samples),
        "answer_rate": _mean(float(s["extracted_answer"] is not None) for s in samples),
        "truncation_rate": _mean(float(s["finish_reason"] == "length") for s in samples),
        "problems_all_correct": sum(c == n for n, c in counts),
        "problems_none_correct": sum(c == 0 for n, c in counts),
    }


def group_metrics(benchmarks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Table 1 group scores: unweighted means of benchmark accuracy (and length) over each group's members."""
    groups = {}
    for key, (name, members) in GROUPS.items():
        present = [m for m in members if m in benchmarks]
        groups[key] = {
            "name": name,
            "benchmarks": present,
            "missing": [m for m in members if m not in benchmarks],
            "complete": len(present) == len(members),
            "accuracy": _mean(benchmarks[m]["accuracy"] for m in present),
            "mean_length": _mean(benchmarks[m]["mean_length"] for m in present),
        }
    return groups


# ----------------------------------------------------------------------------------------------------------
# Running an evaluation
# ----------------------------------------------------------------------------------------------------------


@dataclass
class EvalSettings:
    """Everything that defines an evaluation run (stored in the results JSON).

    num_samples: samples per benchmark row (problem i gets ``num_samples * repeats_i`` samples when
    ``expand_repeats``, else ``num_samples``); pass_k: the k list (None: 1, 2, 4, ..., n per benchmark);
    system_prompt: replaces stored system prompts (None keeps them; "" removes them); seed_per_problem: seed each
    problem's samples with ``derive_seed(seed, problem_id)`` (the pool builder's per-question seeding: samples do not
    depend on batching, on the other problems or on the vLLM data-parallel layout; the transformers backend then
    generates each problem on its own, slower when problems have few samples). Default: one seed per generation
    call (transformers batches samples of different problems together; vLLM uses its engine seed).
    """

    num_samples: int = 1
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = 0
    system_prompt: str | None = SYSTEM_PROMPT
    pass_k: list[int] | None = None
    expand_repeats: bool = True
    verify_timeout: float = DEFAULT_VERIFY_TIMEOUT
    seed_per_problem: bool = False

    def __post_init__(self):
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}.")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"Need temperature >= 0 and 0 < top_p <= 1, got {self.temperature}, {self.top_p}.")
        if self.pass_k is not None:
            self.pass_k = sorted({int(k) for k in self.pass_k})
            if not self.pass_k or self.pass_k[0] < 1:
                raise ValueError(f"pass_k values must be >= 1, got {self.pass_k}.")

    def sampling(self) -> SamplingSettings:
        return SamplingSettings(self.temperature, self.top_p, self.max_new_tokens, self.seed)

    def samples_for(self, problem: Problem) -> int:
        return self.num_samples * (problem.repeats if self.expand_repeats else 1)


@dataclass
class EvaluationOutput:
    """``results``: every number and setting (JSON-ready); ``samples``: one dict per generated response."""

    results: dict[str, Any]
    samples: list[dict[str, Any]]


def _all_problems(benchmark_sets: Sequence[BenchmarkSet]) -> list[Problem]:
    return [problem for benchmark_set in benchmark_sets for problem in benchmark_set.problems]


def _sample_record(problem: Problem, sample_index: int, generation: Generation, score: Mapping) -> dict[str, Any]:
    return {
        "benchmark": problem.benchmark,
        "data_source": problem.data_source,
        "problem_id": problem.problem_id,
        "sample_index": sample_index,
        "question": problem.question,
        "gold": problem.gold,
        "scoring": problem.scoring,
        "response": generation.text,
        "extracted_answer": score["extracted"],
        "correct": bool(score["correct"]),
        "format_ok": bool(score["format_ok"]),
        "num_tokens": generation.num_tokens,
        "finish_reason": generation.finish_reason,
    }


def _verifier_delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("fast_path_matches", "verified_in_pool", "verified_in_process", "timeouts", "worker_crashes")
    return {key: after.get(key, 0) - before.get(key, 0) for key in keys}


def _versions(backend_name: str) -> dict[str, str]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    packages = ["ampo-trl", "torch", "transformers", "trl", "math-verify"] + (
        ["vllm"] if backend_name == "vllm" else []
    )
    for package in packages:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def compute_results(
    benchmark_sets: Sequence[BenchmarkSet],
    samples: Sequence[Mapping[str, Any]],
    settings: EvalSettings,
) -> dict[str, Any]:
    """Per-benchmark metrics, group means and data accounting from scored samples (no settings/metadata)."""
    problems = _all_problems(benchmark_sets)
    by_benchmark: dict[str, list[Problem]] = {}
    for problem in problems:
        by_benchmark.setdefault(problem.benchmark, []).append(problem)
    samples_by_benchmark: dict[str, list[Mapping[str, Any]]] = {key: [] for key in by_benchmark}
    for sample in samples:
        samples_by_benchmark[sample["benchmark"]].append(sample)
    order = [key for key in BENCHMARKS if key in by_benchmark] + [k for k in by_benchmark if k not in BENCHMARKS]
    benchmarks = {
        key: benchmark_metrics(by_benchmark[key], samples_by_benchmark[key], settings.pass_k) for key in order
    }
    skipped: Counter = Counter()
    for benchmark_set in benchmark_sets:
        skipped.update(benchmark_set.skipped)
    return {
        "benchmarks": benchmarks,
        "groups": group_metrics(benchmarks),
        "overall": {
            "accuracy": _mean(b["accuracy"] for b in benchmarks.values()),
            "mean_length": _mean(b["mean_length"] for b in benchmarks.values()),
            "format_rate": _mean(b["format_rate"] for b in benchmarks.values()),
            "num_problems": sum(b["num_problems"] for b in benchmarks.values()),
            "num_samples": sum(b["num_samples"] for b in benchmarks.values()),
        },
        "data": {
            "sources": [benchmark_set.summary() for benchmark_set in benchmark_sets],
            "skipped_rows_total": sum(skipped.values()),
            "skipped_rows": dict(skipped),
        },
    }


def evaluate(
    backend: TransformersBackend | VLLMBackend | Any,
    benchmark_sets: Sequence[BenchmarkSet],
    settings: EvalSettings | None = None,
    *,
    label: str | None = None,
    model_name: str | None = None,
) -> EvaluationOutput:
    """Generate, score and measure: the whole protocol for one model over loaded benchmarks.

    ``backend``: any object with ``tokenizer`` and ``generate(requests, sampling) -> list[list[Generation]]``
    (:class:`TransformersBackend`, :class:`VLLMBackend`).
    """
    settings = settings or EvalSettings()
    problems = _all_problems(benchmark_sets)
    if not problems:
        raise ValueError("No problems to evaluate.")
    started = time.time()
    replaced = sum(any(m.get("role") == "system" for m in p.messages) for p in problems)
    requests = [
        GenerationRequest(
            render_prompt_ids(backend.tokenizer, build_messages(problem.messages, settings.system_prompt)),
            settings.samples_for(problem),
            derive_seed(settings.seed, problem.problem_id) if settings.seed_per_problem else None,
        )
        for problem in problems
    ]
    generations = backend.generate(requests, settings.sampling())
    generation_seconds = time.time() - started
    if len(generations) != len(requests):
        raise RuntimeError(f"The backend returned {len(generations)} results for {len(requests)} prompts.")
    for problem, request, row in zip(problems, requests, generations):
        if len(row) != request.num_samples:
            raise RuntimeError(
                f"The {getattr(backend, 'name', 'generation')} backend returned {len(row)} samples for "
                f"{problem.problem_id} instead of {request.num_samples}."
            )

    scoring_started = time.time()
    flat = [
        (problem, s, generation) for problem, row in zip(problems, generations) for s, generation in enumerate(row)
    ]
    stats_before = verifier_stats()
    scores = score_responses(
        [g.text for _, _, g in flat],
        [p.gold for p, _, _ in flat],
        [p.scoring for p, _, _ in flat],
        timeout=settings.verify_timeout,
    )
    samples = [_sample_record(p, s, g, score) for (p, s, g), score in zip(flat, scores)]
    results = compute_results(benchmark_sets, samples, settings)
    name = model_name or getattr(backend, "model_name", "") or ""
    results = {
        "format_version": RESULTS_FORMAT_VERSION,
        "model": {"name": str(name), "label": label or (Path(str(name)).name if name else "model")},
        "settings": {
            **dataclasses.asdict(settings),
            "system_prompt_replaced_in_problems": replaced if settings.system_prompt is not None else 0,
            "prompt_example": backend.tokenizer.decode(requests[0].prompt_ids),
            "backend": backend.describe() if hasattr(backend, "describe") else {"backend": type(backend).__name__},
        },
        **results,
        "verifier": _verifier_delta(stats_before, verifier_stats()),
        "timing": {
            "generation_seconds": round(generation_seconds, 3),
            "scoring_seconds": round(time.time() - scoring_started, 3),
        },
        "environment": {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **_versions(getattr(backend, "name", "")),
        },
    }
    return EvaluationOutput(results, samples)


# ----------------------------------------------------------------------------------------------------------
# Reports
# ----------------------------------------------------------------------------------------------------------


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}"


def _label(results: Mapping[str, Any]) -> str:
    return str(results.get("model", {}).get("label") or results.get("model", {}).get("name") or "model")


def _table1_keys(results_list: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[str]]:
    math_keys = list(GROUPS["math"][1])
    ood_keys = list(GROUPS["ood"][1])
    others = []
    for results in results_list:
        for key in results["benchmarks"]:
            if key not in BENCHMARKS and key not in others:
                others.append(key)
    return math_keys + ["@math"] + ood_keys + ["@ood"], others


def _benchmark_name(results_list: Sequence[Mapping[str, Any]], key: str) -> str:
    spec = BENCHMARKS.get(key)
    if spec is not None:
        return spec.name
    return next((r["benchmarks"][key]["name"] for r in results_list if key in r["benchmarks"]), key)


def render_table1_markdown(results_list: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table shaped like the paper's Table 1: one row per model, accuracy (%) per benchmark, and the
    unweighted group means. A mean over an incomplete group carries a dagger (†)."""
    columns, others = _table1_keys(results_list)
    headers = ["Model"]
    for column in columns:
        headers.append("Avg." if column.startswith("@") else BENCHMARKS[column].name)
    headers += [_benchmark_name(results_list, key) for key in others]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + [":---:"] * (len(headers) - 1)) + "|"]
    dagger = False
    for results in results_list:
        cells = [_label(results)]
        for column in columns:
            if column.startswith("@"):
                group = results["groups"][column[1:]]
                cell = _pct(group["accuracy"])
                if group["accuracy"] is not None and not group["complete"]:
                    cell += "†"
                    dagger = True
                cells.append(cell)
            else:
                cells.append(_pct(results["benchmarks"].get(column, {}).get("accuracy")))
        cells += [_pct(results["benchmarks"].get(key, {}).get("accuracy")) for key in others]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["Accuracy in % (avg@n: mean over problems of the fraction of correct samples). GPQA* = GPQA-diamond."]
    if dagger:
        notes.append("† mean over the benchmarks of the group that were evaluated (the group is incomplete).")
    return "\n".join(lines) + "\n\n" + " ".join(notes) + "\n"


def render_results_markdown(results: Mapping[str, Any]) -> str:
    """The full Markdown report of one run: Table 1 row, per-benchmark details, pass@k, settings, data notes."""
    settings = results["settings"]
    lines = [f"# Evaluation: {_label(results)}", ""]
    lines += [f"Model: `{results['model']['name']}`", ""]
    lines += ["## Table 1", "", render_table1_markdown([results])]
    lines += ["## Per benchmark", ""]
    lines += [
        "| Benchmark | data_source | scoring | problems | samples/problem | accuracy (%) | metric "
        "| mean length (tokens) | format (%) | answer found (%) | truncated (%) |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for b in results["benchmarks"].values():
        spp = b["samples_per_problem"]
        spp = spp if isinstance(spp, int) else f"{spp['min']}–{spp['max']}"
        length = "–" if b["mean_length"] is None else f"{b['mean_length']:.1f}"
        lines.append(
            f"| {b['name']} | {', '.join(b['data_sources'])} | {b['scoring']} | {b['num_problems']} | {spp} | "
            f"{_pct(b['accuracy'])} | {b['metric']} | {length} | {_pct(b['format_rate'])} | "
            f"{_pct(b['answer_rate'])} | {_pct(b['truncation_rate'])} |"
        )
    overall = results["overall"]
    mean_length = "–" if overall["mean_length"] is None else f"{overall['mean_length']:.1f}"
    lines += ["", f"Mean over benchmarks: accuracy {_pct(overall['accuracy'])} %, length {mean_length} tokens.", ""]
    ks = sorted({int(k) for b in results["benchmarks"].values() for k in b["pass_at_k"]})
    if ks:
        lines += ["## pass@k (%)", "", "| Benchmark | " + " | ".join(f"k={k}" for k in ks) + " |"]
        lines.append("|---|" + "---:|" * len(ks))
        for b in results["benchmarks"].values():
            lines.append(f"| {b['name']} | " + " | ".join(_pct(b["pass_at_k"].get(str(k))) for k in ks) + " |")
        lines += ["", "Unbiased estimator 1 − C(n−c, k)/C(n, k), averaged over problems; – where k > n.", ""]
    lines += ["## Settings", ""]
    for key in ("num_samples", "temperature", "top_p", "max_new_tokens", "seed", "expand_repeats", "verify_timeout"):
        lines.append(f"- {key}: {settings[key]}")
    lines.append(f"- system prompt: {settings['system_prompt']!r}")
    lines.append(f"- backend: {json.dumps(settings['backend'])}")
    data = results["data"]
    lines += ["", "## Data", ""]
    for source in data["sources"]:
        lines.append(
            f"- `{source['source']}`: {source['rows']} rows, {source['rows_in_evaluated_problems']} in the evaluated "
            f"problems; skipped rows: "
            f"{source['skipped_rows'] or 'none'}; problems not selected: {source['problems_not_selected'] or 'none'}"
        )
        if source["notes"]:
            lines.append(f"  notes: {source['notes']}")
    verifier = results.get("verifier", {})
    lines.append(f"- verifier time-outs (scored wrong): {verifier.get('timeouts', 0)}")
    return "\n".join(lines) + "\n"


def render_compare_markdown(results_list: Sequence[Mapping[str, Any]], baseline: int | str = 0) -> str:
    """Several runs side by side: a Table 1 with one row per run, then benchmarks as rows with one column per
    run and a Δ column (percentage points; tokens for length) against the baseline run."""
    if not results_list:
        raise ValueError("Nothing to compare.")
    labels = [_label(results) for results in results_list]
    if isinstance(baseline, str) and not baseline.isdigit():
        if baseline not in labels:
            raise ValueError(f"Baseline {baseline!r} is none of the labels {labels}.")
        base_index = labels.index(baseline)
    else:
        base_index = int(baseline)
        if not 0 <= base_index < len(results_list):
            raise ValueError(f"Baseline index {base_index} is out of range for {len(results_list)} result files.")
    base = results_list[base_index]
    keys = []
    for results in results_list:
        keys += [key for key in results["benchmarks"] if key not in keys]
    keys = [k for k in BENCHMARKS if k in keys] + [k for k in keys if k not in BENCHMARKS]

    def accuracy(results, key):
        if key.startswith("@"):
            return results["groups"][key[1:]]["accuracy"]
        return results["benchmarks"].get(key, {}).get("accuracy")

    def name(key):
        return GROUPS[key[1:]][0] if key.startswith("@") else _benchmark_name(results_list, key)

    rows = (
        [k for k in keys if k in GROUPS["math"][1]] + ["@math"] + [k for k in keys if k in GROUPS["ood"][1]] + ["@ood"]
    )
    rows += [k for k in keys if k not in BENCHMARKS]
    headers = ["Benchmark", f"{labels[base_index]} (baseline)"]
    for index, label in enumerate(labels):
        if index != base_index:
            headers += [label, "Δ"]
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]

    def delta(value, reference, scale=100.0, digits=1):
        if value is None or reference is None:
            return "–"
        return f"{scale * (value - reference):+.{digits}f}"

    for key in rows:
        reference = accuracy(base, key)
        cells = [name(key), _pct(reference)]
        for index, results in enumerate(results_list):
            if index != base_index:
                value = accuracy(results, key)
                cells += [_pct(value), delta(value, reference)]
        lines.append("| " + " | ".join(cells) + " |")
    reference = base["overall"]["mean_length"]
    cells = ["Mean length (tokens)", "–" if reference is None else f"{reference:.1f}"]
    for index, results in enumerate(results_list):
        if index != base_index:
            value = results["overall"]["mean_length"]
            cells += ["–" if value is None else f"{value:.1f}", delta(value, reference, 1.0, 1)]
    lines.append("| " + " | ".join(cells) + " |")
    text = "# Comparison\n\n## Table 1\n\n" + render_table1_markdown(results_list)
    text += "\n## Side by side (accuracy %, Δ in points vs the baseline)\n\n" + "\n".join(lines) + "\n"
    differing = _differing_settings(results_list)
    if differing:
        text += "\nSettings that differ between runs: " + "; ".join(differing) + "\n"
    return text


def _differing_settings(results_list: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = ("num_samples", "temperature", "top_p", "max_new_tokens", "system_prompt", "expand_repeats")
    differing = []
    for key in keys:
        values = [results.get("settings", {}).get(key) for results in results_list]
        if any(value != values[0] for value in values):
            differing.append(f"{key} = " + ", ".join(repr(value) for value in values))
    return differing


def plot_pass_at_k(results_list: Sequence[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    """PNG of pass@k curves: one panel per benchmark, one line per run (x: k on a log2 axis, y: pass@k in %)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if not results_list:
        raise ValueError("No results to plot.")
    keys: list[str] = []
    for results in results_list:
        keys += [key for key, b in results["benchmarks"].items() if key not in keys and b["pass_at_k"]]
    keys = [k for k in BENCHMARKS if k in keys] + [k for k in keys if k not in BENCHMARKS]
    if not keys:
        raise ValueError("The results hold no pass@k values to plot.")
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False)
    for panel, key in enumerate(keys):
        axis = axes[panel // columns][panel % columns]
        title, top, ticks = key, 0.0, set()
        for results in results_list:
            b = results["benchmarks"].get(key)
            if not b:
                continue
            title = f"{b['name']} ({b['metric']})" if len(results_list) == 1 else b["name"]
            points = sorted((int(k), v) for k, v in b["pass_at_k"].items() if v is not None)
            if points:
                values = [100 * v for _, v in points]
                axis.plot([k for k, _ in points], values, marker="o", label=_label(results))
                top = max(top, *values)
                ticks.update(k for k, _ in points)
        axis.set_xscale("log", base=2)
        if ticks:
            axis.set_xticks(sorted(ticks))
            axis.set_xticklabels([str(k) for k in sorted(ticks)])
            axis.set_xlim(min(ticks) / 1.3, max(ticks) * 1.3)
        upper = min(100.0, max(10.0, top * 1.15))
        axis.set_ylim(-0.03 * upper, 1.03 * upper)  # curves at 0 % and 100 % stay visible
        axis.set_title(title)
        axis.set_xlabel("k")
        axis.set_ylabel("pass@k (%)")
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    for panel in range(len(keys), rows * columns):
        axes[panel // columns][panel % columns].axis("off")
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def write_generations_jsonl(samples: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")
    return path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON written by :func:`write_report` (a run directory holding one works too)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"No results file at {path} (expected the {RESULTS_FILE} of an evaluation run)."
        ) from error
    if not isinstance(results, dict) or "benchmarks" not in results or "groups" not in results:
        raise ValueError(f"{path} is not an evaluation results file (no 'benchmarks'/'groups').")
    return results


def write_report(output: EvaluationOutput, output_dir: str | os.PathLike, plot: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md``, ``generations.jsonl`` and (if ``plot``) ``pass_at_k.png``."""
    directory = Path(output_dir)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": directory / RESULTS_FILE,
        "markdown": directory / MARKDOWN_FILE,
        "generations": directory / GENERATIONS_FILE,
    }
    paths["json"].write_text(json.dumps(output.results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    paths["markdown"].write_text(render_results_markdown(output.results), encoding="utf-8")
    write_generations_jsonl(output.samples, paths["generations"])
    if plot:
        paths["plot"] = plot_pass_at_k([output.results], directory / PLOT_FILE)
    return paths


# ----------------------------------------------------------------------------------------------------------
# Training-time evaluation
# ----------------------------------------------------------------------------------------------------------


def _distributed() -> tuple[int, int]:
    """(world_size, rank) of the default torch.distributed group, (1, 0) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


class AMPOEvalCallback(TrainerCallback):
    """Evaluate on a validation set every ``every_n_steps`` optimizer steps during training and log ``eval/...``.

    ``eval_file_or_dataset``: a file path or short name (see :func:`resolve_benchmark_path`; ``benchmark_dir``
    as there), a ``datasets.Dataset``, a ``pandas.DataFrame`` or a list of dicts, in any format
    :func:`load_benchmark` reads. ``max_problems`` keeps the first N problems *of each benchmark*. Generation uses
    the trainer's model (eval mode, no grad, own RNG stream: training randomness is untouched) and the same
    prompts and scoring as ``scripts/evaluate.py``.

    Logged (fractions in [0, 1]): ``eval/<benchmark>/accuracy``, ``eval/<benchmark>/pass@<k>``,
    ``eval/<benchmark>/mean_length``, ``eval/<benchmark>/format_rate``, ``eval/math_avg`` / ``eval/ood_avg``
    (unweighted means over the benchmarks of each Table 1 group that are present), ``eval/mean_accuracy``,
    ``eval/mean_length``, ``eval/format_rate``, ``eval/truncation_rate``, ``eval/seconds``.

    Multi-process runs: **every process participates**. The samples are cut into equal contiguous shards (padded
    with dummy copies, so every process runs the same number of ``generate`` calls with the same batch size), each
    process generates its shard with ``synced_gpus=True`` (forward passes in lockstep, which ZeRO-3 / FSDP need),
    scores it, and the scored shards are all-gathered, so every process computes the same metrics and logs
    them at the same step; no process waits on another's generation outside collectives.

    Logging goes through ``transformers.Trainer.log`` of the attached trainer (pass ``trainer=`` or call
    :meth:`attach`), which records ``state.log_history`` and reaches the reporting integrations (W&B, TensorBoard,
    ...). The base-class method is used on purpose: ``GRPOTrainer.log`` would flush the averaged training metrics
    at this point. Without a trainer the metrics go to ``state.log_history`` and the Python logger only.
    """

    def __init__(
        self,
        eval_file_or_dataset: Any,
        every_n_steps: int,
        num_samples: int = 1,
        max_new_tokens: int = 1024,
        temperature: float = DEFAULT_TEMPERATURE,
        max_problems: int | None = None,
        *,
        top_p: float = DEFAULT_TOP_P,
        batch_size: int = 16,
        system_prompt: str | None = SYSTEM_PROMPT,
        pass_k: Sequence[int] | None = None,
        expand_repeats: bool = True,
        seed: int = 0,
        verify_timeout: float = DEFAULT_VERIFY_TIMEOUT,
        benchmark_dir: str | os.PathLike | None = None,
        metric_prefix: str = "eval",
        trainer: Any = None,
    ):
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}.")
        self.every_n_steps = every_n_steps
        self.batch_size = batch_size
        self.metric_prefix = metric_prefix.rstrip("/")
        self.settings = EvalSettings(
            num_samples=num_samples,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            seed=seed,
            system_prompt=system_prompt,
            pass_k=list(pass_k) if pass_k else None,
            expand_repeats=expand_repeats,
            verify_timeout=verify_timeout,
        )
        self.benchmark_set = load_benchmark(
            eval_file_or_dataset, benchmark_dir=benchmark_dir, max_problems=max_problems
        )
        self.trainer = trainer
        self.history: list[dict[str, Any]] = []  # (step, metrics) of every evaluation, on every process
        self.last_results: dict[str, Any] | None = None  # full results (as in results.json) of the last evaluation
        self._warned_no_trainer = False
        self._last_step: int | None = None

    def attach(self, trainer) -> AMPOEvalCallback:
        """Register with ``trainer`` (``trainer.add_callback``) and log through it. Returns self."""
        self.trainer = trainer
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        return self

    def on_step_end(self, args, state, control, **kwargs):
        if (
            state.global_step > 0
            and state.global_step % self.every_n_steps == 0
            and state.global_step != self._last_step
        ):
            self._last_step = state.global_step
            model = kwargs.get("model") if self.trainer is None else self.trainer.model
            tokenizer = kwargs.get("processing_class") if self.trainer is None else self.trainer.processing_class
            tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps the tokenizer
            metrics = self.evaluate(model, tokenizer)
            # Trainer.log -> CallbackHandler.on_log resets control.should_log, which would cancel the trainer's own
            # logging of this step (DefaultFlowCallback set it just before us): keep the flag as it was.
            should_log = getattr(control, "should_log", False)
            self._log(metrics, state, args)
            if hasattr(control, "should_log"):
                control.should_log = should_log
            trainer_control = getattr(self.trainer, "control", None)
            if trainer_control is not None and hasattr(trainer_control, "should_log"):
                trainer_control.should_log = should_log
        return control

    def evaluate(self, model, tokenizer) -> dict[str, float]:
        """Generate on the validation problems with ``model``, score, and return the metrics (every process)."""
        if model is None or tokenizer is None:
            raise ValueError(
                "AMPOEvalCallback needs the model and its tokenizer: give the trainer a processing_class "
                "(tokenizer), or attach the callback with callback.attach(trainer)."
            )
        started = time.time()
        world_size, rank = _distributed()
        settings = self.settings
        problems = self.benchmark_set.problems
        items = [(index, s) for index, problem in enumerate(problems) for s in range(settings.samples_for(problem))]
        per_process = math.ceil(len(items) / world_size)
        shard = items[rank * per_process : (rank + 1) * per_process]
        num_real = len(shard)
        shard = shard + [items[-1]] * (per_process - num_real)  # equal work everywhere; padding dropped below
        was_training = model.training
        model.eval()
        try:
            backend = TransformersBackend(
                model, tokenizer, batch_size=self.batch_size, synced_gpus=world_size > 1, progress=False
            )
            prompt_ids = {}
            for index, _ in shard:
                if index not in prompt_ids:
                    messages = build_messages(problems[index].messages, settings.system_prompt)
                    prompt_ids[index] = render_prompt_ids(tokenizer, messages)
            requests = [GenerationRequest(prompt_ids[index], 1) for index, _ in shard]
            sampling = dataclasses.replace(settings.sampling(), seed=settings.seed + 1_000_003 * rank)
            generations = [row[0] for row in backend.generate(requests, sampling)] if requests else []
        finally:
            if was_training:
                model.train()
        generations = generations[:num_real]
        shard = shard[:num_real]
        scores = score_responses(
            [g.text for g in generations],
            [problems[index].gold for index, _ in shard],
            [problems[index].scoring for index, _ in shard],
            timeout=settings.verify_timeout,
        )
        local = [
            _sample_record(problems[index], s, g, score) for (index, s), g, score in zip(shard, generations, scores)
        ]
        if world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, local)
            samples = [sample for part in gathered for sample in part]
        else:
            samples = local
        results = compute_results([self.benchmark_set], samples, settings)
        self.last_results = results
        return self._flatten(results, time.time() - started)

    def _flatten(self, results: Mapping[str, Any], seconds: float) -> dict[str, float]:
        prefix = self.metric_prefix
        metrics: dict[str, float] = {}
        for key, b in results["benchmarks"].items():
            metrics[f"{prefix}/{key}/accuracy"] = b["accuracy"]
            for k, value in b["pass_at_k"].items():
                if value is not None and k != "1":
                    metrics[f"{prefix}/{key}/pass@{k}"] = value
            metrics[f"{prefix}/{key}/mean_length"] = b["mean_length"]
            metrics[f"{prefix}/{key}/format_rate"] = b["format_rate"]
        for key, group in results["groups"].items():
            if group["accuracy"] is not None:
                metrics[f"{prefix}/{key}_avg"] = group["accuracy"]
        overall = results["overall"]
        metrics[f"{prefix}/mean_accuracy"] = overall["accuracy"]
        metrics[f"{prefix}/mean_length"] = overall["mean_length"]
        metrics[f"{prefix}/format_rate"] = overall["format_rate"]
        metrics[f"{prefix}/truncation_rate"] = _mean(b["truncation_rate"] for b in results["benchmarks"].values())
        metrics[f"{prefix}/seconds"] = round(seconds, 3)
        return {key: float(value) for key, value in metrics.items() if value is not None}

    def _log(self, metrics: dict[str, float], state, args) -> None:
        self.history.append({"step": state.global_step, **metrics})
        trainer = self.trainer
        if trainer is not None:
            from transformers import Trainer

            # Trainer.log, not GRPOTrainer.log: the latter would flush the running training metrics here.
            if isinstance(trainer, Trainer):
                Trainer.log(trainer, dict(metrics))
            else:
                trainer.log(dict(metrics))
            return
        if not self._warned_no_trainer:
            self._warned_no_trainer = True
            warnings.warn(
                "AMPOEvalCallback has no trainer: eval metrics go to state.log_history and the logger only, not to "
                "W&B/TensorBoard. Construct it with trainer=... or call callback.attach(trainer).",
                stacklevel=3,
            )
        state.log_history.append({**copy.deepcopy(metrics), "step": state.global_step})
        logger.info("step %d: %s", state.global_step, metrics)
