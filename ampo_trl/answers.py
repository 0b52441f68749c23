r"""The one home of the answer format: tags, the system prompt that asks for them, the format rule, answer extraction,
gold answers, and how teacher text is tokenized.

Every other module imports these; none writes its own copy, so the pool validator, the rewards, the comprehension
score and the evaluator can never disagree about what a text's answer is.

* **Tags.** The final answer sits in ``<answer>…</answer>`` (:data:`ANSWER_OPEN`, :data:`ANSWER_CLOSE`); reasoning
  models may wrap their thoughts in ``<think>…</think>``.
* **Format rule** (:func:`answer_format_ok`, the format reward): exactly one ``<answer>`` and exactly one
  ``</answer>``, the opening tag first.
* **Answer pair** (:func:`last_answer_span`, the one rule for several or nested tags): the content runs from the
  **last** ``<answer>`` that is followed by a ``</answer>`` up to the **first** ``</answer>`` after it. So the last
  pair wins (``<answer>1</answer> … <answer>2</answer>`` gives ``2``), an unclosed trailing ``<answer>`` is ignored
  (``<answer>1</answer> <answer>2`` gives ``1``), and nested or doubled tags give the innermost content
  (``<answer><answer>3</answer></answer>`` and ``<answer>3</answer></answer>`` give ``3``, never ``3</answer>``).
  The content never contains a tag.
* **Answer of a text** (:func:`extract_answer`, the accuracy reward, the evaluator): the stripped content of the
  answer pair; if that content holds ``\boxed{x}``, the last ``x``. Without any pair, the content of the last
  ``\boxed{…}`` of the text.
* **Comprehension cut** (:func:`cut_at_last_answer_tag`): the teacher text before its last ``<answer>`` (the paper's
  rule); a text without any ``<answer>`` cannot be scored (score 0). For a text that passes the format rule, the
  cut, the opening tag of the answer pair and the single ``<answer>`` are the same tag.
* **Gold answers** (:func:`gold_answer_text`, :func:`gold_answer_of_row`): the first present column of
  :data:`GOLD_ANSWER_COLUMNS`, normalised to the string Math-Verify parses. A ``reward_model`` dict without a
  usable ``ground_truth`` (absent, None or blank: Arrow turns an absent key into None) and a gold that cannot be
  text (bytes, an object) raise `MissingGoldError`, a `ampo_trl.errors.DataFormatError`: never a made-up answer.
* **Teacher text tokenization** (:func:`encode_teacher_texts`): no special tokens added, and special-token strings
  inside the text (``<|im_end|>`` ...) stay plain text, so a teacher row can never end early on a fake EOS. The
  trainer's teacher rows, the comprehension sequences and the pool validator's length check all use it.

Only the standard library is imported here: verifier worker processes import this module and must start fast.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import DataFormatError

if TYPE_CHECKING:  # pragma: no cover
    from transformers import PreTrainedTokenizerBase

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

#: The paper's system prompt (arXiv 2510.02227, section 4.1), for training, evaluation and pool construction.
SYSTEM_PROMPT = (
    "You are a helpful assistant. Please reason step by step to solve the problem and put the final answer within "
    "the <answer> </answer> tags."
)

#: Columns that may hold a row's gold answer, in order of preference: ``answer`` (canonical), ``solution`` (TRL's
#: convention; a worked solution gives its final answer), ``reward_model`` (the authors' parquet schema: a dict with
#: ``ground_truth``), ``ground_truth`` and ``final_answer`` (other public sets).
GOLD_ANSWER_COLUMNS = ("answer", "solution", "reward_model", "ground_truth", "final_answer")


# ------------------------------------------------------------------------------------------------- completion text
def _message_content_to_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):  # multimodal content: [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                parts.append(part["text"])
        return "".join(parts)
    return str(content)


def completion_text(completion: Any) -> str:
    """Return the text of one completion: a string as is, or the assistant messages of a conversation.

    A conversation (list of ``{"role", "content"}`` dicts) yields the contents of its assistant messages
    joined by newlines (tool messages are skipped); ``None`` yields ``""``.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _message_content_to_text(completion.get("content"))
    if isinstance(completion, (list, tuple)):
        parts = [
            _message_content_to_text(message.get("content"))
            for message in completion
            if isinstance(message, dict) and message.get("role", "assistant") == "assistant"
        ]
        return "\n".join(parts)
    return str(completion)


