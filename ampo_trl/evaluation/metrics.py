"""Metrics of scored samples: accuracy (avg@n), exact unbiased pass@k, lengths and rates, Table 1 group means."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from ..reporting import mean
from .benchmarks import BENCHMARKS, GROUPS
from .loading import Problem


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
        "mean_length": mean(s["num_tokens"] for s in samples),
        "format_rate": mean(float(bool(s["format_ok"])) for s in samples),
        "answer_rate": mean(float(s["extracted_answer"] is not None) for s in samples),
        "truncation_rate": mean(float(s["finish_reason"] == "length") for s in samples),
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
            "accuracy": mean(benchmarks[m]["accuracy"] for m in present),
            "mean_length": mean(benchmarks[m]["mean_length"] for m in present),
        }
    return groups
