"""The questions a pool is built for: read from any table, each with a stable id (hash of question and answer).

Recognised columns: a question (`QUESTION_COLUMNS`: ``question``, ``problem``, ``prompt`` = chat messages, ...) and
a gold answer (`ampo_trl.answers.GOLD_ANSWER_COLUMNS`; a worked ``solution`` gives its final answer). Rows without a
question or an answer are skipped and duplicates merged; both are counted.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from ..answers import GOLD_ANSWER_COLUMNS, gold_answer_of_row
from ..records import load_table, read_records, to_python

QUESTION_COLUMNS = ("question", "problem", "prompt", "query", "input")


@dataclass(frozen=True)
class Question:
    """One question of the pool: ``id`` is a stable hash of question and answer."""

    id: str
    question: str
    answer: str
    prompt: tuple | None = None  # the source's chat messages (as a tuple of dicts), if it had them
    data_source: str | None = None


def question_id(question: str, answer: str) -> str:
    return hashlib.sha1(f"{question}\x00{answer}".encode()).hexdigest()[:16]


def _user_content(prompt) -> str | None:
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)):
        users = [m.get("content") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else None
    return None


def questions_from_rows(
    rows: Iterable[dict], question_column: str | None = None, answer_column: str | None = None
) -> tuple[list[Question], Counter]:
    """`Question` s from row dicts (see the module docstring for the recognised columns) and counts of skipped
    rows (``missing_question``, ``missing_answer``) and merged ``duplicates``."""
    questions: dict[str, Question] = {}
    counts: Counter = Counter()
    for row in rows:
        counts["rows"] += 1
        row = {key: to_python(value) for key, value in row.items()}
        if question_column:
            value = row.get(question_column)
        else:
            value = next((row[c] for c in QUESTION_COLUMNS if row.get(c) is not None), None)
        prompt = value if isinstance(value, list) else None
        if prompt is not None:
            prompt = [dict(to_python(message)) for message in prompt]
        text = _user_content(value)
        if not text or not str(text).strip():
            counts["missing_question"] += 1
            continue
        answer = gold_answer_of_row(row, answer_column)
        if not answer:
            counts["missing_answer"] += 1
            continue
        qid = question_id(str(text), answer)
        if qid in questions:
            counts["duplicates"] += 1
            continue
        source = row.get("data_source")
        questions[qid] = Question(
            id=qid,
            question=str(text),
            answer=answer,
            prompt=tuple(prompt) if prompt else None,
            data_source=str(source) if source is not None else None,
        )
    counts["questions"] = len(questions)
    return list(questions.values()), counts


def load_questions(
    source,
    split: str = "train",
    question_column: str | None = None,
    answer_column: str | None = None,
    limit: int | None = None,
) -> tuple[list[Question], Counter]:
    """Questions from a hub id, a local file (see `ampo_trl.pool.load_table`), a `datasets.Dataset` or a list of
    row dicts. ``limit`` keeps the first questions (after skipping unusable rows)."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path) and path.endswith((".jsonl", ".json")):
            rows: Iterable[dict] = read_records(path)
        else:
            rows = load_table(path, split=split)
    else:
        rows = source
    questions, counts = questions_from_rows(rows, question_column, answer_column)
    if question_column is None and counts["rows"] and counts["missing_question"] == counts["rows"]:
        raise ValueError(
            f"No question found in {source!r}: expected one of the columns {list(QUESTION_COLUMNS)} "
            "(or pass question_column / --question-column)."
        )
    if counts["questions"] == 0 and counts["missing_answer"]:
        raise ValueError(
            f"No answer found in {source!r}: expected one of the columns {list(GOLD_ANSWER_COLUMNS)} "
            "(or pass answer_column / --answer-column)."
        )
    if limit is not None and limit < len(questions):
        counts["beyond_limit"] = len(questions) - limit
        questions = questions[:limit]
        counts["questions"] = len(questions)
    return questions, counts
