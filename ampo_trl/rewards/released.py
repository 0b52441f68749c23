"""The released code's training reward, in one function (`ampo_released_reward`).

The authors' code (``math_verify_reward.py`` and ``mix_dapo_trainer.py``) rewards a completion with
r = 0.9 * acc + 0.1 * fmt and then, on rows sampled from the policy whose reward is not zero, adds the repetition
penalty (-1 when a window of 10 words occurs 10 times or more). A completion counts as correct when r > 0.6; the
values this reward takes (1.0, 0.9, 0.1, 0.0, -0.1, -0.9) make that ``correctness_threshold=0.9`` here, so a correct
but repetitive answer counts as failed and can trigger guidance, as in the released code. Teacher rows (another
``completion_source``) get no penalty. The answer checker is this package's Math-Verify, not the authors'.
"""

from __future__ import annotations

from .accuracy import ampo_reward
from .repetition import repetition_penalty_reward


def ampo_released_reward(completions: list, **kwargs) -> list[float]:
    """r = 0.9 * acc + 0.1 * fmt, plus the repetition penalty where r != 0 on policy rows (module docstring)."""
    rewards = ampo_reward(completions, **kwargs)
    penalties = repetition_penalty_reward(completions, **kwargs)
    return [reward + penalty if reward != 0 else reward for reward, penalty in zip(rewards, penalties)]
