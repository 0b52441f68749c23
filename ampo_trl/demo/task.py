"""The demo's task: two-digit additions split into easy and hard ones, three synthetic teachers, and the reward.

* *Easy*: the sum is below 100 (the student's warm-up covers them). *Hard*: the sum is 100 or more, so the tens
  column carries into a third digit. Problems are split deterministically into held-out evaluation sets
  (``eval_problems`` per difficulty) and training problems.
* Every problem's pool holds one solution per teacher, all correct, in different styles: ``column`` (ones column,
  carry, tens column), ``tens_first`` (tens and ones separately, then the sum) and ``terse`` (only the answer).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..answers import ANSWER_CLOSE, ANSWER_OPEN, completion_text

_ANSWER_PAIR = re.compile(re.escape(ANSWER_OPEN) + "(.*?)" + re.escape(ANSWER_CLOSE), re.S)

TASK_VERSION = 1  # bump when problems, teacher texts or the warm-up change (invalidates cached warm-ups)


@dataclass(frozen=True)
class AdditionProblem:
    a: int
    b: int

    @property
    def answer(self) -> str:
        return str(self.a + self.b)

    @property
    def hard(self) -> bool:
        return self.a + self.b >= 100

    @property
    def question(self) -> str:
        return f"{self.a}+{self.b}"


def column_solution(p: AdditionProblem) -> str:
    """Ones column, carry, tens column: ``7+5=12, carry 1. 3+2+1=6. <answer>62</answer>``."""
    a0, a1, b0, b1 = p.a % 10, p.a // 10, p.b % 10, p.b // 10
    ones = a0 + b0
    carry = ones // 10
    first = f"{a0}+{b0}={ones}" + (", carry 1." if carry else ".")
    second = f"{a1}+{b1}" + ("+1" if carry else "") + f"={a1 + b1 + carry}."
    return f"{first} {second} {ANSWER_OPEN}{p.answer}{ANSWER_CLOSE}"


def tens_first_solution(p: AdditionProblem) -> str:
    """Tens and ones separately, then their sum: ``30+20=50, 7+5=12, 50+12=62. <answer>62</answer>``."""
    tens = (p.a // 10 + p.b // 10) * 10
    ones = p.a % 10 + p.b % 10
    return (
        f"{p.a // 10 * 10}+{p.b // 10 * 10}={tens}, {p.a % 10}+{p.b % 10}={ones}, {tens}+{ones}={p.a + p.b}. "
        f"{ANSWER_OPEN}{p.answer}{ANSWER_CLOSE}"
    )


def terse_solution(p: AdditionProblem) -> str:
    """Only the answer: ``<answer>62</answer>``."""
    return f"{ANSWER_OPEN}{p.answer}{ANSWER_CLOSE}"


TEACHERS: dict[str, Callable[[AdditionProblem], str]] = {
    "column": column_solution,
    "tens_first": tens_first_solution,
    "terse": terse_solution,
}


def prompt_messages(problem: AdditionProblem, system_prompt: str | None = None) -> list[dict]:
    messages = [{"role": "user", "content": problem.question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


@dataclass(frozen=True)
class DemoTask:
    """Deterministic split of all two-digit additions into train / held-out sets, per difficulty."""

    eval_problems: int = 200
    seed: int = 0

    def _split(self, hard: bool) -> tuple[list[AdditionProblem], list[AdditionProblem]]:
        problems = [
            AdditionProblem(a, b) for a in range(10, 100) for b in range(10, 100) if AdditionProblem(a, b).hard == hard
        ]
        random.Random(f"{self.seed}-{hard}").shuffle(problems)
        if self.eval_problems >= len(problems):
            raise ValueError(f"eval_problems={self.eval_problems} leaves no training problems.")
        return problems[self.eval_problems :], problems[: self.eval_problems]

    @property
    def train_easy(self) -> list[AdditionProblem]:
        return self._split(False)[0]

    @property
    def train_hard(self) -> list[AdditionProblem]:
        return self._split(True)[0]

    @property
    def eval_easy(self) -> list[AdditionProblem]:
        return self._split(False)[1]

    @property
    def eval_hard(self) -> list[AdditionProblem]:
        return self._split(True)[1]


def pool(problem: AdditionProblem, teachers: Sequence[str] | None = None) -> list[dict]:
    names = list(teachers) if teachers else list(TEACHERS)
    return [{"teacher": name, "text": TEACHERS[name](problem)} for name in names]


def train_rows(
    task: DemoTask,
    num_prompts: int,
    hard_fraction: float,
    seed: int = 0,
    system_prompt: str | None = None,
    teachers: Sequence[str] | None = None,
) -> list[dict]:
    """RL prompts in the canonical schema (``prompt``, ``answer``, ``teacher_solutions``, plus ``difficulty``)."""
    rng = random.Random(f"rl-{seed}")
    easy, hard = task.train_easy, task.train_hard
    rows = []
    for _ in range(num_prompts):
        problem = rng.choice(hard) if rng.random() < hard_fraction else rng.choice(easy)
        rows.append(
            {
                "prompt": prompt_messages(problem, system_prompt),
                "answer": problem.answer,
                "teacher_solutions": pool(problem, teachers),
                "difficulty": "hard" if problem.hard else "easy",
            }
        )
    return rows


def exact_answer_reward(
    completions: list,
    answer: list[str],
    difficulty: list[str] | None = None,
    log_metric: Callable[[str, float], None] | None = None,
    **kwargs,
) -> list[float]:
    """1.0 iff the content of the last ``<answer>…</answer>`` is the gold integer: the exact verifier for this task.

    In a trainer, also logs the sampled accuracy on easy and hard prompts (``demo/accuracy_easy`` /
    ``demo/accuracy_hard``) through TRL's ``log_metric``, when the rows carry a ``difficulty`` column.
    """
    rewards = []
    for completion, gold in zip(completions, answer):
        found = _ANSWER_PAIR.findall(completion_text(completion))
        rewards.append(1.0 if found and found[-1].strip() == str(gold).strip() else 0.0)
    if log_metric is not None and difficulty is not None:
        for level in ("easy", "hard"):
            values = [reward for reward, row_level in zip(rewards, difficulty) if row_level == level]
            if values:
                log_metric(f"demo/accuracy_{level}", sum(values) / len(values))
    return rewards
