"""Repetition penalty (released code): -1 when some window of 10 consecutive words occurs >= 10 times.

Only rows sampled from the policy are penalised: rows whose ``completion_source`` names another source (teacher
rows, see `AMPOTrainer`) get 0.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from ..answers import completion_text

REPETITION_WINDOW_WORDS = 10
REPETITION_MIN_REPEATS = 10
REPETITION_PENALTY = -1.0
POLICY_SOURCE = "policy"


def _has_repeated_word_window(text: str, window: int, min_repeats: int) -> bool:
    words = text.split()
    if len(words) < window:
        return False
    window_counts = Counter(tuple(words[start : start + window]) for start in range(len(words) - window + 1))
    return max(window_counts.values()) >= min_repeats


def make_repetition_penalty_reward(
    window: int = REPETITION_WINDOW_WORDS,
    min_repeats: int = REPETITION_MIN_REPEATS,
    penalty: float = REPETITION_PENALTY,
) -> Callable[..., list[float]]:
    """Build a repetition penalty reward: ``penalty`` (default -1.0) when some window of ``window``
    consecutive whitespace-separated words occurs at least ``min_repeats`` times (overlapping occurrences
    count), else 0.0. Rows whose ``completion_source`` kwarg names another source than ``"policy"`` (teacher
    rows; None counts as policy) get 0.0,
    as in the released code, which penalises on-policy rows only. The function is named
    ``repetition_penalty_reward`` (TRL's metric name) whatever the parameters."""
    if window < 1 or min_repeats < 1:
        raise ValueError(f"window and min_repeats must be >= 1, got window={window}, min_repeats={min_repeats}.")

    def repetition_penalty_reward(completions: list, **kwargs) -> list[float]:
        sources = kwargs.get("completion_source")
        rewards = []
        for row, completion in enumerate(completions):
            # A missing source (None) means an ordinary sampled row; only a named non-policy source is exempt.
            if sources is not None and sources[row] not in (None, POLICY_SOURCE):
                rewards.append(0.0)
            elif _has_repeated_word_window(completion_text(completion), window, min_repeats):
                rewards.append(float(penalty))
            else:
                rewards.append(0.0)
        return rewards

    repetition_penalty_reward.__doc__ = (
        f"Repetition penalty: {penalty} when a window of {window} consecutive words occurs >= {min_repeats} "
        "times in the completion, else 0.0; rows whose completion_source is not 'policy' get 0.0."
    )
    return repetition_penalty_reward


repetition_penalty_reward = make_repetition_penalty_reward()
