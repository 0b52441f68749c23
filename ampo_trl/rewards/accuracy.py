"""The paper's reward: accuracy (Math-Verify), format, and their 0.9 / 0.1 composite.

- ``accuracy_reward``  acc = 1 if Math-Verify says ``a == y*`` else 0, with ``a = extract_answer(completion)`` and
                       ``y*`` the gold answer (no answer / timeout -> 0)
- ``format_reward``    fmt = 1 iff exactly one ``<answer>`` and one ``</answer>``, opening first
- ``ampo_reward``      r   = 0.9 * acc + 0.1 * fmt (the paper's training reward)

Signature as TRL expects: ``f(completions, **kwargs) -> list[float]``, completions plain strings or conversations;
gold answers come from the columns of `ampo_trl.answers.GOLD_ANSWER_COLUMNS`.
"""

from __future__ import annotations

from ..answers import answer_format_ok, completion_text, extract_answer, gold_answers_from_kwargs
from .verifier import default_timeout, verify_answers

ACCURACY_WEIGHT = 0.9
FORMAT_WEIGHT = 0.1


def accuracy_reward(completions: list, **kwargs) -> list[float]:
    """Accuracy reward: 1.0 iff the extracted answer verifies against the gold answer, else 0.0.

    acc = 1[MathVerify(extract_answer(completion), gold)]. A missing answer, malformed text or a verification
    timeout (``AMPO_VERIFY_TIMEOUT`` seconds, default 5) scores 0.0. The gold answer comes from the column
    ``answer``, else ``solution``, else ``reward_model["ground_truth"]``; ValueError if none is present.
    """
    golds = gold_answers_from_kwargs(kwargs, len(completions))
    predictions = [extract_answer(completion_text(completion)) for completion in completions]
    return [1.0 if correct else 0.0 for correct in verify_answers(predictions, golds, timeout=default_timeout())]


def format_reward(completions: list, **kwargs) -> list[float]:
    """Format reward: 1.0 iff the completion has exactly one ``<answer>`` and exactly one ``</answer>``,
    the opening tag before the closing one; else 0.0. fmt = 1[#open = 1 and #close = 1 and open < close]."""
    return [1.0 if answer_format_ok(completion_text(completion)) else 0.0 for completion in completions]


def ampo_reward(completions: list, **kwargs) -> list[float]:
    """The paper's training reward in one function: r = 0.9 * acc + 0.1 * fmt (values 0, 0.1, 0.9, 1.0).

    Equivalent to ``reward_funcs=[accuracy_reward, format_reward]`` with ``reward_weights=[0.9, 0.1]``.
    """
    accuracies = accuracy_reward(completions, **kwargs)
    formats = format_reward(completions, **kwargs)
    return [ACCURACY_WEIGHT * accuracy + FORMAT_WEIGHT * fmt for accuracy, fmt in zip(accuracies, formats)]
