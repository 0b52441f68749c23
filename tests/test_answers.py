"""The one home of the answer format: the pool validator, the trainer's comprehension scoring and the format reward
must agree about every text, because all three read it through `ampo_trl.answers`."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ampo_trl.answers import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    GOLD_ANSWER_COLUMNS,
    MissingGoldError,
    answer_format_ok,
    cut_at_last_answer_tag,
    encode_teacher_texts,
    extract_answer,
    gold_answer_of_row,
    gold_answers_from_kwargs,
    gold_column,
    last_answer_span,
)
from ampo_trl.comprehension import build_scoring_sequence
from ampo_trl.demo.tiny import build_tiny_tokenizer
from ampo_trl.pool import validate_pool_dataset
from ampo_trl.rewards import format_reward

TEXTS = {
    "one pair": "2+3=5 <answer>5</answer>",
    "two pairs": "first <answer>4</answer> then <answer>5</answer>",
    "open only": "so the answer is <answer>5",
    "close only": "the answer is 5</answer>",
    "close before open": "</answer> 5 <answer>",
    "nested": "<answer><answer>5</answer></answer>",
    "doubled close": "<answer>5</answer></answer>",
    "pair then unclosed": "<answer>5</answer> no wait <answer>6",
    "boxed only": "so \\boxed{5}",
    "no tag": "five",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_validator_agrees_with_comprehension_scoring_and_format_reward(name):
    text = TEXTS[name]
    tokenizer = build_tiny_tokenizer()
    row = {"prompt": "2+3?", "answer": "5", "teacher_solutions": [{"teacher": "t", "text": text}]}
    report = validate_pool_dataset([row], tokenizer=tokenizer)
    flagged = {kind for kind in ("no_answer_tag", "bad_answer_format") if report.problems(kind)}

    scored = build_scoring_sequence([1, 2], text, "5", tokenizer, tokenizer.eos_token_id) is not None
    formatted = format_reward([text]) == [1.0]

    # "no_answer_tag" is exactly the texts comprehension scoring cannot score (score 0) ...
    assert ("no_answer_tag" in flagged) == (not scored), (name, flagged)
    # ... and every text the format reward rejects is flagged, each with one kind only.
    assert bool(flagged) == (not formatted), (name, flagged)
    assert len(flagged) <= 1


def test_format_rule_and_spans():
    assert answer_format_ok("a <answer>1</answer> b")
    assert not answer_format_ok("<answer>1</answer><answer>2</answer>")
    assert not answer_format_ok("</answer><answer>")
    assert last_answer_span("x <answer> 7 </answer> y") == (10, 13)
    assert last_answer_span("</answer> <answer>") is None
    assert cut_at_last_answer_tag("a <answer>1</answer> b <answer>2") == "a <answer>1</answer> b "
    assert cut_at_last_answer_tag("\\boxed{3}") is None
    assert extract_answer("a <answer> \\boxed{12} </answer>") == "12"
    assert extract_answer("no tag \\boxed{\\frac{1}{2}}") == "\\frac{1}{2}"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<answer><answer>3</answer></answer>", "3"),  # issue 10: was "3</answer>"
        ("<answer>3</answer></answer>", "3"),
        ("<answer><answer>3</answer>", "3"),
        ("<answer>1</answer> wait <answer>2</answer>", "2"),  # the last pair wins
        ("<answer>1</answer> wait <answer>2", "1"),  # an unclosed trailing tag is ignored
        ("<answer>a <answer>b</answer> c</answer>", "b"),
        ("</answer><answer>", None),
    ],
)
def test_nested_and_multiple_answer_tags(text, expected):
    assert extract_answer(text) == expected


_TAGGED_PIECES = st.sampled_from([ANSWER_OPEN, ANSWER_CLOSE, "7", " x ", "\\boxed{9}", "\n"])


@settings(max_examples=400, deadline=None, database=None)
@given(st.lists(_TAGGED_PIECES, max_size=10).map("".join))
def test_answer_rules_agree_on_any_arrangement_of_tags(text):
    span = last_answer_span(text)
    if span is not None:
        start, end = span
        content = text[start:end]
        assert ANSWER_OPEN not in content and ANSWER_CLOSE not in content  # the content never holds a tag
        assert text[start - len(ANSWER_OPEN) : start] == ANSWER_OPEN and text[end:].startswith(ANSWER_CLOSE)
        later_open = text.find(ANSWER_OPEN, end)  # the opening tag is the last one followed by a closing tag
        assert later_open == -1 or ANSWER_CLOSE not in text[later_open:]
    else:
        assert not any(ANSWER_CLOSE in text[i:] for i in range(len(text)) if text.startswith(ANSWER_OPEN, i))
    if answer_format_ok(text):  # one pair: the span, the comprehension cut and the format rule name the same tag
        assert span is not None and cut_at_last_answer_tag(text) == text[: span[0] - len(ANSWER_OPEN)]
    if cut_at_last_answer_tag(text) is None:
        assert span is None and not answer_format_ok(text)
    answer = extract_answer(text)
    assert answer is None or (ANSWER_OPEN not in answer and ANSWER_CLOSE not in answer)


def test_gold_columns_have_one_order_everywhere():
    assert GOLD_ANSWER_COLUMNS[:3] == ("answer", "solution", "reward_model")
    assert gold_column(["question", "reward_model", "solution"]) == "solution"
    assert gold_column({"answer": None, "ground_truth": 3}) == "ground_truth"
    assert gold_column(["final_answer", "answer"], preferred="final_answer") == "final_answer"
    assert gold_column(["question"]) is None
    assert gold_answer_of_row({"reward_model": {"ground_truth": [4.0]}}) == "4"
    assert gold_answer_of_row({"solution": "so x = \\boxed{7}"}) == "7"
    assert gold_answer_of_row({"question": "q"}) == ""
    assert gold_answers_from_kwargs({"ground_truth": ["1", 2]}, 2) == ["1", "2"]


def test_missing_ground_truth_is_an_error_never_an_answer():
    with pytest.raises(MissingGoldError, match="ground_truth"):
        gold_answer_of_row({"reward_model": {"style": "rule"}})
    with pytest.raises(MissingGoldError, match="row 1 of the reward function's batch"):
        gold_answers_from_kwargs({"reward_model": [{"ground_truth": "1"}, {"style": "rule"}]})


def test_teacher_text_tokenization_keeps_special_token_strings_as_text():
    tokenizer = build_tiny_tokenizer()
    (ids,) = encode_teacher_texts(tokenizer, ["a<|im_end|>b"])
    assert tokenizer.eos_token_id not in ids
    assert tokenizer.decode(ids) == "a<|im_end|>b"
    assert encode_teacher_texts(tokenizer, []) == []
