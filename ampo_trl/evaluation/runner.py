"""Running an evaluation: prompts with the evaluation system prompt, generation with a backend of
`ampo_trl.generation`, scoring with the project's rewards, metrics, and the results JSON with every setting."""

from __future__ import annotations

import dataclasses
import datetime
import platform
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..answers import SYSTEM_PROMPT, extract_answer
from ..generation import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TEMPERATURE,
    DEFAULT_TOP_P,
    Generation,
    GenerationRequest,
    SamplingSettings,
    TransformersBackend,
    VLLMBackend,
    derive_seed,
    render_prompt_ids,
)
from ..reporting import mean
from ..rewards import format_reward, multiple_choice_reward, verifier_stats, verify_answers
from .benchmarks import BENCHMARKS, MATH, MULTIPLE_CHOICE, SCORING_MODES
from .loading import BenchmarkSet, Problem
from .metrics import benchmark_metrics, group_metrics

DEFAULT_VERIFY_TIMEOUT = 5.0

RESULTS_FORMAT_VERSION = 1


def build_messages(messages: Sequence[Mapping[str, str]], system_prompt: str | None = SYSTEM_PROMPT) -> list[dict]:
    """The chat messages sent to the model: stored system messages replaced by ``system_prompt``.

    ``system_prompt=None`` keeps the stored messages unchanged; ``""`` drops system messages and adds none.
    """
    stored = [dict(message) for message in messages]
    if system_prompt is None:
        return stored
    kept = [message for message in stored if message.get("role") != "system"]
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + kept


def score_responses(
    responses: Sequence[str],
    golds: Sequence[str],
    scorings: Sequence[str],
    timeout: float = DEFAULT_VERIFY_TIMEOUT,
) -> list[dict[str, Any]]:
    """Score responses with the project's rewards. Returns per response ``{"correct", "extracted", "format_ok"}``.

    ``scorings[i]`` is ``"math"`` (Math-Verify on :func:`~ampo_trl.answers.extract_answer`, ``timeout`` seconds
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
            "accuracy": mean(b["accuracy"] for b in benchmarks.values()),
            "mean_length": mean(b["mean_length"] for b in benchmarks.values()),
            "format_rate": mean(b["format_rate"] for b in benchmarks.values()),
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