# ------------------------------------------------------------------------------------------------ tags and format
def answer_format_ok(text: str) -> bool:
    """The format rule: exactly one ``<answer>`` and exactly one ``</answer>``, the opening tag first."""
    return (
        text.count(ANSWER_OPEN) == 1
        and text.count(ANSWER_CLOSE) == 1
        and text.index(ANSWER_OPEN) < text.index(ANSWER_CLOSE)
    )


def last_answer_span(text: str) -> tuple[int, int] | None:
    """``(start, end)`` of the answer pair's content (``text[start:end]``): from the last ``<answer>`` that is followed
    by a ``</answer>`` to the first ``</answer>`` after it (see the module docstring). None when no ``<answer>`` is
    followed by a ``</answer>``."""
    open_index = text.rfind(ANSWER_OPEN)
    while open_index != -1:
        start = open_index + len(ANSWER_OPEN)
        close_index = text.find(ANSWER_CLOSE, start)
        if close_index != -1:
            return start, close_index
        open_index = text.rfind(ANSWER_OPEN, 0, open_index)
    return None


def cut_at_last_answer_tag(teacher_text: str) -> str | None:
    """The teacher text before its last ``<answer>`` tag (what comprehension scoring keeps), or None when it has
    none: such a text cannot be scored."""
    index = teacher_text.rfind(ANSWER_OPEN)
    if index < 0:
        return None
    return teacher_text[:index]


# ------------------------------------------------------------------------------------------------ answer extraction
_BOXED_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


def _balanced_brace_content(text: str, open_brace_index: int) -> str | None:
    """Content between ``text[open_brace_index] == "{"`` and its matching ``}``; None if unbalanced."""
    depth = 0
    index = open_brace_index
    while index < len(text):
        char = text[index]
        if char == "\\":  # ``\{``, ``\}`` and ``\\`` are escaped characters, not grouping braces
            index += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace_index + 1 : index]
        index += 1
    return None


