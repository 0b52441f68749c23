"""Reward functions for AMPO (arXiv 2510.02227), with TRL's reward-function signature.

Every reward function is ``f(completions, **kwargs) -> list[float]``. ``completions`` is a list of strings
(plain-text prompts) or a list of conversations ``[[{"role": "assistant", "content": "..."}], ...]``
(conversational prompts); dataset columns arrive in ``kwargs`` as per-row lists.

Formulas (``a`` = the extracted answer, `ampo_trl.answers.extract_answer`; ``y*`` = the gold answer):

- ``accuracy_reward``            acc = 1 if Math-Verify says ``a == y*`` else 0 (no answer / timeout -> 0)
- ``format_reward``              fmt = 1 iff exactly one ``<answer>`` and one ``</answer>``, opening first
- ``ampo_reward``                r   = 0.9 * acc + 0.1 * fmt (the paper's training reward)
- ``ampo_released_reward``       r + repetition penalty where r != 0 on policy rows (the released code's reward)
- ``repetition_penalty_reward``  -1 if some window of 10 consecutive words occurs >= 10 times, else 0;
                                 rows whose ``completion_source`` is not ``"policy"`` get 0
- ``multiple_choice_reward``     1 iff the option letter (A-J) in ``a`` equals the gold letter (without an answer
                                 pair, ``a`` is the last ``ANSWER: X`` line)

Modules: `accuracy` (accuracy, format, composite), `repetition`, `choice` (multiple choice), `registry` (names and
dotted paths), `verifier` (`verify_answers`, the relative tolerance for numbers), `normalize` (normalisation of
answers and the exact-match fast path), `worker_pool` (Math-Verify under a hard time limit), `selfcheck` (the
verifier checked on every benchmark gold: ``python -m ampo_trl.rewards.selfcheck``). Only the standard library is
imported here: verifier worker processes import this package and must start fast.
"""

from ..answers import completion_text, extract_answer, extract_boxed, gold_answer_text, gold_answers_from_kwargs
from .accuracy import ACCURACY_WEIGHT, FORMAT_WEIGHT, accuracy_reward, ampo_reward, format_reward
from .choice import MULTIPLE_CHOICE_LETTERS, extract_choice_letter, multiple_choice_reward
from .registry import REWARD_FUNCS, resolve_reward_funcs
from .released import ampo_released_reward
from .repetition import (
    POLICY_SOURCE,
    REPETITION_MIN_REPEATS,
    REPETITION_PENALTY,
    REPETITION_WINDOW_WORDS,
    make_repetition_penalty_reward,
    repetition_penalty_reward,
)
from .verifier import verify_answers
from .worker_pool import shutdown_verifier_pool, verifier_stats

__all__ = [
    "ACCURACY_WEIGHT",
    "FORMAT_WEIGHT",
    "MULTIPLE_CHOICE_LETTERS",
    "POLICY_SOURCE",
    "REPETITION_MIN_REPEATS",
    "REPETITION_PENALTY",
    "REPETITION_WINDOW_WORDS",
    "REWARD_FUNCS",
    "accuracy_reward",
    "ampo_released_reward",
    "ampo_reward",
    "completion_text",
    "extract_answer",
    "extract_boxed",
    "extract_choice_letter",
    "format_reward",
    "gold_answer_text",
    "gold_answers_from_kwargs",
    "make_repetition_penalty_reward",
    "multiple_choice_reward",
    "repetition_penalty_reward",
    "resolve_reward_funcs",
    "shutdown_verifier_pool",
    "verifier_stats",
    "verify_answers",
]
