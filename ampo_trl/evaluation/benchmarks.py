"""The benchmarks of the paper's Table 1: registry keys, display names, groups, scoring modes, and the mapping from
the ``data_source`` spellings found in public files to those keys."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

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
