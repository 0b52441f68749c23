"""The demo's task: two-digit additions split into easy and hard ones, three synthetic teachers, and the reward.

* *Easy*: the sum is below 100 (the student's warm-up covers them). *Hard*: the sum is 100 or more, so the tens
  column carries into a third digit.
* **The held-out split is leak-free by construction**: it is drawn by *unordered operand pair* ``{a, b}``.
  ``eval_problems`` pairs per difficulty are held out; one orientation of each (``a+b`` or ``b+a``, at random) is
  the evaluation problem, and *neither* orientation is ever a training problem (the other one is quarantined:
  used nowhere). Pairs that a teacher text states as a step of another problem's solution (``tens_first`` writes
  ``90+40=130`` while solving ``95+47``) are never held out, so no pool, prompt or warm-up example contains a
  held-out problem or its twin. Training problems are everything else.
* Every problem's pool holds one solution per teacher, all correct, in different styles: ``column`` (ones column,
  carry, tens column), ``tens_first`` (tens and ones separately, then the sum) and ``terse`` (only the answer).
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..answers import ANSWER_CLOSE, ANSWER_OPEN, completion_text

_ANSWER_PAIR = re.compile(re.escape(ANSWER_OPEN) + "(.*?)" + re.escape(ANSWER_CLOSE), re.S)

# Bump when problems, the split, teacher texts or the warm-up change: it keys the cached warm-ups.
# 2: the held-out split is drawn by unordered operand pair (no commutative twin in training).
TASK_VERSION = 2


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

    @property
    def twin(self) -> AdditionProblem:
        """The commutative twin ``b+a`` (the problem itself when ``a == b``)."""
        return AdditionProblem(self.b, self.a)

    @property
    def operand_pair(self) -> tuple[int, int]:
        """The unordered operand pair ``(min, max)``: a problem and its twin share it."""
        return (min(self.a, self.b), max(self.a, self.b))


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


_STATED_ADDITION = re.compile(r"(?<!\d)(\d+)\+(\d+)(?!\d)")


def all_problems() -> list[AdditionProblem]:
    """Every ``a+b`` with two-digit ``a`` and ``b`` (8,100 problems), in a fixed order."""
    return [AdditionProblem(a, b) for a in range(10, 100) for b in range(10, 100)]


def stated_pairs(texts: Iterable[str]) -> set[tuple[int, int]]:
    """Unordered operand pairs of every ``x+y`` written in ``texts`` (what a teacher text would leak)."""
    pairs = set()
    for text in texts:
        for x, y in _STATED_ADDITION.findall(text):
            pairs.add((min(int(x), int(y)), max(int(x), int(y))))
    return pairs


@functools.lru_cache(maxsize=8)
def _teacher_stated_pairs() -> frozenset[tuple[int, int]]:
    """Operand pairs that some teacher writes as a step while solving *another* problem."""
    stated = set()
    for problem in all_problems():
        stated |= stated_pairs(teacher(problem) for teacher in TEACHERS.values()) - {problem.operand_pair}
    return frozenset(stated)


@functools.lru_cache(maxsize=32)
def _split(eval_problems: int, seed: int, hard: bool) -> tuple[tuple[AdditionProblem, ...], ...]:
    """``(train, held_out, quarantined)`` of one difficulty: see the module docstring."""
    problems = [p for p in all_problems() if p.hard == hard]
    pairs = sorted({p.operand_pair for p in problems})
    candidates = [pair for pair in pairs if pair not in _teacher_stated_pairs()]
    if eval_problems >= len(candidates):
        raise ValueError(
            f"eval_problems={eval_problems} is too large: only {len(candidates)} {'hard' if hard else 'easy'} operand "
            "pairs can be held out, and training needs the rest. Lower demo_eval_problems."
        )
    rng = random.Random(f"{seed}-{hard}-pairs")
    rng.shuffle(candidates)
    held_out = []
    for a, b in candidates[:eval_problems]:
        held_out.append(AdditionProblem(a, b) if rng.random() < 0.5 else AdditionProblem(b, a))
    held_pairs = {p.operand_pair for p in held_out}
    quarantined = [p.twin for p in held_out if p.twin != p]
    train = [p for p in problems if p.operand_pair not in held_pairs]
    random.Random(f"{seed}-{hard}-train").shuffle(train)
    return tuple(train), tuple(held_out), tuple(quarantined)


@dataclass(frozen=True)
class DemoTask:
    """Deterministic, leak-free split of all two-digit additions into training / held-out problems per difficulty
    (by unordered operand pair; see the module docstring)."""

    eval_problems: int = 200
    seed: int = 0

    @property
    def train_easy(self) -> list[AdditionProblem]:
        return list(_split(self.eval_problems, self.seed, False)[0])

    @property
    def train_hard(self) -> list[AdditionProblem]:
        return list(_split(self.eval_problems, self.seed, True)[0])

    @property
    def eval_easy(self) -> list[AdditionProblem]:
        return list(_split(self.eval_problems, self.seed, False)[1])

    @property
    def eval_hard(self) -> list[AdditionProblem]:
        return list(_split(self.eval_problems, self.seed, True)[1])

    @property
    def quarantined(self) -> list[AdditionProblem]:
        """The twins of the held-out problems: neither trained on nor evaluated."""
        return list(_split(self.eval_problems, self.seed, False)[2] + _split(self.eval_problems, self.seed, True)[2])

    @property
    def held_out_pairs(self) -> set[tuple[int, int]]:
        """Unordered operand pairs of every held-out problem (easy and hard)."""
        return {p.operand_pair for p in self.eval_easy + self.eval_hard}


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
