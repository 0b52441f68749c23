r"""Comprehension scoring of teacher solutions: building the scored sequences and planning the forward passes.

For a prompt q with ground-truth answer y* and a teacher solution o (paper, section 3.3):

1. cut o at its last ``<answer>`` tag (`ampo_trl.answers.cut_at_last_answer_tag`): o' = o[: index of the last
   "<answer>"];
2. append the ground truth: s = o' + "<answer>" + y* + "</answer>" + EOS;
3. condition on the exact token sequence the student saw for q (same chat template and system prompt) and score
   only the tokens of y*, not the tags:  score = mean over t in y* of log pi_theta(s_t | q, s_<t), turned into a
   probability by `ampo_trl.guidance.comprehension_score`.

A solution without an ``<answer>`` tag cannot be scored this way and scores 0 without a forward pass.

`build_released_scoring_sequence` builds the released code's variant instead (``comprehension_sequence="released"``,
the authors' ``mix_dapo_trainer.py: replace_answer_with_gt_batch`` and ``batch_locate_substring_tokens``): the text
must hold exactly one ``<answer>`` (else score 0); s = prompt text + o' + "<answer>" + W + y* + " " + "</answer>" +
EOS string, with W the whitespace (spaces, newlines, tabs, carriage returns) that follows the teacher's ``<answer>``,
or one space; the whole text is tokenized at once, and the gold tokens are the contiguous run from the first to the
last token whose characters overlap the last occurrence of y* before "</answer>" + EOS.

The three pieces (o' + "<answer>", y*, "</answer>") are tokenized separately and concatenated, so the answer span
is known exactly whatever merges the tokenizer would make across the boundaries.

Forward passes are planned globally (`plan_scoring_chunks`): candidates are spread over processes so that each
holds about the same number of tokens, each process packs its share, longest first, into chunks whose padded size
(rows x longest row) stays within a token budget and whose rows are at least 1 / `max_padding` as long as the
chunk's longest (so padding costs at most `max_padding` - 1 of the real tokens), and every process runs the same
number of forward passes, padding with dummy passes. That last point is what keeps DeepSpeed ZeRO-3, where every
forward is a collective, from hanging.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .answers import ANSWER_CLOSE, ANSWER_OPEN, cut_at_last_answer_tag, encode_teacher_texts

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase


@dataclass(frozen=True)
class ScoringSequence:
    """Token ids of one scored sequence (prompt + cut teacher solution + gold answer) and where the gold sits."""

    input_ids: list[int]
    answer_start: int  # index in input_ids of the first ground-truth token
    answer_end: int  # one past the last ground-truth token


def build_scoring_sequence(
    prompt_ids: list[int], teacher_text: str, ground_truth: str, tokenizer: PreTrainedTokenizerBase, eos_token_id: int
) -> ScoringSequence | None:
    """Tokens of prompt + o' + "<answer>" + y* + "</answer>" + EOS, or None when the teacher text has no tag."""
    reasoning = cut_at_last_answer_tag(teacher_text)
    if reasoning is None or not str(ground_truth).strip():
        return None

    # Tokenized like the teacher row the student trains on (special-token strings stay plain text).
    head_ids, answer, close_ids = encode_teacher_texts(
        tokenizer, [reasoning + ANSWER_OPEN, str(ground_truth).strip(), ANSWER_CLOSE]
    )
    head = list(prompt_ids) + head_ids
    tail = close_ids + [eos_token_id]
    return ScoringSequence(input_ids=head + answer + tail, answer_start=len(head), answer_end=len(head) + len(answer))


def build_released_scoring_sequence(
    prompt_text: str, teacher_text: str, ground_truth: str, tokenizer: PreTrainedTokenizerBase
) -> ScoringSequence | None:
    """The released code's scored text (module docstring), or None when it would score 0 (not exactly one
    ``<answer>``, nothing after it, or an empty gold)."""
    gold = str(ground_truth)
    if teacher_text.count(ANSWER_OPEN) != 1 or not gold.strip():
        return None
    reasoning, answer_section = teacher_text.split(ANSWER_OPEN)
    if not answer_section.strip():
        return None
    whitespace = re.match(r"[ \n\t\r]*", answer_section).group(0) or " "
    closing = ANSWER_CLOSE + tokenizer.eos_token
    text = prompt_text + reasoning + ANSWER_OPEN + whitespace + gold + " " + closing
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    start = text[: -len(closing)].rfind(gold)
    end = start + len(gold)
    overlapping = [i for i, (first, last) in enumerate(encoding["offset_mapping"]) if first < end and last > start]
    if not overlapping:
        return None
    return ScoringSequence(list(encoding["input_ids"]), overlapping[0], overlapping[-1] + 1)


def plan_scoring_chunks(
    lengths: list[int], num_processes: int, token_budget: int, max_padding: float = 1.25
) -> list[list[list[int]]]:
    """Assign candidates to processes and forward passes.

    Args:
        lengths: token length of each candidate sequence.
        num_processes: number of processes sharing the work.
        token_budget: maximum rows x longest-row tokens per forward pass (a single longer row gets its own pass).
        max_padding: a row joins a pass only if the pass's longest row is at most this many times its length.

    Returns:
        plan[process][forward] = list of candidate indices. Every process has the same number of forward passes;
        an empty list is a dummy pass that only keeps the processes in step.
    """
    if num_processes < 1:
        raise ValueError("num_processes must be >= 1")
    # Longest first, each to the least-loaded process (LPT): balances tokens across processes.
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    shares: list[list[int]] = [[] for _ in range(num_processes)]
    loads = [0] * num_processes
    for index in order:
        target = min(range(num_processes), key=lambda p: (loads[p], len(shares[p]), p))
        shares[target].append(index)
        loads[target] += lengths[index]
    plan: list[list[list[int]]] = []
    for share in shares:  # already sorted longest first, so the first row of a chunk is its widest
        chunks: list[list[int]] = []
        for index in share:
            width = lengths[chunks[-1][0]] if chunks else 0
            if chunks and (len(chunks[-1]) + 1) * width <= token_budget and width <= max_padding * lengths[index]:
                chunks[-1].append(index)
            else:
                chunks.append([index])
        plan.append(chunks)
    num_forwards = max((len(chunks) for chunks in plan), default=0)
    for chunks in plan:
        chunks.extend([] for _ in range(num_forwards - len(chunks)))
    return plan
