"""Multiple-choice accuracy (ARC-c, GPQA-diamond, MMLU-Pro): the option letter of the answer against the gold letter.

mc = 1[letter(choice_answer(completion)) == gold letter], letters A-J; `extract_choice_letter` is conservative:
an answer naming several options, or a capital letter inside a word, never counts.

`choice_answer` reads the answer as `ampo_trl.answers.extract_answer` does when the completion has an
``<answer>…</answer>`` pair. Without a pair, it takes the letter of the **last** ``ANSWER: X`` (GPQA / simple-evals
prompts ask for a final line ``ANSWER: $LETTER``): the rest of that line, any case of "answer", read by
`extract_choice_letter` (so ``ANSWER: (C)``, ``**Answer:** $C$`` give C; ``ANSWER: C or D`` gives nothing), and only
without such a line the last ``\\boxed{…}``.
"""

from __future__ import annotations

import re
import warnings

from ..answers import completion_text, extract_answer, gold_answers_from_kwargs, last_answer_span
from .normalize import strip_math_delimiters

MULTIPLE_CHOICE_LETTERS = "ABCDEFGHIJ"

_MARKUP_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_LONE_LETTER = re.compile(r"[(\[]?\s*([A-Ja-j])\s*[)\]]?\s*[.:)]?")
_LEADING_OPTION = re.compile(r"(?:(?i:option|choice)\s+)?[(\[]?([A-J])(?:[)\]][.:]?|[.:,]|\s+(?i:is)\b)(?=\s|$)")
_ANSWER_PHRASE = re.compile(r"(?i:answer|option|choice)(?:\s+(?i:is))?\s*[:=]?\s*[(\[]?([A-J])(?![A-Za-z0-9'])")
_PARENTHESISED_LETTER = re.compile(r"[(\[]([A-J])[)\]]")
# A capital A-J standing alone, used to detect answers naming several options ("B, C", "(A) or (B)"). A letter
# followed by a lower-case word is read as English ("A triangle", "I think"), not as an option.
_STANDALONE_LETTER = re.compile(r"(?<![A-Za-z0-9'\\])([A-J])(?![A-Za-z0-9'])(?!\s+[a-z])")


def extract_choice_letter(answer: str | None) -> str | None:
    """The option letter (upper case, A-J) stated by an answer string, or None if there is none or it is
    ambiguous. Accepted: ``B``, ``(B)``, ``B.``, ``B)``, ``\\boxed{B}``, ``\\text{(B)}``, ``B. 42``,
    ``Option B: 42``, ``The answer is B``. Conservative: a capital letter inside a word never counts, and a
    lower-case letter counts only when it is the whole answer; an answer naming several options is None."""
    if not isinstance(answer, str):
        return None
    text = strip_math_delimiters(answer).replace("**", "").replace("__", "")
    previous = None
    while previous != text:
        previous = text
        text = _MARKUP_WRAPPER.sub(r"\1", text)
    text = text.replace("$", "").strip()
    for pattern, finder in (
        (_LONE_LETTER, "full"),
        (_LEADING_OPTION, "start"),
        (_ANSWER_PHRASE, "last"),
        (_PARENTHESISED_LETTER, "unique"),
    ):
        if finder == "full":
            match = pattern.fullmatch(text)
            letters = [match.group(1)] if match else []
        elif finder == "start":
            match = pattern.match(text)
            letters = [match.group(1)] if match else []
        elif finder == "last":
            letters = pattern.findall(text)[-1:]
        else:
            letters = sorted(set(pattern.findall(text)))
            letters = letters if len(letters) == 1 else []
        if letters:
            letter = letters[0].upper()
            # Naming several options must not earn the reward of the right one ("A, B, C, D" is not an answer).
            other_letters = set(_STANDALONE_LETTER.findall(text)) - {letter}
            return None if other_letters else letter
    return None


# "ANSWER: C", "Answer: (C)", "**Answer:** $C$": the rest of the line is read by `extract_choice_letter`.
_ANSWER_LINE = re.compile(r"(?<![A-Za-z])(?i:answer)[ \t]*(?:\*\*)?[ \t]*:[ \t]*([^\n]*\S)")


def choice_answer(text: str) -> str | None:
    """The answer of a multiple-choice completion: the answer pair's content (`extract_answer`) when the text has an
    ``<answer>…</answer>`` pair; else what follows the last ``ANSWER:`` on its line; else the last ``\\boxed{…}``."""
    if not isinstance(text, str):
        return None
    if last_answer_span(text) is None:
        lines = _ANSWER_LINE.findall(text)
        if lines:
            return lines[-1].strip()
    return extract_answer(text)


_WARNED_BAD_CHOICE_GOLDS: set[str] = set()


def multiple_choice_reward(completions: list, **kwargs) -> list[float]:
    """Multiple-choice accuracy (ARC-c, GPQA, MMLU-Pro): 1.0 iff the option letter in the extracted answer
    equals the gold letter (case-insensitive), else 0.0. mc = 1[letter(choice_answer(completion)) == gold]: the
    ``<answer>`` pair, else the last ``ANSWER: X`` line (GPQA style), else the last ``\\boxed{}``.

    Gold columns as for :func:`accuracy_reward`; a gold that is not a letter A-J scores 0.0 (warned once).
    """
    golds = gold_answers_from_kwargs(kwargs, len(completions))
    rewards = []
    for completion, gold in zip(completions, golds):
        gold_letter = extract_choice_letter(gold)
        if gold_letter is None:
            if gold not in _WARNED_BAD_CHOICE_GOLDS:
                _WARNED_BAD_CHOICE_GOLDS.add(gold)
                warnings.warn(
                    f"multiple_choice_reward: gold answer {gold!r} is not an option letter A-J.", stacklevel=2
                )
            rewards.append(0.0)
            continue
        predicted_letter = extract_choice_letter(choice_answer(completion_text(completion)))
        rewards.append(1.0 if predicted_letter == gold_letter else 0.0)
    return rewards