def has_boxed(text: str) -> bool:
    """True iff the text contains a ``\\boxed`` or ``\\fbox`` command."""
    return bool(_BOXED_COMMAND.search(text))


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces) or ``\\boxed x`` in ``text``.

    Returns None when there is none, when the last one is unbalanced (e.g. truncated), or when it is empty.
    Only the last command is considered: an earlier box is usually an intermediate result.
    """
    if not isinstance(text, str):
        return None
    matches = list(_BOXED_COMMAND.finditer(text))
    if not matches:
        return None
    index = matches[-1].end()
    after_command = index
    while index < len(text) and text[index].isspace():
        index += 1
    if index < len(text) and text[index] == "{":
        content = _balanced_brace_content(text, index)
    elif index > after_command:  # ``\boxed 5``: a single token after whitespace
        content = re.match(r"[^\s$]*", text[index:]).group(0)
    else:
        content = None
    if content is None:
        return None
    content = content.strip()
    return content or None


def extract_answer(text: str) -> str | None:
    """Return the model's final answer from a completion text, or None if there is no usable one.

    Rule: the stripped content of the answer pair (`last_answer_span`: the last ``<answer>`` followed by a
    ``</answer>``, up to the first ``</answer>`` after it); if that content contains ``\\boxed{x}`` the (last) ``x``
    is returned. Without any answer pair, the content of the last ``\\boxed{...}`` in the text is used.
    Empty answers and unbalanced boxes give None.
    """
    if not isinstance(text, str):
        return None
    span = last_answer_span(text)
    if span is not None:
        content = text[span[0] : span[1]].strip()
        if not content:
            return None
        if has_boxed(content):
            return extract_boxed(content)
        return content
    return extract_boxed(text)


# ------------------------------------------------------------------------------------------------------ gold answers
class MissingGoldError(DataFormatError):
    """A row has no usable gold answer: a ``reward_model`` dict without ``ground_truth`` (or with None / blank), or a
    gold value that is not text (bytes, an arbitrary object). A `DataFormatError`, so also a `ValueError`."""


_GOLD_FIX = "give every row its final answer as a string, e.g. reward_model = {'ground_truth': '42', 'style': 'rule'}."


def gold_answer_text(value: Any) -> str:
    """One gold answer (str, number, list, numpy value, ``{"ground_truth": ...}``, a worked solution) as the answer
    string Math-Verify parses. The single normaliser for every place that reads a ground truth.

    ``None`` (and a float NaN, pandas' missing value) gives ``""``: the row has no gold (`validate_pool_dataset`
    reports it). A dict without a usable ``ground_truth`` and a value that is not text (bytes, other objects) raise
    `MissingGoldError`: turning them into text would make up an answer.
    """
    if value is None:
        return ""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalars/arrays from parquet
        value = value.tolist()
    if isinstance(value, dict):
        text = gold_answer_text(value.get("ground_truth"))
        if not text:
            state = "an empty 'ground_truth'" if "ground_truth" in value else "no key 'ground_truth'"
            raise MissingGoldError(
                f"a gold-answer dict (the authors' reward_model schema) with {state}; its keys are "
                f"{sorted(map(str, value))}.",
                fix=_GOLD_FIX,
            )
        return text
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [gold_answer_text(item) for item in value]
        items = [item for item in items if item]
        # A one-element list is just the answer; several elements are read as a set/tuple answer "a, b".
        return items[0] if len(items) == 1 else ", ".join(items)
    if not isinstance(value, str):
        raise MissingGoldError(
            f"a gold answer must be text or a number, got {type(value).__name__}.",
            fix="store the answer as a string (decode bytes as UTF-8).",
        )
    text = value.strip()
    if "####" in text:  # GSM8K-style "reasoning #### 42"
        text = text.rsplit("####", 1)[1].strip()
    if ANSWER_OPEN in text or has_boxed(text):  # a worked solution: keep its final answer
        text = extract_answer(text) or text
    return text


def gold_column(columns: Sequence[str] | Mapping[str, Any], preferred: str | None = None) -> str | None:
    """The column a row's gold answer is read from: ``preferred`` if present, else the first of
    :data:`GOLD_ANSWER_COLUMNS` present (for a mapping: present with a non-None value); None if there is none."""
    if isinstance(columns, Mapping):
        present = [name for name, value in columns.items() if value is not None]
    else:
        present = list(columns)
    if preferred is not None and preferred in present:
        return preferred
    return next((name for name in GOLD_ANSWER_COLUMNS if name in present), None)


def gold_answer_of_row(row: Mapping[str, Any], preferred: str | None = None) -> str:
    """The normalised gold answer of one row (see `gold_column`); ``""`` when the row has no gold column."""
    column = gold_column(row, preferred)
    return "" if column is None else gold_answer_text(row[column])


def gold_answers_from_kwargs(kwargs: dict[str, Any], num_completions: int | None = None) -> list[str]:
    """Return the gold answers (one string per row) from TRL reward kwargs (dataset columns as per-row lists).

    Reads the first column of :data:`GOLD_ANSWER_COLUMNS` that is present. Raises ValueError when none is present,
    when a ``reward_model`` row has no ``ground_truth``, or when the column length differs from ``num_completions``.
    """
    column_name = gold_column(kwargs)
    if column_name is None:
        raise ValueError(
            "No gold answer column found in the reward function's keyword arguments. Add one of these dataset "
            f"columns: {', '.join(repr(name) for name in GOLD_ANSWER_COLUMNS)} ('reward_model' holding a dict with "
            f"key 'ground_truth'). Columns received: {sorted(kwargs)}."
        )
    rows = list(kwargs[column_name])
    if num_completions is not None and len(rows) != num_completions:
        raise ValueError(f"Column {column_name!r} has {len(rows)} rows but there are {num_completions} completions.")
    golds = []
    for index, row in enumerate(rows):
        try:
            golds.append(gold_answer_text(row))
        except MissingGoldError as error:
            raise MissingGoldError(
                f"row {index} of the reward function's batch: {error.problem}", column=column_name, fix=error.fix
            ) from None
    return golds


# ------------------------------------------------------------------------------------------------ teacher tokenization
def encode_teacher_texts(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of teacher texts exactly as they become teacher rows (before the EOS the trainer appends): no special
    tokens added, and special-token strings inside the text stay plain text, never control tokens."""
    if not texts:
        return []
    return tokenizer(list(texts), add_special_tokens=False, split_special_tokens=True)["input_ids"]
